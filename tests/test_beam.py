"""Beam search and beam sampling: ``core.generate`` equals transformers 5.x ``model.generate`` token for token
(same seed for beam sampling), and the finished nodes of the recorded tree carry transformers' ``sequences_scores``
for the returned sequences. The tree is well formed (every parent exists, K kept nodes per batch row per step,
returned sequences are paths of it), one beam is greedy, and the best hypothesis streamed last is what returns."""

from __future__ import annotations

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

import core
from conftest import ListStreamer
from core.loop import RunContext
from core.strategies.beam import beam_search


pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers ---------------------------------------------------------------------------------------------------
def reference(model, ids, seed=0, **kwargs):
    """transformers' own output, with the sequence scores."""
    torch.manual_seed(seed)
    return model.generate(ids, return_dict_in_generate=True, output_scores=True, **kwargs)


def ours(model, ids, seed=0, **kwargs) -> core.GenerationResult:
    torch.manual_seed(seed)
    return core.generate(model, ids, recorder=core.ListRecorder(), **kwargs)


def nodes_by_id(trace: core.Trace) -> dict[int, core.BeamNode]:
    return {node.node_id: node for step in trace.steps for node in step.beam}


def path(nodes: dict[int, core.BeamNode], node_id: int) -> list[int]:
    tokens = []
    while node_id != -1:
        tokens.append(nodes[node_id].token_id)
        node_id = nodes[node_id].parent
    return tokens[::-1]


def fill_tokens(model, kwargs) -> set[int]:
    """Tokens that may pad a returned row after its hypothesis ends (transformers pads with pad or EOS)."""
    eos = kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    eos = eos if isinstance(eos, list) else [eos]
    return {model.generation_config.pad_token_id, *eos}


def returned_nodes(trace, sequences, new_from: int, num_return: int, fill: set[int]) -> list[core.BeamNode]:
    """For each returned row, the one node of its batch row whose path spells the row's new tokens, the rest
    of the row being padding (the longest such path: its prefixes match too when the padding is EOS)."""
    nodes = nodes_by_id(trace)
    found = []
    for r, row in enumerate(sequences.tolist()):
        new = row[new_from:]
        matches = {}
        for node in nodes.values():
            p = path(nodes, node.node_id)
            if node.batch == r // num_return and new[:len(p)] == p and set(new[len(p):]) <= fill:
                matches.setdefault(len(p), []).append(node)
        assert matches and len(matches[max(matches)]) == 1, f"row {r}: no single tree path spells {new}"
        found.append(matches[max(matches)][0])
    return found


def check_tree(trace: core.Trace, batch_size: int, num_beams: int, length_penalty: float = 1.0) -> None:
    """Every parent was expanded at an earlier step in the same batch row; K nodes are kept per batch row at
    every step but the last; scores are normalised by the number of new tokens; chosen tokens are the kept and
    finished ones."""
    seen: dict[int, core.BeamNode] = {}
    for i, step in enumerate(trace.steps):
        assert len(step.rows) == batch_size * num_beams
        for node in step.beam:
            assert node.node_id not in seen
            if i == 0:
                assert node.parent == -1
            else:
                assert node.parent in seen and seen[node.parent].batch == node.batch
            assert node.fate in ("kept", "pruned", "finished")
            assert (node.final_score is not None) == (node.fate == "finished")
            assert node.normalized_score == pytest.approx(node.score / (i + 1) ** length_penalty, rel=1e-5)
        seen.update({node.node_id: node for node in step.beam})
        if i < len(trace.steps) - 1:
            for b in range(batch_size):
                assert sum(n.fate == "kept" and n.batch == b for n in step.beam) == num_beams
        survivors = sorted(n.token_id for n in step.beam if n.fate != "pruned")
        assert sorted(t for row in step.rows for t in row.chosen) == survivors


def assert_matches_transformers(model, ids, seed=0, batch_size=1, **kwargs) -> core.GenerationResult:
    """Same tokens as transformers; the returned rows end at finished nodes whose final scores are transformers'
    sequence scores; the tree is well formed; the last step's best hypotheses are the returned rows."""
    expected = reference(model, ids, seed, **kwargs)
    result = ours(model, ids, seed, **kwargs)
    assert result.sequences.tolist() == expected.sequences.tolist()

    num_return = kwargs.get("num_return_sequences", 1)
    new_from = 1 if model.config.is_encoder_decoder else ids.shape[1]
    check_tree(result.trace, batch_size, kwargs["num_beams"], kwargs.get("length_penalty", 1.0))
    ends = returned_nodes(result.trace, result.sequences, new_from, num_return, fill_tokens(model, kwargs))
    assert [n.fate for n in ends] == ["finished"] * len(ends)
    assert [n.final_score for n in ends] == pytest.approx(expected.sequences_scores.tolist(), rel=1e-6)
    nodes = nodes_by_id(result.trace)
    assert result.trace.steps[-1].best == [path(nodes, n.node_id) for n in ends]
    assert result.trace.steps[-1].best_nodes == [n.node_id for n in ends]
    for step in result.trace.steps:  # every step's best rows are the paths to the nodes it names
        assert step.best == [path(nodes, n) if n != -1 else [] for n in step.best_nodes]
    return result


def run_beam_search_directly(model, ids, **kwargs):
    """Our beam loop under transformers' input preparation, whatever mode the config selects
    (``num_beams=1`` selects greedy search)."""
    ctx = RunContext()

    def call(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        return beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx,
                           **model_kwargs)

    return model.generate(ids, custom_generate=call, **kwargs)


def tiny_bart(seed: int = 0) -> BartForConditionalGeneration:
    """A 2+2-layer BART with a 64-token vocabulary (wide init, so that its tokens vary)."""
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                        forced_eos_token_id=None, init_std=1.0, scale_embedding=True)
    return BartForConditionalGeneration(config).eval()


# --- parity with transformers on the tiny model ----------------------------------------------------------------
# The tiny model often picks 6, 36 and 38: used as EOS, they end hypotheses early, so that the length penalty and
# early stopping decide which finished hypotheses win.
CASES = [
    dict(num_beams=3, max_new_tokens=12),
    dict(num_beams=4, max_new_tokens=15, num_return_sequences=3, length_penalty=2.0),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=6, length_penalty=-0.5, num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=36, num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=38, early_stopping=False, num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=38, early_stopping=True, num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=38, early_stopping=True, length_penalty=2.0,
         num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=38, early_stopping="never", num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=38, early_stopping="never", length_penalty=-0.5),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=[32, 55], early_stopping=True, num_return_sequences=3),
    dict(num_beams=3, max_new_tokens=12, eos_token_id=[32, 55, 6], num_return_sequences=2),
    dict(num_beams=3, max_new_tokens=15, no_repeat_ngram_size=2),
    dict(num_beams=4, max_new_tokens=12, no_repeat_ngram_size=3, repetition_penalty=1.3, eos_token_id=36),
    dict(num_beams=2, max_new_tokens=10, min_new_tokens=5, eos_token_id=6),
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_beam_search_matches_transformers(tiny_model, prompt, kwargs):
    result = assert_matches_transformers(tiny_model, prompt, **kwargs)
    assert result.trace.strategy == "beam_search"


LEFT_PADDED = torch.tensor([[0, 0, 1, 5, 9, 13], [1, 7, 3, 22, 40, 8]])


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3, max_new_tokens=10, eos_token_id=[36, 38], num_return_sequences=2),
    dict(num_beams=4, max_new_tokens=10, eos_token_id=6, early_stopping=True, length_penalty=0.5),
])
def test_batch_of_two_left_padded_prompts(tiny_model, kwargs):
    attention_mask = (LEFT_PADDED != 0).long()
    assert_matches_transformers(tiny_model, LEFT_PADDED, batch_size=2, attention_mask=attention_mask, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3, max_new_tokens=10, do_sample=True, eos_token_id=36),
    dict(num_beams=3, max_new_tokens=10, do_sample=True, top_k=20, temperature=1.5, eos_token_id=[36, 6],
         num_return_sequences=2),
])
def test_beam_sampling_matches_transformers_from_the_same_seed(tiny_model, seed, kwargs):
    attention_mask = (LEFT_PADDED != 0).long()
    result = assert_matches_transformers(tiny_model, LEFT_PADDED, seed=seed, batch_size=2,
                                         attention_mask=attention_mask, **kwargs)
    assert result.trace.strategy == "beam_sample"


def test_encoder_decoder(prompt):
    model = tiny_bart()
    sources = torch.tensor([[5, 9, 13, 17, 21, 2], [7, 8, 30, 2, 0, 0]])
    assert_matches_transformers(model, sources, batch_size=2, attention_mask=(sources != 0).long(), num_beams=3,
                                max_new_tokens=10, num_return_sequences=2, no_repeat_ngram_size=2)
    assert_matches_transformers(model, sources[:1], num_beams=4, max_new_tokens=12, eos_token_id=[2, 40],
                                early_stopping=True, length_penalty=1.5, no_repeat_ngram_size=2)


def test_recording_off_gives_the_same_tokens(tiny_model, prompt):
    kwargs = dict(num_beams=3, max_new_tokens=12, eos_token_id=38, num_return_sequences=2)
    result = core.generate(tiny_model, prompt, **kwargs)
    assert result.trace is None
    assert result.sequences.tolist() == tiny_model.generate(prompt, **kwargs).tolist()


# --- known equivalence -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=15), dict(max_new_tokens=15, eos_token_id=46)])
def test_one_beam_is_greedy(tiny_model, prompt, kwargs):
    # early_stopping=True: the lone beam stops at its first EOS, as greedy search does
    one_beam = run_beam_search_directly(tiny_model, prompt, num_beams=1, early_stopping=True, **kwargs)
    greedy = tiny_model.generate(prompt, do_sample=False, num_beams=1, **kwargs)
    assert one_beam.tolist() == greedy.tolist()


# --- what the records and the streamer show ----------------------------------------------------------------
def test_first_step_expands_the_prompt_only_from_the_first_beam(tiny_model, prompt):
    # the other beams start at -1e9 so that K copies of the prompt do not propose the same tokens
    result = ours(tiny_model, prompt, num_beams=3, max_new_tokens=4)
    first = result.trace.steps[0]
    assert len(first.beam) == 6 and {n.parent for n in first.beam} == {-1}
    assert len({n.token_id for n in first.beam}) == 6
    assert first.rows[0].chosen and not first.rows[1].chosen and not first.rows[2].chosen
    assert [n.fate for n in first.beam] == ["kept"] * 3 + ["pruned"] * 3  # sorted by score; no EOS here


def test_processor_effects_are_measured_on_log_probabilities(tiny_model, prompt):
    result = ours(tiny_model, prompt, num_beams=3, max_new_tokens=8, no_repeat_ngram_size=1)
    effects = [e for step in result.trace.steps for row in step.rows for e in row.effects]
    assert {e.processor for e in effects} == {"NoRepeatNGramLogitsProcessor"}
    # it removes exactly the tokens already generated (the prompt's included): never "changes" others
    assert all(not e.changed for e in effects)
    assert max(e.removed_total for e in effects) > 0



def test_streamer_gets_the_prompt_then_the_returned_best_row(tiny_model):
    streamer = ListStreamer()
    attention_mask = (LEFT_PADDED != 0).long()
    result = core.generate(tiny_model, LEFT_PADDED, attention_mask=attention_mask, streamer=streamer, num_beams=3,
                           max_new_tokens=10, eos_token_id=36, num_return_sequences=2)
    assert streamer.puts == [LEFT_PADDED[0].tolist(), result.sequences[0, 6:].tolist()]
    assert streamer.ended == 1


def test_stream_ends_on_the_returned_hypotheses(tiny_model, prompt):
    kwargs = dict(num_beams=3, max_new_tokens=12, eos_token_id=38, num_return_sequences=2)
    events = list(core.stream(tiny_model, prompt, **kwargs))
    assert events[-1].done
    returned = events[-1].result.sequences[:, prompt.shape[1]:].tolist()
    # transformers pads a hypothesis that ended early with EOS: the streamed best stops at its EOS
    for best, row in zip(events[-1].tokens, returned):
        assert row[:len(best)] == best and set(row[len(best):]) <= {38}
    assert all(len(e.tokens) == 2 for e in events[:-1])  # one best hypothesis per returned row at every step


def test_trace_json_round_trip(tiny_model, prompt):
    result = ours(tiny_model, prompt, num_beams=3, max_new_tokens=8, eos_token_id=38, num_return_sequences=2)
    trace = result.trace
    again = core.Trace.from_json(trace.to_json())
    assert again == trace
    assert isinstance(again.steps[0].beam[0], core.BeamNode)


# --- the embedded model ----------------------------------------------------------------------------------------
def chat_ids(loaded, text: str) -> torch.Tensor:
    return loaded.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)["input_ids"]


@pytest.mark.slow
def test_embedded_beam_search_matches_transformers_and_streams_its_text(embedded):
    ids = chat_ids(embedded, "Name three colours.")
    kwargs = dict(num_beams=4, max_new_tokens=24, num_return_sequences=2, length_penalty=1.2, do_sample=False)
    expected = reference(embedded.model, ids, **kwargs)
    events = list(core.stream(embedded.model, ids, tokenizer=embedded.tokenizer, **kwargs))
    result = events[-1].result
    assert result.sequences.tolist() == expected.sequences.tolist()
    texts = embedded.tokenizer.batch_decode(result.sequences[:, ids.shape[1]:], skip_special_tokens=True)
    assert events[-1].texts == texts == result.trace.texts
    ends = returned_nodes(result.trace, result.sequences, ids.shape[1], 2, fill_tokens(embedded.model, kwargs))
    assert [n.final_score for n in ends] == pytest.approx(expected.sequences_scores.tolist(), rel=1e-6)


@pytest.mark.slow
def test_embedded_beam_sampling_matches_transformers(embedded):
    ids = chat_ids(embedded, "Write a word.")
    kwargs = dict(num_beams=3, max_new_tokens=16, do_sample=True, top_k=30, temperature=0.9)
    assert_matches_transformers(embedded.model, ids, seed=7, **kwargs)

"""Assisted (speculative) decoding against transformers 5.x ``model.generate(assistant_model=...)`` /
``prompt_lookup_num_tokens``, against plain greedy, and the consistency of its draft records."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from transformers import GenerationConfig, TextIteratorStreamer
from transformers.generation.candidate_generator import PromptLookupCandidateGenerator
from transformers.generation.streamers import BaseStreamer

import core
from core.records import ListRecorder, Trace
from conftest import tiny_llama

SAMPLING = [dict(do_sample=True, top_k=0), dict(do_sample=True, temperature=0.7, top_p=0.9)]


def near_copy(model, noise: float = 0.02, seed: int = 7):
    """The model with slightly perturbed weights: an assistant whose drafts are often, not always, right.
    It drafts 4 tokens a step (a random tiny model is never confident enough for the default threshold)."""
    near = copy.deepcopy(model)
    near.generation_config.num_assistant_tokens = 4
    near.generation_config.assistant_confidence_threshold = 0.0
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in near.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
    return near


def reference(model, ids, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model.generate(ids, **kwargs)


def ours(model, ids, seed=0, **kwargs):
    torch.manual_seed(seed)
    return core.generate(model, ids, **kwargs)


def check_records(trace: Trace, prompt_len: int) -> None:
    """accepted + rejected == drafted; appended == accepted + corrected == the rows' chosen tokens; the
    appended tokens of all steps are the returned new tokens."""
    appended_all = []
    for step in trace.steps:
        (a,) = step.assisted
        assert a.accepted + a.rejected == a.drafted
        assert len(a.corrected) <= 1 and 0 <= a.cut <= len(a.rejected)
        assert len(a.drafted_text) == len(a.drafted)
        appended = a.accepted + a.corrected
        assert appended == [t for row in step.rows for t in row.chosen]
        assert all(row.row == 0 and len(row.chosen) == 1 for row in step.rows)
        appended_all += appended
    assert appended_all == trace.sequences[0][prompt_len:]


def acceptance(trace: Trace) -> float:
    drafted = sum(len(s.assisted[0].drafted) for s in trace.steps)
    return sum(len(s.assisted[0].accepted) for s in trace.steps) / max(drafted, 1)


# --- tiny models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("assistant_kind", ["fixture", "near"])
def test_greedy_matches_transformers_and_plain_greedy(tiny_model, tiny_assistant, prompt, assistant_kind):
    assistant = tiny_assistant if assistant_kind == "fixture" else near_copy(tiny_model)
    expected = reference(tiny_model, prompt, assistant_model=assistant, max_new_tokens=16, do_sample=False)
    rec = ListRecorder()
    got = ours(tiny_model, prompt, assistant_model=assistant, max_new_tokens=16, do_sample=False, recorder=rec)
    assert torch.equal(got.sequences, expected)
    greedy = core.generate(tiny_model, prompt, max_new_tokens=16, do_sample=False).sequences
    assert torch.equal(got.sequences, greedy)
    check_records(rec.trace, prompt.shape[1])
    assert {s.assisted[0].source for s in rec.trace.steps} == {"assistant"}
    assert rec.trace.strategy == "assisted_generation"
    if assistant_kind == "near":  # the near copy drafts several tokens and gets some right
        assert 0 < acceptance(rec.trace) and max(len(s.rows) for s in rec.trace.steps) > 1


@pytest.mark.parametrize("kwargs", SAMPLING)
@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_matches_transformers(tiny_model, prompt, kwargs, seed):
    assistant = near_copy(tiny_model)
    expected = reference(tiny_model, prompt, seed, assistant_model=assistant, max_new_tokens=12, **kwargs)
    rec = ListRecorder()
    got = ours(tiny_model, prompt, seed, assistant_model=assistant, max_new_tokens=12, recorder=rec, **kwargs)
    assert torch.equal(got.sequences, expected)
    # recording changes nothing: the same seed without a recorder gives the same tokens
    assert torch.equal(ours(tiny_model, prompt, seed, assistant_model=assistant, max_new_tokens=12, **kwargs).sequences,
                       expected)
    check_records(rec.trace, prompt.shape[1])


def test_sampling_with_fixture_assistant_matches_transformers(tiny_model, tiny_assistant, prompt):
    expected = reference(tiny_model, prompt, 3, assistant_model=tiny_assistant, max_new_tokens=16, do_sample=True)
    got = ours(tiny_model, prompt, 3, assistant_model=tiny_assistant, max_new_tokens=16, do_sample=True)
    assert torch.equal(got.sequences, expected)


def test_heuristic_schedule_adapts_like_transformers_and_leaves_the_assistant_alone(tiny_model, prompt):
    """The "heuristic" schedule grows the draft after full acceptance and shrinks it otherwise, as transformers
    does within a generation; unlike transformers, the adapted length stays with the run: the caller's assistant
    keeps its config, so every call starts from the same length (a shared assistant serves many visitors)."""
    mine = near_copy(tiny_model)
    mine.generation_config.num_assistant_tokens_schedule = "heuristic"
    mine.generation_config.num_assistant_tokens = 3
    before = mine.generation_config.to_dict()
    rec = ListRecorder()
    for _ in range(2):
        theirs = copy.deepcopy(mine)  # a fresh transformers assistant each time: no carried-over length
        expected = reference(tiny_model, prompt, assistant_model=theirs, max_new_tokens=10, do_sample=False)
        got = ours(tiny_model, prompt, assistant_model=mine, max_new_tokens=10, do_sample=False, recorder=rec)
        assert torch.equal(got.sequences, expected)
        assert mine.generation_config.to_dict() == before
    lengths = [s.assisted[0].next_draft_length for s in rec.trace.steps]
    assert len(set(lengths)) > 1


def test_assistant_settings_apply_to_the_run_only(tiny_model, prompt):
    """``num_assistant_tokens`` and friends given to ``core.generate`` drive this run's drafts (the trace's draft
    lengths follow them), give transformers' tokens for an assistant configured that way, and leave the shared
    assistant's config and weights as they were."""
    shared = near_copy(tiny_model)
    config_before = shared.generation_config.to_dict()
    weights_before = {k: v.clone() for k, v in shared.state_dict().items()}
    drafts = {}
    for n in (2, 8):
        settings = dict(num_assistant_tokens=n, num_assistant_tokens_schedule="constant",
                        assistant_confidence_threshold=0.0)
        configured = copy.deepcopy(shared)
        for name, value in settings.items():
            setattr(configured.generation_config, name, value)
        expected = reference(tiny_model, prompt, assistant_model=configured, max_new_tokens=20, do_sample=False)
        rec = ListRecorder()
        got = ours(tiny_model, prompt, assistant_model=shared, max_new_tokens=20, do_sample=False, recorder=rec,
                   **settings)
        assert torch.equal(got.sequences, expected)
        drafts[n] = [len(s.assisted[0].drafted) for s in rec.trace.steps]
        assert all(s.assisted[0].next_draft_length == n for s in rec.trace.steps)
    assert max(drafts[2]) == 2 and max(drafts[8]) > 2
    assert shared.generation_config.to_dict() == config_before
    assert all(torch.equal(v, weights_before[k]) for k, v in shared.state_dict().items())


def test_eos_ends_generation_like_transformers(tiny_model, prompt):
    """A drafted or corrected EOS ends the generation; nothing after it is appended."""
    greedy = core.generate(tiny_model, prompt, max_new_tokens=12, do_sample=False).sequences
    eos = int(greedy[0, prompt.shape[1] + 4])  # the 5th greedy token, made the EOS
    kwargs = dict(assistant_model=tiny_model, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    expected = reference(tiny_model, prompt, **kwargs)
    rec = ListRecorder()
    got = ours(tiny_model, prompt, recorder=rec, **kwargs)
    assert torch.equal(got.sequences, expected) and got.sequences[0, -1] == eos
    assert got.sequences.shape[1] <= prompt.shape[1] + 5
    check_records(rec.trace, prompt.shape[1])


@pytest.mark.parametrize("kwargs", [dict(do_sample=False)] + SAMPLING)
def test_prompt_lookup_matches_transformers(tiny_model, kwargs):
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 5, 9, 13, 17, 21, 5, 9, 13]])
    for seed in range(2):
        expected = reference(tiny_model, ids, seed, prompt_lookup_num_tokens=4, max_new_tokens=16, **kwargs)
        rec = ListRecorder()
        got = ours(tiny_model, ids, seed, prompt_lookup_num_tokens=4, max_new_tokens=16, recorder=rec, **kwargs)
        assert torch.equal(got.sequences, expected)
        check_records(rec.trace, ids.shape[1])
        steps = [s.assisted[0] for s in rec.trace.steps]
        assert {a.source for a in steps} == {"prompt_lookup"} and {a.next_draft_length for a in steps} == {4}
        assert any(a.drafted for a in steps)


def test_streamer_gets_the_appended_tokens_per_step(tiny_model, prompt):
    class Collect(BaseStreamer):
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer, rec = Collect(), ListRecorder()
    got = core.generate(tiny_model, prompt, assistant_model=near_copy(tiny_model), max_new_tokens=16,
                        do_sample=False, streamer=streamer, recorder=rec)
    assert streamer.puts[0] == prompt[0].tolist() and streamer.ended
    assert streamer.puts[1:] == [s.assisted[0].accepted + s.assisted[0].corrected for s in rec.trace.steps]
    assert sum(streamer.puts[1:], []) == got.sequences[0, prompt.shape[1]:].tolist()


def test_core_stream_events_add_up_to_the_result(tiny_model, prompt):
    events = list(core.stream(tiny_model, prompt, assistant_model=near_copy(tiny_model), max_new_tokens=16,
                              do_sample=False))
    assert events[-1].done
    assert events[-1].tokens[0] == events[-1].result.sequences[0, prompt.shape[1]:].tolist()


def test_other_vocabulary_needs_assistant_tokenizer(tiny_model, prompt):
    other = tiny_llama(1, vocab=80)
    with pytest.raises(ValueError, match="`assistant_tokenizer`"):
        core.generate(tiny_model, prompt, assistant_model=other, max_new_tokens=4)


def test_num_return_sequences_above_one_raises(tiny_model, tiny_assistant, prompt):
    with pytest.raises(ValueError, match="`num_return_sequences` must be 1 for assisted decoding; got 2"):
        core.generate(tiny_model, prompt, assistant_model=tiny_assistant, max_new_tokens=4, do_sample=True,
                      num_return_sequences=2)
    with pytest.raises(ValueError, match="`num_return_sequences`"):
        core.generate(tiny_model, prompt, prompt_lookup_num_tokens=3, max_new_tokens=4, do_sample=True,
                      num_return_sequences=2)


def test_batch_of_two_raises(tiny_model, tiny_assistant, prompt):
    with pytest.raises(ValueError, match="`input_ids` must hold 1 row for assisted decoding; got 2"):
        core.generate(tiny_model, prompt.repeat(2, 1), assistant_model=tiny_assistant, max_new_tokens=4)


def test_use_cache_false_raises(tiny_model, tiny_assistant, prompt):
    with pytest.raises(ValueError, match="`use_cache` must be True for assisted decoding"):
        core.generate(tiny_model, prompt, assistant_model=tiny_assistant, max_new_tokens=4, use_cache=False)


def test_assistant_tokenizer_with_the_same_vocabulary_raises(tiny_model, tiny_assistant, prompt):
    """transformers refuses an ``assistant_tokenizer`` that is not needed; so do we (it would otherwise switch
    to universal assisted decoding)."""
    with pytest.raises(ValueError, match="`assistant_tokenizer` must be None"):
        core.generate(tiny_model, prompt, GenerationConfig(max_new_tokens=4), assistant_model=tiny_assistant,
                      tokenizer=object(), assistant_tokenizer=object())


def test_cancel_stops_within_a_step(tiny_model, prompt):
    cancel = threading.Event()

    class CancelAfterFirstStep:
        top_n, lens = 3, False

        def on_step(self, record):
            cancel.set()

        def on_end(self, trace):
            self.trace = trace

    rec = CancelAfterFirstStep()
    core.generate(tiny_model, prompt, assistant_model=tiny_model, max_new_tokens=40, do_sample=False,
                  recorder=rec, cancel=cancel)
    assert len(rec.trace.steps) == 1


def test_trace_round_trips_through_json(tiny_model, prompt):
    rec = ListRecorder()
    core.generate(tiny_model, prompt, assistant_model=near_copy(tiny_model), max_new_tokens=10, recorder=rec)
    assert Trace.from_json(rec.trace.to_json()) == rec.trace


# --- max_new_tokens with prompt lookup (transformers PRs #46993 / #47195) -----------------------------

REPEATS = " ".join("abcdefghijklmnopqrstuvwxyz" * 2 + "abcd")  # "a b c ... z a b c ... z a b c d"


@pytest.mark.slow
def test_transformers_prompt_lookup_still_drafts_past_the_budget(embedded):
    """5.24's PromptLookupCandidateGenerator caps a draft at min(start + n, len(text so far), max_length):
    slice indices, never the remaining budget (the bug PRs #46993 / #47195 describe). If this starts
    failing, transformers fixed the generator: recheck the length handling in core/strategies/assisted.py."""
    ids = embedded.tokenizer(REPEATS, return_tensors="pt").input_ids
    generator = PromptLookupCandidateGenerator(num_output_tokens=10, max_length=ids.shape[1] + 2)
    candidates, _ = generator.get_candidates(ids)
    assert candidates.shape[1] - ids.shape[1] == 10  # drafts 10 tokens with a budget of 2


@pytest.mark.slow
@pytest.mark.parametrize("n, kwargs", [(1, dict(do_sample=False)), (3, dict(do_sample=False)), (3, SAMPLING[0])])
def test_prompt_lookup_never_returns_more_than_max_new_tokens(embedded, n, kwargs):
    model, tok = embedded.model, embedded.tokenizer
    ids = tok(REPEATS, return_tensors="pt").input_ids
    expected = reference(model, ids, prompt_lookup_num_tokens=10, max_new_tokens=n, **kwargs)
    rec = ListRecorder()
    got = ours(model, ids, prompt_lookup_num_tokens=10, max_new_tokens=n, recorder=rec, tokenizer=tok, **kwargs)
    assert got.sequences.shape[1] - ids.shape[1] == n  # never more (nor fewer: no EOS in sight)
    assert torch.equal(got.sequences, expected)
    check_records(rec.trace, ids.shape[1])
    if not kwargs["do_sample"] and n > 1:  # the drafts the model agreed with beyond the budget are `cut`
        (first,) = rec.trace.steps[0].assisted
        assert len(first.drafted) == 10 and first.accepted == first.drafted[:n] and first.cut == 10 - n
    if n == 3:  # max_length bounds the same way
        got = ours(model, ids, prompt_lookup_num_tokens=10, max_length=ids.shape[1] + n, **kwargs)
        assert torch.equal(got.sequences, expected)


# --- the embedded model ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(do_sample=False)])  # sampling: the tiny tests and prompt lookup below
def test_embedded_assisting_itself_matches_transformers(embedded, kwargs):
    model, tok = embedded.model, embedded.tokenizer
    ids = tok("The three primary colors are", return_tensors="pt").input_ids
    expected = reference(model, ids, 5, assistant_model=model, max_new_tokens=12, **kwargs)
    rec = ListRecorder()
    got = ours(model, ids, 5, assistant_model=model, max_new_tokens=12, recorder=rec, tokenizer=tok, **kwargs)
    assert torch.equal(got.sequences, expected)
    check_records(rec.trace, ids.shape[1])
    if not kwargs["do_sample"]:
        assert acceptance(rec.trace) == 1.0  # a model agrees with itself
        assert torch.equal(got.sequences, core.generate(model, ids, max_new_tokens=12, do_sample=False).sequences)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(do_sample=False)] + SAMPLING[:1])
def test_embedded_prompt_lookup_matches_transformers(embedded, kwargs):
    model, tok = embedded.model, embedded.tokenizer
    text = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
            "Rewrite both functions with type hints.\n\ndef add(a: int, b: int) -> int:\n")
    ids = tok(text, return_tensors="pt").input_ids
    expected = reference(model, ids, 1, prompt_lookup_num_tokens=5, max_new_tokens=16, **kwargs)
    rec = ListRecorder()
    got = ours(model, ids, 1, prompt_lookup_num_tokens=5, max_new_tokens=16, recorder=rec, tokenizer=tok, **kwargs)
    assert torch.equal(got.sequences, expected)
    check_records(rec.trace, ids.shape[1])
    (first,) = rec.trace.steps[0].assisted
    assert first.drafted_text == [tok.decode([t]) for t in first.drafted]


@pytest.mark.slow
def test_text_iterator_streamer_gives_the_returned_text(embedded):
    model, tok = embedded.model, embedded.tokenizer
    ids = tok(REPEATS, return_tensors="pt").input_ids
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=core.generate(
        model, ids, prompt_lookup_num_tokens=10, max_new_tokens=12, do_sample=False, streamer=streamer)))
    worker.start()
    text = "".join(streamer)
    worker.join()
    assert text == tok.decode(result["out"].sequences[0, ids.shape[1]:], skip_special_tokens=True)

"""The run's observer (``core.observe``): a run without a recorder reports to the null ``Observer``, which never calls a
strategy's record-only work, so no strategy builds a beam tree, a token text or a record it would throw away; and the
tokens are the recorded run's."""

from __future__ import annotations

import pytest
import torch

import core
from core import observe
from core.observe import Observer
from core.strategies import assisted, beam, contrastive, dola, group_beam
from core.strategies.beam_tree import BeamTree
from core.text import TokenTexts

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {
    "greedy": dict(max_new_tokens=6),
    "sample": dict(max_new_tokens=6, do_sample=True, top_k=20),
    "beam": dict(max_new_tokens=5, num_beams=3, num_return_sequences=2),
    "beam_sample": dict(max_new_tokens=5, num_beams=3, do_sample=True),
    "group_beam": dict(max_new_tokens=5, num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "constrained_beam": dict(max_new_tokens=5, num_beams=3, force_words_ids=[[7, 8]]),
    "contrastive": dict(max_new_tokens=5, penalty_alpha=0.6, top_k=4),
    "dola": dict(max_new_tokens=5, dola_layers=[0]),
    "prompt_lookup": dict(max_new_tokens=6, prompt_lookup_num_tokens=3),
    "assisted": dict(max_new_tokens=6),
}


def test_the_null_observer_calls_no_record_work():
    def build(rec):
        raise AssertionError("the null observer called a strategy's record-only work")

    assert Observer().record(build) is None


@pytest.mark.parametrize("name", list(SETTINGS))
def test_an_unrecorded_run_builds_nothing_for_records(tiny_model, tiny_assistant, prompt, monkeypatch, name):
    settings = dict(SETTINGS[name], assistant_model=tiny_assistant) if name == "assisted" else SETTINGS[name]
    recorded = core.generate(tiny_model, prompt, recorder=core.ListRecorder(top_n=3),
                             generator=torch.Generator().manual_seed(0), **settings)
    assert recorded.trace.steps

    def refuse(*args, **kwargs):
        raise AssertionError("an unrecorded run built something for a record")

    for owner, name_ in [(BeamTree, "__init__"), (TokenTexts, "__init__"), (observe, "StepRecord"),
                         (observe, "RowStep"), (observe, "Candidate"), (beam, "_Recording"),
                         (group_beam, "_StepRecording"), (contrastive, "ContrastiveCandidate"), (dola, "DolaStep"),
                         (assisted, "AssistedStep")]:
        monkeypatch.setattr(owner, name_, refuse)
    result = core.generate(tiny_model, prompt, generator=torch.Generator().manual_seed(0), **settings)
    assert result.trace is None
    assert result.sequences.tolist() == recorded.sequences.tolist()

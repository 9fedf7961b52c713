"""``core.generate`` on the embedded SmolLM2 against transformers 4.55.4, entry by entry.

``oracle/oracle_4_55_4.json`` holds what 4.55.4 generated (``oracle/make_fixture.py``, run by hand in the
oracle venv) for the strategies 5.x dropped, plus greedy and beam entries that 5.x still runs itself and
that anchor the two versions to the same weights. Each entry is replayed with its exact input ids,
attention mask and settings, recording every step, and must give the same token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from core import generate
from core.constraints import DisjunctiveConstraint, PhrasalConstraint
from core.records import ListRecorder

FIXTURE = Path(__file__).parent / "oracle" / "oracle_4_55_4.json"
ENTRIES = json.loads(FIXTURE.read_text())["entries"]


def _mode(settings: dict) -> str:
    probe = {k: v for k, v in settings.items() if k != "constraints"}
    if "constraints" in settings:
        probe["force_words_ids"] = [[0]]  # any constraint selects constrained beam search
    return GenerationConfig(**probe).get_generation_mode().value


def _constraints(specs: list[dict]) -> list:
    build = {"phrasal": lambda s: PhrasalConstraint(s["token_ids"]),
             "disjunctive": lambda s: DisjunctiveConstraint(s["nested_token_ids"])}
    return [build[spec["type"]](spec) for spec in specs]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fixture_covers_every_strategy_5x_dropped():
    modes = {_mode(e["settings"]) for e in ENTRIES}
    assert {"contrastive_search", "dola_generation", "group_beam_search", "constrained_beam_search",
            "greedy_search", "beam_search"} <= modes
    assert json.loads(FIXTURE.read_text())["transformers_version"] == "4.55.4"


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_matches_transformers_4_55_4(embedded, entry):
    settings = dict(entry["settings"])
    if "constraints" in settings:
        settings["constraints"] = _constraints(settings["constraints"])
    recorder = ListRecorder(top_n=5)
    result = generate(embedded.model, torch.tensor(entry["input_ids"]),
                      attention_mask=torch.tensor(entry["attention_mask"]), recorder=recorder,
                      tokenizer=embedded.tokenizer, **settings)
    assert result.sequences.tolist() == entry["output_ids"]
    assert recorder.trace.strategy == _mode(entry["settings"])

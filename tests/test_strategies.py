"""The strategy registry: every ``GenerationMode`` transformers names has a registered loop, and the beam family is
declared where its strategies register (``register(..., family="beam")``), not in a second table."""

from __future__ import annotations

import pytest
from transformers.generation.utils import GenerationMode

from core import strategies


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_every_generation_mode_has_a_strategy(mode):
    assert mode.value in strategies.STRATEGIES, f"no strategy registered for {mode.value}"
    assert callable(strategies.get_strategy(mode))


def test_the_registry_holds_only_generation_modes():
    assert set(strategies.STRATEGIES) <= {m.value for m in GenerationMode}


def test_the_beam_family_is_the_beam_strategies():
    beams = {mode for mode in strategies.STRATEGIES if strategies.family_of(mode) == "beam"}
    assert beams == {"beam_search", "beam_sample", "group_beam_search", "constrained_beam_search"}
    assert strategies.family_of("") is None  # before dispatch the mode is not known yet


def test_an_unknown_mode_names_the_known_ones():
    with pytest.raises(ValueError, match="no implementation; known: .*greedy_search"):
        strategies.get_strategy("telepathy")

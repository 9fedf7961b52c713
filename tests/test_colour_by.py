"""Colour by: the token view carries each token's bucket in every way of colouring (the chosen token's probability,
its step's entropy, its surprisal) and one legend per way, saying what it colours by and its scale; the status line
gives each run's mean entropy and effective vocabulary, and the entropy figure draws the effective vocabulary (from 1
token, on an axis kept apart from the grammar's)."""

from __future__ import annotations

import math
import re

import pytest

from core.records import Candidate, ProcessorEffect, RowStep, StepRecord
from playground.figures import tokens as T
from playground.figures.funnel import entropy_figure
from playground.runs import Run
from playground.tabs.status import entropy_note, mean_entropy, status_line

# (chosen token's probability after the processors, the step's entropy in nats)
STEPS = [(0.95, 0.1), (0.6, 0.9), (0.2, 1.9), (0.04, 3.0), (0.001, 6.0)]


def _steps(points=STEPS) -> list[StepRecord]:
    out = []
    for step, (prob, entropy) in enumerate(points):
        chosen = Candidate(step, f"t{step}", 1.0, prob, 1.0, prob)
        other = Candidate(100 + step, f"o{step}", 0.5, 1 - prob, 0.5, 1 - prob)
        out.append(StepRecord(step, "greedy", [RowStep(0, [chosen, other], [], [step], entropy=entropy)]))
    return out


def test_bucket_classes_per_mode():
    assert [T.entropy_class(h) for h in (0.0, 0.25, 0.3, 0.75, 1.5, 2.5, 4.0, 4.01, None)] == \
        ["dp-h5", "dp-h5", "dp-h4", "dp-h4", "dp-h3", "dp-h2", "dp-h1", "dp-h0", "dp-hna"]
    assert T.surprisal(0.5) == pytest.approx(math.log(2)) and T.surprisal(0.0) == math.inf and T.surprisal(None) is None
    # -ln p <= 0.5, 1, 2, 3, 5: p >= 0.607, 0.368, 0.135, 0.0498, 0.0067
    assert [T.surprisal_class(p) for p in (1.0, 0.61, 0.6, 0.37, 0.14, 0.05, 0.0068, 0.006, 0.0, None)] == \
        ["dp-s5", "dp-s5", "dp-s4", "dp-s4", "dp-s3", "dp-s2", "dp-s1", "dp-s0", "dp-s0", "dp-sna"]
    assert T.colour_classes(0.6, 0.9) == "dp-p3 dp-h3 dp-s4"


def test_each_token_carries_its_bucket_in_every_mode():
    out = T.tokens_html(_steps())
    classes = re.findall(r'<span class="dp-tok ([^"]*)" data-step', out)
    assert classes == [T.colour_classes(p, h) for p, h in STEPS]
    by_mode = list(zip(*(c.split() for c in classes)))
    assert by_mode[0] == ("dp-p5", "dp-p3", "dp-p1", "dp-p0", "dp-p0")  # probability: today's colouring
    assert by_mode[1] == ("dp-h5", "dp-h3", "dp-h2", "dp-h1", "dp-h0")  # entropy of the step
    assert by_mode[2] == ("dp-s5", "dp-s4", "dp-s3", "dp-s1", "dp-s0")  # surprisal tells p = 0.04 from p = 0.001
    titles = re.findall(r'title="([^"]*)"', out)
    assert "surprisal 0.05 nats, entropy 0.10 nats" in titles[0]


@pytest.mark.parametrize("mode, title, first, last", [
    ("probability", "probability of the chosen token", "p ≥ 0.9", "p &lt; 0.1"),
    ("entropy", "entropy H of the step, nats (e^H: effective vocabulary, tokens)", "H ≤ 0.25 (e^H ≈ 1.28)", "H &gt; 4"),
    ("surprisal", "surprisal −ln p of the chosen token, nats", "−ln p ≤ 0.5", "−ln p &gt; 5"),
])
def test_legend_per_mode(mode, title, first, last):
    legend = T.legend_html(mode)
    assert f'data-mode="{mode}"' in legend and title in legend
    items = re.findall(r'<span class="dp-tok ([^"]+)">([^<]*)</span>', legend)
    assert len(items) == 6 and items[0][1] == first and items[-1][1] == last
    prefix = {"probability": "dp-p", "entropy": "dp-h", "surprisal": "dp-s"}[mode]
    assert [cls for cls, _ in items] == [f"{prefix}{k}" for k in range(5, -1, -1)]  # green end first


def test_the_view_holds_every_legend_and_the_stylesheet_picks_one():
    out = T.tokens_html(_steps())
    assert re.findall(r'class="dp-legend" data-mode="(\w+)"', out) == list(T.COLOUR_BY)
    with pytest.raises(ValueError, match=r"`colour_by` must be one of probability, entropy, surprisal; got 'rank'"):
        T.legend_html("rank")
    css = (T.__file__.rsplit("/playground/", 1)[0] + "/assets/style.css")
    text = open(css).read()
    for mode in ("entropy", "surprisal"):
        assert f'.dp-token-view[data-colour="{mode}"] .dp-legend[data-mode="{mode}"]' in text
    for k in range(6):
        assert f".dp-tok.dp-h{k}" in text and f".dp-tok.dp-s{k}" in text


def test_status_shows_mean_entropy_and_effective_vocabulary():
    run = Run("main", "Greedy", steps=_steps(), done=True)
    mean = sum(h for _, h in STEPS) / len(STEPS)
    assert mean_entropy(run) == pytest.approx(mean)
    line = status_line({"main": run})
    assert f"mean entropy {mean:.2f} nats, effective vocabulary {math.exp(mean):.1f} tokens" in line
    assert entropy_note(Run("main", "Served")) == ""  # no entropy recorded: nothing said


def test_entropy_figure_draws_the_effective_vocabulary():
    fig = entropy_figure(_steps())
    by = {t.meta: t for t in fig.data}
    assert list(by["effective_vocabulary"].y) == pytest.approx([math.exp(h) for _, h in STEPS])
    assert by["effective_vocabulary"].yaxis == "y3" and fig.layout.yaxis3.type == "log"
    assert fig.layout.yaxis3.range[0] == 0  # from 1 token, the least e^H can be (log axis: 10^0)
    assert fig.layout.yaxis3.range[1] >= math.log10(math.exp(max(h for _, h in STEPS)))


def test_entropy_figure_with_a_grammar_keeps_its_two_right_axes_apart():
    """The effective vocabulary's axis beside the plot, the grammar's at the figure's edge: both at the right, one
    past the other's ticks and title."""
    steps = []
    for rec in _steps():
        rs = rec.rows[0]
        cut = ProcessorEffect("GrammarLogitsProcessor", [], [], removed_total=10, stage="grammar", kept=5, mass=0.4)
        steps.append(StepRecord(rec.step, rec.strategy, [RowStep(0, rs.candidates, [cut], rs.chosen,
                                                                entropy=rs.entropy)]))
    fig = entropy_figure(steps)
    assert [t.meta for t in fig.data] == ["entropy", "effective_vocabulary", "grammar_removed"]
    assert list(fig.data[2].y) == pytest.approx([0.6] * len(STEPS))
    assert fig.layout.xaxis.domain[1] < 1 and fig.layout.yaxis2.anchor == "free"
    assert fig.layout.yaxis2.position == 1 and fig.layout.yaxis3.side == fig.layout.yaxis2.side == "right"
    alone = entropy_figure(_steps())
    assert alone.layout.xaxis.domain is None  # without a grammar the plot keeps the whole width

"""The smoothing factor's curve (quadratic sampling, ``core.processors.smoothing``): what the run's
``smoothing_factor`` and ``smoothing_curve`` do to a logit at each distance below the top one.

The points are the output of the processor the chain builds from those two fields, called on one row of made-up
logits with the top one at 0: the figure draws what the sampler does, so it cannot drift from the code that ran (a
formula copied here could). How far left the row reaches is read from the processor's output too: about twice the gap
at which it stops pulling tokens towards the top and starts pushing them away."""

from __future__ import annotations

import functools
import math

import plotly.graph_objects as go
import torch
from transformers import GenerationConfig

from core.processors import STAGES

from .common import ACCEPTED, AFTER, BEFORE, REJECTED, empty_figure, finish

CAPTION = ("How the smoothing factor (quadratic sampling) moves each token's logit, for this run's smoothing_factor "
           "and smoothing_curve. Across: a logit as the sampler received it, measured from the top token's (0 is the "
           "top token, −2 is 2 below it); up: the logit it gave back, measured the same way. The dotted diagonal is "
           "\"unchanged\". In the green band tokens move closer to the top one (the runners-up gain probability), in "
           "the red band they fall further behind (the tail is cut harder). A token g below the top is e^-g times as "
           "likely as the top token: hover the curve for both. The curve is the sampler's own output on a row of "
           "made-up logits.")
HINT = "Set smoothing_factor (Advanced → Samplers) and Generate to see how it bends the logits here."
TITLE = "Smoothing factor curve"

PROBE = 200.0  # how far below the top the crossing is looked for: past 1 / smoothing_factor at the slider's least step
SPAN = (4.0, 40.0)  # the least and the most gap drawn
POINTS = 241
LABEL_SHARE = 0.25  # of the x axis, the least a band needs to hold its label


def settings(config: dict) -> dict:
    """The smoothing stage's fields a run set (``smoothing_factor``, ``smoothing_curve``), unset ones left out."""
    return {name: config[name] for name in STAGES["smoothing"].fields if config.get(name) is not None}


def processor(fields: dict):
    """The smoothing stage the chain builds from these fields (``None``: smoothing is off); raises ValueError for a
    value outside a field's range, in the core's words."""
    return STAGES["smoothing"].build(GenerationConfig(**fields)) if fields else None


def bend(proc, gaps: list[float]) -> list[float]:
    """What ``proc`` gives back for a row of logits ``gaps`` (the top one 0, so each output is its gap to the top)."""
    scores = torch.tensor([gaps], dtype=torch.float32)  # [1, V]
    out = proc(torch.zeros((1, 1), dtype=torch.long), scores)  # [1, V]; the processor reads no input ids
    return out[0].tolist()


def crossing(gaps: list[float], bent: list[float]) -> float | None:
    """The gap, going down from the top, where the curve first falls below the diagonal after lying above it: tokens
    nearer the top than this gained on it, those farther lost (``None``: no such place among ``gaps``)."""
    last = None  # the latest point seen above the diagonal, and by how much
    for g, b in sorted(zip(gaps, bent), reverse=True):  # from the top (0) downwards
        if g == 0:
            continue
        if b > g:
            last = (g, b - g)
        elif b < g and last is not None:  # between the two points, where the straight line between them crosses
            g0, d0 = last
            return g0 + (g - g0) * d0 / (d0 - (b - g))
    return None


def curve(config: dict) -> tuple[tuple[float, ...], tuple[float, ...], float | None] | None:
    """(gaps, the processor's output on them, the crossing) for a run's settings; ``None`` when smoothing is off."""
    return _curve(tuple(sorted(settings(config).items())))


@functools.lru_cache(maxsize=32)  # a streamed run redraws its figures at every update, with the same two values
def _curve(fields: tuple) -> tuple[tuple[float, ...], tuple[float, ...], float | None] | None:
    proc = processor(dict(fields))
    if proc is None:
        return None
    probe = [-PROBE * i / 4000 for i in range(4001)]
    cross = crossing(probe, bend(proc, probe))
    span = min(max(2 * -cross, SPAN[0]), SPAN[1]) if cross is not None else SPAN[1]  # no crossing: nearly unbent
    gaps = [-span * i / (POINTS - 1) for i in range(POINTS - 1, -1, -1)]  # from -span up to the top, 0
    return tuple(gaps), tuple(bend(proc, gaps)), cross


def band_label(text: str, share: float, position: str, shift: int) -> dict:
    """``add_vrect``'s label for a band spanning ``share`` of the x axis: none where its words would not fit."""
    if share < LABEL_SHARE:
        return {}
    return dict(annotation_text=text, annotation_position=position, annotation_xshift=shift)


def smoothing_figure(config: dict | None) -> go.Figure:
    """The run's smoothing curve: the processor's output against its input (gaps to the top logit), the diagonal
    (unchanged), and the bands where tokens gain on the top one or fall behind it."""
    drawn = curve(config or {})
    if drawn is None:
        return empty_figure(HINT, TITLE)
    gaps, bent, cross = drawn
    factor = float(config.get("smoothing_factor"))
    shape = float(config.get("smoothing_curve") or 1.0)
    lo, hi = gaps[0], 0.0
    fig = go.Figure()
    if cross is not None:  # the bands; a band too narrow for its words is left unlabelled (the title says where)
        near = max(cross, lo)
        fig.add_vrect(x0=near, x1=hi, fillcolor=ACCEPTED, opacity=0.08, line_width=0, layer="below",
                      **band_label("moves closer to the top →", near / lo, "bottom left", 4))
        if cross > lo:
            fig.add_vrect(x0=lo, x1=cross, fillcolor=REJECTED, opacity=0.06, line_width=0, layer="below",
                          **band_label("← falls further behind", 1 - cross / lo, "bottom right", -4))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="unchanged", meta="identity",
                             line=dict(color=BEFORE, dash="dot"), hoverinfo="skip"))
    relative = [[math.exp(g), math.exp(b)] for g, b in zip(gaps, bent)]  # a gap g: e^g times the top's probability
    fig.add_trace(go.Scatter(x=gaps, y=bent, mode="lines", name="after smoothing", meta="curve",
                             line=dict(color=AFTER, width=3), customdata=relative,
                             hovertemplate="logit %{x:.2f} → %{y:.2f} (relative to the top token's)<br>"
                                           "p / p(top token): %{customdata[0]:.3g} → %{customdata[1]:.3g}"
                                           "<extra></extra>"))
    note = f": tokens within {-cross:.2f} of the top gain on it" if cross is not None else ""
    finish(fig, f"Smoothing factor {factor:g}, curve {shape:g}{note}", height=380, uirevision="smoothing")
    # the diagonal whole; a steep curve leaves at the bottom rather than flatten everything above it
    bottom, top = max(min(*bent, lo), 3 * lo), max(*bent, 0.0)
    pad = 0.05 * (top - bottom)
    fig.update_layout(xaxis=dict(title="logit before, relative to the top token's", range=[lo, hi + 0.02 * -lo]),
                      yaxis=dict(title="logit after, relative to the top token's", range=[bottom - pad, top + pad]))
    return fig


__all__ = ["CAPTION", "HINT", "smoothing_figure", "curve", "settings", "processor", "bend", "crossing"]

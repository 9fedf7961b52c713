"""What every figure builder shares: reading records, picking a step, the empty-figure hint, token display.

Builders take a list of ``StepRecord`` (or a ``Trace``) and are called again after every streamed step,
so each helper here accepts partial and empty input.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable, Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

from core.records import Candidate, RowStep, StepRecord, Trace

Steps = Sequence[StepRecord] | Trace | None

# Colours with a meaning shared across figures (a token kept / removed / chosen reads the same everywhere).
BEFORE = "#9aa5b1"  # probabilities as the model gave them
AFTER = "#1f77b4"  # probabilities after the logits processors
CHOSEN = "#ff7f0e"
ACCEPTED = "#2ca02c"
REJECTED = "#d62728"
CORRECTED = "#1f77b4"
HIGHLIGHT = "#e6a700"
PALETTE = qualitative.Plotly  # one colour per beam group / per series

# No plotly template: assigning one re-validates it on every figure (~50 ms), and figures are rebuilt after
# every streamed step. The few settings that matter are set in ``finish``.
TEMPLATE = "none"
GRID = "#e8ecf2"


def records(steps: Steps) -> list[StepRecord]:
    """The step records of a ``Trace`` or of a list of records (``None`` reads as no records)."""
    if steps is None:
        return []
    if isinstance(steps, Trace):
        return list(steps.steps)
    return list(steps)


def pick(recs: list[StepRecord], step: int) -> StepRecord | None:
    """The record of decoding step ``step``; a negative ``step`` counts from the latest record."""
    if not recs:
        return None
    if step < 0:
        return recs[step] if -step <= len(recs) else None
    for rec in recs:
        if rec.step == step:
            return rec
    return recs[step] if step < len(recs) else None


def row_steps(rec: StepRecord | None, row: int) -> list[RowStep]:
    """Every ``RowStep`` of batch row (or beam) ``row`` in ``rec``, in order: one per appended token where a
    step appends several (assisted decoding records one per accepted position)."""
    return [] if rec is None else [r for r in rec.rows if r.row == row]


def row_of(rec: StepRecord | None, row: int, position: int = 0) -> RowStep | None:
    """The ``position``-th ``RowStep`` of ``row`` in ``rec`` (``None`` if there is none)."""
    found = row_steps(rec, row)
    return found[position] if -len(found) <= position < len(found) else None


def plotly_text(text: str) -> str:
    """Text for plotly titles and hovers, which read a little HTML: ``<``, ``>`` and ``&`` escaped, quotes left
    as they are (plotly shows ``&quot;`` literally)."""
    return html.escape(text, quote=False)


def visible(text: str) -> str:
    """Token text with its whitespace made visible, for labels where a leading space would vanish."""
    if text == "":
        return "∅"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def considered(candidates: Iterable[Candidate], chosen: Iterable[int] = ()) -> list[Candidate]:
    """The candidates that held some probability, before or after the processors, and the chosen ones: where fewer
    than ``top_n`` tokens survive (DoLa's relative-top mask, a top-k), no filler rows at probability 0."""
    chosen = set(chosen)
    return [c for c in candidates if c.prob > 0 or c.prob_after > 0 or c.token_id in chosen]


def unique_labels(texts: Iterable[str], ids: Iterable[int]) -> list[str]:
    """Axis categories for tokens: the visible text, with the id appended where two tokens read the same."""
    texts, ids = list(texts), list(ids)
    shown = [visible(t) for t in texts]
    counts: dict[str, int] = {}
    for s in shown:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{s} #{i}" for s, i in zip(shown, ids)]


EMPTY = "dp-empty"  # the layout.meta of a figure with nothing drawn (``empty_figure``)


def empty_figure(hint: str, title: str = "") -> go.Figure:
    """A blank figure that says what to do to fill it (its tab hides it: ``is_empty``)."""
    fig = go.Figure(layout=dict(meta=EMPTY))
    fig.add_annotation(text=hint, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#888"))
    fig.update_layout(template=TEMPLATE, title=title or None, height=300, paper_bgcolor="white", plot_bgcolor="white",
                      xaxis=dict(visible=False), yaxis=dict(visible=False), margin=dict(l=20, r=20, t=50, b=20))
    return fig


def is_empty(fig: go.Figure) -> bool:
    return fig.layout.meta == EMPTY


def finish(fig: go.Figure, title: str, *, height: int = 420, uirevision: str | None = None) -> go.Figure:
    """The layout every figure shares; ``uirevision`` keeps the user's zoom while streaming redraws it."""
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01, xanchor="left"), height=height,
                      margin=dict(l=50, r=20, t=60, b=40), hoverlabel=dict(align="left"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      uirevision=uirevision, paper_bgcolor="white", plot_bgcolor="white",
                      font=dict(family="Inter, 'Helvetica Neue', Arial, sans-serif", size=12, color="#2a3f5f"))
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True)
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True)
    return fig


# Plotly config for figures that pan and zoom; figure JSON cannot hold it, see ``figure_json``.
PLOT_CONFIG = {"scrollZoom": True, "displaylogo": False}


def figure_json(fig: go.Figure, config: dict[str, Any] | None = None) -> str:
    """``fig.to_json()`` with a top-level ``config`` (default ``PLOT_CONFIG``): Gradio's plotly component
    passes a ``config`` key of the JSON it receives to ``Plotly.react``, which a ``Figure`` cannot carry."""
    data = json.loads(fig.to_json())
    data["config"] = dict(PLOT_CONFIG if config is None else config)
    return json.dumps(data)

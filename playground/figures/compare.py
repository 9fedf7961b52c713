"""The Compare tab: generation speed of several strategies on the same prompt."""

from __future__ import annotations

from typing import Mapping

import plotly.graph_objects as go

from core.records import Trace

from .common import PALETTE, Steps, empty_figure, finish, records, row_steps

CAPTION = ("Tokens generated per second by each strategy on the same prompt and model (higher is faster). "
           "Beam search and contrastive search do more work per token; assisted decoding can do less.")


def tokens_per_second(steps: Steps) -> float | None:
    """New tokens of the first returned row per second of generation, from the records' own timings
    (``None`` before the first step). A step may add several tokens (assisted decoding)."""
    recs = records(steps)
    if not recs:
        return None
    # the beam family appends one token per step to every hypothesis; other strategies record the
    # tokens they appended (several RowSteps per step for assisted decoding)
    tokens = sum(1 if r.beam is not None or not r.rows else sum(len(rs.chosen) for rs in row_steps(r, 0))
                 for r in recs)
    elapsed = steps.elapsed_s if isinstance(steps, Trace) and steps.elapsed_s else recs[-1].elapsed_s
    return tokens / elapsed if elapsed > 0 else None


def tokens_per_second_figure(results: Mapping[str, Steps | float]) -> go.Figure:
    """One bar per strategy: ``results`` maps a label to its records (a ``Trace`` or a list of
    ``StepRecord``; tokens/s is read from their timings) or directly to a tokens/s number."""
    names, values, hover = [], [], []
    for name, value in results.items():
        if isinstance(value, (int, float)):
            rate, detail = float(value), ""
        else:
            rate = tokens_per_second(value)
            recs = records(value)
            detail = f"<br>{len(recs)} steps in {recs[-1].elapsed_s:.2f} s" if recs else ""
        if rate is not None:
            names.append(name)
            values.append(rate)
            hover.append(f"{name}: {rate:.2f} tokens/s{detail}")
    if not names:
        return empty_figure("Run the comparison to see tokens per second for each strategy.", "Compare")
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.1f}" for v in values], textposition="outside",
                           cliponaxis=False, hovertext=hover, hoverinfo="text", meta="tokens_per_second",
                           marker=dict(color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])))
    fastest = max(range(len(values)), key=values.__getitem__)
    finish(fig, f"Tokens per second · fastest: {names[fastest]}", height=380)
    fig.update_layout(yaxis=dict(title="tokens/s", rangemode="tozero"), xaxis=dict(title="strategy"),
                      showlegend=False)
    return fig


__all__ = ["CAPTION", "tokens_per_second_figure", "tokens_per_second"]

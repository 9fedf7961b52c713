"""Watched tokens: the probability the step gave each token the visitor named, whether or not it was among the
recorded candidates (``RowStep.watched``, recorded by the core through every stage of the processor chain)."""

from __future__ import annotations

import plotly.graph_objects as go

from core.records import RowStep

from .common import PALETTE, Steps, empty_figure, finish, plotly_text, records, row_of

CAPTION = ("The probability each watched token had at every step, on a log scale: the solid line after every "
           "logits processor (the distribution the token was drawn from), the dotted one the model's own. A cross at "
           "the bottom marks a step where a processor removed the token. Hover a point for its probability and rank "
           "at each stage of the chain.")
NO_WATCH = "Type tokens in \"watch\" (their texts or #<id>, comma-separated) and Generate to follow them here."


def _watched_points(steps: Steps, row: int) -> list[tuple[int, RowStep]]:
    """(step, its row ``row``) for the steps that recorded watched tokens."""
    return [(rec.step, rs) for rec in records(steps) for rs in [row_of(rec, row)] if rs is not None and rs.watched]


def _stages(rs: RowStep) -> list[str]:
    return ["model", *(e.stage or e.processor for e in rs.effects)]


def _hover(step: int, rs: RowStep, k: int) -> str:
    w = rs.watched[k]
    lines = [f"step {step} · <b>{plotly_text(repr(w.text))}</b> (id {w.token_id})"]
    lines += [f"{name}: p {p:.3g}, rank {r + 1}" if p > 0 else f"{name}: removed"
              for name, p, r in zip(_stages(rs), w.probs, w.ranks)]
    return "<br>".join(lines)


def watched_figure(steps: Steps, row: int = 0) -> go.Figure:
    """One line per watched token over the steps (log y): after every processor (solid) and the model's own
    probability (dotted, where the chain changed anything), removed steps as crosses at the bottom."""
    points = _watched_points(steps, row)
    if not points:
        return empty_figure(NO_WATCH, "Watched tokens")
    # where a removed token is drawn: below every drawn line (the model's and the final probabilities; a stage between
    # them may leave a token far less likely, and stretched the axis down to it), a little lower per token so that
    # the crosses of two tokens removed at one step do not hide each other
    positive = [p for _, rs in points for w in rs.watched for p in (w.probs[0], w.probs[-1]) if p > 0]
    floor = min(positive, default=1e-12) / 10
    fig = go.Figure()
    n_watched = len(points[0][1].watched)
    for k in range(n_watched):
        colour = PALETTE[k % len(PALETTE)]
        own = [(s, rs) for s, rs in points if k < len(rs.watched)]
        w0 = own[0][1].watched[k]
        name = f"{w0.text!r} (#{w0.token_id})"
        hover = [_hover(s, rs, k) for s, rs in own]
        final = [rs.watched[k].probs[-1] for _, rs in own]
        fig.add_trace(go.Scatter(x=[s for s, _ in own], y=[p if p > 0 else None for p in final], name=name,
                                 mode="lines+markers", line=dict(color=colour), meta=f"watched:{w0.token_id}",
                                 legendgroup=str(k), hovertext=hover, hoverinfo="text"))
        if any(len(rs.watched[k].probs) > 1 and rs.watched[k].probs[0] != rs.watched[k].probs[-1] for _, rs in own):
            fig.add_trace(go.Scatter(x=[s for s, _ in own], y=[rs.watched[k].probs[0] for _, rs in own],
                                     name=f"{name} · model", mode="lines", legendgroup=str(k), showlegend=False,
                                     line=dict(color=colour, dash="dot"), meta=f"watched_model:{w0.token_id}",
                                     hovertext=hover, hoverinfo="text"))
        removed = [(s, h) for (s, _), p, h in zip(own, final, hover) if p <= 0]
        if removed:
            fig.add_trace(go.Scatter(x=[s for s, _ in removed], y=[floor / 2 ** k] * len(removed), mode="markers",
                                     name=f"{name} · removed", legendgroup=str(k), showlegend=False,
                                     marker=dict(symbol="x", color=colour, size=9),
                                     meta=f"watched_removed:{w0.token_id}",
                                     hovertext=[h for _, h in removed], hoverinfo="text"))
    finish(fig, f"Watched tokens · row {row}: probability per step", height=360, uirevision=f"watch-{row}")
    fig.update_layout(xaxis=dict(title="step"), yaxis=dict(title="probability (log)", type="log", exponentformat="e"))
    return fig


__all__ = ["CAPTION", "NO_WATCH", "watched_figure"]

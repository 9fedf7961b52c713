"""Contrastive search: each candidate's confidence, degeneration penalty and final score."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.records import ContrastiveCandidate

from .common import (BEFORE, CHOSEN, PALETTE, REJECTED, Steps, empty_figure, finish, pick, plotly_text, records,
                     unique_labels)

CAPTION = ("Contrastive search scores each of the top-k tokens as (1 − α)·confidence − α·degeneration penalty, "
           "where the penalty is how similar the token's hidden state is to the text so far. Top: the latest "
           "step's candidates; bottom: every step's candidates ranked by confidence, ☆ the chosen one — a ☆ "
           "below rank 1 is a step where the penalty overruled greedy search.")


def _ranked(cands: list[ContrastiveCandidate]) -> list[ContrastiveCandidate]:
    """Candidates by model confidence, most confident first (rank 1 is what greedy search would pick)."""
    return sorted(cands, key=lambda c: -c.confidence)


def contrastive_figure(steps: Steps, step: int = -1, row: int = 0) -> go.Figure:
    """Grouped bars for one step (``step``, negative from the latest) above a steps x rank heatmap of
    final scores with the chosen candidate marked."""
    recs = [r for r in records(steps) if r.contrastive and row < len(r.contrastive)]
    rec = pick(recs, step)
    if rec is None:
        return empty_figure("Run contrastive search (penalty_alpha > 0, top_k > 1) to see its scores here.",
                            "Contrastive search")
    fig = make_subplots(rows=2, cols=1, row_heights=[0.5, 0.5], vertical_spacing=0.2,
                        subplot_titles=(f"step {rec.step}: candidates by confidence",
                                        "final score of each candidate rank, every step"))
    cands = _ranked(rec.contrastive[row])
    labels = unique_labels([c.text for c in cands], [c.token_id for c in cands])
    labels = [f"★ {lab}" if c.chosen else lab for lab, c in zip(labels, cands)]
    series = (("confidence", BEFORE, [c.confidence for c in cands]),
              ("degeneration penalty", REJECTED, [c.degeneration_penalty for c in cands]),
              ("final score", PALETTE[0], [c.score for c in cands]))
    for name, colour, ys in series:
        fig.add_trace(go.Bar(x=labels, y=ys, name=name, meta=name, legendgroup=name,
                             marker=dict(color=colour, line=dict(color=[CHOSEN if c.chosen else colour for c in cands],
                                                                 width=[3 if c.chosen else 0 for c in cands])),
                             hovertemplate="%{x}<br>" + name + " %{y:.4f}<extra></extra>"), row=1, col=1)

    depth = max(len(r.contrastive[row]) for r in recs)
    z, text, chosen_x, chosen_y, chosen_hover = [], [], [], [], []
    for r in recs:
        ranked = _ranked(r.contrastive[row])
        z.append([c.score for c in ranked] + [None] * (depth - len(ranked)))
        text.append([plotly_text(repr(c.text)) for c in ranked] + [""] * (depth - len(ranked)))
        for rank, c in enumerate(ranked, start=1):
            if c.chosen:
                chosen_x.append(r.step)
                chosen_y.append(rank)
                chosen_hover.append(f"step {r.step}: chose {plotly_text(repr(c.text))} (rank {rank})")
    # z is built step-major for readability, the heatmap wants rank-major: transpose
    fig.add_trace(go.Heatmap(x=[r.step for r in recs], y=list(range(1, depth + 1)),
                             z=[list(col) for col in zip(*z)], text=[list(col) for col in zip(*text)],
                             colorscale="Viridis", meta="scores", name="final score", showscale=True,
                             colorbar=dict(title="score", len=0.45, y=0.22),
                             hovertemplate="step %{x} · rank %{y}<br>%{text}<br>score %{z:.4f}<extra></extra>"),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=chosen_x, y=chosen_y, mode="markers", name="chosen", meta="chosen",
                             marker=dict(symbol="star", size=12, color="white", line=dict(width=1, color="black")),
                             hovertext=chosen_hover, hoverinfo="text"), row=2, col=1)
    overruled = sum(1 for y in chosen_y if y != 1)
    finish(fig, f"Contrastive search · penalty overruled greedy at {overruled} of {len(chosen_y)} steps",
           height=540, uirevision=f"contrastive-{row}")
    fig.update_layout(barmode="group", margin=dict(t=100), legend=dict(y=1.06))
    fig.update_yaxes(title_text="rank by confidence", autorange="reversed", dtick=1, row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    return fig


__all__ = ["CAPTION", "contrastive_figure"]

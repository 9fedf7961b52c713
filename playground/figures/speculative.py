"""Assisted (speculative) decoding: which drafted tokens the main model accepted, and what it gained."""

from __future__ import annotations

import plotly.graph_objects as go

from .common import (ACCEPTED, CORRECTED, PALETTE, REJECTED, Steps, empty_figure, finish, plotly_text, records,
                     visible)

CAPTION = ("Each column is one round of assisted decoding: a small draft model (or prompt lookup) proposes "
           "tokens, the main model checks them all in one forward pass. Green were accepted, red rejected, "
           "blue is the main model's own token after the last accepted one (a correction or a bonus token); "
           "the dash marks how many tokens the next round may draft.")

TIMING_CAPTION = ("Generation speed of the same prompt with and without the assistant. Both produce the same "
                  "tokens under greedy decoding; the assistant only changes how many forward passes of the "
                  "main model it takes.")

STATUS_COLOURS = {"accepted": ACCEPTED, "rejected": REJECTED, "corrected": CORRECTED}


def acceptance_rate(steps: Steps, row: int = 0) -> float | None:
    """Accepted / drafted tokens over all recorded rounds (``None`` before anything was drafted)."""
    drafted = accepted = 0
    for r in records(steps):
        if r.assisted and row < len(r.assisted):
            drafted += len(r.assisted[row].drafted)
            accepted += len(r.assisted[row].accepted)
    return accepted / drafted if drafted else None


def speculative_figure(steps: Steps, row: int = 0) -> go.Figure:
    """x = step, y = position in the draft; one square per drafted token coloured by its fate, then the
    corrected token; a dashed line shows the draft length chosen for the next round."""
    recs = [r for r in records(steps) if r.assisted and row < len(r.assisted)]
    if not recs:
        return empty_figure("Run assisted decoding (an assistant model or prompt_lookup_num_tokens) to see drafts.",
                            "Speculative decoding")
    cells: dict[str, tuple[list, list, list, list]] = {k: ([], [], [], []) for k in STATUS_COLOURS}
    for r in recs:
        a = r.assisted[row]
        texts = {c.token_id: c.text for rs in r.rows for c in rs.candidates}
        n_acc = len(a.accepted)
        entries = [("accepted", tok, a.drafted_text[i] if i < len(a.drafted_text) else texts.get(tok, f"#{tok}"))
                   for i, tok in enumerate(a.accepted)]
        entries += [("rejected", tok, a.drafted_text[n_acc + i] if n_acc + i < len(a.drafted_text)
                     else texts.get(tok, f"#{tok}")) for i, tok in enumerate(a.rejected)]
        entries += [("corrected", tok, texts.get(tok, f"#{tok}")) for tok in a.corrected]
        for slot, (status, tok, text) in enumerate(entries):
            xs, ys, labels, hover = cells[status]
            xs.append(r.step)
            ys.append(slot)
            labels.append(visible(text)[:6])
            hover.append(f"step {r.step} · slot {slot}: <b>{plotly_text(repr(text))}</b> (id {tok})<br>{status}"
                         f" · source {a.source}")
    fig = go.Figure()
    for status, (xs, ys, labels, hover) in cells.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", name=status, meta=status, text=labels,
                                 textfont=dict(size=10), hovertext=hover, hoverinfo="text",
                                 marker=dict(symbol="square", size=30, color=STATUS_COLOURS[status], opacity=0.45)))
    # the draft length a round chose for the next one: a bar under the last slot the next round may fill
    fig.add_trace(go.Scatter(x=[r.step + 1 for r in recs], y=[r.assisted[row].next_draft_length - 0.5 for r in recs],
                             mode="markers", marker=dict(symbol="line-ew-open", size=30, color="#555",
                                                         line=dict(width=2)),
                             name="draft length planned", meta="draft_length", hoverinfo="text",
                             hovertext=[f"after step {r.step}: the next round drafts up to "
                                        f"{r.assisted[row].next_draft_length} tokens" for r in recs]))
    rate = acceptance_rate(recs, row)
    drafted = sum(len(r.assisted[row].drafted) for r in recs)
    rate_text = f"{rate:.0%} of {drafted} drafted tokens accepted" if rate is not None else "nothing drafted yet"
    slots = max((max(ys) + 1 for _, ys, _, _ in cells.values() if ys), default=1)
    finish(fig, f"Speculative decoding · {rate_text} · source: {recs[-1].assisted[row].source}",
           height=min(max(320, 140 + 30 * slots), 480), uirevision=f"speculative-{row}")  # then it pans
    last = recs[-1].step
    fig.update_layout(dragmode="pan",
                      xaxis=dict(title="step (one verification round)", dtick=1,
                                 range=[max(recs[0].step, last - 24) - 0.6, last + 1.6]),
                      yaxis=dict(title="position in the draft", autorange="reversed", dtick=1, zeroline=False))
    return fig


def timing_figure(results: dict[str, float], unit: str = "tokens/s") -> go.Figure:
    """Bars of one number per run (e.g. ``{"assisted": 41.2, "greedy": 23.5}``); ``unit`` "tokens/s"
    (higher is better) or "s" (lower is better). The title states the speed-up of the best over the worst."""
    if not results:
        return empty_figure("Run the timing comparison to see tokens/s with and without the assistant.", "Timing")
    names, values = list(results), [float(v) for v in results.values()]
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.2f} {unit}" for v in values], textposition="outside",
                           marker=dict(color=[PALETTE[i % len(PALETTE)] for i in range(len(names))]),
                           cliponaxis=False, meta="timing", hovertemplate="%{x}: %{y:.3f} " + unit + "<extra></extra>"))
    title = "Timing"
    if len(values) >= 2 and min(values) > 0:
        higher_better = unit not in ("s", "seconds")
        best = max(range(len(values)), key=lambda i: values[i] if higher_better else -values[i])
        worst = min(range(len(values)), key=lambda i: values[i] if higher_better else -values[i])
        ratio = values[best] / values[worst] if higher_better else values[worst] / values[best]
        title = f"{names[best]} is {ratio:.2f}× as fast as {names[worst]}"
    finish(fig, title, height=360)
    fig.update_layout(yaxis=dict(title=unit, rangemode="tozero"), showlegend=False)
    return fig


__all__ = ["CAPTION", "TIMING_CAPTION", "speculative_figure", "timing_figure", "acceptance_rate"]

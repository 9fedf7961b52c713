"""The sampler chain as the core recorded it: at one step a funnel (per stage: tokens that survive, the model's
probability they hold, the chosen token's probability), over the run the entropy of the distribution each token
came from and, with structured output, what the grammar allowed and removed; the watermark's green list per token."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from core.records import RowStep, Trace

from .common import (AFTER, ACCEPTED, BEFORE, CHOSEN, REJECTED, Steps, empty_figure, finish, pick, plotly_text,
                     records, row_of, visible)

CAPTION = ("The sampler chain at the picked step, stage by stage in the order it ran. Bars: how many tokens still "
           "have a chance (log scale). Blue line: how much of the model's own probability those tokens hold. Orange "
           "line: the probability of the token that was finally chosen after each stage.")
RUN_CAPTION = ("Entropy (nats) of the distribution each token was drawn from, after every stage: low means the "
               "chain left one obvious choice. The dotted line is the effective vocabulary e^H (right axis, log "
               "scale): as many equally likely tokens as that uncertainty amounts to. With structured output, the "
               "red line is the share of the model's probability the grammar removed at each step (hover for how "
               "many tokens it allowed).")
GRAMMAR_DOMAIN = 0.84  # of the width, where the entropy figure's plot ends when two axes stand at its right

WATERMARK_CAPTION = ("Each generated token, green when it fell in the green list its context seeds (the watermark "
                     "favours those), red otherwise; the title gives transformers' WatermarkDetector z-score.")


def stages(rs: RowStep) -> list[tuple[str, int, float, float | None]]:
    """(stage, survivors, model mass, chosen probability) from the model's own distribution through every stage."""
    chosen = rs.chosen[0] if rs.chosen else None
    model_prob = next((c.prob for c in rs.candidates if c.token_id == chosen), None)
    first = rs.effects[0] if rs.effects else None
    vocab = first.kept + first.removed_total if first is not None else None
    out = [("model", vocab, 1.0, model_prob)]
    for e in rs.effects:
        out.append((e.stage or e.processor, e.kept, e.mass, e.chosen_prob))
    return out


def funnel_figure(steps: Steps, step: int = -1, row: int = 0) -> go.Figure:
    """The funnel of one step and row: per stage survivors (bars), model mass kept and chosen probability (lines)."""
    rec = pick(records(steps), step)
    rs = row_of(rec, row)
    if rs is None:
        return empty_figure("Generate to see the sampler chain of each step here.", "Sampler chain")
    rows = stages(rs)  # without processors the chain is the model alone
    names = [r[0] for r in rows]
    kept = [r[1] for r in rows]
    mass = [r[2] for r in rows]
    chosen = [r[3] for r in rows]
    text = {c.token_id: c.text for c in rs.candidates}
    picked = visible(text.get(rs.chosen[0], str(rs.chosen[0]))) if rs.chosen else "—"
    hover = [f"<b>{plotly_text(n)}</b><br>{k if k is not None else '?'} tokens left<br>model probability kept "
             f"{m:.4f}" + (f"<br>chosen token p = {c:.4f}" if c is not None else "")
             for n, k, m, c in zip(names, kept, mass, chosen)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=kept, name="tokens left", marker=dict(color=BEFORE), hovertext=hover,
                         hoverinfo="text", text=[str(k) if k is not None else "" for k in kept],
                         textposition="outside", cliponaxis=False, meta="kept"))
    fig.add_trace(go.Scatter(x=names, y=mass, name="model probability kept", mode="lines+markers", yaxis="y2",
                             line=dict(color=AFTER), hovertext=hover, hoverinfo="text", meta="mass"))
    fig.add_trace(go.Scatter(x=names, y=chosen, name=f"p({picked})", mode="lines+markers", yaxis="y2",
                             line=dict(color=CHOSEN, dash="dot"), hovertext=hover, hoverinfo="text", meta="chosen"))
    grammar = next((e for e in rs.effects if e.stage == "grammar"), None)
    note = "" if rs.effects else " · no processor ran: the model's own probabilities"
    if grammar is not None:
        before = rows[[r[0] for r in rows].index("grammar") - 1][2]
        note = f" · grammar allowed {grammar.kept:,} tokens, removed {before - grammar.mass:.1%} of the probability"
    finish(fig, f"Step {rec.step} · row {row}: chose {plotly_text(picked)}{note}", uirevision=f"funnel-{row}")
    fig.update_layout(yaxis=dict(title="tokens left", type="log"),
                      yaxis2=dict(title="probability", overlaying="y", side="right", range=[0, 1.05]),
                      xaxis=dict(title="stage (in the order it ran)"), bargap=0.3, margin=dict(r=70))
    return fig


def entropy_figure(steps: Steps, row: int = 0) -> go.Figure:
    """Entropy of the final distribution per step and its effective vocabulary e^H (how many equally likely tokens
    that uncertainty amounts to, on a log axis at the right); with a grammar, the probability it removed per step
    (on a second right axis)."""
    recs = records(steps)
    points = [(rec.step, rs) for rec in recs for rs in [row_of(rec, row)] if rs is not None and rs.entropy is not None]
    if not points:
        return empty_figure("Generate to see the entropy of each step here.", "Entropy per step")
    x = [s for s, _ in points]
    fig = go.Figure(go.Scatter(x=x, y=[rs.entropy for _, rs in points], name="entropy (nats)", mode="lines+markers",
                               line=dict(color=AFTER), meta="entropy",
                               hovertemplate="step %{x}<br>entropy %{y:.3f} nats<extra></extra>"))
    effective = [math.exp(rs.entropy) for _, rs in points]
    fig.add_trace(go.Scatter(x=x, y=effective, name="effective vocabulary (e^H)",
                             mode="lines", yaxis="y3", line=dict(color=AFTER, dash="dot"), meta="effective_vocabulary",
                             hovertemplate="step %{x}<br>effective vocabulary %{y:.3g} tokens<extra></extra>"))
    removed, allowed, gx = [], [], []
    for s, rs in points:
        names = [e.stage for e in rs.effects]
        if "grammar" in names:
            i = names.index("grammar")
            before = rs.effects[i - 1].mass if i > 0 else 1.0
            gx.append(s)
            removed.append(before - rs.effects[i].mass)
            allowed.append(rs.effects[i].kept)
    if gx:
        fig.add_trace(go.Scatter(x=gx, y=removed, name="probability the grammar removed", mode="lines+markers",
                                 yaxis="y2", line=dict(color=REJECTED), customdata=allowed, meta="grammar_removed",
                                 hovertemplate="step %{x}<br>removed %{y:.1%}<br>%{customdata:,} tokens allowed"
                                               "<extra></extra>"))
    finish(fig, f"Entropy per step · row {row}", height=340, uirevision=f"entropy-{row}")
    fig.update_layout(xaxis=dict(title="step"), yaxis=dict(title="nats", rangemode="tozero"),
                      # from 1 (one sure token, the least e^H can be): padded below it, the axis read 0.9 as "9"
                      yaxis3=dict(title="effective vocabulary (tokens)", overlaying="y", side="right", type="log",
                                  showgrid=False, range=[0, 1.05 * math.log10(max(*effective, 2.0))]),
                      yaxis2=dict(title="removed", overlaying="y", side="right", range=[0, 1.05], tickformat=".0%",
                                  showgrid=False),
                      margin=dict(r=70))
    if gx:  # two axes at the right: the plot ends short of the edge for the effective vocabulary's, and the
        # grammar's stands at the edge (plotly's autoshift moves it past the other's ticks but not past its title)
        fig.update_layout(xaxis=dict(domain=[0, GRAMMAR_DOMAIN]), yaxis2=dict(anchor="free", position=1.0))
    return fig


def chosen_texts(steps: Steps, row: int = 0) -> list[str]:
    """The text of the token row ``row`` chose at each step, from the recorded candidates."""
    out = []
    for rec in records(steps):
        rs = row_of(rec, row)
        if rs is not None and rs.chosen:
            out.append(next((c.text for c in rs.candidates if c.token_id == rs.chosen[0]), f"#{rs.chosen[0]}"))
    return out


def watermark_figure(trace: Trace | None, row: int = 0) -> go.Figure:
    """The generated tokens of returned row ``row`` coloured by green-list membership, with the z-score (a hint
    while the run has none)."""
    if trace is None or not trace.watermark:
        return empty_figure("Set watermarking_config under Advanced to see which tokens fell in the green list.",
                            "Watermark")
    texts = chosen_texts(trace, row)
    report = trace.watermark[min(row, len(trace.watermark) - 1)]
    if not report.green:
        return empty_figure("No generated tokens to score.", "Watermark")
    n = len(report.green)
    labels = [visible(t) for t in (list(texts) + [""] * n)[:n]]
    fig = go.Figure(go.Bar(x=list(range(n)), y=[1] * n, text=labels, textposition="inside", insidetextanchor="middle",
                           marker=dict(color=[ACCEPTED if g else REJECTED for g in report.green]),
                           hovertext=[f"{plotly_text(t)}: {'green' if g else 'red'}"
                                      for t, g in zip(labels, report.green)],
                           hoverinfo="text", meta="green"))
    z = "too short to score" if report.z_score is None else f"z = {report.z_score:.2f} (p = {report.p_value:.2g})"
    finish(fig, f"Watermark · {sum(report.green)}/{n} tokens green (expected {report.greenlist_ratio:.0%}) · {z}",
           height=220, uirevision=f"watermark-{row}")
    fig.update_layout(xaxis=dict(title="generated token"), yaxis=dict(visible=False), bargap=0.05, showlegend=False)
    return fig


__all__ = ["CAPTION", "RUN_CAPTION", "WATERMARK_CAPTION", "funnel_figure", "entropy_figure", "watermark_figure",
           "stages", "chosen_texts"]

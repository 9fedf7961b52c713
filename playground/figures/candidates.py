"""The candidates of one step: probabilities before and after the logits processors, and who removed what."""

from __future__ import annotations

import plotly.graph_objects as go

from core.records import ProcessorEffect, RowStep, StepRecord

from .common import (AFTER, BEFORE, CHOSEN, Steps, considered, empty_figure, finish, pick, plotly_text, records,
                     row_of, row_steps, unique_labels)

CAPTION = ("The tokens the model considered at one step. Grey bars are the model's own probabilities, blue bars "
           "the probabilities after the logits processors (temperature, top-k, top-p, penalties...); a crossed "
           "bar was removed by the processor named above it, and ★ (and an orange outline) marks the token that was "
           "chosen.")

TOP = 15  # bars shown; the chosen token is always among them


# Stages named by their stage, not their class: the visitor switched them on by a field of that name (``regex``,
# ``json_schema`` and ``grammar`` all make the "grammar" stage) and never met the class that implements them.
BY_STAGE = ("grammar",)


def processor_name(effect: ProcessorEffect) -> str:
    """How the candidates name the processor of ``effect``: its class (``TopKLogitsWarper``) or, for the core's own
    stages in ``BY_STAGE``, the stage ("grammar")."""
    return effect.stage if effect.stage in BY_STAGE else effect.processor


def removed_by(row: RowStep) -> dict[int, list[str]]:
    """Token id -> names of the processors that removed it (set it to -inf), in the order they ran."""
    out: dict[int, list[str]] = {}
    for effect in row.effects:
        for token_id in effect.removed:
            out.setdefault(token_id, []).append(processor_name(effect))
    return out


def changed_by(row: RowStep) -> dict[int, list[str]]:
    """Token id -> names of the processors that changed its score without removing it."""
    out: dict[int, list[str]] = {}
    for effect in row.effects:
        for token_id in effect.changed:
            out.setdefault(token_id, []).append(processor_name(effect))
    return out


def short(processor: str) -> str:
    """``TopKLogitsWarper`` -> ``TopK``: bar labels stay short, hover text keeps the full name."""
    for suffix in ("LogitsProcessor", "LogitsWarper", "Processor", "Warper"):
        if processor.endswith(suffix) and processor != suffix:
            return processor[: -len(suffix)]
    return processor


def candidates_figure(steps: Steps, step: int = -1, row: int = 0, position: int = 0, top: int = TOP) -> go.Figure:
    """Grouped bars of ``prob`` and ``prob_after`` for the ``top`` most probable candidates of one step
    (``step`` = decoding step, negative counts from the latest) and one row (batch row or beam);
    ``position`` picks the token within a step that appended several (assisted decoding)."""
    rec = pick(records(steps), step)
    rs = row_of(rec, row, position)
    if rs is None or not rs.candidates:
        return empty_figure("Generate to see the candidates of each step here.", "Candidates")
    chosen = set(rs.chosen)
    ranked = sorted(considered(rs.candidates, chosen), key=lambda c: -c.prob)
    shown = ranked[:top] + [c for c in ranked[top:] if c.token_id in chosen]
    shown.sort(key=lambda c: -c.prob)
    removed, changed = removed_by(rs), changed_by(rs)
    labels = unique_labels([c.text for c in shown], [c.token_id for c in shown])
    labels = [f"★ {lab}" if c.token_id in chosen else lab for lab, c in zip(labels, shown)]

    hover = []
    for c in shown:
        lines = [f"<b>{plotly_text(repr(c.text))}</b> (id {c.token_id})",
                 f"logit {c.logit:.3f} → score {c.score:.3f}", f"prob {c.prob:.4f} → {c.prob_after:.4f}"]
        if c.token_id in removed:
            lines.append("removed by " + ", ".join(removed[c.token_id]))
        if c.token_id in changed:
            lines.append("changed by " + ", ".join(changed[c.token_id]))
        if c.token_id in chosen:
            lines.append("<b>chosen</b>")
        hover.append("<br>".join(lines))

    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=labels, y=[c.prob for c in shown], name="before processors (prob)", hovertext=hover, hoverinfo="text",
        marker=dict(color=BEFORE, pattern=dict(shape=["x" if c.token_id in removed else "" for c in shown])),
        text=["✕ " + "+".join(short(p) for p in removed[c.token_id]) if c.token_id in removed else ""
              for c in shown], textposition="outside", cliponaxis=False, meta="prob",
        # upright and at full size: plotly shrinks a label to its bar's width, which left "✕ grammar" unreadable
        textangle=-90, constraintext="none", textfont=dict(size=11)))
    # the chosen token's bar outlined, not filled, in the chosen colour: a legend swatch takes the colours of the
    # trace's first bar, which is often the chosen one, and the after bars are blue, as the caption says
    fig.add_trace(go.Bar(
        x=labels, y=[c.prob_after for c in shown], name="after processors (prob_after)", hovertext=hover,
        hoverinfo="text", meta="prob_after",
        marker=dict(color=AFTER, line=dict(color=[CHOSEN if c.token_id in chosen else AFTER for c in shown],
                                           width=[3 if c.token_id in chosen else 0 for c in shown]))))
    picked = ", ".join(repr(c.text) for c in rs.candidates if c.token_id in chosen) or str(rs.chosen)
    where = f"Step {rec.step}" + (f" (token {position + 1})" if len(row_steps(rec, row)) > 1 else "")
    finish(fig, f"{where} · row {row}: chose {plotly_text(picked)}", uirevision=f"candidates-{row}")
    fig.update_layout(barmode="group", bargap=0.25, yaxis=dict(title="probability", rangemode="tozero"),
                      xaxis=dict(title="candidate token (most probable first)", tickangle=-45))
    return fig


def processor_summary(record: StepRecord | None, row: int = 0, position: int = 0) -> str:
    """What each logits processor did at this step, in plain words (one line per processor)."""
    rs = row_of(record, row, position)
    if rs is None:
        return "No step recorded yet."
    if not rs.effects:
        return "No logits processor ran at this step: the token was picked from the model's own probabilities."
    text = {c.token_id: c.text for c in rs.candidates}
    lines = []
    for e in rs.effects:
        parts = []
        if e.removed_total:
            names = ", ".join(repr(text.get(t, str(t))) for t in e.removed[:5])
            more = "…" if len(e.removed) > 5 else ""
            shown = f", {len(e.removed)} of them among the shown candidates ({names}{more})" if e.removed else ""
            parts.append(f"removed {e.removed_total:,} tokens of the vocabulary{shown}")
        if e.changed:
            parts.append(f"changed the score of {len(e.changed)} of the {len(rs.candidates)} shown candidates")
        lines.append(f"{processor_name(e)}: " + ("; ".join(parts) if parts else "changed none of the shown candidates"))
    return "\n".join(lines)


__all__ = ["CAPTION", "candidates_figure", "processor_summary", "removed_by", "changed_by", "short", "processor_name"]

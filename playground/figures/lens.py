"""The logit lens: how each layer of the model would have predicted the step's token (``StepRecord.lens``)."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from core.records import LayerLens, StepRecord

from .common import CHOSEN, Steps, empty_figure, finish, pick, plotly_text, records, row_of, visible

CAPTION = ("The logit lens reads every layer's hidden state through the model's final norm and LM head, as if the "
           "model stopped there. Each cell is the probability a layer (rows, the embeddings at the bottom) gives "
           "the token the step chose (columns): a column that lights up only near the top is a prediction the "
           "last layers made. Hover a cell for that layer's top tokens and its KL divergence from the final layer. "
           "Reading every layer costs about one more LM head per layer and step. With watched tokens, the menu at the "
           "top right shows a watched token's probability per layer instead, on a log scale.")
STEP_CAPTION = ("Each layer's most probable next tokens at the picked step, most probable on the left, coloured by "
                "that layer's probability; ★ marks the token the step chose.")
LOG_FLOOR = -10  # the watched tokens' heatmaps show log10 p from here (and below it, clamped) to 0
NO_LENS = ("Tick \"Record the logit lens\" and Generate to see each layer's prediction here (models with a final "
           "norm and an LM head).")


def _label(layer: int, last: int) -> str:
    return "embeddings" if layer == 0 else "final" if layer == last else f"layer {layer}"


def _lens_records(steps: Steps, row: int) -> list[StepRecord]:
    """The steps that recorded ``row``'s lens (none once the row has finished)."""
    return [r for r in records(steps) if r.lens and row < len(r.lens) and r.lens[row]]


def _top_text(layer: LayerLens, n: int = 5) -> str:
    return ", ".join(f"{plotly_text(repr(c.text))} {c.prob:.3f}" for c in layer.top[:n])


def lens_figure(steps: Steps, row: int = 0) -> go.Figure:
    """Heatmap with y = layers (embeddings first), x = steps, z = ``LayerLens.chosen_prob``; hover: the chosen token's
    rank, the layer's top tokens and its KL divergence from the final layer. With watched tokens
    (``LayerLens.watched``), one more heatmap per watched token (its probability and rank per layer), hidden, and a
    menu that picks which one shows."""
    recs = _lens_records(steps, row)
    if not recs:
        return empty_figure(NO_LENS, "Logit lens")
    layers = len(recs[0].lens[row])
    last = layers - 1
    xs = [r.step for r in recs]
    chosen = [row_of(r, row).chosen[0] if row_of(r, row) else None for r in recs]
    # each step's chosen token as its own step's records spell it (a split character reads whole there)
    spelled = [{c.token_id: c.text for layer in r.lens[row] for c in layer.top}
               | {c.token_id: c.text for c in (row_of(r, row).candidates if row_of(r, row) else ())} for r in recs]
    texts = [spelled[j].get(t, f"#{t}") if t is not None else "" for j, t in enumerate(chosen)]
    z = [[None] * len(recs) for _ in range(layers)]  # [layers][steps]
    hover = [[""] * len(recs) for _ in range(layers)]
    for j, r in enumerate(recs):
        token = plotly_text(repr(texts[j]))
        for layer in r.lens[row][:layers]:
            z[layer.layer][j] = layer.chosen_prob
            hover[layer.layer][j] = (f"step {r.step} · {_label(layer.layer, last)}<br>chose {token}: p "
                                     f"{layer.chosen_prob:.4f}, rank {layer.chosen_rank + 1}<br>KL to final "
                                     f"{layer.kl_to_final:.3f}<br>top: {_top_text(layer)}")
    labels = [_label(i, last) for i in range(layers)]
    fig = go.Figure(go.Heatmap(x=xs, y=labels, z=z, zmin=0.0, zmax=1.0, colorscale="Viridis", meta="chosen_prob",
                               name="probability of the chosen token", colorbar=dict(title="p(chosen)"),
                               hovertext=hover, hoverinfo="text"))
    title = f"Logit lens · row {row}: each layer's probability of the chosen token"
    finish(fig, title, height=max(360, 120 + 14 * layers), uirevision=f"lens-{row}")
    _add_watched(fig, recs, row, xs, labels, last, title)
    fig.update_layout(xaxis=dict(title="step (chosen token)", tickvals=xs,
                                 ticktext=[f"{x} {visible(t)}" for x, t in zip(xs, texts)],
                                 tickangle=-45),
                      yaxis=dict(title="layer", type="category", categoryorder="array", categoryarray=labels))
    return fig


def _add_watched(fig: go.Figure, recs: list[StepRecord], row: int, xs: list[int], labels: list[str], last: int,
                 title: str) -> None:
    """One hidden heatmap per watched token (layers x steps of its probability) and a menu over the chosen token's
    heatmap and theirs; nothing without watched tokens."""
    watched = next((layer.watched for r in recs for layer in r.lens[row] if layer.watched), [])
    if not watched:
        return
    texts = {w.token_id: w.text for r in recs for rs in [row_of(r, row)] if rs is not None for w in rs.watched}
    for k, w0 in enumerate(watched):
        token = plotly_text(repr(texts.get(w0.token_id, f"#{w0.token_id}")))
        z = [[None] * len(recs) for _ in labels]
        hover = [[""] * len(recs) for _ in labels]
        for j, r in enumerate(recs):
            for layer in r.lens[row][:len(labels)]:
                if k < len(layer.watched):
                    w = layer.watched[k]
                    z[layer.layer][j] = math.log10(max(w.prob, 10.0 ** LOG_FLOOR))
                    hover[layer.layer][j] = (f"step {r.step} · {_label(layer.layer, last)}<br>{token}: p "
                                             f"{w.prob:.4g}, rank {w.rank + 1}")
        # a log scale: a watched token is mostly far from the top, where a linear one shows every layer alike
        fig.add_trace(go.Heatmap(x=xs, y=labels, z=z, zmin=LOG_FLOOR, zmax=0.0, colorscale="Viridis", visible=False,
                                 meta=f"watched:{w0.token_id}", name=f"probability of {token}",
                                 colorbar=dict(title=f"p({token})", tickvals=list(range(LOG_FLOOR, 1, 2)),
                                               ticktext=[f"1e{e}" if e else "1" for e in range(LOG_FLOOR, 1, 2)]),
                                 hovertext=hover, hoverinfo="text"))
    names = ["chosen token", *(repr(texts.get(w.token_id, f"#{w.token_id}")) for w in watched)]
    n = len(names)
    buttons = [dict(label=name, method="update",
                    args=[{"visible": [i == k for i in range(n)]},
                          {"title.text": title if k == 0 else f"Logit lens · row {row}: p({plotly_text(name)}) per "
                                                              "layer (log)"}])
               for k, name in enumerate(names)]
    fig.update_layout(updatemenus=[dict(type="dropdown", buttons=buttons, active=0, x=1.0, xanchor="right", y=1.0,
                                        yanchor="bottom", pad=dict(b=4), showactive=True)])


def lens_step_figure(steps: Steps, step: int = -1, row: int = 0) -> go.Figure:
    """For one step (negative counts from the latest): y = layers, x = rank of the layer's top tokens, z = their
    probability, each cell labelled with its token."""
    rec = pick(_lens_records(steps, row), step)
    if rec is None:
        return empty_figure(NO_LENS, "Logit lens at the picked step")
    lens_row = rec.lens[row]
    last = len(lens_row) - 1
    rs = row_of(rec, row)
    chosen = rs.chosen[0] if rs else None
    width = max(len(layer.top) for layer in lens_row)
    labels = [_label(layer.layer, last) for layer in lens_row]
    z = [[c.prob for c in layer.top] + [None] * (width - len(layer.top)) for layer in lens_row]
    text = [[("★ " if c.token_id == chosen else "") + visible(c.text) for c in layer.top] for layer in lens_row]
    hover = [[f"{_label(layer.layer, last)} · rank {k + 1}<br><b>{plotly_text(repr(c.text))}</b> (id {c.token_id})"
              f"<br>p {c.prob:.4f}, logit {c.logit:.3f}" for k, c in enumerate(layer.top)] for layer in lens_row]
    fig = go.Figure(go.Heatmap(x=[f"#{k + 1}" for k in range(width)], y=labels, z=z, zmin=0.0, zmax=1.0,
                               colorscale="Viridis", text=text, texttemplate="%{text}", hovertext=hover,
                               hoverinfo="text", meta="top", colorbar=dict(title="p")))
    chosen_at = [(f"#{k + 1}", label) for layer, label in zip(lens_row, labels)
                 for k, c in enumerate(layer.top) if c.token_id == chosen]
    if chosen_at:
        fig.add_trace(go.Scatter(x=[x for x, _ in chosen_at], y=[y for _, y in chosen_at], mode="markers",
                                 name="chosen token", meta="chosen", hoverinfo="skip",
                                 marker=dict(symbol="square-open", size=22, color=CHOSEN, line=dict(width=2))))
    token = plotly_text(repr(next((c.text for c in lens_row[-1].top if c.token_id == chosen), str(chosen))))
    finish(fig, f"Step {rec.step} · row {row}: each layer's top tokens (chose {token})",
           height=max(360, 120 + 14 * len(lens_row)), uirevision=f"lens-step-{row}")
    fig.update_layout(xaxis=dict(title="rank in the layer"),
                      yaxis=dict(title="layer", type="category", categoryorder="array", categoryarray=labels))
    return fig


__all__ = ["CAPTION", "STEP_CAPTION", "lens_figure", "lens_step_figure"]

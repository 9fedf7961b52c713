"""DoLa: how far each candidate (premature) layer's prediction is from the final layer's, step by step."""

from __future__ import annotations


import plotly.graph_objects as go

from .common import Steps, empty_figure, finish, plotly_text, records

CAPTION = ("DoLa compares the final layer's next-token distribution with earlier layers'. Each cell is the "
           "Jensen-Shannon divergence between a candidate layer and the final layer at one step; ✕ marks the "
           "premature layer DoLa contrasted against (the most divergent one), whose difference picks the token.")


def _label(layer: int) -> str:
    return f"layer {layer}"


def dola_figure(steps: Steps, row: int = 0) -> go.Figure:
    """Heatmap with y = candidate layers, x = steps, z = ``DolaStep.js_divergences``; the chosen premature
    layer of each step marked on top (hover: the contrasted top candidates)."""
    recs = [r for r in records(steps) if r.dola and row < len(r.dola)]
    if not recs:
        return empty_figure("Run DoLa decoding (dola_layers 'low', 'high' or a list) to see layer divergences.",
                            "DoLa")
    layers = sorted({layer for r in recs for layer in r.dola[row].candidate_layers})
    xs = [r.step for r in recs]
    z = [[None] * len(recs) for _ in layers]  # [layers][steps]
    for j, r in enumerate(recs):
        d = r.dola[row]
        for layer, js in zip(d.candidate_layers, d.js_divergences):
            z[layers.index(layer)][j] = js
    hover = []
    for r in recs:
        d = r.dola[row]
        top = ", ".join(f"{plotly_text(repr(c.text))} {c.score:.2f}" for c in d.contrasted[:5])
        hover.append(f"step {r.step}: premature layer {d.chosen_layer}<br>top after contrast: {top}")
    fig = go.Figure()
    fig.add_trace(go.Heatmap(x=xs, y=[_label(layer) for layer in layers], z=z, colorscale="Magma",
                             meta="divergence", name="JS divergence", colorbar=dict(title="JS div."),
                             hovertemplate="step %{x} · %{y}<br>JS divergence %{z:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=xs, y=[_label(r.dola[row].chosen_layer) for r in recs], mode="markers",
                             name="premature layer (chosen)", meta="chosen", hovertext=hover, hoverinfo="text",
                             showlegend=True,
                             marker=dict(symbol="x", size=11, color="#00e5ff", line=dict(width=1, color="black"))))
    finish(fig, f"DoLa · JS divergence of {len(layers)} candidate layers from the final layer",
           height=max(320, 120 + 28 * len(layers)), uirevision=f"dola-{row}")
    fig.update_layout(xaxis=dict(title="step"), yaxis=dict(title="candidate layer", type="category",
                                                           categoryorder="array",
                                                           categoryarray=[_label(layer) for layer in layers]))
    return fig


__all__ = ["CAPTION", "dola_figure"]

"""KV cache memory: bytes each cache kind holds as generation proceeds, and where outputs diverge."""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from .common import PALETTE, Steps, empty_figure, finish, records

CAPTION = ("Memory held by the key/value cache after each step, one line per cache implementation. Quantized "
           "caches store keys and values in fewer bits, so their line climbs more slowly; their tokens may "
           "differ from the full-precision run after the dashed line.")

_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("bytes", 1))


def divergence_index(tokens_a: Sequence[int], tokens_b: Sequence[int]) -> int | None:
    """First position where two token lists differ (the shorter length if one is a prefix of the other);
    ``None`` when they are equal."""
    for i, (a, b) in enumerate(zip(tokens_a, tokens_b)):
        if a != b:
            return i
    return None if len(tokens_a) == len(tokens_b) else min(len(tokens_a), len(tokens_b))


def cache_figure(traces: Mapping[str, Steps], diverged_at: int | None = None) -> go.Figure:
    """One line per entry of ``traces`` (a label such as "DynamicCache" or "quantized int4" -> its
    records): x = step, y = ``CacheInfo.bytes``. ``diverged_at`` (a step, e.g. from ``divergence_index``)
    draws a dashed marker where the runs' tokens start to differ."""
    series = {}
    for name, steps in traces.items():
        recs = [r for r in records(steps) if r.cache is not None]
        if recs:
            series[name] = recs
    if not series:
        return empty_figure("Generate with one or more cache implementations to compare their memory.",
                            "KV cache memory")
    peak = max(r.cache.bytes for recs in series.values() for r in recs)
    unit, scale = next(((u, s) for u, s in _UNITS if peak >= s), _UNITS[-1])
    fig = go.Figure()
    for i, (name, recs) in enumerate(series.items()):
        kind = recs[-1].cache.kind
        fig.add_trace(go.Scatter(
            x=[r.step for r in recs], y=[r.cache.bytes / scale for r in recs], mode="lines+markers",
            name=name if name == kind else f"{name} ({kind})", meta=name,
            line=dict(color=PALETTE[i % len(PALETTE)]), marker=dict(size=4),
            customdata=[[r.cache.bytes, r.cache.seq_length] for r in recs],
            hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.2f}} {unit} (%{{customdata[0]:,}} bytes)<br>"
                          "cached length %{customdata[1]}<extra></extra>"))
    if diverged_at is not None:
        fig.add_vline(x=diverged_at, line=dict(dash="dash", color="#888"),
                      annotation_text=f"tokens differ from step {diverged_at}", annotation_position="top left")
    last = {name: recs[-1].cache.bytes for name, recs in series.items()}
    title = "KV cache memory"
    if len(last) >= 2 and min(last.values()) > 0:
        small, large = min(last, key=last.get), max(last, key=last.get)
        title += f" · {small} holds {last[small] / last[large]:.0%} of {large}'s bytes"
    finish(fig, title, height=380, uirevision="cache")
    fig.update_layout(xaxis=dict(title="step"), yaxis=dict(title=unit, rangemode="tozero"), hovermode="x unified")
    return fig


__all__ = ["CAPTION", "cache_figure", "divergence_index"]

"""The session's branch tree, two runs compared, and many samples merged into one prefix tree.

All drawn from ``playground.branches`` (which reads the runs' traces): positions from the tree's shape (networkx),
probabilities and entropies as the records hold them.
"""

from __future__ import annotations

import math

import networkx as nx
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..branches import Branches, Comparison, Entry, SampleNode, edge_label
from .common import (ACCEPTED, CHOSEN, HIGHLIGHT, PALETTE, empty_figure, finish, plotly_text, visible)

TREE_CAPTION = ("Every run of this session on this prompt. A run that continues another (a token you forced, a "
                "step-by-step run, a resume) hangs from it; the edge says which token was forced at which step and "
                "which settings changed. Click a node to show that run.")
COMPARE_CAPTION = ("The log-probability the model gave each run's token at every position after the prompt (from "
                   "the runs' records): where the lines part the runs diverge; the higher line is the continuation "
                   "the model prefers there.")
SAMPLES_CAPTION = ("Many samples of the same prompt merged into one prefix tree: each branch says how many samples "
                   "took it and the probability the model gave that token there (hover); colour is the entropy of "
                   "the distribution the token was drawn from (darker: more uncertain). Below, that entropy per step: "
                   "the mean over the samples and their range.")
_ROOT = "prompt"


def run_title(entry: Entry, number: int) -> str:
    return f"#{number} {entry.label}"


def numbered(branches: Branches) -> dict[str, int]:
    """Run id -> its number in the session (1 = its first run), as the figures and pickers label runs."""
    return {run_id: i + 1 for i, run_id in enumerate(branches.entries)}


def branch_tree_figure(branches: Branches | None, prompt_key: tuple[int, ...] | None, current: str | None,
                       text_of) -> go.Figure:
    """Nodes are the runs on ``prompt_key`` (x: where after the prompt the run starts; y: networkx's layered
    layout), edges labelled by ``edge_label``; ``current`` (the run on screen) is ringed in gold."""
    entries = branches.on_prompt(prompt_key) if branches is not None and prompt_key is not None else []
    if not entries:
        return empty_figure("Generate, then continue with another token: the runs grow into a tree here.",
                            "Branch tree")
    ids = {e.run_id for e in entries}
    graph = nx.DiGraph()
    graph.add_node(_ROOT)
    for e in entries:
        graph.add_edge(e.parent if e.parent in ids else _ROOT, e.run_id)
    depth = nx.shortest_path_length(graph, _ROOT)
    layers: dict[int, list[str]] = {}
    for node in nx.dfs_preorder_nodes(graph, _ROOT):
        layers.setdefault(depth[node], []).append(node)
    pos = nx.multipartite_layout(graph, subset_key=layers, align="vertical")
    number = numbered(branches)
    by_id = {e.run_id: e for e in entries}
    x = {n: (by_id[n].offset if n in by_id else -1) + 0.2 * depth[n] for n in graph}  # where the run starts
    y = {n: float(pos[n][1]) for n in graph}

    fig = go.Figure()
    xs, ys, label_x, label_y, labels = [], [], [], [], []
    for parent, child in graph.edges:
        xs += [x[parent], x[child], None]
        ys += [y[parent], y[child], None]
        label_x.append((x[parent] + x[child]) / 2)
        label_y.append((y[parent] + y[child]) / 2)
        labels.append(plotly_text(edge_label(by_id[child], branches, text_of))[:60])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(110,110,110,0.6)", width=1.5),
                             hoverinfo="skip", showlegend=False, meta="edges"))
    fig.add_trace(go.Scatter(x=label_x, y=label_y, mode="text", text=labels, textposition="bottom center",
                             textfont=dict(size=10, color="#555"), hoverinfo="skip", showlegend=False,
                             meta="edge labels"))
    fig.add_trace(go.Scatter(x=[x[_ROOT]], y=[y[_ROOT]], mode="markers+text", text=["prompt"],
                             textposition="middle left", marker=dict(size=12, color="#888", symbol="square"),
                             hoverinfo="skip", showlegend=False, meta="root"))
    tabs = sorted({e.tab for e in entries})
    nodes = [e for e in entries]
    fig.add_trace(go.Scatter(
        x=[x[e.run_id] for e in nodes], y=[y[e.run_id] for e in nodes], mode="markers+text", meta="runs",
        text=[run_title(e, number[e.run_id]) for e in nodes], textposition="top center", textfont=dict(size=11),
        customdata=[e.run_id for e in nodes], hoverinfo="text",
        hovertext=[_hover(e, number[e.run_id], text_of) for e in nodes],
        marker=dict(size=[20 if e.run_id == current else 14 for e in nodes],
                    color=[PALETTE[tabs.index(e.tab) % len(PALETTE)] for e in nodes],
                    line=dict(color=[HIGHLIGHT if e.run_id == current else "white" for e in nodes], width=3)),
        showlegend=False))
    finish(fig, f"Branch tree · {len(entries)} runs on this prompt", height=max(320, 90 + 55 * max(map(len, layers.values()))),
           uirevision="branch-tree")
    fig.update_layout(hovermode="closest", xaxis=dict(title="token position where the run starts", zeroline=False),
                      yaxis=dict(visible=False))
    return fig


def _hover(entry: Entry, number: int, text_of) -> str:
    tokens = entry.tokens()
    text = "".join(text_of(t) for t in tokens[:60])
    origin = entry.trace.origin
    lines = [f"<b>{plotly_text(run_title(entry, number))}</b> · {entry.trace.strategy or entry.tab}",
             f"{len(tokens)} tokens after the prompt" + (f" · seed {entry.trace.seed}" if entry.trace.seed is not None
                                                         else "")]
    if origin is not None:
        lines.append(f"continues run {origin.parent[:6]} at step {origin.step}")
    lines.append(plotly_text(text if len(tokens) <= 60 else text + "…").replace("\n", "<br>"))
    return "<br>".join(lines)


def two_runs_figure(comparison: Comparison | None, labels: tuple[str, str], text_of) -> go.Figure:
    """Per position after the prompt, the model's log-probability of each run's token; the divergence marked."""
    if comparison is None:
        return empty_figure("Pick two runs to compare them.", "Compare two runs")
    fig = go.Figure()
    for series, label, colour in ((comparison.first, labels[0], PALETTE[0]), (comparison.second, labels[1], CHOSEN)):
        fig.add_trace(go.Scatter(
            x=list(range(len(series.tokens))), y=series.logprobs, mode="lines+markers", name=label, meta="logprob",
            line=dict(color=colour), connectgaps=False,
            hovertext=[f"{plotly_text(label)} · position {i}: {plotly_text(repr(text_of(t)))} "
                       + (f"log p = {lp:.3f}" if lp is not None else "not recorded")
                       for i, (t, lp) in enumerate(zip(series.tokens, series.logprobs))], hoverinfo="text"))
    title = "Compare two runs"
    if comparison.diverge is not None:
        fig.add_vline(x=comparison.diverge, line=dict(color=HIGHLIGHT, width=2, dash="dash"))
        title += f" · they diverge at position {comparison.diverge}"
    else:
        title += " · one run continues the other (no divergence)"
    finish(fig, title, height=360, uirevision="compare-runs")
    fig.update_layout(hovermode="x unified", xaxis=dict(title="position after the prompt"),
                      yaxis=dict(title="log p of the run's token"))
    return fig


def sample_tree_figure(root: SampleNode | None, entropies: list[list[float]] | None = None,
                       seeds: str = "") -> go.Figure:
    """The samples' prefix tree (x = step, one marker per branch sized and labelled by its count) above the entropy
    each step drew from (mean over the samples, with their range), on the same steps."""
    if root is None or not root.children:
        return empty_figure("Sample N to merge N runs into one prefix tree here.", "Samples")
    graph = nx.DiGraph()
    info: dict[int, tuple[SampleNode, int]] = {0: (root, 0)}
    graph.add_node(0)
    stack = [(root, 0)]
    while stack:  # every branch gets a node id; children most taken first
        node, node_id = stack.pop()
        for child in sorted(node.children.values(), key=lambda c: -c.count):
            child_id = len(info)
            info[child_id] = (child, info[node_id][1] + 1)
            graph.add_edge(node_id, child_id)
            stack.append((child, child_id))
    order = list(nx.dfs_preorder_nodes(graph, 0))
    layers: dict[int, list[int]] = {}
    for n in order:
        layers.setdefault(info[n][1], []).append(n)
    pos = nx.multipartite_layout(graph, subset_key=layers, align="vertical")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.06)
    xs, ys = [], []
    for a, b in graph.edges:  # x: the step a token was drawn at
        xs += [info[a][1] - 1, info[b][1] - 1, None]
        ys += [pos[a][1], pos[b][1], None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.5)", width=1),
                             hoverinfo="skip", showlegend=False, meta="edges"), row=1, col=1)
    shown = [n for n in order if n != 0]
    total = root.count or 1
    fig.add_trace(go.Scatter(
        x=[info[n][1] - 1 for n in shown], y=[pos[n][1] for n in shown], mode="markers+text", meta="branches",
        text=[f"{visible(info[n][0].text)} ×{info[n][0].count}" if info[n][0].count > 1 or len(shown) < 80 else ""
              for n in shown],
        textposition="middle right", textfont=dict(size=10), customdata=[info[n][0].count for n in shown],
        hoverinfo="text", hovertext=[_sample_hover(info[n][0], info[n][1] - 1, total) for n in shown],
        marker=dict(size=[6 + 18 * math.sqrt(info[n][0].count / total) for n in shown],
                    color=[info[n][0].entropy if info[n][0].entropy is not None else 0 for n in shown],
                    colorscale="Blues", cmin=0, colorbar=dict(title="entropy", len=0.55, y=0.72),
                    line=dict(color="grey", width=0.5)),
        showlegend=False), row=1, col=1)
    steps = [i for i, values in enumerate(entropies or []) if values]
    if steps:
        means = [sum(entropies[i]) / len(entropies[i]) for i in steps]
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=[max(entropies[i]) for i in steps] +
                                 [min(entropies[i]) for i in steps][::-1], fill="toself", mode="lines",
                                 line=dict(width=0), fillcolor="rgba(31,119,180,0.15)", name="entropy range",
                                 hoverinfo="skip", meta="entropy range"), row=2, col=1)
        fig.add_trace(go.Scatter(x=steps, y=means, mode="lines+markers", name="mean entropy",
                                 line=dict(color=ACCEPTED), meta="entropy",
                                 hovertemplate="step %{x}: mean %{y:.3f} nats<extra></extra>"), row=2, col=1)
    finish(fig, f"Samples · {total} runs{(' (seeds ' + seeds + ')') if seeds else ''} · "
                f"{sum(1 for n in shown if not info[n][0].children)} distinct continuations",
           height=int(min(950, max(460, 160 + 16 * max(map(len, layers.values()))))), uirevision="samples")
    fig.update_layout(hovermode="closest", dragmode="pan")
    fig.update_xaxes(title_text="step", dtick=1 if len(layers) < 30 else 5, row=2, col=1)
    fig.update_yaxes(visible=False, row=1, col=1)
    fig.update_yaxes(title_text="entropy (nats)", rangemode="tozero", row=2, col=1)
    return fig


def _sample_hover(node: SampleNode, step: int, total: int) -> str:
    prob = f"{node.prob:.3f}" if node.prob is not None else "not recorded"
    after = f"{node.prob_after:.3f}" if node.prob_after is not None else "not recorded"
    entropy = f"{node.entropy:.3f} nats" if node.entropy is not None else "not recorded"
    return (f"<b>{plotly_text(repr(node.text))}</b> (id {node.token_id}) at step {step - 1}<br>"
            f"taken by {node.count} of {total} samples ({node.count / total:.0%})<br>"
            f"model probability {prob} · after the processors {after}<br>entropy there {entropy}")

"""The session's branch tree, two runs compared, and many samples merged into one prefix tree.

All drawn from ``playground.branches`` (which reads the runs' traces): positions from the tree's shape (networkx),
probabilities and entropies as the records hold them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import networkx as nx
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.text import shown

from ..branches import Branches, Comparison, Entry, SampleNode, Series, edge_label, pieces, spelled
from ..facts import seeds_text
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


def seeds_note(seeds: tuple[int, ...], before: str) -> str:
    """``before`` + "seed 7" (one run) or "seeds 3..18" (Sample N); "" when no seed was recorded."""
    if not seeds:
        return ""
    return f"{before}seed{'s' if len(seeds) > 1 else ''} {seeds_text(seeds)}"


def numbered(branches: Branches) -> dict[str, int]:
    """Run id -> its number in the session (1 = its first run), as the figures and pickers label runs."""
    return {run_id: i + 1 for i, run_id in enumerate(branches.entries)}


ROW_PX = 22  # vertical pixels per run (or per distinct sample) in the trees: one text line each, none overlap
LABEL_CHARS = 44  # a branch-tree node's label is cut here (the hover has it all)


def tree_rows(graph: nx.DiGraph, root, children_order=None) -> dict:
    """A row per node in depth-first order, children in ``children_order`` (default: as added): a file-tree layout
    where every node has a line of its own, so no two labels share one, and each edge drops from its parent's row
    to its child's (``elbows``) without crossing another node's label."""
    order = nx.dfs_preorder_nodes(graph, root, sort_neighbors=children_order)
    return {node: float(i) for i, node in enumerate(order)}


def elbows(graph: nx.DiGraph, x: dict, y: dict) -> tuple[list, list]:
    """Line coordinates of every edge as an elbow: down the parent's column to the child's row, then across."""
    xs, ys = [], []
    for parent, child in graph.edges:
        xs += [x[parent], x[parent], x[child], None]
        ys += [y[parent], y[child], y[child], None]
    return xs, ys


def _snippet(entry: Entry, branches: Branches, chars: int) -> str:
    """What the run says from where it starts to differ (its forced token on; a fresh run: its start)."""
    origin = entry.trace.origin
    start = max(entry.offset - (1 if origin is not None and origin.token_id is not None else 0), 0)
    text = visible("".join(shown(pieces(entry, branches))[start:]))
    return text if len(text) <= chars else text[:chars - 1] + "…"


def branch_tree_figure(branches: Branches | None, prompt_key: tuple[int, ...] | None,
                       current: str | None) -> go.Figure:
    """Nodes are the runs on ``prompt_key``, each on its own row in depth-first order (a run that continues another
    sits below it, one column to the right), labelled with its number and what it says from where it differs; the
    hover has the edge's story (``edge_label``: the forced token, the settings that changed) and the text. No axes:
    neither direction measures anything. ``current`` (the run on screen) is ringed in gold. The records' pieces
    spell the runs."""
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
    x, y = {n: float(depth[n]) for n in graph}, tree_rows(graph, _ROOT)
    number = numbered(branches)
    by_id = {e.run_id: e for e in entries}

    fig = go.Figure()
    xs, ys = elbows(graph, x, y)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(110,110,110,0.6)", width=1.5),
                             hoverinfo="skip", showlegend=False, meta="edges"))
    fig.add_trace(go.Scatter(x=[x[_ROOT]], y=[y[_ROOT]], mode="markers+text", text=["prompt"],
                             textposition="middle right", marker=dict(size=12, color="#888", symbol="square"),
                             hoverinfo="skip", showlegend=False, meta="root"))
    tabs = sorted({e.tab for e in entries})
    nodes = [by_id[n] for n in sorted(ids, key=y.get)]
    fig.add_trace(go.Scatter(
        x=[x[e.run_id] for e in nodes], y=[y[e.run_id] for e in nodes], mode="markers+text", meta="runs",
        text=[plotly_text(f"#{number[e.run_id]} {_snippet(e, branches, LABEL_CHARS)}") for e in nodes],
        textposition="middle right", textfont=dict(size=11), customdata=[e.run_id for e in nodes],
        hoverinfo="text", hovertext=[_hover(e, number[e.run_id], branches) for e in nodes],
        marker=dict(size=[16 if e.run_id == current else 11 for e in nodes],
                    color=[PALETTE[tabs.index(e.tab) % len(PALETTE)] for e in nodes],
                    line=dict(color=[HIGHLIGHT if e.run_id == current else "white" for e in nodes], width=3)),
        showlegend=False))
    deepest = max(depth.values())
    finish(fig, f"Branch tree · {len(entries)} runs on this prompt", height=max(260, 110 + ROW_PX * len(graph)),
           uirevision="branch-tree")
    # the columns hold the labels: room for one to the right of the deepest node
    fig.update_layout(hovermode="closest", margin=dict(l=20, r=20, t=60, b=20),
                      xaxis=dict(visible=False, range=[-0.3, deepest + 2.6]),
                      yaxis=dict(visible=False, range=[len(graph) - 0.5, -0.7]))
    return fig


def _hover(entry: Entry, number: int, branches: Branches) -> str:
    tokens = entry.tokens()
    text = spelled(entry, branches, limit=60)
    origin = entry.trace.origin
    edge = edge_label(entry, branches)
    lines = [f"<b>{plotly_text(run_title(entry, number))}</b> · {entry.trace.strategy or entry.tab}",
             f"{len(tokens)} tokens after the prompt" + seeds_note(entry.seeds, " · ")]
    if origin is not None:
        lines.append(f"continues run {origin.parent[:6]} at step {origin.step}")
    if edge:
        lines.append(plotly_text(edge))
    lines.append(plotly_text(text if len(tokens) <= 60 else text + "…").replace("\n", "<br>"))
    return "<br>".join(lines)


def two_runs_figure(comparison: Comparison | None, labels: tuple[str, str], text_of) -> go.Figure:
    """Per position after the prompt, the model's log-probability of each run's token; the divergence marked."""
    if comparison is None:
        return empty_figure("Pick two runs to compare them.", "Compare two runs")
    return runs_logprob_figure([(labels[0], comparison.first), (labels[1], comparison.second)], comparison.diverge,
                               text_of, "Compare two runs")


def runs_logprob_figure(runs: list[tuple[str, Series]], diverge: int | None, text_of, title: str = "Compare runs"
                        ) -> go.Figure:
    """One line per labelled run: per position after the prompt, the model's log-probability of its token (as its
    records hold it); ``diverge`` (``first_difference``) marked. The Branches and Compare tabs both draw it."""
    if not runs:
        return empty_figure("Run the comparison to see each run's log-probability per position.", title)
    fig = go.Figure()
    for k, (label, series) in enumerate(runs):
        colour = (PALETTE[0], CHOSEN)[k] if len(runs) == 2 else PALETTE[k % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=list(range(len(series.tokens))), y=series.logprobs, mode="lines+markers", name=label, meta="logprob",
            line=dict(color=colour), connectgaps=False,
            hovertext=[f"{plotly_text(label)} · position {i}: {plotly_text(repr(text_of(t)))} "
                       + (f"log p = {lp:.3f}" if lp is not None else "not recorded")
                       for i, (t, lp) in enumerate(zip(series.tokens, series.logprobs))], hoverinfo="text"))
    if diverge is not None:
        fig.add_vline(x=diverge, line=dict(color=HIGHLIGHT, width=2, dash="dash"))
        title += f" · they diverge at position {diverge}"
    else:
        title += " · one run continues the other (no divergence)" if len(runs) == 2 else " · no divergence"
    finish(fig, title, height=360, uirevision="compare-runs")
    fig.update_layout(hovermode="x unified", xaxis=dict(title="position after the prompt"),
                      yaxis=dict(title="log p of the run's token"))
    return fig


CHARS_PER_STEP = 7  # label characters a step's column holds (at the widths the samples tree opens at)
VISIBLE_STEPS = 14  # a longer samples tree opens on its first steps; pan right for the rest


class _Segment(NamedTuple):
    """Consecutive branches on one row of the samples tree taken by the same samples: one label for all of them."""

    step: int  # where it starts
    row: float
    nodes: list[SampleNode]


def _segments(root: SampleNode) -> tuple[list[tuple[SampleNode, int, float]], list[_Segment], list[tuple]]:
    """The samples tree laid out: (branch, step, row) per branch, a row per distinct continuation (a branch sits on
    its most taken child's row), the labelled segments of each row, and the edges as (parent, child) positions."""
    placed, segments, edges = [], [], []
    rows = 0

    def walk(node: SampleNode, step: int, row: float, segment: _Segment | None):
        nonlocal rows
        for i, child in enumerate(sorted(node.children.values(), key=lambda c: -c.count)):
            child_row = row if i == 0 else float(rows)
            rows += i > 0
            placed.append((child, step + 1, child_row))
            edges.append(((step, row), (step + 1, child_row)))
            same = segment is not None and i == 0 and segment.nodes[-1].count == child.count
            if same:
                segment.nodes.append(child)
                walk(child, step + 1, child_row, segment)
            else:
                segments.append(_Segment(step + 1, child_row, [child]))
                walk(child, step + 1, child_row, segments[-1])

    rows = 1  # the prompt's row is the most taken continuation's
    walk(root, -1, 0.0, None)
    return placed, segments, edges


def segment_label(segment: _Segment, total: int) -> str:
    """The tokens of a segment joined (cut to the columns it spans), and how many samples took it where that leaves
    room for the text (the hover and the marker's size say it too)."""
    count, columns = segment.nodes[0].count, len(segment.nodes) * CHARS_PER_STEP
    text = visible("".join(shown([n.piece for n in segment.nodes])))
    suffix = f" ×{count}" if count < total and columns - len(f" ×{count}") >= min(len(text), 4) else ""
    room = max(columns - len(suffix), 2)
    return (text if len(text) <= room else text[:room - 1] + "…") + suffix


def sample_tree_figure(root: SampleNode | None, entropies: list[list[float]] | None = None,
                       seeds: str = "") -> go.Figure:
    """The samples' prefix tree above the entropy each step drew from (mean over the samples, with their range), on
    the same steps (x). A row per distinct continuation, a branch on its most taken child's row, edges as elbows; the
    tokens that the same samples took in a row share one label (their text, and how many took them), cut to the
    steps they span, so no label runs into the next."""
    if root is None or not root.children:
        return empty_figure("Sample N to merge N runs into one prefix tree here.", "Samples")
    placed, segments, edges = _segments(root)
    n_rows = int(max(row for _, _, row in placed)) + 1
    tree_px, entropy_px = ROW_PX * n_rows + 40, 170
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        row_heights=[tree_px / (tree_px + entropy_px), entropy_px / (tree_px + entropy_px)])
    xs, ys = [], []
    for (x0, y0), (x1, y1) in edges:  # x: the step a token was drawn at (the prompt at -1)
        xs += [x0, x0, x1, None]
        ys += [y0, y1, y1, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.5)", width=1),
                             hoverinfo="skip", showlegend=False, meta="edges"), row=1, col=1)
    total = root.count or 1
    fig.add_trace(go.Scatter(
        x=[step for _, step, _ in placed], y=[row for _, _, row in placed], mode="markers", meta="branches",
        customdata=[node.count for node, _, _ in placed], hoverinfo="text",
        hovertext=[_sample_hover(node, step, total) for node, step, _ in placed],
        marker=dict(size=[6 + 12 * math.sqrt(node.count / total) for node, _, _ in placed],
                    color=[node.entropy if node.entropy is not None else 0 for node, _, _ in placed],
                    colorscale="Blues", cmin=0, colorbar=dict(title="entropy", len=0.5, y=0.75),
                    line=dict(color="grey", width=0.5)),
        showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=[seg.step for seg in segments], y=[seg.row for seg in segments], mode="text", meta="labels",
        text=[plotly_text(segment_label(seg, total)) for seg in segments], textposition="top right",
        textfont=dict(size=10), hoverinfo="skip", showlegend=False), row=1, col=1)
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
    last = max(step for _, step, _ in placed)
    finish(fig, f"Samples · {total} runs{(' (seeds ' + seeds + ')') if seeds else ''} · "
                f"{n_rows} distinct continuations", height=tree_px + entropy_px + 110, uirevision="samples")
    fig.update_layout(hovermode="closest", dragmode="pan")
    fig.update_xaxes(range=[-1.3, min(last, VISIBLE_STEPS) + 1.5])
    fig.update_xaxes(title_text="step", tickvals=list(range(0, last + 1, 1 if last < 30 else 5)), row=2, col=1)
    fig.update_yaxes(visible=False, range=[n_rows - 0.4, -0.9], row=1, col=1)
    fig.update_yaxes(title_text="entropy (nats)", rangemode="tozero", row=2, col=1)
    return fig


def _sample_hover(node: SampleNode, step: int, total: int) -> str:
    prob = f"{node.prob:.3f}" if node.prob is not None else "not recorded"
    after = f"{node.prob_after:.3f}" if node.prob_after is not None else "not recorded"
    entropy = f"{node.entropy:.3f} nats" if node.entropy is not None else "not recorded"
    return (f"<b>{plotly_text(repr(node.text))}</b> (id {node.token_id}) at step {step}<br>"
            f"taken by {node.count} of {total} samples ({node.count / total:.0%})<br>"
            f"model probability {prob} · after the processors {after}<br>entropy there {entropy}")

"""The beam tree: every candidate the beam family expanded, linked to the hypothesis it extends.

Drawn from ``StepRecord.beam`` alone: positions come from the tree's shape (networkx), scores and fates
are shown as the strategy recorded them, never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import plotly.graph_objects as go

from core.beam_index import ROOT, BeamIndex
from core.records import BeamNode

from .common import HIGHLIGHT, PALETTE, Steps, empty_figure, finish, plotly_text, records, visible

CAPTION = ("Every token beam search tried, step by step from left to right: a line joins each token to the "
           "hypothesis it extends. Faded tokens were pruned, stars are finished hypotheses with their final "
           "score, diamonds were forced by a constraint, and the gold path is the sequence the search returns "
           "(or its current best while running). Colours are the groups of diverse beam search.")

LABEL_ALL_BELOW = 160  # above this many nodes only kept, finished and returned nodes carry a text label
VISIBLE_STEPS = 15  # a longer tree opens on its latest steps; pan left to see the start

_FORCED = "diamond"  # constrained beam search: a token a constraint proposed
_ROOT = "prompt"  # the virtual node every batch's first tokens hang from


@dataclass(frozen=True)
class BeamGraph:
    """The recorded nodes, the step each appeared at, and their graph: what the figure is drawn from, read back from
    the records (the core's ``core.strategies.beam_tree.BeamTree`` is the bookkeeping that writes those records
    during the search; ``index`` is the core's ``BeamIndex`` of them, every parent before its child)."""

    index: BeamIndex
    graph: nx.DiGraph

    @property
    def nodes(self) -> dict[int, BeamNode]:
        return self.index.nodes

    @property
    def step_of(self) -> dict[int, int]:
        return self.index.step_of

    def path_to(self, node_id: int) -> list[int]:
        """Node ids from the first generated token down to ``node_id``."""
        return self.index.path(node_id)


def beam_graph(steps: Steps) -> BeamGraph:
    """Index the beam nodes of ``steps`` into a tree (ValueError for records that are not one: ``BeamIndex``)."""
    index = BeamIndex.of(records(steps))
    graph = nx.DiGraph()
    graph.add_node(_ROOT)
    for node_id, node in index.nodes.items():
        graph.add_edge(node.parent if node.parent != ROOT else (_ROOT, node.batch), node_id)
    for batch in sorted({n.batch for n in index.nodes.values()}):
        graph.add_edge(_ROOT, (_ROOT, batch))
    return BeamGraph(index, graph)


def returned_paths(steps: Steps) -> list[list[int]]:
    """Node-id paths of the current best hypotheses (the returned sequences once the run ended), from the nodes
    the latest record names (``StepRecord.best_nodes``); none for traces that name none."""
    return paths_in(beam_graph(steps))


def paths_in(tree: BeamGraph) -> list[list[int]]:
    """``returned_paths`` for a tree already indexed: one path per returned row, ``[]`` for a row with no hypothesis
    yet."""
    return tree.index.best_paths()


def _layout(tree: BeamGraph) -> dict[int, tuple[float, float]]:
    """x = the step a node appeared at; y from a layered layout whose order within each step is the
    depth-first order of the tree (siblings best-first), so that no two edges cross."""
    def best_first(children):
        return sorted(children, key=lambda c: (c[1] if isinstance(c, tuple) else -tree.nodes[c].score))

    order = [n for n in nx.dfs_preorder_nodes(tree.graph, _ROOT, sort_neighbors=best_first) if n in tree.nodes]
    layers: dict[int, list[int]] = {}
    for node_id in order:
        layers.setdefault(tree.step_of[node_id], []).append(node_id)
    pos = nx.multipartite_layout(tree.graph.subgraph(order), subset_key=layers, align="vertical")
    return {n: (tree.step_of[n], float(pos[n][1])) for n in order}


def _hover(node: BeamNode, step: int) -> str:
    final = f"{node.final_score:.4f}" if node.final_score is not None else "–"
    return (f"<b>{plotly_text(repr(node.text + node.tail))}</b> (id {node.token_id})<br>"
            f"step {step} · batch {node.batch} · group {node.group}<br>"
            f"fate: {node.fate}<br>cumulative log-prob: {node.score:.4f}<br>"
            f"normalised score: {node.normalized_score:.4f}<br>final score: {final}<br>"
            f"diversity penalty: {node.diversity_penalty:.4f}"
            + ("<br>forced by a constraint" if node.forced else "")
            + (f"<br>constraint bank: {node.bank}" if node.bank is not None else ""))


def beam_tree_figure(steps: Steps) -> go.Figure:
    """One marker per recorded ``BeamNode`` (x = step), edges parent -> child, pruned nodes faded,
    finished ones as stars with their final score, the returned sequences' paths in gold."""
    tree = beam_graph(steps)
    if not tree.nodes:
        return empty_figure("Run beam search (num_beams > 1) to grow the tree of hypotheses here.", "Beam tree")
    pos = _layout(tree)
    on_path = {n for path in paths_in(tree) for n in path}
    groups = sorted({n.group for n in tree.nodes.values()})
    big = len(tree.nodes) > LABEL_ALL_BELOW
    fig = go.Figure()

    # edges first so markers sit on top: faded to pruned children, plain, then the returned paths
    edge_kinds = {"pruned": ([], [], dict(color="rgba(150,150,150,0.25)", width=1)),
                  "kept": ([], [], dict(color="rgba(110,110,110,0.6)", width=1.2)),
                  "returned": ([], [], dict(color=HIGHLIGHT, width=4))}
    for node_id, node in tree.nodes.items():
        if node.parent not in pos:
            continue
        kind = "returned" if node_id in on_path and node.parent in on_path else (
            "pruned" if node.fate == "pruned" else "kept")
        xs, ys, _ = edge_kinds[kind]
        (x0, y0), (x1, y1) = pos[node.parent], pos[node_id]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    for kind, (xs, ys, line) in edge_kinds.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", meta="edges",
                                 name="returned sequence" if kind == "returned" else f"{kind} edge",
                                 showlegend=kind == "returned" and bool(xs)))

    # a gold halo under the returned sequences' nodes (its own trace: per-point styling is slow in plotly)
    halo = [n for n in pos if n in on_path]
    fig.add_trace(go.Scatter(x=[pos[n][0] for n in halo], y=[pos[n][1] for n in halo], mode="markers",
                             customdata=halo, meta="returned", hoverinfo="skip", showlegend=False,
                             marker=dict(size=17, color=HIGHLIGHT)))

    styles = {"kept": dict(symbol="circle", size=10, opacity=1.0),
              "pruned": dict(symbol="circle", size=7, opacity=0.3),
              "finished": dict(symbol="star", size=16, opacity=1.0)}
    for fate, style in styles.items():
        ids = [n for n in pos if tree.nodes[n].fate == fate]
        if not ids:
            continue
        nodes = [tree.nodes[n] for n in ids]
        labels = []
        for node_id, node in zip(ids, nodes):
            label = visible(node.text + node.tail)
            if node.final_score is not None:
                label += f" ({node.final_score:.2f})"
            labels.append("" if big and fate == "pruned" and node_id not in on_path else label)
        forced = fate != "finished" and any(n.forced for n in nodes)
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in ids], y=[pos[n][1] for n in ids], mode="markers+text", name=fate, meta="nodes",
            text=labels, textposition="middle right", textfont=dict(size=10),
            customdata=ids, hovertext=[_hover(n, tree.step_of[i]) for i, n in zip(ids, nodes)], hoverinfo="text",
            marker=dict(symbol=[_FORCED if n.forced else style["symbol"] for n in nodes] if forced else style["symbol"],
                        size=style["size"], opacity=style["opacity"], line=dict(color="white", width=1),
                        color=[PALETTE[groups.index(n.group) % len(PALETTE)] for n in nodes] if len(groups) > 1
                        else PALETTE[0])))
    if any(n.forced for n in tree.nodes.values()):  # legend entry only (no points)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="forced by a constraint", meta="legend",
                                 marker=dict(symbol=_FORCED, size=10, color="#888")))
    if len(groups) > 1:  # legend entries for the diverse beam search groups (no points)
        for g in groups:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"group {g}", meta="legend",
                                     marker=dict(color=PALETTE[groups.index(g) % len(PALETTE)], size=10)))

    last = max(tree.step_of.values())
    first = min(tree.step_of.values())
    widest = max(sum(1 for s in tree.step_of.values() if s == k) for k in set(tree.step_of.values()))
    x_range = [max(first, last - VISIBLE_STEPS + 1) - 0.5, last + 1.2]
    finish(fig, f"Beam tree · {len(tree.nodes)} candidates over {last - first + 1} steps",
           height=int(min(900, max(360, 140 + 28 * widest))), uirevision="beam-tree")
    fig.update_layout(dragmode="pan", hovermode="closest",
                      xaxis=dict(title="step", range=x_range, dtick=1 if last - first < 30 else 5, zeroline=False,
                                 showgrid=False),
                      yaxis=dict(visible=False, autorange="reversed"))
    return fig


def node_count(fig: go.Figure) -> int:
    """How many beam nodes a figure from ``beam_tree_figure`` draws."""
    return sum(len(t.x) for t in fig.data if t.meta == "nodes")


__all__ = ["CAPTION", "BeamGraph", "beam_graph", "beam_tree_figure", "returned_paths", "paths_in", "node_count"]

"""One index of a beam tree's nodes: parents, children, the path from the prompt to a node, the best nodes.

Every walk from a beam node to the prompt goes through ``BeamIndex``: the search's own bookkeeping
(``core.strategies.beam_tree.BeamTree``), steering from a node (``core.steer``), the beam-tree figure and the branch
tree's texts. A node joins the index only after its parent (``add``), so the index is a tree by construction and no
walk can loop; a trace read from outside is checked once, when it is indexed (``BeamIndex.of``), and a bad one
(a node that is its own parent, a cycle, a parent never recorded or recorded after its child, an id given twice)
raises ``ValueError`` naming the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .records import BeamNode, StepRecord

ROOT = -1  # a beam node's parent when it extends the prompt


def _is_id(value) -> bool:
    """An int node id (``bool`` is an int to Python, not to a trace)."""
    return isinstance(value, int) and not isinstance(value, bool)


class BeamIndex:
    """The nodes of one beam tree, each after its parent. ``add`` grows it (the search, or ``of`` reading records);
    ``path`` / ``tokens`` walk a node back to the prompt; ``children`` and ``best_nodes`` are read by the figures."""

    def __init__(self, what: str = "trace"):
        self.what = what  # names the source in messages ("trace": a recorded or loaded run)
        self.parent: dict[int, int] = {}  # node -> the node it extends (ROOT: the prompt)
        self.token: dict[int, int] = {}  # node -> its token id
        self.nodes: dict[int, BeamNode] = {}  # node -> its record (read from records only)
        self.step_of: dict[int, int] = {}  # node -> the step it was expanded at (read from records only)
        self._children: dict[int, list[int]] = {ROOT: []}
        self.best_nodes: list[int] | None = None  # the latest record's best node per returned row (-1: empty row)

    def add(self, node_id: int, parent: int, token_id: int) -> None:
        """Index ``node_id`` under ``parent``, which must be ``ROOT`` or a node already indexed."""
        if not _is_id(node_id) or node_id < 0:
            raise ValueError(f"{self.what}: a beam node id must be an int >= 0; got {node_id!r}")
        if node_id in self.parent:
            raise ValueError(f"{self.what}: beam node {node_id} is recorded twice (node ids must be unique)")
        if not _is_id(parent) or (parent != ROOT and parent not in self.parent):
            raise ValueError(f"{self.what}: beam node {node_id}'s parent {parent!r} is not an earlier node "
                             f"(a parent must be -1, the prompt, or a node recorded before its child)")
        self.parent[node_id] = parent
        self.token[node_id] = token_id
        self._children[parent].append(node_id)
        self._children[node_id] = []

    @classmethod
    def of(cls, steps: Iterable[StepRecord], what: str = "trace") -> "BeamIndex":
        """The beam nodes of ``steps`` in recorded order, validated (``add``), with the latest ``best_nodes``."""
        index = cls(what)
        for rec in steps:
            for node in rec.beam or ():
                index.add(node.node_id, node.parent, node.token_id)
                index.nodes[node.node_id] = node
                index.step_of[node.node_id] = rec.step
            if rec.best_nodes is not None:
                index.best_nodes = list(rec.best_nodes)
        return index

    def __contains__(self, node_id) -> bool:
        return node_id in self.parent

    def __len__(self) -> int:
        return len(self.parent)

    def children(self, node_id: int = ROOT) -> list[int]:
        """The nodes extending ``node_id`` (``ROOT``: the first expansions), in the order they were added."""
        return list(self._children.get(node_id, ()))

    def path(self, node_id: int) -> list[int]:
        """Node ids from the first generated token to ``node_id`` (inclusive); ``[]`` for ``ROOT``."""
        if node_id != ROOT and node_id not in self.parent:
            raise ValueError(f"`node` must be a node of the run's beam tree; got {node_id} (not recorded)")
        path = []
        while node_id != ROOT:  # ends: every parent was indexed before its child
            path.append(node_id)
            node_id = self.parent[node_id]
        return path[::-1]

    def tokens(self, node_id: int) -> list[int]:
        """The token ids from the first generated one to ``node_id`` (inclusive); ``[]`` for ``ROOT``."""
        return [self.token[n] for n in self.path(node_id)]

    def best_paths(self) -> list[list[int]]:
        """The node-id path of each returned row the latest record names (``[]``: a row with no hypothesis, or one
        whose node was not kept, as in a trace cut to its returned paths)."""
        return [self.path(n) if n in self.parent else [] for n in self.best_nodes or ()]

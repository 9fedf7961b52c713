"""The session's runs as a tree of forks (no Gradio here; ``playground/figures/branches.py`` draws it).

Every run a session makes on a prompt is a node. A run that continues another (a branch with a forced token, a
step-mode run, a resume) hangs from its parent, named by its trace's ``Origin``; a fresh run hangs from the prompt.
Edges are labelled with the forced token and the settings that differ from the parent. Everything comes from the
runs' traces: the tree never re-runs or re-simulates anything.

``Branches`` lives in one ``gr.State`` per session; it keeps at most ``MAX_RUNS`` runs (the oldest runs nobody
continues go first) and round-trips through JSON (``to_json`` / ``from_json``) with every trace in it.
``to_json(max_chars=...)`` writes a bounded form of the same format, the one the browser keeps across a reload
(``playground.persist``): each run's records cut to what the tree, the comparison, the token view and continuing
from a run read (``slim``), and only the newest runs that fit in ``max_chars``.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Sequence

from core.beam_index import BeamIndex
from core.records import BeamNode, Candidate, Piece, RowStep, StepRecord, Trace
from core.text import shown

from .facts import Facts

MAX_RUNS = 64  # per session: a run holds its records (tens to hundreds of KB)
FORMAT = "decoding-playground/branches"


@dataclass
class Entry:
    """One run of the session: which tab made it, its label, the prompt text and its trace (records, and the facts
    the run started with: ``facts``)."""

    run_id: str
    tab: str
    label: str
    prompt: str
    trace: Trace

    @property
    def parent(self) -> str | None:
        return self.trace.origin.parent if self.trace.origin is not None else None

    @property
    def facts(self) -> Facts:
        """What the run started with (its prompt, its seeds, its assistant), checked when it joined the tree."""
        return Facts.from_dict(self.trace.facts)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each generator it drew from: Sample N's, or its one seed (none recorded: none)."""
        return self.facts.seeds or ((self.trace.seed,) if self.trace.seed is not None else ())

    @property
    def prompt_key(self) -> tuple[int, ...]:
        """The user's prompt ids: the run's prompt without the prefix it continued from."""
        ids = list(self.trace.prompt_ids[0]) if self.trace.prompt_ids else []
        prefix = self.trace.origin.prefix if self.trace.origin is not None else []
        return tuple(ids[:len(ids) - len(prefix)] if prefix else ids)

    @property
    def offset(self) -> int:
        """Where its own tokens start, counted from the end of the user's prompt."""
        return len(self.trace.origin.prefix) if self.trace.origin is not None else 0

    def tokens(self, row: int = 0) -> list[int]:
        """Every token after the user's prompt: the prefix it started from, then its own (returned row ``row``)."""
        prefix = list(self.trace.origin.prefix) if self.trace.origin is not None else []
        prompt_len = len(self.trace.prompt_ids[0]) if self.trace.prompt_ids else 0
        own = self.trace.sequences[row][prompt_len:] if len(self.trace.sequences) > row else \
            [t for rec in self.trace.steps for rs in rec.rows if rs.row == row for t in rs.chosen]
        return prefix + list(own)


@dataclass
class Branches:
    """The session's runs by id, oldest first."""

    entries: "OrderedDict[str, Entry]" = field(default_factory=OrderedDict)

    def add(self, tab: str, label: str, prompt: str, trace: Trace) -> Entry:
        """Keep a finished (or paused) run; an entry of the same run id is replaced (a step-mode run grows). Its
        logit lens stays with the tab's run only: the tree shows none of it, and it is ~10x the rest of a step's
        records (a layer each), which 64 runs per session would hold for nothing."""
        if not trace.run_id:
            raise ValueError("a run needs a run_id to join the branch tree")
        Facts.from_dict(trace.facts)  # a tree read from a file or the browser: its facts checked once, here
        if any(step.lens for step in trace.steps):
            trace = replace(trace, steps=[replace(step, lens=None) for step in trace.steps])
        entry = Entry(trace.run_id, tab, label, prompt, trace)
        _check_acyclic({**self.entries, entry.run_id: entry}, [entry.run_id])
        self.entries[trace.run_id] = entry
        self.entries.move_to_end(trace.run_id)
        self._bound()
        return entry

    def get(self, run_id: str) -> Entry:
        if run_id not in self.entries:
            raise ValueError(f"`run` must be a run of this session's branch tree; got {run_id!r}")
        return self.entries[run_id]

    def on_prompt(self, key: tuple[int, ...]) -> list[Entry]:
        """The runs on the user prompt ``key`` (ids), oldest first."""
        return [e for e in self.entries.values() if e.prompt_key == key]

    def children(self, run_id: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.parent == run_id]

    def extend(self, older: "Branches") -> None:
        """Take the runs of ``older`` (a tree kept from before a reload) as the oldest ones; a run of the same id
        already here stays as it is."""
        entries = OrderedDict((k, e) for k, e in older.entries.items() if k not in self.entries)
        entries.update(self.entries)
        _check_acyclic(entries, list(entries))  # each tree is one, but a run of each may continue the other's
        self.entries = entries
        self._bound()

    def _bound(self) -> None:
        while len(self.entries) > MAX_RUNS:
            parents = {e.parent for e in self.entries.values()}
            victim = next((k for k in self.entries if k not in parents), next(iter(self.entries)))
            del self.entries[victim]

    # --- JSON ---------------------------------------------------------------------------------------------
    def to_json(self, max_chars: int | None = None) -> str:
        """Every run with all its records; with ``max_chars``, the bounded form: each run ``slim``, the newest runs
        whose JSON fits in ``max_chars`` characters in all (older ones, and a run too big alone, are left out)."""
        if max_chars is None:
            return _dumps([_run_dict(e, e.trace) for e in self.entries.values()])
        forced = _forced(self)
        kept, size = [], len(_dumps([]))
        for e in reversed(self.entries.values()):
            run = json.dumps(_run_dict(e, slim(e.trace, forced.get(e.run_id, {}))), allow_nan=True)
            if size + len(run) + 2 <= max_chars:  # 2: the separator between runs
                kept.append(run)
                size += len(run) + 2
        return _dumps(kept[::-1], encoded=True)

    @classmethod
    def from_json(cls, text: str) -> "Branches":
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise KeyError("format")
            out = cls()
            for run in data["runs"]:
                out.add(run["tab"], run["label"], run["prompt"], Trace.from_dict(run["trace"]))
            return out
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as err:
            raise ValueError(f"the file must be a branch tree this playground wrote (format {FORMAT!r}); "
                             f"could not read {err}") from None


def _check_acyclic(entries: dict[str, Entry], run_ids: list[str]) -> None:
    """Raise ValueError if the origin parents of a run of ``run_ids`` lead back to a run already on the way: every
    walk up the tree (``series``, ``pieces``) then ends at the prompt or at a run no longer kept."""
    for run_id in run_ids:
        chain = [run_id]
        parent = entries[run_id].parent
        while parent is not None and parent in entries:
            if parent in chain:
                loop = " -> ".join(map(str, chain + [parent]))
                raise ValueError(f"branch tree: run {run_id!r} continues itself ({loop}); a run's origin.parent must "
                                 f"name an earlier run")
            chain.append(parent)
            parent = entries[parent].parent


def _run_dict(entry: Entry, trace: Trace) -> dict[str, Any]:
    return {"run_id": entry.run_id, "tab": entry.tab, "label": entry.label, "prompt": entry.prompt,
            "trace": trace.to_dict()}


def _dumps(runs: list, encoded: bool = False) -> str:
    """The tree file: its format tag and the runs (``encoded``: runs already JSON text)."""
    if not encoded:
        return json.dumps({"format": FORMAT, "runs": runs}, allow_nan=True)
    return f'{{"format": {json.dumps(FORMAT)}, "runs": [{", ".join(runs)}]}}'


# --- the bounded form ------------------------------------------------------------------------------------------
KEEP_CANDIDATES = 5  # alternatives kept per row and step in the bounded form (the tab records 10)


def _forced(branches: Branches) -> dict[str, dict[tuple[int, int], set[int]]]:
    """Per run id, the (step, row) -> tokens its children forced there: the edge labels and the children's texts
    spell a forced token from the parent's record of it, so the bounded form keeps those candidates."""
    out: dict[str, dict[tuple[int, int], set[int]]] = {}
    for e in branches.entries.values():
        origin = e.trace.origin
        if origin is not None and origin.token_id is not None:
            out.setdefault(origin.parent, {}).setdefault((origin.step, origin.row), set()).add(origin.token_id)
    return out


def slim(trace: Trace, forced: dict[tuple[int, int], set[int]] | None = None) -> Trace:
    """``trace`` cut to what the branch tree, the comparison, the token view and continuing read: per row and step
    the chosen tokens, their pieces and entropy and the first ``KEEP_CANDIDATES`` candidates (best score first; the
    chosen ones and those in ``forced`` too); for the beam family only the nodes on the returned hypotheses' paths.
    Gone: the processors' effects and the watched tokens, the strategy details (contrastive, DoLa, drafts), the cache
    sizes, the logit lens and the running best continuations, which only the tab's own figures draw."""
    forced = forced or {}
    on_path = {n for path in BeamIndex.of(trace.steps).best_paths() for n in path}

    def row(rec: StepRecord, rs: RowStep) -> RowStep:
        keep = {*rs.chosen, *forced.get((rec.step, rs.row), ())}
        candidates = [c for i, c in enumerate(rs.candidates) if i < KEEP_CANDIDATES or c.token_id in keep]
        return replace(rs, candidates=candidates, effects=[], watched=[])

    steps = [replace(rec, rows=[row(rec, rs) for rs in rec.rows], contrastive=None, dola=None, assisted=None,
                     cache=None, lens=None, best=None,
                     beam=None if rec.beam is None else [n for n in rec.beam if n.node_id in on_path])
             for rec in trace.steps]
    return replace(trace, steps=steps)


# --- what an edge says -------------------------------------------------------------------------------------------
def settings_diff(child: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``child`` that differ from ``parent``'s (new or changed values; a dropped one is None)."""
    keys = [k for k in dict.fromkeys([*child, *parent]) if child.get(k) != parent.get(k)]
    return {k: child.get(k) for k in keys}


SKIPPED = {"max_new_tokens", "max_length"}  # a continuation's budget differs by construction: not a setting change


def edge_label(entry: Entry, branches: Branches) -> str:
    """The edge into ``entry``: its forced token (as the parent's record of that step spells it) and its settings
    that differ from the parent's (a fresh run: from the previous fresh run on the same prompt)."""
    origin = entry.trace.origin
    if origin is not None and origin.parent in branches.entries:
        parent = branches.entries[origin.parent]
        forced = (f"{_text_at(parent.trace, origin.step, origin.row, origin.token_id)!r} at step {origin.step}"
                  if origin.token_id is not None
                  else f"resumed at step {origin.step}")
    else:  # a fresh run: what changed since the previous fresh run on the prompt (the first one is the baseline)
        roots = [e for e in branches.on_prompt(entry.prompt_key) if e.parent is None]
        earlier = roots[:roots.index(entry)] if entry in roots else []
        if not earlier:
            return ""
        parent, forced = earlier[-1], ""
    diff = {k: v for k, v in settings_diff(entry.trace.config, parent.trace.config).items() if k not in SKIPPED}
    changed = ", ".join(f"{k}={v!r}" for k, v in diff.items())
    return "; ".join(part for part in (forced, changed) if part)


# --- comparing two runs ----------------------------------------------------------------------------------------
class Series(NamedTuple):
    tokens: list[int]  # every token after the user's prompt
    logprobs: list[float | None]  # per position: log p the model gave that token there (None: not recorded)


def series(entry: Entry, branches: Branches, row: int = 0) -> Series:
    """The run's tokens after the user's prompt with the model's log-probability of each, read from the records of
    the run and, for the prefix it continued from, of its ancestors (``None`` where no record has it)."""
    tokens = entry.tokens(row)
    logprobs: list[float | None] = [None] * len(tokens)
    origin = entry.trace.origin
    if origin is not None and origin.parent in branches.entries:
        parent = series(branches.entries[origin.parent], branches, origin.row)
        inherited = len(origin.prefix) - (1 if origin.token_id is not None else 0)
        logprobs[:inherited] = parent.logprobs[:inherited]
        if origin.token_id is not None:  # the forced token: its probability in the parent's record of that step
            logprobs[inherited] = _logprob_at(branches.entries[origin.parent].trace, origin.step, origin.row,
                                              origin.token_id)
    own = _own_logprobs(entry.trace, row)
    for i, lp in enumerate(own):
        if entry.offset + i < len(logprobs):
            logprobs[entry.offset + i] = lp
    return Series(tokens, logprobs)


def _candidate_at(trace: Trace, step: int, row: int, token_id: int) -> Candidate | None:
    """The record of ``token_id`` among row ``row``'s candidates at step ``step`` of ``trace`` (None: not recorded)."""
    rec = trace.steps[step] if 0 <= step < len(trace.steps) else None
    rs = next((r for r in rec.rows if r.row == row), None) if rec is not None else None
    return next((c for c in rs.candidates if c.token_id == token_id), None) if rs is not None else None


def _logprob_at(trace: Trace, step: int, row: int, token_id: int) -> float | None:
    cand = _candidate_at(trace, step, row, token_id)
    return math.log(cand.prob) if cand is not None and cand.prob > 0 else None


def _best_path(trace: Trace, row: int) -> list[BeamNode] | None:
    """The beam family: the nodes of returned row ``row``'s hypothesis, first token first (None: not the beam
    family)."""
    if not any(rec.beam is not None for rec in trace.steps):
        return None
    index = BeamIndex.of(trace.steps)
    paths = index.best_paths()
    return [index.nodes[n] for n in paths[row]] if row < len(paths) else []


def _own_logprobs(trace: Trace, row: int) -> list[float | None]:
    """Per generated token of returned row ``row``: the model's log-probability of it, from the step records
    (the beam family: the differences of the cumulative scores along the returned hypothesis' nodes)."""
    path = _best_path(trace, row)
    if path is not None:
        return [n.score - (path[i - 1].score if i else 0.0) for i, n in enumerate(path)]
    out: list[float | None] = []
    for rec in trace.steps:
        for rs in (r for r in rec.rows if r.row == row):
            for i, token in enumerate(rs.chosen):
                cand = next((c for c in rs.candidates if c.token_id == token), None) if i == 0 else None
                out.append(math.log(cand.prob) if cand is not None and cand.prob > 0 else None)
    return out


# --- what a run reads as ----------------------------------------------------------------------------------------
def pieces(entry: Entry, branches: Branches | None, row: int = 0) -> list[Piece]:
    """A ``Piece`` per token of ``entry.tokens(row)`` (``core.text``), as the records spell them: its own from its
    rows' pieces (the beam family: its hypothesis' nodes), the prefix it continued from from its ancestors' (the
    forced token as the parent's record of that step spells it). A trace without pieces spells its text on its first
    token."""
    tokens = entry.tokens(row)
    path = _best_path(entry.trace, row)
    if path is not None:
        own = [Piece(n.text, n.tail) for n in path]
    else:
        own = [p for rec in entry.trace.steps for rs in rec.rows if rs.row == row for p in rs.pieces or ()]
    if len(own) != len(tokens) - entry.offset:  # recorded before pieces, or cut short: the decoded text
        text = entry.trace.texts[row] if row < len(entry.trace.texts) else ""
        own = [Piece(text)] + [Piece("")] * max(len(tokens) - entry.offset - 1, 0)
    origin = entry.trace.origin
    if origin is None or not origin.prefix:
        return own
    parent = branches.entries.get(origin.parent) if branches is not None else None
    inherited = len(origin.prefix) - (1 if origin.token_id is not None else 0)
    before = pieces(parent, branches, origin.row)[:inherited] if parent is not None else []
    before += [Piece(f"#{t}") for t in origin.prefix[len(before):inherited]]
    if origin.token_id is not None:
        before.append(Piece(_text_at(parent.trace, origin.step, origin.row, origin.token_id) if parent is not None
                            else f"#{origin.token_id}"))
    return before + own


def spelled(entry: Entry, branches: Branches | None, row: int = 0, limit: int | None = None) -> str:
    """The text after the user's prompt (its first ``limit`` tokens), as the records spell it (``pieces``)."""
    return "".join(shown(pieces(entry, branches, row))[:limit])


def _text_at(trace: Trace, step: int, row: int, token_id: int) -> str:
    """A candidate's text at one step of ``trace`` (what it would print there)."""
    cand = _candidate_at(trace, step, row, token_id)
    return cand.text if cand is not None else f"#{token_id}"


class Comparison(NamedTuple):
    first: Series
    second: Series
    diverge: int | None  # the first position (after the prompt) where their tokens differ; None: one extends the other


def compare(first: Entry, second: Entry, branches: Branches) -> Comparison:
    a, b = series(first, branches), series(second, branches)
    return Comparison(a, b, first_difference([a.tokens, b.tokens]))


def first_difference(runs: Sequence[Sequence[int]]) -> int | None:
    """The first position where two of ``runs`` (token lists, each after the same prompt) hold different tokens;
    None when none do (equal runs, or each a prefix of a longer one: a run that stopped earlier did not choose
    otherwise)."""
    for i in range(max(map(len, runs), default=0)):
        if len({run[i] for run in runs if i < len(run)}) > 1:
            return i
    return None


def token_diff(runs: Sequence[Sequence[int]]) -> list[list[bool]]:
    """Per run, per token: whether it differs from the reference, the first run (for the first run, the second),
    aligned by ``difflib``: a run that parts and later writes the same tokens again shows them as shared, not
    shifted. A single run differs nowhere."""
    out = []
    for k, run in enumerate(runs):
        reference = runs[1 if k == 0 else 0] if len(runs) > 1 else run
        differs = [True] * len(run)
        matcher = difflib.SequenceMatcher(None, list(reference), list(run), autojunk=False)
        for block in matcher.get_matching_blocks():
            differs[block.b:block.b + block.size] = [False] * block.size
        out.append(differs)
    return out


def steps_series(steps: Sequence[StepRecord], tokens: Sequence[int], row: int = 0) -> Series:
    """A run's ``Series`` from its own records alone (a run that continues none, e.g. one of the Compare tab's):
    ``tokens`` after the prompt and the model's log-probability of each as the records hold it."""
    own = _own_logprobs(Trace("", {}, [], steps=list(steps)), row)
    return Series(list(tokens), [own[i] if i < len(own) else None for i in range(len(tokens))])


# --- sample many -----------------------------------------------------------------------------------------------
@dataclass
class SampleNode:
    """A branch of the samples' prefix tree: the token, how many samples took it, the model's probability of it there
    (as the records give it, before and after the processors) and the entropy of the distribution it was drawn from."""

    token_id: int
    text: str  # what it prints there (its candidate text)
    count: int = 0
    prob: float | None = None
    prob_after: float | None = None
    entropy: float | None = None
    children: dict[int, "SampleNode"] = field(default_factory=dict)
    piece: Piece = Piece("")  # its piece of the text (``core.text``): labels join these
    rows: list[int] = field(default_factory=list)  # the samples (batch rows) that took it


class Sampled(NamedTuple):
    """One token of one sample, as the records give it."""

    token_id: int
    text: str
    prob: float | None  # the model's probability of it there
    prob_after: float | None  # after the processors (what it was drawn from)
    entropy: float | None  # of the distribution it was drawn from
    piece: Piece  # its piece of the sample's text


def samples(steps) -> list[list[Sampled]]:
    """Each sample of a run (a batch row; for the beam family each returned hypothesis) as its tokens with what the
    records say of them: the rows' candidates and entropies, or the beam nodes' scores along the returned paths."""
    steps = list(steps)
    index = BeamIndex.of(steps)
    if index.best_nodes is not None:
        out = []
        for node_ids in index.best_paths():
            path = [index.nodes[n] for n in node_ids]
            out.append([Sampled(n.token_id, n.text + n.tail, None,
                                math.exp(n.score - (path[i - 1].score if i else 0.0)), None, Piece(n.text, n.tail))
                        for i, n in enumerate(path)])
        return out
    rows: dict[int, list[Sampled]] = {}
    for rec in steps:
        for rs in rec.rows:
            for i, token in enumerate(rs.chosen):
                cand = next((c for c in rs.candidates if c.token_id == token), None) if i == 0 else None
                text = cand.text if cand else f"#{token}"
                rows.setdefault(rs.row, []).append(Sampled(
                    token, text, cand.prob if cand else None, cand.prob_after if cand else None,
                    rs.entropy if i == 0 else None, rs.pieces[i] if rs.pieces else Piece(text)))
            rows.setdefault(rs.row, [])
    return [rows[r] for r in sorted(rows)]


def sample_tree(runs: list[list[Sampled]]) -> SampleNode:
    """The samples merged into a prefix tree: each node counts the samples that took its token there."""
    root = SampleNode(-1, "", count=len(runs))
    for index, tokens in enumerate(runs):
        node = root
        for t in tokens:
            child = node.children.get(t.token_id)
            if child is None:
                child = node.children[t.token_id] = SampleNode(t.token_id, t.text, prob=t.prob,
                                                               prob_after=t.prob_after, entropy=t.entropy,
                                                               piece=t.piece)
            child.count += 1
            child.rows.append(index)
            node = child
    return root


def entropy_per_step(steps) -> list[list[float]]:
    """Per step, the entropy (nats) of every row's sampled distribution there (rows that had finished excluded)."""
    return [[rs.entropy for rs in rec.rows if rs.entropy is not None and rs.chosen] for rec in steps]


def token_texts(branches: Branches | None):
    """``text_of(token_id)``: a token's text as the session's records hold it (``#id`` where none does)."""
    texts: dict[int, str] = {}
    for entry in (branches.entries.values() if branches is not None else ()):
        for rec in entry.trace.steps:
            for rs in rec.rows:
                texts.update((c.token_id, c.text) for c in rs.candidates)
            texts.update((n.token_id, n.text) for n in rec.beam or ())
    return lambda token_id: texts.get(token_id, f"#{token_id}")

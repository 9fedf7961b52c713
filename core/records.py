"""Step records and the one observer interface through which every strategy reports what it did.

Records are frozen dataclasses holding plain Python values, so a trace is JSON as it stands:
``Trace.to_json()`` writes it and ``Trace.from_json()`` reads it back into the same objects, checked once
(``Trace.check``: the beam nodes form a tree) so that every walk over them ends.
Each strategy fills the common fields of ``StepRecord`` and, where it has one, its own detail
field (``beam``, ``contrastive``, ``dola``, ``assisted``); the others stay ``None``. ``lens`` (the logit
lens, per layer) is filled only when the recorder asks for it (``ListRecorder(lens=True)``), and ``RowStep.watched``
(and ``LayerLens.watched``) only for the tokens it watches (``ListRecorder(watch=[ids])``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args, get_origin, get_type_hints

from .beam_index import BeamIndex


@dataclass(frozen=True)
class Candidate:
    """One token the model considered at a step: its logit and probability before and after the processors."""

    token_id: int
    text: str  # what it prints where it was considered (``core.text``: incomplete bytes as ``<D8>``)
    logit: float  # raw model logit (float32)
    prob: float  # softmax of the raw logits
    score: float  # after the logits processors (-inf when a processor removed it)
    prob_after: float  # softmax of the processed scores: the distribution actually sampled / arg-maxed


@dataclass(frozen=True)
class ProcessorEffect:
    """What one logits processor did to the recorded candidates of one row."""

    processor: str  # class name, e.g. "TopKLogitsWarper"
    removed: list[int]  # recorded candidates it set to -inf
    changed: list[int]  # recorded candidates whose score it changed without removing them
    removed_total: int = 0  # tokens of the whole vocabulary it set to -inf
    # the funnel, after this stage: its name in the chain (``core.chain``: "top_k", "dry", "grammar", ...), how many
    # tokens still have a finite score, how much of the model's own probability they hold, and the probability of
    # the chosen token under this stage's output (None: the row chose none)
    stage: str = ""
    kept: int = 0
    mass: float = 1.0
    chosen_prob: float | None = None


@dataclass(frozen=True)
class Piece:
    """What one chosen token adds to its row's text (``core.text``): ``text``, the characters it completes (bytes of
    earlier tokens that waited for it merged in), and ``tail``, its own bytes that still wait for the rest of their
    character, spelled ``<D8>``; a tail shows only while no later token completed anything (``core.text.shown``)."""

    text: str
    tail: str = ""


MAX_WATCH = 8  # tokens a recorder may watch: each costs a gather and a comparison over the vocabulary per stage


@dataclass(frozen=True)
class WatchedToken:
    """A token the recorder watches (``Recorder.watch``), in one row at one step, through the logits processors.
    Index 0 is what the first processor received (the model's logits; beam search: their log-softmax), index i + 1 is
    the output of ``RowStep.effects[i]``; the last one is the distribution the step chose from."""

    token_id: int
    text: str  # what it would print in its row there (as a ``Candidate``'s)
    scores: list[float]  # its score at each stage (-inf once a processor removed it)
    probs: list[float]  # softmax of each stage's scores, at this token
    ranks: list[int]  # how many tokens score higher at that stage (0: the top token)


@dataclass(frozen=True)
class WatchedLayer:
    """A watched token's standing at one layer of the logit lens (``LayerLens.watched``)."""

    token_id: int
    prob: float
    rank: int  # how many tokens this layer finds more likely (0: its top token)


@dataclass(frozen=True)
class RowStep:
    """One batch row (or beam) at one step: candidates, processor effects, and the token chosen."""

    row: int
    candidates: list[Candidate]
    effects: list[ProcessorEffect]
    chosen: list[int]  # token(s) appended to this row at this step
    entropy: float | None = None  # nats, of the final distribution (after every processor) the token came from
    pieces: list[Piece] | None = None  # one per ``chosen`` token, in its row's context (None: traces before them)
    watched: list[WatchedToken] = field(default_factory=list)  # one per watched token, in the recorder's order


@dataclass(frozen=True)
class BeamNode:
    """An expanded beam candidate. ``node_id`` is unique in the trace; ``parent`` is the node it extends
    (``-1`` for the prompt). ``fate`` is one of ``"kept"``, ``"pruned"``, ``"finished"``."""

    node_id: int
    parent: int
    batch: int
    token_id: int
    text: str  # the characters it completes after its parent's path (a ``Piece``'s text)
    score: float  # cumulative log-probability of the sequence ending in this token
    normalized_score: float  # score / length ** length_penalty, the score beams are ranked by when finished
    fate: str
    group: int = 0  # diverse beam search: the group that expanded it
    diversity_penalty: float = 0.0  # diverse beam search: penalty subtracted from this token's score
    final_score: float | None = None  # set when ``fate == "finished"``: the hypothesis' score in the final ranking
    forced: bool = False  # constrained beam search: proposed by a constraint, not by the top-k
    bank: int | None = None  # constrained beam search: the constraint progress it was ranked by (higher first)
    slot: int | None = None  # the running beam it became (row ``slot`` of its batch row's beams at the next step)
    tail: str = ""  # its bytes still waiting for the rest of a character, as ``<D8>`` (a ``Piece``'s tail)


@dataclass(frozen=True)
class ContrastiveCandidate:
    token_id: int
    text: str
    confidence: float  # model probability of the candidate
    degeneration_penalty: float  # max cosine similarity of its hidden state to the context
    score: float  # (1 - alpha) * confidence - alpha * penalty
    chosen: bool


@dataclass(frozen=True)
class DolaStep:
    candidate_layers: list[int]
    js_divergences: list[float]  # one per candidate layer, against the final layer
    chosen_layer: int
    contrasted: list[Candidate]  # top candidates after the contrast (``score``) with the final layer (``logit``)


@dataclass(frozen=True)
class AssistedStep:
    drafted: list[int]
    accepted: list[int]
    rejected: list[int]
    corrected: list[int]  # token the main model put in place of the first rejected one (or the bonus token)
    drafted_text: list[str]
    next_draft_length: int
    source: str  # "assistant", "prompt_lookup" or "universal"
    # drafts the main model agreed with but dropped (past max_length or after an EOS): the first of `rejected`
    cut: int = 0


@dataclass(frozen=True)
class LayerLens:
    """The logit lens at one layer for one row and step: the layer's hidden state read through the final norm and
    the LM head (``core.lens``). Layer 0 is the embedding output; the last layer is the model's own logits."""

    layer: int
    top: list[Candidate]  # the layer's most probable tokens (``logit``/``prob``: this layer; ``score`` = ``logit``)
    chosen_prob: float  # this layer's probability of the token the step chose
    chosen_rank: int  # how many tokens this layer finds more likely than the chosen one (0: its top token)
    kl_to_final: float  # KL(final || this layer) in nats; 0 at the final layer
    watched: list[WatchedLayer] = field(default_factory=list)  # one per watched token, in the recorder's order


@dataclass(frozen=True)
class CacheInfo:
    kind: str  # class name, e.g. "DynamicCache", "QuantizedCache"
    bytes: int  # bytes held by its key/value tensors after this step
    seq_length: int


@dataclass(frozen=True)
class StepRecord:
    """What one decoding step considered and chose."""

    step: int
    strategy: str
    rows: list[RowStep]
    elapsed_s: float = 0.0  # seconds since generation started
    beam: list[BeamNode] | None = None
    contrastive: list[list[ContrastiveCandidate]] | None = None  # per batch row
    dola: list[DolaStep] | None = None  # per batch row
    assisted: list[AssistedStep] | None = None  # per batch row
    cache: CacheInfo | None = None
    best: list[list[int]] | None = None  # current best continuation per returned row (beam family)
    best_nodes: list[int] | None = None  # beam family: the ``BeamNode`` ending each row of ``best`` (-1: empty row)
    lens: list[list[LayerLens]] | None = None  # per batch row, one per layer, embeddings first (``lens=True``)


@dataclass(frozen=True)
class Origin:
    """Where a run continues another: row ``row`` of run ``parent`` up to (not including) its step ``step``, then
    ``token_id`` forced at that step (``None``: nothing forced, the run resumes there). ``prefix`` holds the
    tokens the new run starts from after the prompt: the parent's tokens before the step, then the forced one."""

    parent: str  # the parent's ``Trace.run_id``
    step: int
    row: int = 0
    token_id: int | None = None
    prefix: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WatermarkReport:
    """Watermark detection on one returned sequence (``core.watermark``): per generated token whether it was in
    its green list, and transformers' ``WatermarkDetector`` z-score for the text."""

    green: list[bool]
    z_score: float | None  # None: too few tokens to score
    p_value: float | None
    scored: int  # tokens the z-score counts
    greenlist_ratio: float


@dataclass
class Trace:
    """All records of one generation plus the settings that produced it."""

    strategy: str
    config: dict[str, Any]
    prompt_ids: list[list[int]]
    steps: list[StepRecord] = field(default_factory=list)
    sequences: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    model_name: str = ""
    elapsed_s: float = 0.0
    seed: int | None = None  # initial seed of the run's generator (replays a sampled run)
    stopped: str = ""  # "" when it ran to its end; "cancelled" or "time cap" when it was cut short
    run_id: str = ""  # unique per run, named by the ``Origin`` of runs that continue it
    origin: Origin | None = None  # set when the run continues another (a branch, a step, a resume)
    watermark: list[WatermarkReport] | None = None  # per returned sequence, when ``watermarking_config`` was set
    # what the caller knew of the run that the records cannot say (the playground: the prompt as typed, whether the
    # chat template wrapped it, the assistant's name, Sample N's seeds), carried as it is: the core writes and reads
    # none of it, and the caller checks what a file read back holds there
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trace":
        """The trace ``to_dict`` wrote, checked once (``check``): a file read back may hold anything."""
        trace = _build(cls, data)
        trace.check()
        return trace

    def check(self) -> None:
        """Raise ValueError unless the beam nodes form a tree (``BeamIndex``: every parent recorded before its child,
        ids unique), so every walk from a node to the prompt ends."""
        BeamIndex.of(self.steps)

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        return cls.from_dict(json.loads(text))


def _build(tp: Any, value: Any) -> Any:
    """Rebuild dataclasses (and lists / optionals of them) from ``asdict`` output."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin is list:
        (inner,) = get_args(tp)
        return [_build(inner, v) for v in value]
    if origin is not None and type(None) in get_args(tp):  # Optional[X] / X | None
        inner = next(a for a in get_args(tp) if a is not type(None))
        return _build(inner, value)
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(**{f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value})
    return value


class Recorder(Protocol):
    """The observer interface: a strategy calls ``on_step`` once per decoding step and ``on_end`` once. The loop
    reads ``top_n`` (candidates recorded per row) and ``lens`` (whether to record the logit lens) from it, and
    ``watch`` (token ids to follow through the processors and the lens) where it has one: a recorder written before
    it watches nothing."""

    top_n: int
    lens: bool
    watch: list[int]

    def on_step(self, record: StepRecord) -> None: ...

    def on_end(self, trace: Trace) -> None: ...


RECORDER_FIELDS = ("top_n", "lens")  # what the loop reads from a recorder besides its two methods


def check_recorder(recorder) -> None:
    """A recorder must say what to record (``Recorder``): no silent default for a field it lacks."""
    if recorder is None:
        return
    missing = [name for name in (*RECORDER_FIELDS, "on_step", "on_end") if not hasattr(recorder, name)]
    if missing:
        raise TypeError(f"`recorder` must have {', '.join(f'`{m}`' for m in missing)} (see core.Recorder: `top_n` "
                        f"candidates per row, an int >= 1; `lens` whether to record the logit lens); got a "
                        f"{type(recorder).__name__} without them")
    if not isinstance(recorder.top_n, int) or recorder.top_n < 1:
        raise ValueError(f"`recorder.top_n` must be an int >= 1; got {recorder.top_n!r}")


def watched_ids(recorder) -> list[int]:
    """The token ids ``recorder`` watches (none for a recorder without ``watch``)."""
    return list(getattr(recorder, "watch", None) or ())


def check_watch(watch, vocab_size: int) -> None:
    """``watch`` must be at most ``MAX_WATCH`` token ids, each in [0, vocab_size)."""
    if len(watch) > MAX_WATCH:
        raise ValueError(f"`watch` must name at most {MAX_WATCH} tokens; got {len(watch)}")
    for token_id in watch:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < vocab_size:
            raise ValueError(f"`watch` must hold token ids in [0, {vocab_size - 1}]; got {token_id!r}")


class ListRecorder:
    """Keeps every record; ``top_n`` is how many candidates per row the strategies record. With ``lens=True`` the
    strategies that run one token per row (greedy, sampling, DoLa) also fill ``StepRecord.lens``; it costs nothing
    when off (the forwards then return no hidden states). ``watch`` (at most ``MAX_WATCH`` token ids) fills
    ``RowStep.watched`` and, with the lens, ``LayerLens.watched``; with none watched nothing of it is computed."""

    def __init__(self, top_n: int = 10, lens: bool = False, watch: list[int] | tuple[int, ...] = ()):
        self.top_n = top_n
        self.lens = lens
        self.watch = list(watch)
        self.steps: list[StepRecord] = []
        self.trace: Trace | None = None

    def on_step(self, record: StepRecord) -> None:
        self.steps.append(record)

    def on_end(self, trace: Trace) -> None:
        self.trace = trace

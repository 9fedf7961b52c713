"""The generated text as HTML, each token coloured by the probability it was chosen with, the entropy of its step or
its surprisal (``COLOUR_BY``).

Each token shows its ``Piece`` (``core.text``): a character split across tokens appears whole on the token that
completes it, bytes that never complete as ``<D8>``; the joined spans read as the decoded text, and the container's
``dir="auto"`` lets right-to-left text run right to left.

The CSS classes used here are defined in ``assets/style.css``: ``dp-tokens`` (the container), ``dp-tok``
(a token, with ``data-step`` and ``data-pos``), ``dp-p0`` … ``dp-p5`` (probability buckets, low to high), ``dp-pna``
(probability not recorded), ``dp-h0`` … ``dp-h5`` / ``dp-hna`` (entropy buckets, high to low), ``dp-s0`` … ``dp-s5`` /
``dp-sna`` (surprisal buckets, high to low), ``dp-legend`` (a bucket legend, one per way of colouring, ``data-mode``).

Every token carries its bucket in all three ways and the view carries the three legends: the tab's "colour by" radio
sets ``data-colour`` on the view's wrapper in the browser, and the stylesheet shows that way's colours and legend
(probability where none is set). Switching costs no round trip, and a view streamed while a run goes on keeps the
chosen colouring. Bucket 0 is always the red end: the least likely choice, the most uncertain step, the biggest
surprise.
"""

from __future__ import annotations

import html
import math
from typing import NamedTuple

from core.records import Piece, RowStep
from core.text import shown

from ..branches import token_diff

from .beam_tree import beam_graph, paths_in
from .candidates import removed_by
from .common import Steps, considered, pick, records, row_of, row_steps, visible

CAPTION = ("The generated text, each token shaded by the probability it had when it was chosen (after the "
           "logits processors): the redder, the less likely. Hover a token for the alternatives it beat.")

# Lower bounds of the probability buckets dp-p5 … dp-p1; below the last is dp-p0.
BUCKETS = (0.9, 0.7, 0.5, 0.3, 0.1)
# Upper bounds (nats) of the entropy buckets dp-h5 … dp-h1, above the last dp-h0. Fixed rather than scaled to the run:
# a view streamed step by step must keep each token's colour (and the legend) as later steps arrive. e^H, the
# effective vocabulary, is about 1.3, 2.1, 4.5, 12 and 55 tokens at these bounds.
ENTROPY_BUCKETS = (0.25, 0.75, 1.5, 2.5, 4.0)
# Upper bounds (nats) of the surprisal buckets dp-s5 … dp-s1 of -ln p (the chosen token, after the processors), above
# the last dp-s0: p ≈ 0.61, 0.37, 0.14, 0.05, 0.007. Wider than the probability buckets below p = 0.1, where
# probability lumps every unlikely choice together.
SURPRISAL_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0)
COLOUR_BY = ("probability", "entropy", "surprisal")  # the token view's ways of colouring, the radio's choices
ALTERNATIVES_HEADERS = ["token", "id", "prob", "prob after", "removed by"]
_ALTERNATIVES_IN_TOOLTIP = 5


def bucket_class(prob: float | None) -> str:
    """The CSS class of a probability: ``dp-p5`` for >= 0.9 down to ``dp-p0`` below 0.1."""
    if prob is None:
        return "dp-pna"
    for i, low in enumerate(BUCKETS):
        if prob >= low:
            return f"dp-p{len(BUCKETS) - i}"
    return "dp-p0"


def entropy_class(entropy: float | None) -> str:
    """The CSS class of a step's entropy (nats): ``dp-h5`` for <= 0.25 up to ``dp-h0`` above 4."""
    return _bucket(entropy, ENTROPY_BUCKETS, "dp-h")


def _bucket(value: float | None, highs, prefix: str) -> str:
    """``prefix`` and the bucket of ``value`` among the rising bounds ``highs`` (the highest number for the lowest
    bound; 0 above them all; ``na`` when not recorded)."""
    if value is None:
        return f"{prefix}na"
    for i, high in enumerate(highs):
        if value <= high:
            return f"{prefix}{len(highs) - i}"
    return f"{prefix}0"


def surprisal(prob: float | None) -> float | None:
    """-ln ``prob`` in nats (inf for a probability of 0; None when not recorded)."""
    if prob is None:
        return None
    return math.inf if prob <= 0 else -math.log(prob)


def surprisal_class(prob: float | None) -> str:
    """The CSS class of a chosen token's surprisal -ln p: ``dp-s5`` for <= 0.5 nats up to ``dp-s0`` above 5."""
    return _bucket(surprisal(prob), SURPRISAL_BUCKETS, "dp-s")


def colour_classes(prob: float | None, entropy: float | None) -> str:
    """A token's bucket classes in every way of colouring (``COLOUR_BY``), probability first."""
    return f"{bucket_class(prob)} {entropy_class(entropy)} {surprisal_class(prob)}"


def _legend_items(mode: str) -> list[tuple[str, str]]:
    """(class, label) of each bucket of ``mode``, from the green end to the red one."""
    if mode == "probability":
        return [(f"dp-p{len(BUCKETS) - i}", f"p ≥ {low}") for i, low in enumerate(BUCKETS)] + \
            [("dp-p0", f"p < {BUCKETS[-1]}")]
    bounds, cls, unit = ((ENTROPY_BUCKETS, "dp-h", "H") if mode == "entropy" else (SURPRISAL_BUCKETS, "dp-s", "−ln p"))
    items = [(f"{cls}{len(bounds) - i}", f"{unit} ≤ {high:g}" + (f" (e^H ≈ {math.exp(high):.3g})" if mode == "entropy"
                                                                  else ""))
             for i, high in enumerate(bounds)]
    return items + [(f"{cls}0", f"{unit} > {bounds[-1]:g}")]


LEGEND_TITLES = {"probability": "Colour: probability of the chosen token (after the processors)",
                 "entropy": "Colour: entropy H of the step, nats (e^H: effective vocabulary, tokens)",
                 "surprisal": "Colour: surprisal −ln p of the chosen token, nats"}


def legend_html(mode: str) -> str:
    """The legend of one way of colouring: what it colours by, in which unit, and each bucket's bounds."""
    if mode not in COLOUR_BY:
        raise ValueError(f"`colour_by` must be one of {', '.join(COLOUR_BY)}; got {mode!r}")
    items = "".join(f'<span class="dp-tok {cls}">{html.escape(label)}</span>' for cls, label in _legend_items(mode))
    return (f'<div class="dp-legend" data-mode="{mode}"><span class="dp-legend-title">'
            f'{html.escape(LEGEND_TITLES[mode])}</span>{items}</div>')


def _span(text: str, step: int, pos: int, cls: str, title: str) -> str:
    return (f'<span class="dp-tok {cls}" data-step="{step}" data-pos="{pos}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(text)}</span>")


class _Token(NamedTuple):
    """One chosen token of the view: where it was chosen, its piece of the text, its span's class and tooltip."""

    step: int
    pos: int
    piece: Piece
    cls: str
    title: str
    token_id: int = -1


def _row_tokens(step: int, row_steps: list[RowStep]) -> list[_Token]:
    """The chosen tokens of one step; ``pos`` is the ``position`` of its ``RowStep`` in the step. A trace recorded
    before pieces reads each token's candidate text."""
    tokens = []
    for pos, rs in enumerate(row_steps):
        by_id = {c.token_id: c for c in rs.candidates}
        removed = removed_by(rs)
        for i, token_id in enumerate(rs.chosen):
            # the candidates describe the distribution of a RowStep's first token only
            cand = by_id.get(token_id) if i == 0 else None
            piece = rs.pieces[i] if rs.pieces else Piece(cand.text if cand is not None else f"#{token_id}")
            if cand is None:
                tokens.append(_Token(step, pos, piece, colour_classes(None, None),
                                     f"step {step}: probability not recorded", token_id))
                continue
            others = sorted((c for c in considered(rs.candidates) if c.token_id != token_id),
                            key=lambda c: -c.prob_after)
            lines = [f"step {step} · {cand.text!r} p = {cand.prob_after:.3f} (model: {cand.prob:.3f})"
                     + (f", surprisal {surprisal(cand.prob_after):.2f} nats" if cand.prob_after > 0 else "")
                     + (f", entropy {rs.entropy:.2f} nats" if rs.entropy is not None else ""),
                     "alternatives:" if others else "no other token survived the processors"]
            for c in others[:_ALTERNATIVES_IN_TOOLTIP]:
                note = f" — removed by {', '.join(removed[c.token_id])}" if c.token_id in removed else ""
                lines.append(f"  {c.text!r} {c.prob_after:.3f} (model: {c.prob:.3f}){note}")
            tokens.append(_Token(step, pos, piece, colour_classes(cand.prob_after, rs.entropy), "\n".join(lines),
                                 token_id))
    return tokens


def _spans(tokens: list[_Token], lead: list[Piece]) -> list[str]:
    """The spans of ``lead`` (the prefix a branch continues from) and ``tokens``, each showing its piece as
    ``core.text.shown`` says: the bytes of a character on the token that completes it."""
    texts = shown(lead + [t.piece for t in tokens])
    spans = [f'<span class="dp-tok dp-lead" title="from the run this one continues">{html.escape(t)}</span>'
             for t in texts[:len(lead)]]
    return spans + [_span(text, t.step, t.pos, t.cls, t.title) for text, t in zip(texts[len(lead):], tokens)]


def _beam_tokens(steps: Steps, row: int) -> list[_Token]:
    """The tokens of the current best hypothesis of returned row ``row`` of the beam family, along its path in the
    beam tree (the node the records name for that row; the first row's where ``row`` is past them)."""
    tree = beam_graph(steps)
    paths = paths_in(tree)
    path = (paths[row] if row < len(paths) else paths[0]) if paths else []
    tokens = []
    for node_id in path:
        node = tree.nodes[node_id]
        parent = next(iter(tree.graph.predecessors(node_id)))
        siblings = sorted((tree.nodes[s] for s in tree.graph.successors(parent) if s != node_id),
                          key=lambda n: -n.score)
        lines = [f"step {tree.step_of[node_id]} · {node.text + node.tail!r} cumulative log-prob {node.score:.3f} "
                 f"({node.fate})", "other continuations of the same hypothesis:"]
        lines += [f"  {s.text + s.tail!r} {s.score:.3f} ({s.fate})" for s in siblings[:_ALTERNATIVES_IN_TOOLTIP]]
        tokens.append(_Token(tree.step_of[node_id], 0, Piece(node.text, node.tail), "dp-pna dp-beam",
                             "\n".join(lines), node.token_id))
    return tokens


def run_tokens(steps: Steps, row: int = 0) -> list[_Token]:
    """The chosen tokens of ``row`` as the token view shows them (the beam family: the best hypothesis of returned row
    ``row``), each with its step, piece, colour classes, tooltip and id."""
    recs = records(steps)
    if any(r.beam is not None for r in recs):
        return _beam_tokens(recs, row)
    return [t for rec in recs for t in _row_tokens(rec.step, row_steps(rec, row))]


class Column(NamedTuple):
    """One run of a side-by-side view: its label and its tokens after the prompt (``run_tokens``, or cells made from
    any run's pieces). ``clickable``: its spans carry ``data-step``, so a click picks that step in the tab."""

    label: str
    tokens: list[_Token]
    clickable: bool = False


def cell(token_id: int, piece: Piece, title: str, cls: str = "dp-pna") -> _Token:
    """A token of a ``Column`` that no step record of the shown run spells (a branch's prefix, a run read back)."""
    return _Token(-1, 0, piece, cls, title, token_id)


def columns_html(columns: list[Column], diverge: int | None, caption: str = "Runs side by side",
                 legend: bool = False) -> str:
    """Runs as the columns of one table (``caption`` names it), each token a span as in ``tokens_html``; the token
    at position ``diverge`` (``playground.branches.first_difference``) is marked in every column (``dp-diverge``),
    and every token that differs from the reference run (``playground.branches.token_diff``) is marked
    ``dp-diff``; ``legend`` puts the colour legends above (``tokens_html``'s, for tokens coloured by their records).
    The Compare tab and the Branches tab both draw their runs with it."""
    if not columns:
        return '<div class="dp-tokens dp-empty" dir="auto">Run the comparison to see the texts side by side.</div>'
    differs = token_diff([[t.token_id for t in c.tokens] for c in columns])
    heads, cells = [], []
    for column, marks in zip(columns, differs):
        texts = shown([t.piece for t in column.tokens])
        spans = []
        for pos, (text, t, differ) in enumerate(zip(texts, column.tokens, marks)):
            cls = t.cls + (" dp-diff" if differ else "") + (" dp-diverge" if pos == diverge else "")
            title = (f"first difference (position {pos})\n" if pos == diverge else "") + t.title
            step = f' data-step="{t.step}" data-pos="{t.pos}"' if column.clickable and t.step >= 0 else ""
            spans.append(f'<span class="dp-tok {cls}"{step} title="{html.escape(title, quote=True)}">'
                         f"{html.escape(text)}</span>")
        heads.append(f'<th scope="col">{html.escape(column.label)}</th>')
        cells.append(f'<td><div class="dp-tokens" dir="auto">{"".join(spans)}</div></td>')
    where = ("no two differ where both wrote a token" if diverge is None
             else f"first difference at position {diverge} after the prompt, outlined in every column")
    if len(columns) > 1:
        where += "; underlined: tokens that differ from the first column's (in the first column: from the second's)"
    legends = "".join(legend_html(mode) for mode in COLOUR_BY) if legend else ""
    return legends + (f'<table class="dp-columns"><caption>{html.escape(caption)} · {html.escape(where)}</caption>'
            f'<thead><tr>{"".join(heads)}</tr></thead><tbody><tr>{"".join(cells)}</tr></tbody></table>')


def tokens_html(steps: Steps, row: int = 0, legend: bool = True, lead: list[str | Piece] | None = None) -> str:
    """HTML of the tokens generated so far for ``row`` (for the beam family: the current best hypothesis
    of returned row ``row``, uncoloured: beams carry scores, not one chosen probability); each token is a
    ``span`` with ``data-step``, ``data-pos`` and a ``title`` tooltip listing its alternatives. ``lead`` is the
    prefix a branch continues from (the parent's tokens, then the forced one), as pieces or plain texts."""
    beam = any(r.beam is not None for r in records(steps))  # ``row`` counts returned rows then, not beams
    tokens = run_tokens(steps, row)
    spans = _spans(tokens, [p if isinstance(p, Piece) else Piece(p) for p in lead or ()])
    if not spans:
        return ('<div class="dp-tokens dp-empty" dir="auto">Generated tokens will appear here, coloured by '
                'probability.</div>')
    out = "".join(legend_html(mode) for mode in COLOUR_BY) if legend and not beam else ""
    # The tokens come last and their div is left open (the browser closes it): the HTML of a step then starts with
    # the last step's, and Gradio streams it as an append of the new token's span, not the whole view again.
    return out + f'<div class="dp-tokens" dir="auto">{"".join(spans)}'


def alternatives_table(steps: Steps, step: int, row: int = 0, position: int = 0) -> list[list]:
    """Rows ``[token, id, prob, prob after, removed by]`` for every recorded candidate of one step (most
    probable first under the model; the chosen token starred); headers in ``ALTERNATIVES_HEADERS``.
    ``step`` and ``position`` are a token span's ``data-step`` and ``data-pos``."""
    rs = row_of(pick(records(steps), step), row, position)
    if rs is None:
        return []
    removed = removed_by(rs)
    chosen = set(rs.chosen)
    return [[("★ " if c.token_id in chosen else "") + visible(c.text), c.token_id, round(c.prob, 4),
             round(c.prob_after, 4), ", ".join(removed.get(c.token_id, []))]
            for c in sorted(considered(rs.candidates, chosen), key=lambda c: -c.prob)]


__all__ = ["CAPTION", "ALTERNATIVES_HEADERS", "BUCKETS", "ENTROPY_BUCKETS", "SURPRISAL_BUCKETS", "COLOUR_BY",
           "bucket_class", "entropy_class", "surprisal_class", "colour_classes", "legend_html", "tokens_html",
           "run_tokens", "Column", "cell", "columns_html",
           "alternatives_table"]

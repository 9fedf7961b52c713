"""The trees that read (issue 15, items 2, 6 and 7): the branch tree and the samples tree put token text on their
nodes with no two labels on one spot for 1, 2, 16 and 64 runs and no axis where none means anything; the token
view reads as the decoded text and runs right to left where the text does; no filler rows at probability 0."""

from __future__ import annotations

import html
import random
import re

import pytest

from core.records import Candidate, Origin, Piece, RowStep, StepRecord, Trace
from core.text import hex_bytes
from playground.branches import Branches, Sampled, sample_tree, spelled
from playground.figures import branches as B
from playground.figures.tokens import alternatives_table, tokens_html

PROMPT = [1, 5, 9]
WORDS = [" the", " cat", " sat", " on", " a", " mat", " and", " dog", " ran", " far", ",", "."]


def _step(step: int, token: int, text: str, piece: Piece | None = None, others=()) -> StepRecord:
    cands = [Candidate(token, text, 2.0, 0.6, 2.0, 0.7)] + [Candidate(t, x, 1.0, 0.2, 1.0, 0.3) for t, x in others]
    return StepRecord(step, "greedy", [RowStep(0, cands, [], [token], pieces=[piece or Piece(text)])])


def _trace(run_id: str, tokens: list[int], origin: Origin | None = None) -> Trace:
    prefix = origin.prefix if origin is not None else []
    steps = [_step(i, t, WORDS[t], others=[(o, WORDS[o]) for o in range(len(WORDS)) if o != t])
             for i, t in enumerate(tokens)]
    return Trace("greedy", {"do_sample": False}, [PROMPT + prefix], steps, [PROMPT + prefix + tokens],
                 ["".join(WORDS[t] for t in tokens)], run_id=run_id, origin=origin)


def session(n: int, seed: int = 0) -> Branches:
    """``n`` runs on one prompt: the first fresh, each other one continuing an earlier run with a forced token."""
    rng = random.Random(seed)
    branches = Branches()
    tokens_of: dict[str, list[int]] = {}
    for i in range(n):
        run_id = f"run{i:03d}"
        if i == 0 or rng.random() < 0.15:
            origin, own = None, [rng.randrange(len(WORDS)) for _ in range(6)]
        else:
            parent = rng.choice(list(tokens_of))
            before = tokens_of[parent]
            step = rng.randrange(len(before) - len(before) // 2 if before else 1)
            forced = rng.randrange(len(WORDS))
            prefix = before[:step] + [forced]
            origin, own = Origin(parent, step, 0, forced, prefix), [rng.randrange(len(WORDS)) for _ in range(4)]
        tokens_of[run_id] = (origin.prefix if origin else []) + own
        branches.add("greedy", f"Greedy {i}", "p", _trace(run_id, own, origin))
    return branches


def _runs(fig):
    return next(t for t in fig.data if t.meta == "runs")


@pytest.mark.parametrize("n", [1, 2, 16, 64])
def test_branch_tree_labels_never_share_a_line_and_name_the_tokens(n):
    branches = session(n)
    fig = B.branch_tree_figure(branches, tuple(PROMPT), None)
    runs = _runs(fig)
    assert len(runs.y) == n and len(set(runs.y)) == n  # a line per run: labels side by side never overlap
    root = next(t for t in fig.data if t.meta == "root")
    assert root.y[0] not in set(runs.y)
    for text, run_id in zip(runs.text, runs.customdata):
        entry = branches.get(run_id)
        assert text.startswith("#")
        assert WORDS[entry.tokens()[max(entry.offset - 1, 0)]].strip() in text.replace("␣", " ")
    # the figure is tall enough for a line of text per run
    lines = len(runs.y) + 1
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert plot_px / (abs(fig.layout.yaxis.range[0] - fig.layout.yaxis.range[1])) >= 14 * lines / (lines + 0.2)


@pytest.mark.parametrize("n", [1, 2, 16, 64])
def test_branch_tree_has_no_axis_that_means_nothing(n):
    fig = B.branch_tree_figure(session(n), tuple(PROMPT), None)
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert not (fig.layout.xaxis.title and fig.layout.xaxis.title.text)


def test_branch_tree_hover_tells_the_edge_and_spells_the_text():
    branches = session(2)
    child = branches.get("run001")
    fig = B.branch_tree_figure(branches, tuple(PROMPT), "run001")
    hover = dict(zip(_runs(fig).customdata, _runs(fig).hovertext))["run001"]
    assert "at step" in hover and spelled(child, branches)[:10].replace("&", "&amp;") in hover.replace("<br>", "\n")


def _samples(n: int, length: int = 12, seed: int = 0) -> list[list[Sampled]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens = [rng.choice([0, 1]) if i < 3 else rng.randrange(len(WORDS)) for i in range(length)]
        out.append([Sampled(t, WORDS[t], 0.5, 0.5, 1.0, Piece(WORDS[t])) for t in tokens])
    return out


@pytest.mark.parametrize("n", [1, 2, 16, 64])
def test_samples_tree_labels_fit_their_steps_on_a_line_of_their_own(n):
    root = sample_tree(_samples(n))
    fig = B.sample_tree_figure(root, [[1.0] * n for _ in range(12)])
    labels = next(t for t in fig.data if t.meta == "labels")
    spots = list(zip(labels.x, labels.y))
    assert len(set(spots)) == len(spots)  # no two labels at one place
    by_row: dict[float, list[tuple[int, str]]] = {}
    for x, y, text in zip(labels.x, labels.y, labels.text):
        by_row.setdefault(y, []).append((x, text))
    for row in by_row.values():  # on one line, a label ends before the next one starts
        row.sort()
        for (x0, text), (x1, _) in zip(row, row[1:]):
            assert len(text) <= B.CHARS_PER_STEP * (x1 - x0), (text, x0, x1)
    branches = next(t for t in fig.data if t.meta == "branches")
    distinct = {tuple(t.token_id for t in sample) for sample in _samples(n)}
    assert len(set(branches.y)) == len(distinct)  # a line per distinct continuation
    assert any(w.strip() in "".join(labels.text).replace("␣", " ") for w in WORDS)


def test_samples_tree_axes_only_where_they_measure():
    fig = B.sample_tree_figure(sample_tree(_samples(16)), [[1.0] * 16 for _ in range(12)])
    assert fig.layout.yaxis.visible is False  # the tree's rows are no quantity
    assert fig.layout.xaxis2.title.text == "step" and fig.layout.yaxis2.title.text == "entropy (nats)"


def test_samples_tree_joins_a_split_character_in_its_label():
    pieces = [Piece("", "<D8>"), Piece("ب")]
    runs = [[Sampled(10, "<D8>", 0.5, 0.5, 1.0, pieces[0]), Sampled(11, "ب", 0.5, 0.5, 1.0, pieces[1])]]
    fig = B.sample_tree_figure(sample_tree(runs), None)
    assert next(t for t in fig.data if t.meta == "labels").text == ("ب",)


def _span_texts(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<span class="dp-tok [^"]*" data-step[^>]*>(.*?)</span>', page)]


def test_token_view_reads_as_the_decoded_text_and_runs_right_to_left():
    """A character split across three tokens shows whole on the last; the view's direction follows the text."""
    data = "مرحبا".encode()
    pieces = [Piece("م"), Piece("", hex_bytes(data[2:3])), Piece("ر"), Piece("حبا")]
    steps = [_step(i, 100 + i, p.text + p.tail, p) for i, p in enumerate(pieces)]
    page = tokens_html(steps)
    assert 'dir="auto"' in page and "\ufffd" not in page
    assert "".join(_span_texts(page)) == "مرحبا" and len(_span_texts(page)) == len(pieces)
    # before the character completes its byte shows; once it has, on the token that completed it only
    assert _span_texts(tokens_html(steps[:2])) == ["م", hex_bytes(data[2:3])]
    assert _span_texts(page)[1:3] == ["", "ر"]


def test_alternatives_show_only_tokens_that_survived():
    cands = [Candidate(1, " yes", 3.0, 0.9, 3.0, 1.0), Candidate(2, " no", 1.0, 0.1, float("-inf"), 0.0),
             Candidate(3, "<reponame>", float("-inf"), 0.0, float("-inf"), 0.0)]
    steps = [StepRecord(0, "dola", [RowStep(0, cands, [], [1], pieces=[Piece(" yes")])])]
    rows = alternatives_table(steps, 0)
    assert [r[1] for r in rows] == [1, 2]
    assert "reponame" not in tokens_html(steps)


def test_a_reopened_branch_spells_its_prefix_from_the_records():
    from playground.branches import pieces
    from playground.runs import Run

    branches = session(2)
    child = branches.get("run001")
    run = Run.from_trace("main", child.label, child.trace, lead_pieces=pieces(child, branches)[:child.offset])
    assert run.texts[0] == spelled(child, branches)
    page = tokens_html(run.steps, lead=run.lead_texts)
    lead = [html.unescape(t) for t in re.findall(r'<span class="dp-tok dp-lead"[^>]*>(.*?)</span>', page)]
    assert lead == [p.text for p in pieces(child, branches)[:child.offset]] and len(lead) == child.offset

"""What a tab's text and status say, and when its figures are redrawn while the text streams."""

from __future__ import annotations

import math
import re
import time

from ..runs import Run, streaming

# A name in backticks, as messages name fields, files and repos (`max_new_tokens`, `owner/model`): these letters are
# markup neither in a code span nor in a toast's HTML
_NAME = re.compile(r"`([\w./-]+)`")
# What Markdown or HTML would read as markup: HTML's specials; links and images ([...]), code, emphasis (an underscore
# only where it can open or close one, so snake_case reads as typed), strikethrough, tables and escapes; the bare
# URLs and e-mail addresses that GitHub-flavoured Markdown makes links of; a block's mark at the start of a line
_MARKUP = re.compile(r"(?P<c>[&<>\[\]`*~|\\@]|(?<![^\W_])_|_(?![^\W_])|:(?=//)|(?<=[wW]{3})\.)"
                     r"|^(?P<lead>[ \t]*\d*)(?P<mark>[#+=-]|(?<=\d)[.)])", re.M)
_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _reference(char: str) -> str:
    return _ENTITY.get(char, f"&#{ord(char)};")


def plain(text: object) -> str:
    """``text`` as the page shows it letter for letter, in a ``gr.Markdown`` and in a toast (``gr.Warning``, whose
    message the page renders as HTML): for every message that may quote what a visitor sent (a share link, a kept
    setting, a Hub id, a ValueError's ``got ...``). Gradio's ``sanitize_html`` is no help here: it strips scripts but
    keeps ``<img src>`` and links, and Markdown makes its own links and images before it runs. Each character that
    would be markup (``_MARKUP``) becomes a character reference, which neither Markdown nor HTML reads as markup and
    both show as the character; only a name in backticks (letters, digits and ``_ . / -``) stays a code span. The
    rest is left as written, so that a message without markup reads the same in the API's answer."""
    parts = _NAME.split(str(text))  # odd parts: the names inside backticks
    return "".join(f"`{part}`" if i % 2 else _MARKUP.sub(
        lambda m: _reference(m["c"]) if m["c"] else m["lead"] + _reference(m["mark"]), part)
        for i, part in enumerate(parts))


def join_texts(texts: list[str]) -> str:
    """One text as it is; several returned sequences numbered as ``generate`` ranks them."""
    if len(texts) <= 1:
        return texts[0] if texts else ""
    return "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts))


STOPPED = {"cancelled": " (stopped)", "time cap": " (stopped at the server's time limit; it ends every run there)"}


def mean_entropy(run: Run) -> float | None:
    """The mean entropy (nats) of the distributions a run's tokens came from: every recorded row of every step (None
    when no step recorded one: a served model's records carry none)."""
    values = [rs.entropy for rec in run.steps for rs in rec.rows if rs.entropy is not None]
    return sum(values) / len(values) if values else None


def entropy_note(run: Run) -> str:
    """", mean entropy H nats, effective vocabulary e^H tokens" (e^H: as many equally likely tokens as the mean
    uncertainty amounts to), or "" without entropies."""
    h = mean_entropy(run)
    return "" if h is None else f", mean entropy {h:.2f} nats, effective vocabulary {math.exp(h):.1f} tokens"


def status_line(runs: dict[str, Run], note: str = "", seeded: bool = False) -> str:
    """One line per run: mode, tokens, speed, mean entropy and effective vocabulary, how it ended; with ``seeded``,
    the seed it drew from."""
    parts = []
    for run in runs.values():
        state = (STOPPED.get(run.stopped, f" ({run.stopped})") if run.stopped else "" if run.done
                 else " (running)" if run.steps else " (waiting)")
        first = f", first token {run.first_token_s:.2f} s" if run.first_token_s is not None else ""
        mode = f" ({plain(f'`{run.steps[0].strategy}`')})" if run.steps and run.steps[0].strategy else ""
        seed = f", seed {run.seed}" if seeded and run.seed is not None else ""
        # a label may come from a loaded trace or tree file, a note may quote a setting: both as text
        parts.append(f"**{plain(run.label)}**{mode}: {run.new_tokens} tokens in {run.elapsed_s:.2f} s "
                     f"({run.tokens_per_s:.1f} tokens/s{first}{seed}){entropy_note(run)}{state}")
    if note:
        parts.append(f"_{plain(note)}_")
    return "  \n".join(parts)


def error_line(err: Exception) -> str:
    """The status of a run that did not start; the error's text (which often quotes the value it refused) as text."""
    return f"Not run: {plain(err)}"


class Frames:
    """Says which of a run's streamed steps go out to the browser: the first at once (the time to first token), then
    none sooner than ``frame`` seconds after the last (``policy.frame_seconds``); the final output always goes."""

    def __init__(self, frame: float):
        self.frame = frame
        self.last: float | None = None

    def due(self) -> bool:
        now = time.perf_counter()
        if self.last is not None and now - self.last < self.frame:
            return False
        self.last = now
        return True


class Throttle:
    """Says when to redraw a run's figures while its text streams: never with the first token (it goes out as text
    alone, at once), then no more often than every ``interval`` seconds, and only as often as redrawing takes at
    most ``share`` of the wall time, split among the runs streaming in this process (``runs.streaming()``): every
    visitor's figures are drawn under the one GIL the model's forwards also need, so one visitor's redraws slow
    every stream. The final output always draws them."""

    def __init__(self, interval: float = 1.0, share: float = 0.1):
        self.interval, self.share = interval, share
        self.last: float | None = None
        self.cost = 0.0

    def due(self) -> bool:
        now = time.perf_counter()
        if self.last is None:
            self.last = now
            return False
        return now - self.last >= max(self.interval, self.cost * streaming() / self.share)

    def drawn(self, started: float) -> None:
        self.last = time.perf_counter()
        self.cost = self.last - started

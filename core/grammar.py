"""Structured output through xgrammar (the engine vLLM and SGLang use): a JSON Schema, a regular expression or an
EBNF grammar becomes a token mask applied at every step, with greedy decoding, sampling and the beam family alike.

Fields (``GenerationConfig`` attributes; transformers keeps unknown ones), at most one of them set:
- ``json_schema``: a JSON Schema (a dict or its JSON text); the output is compact JSON (no free whitespace,
  separators "," and ":"), so that small models finish instead of wandering in indentation;
- ``regex``: a regular expression the whole output must match;
- ``grammar``: an EBNF grammar (xgrammar's dialect of GBNF, ``root ::= ...``).

State per row. A ``GrammarMatcher`` holds the parse of one sequence. Rows are identified by their generated tokens,
not by their index: beam search moves rows between beams and assisted decoding verifies drafts position by
position, so each call looks up the matcher of a row's tokens minus the last one, forks it
(``GrammarMatcher.fork``) and feeds it that last token. Only the matchers of the current call's rows are kept,
and a row whose prefix is no longer kept is parsed again from the start. A row the grammar rejected (a beam that
carried a -inf candidate, the padding after a finished row) may only end: EOS.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import Any, Callable

import torch
from transformers import LogitsProcessor

from . import scheduler

FIELDS: dict[str, Any] = {"json_schema": None, "regex": None, "grammar": None}
COMPACT = (",", ":")  # JSON separators without spaces
# What a compiler keeps of the grammars it compiled, at most: each visitor's grammar is another entry, so an unbounded
# cache grows with every distinct one sent (xgrammar evicts the least recently used past this)
CACHE_LIMIT_BYTES = 64 * 2 ** 20


def _xgr():
    try:
        import xgrammar
    except ImportError:  # an optional dependency for the core; requirements.txt installs it
        raise ValueError("`json_schema`, `regex` and `grammar` must be unset when xgrammar is not installed "
                         "(pip install xgrammar)") from None
    return xgrammar


def requested(generation_config) -> dict[str, Any]:
    """The grammar fields ``generation_config`` sets (unset: ``None`` or empty)."""
    return {f: getattr(generation_config, f, None) for f in FIELDS
            if getattr(generation_config, f, None) not in (None, "")}


def validate(generation_config) -> None:
    """At most one grammar field, each of the right type; a JSON Schema given as text must parse."""
    given = requested(generation_config)
    if len(given) > 1:
        raise ValueError(f"`{list(given)[1]}` must be unset when `{list(given)[0]}` is set (one grammar per run); "
                         f"got both")
    for field, value in given.items():
        if field == "json_schema":
            schema_of(value)
        elif not isinstance(value, str):
            raise ValueError(f"`{field}` must be a string; got {value!r}")


def schema_of(value) -> dict | bool:
    """A JSON Schema from a dict or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"`json_schema` must be a JSON Schema (a JSON object); got {value[:80]!r} "
                             f"({err.msg} at position {err.pos})") from None
    if not isinstance(value, (dict, bool)):
        raise ValueError(f"`json_schema` must be a JSON Schema (a JSON object); got {value!r}")
    return value


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _compiler(tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
    """One ``GrammarCompiler`` per tokenizer and vocabulary (read-only once built; it caches compiled grammars)."""
    xgr = _xgr()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids) or None)
    return xgr.GrammarCompiler(info, max_threads=1, cache_limit_bytes=CACHE_LIMIT_BYTES)


def compile_grammar(field: str, value, tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
    """The ``CompiledGrammar`` of one grammar field, or a ``ValueError`` naming the field and xgrammar's reason."""
    if tokenizer is None:
        raise ValueError(f"`{field}` needs `tokenizer=` to map the grammar onto tokens; got no tokenizer")
    with _LOCK:
        compiler = _compiler(tokenizer, vocab_size, stop_ids)
    try:
        if field == "json_schema":
            return compiler.compile_json_schema(json.dumps(schema_of(value)), any_whitespace=False,
                                                separators=COMPACT)
        if field == "regex":
            return compiler.compile_regex(value)
        return compiler.compile_grammar(value)
    except RuntimeError as err:
        kind = {"json_schema": "a JSON Schema", "regex": "a regular expression", "grammar": "an EBNF grammar"}[field]
        raise ValueError(f"`{field}` must be {kind} xgrammar can compile; got {str(value)[:80]!r} ({err})") from None


class GrammarLogitsProcessor(LogitsProcessor):
    """Sets every token the grammar does not allow next to -inf (xgrammar's token bitmask).

    ``prompt_length`` is where the generated tokens start in ``input_ids``; ``eos_token_ids`` are the tokens a
    rejected row may still take. See the module docstring for the state kept per row.

    Shapes: ``input_ids`` [B, S], ``scores`` [B, V] -> [B, V].
    """

    stage = "grammar"

    def __init__(self, compiled, prompt_length: int, eos_token_ids: list[int]):
        xgr = _xgr()
        self._xgr = xgr
        self.prompt_length = prompt_length
        self.eos_token_ids = list(eos_token_ids)
        self.root = xgr.GrammarMatcher(compiled)
        self.matchers: dict[tuple[int, ...], Any] = {(): self.root}  # generated tokens -> matcher (None: rejected)

    def matcher(self, generated: tuple[int, ...]):
        """The matcher after ``generated`` (``None`` when the grammar rejected one of them)."""
        known = len(generated)
        while generated[:known] not in self.matchers:
            known -= 1
        matcher = self.matchers[generated[:known]]
        for i in range(known, len(generated)):
            if matcher is not None and not matcher.is_terminated():
                matcher = matcher.fork()
                if not matcher.accept_token(generated[i]):
                    matcher = None
            self.matchers[generated[:i + 1]] = matcher
        return matcher

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32, copy=True)  # [B, V]
        batch, vocab = scores.shape
        bitmask = self._xgr.allocate_token_bitmask(batch, vocab)  # [B, ceil(V / 32)] int32
        rows = [tuple(r) for r in input_ids[:, self.prompt_length:].tolist()]
        ended = []
        for i, generated in enumerate(rows):
            matcher = self.matcher(generated)
            if matcher is None or matcher.is_terminated():
                ended.append(i)
            else:
                matcher.fill_next_token_bitmask(bitmask, i)
        keep = set(rows)
        self.matchers = {k: v for k, v in self.matchers.items() if k in keep or k == ()}
        self._xgr.apply_token_bitmask_inplace(scores, bitmask.to(scores.device), vocab_size=vocab)
        if ended:  # only EOS: a finished or rejected row ends (never a row of all -inf, whose softmax is NaN)
            index = torch.tensor(ended, device=scores.device)[:, None]  # [E, 1]
            eos = torch.tensor([t for t in self.eos_token_ids if t < vocab], dtype=torch.long,
                               device=scores.device)[None, :]  # [1, n_eos]
            kept = scores[index, eos]  # [E, n_eos]: the ended rows were not masked above
            scores[index[:, 0]] = float("-inf")
            scores[index, eos] = kept
        return scores


def within(deadline: float | None, field: str, compile: Callable[[], Any]):
    """``compile()``, given until ``deadline`` (``time.monotonic()``): past it a ``TimeoutError`` naming ``field``. A
    compile is one call into xgrammar that nothing can interrupt, so it runs in a thread of its own, left to finish
    (its size is bounded by ``core.limits``) while the run answers; in ``core.engine``'s loop the other runs go on
    meanwhile."""
    if deadline is None:
        return compile()
    try:
        return scheduler.aside(compile, deadline, name=f"compile {field}")
    except scheduler.Late:
        raise TimeoutError(f"`{field}` did not compile within the run's time cap; a shorter or simpler one compiles "
                           "faster") from None


def build(generation_config, *, tokenizer=None, vocab_size: int, prompt_length: int,
          deadline: float | None = None) -> GrammarLogitsProcessor | None:
    """The grammar stage of ``generation_config``, or ``None`` when it sets no grammar field; its compile ends by
    ``deadline`` (``within``)."""
    validate(generation_config)
    given = requested(generation_config)
    if not given:
        return None
    ((field, value),) = given.items()
    eos = getattr(generation_config, "_eos_token_tensor", None)
    eos_ids = [] if eos is None else [int(t) for t in eos.reshape(-1).tolist()]
    compiled = within(deadline, field, lambda: compile_grammar(field, value, tokenizer, vocab_size, tuple(eos_ids)))
    return GrammarLogitsProcessor(compiled, prompt_length, eos_ids)


__all__ = ["FIELDS", "GrammarLogitsProcessor", "build", "validate", "compile_grammar", "schema_of", "requested"]

"""Runs on a vLLM server, handed back as the core's own records and stream events, so that every figure drawn from
logprobs works unchanged.

Pipeline of ``stream`` (``generate`` is the thin wrapper that keeps the last event's result):
1. the config: the call's fields over ``generation_config``, checked (``core.remote.fields``): what a vLLM server
   cannot run raises ``ValueError`` before any request, and only the fields it reads are sent;
2. the prompt: one row of token ids (a branch's prefix included), sent as ids, so nothing is re-tokenized;
3. the strategy registered for the mode (``ENGINE_STRATEGIES``: greedy and sampling stream one completion per
   seed, beam search steps with logprobs as vLLM's own beam search does) yields one ``StepRecord`` per step;
4. each record becomes a ``StreamEvent`` with the text so far; the last one carries a ``GenerationResult`` whose
   ``Trace`` is laid out as an in-process run's.

What the records hold: vLLM returns log-probabilities, not logits, and by default those of the model's raw
distribution (``logprobs_mode="raw_logprobs"``), before temperature, penalties and the top-k/p cuts. So a
``Candidate``'s ``logit`` and ``score`` are that log-probability and ``prob`` and ``prob_after`` its probability;
``effects`` (what each processor did) and ``entropy`` (it needs the whole vocabulary) stay empty. The candidates
of a row are the ``top_n`` most likely tokens and the chosen one.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import zip_longest
from typing import Callable, Iterator, NamedTuple

import torch
from transformers import GenerationConfig

from ..loop import GenerationResult, RunContext, StreamEvent
from ..observe import config_dict
from ..records import Candidate, Origin, Piece, RowStep, StepRecord, Trace
from ..strategies.beam_tree import ROOT, BeamTree
from . import client, fields

MAX_LOGPROBS = 50  # the server's --max-logprobs (serve.command): candidates per row at most
SEED_MODULUS = 2**63  # vLLM takes seeds in int64's range; torch's seeds go to 2**64


@dataclass(frozen=True)
class EngineModel:
    """One model a vLLM server serves: what a run needs of it. ``name`` is how the playground lists it."""

    server: client.Server
    model_id: str  # the server's name for it (``/v1/models``)
    eos_token_id: int | None  # the id vLLM's beam search finishes a hypothesis on
    chat_template: str | None = None

    @property
    def name(self) -> str:
        return f"vllm:{self.model_id}"


def connect(url: str, timeout_s: float = client.DEFAULT_TIMEOUT_S) -> list[EngineModel]:
    """The models the vLLM server at ``url`` (``http://host:port/v1``) serves. The EOS id and chat template come from
    its ``/tokenizer_info`` (``--enable-tokenizer-info-endpoint``); without that route they are None (beam search
    then refuses to run)."""
    server = client.Server(client.check_url(url), timeout_s)
    try:
        info = client.get(server, "/tokenizer_info")
    except client.EngineError:  # the route is off on this server
        info = {}
    out = []
    for model_id in client.models(server):
        eos = info.get("eos_token")
        eos_id = None
        if eos:
            ids = client.post(server, "/tokenize", {"model": model_id, "prompt": eos,
                                                    "add_special_tokens": False})["tokens"]
            eos_id = ids[0] if len(ids) == 1 else None
        out.append(EngineModel(server, model_id, eos_id, info.get("chat_template")))
    return out


class EngineRun:
    """What one run needs besides the request: the model, how many candidates to record, the cancel event and
    deadline, token texts (cached per run), and the records so far."""

    def __init__(self, model: EngineModel, *, top_n: int, cancel: threading.Event, max_seconds: float | None):
        self.model = model
        self.top_n = top_n
        self.cancel = cancel
        self.deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        self.stopped = ""
        self.mode = ""
        self.steps: list[StepRecord] = []
        self.sequences: list[list[int]] = []  # the new tokens of each returned row, set by the strategy
        self.texts: list[str] = []
        self.t0 = time.perf_counter()
        self._texts: dict[int, str] = {}

    should_stop = RunContext.should_stop  # the in-process runs' rule: cancelled, or past the deadline
    seconds_left = RunContext.seconds_left

    def timeout(self) -> float:
        """How long one read from the server may wait: its timeout, cut to the deadline."""
        left = self.seconds_left()
        return max(min(self.model.server.timeout_s, math.inf if left is None else left), 1.0)

    def payload(self, **request) -> dict:
        """A completion request for this run's model, asking for token ids in the logprobs."""
        return {"model": self.model.model_id, "return_tokens_as_token_ids": True, **request}

    def text(self, token_id: int) -> str:
        if token_id not in self._texts:
            self._texts[token_id] = self.decode([token_id], skip_special_tokens=False)
        return self._texts[token_id]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The server's detokenization of ``ids`` (the EOS left out when ``skip_special_tokens``)."""
        eos = self.model.eos_token_id
        ids = [i for i in ids if not (skip_special_tokens and i == eos)]
        if not ids:
            return ""
        return client.post(self.model.server, "/detokenize", {"model": self.model.model_id, "tokens": ids},
                           timeout=self.timeout())["prompt"]

    def candidates(self, top: dict[int, float]) -> list[Candidate]:
        """One row's candidates from its ``{token id: logprob}``, most likely first (see the module docstring)."""
        ranked = sorted(top.items(), key=lambda item: -item[1])
        return [Candidate(t, self.text(t), lp, math.exp(lp), lp, math.exp(lp)) for t, lp in ranked]

    def emit(self, rows: list[RowStep], **details) -> StepRecord:
        record = StepRecord(step=len(self.steps), strategy=self.mode, rows=rows,
                            elapsed_s=time.perf_counter() - self.t0, **details)
        self.steps.append(record)
        return record


def top_logprobs(entry: dict | None) -> dict[int, float]:
    """``{"token_id:5": -0.1, ...}`` (``return_tokens_as_token_ids``) -> ``{5: -0.1, ...}``."""
    return {token_id(k): float(v) for k, v in (entry or {}).items()}


def token_id(token: str) -> int:
    return int(token.removeprefix("token_id:"))


# --- greedy and sampling ---------------------------------------------------------------------------------
class Token(NamedTuple):
    """One generated token of one row, as a completion stream hands it over."""

    row: int
    token_id: int
    top: dict[int, float]  # its step's candidates: token id -> logprob
    text: str  # the text it added (vLLM's detokenization; may be empty until a character completes)
    finish: str | None  # why the row ended with it ("stop", "length"), None while it runs


def stream_tokens(run: EngineRun, request: dict, row_of: Callable[[int], int]) -> Iterator[Token]:
    """The tokens of one streamed completion, each choice ``index`` mapped to a returned row by ``row_of``. A chunk
    holding several tokens gives its text and finish reason to the last; a chunk with none finishes its row."""
    for chunk in client.stream(run.model.server, "/v1/completions", run.payload(**request), timeout=run.timeout()):
        for choice in chunk.get("choices", []):
            logprobs = choice.get("logprobs") or {}
            tokens = logprobs.get("tokens") or []
            tops = logprobs.get("top_logprobs") or [None] * len(tokens)
            last = len(tokens) - 1
            for i, (token, top) in enumerate(zip(tokens, tops)):
                yield Token(row_of(choice["index"]), token_id(token), top_logprobs(top),
                            choice.get("text", "") if i == last else "",
                            choice.get("finish_reason") if i == last else None)
            if not tokens and choice.get("finish_reason"):
                yield Token(row_of(choice["index"]), -1, {}, choice.get("text", ""), choice["finish_reason"])


def sample_steps(run: EngineRun, prompt: list[int], cfg: GenerationConfig, seeds: list[int] | None,
                 words: Callable[[list[int]], str]) -> Iterator[StepRecord]:
    """Greedy and sampling. One seed (or greedy): one streamed completion of ``num_return_sequences`` rows; a seed
    per row (Sample N): one completion per seed, read in turn, so that row i equals the run of seed i alone. A step
    is recorded once every running row has its next token."""
    request = {"prompt": prompt, "logprobs": min(run.top_n, MAX_LOGPROBS),
               **fields.sampling_request(cfg, run.mode, words)}
    if seeds is None or len(seeds) == 1:                                              # 1. the completions
        rows = request["n"]
        sources = [stream_tokens(run, {**request, **({"seed": seeds[0]} if seeds else {})}, lambda index: index)]
    else:
        rows = len(seeds)
        sources = [stream_tokens(run, {**request, "n": 1, "seed": seed}, lambda index, row=row: row)
                   for row, seed in enumerate(seeds)]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    texts = [""] * rows
    pending: list[list[Token]] = [[] for _ in range(rows)]
    finished = [False] * rows
    try:
        for batch in zip_longest(*sources):                                            # 2. one token per source
            for token in (t for t in batch if t is not None):
                texts[token.row] += token.text
                finished[token.row] = finished[token.row] or token.finish is not None
                if token.token_id >= 0:
                    pending[token.row].append(token)
            while any(pending) and all(p or done for p, done in zip(pending, finished)):  # 3. a complete step
                step = [p.pop(0) if p else None for p in pending]
                for t in step:
                    if t is not None:
                        tokens[t.row].append(t.token_id)
                yield run.emit([RowStep(row, run.candidates(t.top) if t else [], [], [t.token_id] if t else [])
                                for row, t in enumerate(step)])
            if run.should_stop() or all(finished):
                break
    finally:
        for source in sources:  # closes each connection: the server aborts what is left
            source.close()
    run.sequences, run.texts = tokens, texts


# --- beam search ---------------------------------------------------------------------------------------------
class Hypothesis(NamedTuple):
    tokens: list[int]  # new tokens (a finished one without its EOS, as vLLM returns it)
    cum_logprob: float
    node: int  # its ``BeamNode``


def beam_score(prompt_len: int, hyp: Hypothesis, length_penalty: float) -> float:
    """vLLM's ranking of a hypothesis (``get_beam_search_score``): its cumulative logprob over its length to the
    power ``length_penalty``, where the length counts the prompt's tokens too (vLLM's own beams hold the prompt)."""
    return hyp.cum_logprob / (max(prompt_len + len(hyp.tokens), 1) ** length_penalty)


def beam_steps(run: EngineRun, prompt: list[int], cfg: GenerationConfig, seeds, words) -> Iterator[StepRecord]:
    """vLLM's beam search (``BeamSearchOnlineMixin.beam_search``), one step per request so that the tree is recorded
    where it is decided. Each step, in order:
    a. one greedy completion of one token per running beam, with the ``2 * num_beams`` most likely next tokens;
    b. every (beam, token) is a candidate at the beam's logprob plus the token's; one ending in EOS finishes;
    c. the ``num_beams`` best other candidates are the next running beams (the rest are pruned);
    d. the record: the tree's nodes and the current best hypotheses.
    After ``max_new_tokens`` steps (or when no beam runs) the finished and running hypotheses are ranked by
    ``beam_score`` and the best ``num_return_sequences`` returned."""
    num_beams, eos = int(cfg.num_beams), run.model.eos_token_id
    fields.check_range("max_new_tokens", cfg.max_new_tokens, 1, integer=True)
    if eos is None:
        raise ValueError("beam search on the vLLM engine needs the model's EOS id: start the server with "
                         "--enable-tokenizer-info-endpoint")
    length_penalty = float(fields.value_or(cfg.length_penalty, 1.0))
    returned = int(fields.value_or(cfg.num_return_sequences, 1))
    if not 1 <= returned <= num_beams:
        raise ValueError(f"`num_return_sequences` must be in [1, {num_beams}] (`num_beams`); got {returned}")
    tree = BeamTree(1, num_beams, ServerTexts(run.text))
    beams, finished = [Hypothesis([], 0.0, ROOT)], []

    def ranked() -> list[Hypothesis]:
        return sorted(finished + beams, key=lambda h: -beam_score(len(prompt), h, length_penalty))

    for _ in range(int(cfg.max_new_tokens)):
        if run.should_stop():
            break
        answer = client.post(run.model.server, "/v1/completions", run.payload(                # a. one token each
            prompt=[prompt + b.tokens for b in beams], max_tokens=1, temperature=0.0, logprobs=2 * num_beams),
            timeout=run.timeout())
        tops = [top_logprobs(c["logprobs"]["top_logprobs"][0])
                for c in sorted(answer["choices"], key=lambda c: c["index"])]
        candidates: list[tuple[float, int, int, int]] = []  # (cum. logprob, token, node, beam)  b. candidates
        for slot, (beam, top) in enumerate(zip(beams, tops)):
            for token, logprob in top.items():
                cum = beam.cum_logprob + logprob
                hyp_len = len(beam.tokens) + (0 if token == eos else 1)
                node = tree.expand(0, slot, token, cum, cum / max(len(prompt) + hyp_len, 1) ** length_penalty)
                if token == eos:
                    hyp = Hypothesis(beam.tokens, cum, node)
                    finished.append(hyp)
                    tree.mark(node, "finished", final_score=beam_score(len(prompt), hyp, length_penalty))
                else:
                    candidates.append((cum, token, node, slot))
        kept = sorted(candidates, key=lambda c: -c[0])[:num_beams]                            # c. the next beams
        beams = []
        for slot, (cum, _token, node, _parent) in enumerate(kept):
            tree.mark(node, "kept")
            tree.set_running(0, slot, node)
            beams.append(Hypothesis(tree.path(node), cum, node))
        best = tree.rows([h.node for h in ranked()[:returned]])                               # d. the record
        yield run.emit([RowStep(slot, run.candidates(top), [], [c[1] for c in kept if c[3] == slot])
                        for slot, top in enumerate(tops)], beam=tree.flush(), best=best.paths, best_nodes=best.nodes)
        if not beams:
            break
    run.sequences = [h.tokens for h in ranked()[:returned]]
    run.texts = [run.decode(t) for t in run.sequences]


class ServerTexts:
    """What ``BeamTree`` asks of a run's ``core.text.TokenTexts``, from the server's own detokenization: each token's
    text alone (the tokenizer is the server's; a character split across tokens reads as the server spells its
    parts)."""

    def __init__(self, text: Callable[[int], str]):
        self.text = text

    def after(self, pending: bytes, token_id: int) -> tuple[Piece, bytes]:
        return Piece(self.text(token_id)), b""


ENGINE_STRATEGIES: dict[str, Callable[..., Iterator[StepRecord]]] = {
    "greedy_search": sample_steps, "sample": sample_steps, "beam_search": beam_steps}


# --- the public face ---------------------------------------------------------------------------------------------
def run_seeds(mode: str, seed: int | None, generator) -> list[int] | None:
    """The vLLM seed of each row: None for greedy and beam search (nothing is drawn); else the generator's initial
    seed (one per row for a list), the ``seed`` given, or a fresh one, so that every sampled run can be replayed."""
    if mode != "sample":
        return None
    if isinstance(generator, (list, tuple)):
        return [g.initial_seed() % SEED_MODULUS for g in generator]
    if isinstance(generator, torch.Generator):
        return [generator.initial_seed() % SEED_MODULUS]
    return [(seed if seed is not None else secrets.randbits(62)) % SEED_MODULUS]


def stream(model: EngineModel, input_ids, generation_config: GenerationConfig | None = None, *, top_n: int = 10,
           lens: bool = False, watch: list[int] | tuple[int, ...] = (), cancel: threading.Event | None = None,
           max_seconds: float | None = None, generator=None, seed: int | None = None, origin: Origin | None = None,
           attention_mask=None, tokenizer=None, **kwargs) -> Iterator[StreamEvent]:
    """``core.stream`` for a model on a vLLM server (steps 1-4 of the module docstring). ``input_ids``: one row of
    token ids (a [1, S] tensor or a list). ``generator`` gives the seed; a list of them (Sample N, the prompt repeated
    once per row) one seed per row. ``attention_mask`` and ``tokenizer`` are taken for ``core.stream``'s signature
    (the server has its own tokenizer)."""
    cfg = fields.merged(generation_config, kwargs)                                             # 1. the config
    mode = fields.mode_of(cfg)
    if lens:
        raise fields.needs_model(fields.LENS)
    if watch:
        raise fields.needs_model(fields.WATCH)
    prompt = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)  # 2. the prompt
    if prompt and isinstance(prompt[0], list):
        # Sample N repeats the prompt once per seed (``generator`` a list): one prompt, a completion per seed
        per_seed = isinstance(generator, (list, tuple)) and len(generator) == len(prompt)
        if any(row != prompt[0] for row in prompt) or (len(prompt) > 1 and not per_seed):
            raise ValueError(f"`input_ids` must hold one prompt for the vLLM engine (or one row per generator of "
                             f"Sample N, all equal); got {len(prompt)} rows")
        prompt = prompt[0]
    if not prompt:
        raise ValueError("`input_ids` must hold at least one token; got an empty prompt")
    if not 1 <= top_n <= MAX_LOGPROBS:
        raise ValueError(f"`top_n` must be in [1, {MAX_LOGPROBS}] (the server's --max-logprobs); got {top_n}")
    run = EngineRun(model, top_n=top_n, cancel=cancel or threading.Event(), max_seconds=max_seconds)
    run.mode = mode
    seeds = run_seeds(mode, seed, generator)
    strategy = ENGINE_STRATEGIES[mode]
    tokens: list[list[int]] = []
    words = run.decode
    for record in strategy(run, prompt, cfg, seeds, words):                                     # 3. the steps
        if record.best is not None:
            tokens = [list(t) for t in record.best]
            texts = [run.decode(t) for t in tokens]
        else:
            tokens += [[] for _ in range(len(record.rows) - len(tokens))]
            for row in record.rows:
                tokens[row.row].extend(row.chosen)
            texts = [run.decode(t) for t in tokens]
        yield StreamEvent(record, [list(t) for t in tokens], texts)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else (model.eos_token_id or 0)     # 4. the result
    width = max((len(s) for s in run.sequences), default=0)
    sequences = [prompt + s + [pad] * (width - len(s)) for s in run.sequences]
    trace = Trace(strategy=mode, config=config_dict(cfg), prompt_ids=[prompt],
                  steps=run.steps, sequences=sequences, texts=run.texts, model_name=model.name,
                  elapsed_s=time.perf_counter() - run.t0, seed=seeds[0] if seeds and len(seeds) == 1 else None,
                  stopped=run.stopped, run_id=uuid.uuid4().hex[:12], origin=origin)
    result = GenerationResult(torch.tensor(sequences, dtype=torch.long), trace, run.stopped)
    yield StreamEvent(None, [list(s) for s in run.sequences], list(run.texts), done=True, result=result,
                      stopped=run.stopped)


def generate(model: EngineModel, input_ids, generation_config: GenerationConfig | None = None,
             **kwargs) -> GenerationResult:
    """``stream`` run to its end: the result of its last event."""
    for event in stream(model, input_ids, generation_config, **kwargs):
        if event.done:
            return event.result
    raise RuntimeError("the engine's stream ended without a result")  # stream always ends with one


__all__ = ["EngineModel", "connect", "stream", "generate", "ENGINE_STRATEGIES", "MAX_LOGPROBS"]

"""The steps every decoding loop repeats, written once: the forward of each step (the prefill's outputs first,
then one token per row against the KV cache), the tail of the one-token-per-row loops (padding finished rows,
append, record, stream, stopping) and the cache reorder of the beam family.

A loop built from them reads (transformers ``_sample``):

    forward = Forward(model, input_ids, generation_config, model_kwargs)
    rows = Rows(input_ids, generation_config, stopping_criteria, ctx.observer)
    while True:
        outputs, model_kwargs = forward(input_ids, model_kwargs)      # a. logits of the next token  [B, V]
        next_tokens = ...                                            # b./c. processors, selection   [B]
        input_ids, done = rows.append(input_ids, next_tokens, record)  # d. append, record, stream, stop
        if done:
            break

where ``record(recording, chosen)`` builds and emits the step's record (``core.observe``: called only while recording).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import torch
from transformers.generation.utils import ALL_CACHE_NAMES

from ..scheduler import PREFILL_CHUNK, PREFILL_TOKENS, Seat, current_seat

if TYPE_CHECKING:  # core.observe imports the strategy registry
    from ..observe import Observer, Recording


class Stopped(Exception):
    """The run was cancelled, or ran past its deadline, before its prefill ended: it has no token to return."""


# the calling run's own (per thread, and per greenlet where ``core.engine.loop`` steps runs as greenlets in one thread):
_should_stop: ContextVar[Callable[[], bool] | None] = ContextVar("should_stop", default=None)  # how to tell it stops
_prefilling: ContextVar[bool] = ContextVar("prefilling", default=False)  # whether its forward now is the prefill's
_hooked: "weakref.WeakSet" = weakref.WeakSet()  # models carrying ``_stop_before_forward``
_hook_lock = threading.Lock()


@contextlib.contextmanager
def stoppable(model, should_stop: Callable[[], bool]) -> Iterator[None]:
    """Inside, the calling thread's prefill forwards (``prefilling``) raise ``Stopped`` once ``should_stop()`` is true:
    a long prompt prefills in chunks, each one forward, and the cancel and the deadline are looked at between them.
    The hook on the model is process-wide and keyed by thread: it holds nothing of a run."""
    with _hook_lock:
        if model not in _hooked:
            # first of the pre-hooks: a stop raised here takes no lock the scheduler's own hook would take
            model.register_forward_pre_hook(_stop_before_forward, prepend=True)
            _hooked.add(model)
    token = _should_stop.set(should_stop)
    try:
        yield
    finally:
        _should_stop.reset(token)


@contextlib.contextmanager
def prefilling() -> Iterator[None]:
    token = _prefilling.set(True)
    try:
        yield
    finally:
        _prefilling.reset(token)


def _stop_before_forward(module, args):
    should_stop = _should_stop.get()
    if _prefilling.get() and should_stop is not None and should_stop():
        raise Stopped()


def prefill_chunk(input_ids, seated: bool) -> int | None:
    """Tokens per prefill chunk for ``input_ids`` [B, S], or None for one forward: past ``PREFILL_TOKENS`` tokens over
    all rows, chunks of that many tokens in all (so a stop waits for one chunk at most); a seated run's prompt past
    ``PREFILL_CHUNK`` tokens, chunks of that length at most (other runs' steps go between them)."""
    rows, length = input_ids.shape[0], input_ids.shape[-1]
    chunk = None
    if rows * length > PREFILL_TOKENS:
        chunk = max(16, PREFILL_TOKENS // rows)
    if seated and length > PREFILL_CHUNK:
        chunk = min(chunk or PREFILL_CHUNK, PREFILL_CHUNK)
    return chunk if chunk is not None and chunk < length else None


def forward_last_token(model, input_ids, model_kwargs: dict, seat: Seat | None = None):
    """One decoding forward: each row's last token against the KV cache (the whole sequence without a
    cache), as transformers' loops do after the prefill. Returns the model outputs. With a ``seat`` (the run is
    seated at the model's ``core.scheduler``) the step goes to the scheduler, batched with other runs' steps."""
    next_sequence_length = 1 if model_kwargs["use_cache"] else None
    model_inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=next_sequence_length,
                                                       **model_kwargs)
    if seat is not None:
        return seat.step(model_inputs)
    return model(**model_inputs, return_dict=True)


class Forwarded(NamedTuple):
    outputs: Any  # the model's outputs for this step (logits [B, S or 1, V])
    model_kwargs: dict  # cache, attention mask and positions updated for the next step


class Forward:
    """The model's outputs, step after step: the prefill (the whole prompt in one forward, run at construction)
    gives the first step's; every later call forwards each row's last token. Each call also updates
    ``model_kwargs`` as transformers does after a forward. ``prefill_kwargs`` go to ``model._prefill``.

    A run seated at the model's step scheduler (``core.scheduler``) hands its decode steps to it; its prefill runs
    in its own thread between the scheduler's steps. A long prefill runs in chunks (``prefill_chunk``: transformers'
    ``prefill_chunk_size``, on a copy of the run's config), and a stopped run stops between two (``stoppable``)."""

    def __init__(self, model, input_ids, generation_config, model_kwargs: dict, **prefill_kwargs):
        self.model = model
        self.seat = current_seat(model)
        chunk = prefill_chunk(input_ids, self.seat is not None)
        if (chunk is not None and generation_config.prefill_chunk_size is None
                and not model.config.is_encoder_decoder and model_kwargs.get("cache") is not None):
            generation_config = copy.copy(generation_config)
            generation_config.prefill_chunk_size = chunk
        with prefilling():
            self._pending = model._prefill(input_ids, generation_config, model_kwargs, **prefill_kwargs)

    def __call__(self, input_ids, model_kwargs: dict) -> Forwarded:
        if self._pending is not None:
            outputs, self._pending = self._pending, None
        else:
            outputs = forward_last_token(self.model, input_ids, model_kwargs, self.seat)
        model_kwargs = self.model._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=self.model.config.is_encoder_decoder)
        return Forwarded(outputs, model_kwargs)


class Appended(NamedTuple):
    input_ids: torch.LongTensor  # [B, S+1]
    done: bool  # every row met a stopping criterion


class Rows:
    """The tail of a loop that appends one token per row per step (greedy, sampling, contrastive, DoLa):
    finished rows get padding, the tokens are appended, recorded (``record(recording, chosen)`` with one token list
    per row, which the ``observer`` calls only while recording: empty for a row that had finished, which appended
    padding only), streamed, and the stopping criteria decide which rows are finished."""

    def __init__(self, input_ids, generation_config, stopping_criteria, observer: Observer):
        pad_token_id = generation_config._pad_token_tensor
        self.pad_token_id = pad_token_id.to(input_ids.device) if pad_token_id is not None else None
        self.has_eos_stopping_criteria = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
        self.unfinished = torch.ones(input_ids.shape[0], dtype=torch.long, device=input_ids.device)  # [B]
        self.stopping_criteria = stopping_criteria
        self.observer = observer

    def append(self, input_ids, next_tokens, record: Callable[[Recording, list[list[int]]], None]) -> Appended:
        """``next_tokens`` [B] -> ``input_ids`` [B, S+1] and whether every row has finished."""
        if self.has_eos_stopping_criteria:  # finished rows get padding
            next_tokens = next_tokens * self.unfinished + self.pad_token_id * (1 - self.unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)  # [B, S+1]
        self.observer.record(lambda rec: record(rec, [[t] if running else [] for t, running
                                                      in zip(next_tokens.tolist(), self.unfinished.tolist())]))
        self.observer.put(next_tokens)
        self.unfinished = self.unfinished & ~self.stopping_criteria(input_ids, None)
        return Appended(input_ids, bool(self.unfinished.max() == 0))


def reorder_cache(model, model_kwargs: dict, beam_idx: torch.LongTensor) -> None:
    """Make row i of the KV cache the cache of row ``beam_idx[i]`` [B*K], as the beams moved: the model's own
    ``_reorder_cache`` where it has one, else the cache's ``reorder_cache``."""
    cache_key = next((key for key in ALL_CACHE_NAMES if model_kwargs.get(key) is not None), None)
    if cache_key is None:
        return
    cache = model_kwargs[cache_key]
    if hasattr(model, "_reorder_cache"):
        model_kwargs[cache_key] = model._reorder_cache(cache, beam_idx)
    elif hasattr(cache, "reorder_cache"):
        cache.reorder_cache(beam_idx)
    else:
        raise ValueError(f"`num_beams` must be 1 for {type(model).__name__} with a {type(cache).__name__}: beam "
                         "search moves cache rows between beams, and this cache cannot be reordered")

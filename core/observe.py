"""The observer a strategy reports to while it runs. ``Observer`` is the null one, for a run nobody records: the
processors run as one ``LogitsProcessorList`` call, no record is built and no tensor is read back. ``Recording`` turns
each step's tensors into ``StepRecord``s for the run's ``Recorder`` (``core.records``), and the run into a ``Trace``.
Both hand the new tokens to the run's streamer, where it has one.

A strategy makes the same calls whichever observer it has:
1. ``process(input_ids, logits, processors)``: the processors applied, ``(scores [B, V], stages)``; ``stages`` (each
   processor's output, from which a record tells what each one removed or changed) is None unless recording;
2. ``record(build)``: ``build(recording)`` is the strategy's record-only work (a beam tree, one step's record, sent
   with ``Recording.emit``); only a ``Recording`` calls it, and returns what it returns (the null observer: None);
3. ``put(tokens)`` after each step and ``end()`` once: the streamer's;
and reads ``lens``: whether its forwards must return the hidden states, for the logit lens.
``core.loop`` calls ``begin`` once the strategy is known and ``finish`` when it has returned.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from typing import Any, Callable, TypeVar

import torch
from transformers import GenerationConfig, LogitsProcessorList

from . import chain, lens, watermark
from .records import (Candidate, CacheInfo, Origin, ProcessorEffect, Recorder, RowStep, StepRecord, Trace, WatchedToken,
                      watched_ids)
from .strategies import family_of
from .text import TokenTexts

T = TypeVar("T")
Stages = list[tuple[Any, torch.Tensor]]  # (processor, its output [B, V]) in the order they ran


class Observer:
    """The null observer: a run nobody records (module docstring). It streams, where the run has a streamer."""

    lens = False  # the logit lens is recorded: the forwards return every layer's hidden states

    def __init__(self, streamer=None):
        self.streamer = streamer

    def begin(self, mode: str, generation_config: GenerationConfig, input_ids: torch.LongTensor) -> None:
        """The strategy is known: the streamer gets the prompt (the beam family streams its best row only: row 0)."""
        if self.streamer is not None:
            self.streamer.put((input_ids[:1] if family_of(mode) == "beam" else input_ids).cpu())

    def process(self, input_ids: torch.LongTensor, logits: torch.FloatTensor,
                processors: LogitsProcessorList) -> tuple[torch.FloatTensor, Stages | None]:
        """Apply ``processors`` as ``LogitsProcessorList`` does: ``(scores [B, V], None)``."""
        return processors(input_ids, logits), None

    def record(self, build: Callable[["Recording"], T]) -> T | None:
        """Nothing is recorded: ``build`` is not called."""
        return None

    def put(self, tokens: torch.Tensor) -> None:
        """Hand new tokens to the streamer, as transformers does after every step."""
        if self.streamer is not None:
            self.streamer.put(tokens.cpu())

    def end(self) -> None:
        if self.streamer is not None:
            self.streamer.end()

    def finish(self, model, input_ids, sequences, generation_config, *, stopped: str) -> Trace | None:
        """The run's trace: none without a recorder."""
        return None


class Recording(Observer):
    """The observer of a recorded run: ``recorder.top_n`` candidates per row, the logit lens when ``recorder.lens``,
    the ``recorder.watch`` tokens followed through every stage. The records' token text is ``texts``
    (``core.text.TokenTexts``: per row, so that a character split across tokens reads as itself). ``origin`` (the run
    this one continues) and ``generator`` (a seeded one names its seed) are what the trace says of the run."""

    def __init__(self, recorder: Recorder, model, tokenizer, streamer=None, *, origin: Origin | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None):
        super().__init__(streamer)
        self.origin = origin
        self.seed = generator.initial_seed() if isinstance(generator, torch.Generator) else None
        self.recorder = recorder
        self.model = model
        self.tokenizer = tokenizer
        self.top_n = recorder.top_n  # candidates recorded per row
        self.lens = bool(recorder.lens)  # record the logit lens per step
        self.watch = watched_ids(recorder)  # token ids followed through every stage
        self.texts = TokenTexts(tokenizer)
        self.mode = ""
        self.generation_config: GenerationConfig | None = None  # the run's final config, once the strategy is known
        self.steps: list[StepRecord] = []
        self.t0 = time.perf_counter()

    def begin(self, mode: str, generation_config: GenerationConfig, input_ids: torch.LongTensor) -> None:
        """The strategy is known; each row's text starts from its prompt (a branch's prefix may end inside a
        character)."""
        self.mode, self.generation_config = mode, generation_config
        if self.follows_rows():
            self.texts.start(input_ids.tolist())
        super().begin(mode, generation_config, input_ids)

    def record(self, build: Callable[["Recording"], T]) -> T:
        """``build(self)``: a strategy's record-only work."""
        return build(self)

    def follows_rows(self) -> bool:
        """Whether a record's row ``b`` is the same sequence at every step (not for the beam family, whose rows are
        re-ranked beams: their texts follow the beam tree's paths instead)."""
        return family_of(self.mode) != "beam"

    # --- logits processing and the step records ------------------------------------------------------
    def process(self, input_ids: torch.LongTensor, logits: torch.FloatTensor,
                processors: LogitsProcessorList) -> tuple[torch.FloatTensor, Stages]:
        """Apply ``processors`` as ``LogitsProcessorList`` does, keeping each processor's output, so that
        ``row_steps`` can say which candidates it removed or changed. Returns ``(scores [B, V], stages)``."""
        stages = []
        scores = logits
        for proc in processors:
            scores = proc(input_ids, scores.clone())
            stages.append((proc, scores))
        return scores, stages

    def candidate_ids(self, logits: torch.Tensor, scores: torch.Tensor, chosen) -> list[int]:
        """Ids worth recording for one row: top_n by raw logit, top_n by processed score, the chosen ones; none at
        -inf in both (where fewer than top_n survive, DoLa's mask, no filler at probability 0)."""
        n = min(self.top_n, logits.shape[-1])
        ids: dict[int, None] = {}
        for top in (scores.topk(n), logits.topk(n)):
            ids.update(dict.fromkeys(i for i, v in zip(top.indices.tolist(), top.values.tolist())
                                     if v != float("-inf")))
        ids.update(dict.fromkeys(int(c) for c in chosen))
        return list(ids)

    def candidates(self, logits: torch.Tensor, scores: torch.Tensor, ids: list[int], row: int = 0) -> list[Candidate]:
        """``logits`` and ``scores`` are one row, [V]; candidates sorted by processed score, each text what it would
        print in row ``row``."""
        index = torch.tensor(ids, device=logits.device)
        probs = logits.float().softmax(-1)[index].tolist()
        probs_after = scores.float().softmax(-1)[index].tolist()
        raw = logits[index].tolist()
        processed = scores[index].tolist()
        rows = [Candidate(i, self.texts.row_candidate(row, i), raw[j], probs[j], processed[j], probs_after[j])
                for j, i in enumerate(ids)]
        return sorted(rows, key=lambda c: -c.score)

    def row_steps(self, logits: torch.Tensor, scores: torch.Tensor, stages, chosen: list[list[int]],
                  inputs: torch.Tensor | None = None) -> list[RowStep]:
        """One ``RowStep`` per row of ``logits`` / ``scores`` [B, V]; ``chosen`` is the token list per row.
        ``inputs`` [B, V] is what the first processor received when that is not ``logits`` (beam search
        processes log-softmax), so that processor effects compare like with like."""
        out = []
        inputs = logits if inputs is None else inputs
        for row in range(logits.shape[0]):
            ids = self.candidate_ids(logits[row], scores[row], chosen[row])
            cut = self.grammar_cut(inputs[row], stages, row)
            ids += [i for i in cut if i not in ids]
            index = torch.tensor(ids, device=logits.device)
            model_probs = inputs[row].float().softmax(-1)  # [V]: the model's own distribution
            first = int(chosen[row][0]) if chosen[row] else None
            effects, before = [], inputs[row]
            watched = self.watched_stages(inputs[row], [stage[row] for _, stage in stages or ()], row)
            for proc, stage in stages or ():
                after = stage[row]
                changed_mask = before != after
                removed_mask = changed_mask & torch.isinf(after) & (after < 0)
                sub_changed, sub_removed = changed_mask[index].tolist(), removed_mask[index].tolist()
                alive = torch.isfinite(after)  # [V]
                effects.append(ProcessorEffect(
                    type(proc).__name__,
                    removed=[i for i, r in zip(ids, sub_removed) if r],
                    changed=[i for i, c, r in zip(ids, sub_changed, sub_removed) if c and not r],
                    removed_total=int(removed_mask.sum()),
                    stage=chain.stage_name(proc),
                    kept=int(alive.sum()),
                    mass=float(model_probs[alive].sum()),
                    chosen_prob=None if first is None else float(after.float().softmax(-1)[first]),
                ))
                before = after
            out.append(RowStep(row, self.candidates(logits[row], scores[row], ids, row), effects,
                               [int(c) for c in chosen[row]], entropy=entropy(scores[row]), watched=watched))
        return out

    def grammar_cut(self, inputs: torch.Tensor, stages, row: int) -> list[int]:
        """The top_n tokens of what the grammar stage received that it removed, for one row (``inputs`` [V]: what
        the first processor received). An earlier stage may have raised a token above the model's own top_n (a bias,
        a penalty, a reorder by ``sampler_order``), so the model's top_n alone can miss what the grammar cut; without
        a grammar stage nothing is computed."""
        before, cut = inputs, []
        for proc, stage in stages or ():
            after = stage[row]
            if chain.stage_name(proc) == "grammar":
                top = before.topk(min(self.top_n, before.shape[-1]))  # [n]
                gone = torch.isfinite(top.values) & (after[top.indices] == float("-inf"))  # [n]
                cut += top.indices[gone].tolist()
            before = after
        return cut

    def watched_stages(self, inputs: torch.Tensor, stages: list[torch.Tensor], row: int) -> list[WatchedToken]:
        """Each watched token through one row's chain: its score, probability and rank in ``inputs`` [V] (what the
        first processor received) and in each stage's output [V], in order. Nothing is computed when none is
        watched."""
        if not self.watch:
            return []
        index = torch.tensor(self.watch, device=inputs.device)  # [W]
        scores, probs, ranks = [], [], []
        for stage in (inputs, *stages):
            stage = stage.float()
            at = stage[index]  # [W]
            scores.append(at.tolist())
            probs.append(stage.softmax(-1)[index].tolist())
            ranks.append((stage[None, :] > at[:, None]).sum(-1).tolist())  # [W]: tokens scoring higher
        return [WatchedToken(t, self.texts.row_candidate(row, t), [s[k] for s in scores], [p[k] for p in probs],
                             [r[k] for r in ranks]) for k, t in enumerate(self.watch)]

    def lens_rows(self, states, final_logits, chosen):
        """The logit lens of each row (``core.lens.layer_lens``) for ``StepRecord.lens``; None when not asked."""
        if states is None:
            return None
        return lens.layer_lens(self.model, states, final_logits, chosen, self.texts.row_candidate,
                               min(self.top_n, lens.LENS_TOP_N), watch=self.watch)

    # --- reporting ------------------------------------------------------------------------------
    def emit(self, rows: list[RowStep], cache=None, **details) -> None:
        """Send one step record to the recorder. The rows take their chosen tokens here, after every text of the step
        was read in the context before them."""
        if self.follows_rows():
            rows = [dataclasses.replace(rs, pieces=self.texts.advance(rs.row, rs.chosen)) for rs in rows]
        record = StepRecord(step=len(self.steps), strategy=self.mode, rows=rows,
                            elapsed_s=time.perf_counter() - self.t0,
                            cache=cache_info(cache) if cache is not None else None, **details)
        self.steps.append(record)
        self.recorder.on_step(record)

    def finish(self, model, input_ids, sequences, generation_config, *, stopped: str) -> Trace:
        """The run's ``Trace``, handed to the recorder's ``on_end``. ``generation_config`` (else the model's) stands
        for the run's final config when it stopped before the strategy was known."""
        config = next(c for c in (self.generation_config, generation_config, model.generation_config) if c is not None)
        prompt_len = input_ids.shape[1] if input_ids is not None else 0
        new = sequences if model.config.is_encoder_decoder else sequences[:, prompt_len:]
        trace = Trace(
            strategy=self.mode,
            config=config_dict(config),
            prompt_ids=input_ids.tolist() if input_ids is not None else [],
            steps=self.steps,
            sequences=sequences.tolist(),
            texts=[self.texts.decode(row) for row in new.tolist()] if self.tokenizer is not None else [],
            model_name=getattr(model, "name_or_path", "") or "",
            elapsed_s=time.perf_counter() - self.t0,
            seed=self.seed,
            stopped=stopped,
            run_id=uuid.uuid4().hex[:12],
            origin=self.origin,
            watermark=watermark_reports(model, input_ids, sequences, config),
        )
        self.recorder.on_end(trace)
        return trace


def entropy(scores: torch.Tensor) -> float:
    """Entropy in nats of ``softmax(scores)`` for one row [V] (tokens at -inf hold no probability)."""
    log_p = scores.float().log_softmax(-1)
    p = log_p.exp()
    return float(-torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum())


def cache_bytes(obj, seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable from a cache's layers (quantized caches hold packed tensors)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and hasattr(obj, "__tensor_flatten__"):
            # a wrapper subclass (optimum-quanto's packed QTensor): its inner tensors hold the bytes,
            # numel() * element_size() would count the dequantized float size
            return sum(cache_bytes(getattr(obj, name), seen) for name in obj.__tensor_flatten__()[0])
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(cache_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(cache_bytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith(("transformers", "optimum", "hqq")):
        return sum(cache_bytes(o, seen) for o in vars(obj).values())
    return 0


def cache_info(cache) -> CacheInfo:
    try:
        seq = int(cache.get_seq_length())
    except Exception:  # some cache kinds cannot say before their first update
        seq = 0
    return CacheInfo(kind=type(cache).__name__, bytes=cache_bytes(getattr(cache, "layers", cache)), seq_length=seq)


def config_dict(cfg: GenerationConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from the defaults, as plain JSON values (private fields dropped)."""
    diff = {k: v for k, v in cfg.to_diff_dict().items() if not k.startswith("_")}
    return json.loads(json.dumps(_str_keys(diff),
                                 default=lambda o: o.tolist() if isinstance(o, torch.Tensor) else str(o)))


def _str_keys(obj):
    """JSON keys must be strings: ``sequence_bias`` has tuple keys, as transformers' own ``to_json_string`` knows."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_str_keys(v) for v in obj]
    return obj


def watermark_reports(model, input_ids, sequences, cfg):
    """Per returned sequence, the green-list membership of each token and the detector's z-score (decoder-only runs
    with ``watermarking_config``); None otherwise."""
    wm = getattr(cfg, "watermarking_config", None)
    if not watermark.detectable(wm) or model.config.is_encoder_decoder or input_ids is None:
        return None
    return watermark.reports(model, input_ids.tolist(), sequences.tolist(), cfg.watermarking_config)

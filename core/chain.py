"""The sampler chain of one run: transformers' logits processors, the community samplers (``core.processors``) and
the grammar (``core.grammar``), merged into one ``LogitsProcessorList`` and named stage by stage.

Every stage has a name: a transformers processor is named by the ``GenerationConfig`` field that switches it on
(``TopKLogitsWarper`` -> ``"top_k"``), a community sampler by its stage (``"dry"``, ``"xtc"``, ...), the grammar
``"grammar"``; a processor the caller passed itself keeps its class name.

The default order (``RANKS``; a stable sort, so with no community stage the list is transformers' own):
1. ``guidance_scale``: classifier-free guidance mixes in the negative prompt's logits first, as transformers does;
2. ``grammar``: the structured-output mask, before anything that truncates (vLLM applies its bitmask to the raw
   logits), so that a truncation never keeps only tokens the grammar forbids;
3. transformers' processors (penalties, bad words, min length, ...) and the caller's own, in transformers' order;
4. ``penalties`` and ``dry``: additive penalties beside transformers' repetition penalties;
5. ``temperature``, then ``dynatemp`` (a temperature too), then ``smoothing`` (quadratic sampling, a reshaping of
   the logits that text-generation-webui runs after its temperatures), then ``top_n_sigma`` (a truncation on logits);
6. transformers' truncations (``top_h``, ``top_k``, ``top_p``, ``min_p``, ``typical_p``, ``epsilon_cutoff``,
   ``eta_cutoff``) and with them, after them, ``tfs`` and ``top_a``; then ``xtc``, which works on the tokens still in
   play, then ``mirostat`` or ``adaptive_p`` (never both), which choose the token and must see the distribution it
   is drawn from;
7. ``watermarking_config`` after all logits processing (transformers #34630), ``renormalize_logits`` last.

``adaptive_p`` stays the last sampling stage: ``sampler_order`` may name it only last.

``sampler_order`` (a list of stage names) reorders the stages it names among the places they hold; stages it does
not name stay where they are. ``LLAMA_CPP_ORDER`` is llama.cpp's default chain in these names.
"""

from __future__ import annotations

from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation import logits_process as lp

from . import grammar
from . import processors as community

# the GenerationConfig fields the core adds to transformers' (kept as attributes; None: unset); ``negative_prompt``
# is classifier-free guidance's negative prompt as text (``core.requests`` encodes it into ``negative_prompt_ids``)
FIELDS: dict = {**community.FIELDS, **grammar.FIELDS, "sampler_order": None, "negative_prompt": None}

# transformers' processor classes -> the GenerationConfig field that switches each on
FIELD_OF: dict[type, str] = {
    lp.UnbatchedClassifierFreeGuidanceLogitsProcessor: "guidance_scale",
    lp.SequenceBiasLogitsProcessor: "sequence_bias",
    lp.EncoderRepetitionPenaltyLogitsProcessor: "encoder_repetition_penalty",
    lp.RepetitionPenaltyLogitsProcessor: "repetition_penalty",
    lp.NoRepeatNGramLogitsProcessor: "no_repeat_ngram_size",
    lp.EncoderNoRepeatNGramLogitsProcessor: "encoder_no_repeat_ngram_size",
    lp.NoBadWordsLogitsProcessor: "bad_words_ids",
    lp.MinLengthLogitsProcessor: "min_length",
    lp.MinNewTokensLengthLogitsProcessor: "min_new_tokens",
    lp.PrefixConstrainedLogitsProcessor: "prefix_allowed_tokens_fn",
    lp.ForcedBOSTokenLogitsProcessor: "forced_bos_token_id",
    lp.ForcedEOSTokenLogitsProcessor: "forced_eos_token_id",
    lp.InfNanRemoveLogitsProcessor: "remove_invalid_values",
    lp.ExponentialDecayLengthPenalty: "exponential_decay_length_penalty",
    lp.SuppressTokensLogitsProcessor: "suppress_tokens",
    lp.SuppressTokensAtBeginLogitsProcessor: "begin_suppress_tokens",
    lp.TemperatureLogitsWarper: "temperature",
    lp.TopHLogitsWarper: "top_h",
    lp.TopKLogitsWarper: "top_k",
    lp.TopPLogitsWarper: "top_p",
    lp.MinPLogitsWarper: "min_p",
    lp.TypicalLogitsWarper: "typical_p",
    lp.EpsilonLogitsWarper: "epsilon_cutoff",
    lp.EtaLogitsWarper: "eta_cutoff",
    lp.WatermarkLogitsProcessor: "watermarking_config",
    lp.SynthIDTextWatermarkLogitsProcessor: "watermarking_config",
    lp.LogitNormalization: "renormalize_logits",
}
TRUNCATIONS = ("top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
OTHER = 3  # the rank of transformers' processors not named below, and of the caller's own
RANKS: dict[str, int] = {
    "guidance_scale": 1, "grammar": 2, "penalties": 4, "dry": 4, "temperature": 5, "dynatemp": 6, "smoothing": 7,
    "top_n_sigma": 8, **{name: 9 for name in (*TRUNCATIONS, "tfs", "top_a")}, "xtc": 10, "mirostat": 11,
    "adaptive_p": 12, "watermarking_config": 13, "renormalize_logits": 14,
}
LAST = "adaptive_p"  # the stage that chooses the token: after every other sampling stage, whatever the order
# every name ``sampler_order`` may hold
STAGE_NAMES: tuple[str, ...] = tuple(dict.fromkeys([*FIELD_OF.values(), *community.ORDER, "grammar"]))
# llama.cpp's default chain (common_params_sampling::samplers): penalties, DRY, top-nσ, top-k, typical-p, top-p,
# min-p, XTC, temperature (dynamic temperature is llama.cpp's temperature sampler with a range)
LLAMA_CPP_ORDER: list[str] = ["repetition_penalty", "penalties", "dry", "top_n_sigma", "top_k", "typical_p", "top_p",
                              "min_p", "xtc", "temperature", "dynatemp"]
# stages whose state belongs to one row that grows by one token per step: no beams, no drafts
ONE_TOKEN_PER_ROW = {"mirostat": {"greedy_search", "sample"}, "adaptive_p": {"greedy_search", "sample"}}


def stage_name(proc: LogitsProcessor) -> str:
    """A processor's stage name: the field that switched it on, its community stage, or its class name."""
    return getattr(proc, "stage", None) or FIELD_OF.get(type(proc)) or type(proc).__name__


def check_order(order) -> list[str] | None:
    """``sampler_order`` as a list, or a ``ValueError`` naming the known stages."""
    if order is None:
        return None
    known = ", ".join(STAGE_NAMES)
    if not isinstance(order, (list, tuple)) or not all(isinstance(n, str) for n in order):
        raise ValueError(f"`sampler_order` must be a list of stage names among {known}; got {order!r}")
    unknown = [n for n in order if n not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"`sampler_order` must name only known stages ({known}); got unknown {unknown}")
    if len(set(order)) != len(order):
        raise ValueError(f"`sampler_order` must name each stage once; got {list(order)!r}")
    if LAST in order and order[-1] != LAST:
        raise ValueError(f"`sampler_order` must name {LAST} last (it chooses the token from the distribution it "
                         f"returns, so no sampling stage may follow it); got {list(order)!r}")
    return list(order)


def check_modes(generation_config, mode: str) -> None:
    """Stages that keep per-row state run only where each row grows by one token per step."""
    for stage, modes in ONE_TOKEN_PER_ROW.items():
        field = next(iter(community.STAGES[stage].fields))
        if community.STAGES[stage].build(generation_config) is not None and mode not in modes:
            raise ValueError(f"`{field}` must be unset for {mode} ({stage} keeps per-row state for one generation "
                             f"that adds one token per row per step: use it with greedy decoding or sampling); got "
                             f"{getattr(generation_config, field)!r}")


def reorder(procs: list[LogitsProcessor], order: list[str] | None) -> list[LogitsProcessor]:
    """The stages ``order`` names take the places those stages hold, in ``order``'s order; the rest stay put."""
    if not order:
        return list(procs)
    rank = {name: i for i, name in enumerate(order)}
    slots = [i for i, p in enumerate(procs) if stage_name(p) in rank]
    moved = sorted((procs[i] for i in slots), key=lambda p: rank[stage_name(p)])
    out = list(procs)
    for i, proc in zip(slots, moved):
        out[i] = proc
    return out


def build_chain(logits_processor, generation_config, extra: list[LogitsProcessor]) -> LogitsProcessorList:
    """transformers' ``logits_processor`` and the ``extra`` stages (each with a ``stage`` name) in the default order,
    then reordered by the config's ``sampler_order``."""
    procs = [*(logits_processor or []), *extra]
    procs.sort(key=lambda p: RANKS.get(stage_name(p), OTHER))  # stable: transformers' own order is kept
    return LogitsProcessorList(reorder(procs, check_order(getattr(generation_config, "sampler_order", None))))


def sampler_chain(logits_processor, generation_config, *, mode: str, tokenizer, generator, prompt_length: int,
                  vocab_size: int, deadline: float | None = None) -> LogitsProcessorList:
    """The run's whole chain: transformers' processors, the community samplers the config switches on (XTC draws
    from ``generator``), the grammar (compiled by ``deadline``); ordered as the module docstring says."""
    check_modes(generation_config, mode)
    extra = community.community_processors(generation_config, tokenizer=tokenizer, generator=generator,
                                           prompt_length=prompt_length)
    stage = grammar.build(generation_config, tokenizer=tokenizer, vocab_size=vocab_size, prompt_length=prompt_length,
                          deadline=deadline)
    return build_chain(logits_processor, generation_config, extra + ([stage] if stage is not None else []))


def names(chain) -> list[str]:
    """The stage names of a chain, in the order they run."""
    return [stage_name(p) for p in chain]


__all__ = ["FIELDS", "sampler_chain", "FIELD_OF", "RANKS", "STAGE_NAMES", "LLAMA_CPP_ORDER", "stage_name",
           "check_order", "check_modes", "reorder", "build_chain", "names"]

"""The smoothing factor, tail-free sampling, top-a and adaptive-P (``core.processors``): each against its definition
on synthetic logits of 10-16 tokens (the arithmetic written in the test, as transformers' ``test_logits_process.py``
does), against the reference code it follows ported literally into the test (text-generation-webui's warpers,
llama.cpp's adaptive-P with its running average over a multi-step seeded sequence), its edge cases and messages, and
one run in plain ``model.generate`` on a tiny Llama that must equal the same processor applied by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

import core
import core.processors as community
from core import chain
from core.processors.adaptive_p import AdaptivePLogitsProcessor
from core.processors.smoothing import SmoothingFactorLogitsProcessor
from core.processors.tfs import TailFreeLogitsProcessor
from core.processors.top_a import TopALogitsProcessor
from test_processors import PROMPT, apply, by_hand, ids, model, row, with_generate  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

NEG_INF = float("-inf")
# sorted descending, sums to 1; the truncations below are worked out by hand on these
PROBS = [0.5, 0.2, 0.1, 0.08, 0.05, 0.03, 0.02, 0.01, 0.007, 0.003]
SHUFFLE = [3, 7, 0, 9, 5, 1, 8, 2, 6, 4]  # token SHUFFLE[i] gets PROBS[i], so the cut must map back through a sort


def shuffled_scores() -> torch.Tensor:
    """Log-probabilities of PROBS on the tokens SHUFFLE names, [1, 10]."""
    scores = torch.empty(1, 10)
    scores[0, SHUFFLE] = torch.tensor(PROBS).log()
    return scores


def kept(out: torch.Tensor) -> list[int]:
    return torch.isfinite(out[0]).nonzero().flatten().tolist()


def random_rows(seed: int, batch: int = 3, vocab: int = 14, holes: int = 3) -> torch.Tensor:
    """Random logits with ``holes`` tokens per row already removed (-inf), [batch, vocab]."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, vocab, generator=g) * 2
    for b in range(batch):
        scores[b, torch.randperm(vocab, generator=g)[:holes]] = NEG_INF
    return scores


# --- the reference code, ported literally (one row at a time, as each was written) ----------------------------------
def webui_quadratic(scores, smoothing_factor, smoothing_curve):
    """text-generation-webui ``QuadraticSamplingLogitsWarper.__call__`` (``modules/sampler_hijack.py``)."""
    max_logit = scores.max()
    diff = scores - max_logit
    k = (3 - smoothing_curve) / 2
    s = (smoothing_curve - 1) / 2
    return torch.where(scores != float('-inf'),
                       -(k * smoothing_factor * diff**2) + (s * smoothing_factor * diff**3) + max_logit, scores)


def webui_top_a(scores, top_a):
    """text-generation-webui ``TopALogitsWarper.__call__`` (min_tokens_to_keep 1)."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=True, stable=True)
    probs = sorted_logits.softmax(dim=-1)
    probs_max = probs[..., 0, None]
    sorted_indices_to_remove = probs < probs_max * probs_max * top_a
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, float("-inf"))


def webui_tail_free(scores, tfs):
    """text-generation-webui ``TailFreeLogitsWarper.__call__`` (min_tokens_to_keep 1; a stable sort for ties)."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=True, stable=True)
    probs = sorted_logits.softmax(dim=-1)
    d2 = probs.diff().diff().abs()
    normalized_d2 = d2 / d2.sum(dim=-1, keepdim=True)
    normalized_d2_cdf = normalized_d2.cumsum(dim=-1)
    sorted_indices_to_remove = normalized_d2_cdf > tfs
    sorted_indices_to_remove = torch.cat((torch.zeros(scores.shape[0], 1, dtype=torch.bool),
                                          sorted_indices_to_remove,
                                          torch.ones(scores.shape[0], 1, dtype=torch.bool)), dim=-1)
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    return scores.masked_fill(indices_to_remove, float("-inf"))


F32 = np.float32


class LlamaAdaptiveP:
    """llama.cpp ``struct llama_sampler_adaptive_p`` with ``llama_sampler_init_adaptive_p``,
    ``llama_sampler_adaptive_p_apply`` and ``llama_sampler_adaptive_p_accept`` (``src/llama-sampler.cpp``, after
    PR #17927), and ``llama_sampler_softmax_impl(cur_p, false)``, line by line in float32. The draw
    (``llama_sample_dist``, a ``std::discrete_distribution`` over mt19937) is the test's: ``apply`` returns the
    probabilities it would draw from, ``select`` records the drawn index as ``apply`` does."""

    DISTRIBUTION_WIDTH = F32(0.3)
    PEAK_LOGIT_VALUE = F32(5.0)
    SHARPNESS = F32(10.0)
    INV_WIDTH = F32(1.0) / DISTRIBUTION_WIDTH

    def __init__(self, target: float, decay: float):
        clamped_decay = F32(min(max(decay, 0.0), 0.99))
        self.target = F32(target)
        self.decay = clamped_decay
        self.weighted_sum = F32(target) / (F32(1.0) - clamped_decay)
        self.total_weight = F32(1.0) / (F32(1.0) - clamped_decay)
        self.original_probs: list = []
        self.pending_token_id = -1
        self.pending_token_idx = -1
        self.adapted_target = None

    @staticmethod
    def softmax_impl(cur_p: list[dict]) -> None:
        max_l = cur_p[0]["logit"]
        for i in range(1, len(cur_p)):
            max_l = max(max_l, cur_p[i]["logit"])
        cum_sum = F32(0.0)
        for d in cur_p:
            p = np.exp(F32(d["logit"] - max_l), dtype=F32)
            d["p"] = p
            cum_sum = F32(cum_sum + p)
        for d in cur_p:
            d["p"] = F32(d["p"] / cum_sum)

    def apply(self, cur_p: list[dict]) -> list:
        self.softmax_impl(cur_p)
        self.original_probs = [d["p"] for d in cur_p]
        target = F32(min(max(self.target, F32(0.0)), F32(1.0)))
        average = F32(self.weighted_sum / self.total_weight)
        raw = target if self.total_weight == F32(0.0) else F32(F32(2.0) * target - average)
        adapted_target = F32(min(max(raw, F32(0.0)), F32(1.0)))
        self.adapted_target = adapted_target
        for d in cur_p:
            if d["logit"] == F32(-np.inf):
                continue
            dist = F32(abs(F32((d["p"] - adapted_target) * self.INV_WIDTH)))
            d["logit"] = F32(self.PEAK_LOGIT_VALUE - self.SHARPNESS * dist * dist / (F32(1.0) + dist))
        self.softmax_impl(cur_p)
        return [d["p"] for d in cur_p]

    def select(self, cur_p: list[dict], idx: int) -> None:
        self.pending_token_id = cur_p[idx]["id"]
        self.pending_token_idx = idx

    def accept(self, token: int) -> None:
        if self.pending_token_id == token:
            self.weighted_sum = F32(self.original_probs[self.pending_token_idx] + self.decay * self.weighted_sum)
            self.total_weight = F32(F32(1.0) + self.decay * self.total_weight)
        self.pending_token_id = -1
        self.pending_token_idx = -1


# --- smoothing factor ---------------------------------------------------------------------------------------------
LOGITS = [4.0, 3.0, 2.5, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, NEG_INF]


def test_smoothing_by_hand_is_a_parabola_below_the_top_logit():
    out = apply(SmoothingFactorLogitsProcessor(0.5), ids([1]), row(*LOGITS))
    # -(0.5 * d**2) + 4 with d = logit - 4
    assert out[0].tolist() == [4.0, 3.5, 2.875, 2.0, -0.5, -4.0, -8.5, -14.0, -20.5, NEG_INF]


def test_smoothing_curve_adds_the_cubic_term():
    out = apply(SmoothingFactorLogitsProcessor(1.0, smoothing_curve=2.0), ids([1]), row(*LOGITS))
    # k = s = 0.5: -(0.5 * d**2) + 0.5 * d**3 + 4
    assert out[0, :5].tolist() == [4.0, 3.0, 4 - 1.125 - 1.6875, -2.0, 4 - 4.5 - 13.5]


def test_smoothing_below_one_over_the_gap_brings_runners_up_closer():
    out = apply(SmoothingFactorLogitsProcessor(0.25), ids([1]), row(*LOGITS))
    gaps_before = [4.0 - v for v in LOGITS[:9]]
    gaps_after = (out[0, 0] - out[0, :9]).tolist()
    for before, after in zip(gaps_before[1:], gaps_after[1:]):
        assert (after < before) == (before < 4.0)  # 1 / 0.25 = 4: closer within it, farther beyond it


@pytest.mark.parametrize("factor, curve", [(0.3, 1.0), (1.7, 1.0), (0.5, 2.5), (0.2, 6.0)])
def test_smoothing_equals_text_generation_webui_row_by_row(factor, curve):
    scores = random_rows(1)
    out = apply(SmoothingFactorLogitsProcessor(factor, curve), ids([1], [1], [1]), scores)
    for b in range(scores.shape[0]):  # webui takes the max over its one row
        torch.testing.assert_close(out[b:b + 1], webui_quadratic(scores[b:b + 1], factor, curve), rtol=0, atol=0)


def test_smoothing_off_and_all_minus_inf_rows():
    assert community.STAGES["smoothing"].build(GenerationConfig(smoothing_factor=0.0)) is None
    dead = row(*[NEG_INF] * 10)
    assert torch.equal(apply(SmoothingFactorLogitsProcessor(0.5), ids([1]), dead), dead)


@pytest.mark.parametrize("kwargs, message", [
    (dict(smoothing_factor=-0.1), "`smoothing_factor` must be a number >= 0 (0 is off; try 0.3); got -0.1"),
    (dict(smoothing_factor=0.3, smoothing_curve=0.5), "`smoothing_curve` must be a number >= 1 (1 is the plain "
                                                      "quadratic); got 0.5"),
])
def test_smoothing_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        SmoothingFactorLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_smoothing_in_generate_equals_the_loop_by_hand(model):
    proc = SmoothingFactorLogitsProcessor(0.8, 1.5)
    assert with_generate(model, PROMPT, proc, 8, sample=True, seed=2) == by_hand(model, PROMPT, proc, 8, True, 2)


# --- top-a ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, survivors", [
    (0.0, 10),  # nothing below 0
    (0.1, 6),   # 0.1 * 0.5**2 = 0.025: 0.02 and below go
    (0.3, 4),   # 0.075: 0.05 and below go
    (1.0, 1),   # 0.25: only the top token
])
def test_top_a_by_hand(a, survivors):
    out = apply(TopALogitsProcessor(a), ids([1]), shuffled_scores())
    assert kept(out) == sorted(SHUFFLE[:survivors])
    assert torch.equal(out[0, SHUFFLE[:survivors]], shuffled_scores()[0, SHUFFLE[:survivors]])


def test_top_a_cut_follows_the_top_probability():
    flat = torch.tensor([[0.3] + [0.7 / 9] * 9]).log()  # 0.2 * 0.3**2 = 0.018: every token stays
    peaked = torch.tensor([[0.9] + [0.1 / 9] * 9]).log()  # 0.162: only the top one stays
    proc = TopALogitsProcessor(0.2)
    assert len(kept(apply(proc, ids([1]), flat))) == 10
    assert kept(apply(proc, ids([1]), peaked)) == [0]


@pytest.mark.parametrize("a", [0.05, 0.2, 0.6, 1.0])
def test_top_a_equals_text_generation_webui(a):
    scores = random_rows(2)
    assert torch.equal(apply(TopALogitsProcessor(a), ids([1], [1], [1]), scores), webui_top_a(scores, a))


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), True])
def test_top_a_invalid_values_name_the_field(value):
    with pytest.raises(ValueError) as err:
        TopALogitsProcessor(value)
    assert str(err.value) == f"`top_a` must be in [0, 1]; got {value!r}"


def test_top_a_in_generate_equals_the_loop_by_hand(model):
    proc = TopALogitsProcessor(0.5)
    assert with_generate(model, PROMPT, proc, 8, sample=True, seed=3) == by_hand(model, PROMPT, proc, 8, True, 3)


# --- tail-free sampling ---------------------------------------------------------------------------------------------
# second differences |p[i] - 2 p[i+1] + p[i+2]| of PROBS: 0.2, 0.08, 0.01, 0.01, 0.01, 0, 0.007, 0.001 (sum 0.318);
# their running share: 0.629, 0.881, 0.912, 0.943, 0.975, 0.975, 0.997, 1. Sorted token 0 stays, token i + 1 stays
# while the share up to difference i is <= z, the last token always goes.
@pytest.mark.parametrize("z, survivors", [(0.5, 1), (0.9, 3), (0.95, 5), (0.99, 7), (0.999, 8)])
def test_tail_free_by_hand(z, survivors):
    out = apply(TailFreeLogitsProcessor(z), ids([1]), shuffled_scores())
    assert kept(out) == sorted(SHUFFLE[:survivors])


@pytest.mark.parametrize("z", [0.0, 0.3, 0.8, 0.95, 0.99])
def test_tail_free_equals_text_generation_webui(z):
    scores = random_rows(3, batch=4, vocab=16)
    assert torch.equal(apply(TailFreeLogitsProcessor(z), ids(*[[1]] * 4), scores), webui_tail_free(scores, z))


def test_tail_free_leaves_undefined_rows_alone():
    straight = row(*[0.0] * 10)  # a flat curve: every second difference is 0
    assert torch.equal(apply(TailFreeLogitsProcessor(0.5), ids([1]), straight), straight)
    two = row(1.0, 0.0)
    assert torch.equal(apply(TailFreeLogitsProcessor(0.5), ids([1]), two), two)
    # rows are independent: the flat row stays whole beside a row that is cut
    both = torch.cat([straight, shuffled_scores()])
    out = apply(TailFreeLogitsProcessor(0.9), ids([1], [1]), both)
    assert torch.equal(out[0], straight[0]) and kept(out[1:]) == sorted(SHUFFLE[:3])


def test_tail_free_one_is_off_and_invalid_values_name_the_field():
    assert community.STAGES["tfs"].build(GenerationConfig(tfs=1.0)) is None
    assert isinstance(community.STAGES["tfs"].build(GenerationConfig(tfs=0.95)), TailFreeLogitsProcessor)
    with pytest.raises(ValueError) as err:
        TailFreeLogitsProcessor(1.5)
    assert str(err.value) == "`tfs` must be in [0, 1] (1 is off); got 1.5"


def test_tail_free_in_generate_equals_the_loop_by_hand(model):
    proc = TailFreeLogitsProcessor(0.9)
    assert with_generate(model, PROMPT, proc, 8, sample=True, seed=4) == by_hand(model, PROMPT, proc, 8, True, 4)


# --- adaptive-P -----------------------------------------------------------------------------------------------------
def transform(p: float, adapted: float) -> float:
    """llama.cpp's logit for a token of probability ``p``: 5 - 10 x^2 / (1 + x), x = |p - adapted| / 0.3."""
    x = abs(p - adapted) / 0.3
    return 5 - 10 * x * x / (1 + x)


def test_adaptive_p_first_step_by_hand():
    """The primed average equals the target, so the first step aims at the target itself."""
    scores = shuffled_scores()
    scores[0, SHUFFLE[-1]] = NEG_INF  # removed before: stays removed
    proc = AdaptivePLogitsProcessor(0.1, 0.9)
    out = apply(proc, ids([1]), scores)
    p = scores.softmax(-1)[0]
    expected = [NEG_INF if t == SHUFFLE[-1] else transform(p[t].item(), 0.1) for t in range(10)]
    torch.testing.assert_close(out[0], torch.tensor(expected), rtol=0, atol=1e-5)
    assert out[0].argmax().item() == SHUFFLE[2]  # p = 0.1: the peak, ahead of the top token
    assert proc.adapted_target.item() == pytest.approx(0.1)


def test_adaptive_p_average_moves_the_target_against_the_choices():
    """decay 0.5, target 0.3: primed sum 0.6 over weight 2. Choosing p = 0.5 gives sum 0.5 + 0.3 = 0.8 over
    1 + 1 = 2, average 0.4, so the next step aims at 2 * 0.3 - 0.4 = 0.2; choosing p = 0.01 then gives
    (0.01 + 0.4) / 2 = 0.205 and aims at 0.395."""
    proc = AdaptivePLogitsProcessor(0.3, 0.5)
    scores = shuffled_scores()
    apply(proc, ids([1]), scores)
    apply(proc, ids([1, SHUFFLE[0]]), scores)  # chose the p = 0.5 token
    assert (proc.weighted_sum.item(), proc.total_weight.item()) == pytest.approx((0.8, 2.0), abs=1e-6)
    assert proc.adapted_target.item() == pytest.approx(0.2, abs=1e-6)
    apply(proc, ids([1, SHUFFLE[0], SHUFFLE[7]]), scores)  # chose p = 0.01
    assert proc.adapted_target.item() == pytest.approx(0.395, abs=1e-6)


def test_adaptive_p_clamps_the_adapted_target_to_a_probability():
    scores = shuffled_scores()
    high, low = AdaptivePLogitsProcessor(0.9, 0.0), AdaptivePLogitsProcessor(0.1, 0.0)  # decay 0: the last choice
    for proc, chosen, clamped in ((high, SHUFFLE[-1], 1.0), (low, SHUFFLE[0], 0.0)):
        apply(proc, ids([1]), scores)
        out = apply(proc, ids([1, chosen]), scores)  # 1.8 - 0.003 and 0.2 - 0.5 leave [0, 1]
        assert proc.adapted_target.item() == clamped
        assert out[0].argmax().item() == (SHUFFLE[0] if clamped else SHUFFLE[-1])  # the most / least probable


@pytest.mark.parametrize("target, decay, seed", [(0.5, 0.9, 0), (0.2, 0.5, 1), (0.8, 0.0, 2), (0.35, 0.99, 3)])
def test_adaptive_p_equals_llama_cpp_over_a_seeded_sequence(target, decay, seed):
    """Twelve steps of 16 tokens (three of them removed before, -inf): llama.cpp's loop (apply, draw, accept) and
    the processor (draw from what it returns, the token appended to ``input_ids``) give the same distributions, the
    same running average and the same tokens when both draw with the same seeded generator."""
    steps, vocab = 12, 16
    logits = [random_rows(100 * seed + s, batch=1, vocab=vocab) for s in range(steps)]
    ref, ours = LlamaAdaptiveP(target, decay), AdaptivePLogitsProcessor(target, decay)
    g_ref, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    input_ids, ref_tokens = ids([1]), []
    for step in range(steps):
        cur_p = [{"id": i, "logit": F32(v), "p": F32(0)} for i, v in enumerate(logits[step][0].tolist())]
        ref_probs = torch.tensor(ref.apply(cur_p))
        idx = torch.multinomial(ref_probs, 1, generator=g_ref).item()
        ref.select(cur_p, idx)
        ref.accept(cur_p[idx]["id"])
        ref_tokens.append(cur_p[idx]["id"])

        out = apply(ours, input_ids, logits[step])
        probs = out.softmax(-1)[0]
        torch.testing.assert_close(probs, ref_probs, rtol=0, atol=2e-6)
        assert ours.adapted_target.item() == pytest.approx(float(ref.adapted_target), abs=1e-6)
        token = torch.multinomial(probs, 1, generator=g_ours)
        input_ids = torch.cat([input_ids, token[None]], -1)
    apply(ours, input_ids, logits[0])  # takes in the last choice, as llama.cpp's last accept did
    assert input_ids[0, 1:].tolist() == ref_tokens
    assert ours.weighted_sum.item() == pytest.approx(float(ref.weighted_sum), rel=1e-6)
    assert ours.total_weight.item() == pytest.approx(float(ref.total_weight), rel=1e-6)
    assert len(set(ref_tokens)) > 1


def test_adaptive_p_rows_are_independent_and_state_belongs_to_one_generation():
    scores = random_rows(7, batch=2)
    both = AdaptivePLogitsProcessor(0.4)
    alone = [AdaptivePLogitsProcessor(0.4), AdaptivePLogitsProcessor(0.4)]
    seqs = ids([1, 2], [1, 3])
    for step in range(3):
        out = apply(both, seqs, scores)
        for b in range(2):
            assert torch.equal(out[b:b + 1], apply(alone[b], seqs[b:b + 1], scores[b:b + 1]))
        seqs = torch.cat([seqs, ids([step + 4], [9 - step])], -1)
    with pytest.raises(ValueError, match=r"^`input_ids` must continue the previous call's sequences by one token"):
        both(seqs[:1], scores[:1])
    with pytest.raises(ValueError, match="call reset"):
        both(seqs[:, :-2], scores)
    both.reset()
    apply(both, seqs, scores)
    assert both.adapted_target.tolist() == pytest.approx([0.4, 0.4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(adaptive_target=1.2), "`adaptive_target` must be in [0, 1] (the probability the chosen tokens should "
                                "average, e.g. 0.5); got 1.2"),
    (dict(adaptive_target=0.5, adaptive_decay=1.0), "`adaptive_decay` must be in [0, 0.99] (how slowly the average "
                                                    "forgets, e.g. 0.9); got 1.0"),
])
def test_adaptive_p_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        AdaptivePLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_adaptive_p_excludes_mirostat_and_is_named_last():
    with pytest.raises(ValueError) as err:
        community.validate(GenerationConfig(adaptive_target=0.5, mirostat_tau=5.0))
    assert str(err.value) == ("`adaptive_target` must be unset when `mirostat_tau` is set (each chooses the token "
                              "from the distribution it returns, so each must come last; llama.cpp runs one or the "
                              "other); got 0.5")
    with pytest.raises(ValueError, match=r"^`sampler_order` must name adaptive_p last"):
        chain.check_order(["adaptive_p", "top_k"])
    assert chain.check_order(["top_k", "adaptive_p"]) == ["top_k", "adaptive_p"]


def test_adaptive_p_comes_after_every_sampling_stage():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    cfg = GenerationConfig(adaptive_target=0.5, smoothing_factor=0.3, tfs=0.9, top_a=0.1, xtc_probability=0.5)
    extra = community.community_processors(cfg)
    built = chain.build_chain([TemperatureLogitsWarper(0.7), TopKLogitsWarper(20)], cfg, extra)
    assert chain.names(built) == ["temperature", "smoothing", "top_k", "tfs", "top_a", "xtc", "adaptive_p"]
    cfg.sampler_order = ["adaptive_p"]
    assert chain.names(chain.build_chain([], cfg, community.community_processors(cfg)))[-1] == "adaptive_p"


def test_adaptive_p_in_generate_equals_the_loop_by_hand(model):
    steps = 10
    proc = AdaptivePLogitsProcessor(0.3, 0.8)
    sampled = with_generate(model, PROMPT, proc, steps, sample=True, seed=6)
    assert sampled == by_hand(model, PROMPT, AdaptivePLogitsProcessor(0.3, 0.8), steps, sample=True, seed=6)
    # this random model's distribution is nearly flat (every token near 1/64), so every target above it picks the
    # most probable token; target 0 picks the least probable one, greedily
    greedy = with_generate(model, PROMPT, AdaptivePLogitsProcessor(0.0), steps, sample=False)
    assert greedy == by_hand(model, PROMPT, AdaptivePLogitsProcessor(0.0), steps, sample=False)
    with torch.no_grad():
        first = model(PROMPT).logits[0, -1]
    assert greedy[PROMPT.shape[1]] == first.argmin().item()


# --- the boundary ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"top_a": 1.5}, "`top_a` must be in [0, 1]; got 1.5"),
    ({"tfs": -0.5}, "`tfs` must be in [0, 1] (1 is off); got -0.5"),
    ({"smoothing_factor": 0.3, "smoothing_curve": 0}, "`smoothing_curve` must be a number >= 1 (1 is the plain "
                                                       "quadratic); got 0"),
    ({"adaptive_target": 0.5, "adaptive_decay": -0.1}, "`adaptive_decay` must be in [0, 0.99] (how slowly the "
                                                        "average forgets, e.g. 0.9); got -0.1"),
])
def test_core_generate_names_the_field_before_transformers_runs(model, settings, message):
    with pytest.raises(ValueError) as err:
        core.generate(model, PROMPT, max_new_tokens=2, do_sample=True, **settings)
    assert str(err.value) == message

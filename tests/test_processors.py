"""Community samplers (``core.processors``): each processor against values computed by hand on synthetic logits
of 10 tokens (the arithmetic is written in the test, as transformers' ``test_logits_process.py`` does), its edge
cases, its validation messages, and one run in plain ``model.generate`` on a tiny Llama that must equal the same
processor applied by hand in a loop of forwards."""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedTokenizerFast

import core.processors as community
from core.processors.dry import DRYLogitsProcessor, repeat_lengths
from core.processors.dynatemp import DynamicTemperatureLogitsProcessor
from core.processors.mirostat import MirostatLogitsProcessor
from core.processors.penalties import PresenceFrequencyPenaltyLogitsProcessor
from core.processors.top_n_sigma import TopNSigmaLogitsProcessor
from core.processors.xtc import XTCLogitsProcessor, special_token_ids
from conftest import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

NEG_INF = float("-inf")
EOS = 2  # tiny_llama's eos_token_id


# --- helpers ---------------------------------------------------------------------------------------------------
def row(*values) -> torch.Tensor:
    """One row of scores, [1, V] float32."""
    return torch.tensor([values], dtype=torch.float32)


def ids(*rows) -> torch.LongTensor:
    return torch.tensor(rows, dtype=torch.long)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: "\\n" is 7, ":" 8, '"' 9, "*" 10; EOS "</s>" is 2."""
    chars = ["<pad>", "<s>", "</s>", "<unk>", "a", "b", "c", "\n", ":", "\"", "*", " "]
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def apply(proc, input_ids, scores):
    """``proc`` on a copy, checking that the input is left as it was."""
    before = scores.clone()
    out = proc(input_ids, scores)
    assert torch.equal(scores, before), "the processor modified its input in place"
    assert out.dtype == torch.float32 and out.shape == scores.shape
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


PROMPT = ids([1, 5, 9, 13, 17, 21])


def by_hand(model, input_ids, proc, steps: int, sample: bool, seed: int = 0) -> list[int]:
    """Forward the whole sequence, apply ``proc`` to the last logits, pick argmax (or sample), append; stop at EOS."""
    torch.manual_seed(seed)
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids).logits[:, -1].to(torch.float32)  # [1, V]
        scores = proc(input_ids, logits)
        nxt = torch.multinomial(scores.softmax(-1), 1) if sample else scores.argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, nxt], -1)
        if nxt.item() == EOS:
            break
    return input_ids[0].tolist()


def with_generate(model, input_ids, proc, steps: int, sample: bool, seed: int = 0) -> list[int]:
    """``model.generate`` with ``proc`` as its only processor (top-k off, temperature 1), no cache so that the
    logits equal ``by_hand``'s full forwards."""
    torch.manual_seed(seed)
    out = model.generate(input_ids, logits_processor=LogitsProcessorList([proc]), do_sample=sample, top_k=0,
                         top_p=1.0, temperature=1.0, max_new_tokens=steps, use_cache=False)
    return out[0].tolist()


# --- presence / frequency penalties ----------------------------------------------------------------------------


def test_penalties_by_hand_count_only_generated_tokens():
    proc = PresenceFrequencyPenaltyLogitsProcessor(presence_penalty=0.5, frequency_penalty=0.25, prompt_length=3)
    input_ids = ids([1, 2, 2, 3, 3, 5])  # prompt 1 2 2, generated 3 3 5
    scores = row(*range(10))
    out = apply(proc, input_ids, scores)
    expected = list(map(float, range(10)))
    expected[3] -= 2 * 0.25 + 0.5  # two occurrences: frequency twice, presence once -> 3 - 1.0
    expected[5] -= 1 * 0.25 + 0.5  # one occurrence -> 5 - 0.75
    # tokens 1 and 2 occur in the prompt only: untouched
    assert out[0].tolist() == pytest.approx(expected)


def test_penalties_with_prompt_length_zero_count_the_prompt_too():
    proc = PresenceFrequencyPenaltyLogitsProcessor(presence_penalty=0.0, frequency_penalty=1.0, prompt_length=0)
    out = apply(proc, ids([1, 2, 2]), row(*[0.0] * 10))
    assert out[0, :3].tolist() == [0.0, -1.0, -2.0]


def test_penalties_negative_values_encourage_and_rows_are_independent():
    proc = PresenceFrequencyPenaltyLogitsProcessor(presence_penalty=-1.0, frequency_penalty=-0.5, prompt_length=1)
    scores = torch.zeros(2, 10)
    out = apply(proc, ids([0, 4, 4], [0, 7, 8]), scores)
    assert out[0].tolist() == pytest.approx([0, 0, 0, 0, 2 * 0.5 + 1, 0, 0, 0, 0, 0])  # 4 twice: +2.0
    assert out[1].tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0, 1.5, 1.5, 0])  # 7 and 8 once each: +1.5


def test_penalties_off_and_without_generated_tokens_are_identity():
    scores = row(3.0, NEG_INF, 1.0, 2.0, 0.5, 0.0, -1.0, 4.0, 2.5, 1.5)
    off = PresenceFrequencyPenaltyLogitsProcessor(0.0, 0.0, prompt_length=0)
    assert torch.equal(apply(off, ids([0, 2, 3]), scores), scores)
    prompt_only = PresenceFrequencyPenaltyLogitsProcessor(1.0, 1.0, prompt_length=3)
    assert torch.equal(apply(prompt_only, ids([0, 2, 3]), scores), scores)


@pytest.mark.parametrize("kwargs, message", [
    ({"presence_penalty": 2.5}, "`presence_penalty` must be in [-2, 2]; got 2.5"),
    ({"frequency_penalty": -3}, "`frequency_penalty` must be in [-2, 2]; got -3"),
    ({"frequency_penalty": float("nan")}, "`frequency_penalty` must be in [-2, 2]; got nan"),
    ({"prompt_length": -1}, "`prompt_length` must be an integer >= 0; got -1"),
])
def test_penalties_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        PresenceFrequencyPenaltyLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_penalties_in_generate_equal_the_loop_by_hand(model):
    steps = 10

    def make():
        return PresenceFrequencyPenaltyLogitsProcessor(1.5, 1.0, prompt_length=PROMPT.shape[1])

    plain = model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()
    penalised = with_generate(model, PROMPT, make(), steps, sample=False)
    assert penalised == by_hand(model, PROMPT, make(), steps, sample=False)
    generated = penalised[PROMPT.shape[1]:]
    # plain greedy repeats itself on this random model; the penalties make it repeat less
    assert len(set(generated)) > len(set(plain[PROMPT.shape[1]:]))


# --- DRY ---------------------------------------------------------------------------------------------------------


def test_dry_penalises_the_token_that_extends_a_repeat():
    proc = DRYLogitsProcessor(dry_multiplier=0.8, dry_base=1.75, dry_allowed_length=2)
    # 1 2 3 | 4 9 | 1 2 3: the suffix "1 2 3" occurred before, followed by 4; the match is 3 tokens long
    out = apply(proc, ids([1, 2, 3, 4, 9, 1, 2, 3]), row(*[1.0] * 10))
    expected = [1.0] * 10
    expected[4] -= 0.8 * 1.75 ** (3 - 2)  # 1 - 1.4
    assert out[0].tolist() == pytest.approx(expected)


def test_dry_takes_the_longest_match_per_token_and_respects_allowed_length():
    # last token 3 occurs at index 1 (followed by 7, match "3": 1 token) and at index 5 (followed by 8,
    # match "2 3": 2 tokens)
    sequence = [5, 3, 7, 1, 2, 3, 8, 2, 3]
    assert repeat_lengths(sequence, set()) == {7: 1, 8: 2}
    proc = DRYLogitsProcessor(1.0, 2.0, dry_allowed_length=1)
    out = apply(proc, ids(sequence), torch.zeros(1, 10))
    assert out[0, 7].item() == pytest.approx(-1.0 * 2.0 ** (1 - 1))  # -1
    assert out[0, 8].item() == pytest.approx(-1.0 * 2.0 ** (2 - 1))  # -2
    assert (out[0, [0, 1, 2, 3, 4, 5, 6, 9]] == 0).all()
    # allowed length 3: neither match is long enough
    strict = DRYLogitsProcessor(1.0, 2.0, dry_allowed_length=3)
    assert torch.equal(apply(strict, ids(sequence), torch.zeros(1, 10)), torch.zeros(1, 10))


def test_dry_sequence_breakers_stop_a_match():
    sequence = [1, 6, 2, 3, 4, 1, 6, 2, 3]
    # without breakers the suffix "1 6 2 3" repeats (4 tokens); with 6 a breaker the match stops after "2 3"
    assert repeat_lengths(sequence, set()) == {4: 4}
    assert repeat_lengths(sequence, {6}) == {4: 2}
    proc = DRYLogitsProcessor(0.8, 1.75, 2, sequence_breaker_ids={6})
    out = apply(proc, ids(sequence), torch.zeros(1, 10))
    assert out[0, 4].item() == pytest.approx(-0.8 * 1.75 ** (2 - 2))  # -0.8
    # the last token a breaker: nothing is penalised; a breaker is never the penalised token
    assert repeat_lengths([1, 2, 6, 1, 2, 6], {6}) == {}
    assert repeat_lengths([1, 2, 6, 1, 2], {6}) == {}


def test_dry_searches_the_prompt_and_rows_are_independent():
    proc = DRYLogitsProcessor(1.0, 2.0, 2)
    # row 0 repeats "5 6" (the prompt, as the reference, is part of the search); row 1 never repeats
    scores = torch.zeros(2, 10)
    out = apply(proc, ids([5, 6, 7, 5, 6], [1, 2, 3, 4, 5]), scores)
    assert out[0].tolist() == [0, 0, 0, 0, 0, 0, 0, -1.0, 0, 0]  # 7 would extend "5 6": 1 * 2 ** 0
    assert out[1].tolist() == [0.0] * 10


def test_dry_off_is_identity_and_keeps_minus_inf():
    sequence = ids([1, 2, 3, 1, 2])
    scores = row(0.5, 1.0, 2.0, NEG_INF, 4.0, 0.0, 1.0, 2.0, 3.0, 4.0)
    assert torch.equal(apply(DRYLogitsProcessor(0.0), sequence, scores), scores)
    out = apply(DRYLogitsProcessor(1.0), sequence, scores)
    assert out[0, 3].item() == NEG_INF  # 3 would extend "1 2" but is already removed
    assert torch.equal(out[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]], scores[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]])


def test_dry_penalty_too_large_for_float32_bans_the_token():
    # 60 times the same token: matches run to the 50-token cap, base ** 48 overflows float32 (and float64)
    proc = DRYLogitsProcessor(1.0, dry_base=1e10, dry_allowed_length=2)
    out = apply(proc, ids([7] * 60), torch.zeros(1, 10))
    assert out[0, 7].item() == NEG_INF
    assert (out[0, :7] == 0).all() and (out[0, 8:] == 0).all()


def test_dry_from_strings_maps_breakers_with_the_tokenizer():
    tokenizer = char_tokenizer()
    proc = DRYLogitsProcessor.from_strings(0.8, 1.75, 2, ["\n", ":", "\"", "*"], tokenizer=tokenizer)
    assert proc.sequence_breaker_ids == {7, 8, 9, 10}
    # token ids in the list are kept as they are, and need no tokenizer
    by_id = DRYLogitsProcessor.from_strings(0.8, dry_sequence_breakers=[3, 4], tokenizer=None)
    assert by_id.sequence_breaker_ids == {3, 4}


@pytest.mark.parametrize("kwargs, message", [
    ({"dry_multiplier": -0.5}, "`dry_multiplier` must be a number >= 0 (0 disables it); got -0.5"),
    ({"dry_multiplier": 0.8, "dry_base": 1.0}, "`dry_base` must be a number > 1; got 1.0"),
    ({"dry_multiplier": 0.8, "dry_allowed_length": 0}, "`dry_allowed_length` must be an integer >= 1; got 0"),
    ({"dry_multiplier": 0.8, "dry_allowed_length": 2.0}, "`dry_allowed_length` must be an integer >= 1; got 2.0"),
    ({"dry_multiplier": 0.8, "sequence_breaker_ids": {-1}},
     "`sequence_breaker_ids` must be a set of token ids (integers >= 0); got {-1}"),
])
def test_dry_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        DRYLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_dry_breaker_strings_need_a_list_and_a_tokenizer():
    with pytest.raises(ValueError, match=r"^`dry_sequence_breakers` must be a list of non-empty strings"):
        DRYLogitsProcessor.from_strings(0.8, dry_sequence_breakers="\n:", tokenizer=char_tokenizer())
    with pytest.raises(ValueError, match=r"^`dry_sequence_breakers` must be token ids when no tokenizer is given"):
        DRYLogitsProcessor.from_strings(0.8, dry_sequence_breakers=["\n"], tokenizer=None)


def test_dry_in_generate_equals_the_loop_by_hand_and_stops_the_loop(model):
    steps = 20  # plain greedy falls into the loop "49 20 18" after 10 tokens
    # no breakers: this random model's tokens mean nothing
    plain = model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()
    dry = with_generate(model, PROMPT, DRYLogitsProcessor(3.0, 1.75, 2), steps, sample=False)
    assert dry == by_hand(model, PROMPT, DRYLogitsProcessor(3.0, 1.75, 2), steps, sample=False)
    assert dry != plain

    def longest_repeat(seq):
        return max(max(repeat_lengths(seq[:i], set()).values(), default=0) for i in range(2, len(seq) + 1))

    assert longest_repeat(dry) < longest_repeat(plain)


# --- top-nσ ------------------------------------------------------------------------------------------------------

# logits 0..9: mean 4.5, population variance ((4.5² + 3.5² + 2.5² + 1.5² + 0.5²) * 2) / 10 = 82.5 / 10 = 8.25
SIGMA = math.sqrt(8.25)  # 2.8723


@pytest.mark.parametrize("n, first_kept", [
    (1.0, 7),  # cut 9 - 2.8723 = 6.1277: keep 7, 8, 9
    (2.0, 4),  # cut 9 - 5.7446 = 3.2554: keep 4..9
    (0.3, 9),  # cut 9 - 0.8617 = 8.1383: keep 9
])
def test_top_n_sigma_by_hand(n, first_kept):
    assert 9 - n * SIGMA == pytest.approx({7: 6.1277, 4: 3.2554, 9: 8.1383}[first_kept], abs=1e-4)
    out = apply(TopNSigmaLogitsProcessor(n), None, row(*range(10)))
    assert out[0].tolist() == [NEG_INF] * first_kept + list(map(float, range(first_kept, 10)))


def test_top_n_sigma_leaves_minus_inf_out_of_the_statistics():
    scores = row(*range(10), NEG_INF, NEG_INF)  # 12 tokens, the same 10 finite ones
    out = apply(TopNSigmaLogitsProcessor(1.0), None, scores)
    assert out[0].tolist() == [NEG_INF] * 7 + [7.0, 8.0, 9.0] + [NEG_INF] * 2


def test_top_n_sigma_edge_rows_and_batch():
    proc = TopNSigmaLogitsProcessor(1.0)
    scores = torch.stack([
        torch.arange(10, dtype=torch.float32),  # the row above: keeps 7, 8, 9
        torch.full((10,), 2.0),  # all equal: σ = 0, all kept
        torch.tensor([NEG_INF] * 9 + [3.0]),  # one finite logit: unchanged
        torch.tensor([0.0] * 9 + [10.0]),  # mean 1, σ = sqrt((9 * 1 + 81) / 10) = 3: cut 7, keep only 10
    ])
    out = apply(proc, None, scores)
    assert out[0].tolist() == [NEG_INF] * 7 + [7.0, 8.0, 9.0]
    assert torch.equal(out[1:3], scores[1:3])
    assert out[3].tolist() == [NEG_INF] * 9 + [10.0]


def test_top_n_sigma_is_temperature_invariant():
    scores = torch.randn(3, 20, generator=torch.Generator().manual_seed(0)) * 3
    proc = TopNSigmaLogitsProcessor(1.5)
    for temperature in (0.3, 0.7, 2.0):
        kept = torch.isfinite(apply(proc, None, scores))
        assert torch.equal(torch.isfinite(proc(None, scores / temperature)), kept)


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), True, "1"])
def test_top_n_sigma_invalid_values_name_the_field(value):
    with pytest.raises(ValueError) as err:
        TopNSigmaLogitsProcessor(value)
    assert str(err.value) == f"`top_n_sigma` must be a number > 0; got {value!r}"


def test_top_n_sigma_in_generate_equals_the_loop_by_hand(model):
    steps = 10
    sampled = with_generate(model, PROMPT, TopNSigmaLogitsProcessor(1.0), steps, sample=True, seed=3)
    assert sampled == by_hand(model, PROMPT, TopNSigmaLogitsProcessor(1.0), steps, sample=True, seed=3)
    # a tiny n keeps only the largest logit: sampling becomes greedy
    narrow = with_generate(model, PROMPT, TopNSigmaLogitsProcessor(1e-6), steps, sample=True, seed=3)
    assert narrow == model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()


# --- XTC ---------------------------------------------------------------------------------------------------------

XTC_PROBS = [0.35, 0.25, 0.15, 0.1, 0.05, 0.04, 0.03, 0.015, 0.01, 0.005]  # sums to 1


def xtc_scores() -> torch.Tensor:
    return torch.tensor([XTC_PROBS]).log()


@pytest.mark.parametrize("threshold, removed", [
    (0.12, [0, 1]),  # 0.35, 0.25, 0.15 meet it: all but the least probable (token 2, 0.15) go
    (0.09, [0, 1, 2]),  # 0.35 .. 0.1 meet it: token 3 stays
    (0.3, []),  # only 0.35 meets it: fewer than two, nothing happens
    (0.0, list(range(9))),  # everything meets it: only the least probable token (9) stays
])
def test_xtc_by_hand(threshold, removed):
    scores = xtc_scores()
    out = apply(XTCLogitsProcessor(1.0, threshold), None, scores)
    expected = scores.clone()
    expected[0, removed] = NEG_INF
    assert torch.equal(out, expected)


def test_xtc_never_counts_removed_tokens():
    scores = torch.cat([xtc_scores(), torch.full((1, 2), NEG_INF)], -1)  # 12 tokens, two already removed
    out = apply(XTCLogitsProcessor(1.0, 0.0), None, scores)
    assert torch.isfinite(out[0]).tolist() == [False] * 9 + [True] + [False] * 2  # token 9 is kept, not an -inf one


def test_xtc_ties_keep_the_highest_token_id():
    out = apply(XTCLogitsProcessor(1.0, 0.1), None, torch.zeros(1, 4))  # four tokens at 0.25
    assert out[0].tolist() == [NEG_INF, NEG_INF, NEG_INF, 0.0]


def test_xtc_leaves_a_row_alone_when_it_would_remove_newline_or_eos():
    scores = xtc_scores()
    # token 0 would be removed: with 0 as EOS (or newline) the row is unchanged
    assert torch.equal(apply(XTCLogitsProcessor(1.0, 0.12, special_token_ids={0}), None, scores), scores)
    # token 2 is the one kept: XTC acts
    out = apply(XTCLogitsProcessor(1.0, 0.12, special_token_ids={2}), None, scores)
    assert torch.isinf(out[0, :2]).all() and torch.isfinite(out[0, 2:]).all()


def test_xtc_special_tokens_from_the_tokenizer_and_the_config():
    assert special_token_ids(char_tokenizer()) == {7, 2}  # "\n" and "</s>"
    assert special_token_ids(None, [2, 5]) == {2, 5}
    assert special_token_ids(char_tokenizer(), 40) == {7, 2, 40}


def test_xtc_off_is_identity():
    scores = xtc_scores()
    assert torch.equal(apply(XTCLogitsProcessor(0.0, 0.1), None, scores), scores)


def test_xtc_draws_one_number_per_row():
    probability = 0.5
    seed = next(s for s in range(100)
                if (torch.rand(2, generator=torch.Generator().manual_seed(s)) < probability).tolist() == [True, False])
    proc = XTCLogitsProcessor(probability, 0.12, generator=torch.Generator().manual_seed(seed))
    scores = xtc_scores().repeat(2, 1)
    out = apply(proc, None, scores)
    assert torch.isinf(out[0, :2]).all()  # row 0 drew < 0.5: tokens 0 and 1 removed
    assert torch.equal(out[1], scores[1])  # row 1 drew >= 0.5: unchanged


def test_xtc_same_seed_same_result_and_matches_torch_manual_seed():
    scores = xtc_scores().repeat(4, 1)

    def run(proc):
        return [proc(None, scores) for _ in range(5)]

    first = run(XTCLogitsProcessor(0.5, 0.12, generator=torch.Generator().manual_seed(7)))
    again = run(XTCLogitsProcessor(0.5, 0.12, generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(7)
    default = run(XTCLogitsProcessor(0.5, 0.12))  # generator=None: torch's default generator
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, again, default))
    acted = torch.isinf(torch.stack(first)).any(-1)  # [calls, rows]
    assert acted.any() and not acted.all()


@pytest.mark.parametrize("kwargs, message", [
    ({"xtc_probability": 0.5, "xtc_threshold": 0.7}, "`xtc_threshold` must be in [0, 0.5]; got 0.7"),
    ({"xtc_probability": 1.5}, "`xtc_probability` must be in [0, 1]; got 1.5"),
    ({"xtc_probability": -0.1}, "`xtc_probability` must be in [0, 1]; got -0.1"),
    ({"xtc_probability": 0.5, "special_token_ids": [1.5]},
     "`special_token_ids` must be a set of token ids (integers >= 0); got {1.5}"),
])
def test_xtc_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        XTCLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_xtc_in_generate_equals_the_loop_by_hand(model):
    steps = 10

    def make(generator=None):
        return XTCLogitsProcessor(1.0, 0.017, generator=generator)

    greedy = with_generate(model, PROMPT, make(torch.Generator().manual_seed(0)), steps, sample=False)
    assert greedy == by_hand(model, PROMPT, make(torch.Generator().manual_seed(0)), steps, sample=False)
    plain = model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()
    # this random model's distribution is flat (the top token has about 1.9%): XTC excludes the top choices
    # whenever two tokens reach 1.7%
    assert greedy != plain
    # sampling, XTC drawing from torch's default generator between the multinomial draws
    sampled = with_generate(model, PROMPT, XTCLogitsProcessor(0.5, 0.017), steps, sample=True, seed=1)
    assert sampled == by_hand(model, PROMPT, XTCLogitsProcessor(0.5, 0.017), steps, sample=True, seed=1)


# --- dynamic temperature -----------------------------------------------------------------------------------------


def test_dynatemp_by_hand():
    proc = DynamicTemperatureLogitsProcessor(dynatemp_low=0.5, dynatemp_high=1.5, dynatemp_exponent=2.0)
    scores = torch.stack([
        torch.tensor([0.5, 0.25, 0.25] + [0.0] * 7).log(),  # three finite logits
        torch.zeros(10),  # flat: H = H_max
    ])
    # row 0: H = -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2 = 1.03972 nats; H_max = ln 3 = 1.09861
    entropy, max_entropy = 1.5 * math.log(2), math.log(3)
    t0 = 0.5 + (1.5 - 0.5) * (entropy / max_entropy) ** 2.0  # 0.5 + 0.94639 ** 2 = 1.39566
    assert t0 == pytest.approx(1.39566, abs=1e-5)
    # row 1: H / H_max = 1, so T = high = 1.5
    assert proc.temperatures(scores).tolist() == pytest.approx([t0, 1.5])
    out = apply(proc, None, scores)
    assert out[0, :3].tolist() == pytest.approx((scores[0, :3] / t0).tolist())
    assert out[0, 3:].tolist() == [NEG_INF] * 7
    assert out[1].tolist() == [0.0] * 10


def test_dynatemp_exponent_one_and_rows_are_independent():
    proc = DynamicTemperatureLogitsProcessor(0.0, 2.0)
    scores = torch.stack([torch.tensor([3.0, 1.0] + [NEG_INF] * 8), torch.tensor([1.0, 1.0] + [NEG_INF] * 8)])
    # row 0: p = (e^3, e^1) / (e^3 + e^1) = (0.880797, 0.119203); H = 0.365334 nats; H_max = ln 2 = 0.693147
    p = [math.exp(3) / (math.exp(3) + math.e), math.e / (math.exp(3) + math.e)]
    entropy = -sum(q * math.log(q) for q in p)
    assert entropy == pytest.approx(0.365334, abs=1e-6)
    # row 1: two equal logits, H = H_max: T = 2
    assert proc.temperatures(scores).tolist() == pytest.approx([2.0 * entropy / math.log(2), 2.0], rel=1e-5)


def test_dynatemp_leaves_single_token_rows_alone_and_zero_temperature_is_greedy():
    scores = torch.stack([
        torch.tensor([NEG_INF] * 9 + [3.0]),  # one finite logit: H_max = 0, unchanged (llama.cpp returns early)
        torch.tensor([1.0, 4.0, 4.0, 2.0] + [0.0] * 6),
    ])
    out = apply(DynamicTemperatureLogitsProcessor(0.0, 0.0), None, scores)
    assert torch.equal(out[0], scores[0])
    # T = 0: only the first largest logit stays, with its value (llama.cpp llama_sampler_temp_impl)
    assert out[1].tolist() == [NEG_INF, 4.0] + [NEG_INF] * 8


def test_dynatemp_with_equal_bounds_is_a_plain_temperature():
    scores = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    out = apply(DynamicTemperatureLogitsProcessor(0.7, 0.7), None, scores)
    assert torch.allclose(out, scores / 0.7)


@pytest.mark.parametrize("args, message", [
    ((1.0, 0.5), "`dynatemp_high` must be >= dynatemp_low (1.0); got 0.5"),
    ((-0.1, 0.5), "`dynatemp_low` must be a number >= 0; got -0.1"),
    ((0.5, None), "`dynatemp_high` must be set when `dynatemp_low` is set (dynamic temperature needs both bounds); "
                  "got None"),
    ((0.5, 1.0, 0), "`dynatemp_exponent` must be a number > 0; got 0"),
])
def test_dynatemp_invalid_values_name_the_field(args, message):
    with pytest.raises(ValueError) as err:
        DynamicTemperatureLogitsProcessor(*args)
    assert str(err.value) == message


def test_dynatemp_in_generate_equals_the_loop_by_hand(model):
    steps = 10
    sampled = with_generate(model, PROMPT, DynamicTemperatureLogitsProcessor(0.2, 1.5), steps, sample=True, seed=2)
    assert sampled == by_hand(model, PROMPT, DynamicTemperatureLogitsProcessor(0.2, 1.5), steps, sample=True, seed=2)
    # a positive temperature never moves the argmax: greedy is unchanged
    greedy = with_generate(model, PROMPT, DynamicTemperatureLogitsProcessor(0.2, 1.5), steps, sample=False)
    assert greedy == model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()


# --- Mirostat v2 -------------------------------------------------------------------------------------------------

# p_i = 2^-(i+1) for i < 9 and p_9 = 2^-9 (they sum to 1): surprises -log2 p = 1, 2, ..., 9, 9 bits
MIROSTAT_SCORES = torch.tensor([[2.0 ** -(i + 1) for i in range(9)] + [2.0 ** -9]]).log()


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def test_mirostat_updates_mu_from_the_chosen_token_over_three_calls():
    tau, eta = 3.1, 0.5
    proc = MirostatLogitsProcessor(mirostat_tau=tau, mirostat_eta=eta)
    # call 1: mu = 2 * tau = 6.2; surprises 1..6 are <= 6.2: tokens 0..5 stay, holding 1 - 2^-6 = 63/64
    out = apply(proc, ids([0, 0]), MIROSTAT_SCORES)
    assert proc.mu.tolist() == [pytest.approx(6.2)] and kept(out) == [0, 1, 2, 3, 4, 5]
    # call 2: token 2 was chosen; under the kept, renormalised distribution p = 2^-3 / (63/64), so its
    # surprise is 3 + log2(63/64) = 2.97728 and mu = 6.2 - 0.5 * (2.97728 - 3.1) = 6.26136
    mu = 6.2 - eta * (3 + math.log2(63 / 64) - tau)
    assert mu == pytest.approx(6.26136, abs=1e-5)
    out = apply(proc, ids([0, 0, 2]), MIROSTAT_SCORES)
    assert proc.mu.tolist() == [pytest.approx(mu)] and kept(out) == [0, 1, 2, 3, 4, 5]
    # call 3: token 5 was chosen, surprise 6 + log2(63/64) = 5.97728: mu = 6.26136 - 0.5 * 2.87728 = 4.82272,
    # so only surprises 1..4 stay
    mu = mu - eta * (6 + math.log2(63 / 64) - tau)
    assert mu == pytest.approx(4.82272, abs=1e-5)
    out = apply(proc, ids([0, 0, 2, 5]), MIROSTAT_SCORES)
    assert proc.mu.tolist() == [pytest.approx(mu)] and kept(out) == [0, 1, 2, 3]
    assert torch.equal(out[0, :4], MIROSTAT_SCORES[0, :4])  # kept logits are returned as they came


def test_mirostat_rows_are_independent():
    proc = MirostatLogitsProcessor(3.1, 0.5)
    scores = MIROSTAT_SCORES.repeat(2, 1)
    proc(ids([0], [0]), scores)
    proc(ids([0, 2], [0, 5]), scores)  # row 0 chose token 2, row 1 token 5
    assert proc.mu.tolist() == pytest.approx([6.2 - 0.5 * (3 + math.log2(63 / 64) - 3.1),
                                              6.2 - 0.5 * (6 + math.log2(63 / 64) - 3.1)])


def test_mirostat_keeps_the_top_token_when_every_surprise_is_above_mu():
    out = apply(MirostatLogitsProcessor(0.1), ids([0]), MIROSTAT_SCORES)  # mu = 0.2 < 1 bit, the smallest surprise
    assert kept(out) == [0]
    # all logits equal, mu below their surprise log2(10) = 3.32: the first one stays
    out = apply(MirostatLogitsProcessor(1.0), ids([0]), torch.zeros(1, 10))
    assert kept(out) == [0]


def test_mirostat_keeps_mu_when_the_chosen_token_was_not_kept():
    proc = MirostatLogitsProcessor(3.1, 0.5)
    proc(ids([0]), MIROSTAT_SCORES)  # keeps 0..5
    proc(ids([0, 9]), MIROSTAT_SCORES)  # 9 (say, a finished row's padding) had no probability
    assert proc.mu.tolist() == [pytest.approx(6.2)]


def test_mirostat_state_belongs_to_one_generation():
    proc = MirostatLogitsProcessor(3.1, 0.5)
    proc(ids([0]), MIROSTAT_SCORES)
    with pytest.raises(ValueError, match=r"^`input_ids` must continue the previous call's sequences by one token"):
        proc(ids([0]), MIROSTAT_SCORES)  # not one token longer
    with pytest.raises(ValueError, match=r"^`input_ids` must continue"):
        proc(ids([0, 1], [0, 1]), MIROSTAT_SCORES.repeat(2, 1))  # another batch size
    proc.reset()
    proc(ids([0, 1, 2], [0, 1, 2]), MIROSTAT_SCORES.repeat(2, 1))
    assert proc.mu.tolist() == [pytest.approx(6.2)] * 2


@pytest.mark.parametrize("kwargs, message", [
    ({"mirostat_tau": 0}, "`mirostat_tau` must be a number > 0 (the target surprise in bits, e.g. 5.0); got 0"),
    ({"mirostat_eta": -0.1}, "`mirostat_eta` must be a number > 0 (the learning rate, e.g. 0.1); got -0.1"),
])
def test_mirostat_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        MirostatLogitsProcessor(**kwargs)
    assert str(err.value) == message


def test_mirostat_in_generate_equals_the_loop_by_hand(model):
    steps = 10
    proc = MirostatLogitsProcessor(5.0, 0.1)
    sampled = with_generate(model, PROMPT, proc, steps, sample=True, seed=4)
    assert sampled == by_hand(model, PROMPT, MirostatLogitsProcessor(5.0, 0.1), steps, sample=True, seed=4)
    assert proc.mu.item() != 10.0  # mu moved from 2 * tau
    # this random model's distribution is nearly flat over 64 tokens (about 6 bits each): a target of 1 bit
    # keeps only the top token at every step, so sampling becomes greedy
    low = with_generate(model, PROMPT, MirostatLogitsProcessor(1.0, 0.1), steps, sample=True, seed=4)
    assert low == model.generate(PROMPT, do_sample=False, max_new_tokens=steps, use_cache=False)[0].tolist()


# --- the package: fields, ranges, registry, order ----------------------------------------------------------------


ALL_ON = dict(presence_penalty=0.5, frequency_penalty=0.25, dry_multiplier=0.8, dynatemp_low=0.5, dynatemp_high=1.5,
              smoothing_factor=0.3, smoothing_curve=1.5, top_n_sigma=2.0, tfs=0.95, top_a=0.1, xtc_probability=0.5,
              xtc_threshold=0.05, mirostat_tau=5.0, mirostat_eta=0.1)  # adaptive-P excludes mirostat: tested alone


def test_fields_and_ranges():
    assert community.FIELDS == {
        "presence_penalty": None, "frequency_penalty": None,
        "dry_multiplier": None, "dry_base": 1.75, "dry_allowed_length": 2,
        "dry_sequence_breakers": ["\n", ":", "\"", "*"],
        "dynatemp_low": None, "dynatemp_high": None, "dynatemp_exponent": 1.0,
        "smoothing_factor": None, "smoothing_curve": 1.0,
        "top_n_sigma": None, "tfs": None, "top_a": None,
        "xtc_probability": None, "xtc_threshold": 0.1,
        "mirostat_tau": None, "mirostat_eta": 0.1,
        "adaptive_target": None, "adaptive_decay": 0.9,
    }
    assert set(community.RANGES) == set(community.FIELDS)
    for name, default in community.FIELDS.items():  # every default is in its own range
        assert default is None or community.RANGES[name].test(default), name


def test_generation_config_keeps_the_new_fields():
    cfg = GenerationConfig(dry_multiplier=0.8, xtc_probability=0.5)
    assert cfg.dry_multiplier == 0.8 and cfg.xtc_probability == 0.5
    assert getattr(cfg, "top_n_sigma", None) is None  # never set: unset
    assert copy.deepcopy(cfg).dry_multiplier == 0.8
    assert GenerationConfig.from_dict(cfg.to_dict()).xtc_probability == 0.5


def test_nothing_is_on_by_default_and_zero_is_off():
    assert community.community_processors(GenerationConfig()) == []
    off = GenerationConfig(dry_multiplier=0.0, xtc_probability=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                           dry_base=3.0, xtc_threshold=0.2, mirostat_eta=0.5, dynatemp_exponent=2.0,
                           smoothing_factor=0.0, smoothing_curve=2.0, tfs=1.0, top_a=0.0, adaptive_decay=0.5)
    assert community.community_processors(off) == []


def test_community_processors_in_the_default_order():
    tokenizer = char_tokenizer()
    generator = torch.Generator().manual_seed(0)
    cfg = GenerationConfig(**ALL_ON, eos_token_id=40)
    procs = community.community_processors(cfg, tokenizer=tokenizer, generator=generator, prompt_length=6)
    assert community.ORDER == ("penalties", "dry", "dynatemp", "smoothing", "top_n_sigma", "tfs", "top_a", "xtc",
                               "mirostat", "adaptive_p")
    assert [type(p) for p in procs] == [
        community.PresenceFrequencyPenaltyLogitsProcessor, community.DRYLogitsProcessor,
        community.DynamicTemperatureLogitsProcessor, community.SmoothingFactorLogitsProcessor,
        community.TopNSigmaLogitsProcessor, community.TailFreeLogitsProcessor, community.TopALogitsProcessor,
        community.XTCLogitsProcessor, community.MirostatLogitsProcessor]
    penalties, dry, dynatemp, smoothing, top_n_sigma, tfs, top_a, xtc, mirostat = procs
    assert (penalties.presence_penalty, penalties.frequency_penalty, penalties.prompt_length) == (0.5, 0.25, 6)
    assert (dry.multiplier, dry.base, dry.allowed_length, dry.sequence_breaker_ids) == (0.8, 1.75, 2, {7, 8, 9, 10})
    assert (dynatemp.low, dynatemp.high, dynatemp.exponent) == (0.5, 1.5, 1.0)
    assert (smoothing.factor, smoothing.curve, top_n_sigma.n, tfs.z, top_a.top_a) == (0.3, 1.5, 2.0, 0.95, 0.1)
    assert (xtc.probability, xtc.threshold, xtc.special_token_ids, xtc.generator) == (0.5, 0.05, {7, 2, 40}, generator)
    assert (mirostat.tau, mirostat.eta) == (5.0, 0.1)


def test_one_builder_per_stage_and_each_is_off_alone():
    assert set(community.STAGES) == set(community.ORDER)
    for name in community.ORDER:
        assert community.STAGES[name].build(GenerationConfig()) is None, name


def test_dry_without_tokenizer_takes_token_ids():
    cfg = GenerationConfig(dry_multiplier=0.8, dry_sequence_breakers=[3, 4])
    (dry,) = community.community_processors(cfg)
    assert dry.sequence_breaker_ids == {3, 4}
    with pytest.raises(ValueError, match=r"^`dry_sequence_breakers` must be token ids when no tokenizer is given"):
        community.community_processors(GenerationConfig(dry_multiplier=0.8))


@pytest.mark.parametrize("settings, message", [
    ({"xtc_threshold": 0.7}, "`xtc_threshold` must be in [0, 0.5]; got 0.7"),
    ({"dry_base": 0.5}, "`dry_base` must be a number > 1; got 0.5"),
    ({"presence_penalty": -2.5}, "`presence_penalty` must be in [-2, 2]; got -2.5"),
    ({"dry_sequence_breakers": ["\n", ""]}, "`dry_sequence_breakers` must be a list of non-empty strings (or token "
                                             "ids); got ['\\n', '']"),
    ({"dynatemp_low": 1.0, "dynatemp_high": 0.5}, "`dynatemp_high` must be >= dynatemp_low (1.0); got 0.5"),
    ({"dynatemp_high": 1.0}, "`dynatemp_low` must be set when `dynatemp_high` is set (dynamic temperature needs "
                             "both bounds); got None"),
])
def test_validate_names_the_field(settings, message):
    with pytest.raises(ValueError) as err:
        community.validate(GenerationConfig(**settings))
    assert str(err.value) == message


def test_validate_accepts_defaults_and_valid_settings():
    community.validate(GenerationConfig())
    community.validate(GenerationConfig(**ALL_ON))
    community.validate(GenerationConfig(**{k: v for k, v in community.FIELDS.items() if v is not None}))


def test_the_package_imports_no_ui_library():
    package = Path(community.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {n.split(".")[0] for n in names} & {"gradio", "plotly", "networkx"}, path.name


def test_all_processors_together_in_generate_equal_the_loop_by_hand(model):
    steps = 10
    cfg = GenerationConfig(**{**ALL_ON, "xtc_threshold": 0.017}, dry_sequence_breakers=[])

    def make():
        return LogitsProcessorList(community.community_processors(cfg, prompt_length=PROMPT.shape[1]))

    torch.manual_seed(5)
    out = model.generate(PROMPT, logits_processor=make(), do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                         max_new_tokens=steps, use_cache=False)
    assert out[0].tolist() == by_hand(model, PROMPT, make(), steps, sample=True, seed=5)

"""Attribution of a step (``core.attribution``): its scores equal captum's own attribution of the same input done the
standard way for Hugging Face models (``LayerGradientXActivation`` and ``LayerIntegratedGradients`` on the embedding
layer, fed token ids and reference ids), on a tiny Llama and on the embedded model; the shared model keeps no grad
and no hook; what cannot be attributed is refused with a message naming the bound."""

from __future__ import annotations

import dataclasses
import html
import re
import time

import pytest
import torch

import core
import core.attribution as attribution
from core.attribution import MAX_CONTEXT, Attribution, AttributionError, attribute, step_context
from core.steer import branch

from conftest import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = [1, 5, 9, 13, 17, 21, 25, 29]
TARGET = 7
STEPS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


def library_scores(model, ids: list[int], target: int, baseline: int, steps: int) -> dict[str, list[float]]:
    """captum called directly, on token ids through the model's embedding layer: input x gradient and integrated
    gradients from reference ids, each summed over the hidden size."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

    def log_prob(input_ids):
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]

    embed = model.get_input_embeddings()
    inputs = torch.tensor([ids])
    with torch.enable_grad():
        ixg = LayerGradientXActivation(log_prob, embed).attribute(inputs)
        ig = LayerIntegratedGradients(log_prob, embed).attribute(inputs, baselines=torch.full_like(inputs, baseline),
                                                                 n_steps=steps)
    return {"input_x_gradient": ixg.sum(-1)[0].tolist(), "integrated_gradients": ig.sum(-1)[0].tolist()}


# Process-wide hooks that others install once per model and that hold nothing of a call: transformers' output
# capturing (the first forward asking for attentions or hidden states; the logit lens does too), the core's own
# stop-before-prefill hook (``core.strategies.steps.stoppable``, the first ``core.generate`` on the model) and the
# model lock of its step scheduler (``core.scheduler.shared``, which the tab's attribution is seated at).
SHARED_HOOKS = ("output_capturing_hook", "_stop_before_forward", "StepScheduler.")


def assert_untouched(model):
    """No parameter holds a grad and no module keeps a hook but the process-wide ones (``SHARED_HOOKS``)."""
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            left = [h for h in getattr(module, hooks).values()
                    if not any(name in h.__qualname__ for name in SHARED_HOOKS)]
            assert not left, f"{type(module).__name__} kept {hooks}: {left}"


def test_scores_equal_captums_own_call_on_a_tiny_llama(model):
    requires = [p.requires_grad for p in model.parameters()]
    got = attribute(model, None, PROMPT, TARGET, "all", steps=STEPS)
    want = library_scores(model, PROMPT, TARGET, got.baseline, STEPS)
    for method in ("input_x_gradient", "integrated_gradients"):
        assert got.scores[method] == pytest.approx(want[method], rel=1e-4, abs=1e-6), method
    assert got.baseline == 0  # the tiny model's config pad id: it has no tokenizer
    with torch.no_grad():  # the model's own log-probability, without a graph to convert
        expected = float(torch.log_softmax(model(torch.tensor([PROMPT])).logits[0, -1], -1)[TARGET])
    assert got.target_logprob == pytest.approx(expected, abs=1e-5)
    # integrated gradients' completeness: the scores add up to the log-prob change, less the reported gap
    with torch.no_grad():
        base = float(torch.log_softmax(model(torch.full((1, len(PROMPT)), got.baseline)).logits[0, -1], -1)[TARGET])
    assert sum(got.scores["integrated_gradients"]) - got.delta == pytest.approx(got.target_logprob - base, abs=1e-4)
    assert_untouched(model)
    assert [p.requires_grad for p in model.parameters()] == requires


def test_one_method_alone_gives_the_same_scores(model):
    both = attribute(model, None, PROMPT, TARGET, "all", steps=STEPS)
    for method in ("input_x_gradient", "integrated_gradients"):
        alone = attribute(model, None, PROMPT, TARGET, method, steps=STEPS)
        assert list(alone.scores) == [method] and alone.scores[method] == pytest.approx(both.scores[method])
    assert_untouched(model)


def test_attention_needs_eager_attention_and_is_the_last_rows_mean():
    sdpa = tiny_llama(0)
    got = attribute(sdpa, None, PROMPT, TARGET, "all", steps=2)
    assert "attention" not in got.scores and 'attn_implementation="eager"' in got.unavailable["attention"]
    with pytest.raises(AttributionError, match="attention is unavailable"):
        attribute(sdpa, None, PROMPT, TARGET, "attention")
    eager = tiny_llama(0)
    eager.set_attn_implementation("eager")
    got = attribute(eager, None, PROMPT, TARGET, "attention")
    with torch.no_grad():
        maps = eager(torch.tensor([PROMPT]), output_attentions=True).attentions
    want = torch.stack([a[0, :, -1] for a in maps]).mean(dim=(0, 1))
    assert got.scores["attention"] == pytest.approx(want.tolist(), abs=1e-6)
    assert sum(got.scores["attention"]) == pytest.approx(1.0, abs=1e-5)
    assert_untouched(eager)


def test_json_round_trip(model):
    got = attribute(model, None, PROMPT, TARGET, "all", steps=2, prompt_tokens=5)
    back = Attribution.from_json(got.to_json())
    assert back == got and back.prompt_tokens == 5 and back.tokens == [f"#{i}" for i in PROMPT]


class NoEmbeddings(torch.nn.Module):
    def get_input_embeddings(self):
        raise NotImplementedError


@pytest.mark.parametrize("call, message", [
    (lambda m: attribute(m, None, [1] * (MAX_CONTEXT + 1), TARGET), f"at most {MAX_CONTEXT} tokens"),
    (lambda m: attribute(m, None, [], TARGET), "no context"),
    (lambda m: attribute(m, None, PROMPT, 64), r"token ids must be in \[0, 63\]"),
    (lambda m: attribute(m, None, PROMPT, TARGET, "saliency"), "`method` must be one of"),
    (lambda m: attribute(m, None, PROMPT, TARGET, steps=0), r"`steps` must be an integer in \[1, 64\]"),
    (lambda m: attribute(NoEmbeddings(), None, PROMPT, TARGET), "exposes none"),
    (lambda m: attribute(object(), None, PROMPT, TARGET), "local torch model"),
])
def test_refusals_name_the_bound(model, call, message):
    with pytest.raises(AttributionError, match=message):
        call(model)
    assert_untouched(model)


def test_a_passed_deadline_stops_it_and_leaves_the_model_clean(model):
    with pytest.raises(TimeoutError, match="time limit"):
        attribute(model, None, PROMPT, TARGET, "integrated_gradients", deadline=time.monotonic() - 1)
    calls = []
    real = attribution._log_prob

    def late_after_two(*args):  # the deadline passes in the middle of integrated gradients' path
        forward = real(*args)

        def wrapped(embeds):
            calls.append(1)
            if len(calls) > 2:
                raise TimeoutError("attribution ran past its time limit (test)")
            return forward(embeds)
        return wrapped

    attribution._log_prob = late_after_two
    try:
        with pytest.raises(TimeoutError):
            attribute(model, None, PROMPT, TARGET, "integrated_gradients", steps=STEPS)
    finally:
        attribution._log_prob = real
    assert_untouched(model)


def test_progress_counts_every_forward_and_reaches_one():
    eager = tiny_llama(0)
    eager.set_attn_implementation("eager")
    for steps in (1, STEPS, 20):
        seen = []
        attribute(eager, None, PROMPT, TARGET, "all", steps=steps, progress=seen.append)
        assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == len(set(seen)), steps


def run(model, **kwargs) -> core.Trace:
    return core.generate(model, torch.tensor([PROMPT]), recorder=core.ListRecorder(), max_new_tokens=5,
                         **kwargs).trace


def test_step_context_is_the_prompt_and_the_rows_tokens_before_the_step(model):
    trace = run(model)
    new = trace.sequences[0][len(PROMPT):]
    for step in range(5):
        assert step_context(trace, step) == (PROMPT + new[:step], new[step], len(PROMPT))
    # the same ids generate continues from: the step's scores are the model's own at that point
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT + new[:3]])).logits[0, -1]
    assert int(logits.argmax()) == new[3]
    with pytest.raises(AttributionError, match=r"`step` must be a recorded step of this run, in \[0, 4\]; got 5"):
        step_context(trace, 5)
    with pytest.raises(AttributionError, match="`row` must be a row of step 0"):
        step_context(trace, 0, 3)


def test_step_context_of_a_beam_follows_the_picked_beam(model):
    trace = run(model, num_beams=3, do_sample=False)
    ids, target, _ = step_context(trace, 2, 1)
    assert ids == list(branch(trace, 2, 1)[0][0])  # what Continue with this token starts from for that beam
    rec = trace.steps[2]
    assert target == next(rs.chosen[0] for rs in rec.rows if rs.row == 1)


def test_step_context_of_a_branch_counts_its_parents_tokens_as_generated(model):
    parent = run(model)
    ids, origin = branch(parent, 2, 0, 11)
    child = core.generate(model, ids, recorder=core.ListRecorder(), max_new_tokens=3, origin=origin).trace
    got_ids, _, prompt_tokens = step_context(child, 0)
    assert got_ids == ids[0].tolist() and prompt_tokens == len(PROMPT)


@pytest.mark.slow
def test_embedded_model_equals_captum_on_a_100_token_context(embedded):
    tok = embedded.tokenizer
    ids = tok("The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. " * 8
              )["input_ids"][:100]
    assert len(ids) == 100
    target = tok(" The")["input_ids"][0]
    started = time.monotonic()
    got = attribute(embedded.model, tok, ids, target, "input_x_gradient")
    ixg_s = time.monotonic() - started
    started = time.monotonic()
    ig = attribute(embedded.model, tok, ids, target, "integrated_gradients", steps=STEPS)
    ig_s = time.monotonic() - started
    print(f"\n100 tokens: input x gradient {ixg_s:.2f} s, integrated gradients ({STEPS} steps) {ig_s:.2f} s")
    want = library_scores(embedded.model, ids, target, ig.baseline, STEPS)
    # the two forwards differ in float rounding (inputs_embeds and logits_to_keep against ids and full logits):
    # equal to a thousandth of the largest score
    for method, scores in (("input_x_gradient", got.scores), ("integrated_gradients", ig.scores)):
        scale = max(abs(s) for s in want[method])
        assert scores[method] == pytest.approx(want[method], abs=1e-3 * scale), method
    assert "".join(got.tokens) == tok.decode(ids)
    assert ixg_s < 15 and ig_s < attribution.DEFAULT_SECONDS  # generous: the machine is shared with other work
    assert_untouched(embedded.model)


class Models:
    """A model cache holding one model (what ``policy.load`` asks of the app's cache outside public mode)."""

    def __init__(self, loaded):
        self.loaded = loaded

    def get(self, name):
        return self.loaded


def tab_ui(loaded, max_seconds=None):
    from playground.tabs import TABS, all_tabs
    from playground.tabs.base import AppContext, TabUI

    all_tabs()  # each tab module registers itself on import
    return TabUI(TABS["greedy"], AppContext(models=Models(loaded), model_state=None, startup=None,
                                            max_seconds=max_seconds))


def panel_of(ui, runs, step=1, row=0, steps=2) -> str:
    """The panel's text as the browser reads it (HTML entities unescaped)."""
    update = ui.attribute_step(runs, step, row, "tiny", steps, progress=lambda *args, **kwargs: None)
    assert update.visible is True
    return html.unescape(update.value)


def test_the_tab_attributes_the_picked_step_or_says_why_not(model):
    from types import SimpleNamespace

    from core.models import LoadedModel
    from playground.engine import RemoteModel
    from playground.runs import Run

    trace = run(model)
    runs = {"main": Run.from_trace("main", "Greedy", trace)}
    ui = tab_ui(LoadedModel(model, None, "tiny"))
    shown = panel_of(ui, runs, step=2)
    ids, target, _ = step_context(trace, 2)
    want = attribute(model, None, ids, target, "all", steps=2)
    assert shown.count('data-method="integrated_gradients"') == 1 and f"(#{target})" in shown
    assert [float(v) for v in re.findall(r'data-score="([^"]+)"', shown)][:len(ids)] == pytest.approx(
        want.scores["input_x_gradient"], rel=1e-4, abs=1e-6)
    assert "Generate first" in panel_of(ui, {})
    served = LoadedModel(RemoteModel(SimpleNamespace(name="served", eos_token_id=2)), None, "vllm:served")
    assert "vLLM engine's server, which returns no gradients" in panel_of(tab_ui(served), runs)
    other = {"main": Run.from_trace("main", "Greedy", dataclasses.replace(trace, model_name="another"))}
    assert "made by another" in panel_of(ui, other)
    assert "time limit" in panel_of(tab_ui(LoadedModel(model, None, "tiny"), max_seconds=1e-9), runs)
    assert_untouched(model)

"""Attribution of one step's choice: how much each token of the context (the prompt and the tokens generated before
the step) drove the model towards the token it chose there. No UI imports here.

``attribute(model, tokenizer, ids, target, method)`` scores each of ``ids`` for the model's log-probability of
``target`` right after them, by one method or all of them (``METHODS``):

- ``input_x_gradient``: the gradient of that log-probability with respect to each token's input embedding, times
  the embedding, summed over the hidden size (captum ``InputXGradient``);
- ``integrated_gradients``: the same gradient averaged along the straight path from a baseline to the real
  embeddings (``steps`` points, Gauss-Legendre), times the embeddings less the baseline's, summed over the hidden
  size (captum ``IntegratedGradients``); the scores add up to log p(target) at the input less at the baseline, and
  ``delta`` says by how much they miss that. The baseline is the embedding of one reference token (the pad token,
  else EOS) at every position, as ``LayerIntegratedGradients`` with reference ids gives it: an all-zero embedding
  sits where RMSNorm's gradient grows as 1/|x|, and the path integral did not converge from it;
- ``attention``: the attention the last position pays each token, averaged over heads and layers, where the model
  returns attention weights (eager attention only: sdpa and flash kernels return none).

The library is captum (``InputXGradient``, ``IntegratedGradients``), not inseq: inseq 0.7 installs and runs on
transformers 5, but it takes texts and re-tokenizes them (a step's context is token ids, which a round trip
through text need not give back), and its model wrapper sets the tokenizer's padding side and pad token, the
config's pad token id and calls ``model.zero_grad()``; the model and tokenizer here are shared by every visitor.

The pipeline, per call: 1. refuse what cannot be attributed (``AttributionError``: no local torch model, no input
embeddings, an empty or too long context, an id outside the vocabulary); 2. embed ``ids`` once without grad;
3. per method, run captum on a copy of those embeddings that requires grad, through a forward of our own
(``inputs_embeds``, last position's logits only). Nothing is written on the model: no hook (captum's ``Layer*``
methods hook the embedding module, which a visitor's run going through the same module meanwhile would meet), no
``requires_grad`` on a parameter, and captum takes gradients with ``torch.autograd.grad`` for the embeddings alone,
so no parameter's ``.grad`` is filled. The deadline (``time.monotonic()``) is checked before every forward;
past it the call raises ``TimeoutError``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from .records import Trace
from .steer import tokens_before
from .text import TokenTexts, shown

METHODS = ("input_x_gradient", "integrated_gradients", "attention")
GRADIENT_METHODS = ("input_x_gradient", "integrated_gradients")
MAX_CONTEXT = 512  # tokens: integrated gradients runs ``steps`` forwards and backwards of the whole context
MAX_STEPS = 64
DEFAULT_STEPS = 8  # Gauss-Legendre points; the panel shows the completeness gap (delta) that more steps narrow
DEFAULT_SECONDS = 30.0
CHUNK_TOKENS = 512  # path points x context tokens per forward: bounds what one backward keeps


class AttributionError(ValueError):
    """A step, model or request that cannot be attributed; the message says why."""


@dataclass(frozen=True)
class Attribution:
    """The scores of one step's context for its chosen token. ``scores[method]`` has one float per context token
    (``token_ids``); ``unavailable[method]`` says why a requested method gave none."""

    tokens: list[str]  # each context token's text; joined they read as the decoded context
    token_ids: list[int]
    target: int
    target_text: str
    method: str  # what was asked: one of METHODS, or "all"
    scores: dict[str, list[float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0  # how many of the context tokens are the prompt (the rest were generated)
    target_logprob: float = 0.0  # log p(target | context) under the model (no processors)
    steps: int = 0  # integrated gradients' path points
    baseline: int | None = None  # integrated gradients' reference token id
    delta: float | None = None  # integrated gradients' completeness gap (sum of scores vs the log-prob change)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Attribution":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_json(cls, text: str) -> "Attribution":
        return cls.from_dict(json.loads(text))


def embeddings_of(model) -> torch.nn.Module:
    """The model's input embedding module (raises ``AttributionError`` when it has none)."""
    if not isinstance(model, torch.nn.Module):
        raise AttributionError(f"attribution needs a local torch model; this one is a {type(model).__name__} "
                               "(a model served elsewhere returns no gradients)")
    try:
        embed = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embed = None
    if not isinstance(embed, torch.nn.Module):
        raise AttributionError(f"attribution needs the model's input embeddings; {type(model).__name__} exposes "
                               "none (get_input_embeddings)")
    return embed


def check_request(model, ids: list[int], target: int, method: str, steps: int) -> None:
    """Refuse what cannot be attributed, naming the field and the bound."""
    embed = embeddings_of(model)
    if method != "all" and method not in METHODS:
        raise AttributionError(f"`method` must be one of {', '.join(METHODS)} or all; got {method!r}")
    if not ids:
        raise AttributionError("the step has no context to attribute (no prompt tokens before it)")
    if len(ids) > MAX_CONTEXT:
        raise AttributionError(f"the context must be at most {MAX_CONTEXT} tokens to attribute; got {len(ids)} "
                               "(pick an earlier step or use a shorter prompt)")
    vocab = getattr(embed, "num_embeddings", None)
    if vocab is not None and not all(0 <= int(i) < vocab for i in [*ids, target]):
        raise AttributionError(f"token ids must be in [0, {vocab - 1}] for this model; got "
                               f"{next(int(i) for i in [*ids, target] if not 0 <= int(i) < vocab)}")
    if not (isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise AttributionError(f"`steps` must be an integer in [1, {MAX_STEPS}]; got {steps!r}")


def step_context(trace: Trace, step: int, row: int = 0) -> tuple[list[int], int, int]:
    """``(ids, target, prompt_tokens)`` of step ``step`` of ``trace``'s row ``row`` (for the beam family a running
    beam, as the alternatives table and ``core.steer`` read it): the prompt and the tokens the row generated before
    the step, the token it chose there (its first, where a step appends several), and how many of the ids are the
    user's prompt (a branch's prompt ids end with its parent's tokens, counted as generated)."""
    if not trace.prompt_ids:
        raise AttributionError("the run has no prompt ids to attribute")
    record = next((rec for rec in trace.steps if rec.step == step), None)
    if record is None:
        raise AttributionError(f"`step` must be a recorded step of this run, in [0, {len(trace.steps) - 1}]; "
                               f"got {step}")
    rows = [rs for rs in record.rows if rs.row == row]
    if not rows:
        raise AttributionError(f"`row` must be a row of step {step}, one of {sorted({rs.row for rs in record.rows})}; "
                               f"got {row}")
    if not rows[0].chosen:
        raise AttributionError(f"row {row} chose no token at step {step} (a beam whose continuations were all "
                               "pruned): pick another row")
    try:
        earlier = tokens_before(trace.steps, trace.steps.index(record), row)
    except ValueError as err:
        raise AttributionError(str(err)) from None
    prompt = list(trace.prompt_ids[0])
    carried = len(trace.origin.prefix) if trace.origin is not None else 0
    return prompt + earlier, int(rows[0].chosen[0]), len(prompt) - carried


def returns_attentions(model) -> bool:
    """Does a forward with ``output_attentions=True`` give weights (eager attention), per the model's config?"""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == "eager"


def _texts(tokenizer, ids: list[int], target: int) -> tuple[list[str], str]:
    """The context tokens' texts as the token view shows them, and the target's text after them."""
    if tokenizer is None:
        return [f"#{i}" for i in ids], f"#{target}"
    texts = TokenTexts(tokenizer)
    pieces, pending = texts.pieces(ids)
    return shown(pieces), texts.candidate(pending, target)


def reference_token(model, tokenizer) -> int:
    """Integrated gradients' reference token: the tokenizer's pad token, else its EOS, the config's pad id, or 0."""
    for owner, name in ((tokenizer, "pad_token_id"), (tokenizer, "eos_token_id"), (getattr(model, "config", None),
                                                                                   "pad_token_id")):
        value = getattr(owner, name, None) if owner is not None else None
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def _log_prob(model, target: int, deadline: float, tick: Callable[[], None]):
    """``f(embeds [N, S, H]) -> [N]``: log p(target) after each row's last position, float32. The deadline is
    checked before each forward; ``tick()`` after it (the progress)."""
    def forward(embeds: torch.Tensor) -> torch.Tensor:
        if time.monotonic() >= deadline:
            raise TimeoutError("attribution ran past its time limit; use fewer integrated-gradients steps or a "
                               "shorter context")
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)  # [N, S]
        logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=1).logits
        tick()
        return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]  # [N, V] -> [N]
    return forward


def _attention(model, ids_tensor: torch.Tensor) -> list[float]:
    """The last position's attention over the context, averaged over layers and heads."""
    with torch.no_grad():
        out = model(input_ids=ids_tensor, use_cache=False, output_attentions=True, logits_to_keep=1)
    maps = [a for a in (out.attentions or ()) if a is not None]  # L x [1, heads, S, S]
    if not maps:
        raise AttributionError("the model returned no attention weights")
    last = torch.stack([a[0, :, -1].float() for a in maps])  # [L, heads, S]
    return last.mean(dim=(0, 1)).tolist()


def attribute(model, tokenizer, ids: list[int], target: int, method: str = "all", *, steps: int = DEFAULT_STEPS,
              deadline: float | None = None, prompt_tokens: int | None = None, baseline: int | None = None,
              progress: Callable[[float], None] | None = None) -> Attribution:
    """Score each of ``ids`` for the model's log-probability of ``target`` right after them, by ``method`` (one of
    ``METHODS``, or "all": every method this model allows, the others named in ``unavailable``). ``steps``:
    integrated gradients' path points; ``deadline``: a ``time.monotonic()`` past which it raises ``TimeoutError``
    (default ``DEFAULT_SECONDS`` from now); ``baseline``: integrated gradients' reference token id (default
    ``reference_token``); ``prompt_tokens``: how many of ``ids`` are the prompt;
    ``progress(fraction)`` is called after each forward. Raises ``AttributionError`` for what it cannot attribute."""
    from captum.attr import InputXGradient, IntegratedGradients  # imports matplotlib: only when first asked

    started = time.monotonic()
    deadline = started + DEFAULT_SECONDS if deadline is None else deadline
    ids, target = [int(i) for i in ids], int(target)
    baseline = reference_token(model, tokenizer) if baseline is None else int(baseline)
    check_request(model, ids, target, method, steps)
    check_request(model, [baseline], target, method, steps)
    embed = embeddings_of(model)
    wanted = METHODS if method == "all" else (method,)
    unavailable = {}
    if "attention" in wanted and not returns_attentions(model):
        unavailable["attention"] = (
            f"this model runs {getattr(model.config, '_attn_implementation', None) or 'its own'} attention, which "
            "returns no weights (output_attentions needs attn_implementation=\"eager\"; the shared model is not "
            "switched for one visitor)")
    if method != "all" and method in unavailable:
        raise AttributionError(f"{method} is unavailable: {unavailable[method]}")
    # one forward per chunk of the path, each holding at most CHUNK_TOKENS positions
    chunk = max(1, min(steps, CHUNK_TOKENS // len(ids)))
    # the progress counts forwards: log p at the input, input x gradient's, the path's chunks and captum's two
    # for the convergence delta (at the input and at the baseline), the attention's
    forwards = (1 + ("input_x_gradient" in wanted) + ("integrated_gradients" in wanted) * (math.ceil(steps / chunk) + 2)
                + ("attention" in wanted and "attention" not in unavailable))
    done = [0]

    def tick():
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / max(forwards, 1), 1.0))

    ids_tensor = torch.tensor([ids], device=embed.weight.device)  # [1, S]
    with torch.no_grad():
        inputs = embed(ids_tensor).detach()  # [1, S, H]
        reference = embed(torch.full_like(ids_tensor, baseline)).detach()  # [1, S, H]
    forward = _log_prob(model, target, deadline, tick)
    scores, delta = {}, None
    try:
        with torch.no_grad():
            target_logprob = float(forward(inputs)[0])
        with torch.enable_grad():  # grads on the embeddings' copy alone: the parameters are read, not traced for
            if "input_x_gradient" in wanted:
                attr = InputXGradient(forward).attribute(inputs.clone().requires_grad_())  # [1, S, H]
                scores["input_x_gradient"] = attr.detach().sum(-1)[0].float().tolist()  # [S]
            if "integrated_gradients" in wanted:
                attr, gap = IntegratedGradients(forward).attribute(
                    inputs.clone().requires_grad_(), baselines=reference, n_steps=steps,
                    internal_batch_size=chunk, return_convergence_delta=True)  # [1, S, H]
                scores["integrated_gradients"] = attr.detach().sum(-1)[0].float().tolist()  # [S]
                delta = float(gap.reshape(-1)[0])
        if "attention" in wanted and "attention" not in unavailable:
            if time.monotonic() >= deadline:
                raise TimeoutError("attribution ran past its time limit before the attention weights")
            scores["attention"] = _attention(model, ids_tensor)
            tick()
    except RuntimeError as err:
        # e.g. a quantized layer whose kernel has no backward: the model's own words, after ours
        raise AttributionError(f"this model cannot be attributed: its forward gave no gradients ({err})") from None
    tokens, target_text = _texts(tokenizer, ids, target)
    return Attribution(tokens=tokens, token_ids=ids, target=target, target_text=target_text, method=method,
                       scores=scores, unavailable=unavailable,
                       prompt_tokens=len(ids) if prompt_tokens is None else int(prompt_tokens),
                       target_logprob=target_logprob, steps=steps if "integrated_gradients" in scores else 0,
                       baseline=baseline if "integrated_gradients" in scores else None, delta=delta,
                       elapsed_s=time.monotonic() - started)


__all__ = ["METHODS", "MAX_CONTEXT", "MAX_STEPS", "DEFAULT_STEPS", "DEFAULT_SECONDS", "Attribution",
           "AttributionError", "attribute", "check_request", "reference_token", "step_context", "returns_attentions"]

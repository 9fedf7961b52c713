"""The attribution of a picked step (``core.attribution.Attribution``) as HTML: the context's tokens (the prompt,
then the tokens generated before the step) coloured by their score, one line of tokens per method, the score on
hover; the look of the token view (``playground.figures.tokens``: its spans, its legend).

Scores are coloured relative to the method's largest absolute score: blue for a token that raised the chosen
token's log-probability, red for one that lowered it, stronger for more. The CSS classes (``assets/style.css``):
``dp-attr`` (the panel), ``dp-ap1`` … ``dp-ap4`` and ``dp-an1`` … ``dp-an4`` (positive and negative buckets),
``dp-a0`` (near zero), ``dp-attr-gen`` (a generated token of the context), ``dp-attr-target`` (the chosen token).
"""

from __future__ import annotations

import html

from core.attribution import Attribution

CAPTION = ("Which tokens before the picked step drove its choice: each token of the prompt and of the text generated "
           "before the step, coloured by how much it raised (blue) or lowered (red) the model's log-probability of "
           "the chosen token (before the sampler chain and the strategy's own scoring). Hover a token for its score.")

LABELS = {"input_x_gradient": "Input x gradient", "integrated_gradients": "Integrated gradients",
          "attention": "Attention (last position, mean of layers and heads)"}
BUCKETS = (0.75, 0.5, 0.25, 0.1)  # lower bounds of |score| / the largest |score| for buckets 4 … 1; below: dp-a0


def bucket_class(score: float, largest: float) -> str:
    """``dp-ap4`` … ``dp-ap1``: positive scores, strong to weak; ``dp-an4`` … ``dp-an1``: negative; ``dp-a0``: ~0."""
    share = abs(score) / largest if largest > 0 else 0.0
    for i, low in enumerate(BUCKETS):
        if share >= low:
            return f"dp-a{'p' if score > 0 else 'n'}{len(BUCKETS) - i}"
    return "dp-a0"


def _legend() -> str:
    items = [f'<span class="dp-tok dp-ap{len(BUCKETS) - i}">+{low:.0%}</span>' for i, low in enumerate(BUCKETS)]
    items += [f'<span class="dp-tok dp-an{len(BUCKETS) - i}">−{low:.0%}</span>' for i, low in enumerate(BUCKETS)]
    return ('<div class="dp-legend">' + "".join(items)
            + '<span class="dp-tok dp-a0">of the largest score</span></div>')


def _line(att: Attribution, method: str) -> str:
    scores = att.scores[method]
    largest = max((abs(s) for s in scores), default=0.0)
    spans = []
    for i, (text, token_id, score) in enumerate(zip(att.tokens, att.token_ids, scores)):
        where = "prompt" if i < att.prompt_tokens else "generated"
        share = score / largest if largest > 0 else 0.0
        title = f"{LABELS[method]}: {score:+.4g} ({share:+.0%} of the largest)\n#{token_id}, {where} token {i}"
        cls = bucket_class(score, largest) + ("" if i < att.prompt_tokens else " dp-attr-gen")
        spans.append(f'<span class="dp-tok {cls}" data-index="{i}" data-score="{score:.6g}" '
                     f'title="{html.escape(title, quote=True)}">{html.escape(text)}</span>')
    target = (f'<span class="dp-tok dp-attr-target" title="the chosen token, #{att.target}">'
              f"{html.escape(att.target_text)}</span>")
    return f'<div class="dp-tokens" dir="auto" data-method="{method}">{"".join(spans)}{target}</div>'


def _method_head(att: Attribution, method: str) -> str:
    head = f"<b>{LABELS[method]}</b>"
    if method == "integrated_gradients":
        gap = "" if att.delta is None else (
            f"; their sum misses the log-probability change from it by {att.delta:+.3g}, the gap of a path integral "
            "not yet converged: the larger against the scores, the less they can be trusted; more steps usually "
            "narrow it")
        head += f" ({att.steps} steps from the embedding of token #{att.baseline} at every position{gap})"
    return f'<div class="dp-attr-method">{head}</div>'


def attribution_html(att: Attribution, step: int, row: int = 0) -> str:
    """The panel: what was attributed, then per method its legend-coloured tokens; unavailable methods say why."""
    parts = [f'<div class="dp-caption">{html.escape(CAPTION)}</div>',
             f'<div class="dp-attr-head">Step {step}, row {row}: why {html.escape(repr(att.target_text))}'
             f" (#{att.target}), log p = {att.target_logprob:.3f} under the model; {len(att.token_ids)} context "
             f"tokens ({att.prompt_tokens} of the prompt, generated ones underlined), {att.elapsed_s:.1f} s</div>",
             _legend()]
    for method in LABELS:
        if method in att.scores:
            parts += [_method_head(att, method), _line(att, method)]
        elif method in att.unavailable:
            parts.append(f'<div class="dp-attr-method"><b>{LABELS[method]}</b>: unavailable: '
                         f"{html.escape(att.unavailable[method])}</div>")
    return f'<div class="dp-attr">{"".join(parts)}</div>'


def message_html(text: str) -> str:
    """The panel saying why there is no attribution (a refusal, a time limit)."""
    return f'<div class="dp-attr dp-tokens dp-empty" dir="auto">{html.escape(text)}</div>'


__all__ = ["CAPTION", "LABELS", "attribution_html", "message_html", "bucket_class"]

"""The logit lens panel of the greedy, sampling and DoLa tabs: its two figures, the checkbox that asks for it, and the
plan option that records it. Off unless asked: reading every layer through the LM head costs about one more head per
layer and step (what that costs on the embedded model: the README's "Logit lens", from bench/bench_core.py's
"greedy + logit lens" row), and its records hold every layer's top tokens besides the step's own."""

from __future__ import annotations

import gradio as gr

from core.lens import lens_problem

from ..figures import lens
from ..i18n import tr
from .base import Figure, Plan


LENS_INPUT = "logit_lens"  # the side input's API name


def lens_figures() -> tuple[Figure, Figure]:
    """Every layer's probability of the chosen tokens (layers x steps), and each layer's top tokens at the picked
    step (both empty, with a hint, until a run records the lens)."""
    return (Figure("Logit lens", lambda v: lens.lens_figure(v.steps, v.row), lens.CAPTION, only_with=LENS_INPUT),
            Figure("Logit lens at the picked step", lambda v: lens.lens_step_figure(v.steps, v.step, v.row),
                   lens.STEP_CAPTION, picked=True, only_with=LENS_INPUT))


def lens_input() -> dict[str, gr.Checkbox]:
    """The tab's "Record the logit lens" checkbox, off by default."""
    return {LENS_INPUT: gr.Checkbox(label=tr("Record the logit lens"), value=False,
                                    info=tr("every layer read through the LM head: about one more head per layer and "
                                            "step, so runs are slower"))}


def with_lens(plan: Plan, loaded, side: dict) -> Plan:
    """``plan``, recording the logit lens when the checkbox asks for it and ``loaded``'s model can be read that way (a
    decoder-only model with a final norm and an LM head; the panel says what to generate with otherwise)."""
    if side.get(LENS_INPUT) and not lens_problem(loaded.model):
        plan.model_kwargs["lens"] = True
    return plan

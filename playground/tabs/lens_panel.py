"""The logit lens panel of the greedy, sampling and DoLa tabs: its two figures, and the plan option that records it."""

from __future__ import annotations

from core.lens import lens_problem

from ..figures import lens
from .base import Figure, Plan


def lens_figures() -> tuple[Figure, Figure]:
    """Every layer's probability of the chosen tokens (layers x steps), and each layer's top tokens at the picked
    step."""
    return (Figure("Logit lens", lambda v: lens.lens_figure(v.steps, v.row), lens.CAPTION),
            Figure("Logit lens at the picked step", lambda v: lens.lens_step_figure(v.steps, v.step, v.row),
                   lens.STEP_CAPTION, picked=True))


def with_lens(plan: Plan, loaded) -> Plan:
    """``plan``, recording the logit lens where ``loaded``'s model can be read that way (a decoder-only model with a
    final norm and an LM head; the panel says what to generate with otherwise)."""
    if not lens_problem(loaded.model):
        plan.model_kwargs["lens"] = True
    return plan

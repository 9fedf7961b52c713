"""Contrastive search: the top-k candidates rescored by (1 - alpha) * confidence - alpha * degeneration penalty."""

from __future__ import annotations

import gradio as gr

from ..figures import contrastive
from ..fields import PORTED_GROUPS
from . import register
from .base import Figure, StrategyTab, candidates_panel


class Contrastive(StrategyTab):
    key = "contrastive"
    title = "Contrastive"
    intro = ("**Contrastive search** (`penalty_alpha > 0`, `top_k > 1`) looks at the `top_k` most probable "
             "tokens, runs the model on each, and picks the one whose hidden state is least similar to the "
             "context, weighted by `penalty_alpha`. `penalty_alpha=0` is greedy search.")
    fixed = {"do_sample": False, "num_beams": 1}
    advanced = PORTED_GROUPS
    steppable = True
    figures = (Figure("Contrastive scores", lambda v: contrastive.contrastive_figure(v.steps, v.step, v.row),
                      contrastive.CAPTION, picked=True),
               candidates_panel())

    def controls(self):
        return {
            "penalty_alpha": gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="penalty_alpha", info="[0, 1]"),
            "top_k": gr.Slider(1, 20, value=4, step=1, label="top_k", info="> 1"),
        }


register(Contrastive())

"""DoLa: decoding by contrasting layers, shown beside plain greedy decoding of the same prompt."""

from __future__ import annotations

import gradio as gr

from ..figures import dola
from .status import join_texts
from ..fields import PORTED_GROUPS
from . import register
from .base import Figure, Plan, StrategyTab, View, candidates_panel
from .lens_panel import lens_figures, lens_input, with_lens


class Dola(StrategyTab):
    key = "dola"
    title = "DoLa"
    intro = ("**DoLa** (`dola_layers`) contrasts the final layer's next-token log-probabilities with those of "
             "an earlier (premature) layer, the one whose distribution diverges most, and picks from the "
             "difference: facts the upper layers add get amplified. `\"low\"` / `\"high\"` choose the lower or "
             "upper half of the layers as candidates, or give a list. The right-hand text is plain greedy "
             "decoding with the same `repetition_penalty`, for comparison.")
    fixed = {"do_sample": False, "num_beams": 1}
    advanced = PORTED_GROUPS
    text_labels = ("DoLa text", "Greedy text (same settings, no dola_layers)")
    steppable = True
    figures = (Figure("Layer divergences", lambda v: dola.dola_figure(v.steps, v.row), dola.CAPTION),
               candidates_panel(), *lens_figures())

    def controls(self):
        return {
            "dola_layers": gr.Dropdown(["low", "high"], value="high", allow_custom_value=True, label="dola_layers",
                                       info='"low", "high" or a list of layer indices such as [8, 10, 12]'),
            "repetition_penalty": gr.Slider(0.5, 2.0, value=1.2, step=0.05, label="repetition_penalty",
                                            info="1.2 is what the DoLa paper recommends"),
        }

    def side_inputs(self, app):
        return lens_input()

    def plans(self, kwargs, side, loaded, app):
        greedy = {k: v for k, v in kwargs.items() if k != "dola_layers"}
        return [with_lens(Plan("main", "DoLa", kwargs), loaded, side), Plan("greedy", "Greedy", greedy)]

    def texts(self, view: View):
        greedy = view.runs.get("greedy")
        return [join_texts(view.main.texts), join_texts(greedy.texts) if greedy else ""]


register(Dola())

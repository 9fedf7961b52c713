"""Greedy search: the most probable token at every step (``do_sample=False``, ``num_beams=1``).

Also shows the model's own ``generation_config`` and the defaults transformers fills in for what it
leaves unset, among them ``max_length=20``: without ``max_new_tokens``, ``generate`` stops after 20
new tokens.
"""

from __future__ import annotations

import json

import gradio as gr
from transformers import GenerationConfig

from ..fields import GREEDY_GROUPS
from ..i18n import tr
from . import register
from .base import AppContext, Plan, StrategyTab, candidates_panel, chain_panels
from .lens_panel import lens_figures, lens_input, with_lens


def model_defaults(loaded) -> tuple[str, str]:
    """(the model's generation_config as saved, the transformers defaults that apply to what it leaves unset)."""
    own = loaded.model.generation_config.to_diff_dict()
    own = {k: v for k, v in own.items() if not k.startswith("_") and k != "transformers_version"}
    defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    unset = {k: v for k, v in defaults.items() if own.get(k) is None and v is not None}
    limits = ", ".join(f"`{k}={unset[k]!r}`" for k in ("max_length", "do_sample", "num_beams", "temperature",
                                                        "top_k", "top_p") if k in unset)
    note = (f"**{loaded.name}** leaves these unset, so transformers' defaults apply: {limits}. "
            "`max_length=20` is the one that bites: with no `max_new_tokens`, `generate()` stops after "
            "20 new tokens. Tick the box below to see it.")
    return json.dumps(own, indent=2), note


class Greedy(StrategyTab):
    key = "greedy"
    title = "Greedy"
    intro = ("**Greedy search** appends the single most probable token at every step "
             "(`do_sample=False`, `num_beams=1`): deterministic, fast, and prone to repetition.")
    fixed = {"do_sample": False, "num_beams": 1}
    steppable = True
    figures = (candidates_panel(), *chain_panels(), *lens_figures())
    advanced = GREEDY_GROUPS

    def controls(self):
        return {"repetition_penalty": gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="repetition_penalty",
                                                info="1.0 = off; > 1 discourages tokens already in the text")}

    def side_inputs(self, app: AppContext):
        return {"defaults_only": gr.Checkbox(label=tr("Leave max_new_tokens unset (use the model's defaults)"),
                                             value=False), **lens_input()}

    def model_panel(self, app: AppContext):
        config, note = model_defaults(app.startup)
        with gr.Accordion(tr("The model's default generation config"), open=False):
            return [gr.Code(config, language="json", label="model.generation_config", interactive=False),
                    gr.Markdown(note, label="Defaults that apply")]

    def on_model(self, loaded):
        return list(model_defaults(loaded))

    def plans(self, kwargs, side, loaded, app):
        if side["defaults_only"]:
            kwargs = {k: v for k, v in kwargs.items() if k != "max_new_tokens"}
        return [with_lens(Plan("main", self.title, kwargs), loaded, side)]


register(Greedy())

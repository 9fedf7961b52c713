"""Multinomial sampling (``do_sample=True``) and every warper transformers applies before it."""

from __future__ import annotations

import gradio as gr

from ..fields import SAMPLING_GROUPS
from ..figures import smoothing
from . import register
from .base import Figure, Plan, StrategyTab, candidates_panel, chain_panels, samples_panel
from .lens_panel import lens_figures, lens_input, with_lens


def sampling_controls(num_return_sequences: bool = True) -> dict:
    """Temperature and the truncation warpers, labelled and ranged as in ``GenerationConfig``
    (ranges reach the invalid edge, e.g. ``top_p=0``, so the core's message can be seen)."""
    controls = {}
    with gr.Row():  # two to a row: the page stays about two screens tall
        controls["temperature"] = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature",
                                            info="> 0; < 1 sharpens")
        controls["top_k"] = gr.Slider(0, 200, value=50, step=1, label="top_k", info="0 = off")
    with gr.Row():
        controls["top_p"] = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="top_p", info="(0, 1]; 1 = off")
        controls["min_p"] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="min_p", info="[0, 1]; 0 = off")
    with gr.Row():
        controls["typical_p"] = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="typical_p", info="(0, 1]; 1 = off")
        controls["epsilon_cutoff"] = gr.Slider(0.0, 0.01, value=0.0, step=0.0001, label="epsilon_cutoff",
                                               info="[0, 1); 0 = off; try 3e-4")
    with gr.Row():
        controls["eta_cutoff"] = gr.Slider(0.0, 0.01, value=0.0, step=0.0001, label="eta_cutoff",
                                           info="[0, 1); 0 = off; try 3e-4")
        if num_return_sequences:
            controls["num_return_sequences"] = gr.Slider(1, 4, value=1, step=1, label="num_return_sequences")
    return controls


def smoothing_panel() -> Figure:
    """The smoothing factor's curve for the run's settings (the Advanced accordion's ``smoothing_factor``), drawn by
    the sampler itself; after the tab's other figures, so that those keep their places among the API's outputs."""
    return Figure("Smoothing factor curve", lambda v: smoothing.smoothing_figure(v.main.kwargs), smoothing.CAPTION,
                  only_with="smoothing_factor")


class Sampling(StrategyTab):
    key = "sampling"
    title = "Sampling"
    intro = ("**Multinomial sampling** (`do_sample=True`) draws each token from the model's distribution after "
             "the logits warpers reshaped it: `temperature` scales the logits, `top_k` / `top_p` / `min_p` / "
             "`typical_p` / `epsilon_cutoff` / `eta_cutoff` remove unlikely tokens. The same seed gives the "
             "same text.")
    fixed = {"do_sample": True, "num_beams": 1}
    seeded = True
    steppable = True
    samples = True
    figures = (candidates_panel(), *chain_panels(), *lens_figures(), samples_panel(), smoothing_panel())
    advanced = SAMPLING_GROUPS

    def controls(self):
        return sampling_controls()

    def side_inputs(self, app):
        return lens_input()

    def plans(self, kwargs, side, loaded, app):
        return [with_lens(Plan("main", self.title, kwargs), loaded, side)]


register(Sampling())

"""Beam sampling: beam search whose candidates are sampled (``num_beams > 1``, ``do_sample=True``)."""

from __future__ import annotations

import gradio as gr

from ..fields import BEAM_GROUPS
from . import register
from .base import StrategyTab, candidates_panel, samples_panel
from .beam import beam_tree_panel


class BeamSample(StrategyTab):
    key = "beam_sample"
    title = "Beam sampling"
    intro = ("**Beam sampling** (`num_beams > 1`, `do_sample=True`) draws each beam's continuations from the "
             "warped distribution instead of taking the top ones, then keeps the best `num_beams` as beam search "
             "does. The same seed gives the same beams.")
    fixed = {"do_sample": True}
    seeded = True
    beam = True
    samples = True
    figures = (beam_tree_panel(), candidates_panel("Candidates of the picked beam at the picked step"),
               samples_panel())
    advanced = tuple(g for g in BEAM_GROUPS if g != "constraints")  # constrained beam search does not sample

    def controls(self):
        return {
            "num_beams": gr.Slider(1, 8, value=4, step=1, label="num_beams"),
            "temperature": gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature", info="> 0"),
            "top_k": gr.Slider(0, 200, value=50, step=1, label="top_k", info="0 = off"),
            "top_p": gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="top_p", info="(0, 1]; 1 = off"),
            "length_penalty": gr.Slider(-2.0, 2.0, value=1.0, step=0.1, label="length_penalty"),
            "num_return_sequences": gr.Slider(1, 8, value=1, step=1, label="num_return_sequences",
                                              info="<= num_beams"),
        }


register(BeamSample())

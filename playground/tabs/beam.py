"""Beam search: ``num_beams`` hypotheses kept at every step, ranked by cumulative log-probability."""

from __future__ import annotations

import gradio as gr

from ..figures import beam_tree
from . import register
from .base import Figure, StrategyTab, candidates_panel


def beam_tree_panel() -> Figure:
    """The tree of every expanded candidate, the current best hypotheses' paths highlighted (the returned
    sequences once finished)."""
    return Figure("Beam tree", lambda view: beam_tree.beam_tree_figure(view.steps), beam_tree.CAPTION)


def beam_controls(num_beams: int = 4) -> dict:
    return {
        "num_beams": gr.Slider(1, 8, value=num_beams, step=1, label="num_beams"),
        "length_penalty": gr.Slider(-2.0, 2.0, value=1.0, step=0.1, label="length_penalty",
                                    info="score / length ** length_penalty; > 0 favours longer sequences"),
        "early_stopping": gr.Radio(["False", "True", "never"], value="False", label="early_stopping",
                                   info='True: stop at num_beams finished; "never": only when none can improve'),
        "no_repeat_ngram_size": gr.Slider(0, 6, value=0, step=1, label="no_repeat_ngram_size", info="0 = off"),
        "num_return_sequences": gr.Slider(1, 8, value=1, step=1, label="num_return_sequences",
                                          info="<= num_beams"),
    }


class BeamSearch(StrategyTab):
    key = "beam"
    title = "Beam search"
    intro = ("**Beam search** keeps the `num_beams` best partial sequences at every step and expands each by "
             "its most probable tokens; finished hypotheses are ranked by `score / length ** length_penalty`. "
             "The streamed text is the current best hypothesis; the tree shows every candidate it tried.")
    fixed = {"do_sample": False}
    beam = True
    figures = (beam_tree_panel(), candidates_panel("Candidates of the picked beam at the picked step"))

    def controls(self):
        return beam_controls()


register(BeamSearch())

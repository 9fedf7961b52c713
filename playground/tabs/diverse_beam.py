"""Diverse (group) beam search: beams split into groups, each penalised for repeating the tokens
earlier groups chose at the same step (``num_beam_groups``, ``diversity_penalty``)."""

from __future__ import annotations

import gradio as gr

from ..fields import PORTED_GROUPS
from . import register
from .base import StrategyTab, candidates_panel
from .beam import beam_tree_panel


class DiverseBeam(StrategyTab):
    key = "diverse_beam"
    title = "Diverse beam search"
    intro = ("**Diverse beam search** splits `num_beams` into `num_beam_groups` groups that run beam search one "
             "after the other at each step; a group's scores lose `diversity_penalty` for every time an earlier "
             "group picked the same token at this step (Hamming diversity). The tree colours beams by group.")
    fixed = {"do_sample": False}
    advanced = PORTED_GROUPS
    beam = True
    figures = (beam_tree_panel(), candidates_panel("Candidates of the picked beam at the picked step"))

    def controls(self):
        return {
            "num_beams": gr.Slider(2, 8, value=4, step=1, label="num_beams"),
            "num_beam_groups": gr.Slider(1, 8, value=2, step=1, label="num_beam_groups",
                                         info="divides num_beams"),
            "diversity_penalty": gr.Slider(0.0, 5.0, value=1.0, step=0.1, label="diversity_penalty", info=">= 0"),
            "length_penalty": gr.Slider(-2.0, 2.0, value=1.0, step=0.1, label="length_penalty"),
            "num_return_sequences": gr.Slider(1, 8, value=2, step=1, label="num_return_sequences",
                                              info="<= num_beams"),
        }


register(DiverseBeam())

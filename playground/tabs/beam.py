"""Beam search: ``num_beams`` hypotheses kept at every step, ranked by cumulative log-probability."""

from __future__ import annotations

import json

import gradio as gr

from core.constraints import unmet_words

from ..fields import BEAM_GROUPS
from ..figures import beam_tree
from .status import join_texts
from . import register
from .base import Figure, StrategyTab, View, candidates_panel


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
    advanced = BEAM_GROUPS

    def controls(self):
        return beam_controls()

    def texts(self, view: View):
        return [join_texts(flag_forced_words(view))]


def flag_forced_words(view: View) -> list[str]:
    """The returned texts, each that misses a forced word (``force_words_ids``) flagged with the words it misses."""
    trace, texts = view.main.trace, list(view.main.texts)
    words = (trace.config.get("force_words_ids") if trace is not None else None) or []  # as token ids
    if not words or len(trace.sequences) != len(texts):
        return texts
    asked = view.main.kwargs.get("force_words_ids") or words  # as the user wrote them (words), same order
    prompt = len(trace.prompt_ids[0]) if trace.prompt_ids else 0
    flagged = []
    for seq, text in zip(trace.sequences, texts):
        missing = [json.dumps(asked[i], ensure_ascii=False) for i in unmet_words(seq[prompt:], words)]
        flagged.append(text if not missing else f"✗ misses {', '.join(missing)}: {text}")
    return flagged


register(BeamSearch())

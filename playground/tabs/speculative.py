"""Assisted (speculative) decoding with a draft model or prompt lookup, timed against plain greedy."""

from __future__ import annotations

import gradio as gr

from .. import policy
from ..figures import speculative
from ..fields import ASSISTED_GROUPS
from . import register
from .base import AppContext, Figure, Plan, StrategyTab, View, candidates_panel

PROMPT_LOOKUP = "prompt lookup (no assistant model)"
ASSISTANT_FIELDS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def timing(view: View):
    results = {run.label: run.tokens_per_s for run in view.runs.values() if run.done and run.new_tokens}
    return speculative.timing_figure(results)


class Speculative(StrategyTab):
    key = "speculative"
    title = "Speculative"
    intro = ("**Assisted decoding** lets a cheap drafter propose several tokens that the main model verifies "
             "in one forward pass: an `assistant_model` (a smaller model; another vocabulary works through "
             "universal assisted decoding) or **prompt lookup** (`prompt_lookup_num_tokens`), which copies "
             "n-grams from the prompt. Under greedy decoding the text equals plain greedy's; only the speed "
             "changes, measured below against a plain greedy run of the same prompt.")
    fixed = {"do_sample": False, "num_beams": 1}
    advanced = ASSISTED_GROUPS
    text_labels = ("Assisted text", "Greedy text (no assistant)")
    figures = (Figure("Drafted tokens", lambda v: speculative.speculative_figure(v.steps, v.row),
                      speculative.CAPTION),
               Figure("Timing vs plain greedy", timing, speculative.TIMING_CAPTION),
               candidates_panel())

    def controls(self):
        return {
            "prompt_lookup_num_tokens": gr.Slider(1, 20, value=10, step=1, label="prompt_lookup_num_tokens",
                                                  info="prompt lookup: tokens copied per draft"),
            "num_assistant_tokens": gr.Slider(1, 20, value=20, step=1, label="num_assistant_tokens",
                                              info="assistant model: tokens drafted per round"),
            "num_assistant_tokens_schedule": gr.Radio(["constant", "heuristic", "heuristic_transient"],
                                                      value="constant", label="num_assistant_tokens_schedule"),
            "assistant_confidence_threshold": gr.Slider(0.0, 1.0, value=0.4, step=0.05,
                                                        label="assistant_confidence_threshold"),
        }

    def side_inputs(self, app: AppContext):
        kinds = "a named model or Hub id" if policy.public_mode() else "a named model, Hub id or folder"
        return {"assistant_model": gr.Dropdown([PROMPT_LOOKUP, *app.model_choices], value=PROMPT_LOOKUP,
                                               allow_custom_value=True, label="assistant_model",
                                               info=f"{kinds}; or prompt lookup")}

    def plans(self, kwargs, side, loaded, app):
        assistant = side["assistant_model"]
        greedy = {k: v for k, v in kwargs.items() if k != "prompt_lookup_num_tokens" and k not in ASSISTANT_FIELDS}
        if not assistant or assistant == PROMPT_LOOKUP:
            assisted = {k: v for k, v in kwargs.items() if k not in ASSISTANT_FIELDS}
            return [Plan("main", "Prompt lookup", assisted), Plan("greedy", "Greedy", greedy)]
        # in the main model's precision; in public mode checked, sized and worded
        helper = policy.load(app.models, policy.model_key(assistant, loaded.dtype), "assistant_model")
        assisted = {k: v for k, v in kwargs.items() if k != "prompt_lookup_num_tokens"}
        model_kwargs = {"assistant_model": helper.model}
        if helper.model.config.get_text_config().vocab_size != loaded.model.config.get_text_config().vocab_size:
            model_kwargs["assistant_tokenizer"] = helper.tokenizer  # universal assisted decoding
        return [Plan("main", "Assisted", assisted, model_kwargs, assistant=helper.name),  # "Assisted by <name>"
                Plan("greedy", "Greedy", greedy)]

    def texts(self, view: View):
        greedy = view.runs.get("greedy")
        return [view.main.texts[0] if view.main.texts else "", greedy.texts[0] if greedy and greedy.texts else ""]

    def note(self, view: View):
        rate = speculative.acceptance_rate(view.steps)
        greedy = view.runs.get("greedy")
        same = greedy is not None and greedy.done and greedy.tokens[:1] == view.main.tokens[:1]
        parts = [f"acceptance rate {rate:.0%}" if rate is not None else "nothing drafted"]
        if greedy is not None and greedy.done:
            parts.append("same tokens as greedy" if same else "tokens differ from greedy")
        return "; ".join(parts)


register(Speculative())

"""KV cache kinds: the default dynamic cache, quantized caches (quanto / HQQ) and the offloaded cache,
run under greedy decoding so that any change in the text comes from the cache alone."""

from __future__ import annotations

import json

import gradio as gr
import torch

from ..figures import cache
from ..runs import Run
from . import register
from .base import Figure, Plan, StrategyTab, View, candidates_panel

# cache_config choices for the quantized cache; residual_length keeps the newest tokens in full
# precision (transformers' default of 128 would leave a short demo unquantized).
QUANTIZED_CONFIGS = [json.dumps(c) for c in (
    {"backend": "quanto", "nbits": 4, "residual_length": 16},
    {"backend": "quanto", "nbits": 2, "residual_length": 16},
    {"backend": "hqq", "nbits": 4, "residual_length": 16},
    {"backend": "hqq", "nbits": 2, "residual_length": 16},
)]


def cache_kinds() -> list[str]:
    """``cache_implementation`` values this machine can run ("offloaded" moves layers to and from a GPU)."""
    return ["dynamic", "quantized"] + (["offloaded"] if torch.cuda.is_available() else [])


def kind_label(run: Run) -> str:
    kind = run.steps[-1].cache.kind if run.steps and run.steps[-1].cache else ""
    return f"{run.label} ({kind})" if kind and kind not in run.label else run.label


def diverged_at(view: View) -> int | None:
    ref = view.runs.get("default")
    if ref is None or not view.main.tokens or not ref.tokens:
        return None
    return cache.divergence_index(view.main.tokens[0], ref.tokens[0])


def memory(view: View):
    return cache.cache_figure({r.label: r.steps for r in view.runs.values()}, diverged_at(view))


class Cache(StrategyTab):
    key = "cache"
    title = "KV cache"
    intro = ("**The KV cache** keeps every layer's keys and values so each step runs the model on one new "
             "token. `cache_implementation=\"quantized\"` stores them in 2 or 4 bits (`cache_config` backend "
             "quanto or HQQ, the newest `residual_length` tokens kept in full precision); \"offloaded\" keeps "
             "layers in CPU memory between uses (needs a GPU). Each run is greedy and is repeated with the "
             "default dynamic cache, so where the texts part is the cache's doing."
             + ("" if torch.cuda.is_available() else " _No GPU here: \"offloaded\" is not offered._"))
    fixed = {"do_sample": False, "num_beams": 1}
    text_labels = ("Text with the chosen cache", "Text with the default dynamic cache")
    figures = (Figure("Cache memory per step", memory, cache.CAPTION), candidates_panel())

    def controls(self):
        return {
            "cache_implementation": gr.Radio(cache_kinds(), value="quantized", label="cache_implementation"),
            "cache_config": gr.Dropdown(QUANTIZED_CONFIGS, value=QUANTIZED_CONFIGS[0], allow_custom_value=True,
                                        label="cache_config", info="JSON; used by the quantized cache"),
        }

    def plans(self, kwargs, side, loaded, app):
        chosen = kwargs.get("cache_implementation") or "dynamic"
        if chosen != "quantized":
            kwargs = {k: v for k, v in kwargs.items() if k != "cache_config"}
        label = chosen if chosen != "quantized" else "quantized " + format_config(kwargs.get("cache_config"))
        default = {k: v for k, v in kwargs.items() if k not in ("cache_implementation", "cache_config")}
        plans = [Plan("main", label, kwargs)]
        if chosen != "dynamic":
            plans.append(Plan("default", "dynamic", default))
        return plans

    def texts(self, view: View):
        ref = view.runs.get("default", view.main)
        return [view.main.texts[0] if view.main.texts else "", ref.texts[0] if ref.texts else ""]

    def note(self, view: View):
        sizes = [f"{kind_label(r)}: {r.steps[-1].cache.bytes:,} bytes" for r in view.runs.values()
                 if r.steps and r.steps[-1].cache]
        at = diverged_at(view)
        same = "texts identical" if at is None else f"tokens differ from token {at}"
        return "; ".join(sizes + ([same] if "default" in view.runs else []))


def format_config(config: dict | None) -> str:
    if not config:
        return ""
    return f"{config.get('backend', 'quanto')} int{config.get('nbits', 4)}"


register(Cache())

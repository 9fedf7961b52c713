"""Several strategies on one prompt, side by side, with their speed."""

from __future__ import annotations

import gradio as gr

from ..figures import compare
from ..i18n import tr
from .status import join_texts
from . import all_tabs, register
from .base import AppContext, Figure, Plan, StrategyTab, View, candidates_panel, load_presets


def speed(view: View):
    """Tokens/s as the status line counts them (wall time of each run, recording included)."""
    return compare.tokens_per_second_figure({r.label: r.tokens_per_s for r in view.runs.values() if r.new_tokens})


def all_presets() -> dict[str, dict]:
    """The compare presets, then every other tab's as "<tab title> · <preset>", each with the fields that define its
    tab (a Sampling preset samples), so any preset can run beside any other."""
    out = dict(load_presets("compare"))
    for tab in all_tabs():
        if tab.key != "compare":
            out.update({f"{tab.title} · {name}": {**values, **tab.fixed} for name, values in tab.presets().items()})
    return out


class Compare(StrategyTab):
    key = "compare"
    title = "Compare"
    intro = ("**Compare** runs several strategies (settings from `assets/presets/compare.json`) on the same "
             "prompt one after the other, and shows their texts side by side with tokens per second.")
    seeded = True
    text_labels = ("Texts side by side",)
    text_lines = 8
    figures = (Figure("Tokens per second", speed, compare.CAPTION),
               candidates_panel("Candidates of the first strategy at the picked step"))

    def presets(self):
        return {}  # its presets are the strategies it compares

    def side_inputs(self, app: AppContext):
        strategies = all_presets()
        return {"strategies": gr.CheckboxGroup(list(strategies), value=list(strategies)[:4], label=tr("Strategies"),
                                               info=tr("the strategies of assets/presets/compare.json, then every "
                                                       "tab's presets (e.g. Sampling · min_p 0.1, top-nσ 1.0, XTC)"))}

    def plans(self, kwargs, side, loaded, app):
        chosen = side["strategies"]
        strategies = all_presets()
        if not chosen:
            raise ValueError("`Strategies` must name at least one strategy to compare; got none")
        unknown = [name for name in chosen if name not in strategies]
        if unknown:
            raise ValueError(f"`Strategies` must be among {list(strategies)}; got unknown {unknown}")
        return [Plan(name, name, {**strategies[name], **kwargs}) for name in chosen]

    def texts(self, view: View):
        return ["\n\n".join(f"[{r.label}] {join_texts(r.texts)}" for r in view.runs.values() if r.steps or r.done)]


register(Compare())

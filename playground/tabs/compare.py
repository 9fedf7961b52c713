"""Several strategies on one prompt, side by side, with their speed."""

from __future__ import annotations

import gradio as gr

from ..branches import first_difference, steps_series
from ..figures import compare
from ..figures import branches as branch_figures
from ..figures.tokens import Column, columns_html, run_tokens
from ..i18n import tr
from .status import join_texts
from . import all_tabs, register
from .base import AppContext, Figure, Plan, StrategyTab, View, candidates_panel, load_presets

COLUMNS_CAPTION = "Strategies side by side"
LOGPROB_CAPTION = ("The log-probability the model gave each strategy's token at every position after the prompt "
                   "(from the runs' records): where the lines part the strategies diverge; the higher line is the "
                   "continuation the model prefers there.")


def speed(view: View):
    """Tokens/s as the status line counts them (wall time of each run, recording included)."""
    return compare.tokens_per_second_figure({r.label: r.tokens_per_s for r in view.runs.values() if r.new_tokens})


def columns(view: View) -> list[Column]:
    """Every run that recorded a step, as a column of its tokens in the picked row; the first run's tokens pick their
    step on a click (the candidates and the alternatives shown are the first strategy's)."""
    runs = [r for r in view.runs.values() if r.steps]
    return [Column(r.label, run_tokens(r.steps, view.row), clickable=i == 0) for i, r in enumerate(runs)]


def side_by_side(view: View) -> str:
    """The strategies' tokens as columns, the first difference and the token-level diff marked: the same view as the
    Branches tab's comparison (``columns_html``)."""
    cols = columns(view)
    return columns_html(cols, first_difference([[t.token_id for t in c.tokens] for c in cols]), COLUMNS_CAPTION,
                        legend=True)


def logprobs(view: View):
    """The Branches tab's log-probability per position, one line per strategy (None until two have tokens)."""
    cols = columns(view)
    if len(cols) < 2:
        return None
    by_label = {r.label: r for r in view.runs.values()}
    runs = [(c.label, steps_series(by_label[c.label].steps, [t.token_id for t in c.tokens], view.row)) for c in cols]
    texts = {t.token_id: t.piece.text + t.piece.tail for c in cols for t in c.tokens}
    return branch_figures.runs_logprob_figure(runs, first_difference([s.tokens for _, s in runs]),
                                              lambda token_id: texts.get(token_id, f"#{token_id}"),
                                              "Strategies compared")


def all_presets() -> dict[str, dict]:
    """The compare presets, then every other tab's as "<tab title> · <preset>", each with the fields that define its
    tab (a Sampling preset samples), so any preset can run beside any other."""
    out = dict(load_presets("compare"))
    for tab in all_tabs():
        if tab.key != "compare":
            out.update({f"{tab.title} · {name}": {**values, **tab.fixed} for name, values in tab.presets().items()})
    return out


MAX_COMPARED = 8  # strategies one click runs, one after the other


class Compare(StrategyTab):
    key = "compare"
    title = "Compare"
    intro = ("**Compare** runs several strategies (settings from `assets/presets/compare.json`) on the same "
             "prompt one after the other, and shows their tokens as columns, the first position where they differ "
             "outlined and every token that differs from the first strategy's underlined, with tokens per second.")
    seeded = True
    text_labels = ("Texts side by side",)
    text_lines = 3  # the token view above shows them as columns; this box is for copying
    figures = (Figure("Tokens per second", speed, compare.CAPTION),
               candidates_panel("Candidates of the first strategy at the picked step"),
               Figure("Log-probability per position", logprobs, LOGPROB_CAPTION))

    def presets(self):
        return {}  # its presets are the strategies it compares

    def side_inputs(self, app: AppContext):
        strategies = all_presets()
        # closed: the list grows with every tab's presets, and the tab stays one screen tall
        with gr.Accordion(tr("Strategies to compare"), open=False):
            return {"strategies": gr.CheckboxGroup(list(strategies), value=list(strategies)[:4],
                                                   label=tr("Strategies"),
                                                   info=tr("the strategies of assets/presets/compare.json, then every "
                                                           "tab's presets (e.g. Sampling · min_p 0.1, top-nσ 1.0, "
                                                           "XTC)"))}

    def plans(self, kwargs, side, loaded, app):
        chosen = list(dict.fromkeys(side["strategies"] or ()))  # each once: a hand-made call may repeat one
        strategies = all_presets()
        if not chosen:
            raise ValueError("`Strategies` must name at least one strategy to compare; got none")
        if len(chosen) > MAX_COMPARED:
            raise ValueError(f"`Strategies` must name at most {MAX_COMPARED} strategies (each is a run); got "
                             f"{len(chosen)}")
        unknown = [name for name in chosen if name not in strategies]
        if unknown:
            raise ValueError(f"`Strategies` must be among {list(strategies)}; got unknown {unknown}")
        return [Plan(name, name, {**strategies[name], **kwargs}) for name in chosen]

    def texts(self, view: View):
        return ["\n\n".join(f"[{r.label}] {join_texts(r.texts)}" for r in view.runs.values() if r.steps or r.done)]

    def tokens_view(self, view: View) -> str:
        return side_by_side(view) if any(r.steps for r in view.runs.values()) else ""


register(Compare())

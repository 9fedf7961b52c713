"""What every strategy tab shares: the layout (prompt and settings left, streamed text and figures
right), and the handlers Generate, Stop, pick-a-token and load-a-trace wire to.

A tab module subclasses ``StrategyTab`` with its controls (widgets labelled with transformers'
field names), the fields that define it (``fixed``) and its figures; tabs that run more than one
generation (DoLa beside greedy, speculative vs greedy, a cache kind vs the default one, compare)
override ``plans`` and ``texts``. Handlers only adapt: widgets -> kwargs -> ``core.stream`` ->
``Run`` -> figures.

A ``StrategyTab`` is declarative and registered once per process: it keeps nothing of a build or of a
session. ``build`` makes a ``TabUI``, which holds what one build made (its app context, the order of its
widgets) and whose methods are the handlers; what one visitor owns lives in the session's ``gr.State``s
and folder (``playground.session``).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from gradio.components.plot import PlotData

from ..figures import attribution as attribution_figure
from ..figures import candidates
from ..figures.common import figure_json, is_empty
from ..figures.tokens import ALTERNATIVES_HEADERS, COLOUR_BY, alternatives_table, tokens_html
from core import attribution
from core.engine.process import EngineStopped
from core.rng import new_generator
from core.text import TokenTexts

from .. import engine, engine_host, persist, policy, session, steering, view_code
from ..branches import Branches, Entry, entropy_per_step, pieces, sample_tree, samples
from ..figures import branches as branch_figures
from ..figures import funnel
from ..figures import watch as watch_figures
from ..facts import Facts, run_label, seeds_text
from ..field_codecs import generate_kwargs, widget_value
from ..i18n import tr
from ..prompt import encode_prompt, parse_token, parse_watch, uses_chat
from ..runs import Run, load_runs, save_runs, stream_run, wait_stopped
from ..state import ModelCache
from . import TabHandle
from .advanced import with_advanced
from .spec import RUN_BUTTONS, RUN_OUTPUTS, Inputs, RunButton, TabSpec, named, output_names
from .status import Frames, Throttle, error_line, join_texts, plain, status_line

ASSETS = Path(__file__).resolve().parents[2] / "assets"
LIGHT_LANE = 2  # at once, of each handler that only formats what a session holds (View code, Share link, tree save)


@dataclass
class AppContext:
    """What the app hands every tab's ``build``: the shared model cache and the session's model."""

    models: ModelCache
    model_state: gr.State  # the session's model name
    startup: Any  # LoadedModel the app started with (initial values of model-dependent widgets)
    model_choices: list[str] = field(default_factory=list)  # named models, for pickers (speculative)
    slots: int = 2  # generations running at once, across all tabs
    branches: gr.State | None = None  # the session's runs (``playground.branches.Branches``)
    tree_store: gr.BrowserState | None = None  # the browser's copy of them (``playground.persist``)
    max_seconds: float | None = None  # the wall-clock cap of every generation (``PLAYGROUND_MAX_SECONDS``)
    frame: float = 0.0  # the least seconds between two streamed updates of a run (``PLAYGROUND_FRAME_MS``)


@dataclass
class View:
    """What a tab's figures draw from: its runs (main first) and the token the user picked."""

    runs: dict[str, Run]
    step: int = -1
    row: int = 0
    branches: Branches | None = None  # the session's runs, for the branch tree

    @property
    def main(self) -> Run:
        return next(iter(self.runs.values()))

    @property
    def steps(self):
        return self.main.steps


@dataclass
class Figure:
    """One plot beside the text: ``draw(view)`` returns a plotly figure (or None to leave it empty).
    ``picked`` figures follow the picked token and redraw when the user picks another; ``only_with`` names the
    setting a figure needs to show anything (it shows a hint to set it otherwise)."""

    label: str
    draw: Callable[[View], Any]
    caption: str = ""
    picked: bool = False
    only_with: str = ""


def candidates_panel(label: str = "Candidates at the picked step") -> Figure:
    """The candidate bars of the picked step and row, shared by every tab."""
    return Figure(label, lambda v: candidates.candidates_figure(v.steps, v.step, v.row), candidates.CAPTION,
                  picked=True)


def chain_panels() -> tuple[Figure, ...]:
    """The sampler chain at the picked step, the entropy over the run, the watermark (drawn when a run set one)."""
    return (Figure("Sampler chain at the picked step", lambda v: funnel.funnel_figure(v.steps, v.step, v.row),
                   funnel.CAPTION, picked=True),
            Figure("Entropy per step", lambda v: funnel.entropy_figure(v.steps, v.row), funnel.RUN_CAPTION),
            Figure("Watermark", lambda v: funnel.watermark_figure(v.main.trace, v.row), funnel.WATERMARK_CAPTION,
                   only_with="watermarking_config"))


def watched_panel() -> Figure:
    """The watched tokens' probability per step (``RowStep.watched``); every tab draws it once a run watched one."""
    return Figure("Watched tokens", lambda v: watch_figures.watched_figure(v.steps, v.row), watch_figures.CAPTION,
                  only_with="watch")


def branch_tree_panel() -> Figure:
    """The session's runs on the shown run's prompt as a tree of forks; every tab draws it (click a node)."""
    def draw(view: View):
        main = view.main
        trace = main.trace
        if view.branches is None or trace is None or not trace.run_id:
            return branch_figures.branch_tree_figure(None, None, None)
        entry_key = Entry(trace.run_id, "", "", "", trace).prompt_key
        return branch_figures.branch_tree_figure(view.branches, entry_key, trace.run_id)

    return Figure("Branch tree", draw, branch_figures.TREE_CAPTION)


def samples_panel() -> Figure:
    """Sample N's prefix tree of the samples (counts, probabilities) above the entropy per step over them."""
    def tree(view: View):
        runs = samples(view.steps)
        if len(runs) < 2:  # one sample's tree is its text again: the token view and the entropy figure show it
            return branch_figures.sample_tree_figure(None)
        return branch_figures.sample_tree_figure(sample_tree(runs), entropy_per_step(view.steps),
                                                 seeds_text(view.main.facts.seeds))

    return Figure("Samples", tree, branch_figures.SAMPLES_CAPTION, only_with="Sample N or num_return_sequences > 1")


@dataclass
class Plan:
    """One generation a tab runs: its kwargs for ``generate`` and model-side arguments (assistant). Its run's label
    is drawn from ``label`` and the run's facts (``playground.facts.run_label``: "Assisted by <assistant>")."""

    name: str
    label: str
    kwargs: dict
    model_kwargs: dict = field(default_factory=dict)
    assistant: str = ""  # the assistant model's name, as the app knows it (``model_kwargs`` holds the model)

    def facts(self, facts: Facts) -> Facts:
        """The tab's ``facts`` (the prompt and its encoding) for this plan's run: with its assistant."""
        return replace(facts, assistant=self.assistant)

    def run_label(self, facts: Facts) -> str:
        return run_label(self.label, self.facts(facts))


def colour_js(key: str) -> str:
    """The listener that shows tab ``key``'s token view coloured by the radio's value (``data-colour`` on its
    wrapper; ``assets/style.css`` does the rest)."""
    return (f"(mode) => {{ const view = document.getElementById({json.dumps(f'dp-tokens-{key}')}); "
            "if (view) view.dataset.colour = mode; return []; }")


def load_examples(key: str) -> list[str]:
    """Prompts from ``assets/examples.json`` for tab ``key`` (entries without ``tabs`` suit every tab)."""
    entries = json.loads((ASSETS / "examples.json").read_text())
    own = [e["prompt"] for e in entries if key in e.get("tabs", [])]
    return own + [e["prompt"] for e in entries if "tabs" not in e]  # the tab's own first: its default prompt


def load_presets(key: str) -> dict[str, dict]:
    """Named settings from ``assets/presets/<key>.json`` (``{name: {field: value}}``), if any."""
    path = ASSETS / "presets" / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else {}


class StrategyTab:
    """One tab, declared: class attributes and hooks a tab module overrides. Nothing per build or per session."""

    key = ""
    title = ""
    intro = ""  # markdown shown at the top of the tab
    fixed: dict = {}  # fields that define the tab; no loaded config overrides them
    seeded = False  # random strategies get a seed box
    steppable = False  # step mode: Next token advances one token with the tab's strategy
    samples = False  # Sample N: many seeded runs at once, merged into one prefix tree
    beam = False  # the beam family: branch from a node of the beam tree too
    text_labels: tuple[str, ...] = ("Generated text",)
    text_lines = 4
    figures: tuple[Figure, ...] = ()
    max_new_tokens = 32
    examples_label = "Example prompts"
    advanced: tuple[str, ...] = ()  # groups of ``playground.fields`` in the tab's "Advanced" accordion

    # --- what subclasses fill in -----------------------------------------------------------------
    def controls(self) -> dict[str, gr.components.Component]:
        """The tab's own widgets, keyed by ``GenerationConfig`` field (built inside the settings column)."""
        return {}

    def side_inputs(self, app: AppContext) -> dict[str, gr.components.Component]:
        """Widgets that are not generation-config fields (e.g. the assistant model picker), by API name."""
        return {}

    def model_panel(self, app: AppContext) -> list[gr.components.Component]:
        """Widgets built under the settings that show something of the session's model; ``on_model`` gives
        their values when the session switches model."""
        return []

    def on_model(self, loaded) -> list:
        return []

    def presets(self) -> dict[str, dict]:
        """Named settings offered in the tab's Preset menu."""
        return load_presets(self.key)

    def plans(self, kwargs: dict, side: dict, loaded, app: AppContext) -> list[Plan]:
        """The generations one click runs, streamed in order; the first is the tab's main run."""
        return [Plan("main", self.title, kwargs)]

    def texts(self, view: View) -> list[str]:
        """One string per ``text_labels`` entry."""
        return [join_texts(view.main.texts)]

    def note(self, view: View) -> str:
        """Extra status text after a run (e.g. bytes per cache kind)."""
        return ""

    def tokens_view(self, view: View) -> str | None:
        """The token view's HTML where the tab draws it itself (Compare: every run as a column); None: the main
        run's tokens (``tokens_html``)."""
        return None

    def all_figures(self) -> tuple[Figure, ...]:
        """The tab's figures, then what every tab shows: the session's branch tree and the watched tokens (last: the
        figures before it keep their places among a run endpoint's outputs)."""
        return (*self.figures, branch_tree_panel(), watched_panel())

    def build(self, app: AppContext) -> TabHandle:
        """Lay the tab out and wire its handlers (call inside the app's ``gr.Tabs``)."""
        return TabUI(self, app).build()

    def output_names(self) -> list[str]:
        """Names of a run endpoint's API outputs (``Outputs.ordered`` less the states and figure tabs), in order."""
        return output_names(len(self.text_labels), tuple(f.label for f in self.all_figures()))


@dataclass
class Outputs:
    """What a run handler updates, by name. Handlers return ``{component: value}`` over these (Gradio's own idiom:
    an output left out stays as it is); ``ordered()`` is a run endpoint's output list, in the order API clients
    read them by position (``StrategyTab.output_names``; the states and figure tabs are not in the API)."""

    texts: list[gr.Textbox]
    status: gr.Markdown
    plots: list[gr.Plot]
    figure_tabs: list[gr.Tab]  # one per plot: shown only when its figure has something to show
    tokens: gr.HTML
    step: gr.Slider
    alternatives: gr.Dataframe
    runs: gr.State
    download: gr.DownloadButton
    branches: gr.State

    def ordered(self) -> list:
        """The components in ``spec.RUN_OUTPUTS`` order (a list entry spread)."""
        return [c for out in RUN_OUTPUTS for c in (getattr(self, out.name) if out.many else [getattr(self, out.name)])]


@dataclass
class Widgets:
    """What one build's layout made and its wiring connects: the run outputs, the settings, the buttons."""

    out: Outputs
    prompt: gr.Textbox
    chat: gr.Checkbox
    seed: gr.Number
    extra: gr.State
    controls: dict[str, gr.components.Component]
    side: dict[str, gr.components.Component]
    model_panel: list[gr.components.Component]
    preset: gr.Dropdown
    buttons: dict[str, gr.Button]  # the run buttons the tab has (``spec.RUN_BUTTONS``), by name
    stop: gr.Button
    n_samples: gr.Slider | None
    row: gr.Number
    token: gr.Textbox
    node: gr.Number
    upload: gr.UploadButton
    share: gr.Button  # Share link: a URL that reopens the tab with its prompt and settings
    link: gr.Textbox
    store: gr.BrowserState  # the browser's copy of the settings, back after a reload (``playground.persist``)
    clicks: gr.HTML
    code: gr.Code  # View code: the Python that reproduces the run on screen
    tab: gr.Tab
    attribute: gr.Button  # Attribute this step: which context tokens drove the picked step's choice
    attribution_steps: gr.Slider
    attribution: gr.HTML
    watch: gr.Textbox | None = None  # tokens to follow through the chain and the lens (``prompt.parse_watch``)
    colour_by: gr.Radio | None = None  # what the token view's colours show (``figures.tokens.COLOUR_BY``)


def _vocab(loaded) -> int:
    """The model's vocabulary size: every id fed to it must be below it."""
    return loaded.model.config.get_text_config().vocab_size


class TabUI:
    """One build of a tab: its layout (``layout``), its wiring (``wire``) and its handlers. Handlers read everything
    per session from their inputs (the session's states) and the request, and return ``{component: value}``.

    Every handler that runs something streams a ``steering.Start`` through ``_stream``: Generate (from the prompt,
    or resuming a paused step-mode run), Continue with this token (a branch), Next token (step mode) and Sample N.
    Each finished main run joins the session's branch tree."""

    def __init__(self, tab: StrategyTab, app: AppContext):
        self.tab, self.app = tab, app
        self.figures = tab.all_figures()
        self.w: Widgets | None = None
        self.spec: TabSpec | None = None  # the build's names (``spec.TabSpec``), once the layout made its widgets

    def build(self) -> TabHandle:
        self.w = self.layout()
        self.spec = TabSpec(self.tab.key, self.tab.seeded, tuple(self.w.side), tuple(self.w.controls),
                            tuple(b for b in RUN_BUTTONS if b.name in self.w.buttons))
        self.wire(self.w)
        w = self.w
        return TabHandle(self.tab.key, self.tab.title, w.controls, w.extra, fixed=dict(self.tab.fixed), tab=w.tab,
                         generate=w.buttons["generate"], ui=self)

    @property
    def out(self) -> Outputs:
        return self.w.out

    @property
    def control_names(self) -> list[str]:
        """The ``GenerationConfig`` fields of the tab's widgets, in the order its run handlers take their values."""
        return list(self.spec.controls)

    def component(self, name: str) -> gr.components.Component:
        """The component an input or setting of the spec names (``spec.RUN_HEAD``, the side inputs and controls,
        ``watch``, ``colour_by`` and the run buttons' own inputs)."""
        w, app = self.w, self.app
        fixed = {"runs": w.out.runs, "branches": app.branches, "model": app.model_state, "prompt": w.prompt,
                 "chat": w.chat, "seed": w.seed, "extra": w.extra, "watch": w.watch, "colour_by": w.colour_by,
                 "step": w.out.step, "row": w.row, "token": w.token, "node": w.node, "n": w.n_samples}
        return fixed[name] if name in fixed else {**w.side, **w.controls}[name]

    def components(self, names) -> list[gr.components.Component]:
        return [self.component(n) for n in names]

    @property
    def settings(self) -> dict[str, gr.components.Component]:
        """What a reload keeps and a share link carries, by API name (``TabSpec.settings``)."""
        return dict(zip(self.spec.settings, self.components(self.spec.settings)))

    @property
    def kept(self) -> persist.Kept:
        """What the page load restores into this tab (``persist.Keeper``): its settings, its store, its status."""
        return persist.Kept(self.tab.key, self.settings, self.w.store, self.out.status)

    def inputs(self, **given) -> Inputs:
        """A run handler's inputs by name, each one not ``given`` as the page first shows it (``runs`` empty, no
        ``branches``); for callers in Python (tests), which then need not know the order."""
        shown = {"runs": {}, "branches": None, "extra": {}}  # the session's states, fresh
        names = (*self.spec.run_inputs, *(n for b in self.spec.buttons for n in b.inputs))
        values = {n: shown[n] if n in shown else getattr(self.component(n), "value", None)
                  for n in dict.fromkeys(names)}
        unknown = set(given) - set(values)
        if unknown:
            raise TypeError(f"{self.tab.key} has no inputs {sorted(unknown)}")
        return Inputs(self.spec, {**values, **given})

    # --- layout ----------------------------------------------------------------------------------
    def layout(self) -> Widgets:
        """The settings on the left; on the right the run: its tokens coloured as "colour by" says on top (the answer
        to "why this token?"), the picked step's alternatives and the steering, then the figures, one sub-tab each."""
        tab, app = self.tab, self.app
        with gr.Tab(tr(tab.title), id=tab.key) as tab_block:
            if tab.intro:
                gr.Markdown(tr(tab.intro), label=f"About {tab.title}")
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    settings = self._settings()
                with gr.Column(scale=3, min_width=420):
                    run = self._run_column()
            # States inside the Tab: a State left among gr.Tabs' children shifts the tab order the
            # browser indexes its tab bar by (the selected tab then shows up in another tab's place).
            extra = session.state({})
            runs_state = session.state({})
            store = persist.settings_store(tab.key)
        out = Outputs(texts=run["texts"], status=settings["status"], plots=run["plots"],
                      figure_tabs=run["figure_tabs"], tokens=run["tokens"], step=run["step"],
                      alternatives=run["alternatives"], runs=runs_state, download=run["download"],
                      branches=app.branches)
        own = {f.name for f in fields(Widgets)}  # the rest of what the two columns made is in ``out``
        made = {k: v for k, v in {**settings, **run}.items() if k in own}
        made["buttons"] = {**settings["buttons"], **run["steer"]}
        return Widgets(out=out, extra=extra, store=store, tab=tab_block, **made)

    def _settings(self) -> dict:
        tab, app = self.tab, self.app
        prompt = gr.Textbox(label=tr("Prompt"), lines=3, value=(load_examples(tab.key) or [""])[0])
        with gr.Accordion(tr(tab.examples_label), open=False):  # the prompt starts as the first; the rest a click away
            gr.Examples([[p] for p in load_examples(tab.key)], inputs=[prompt], label=tr(tab.examples_label))
        chat = gr.Checkbox(label=tr("Apply chat template"), value=True,
                           info=tr("tokenizer.apply_chat_template, for instruct models"))
        with gr.Row():  # under the prompt: the run starts and reports where the user is looking
            buttons = self._buttons("prompt")
            stop = gr.Button(tr("Stop"), variant="stop")
        # no LaTeX: the page would typeset a quoted value's $$...$$ after Markdown, where status.plain cannot reach
        status = gr.Markdown(label=tr("Status"), elem_classes=["dp-status"], latex_delimiters=[])
        max_new = gr.Slider(1, 512, value=tab.max_new_tokens, step=1, label="max_new_tokens")
        stop_strings = gr.Textbox("", label="stop_strings", placeholder=tr("comma-separated; \\n for a newline"))
        seed = gr.Number(label="seed", value=0, precision=0, visible=tab.seeded,
                         info=tr("the same seed gives the same text; empty: a new random seed each run"))
        own = with_advanced(tab.controls(), tab.advanced)
        watch = gr.Textbox("", label=tr("watch"), placeholder=tr("e.g. the, Paris, #1234"),
                           info=tr("tokens to follow at every step, even outside the top candidates: their texts or "
                                   "#<id>, comma-separated, up to 8 (\"the, Paris\" watches \"the\" and \" Paris\")"))
        # with the settings, not above the tokens: the run column is the taller one (its legend is in the token view)
        colour_by = gr.Radio(list(COLOUR_BY), value=COLOUR_BY[0], label=tr("colour by"),
                             info=tr("the chosen token's p, the step's entropy H, or its surprisal −ln p"))
        side = tab.side_inputs(app)
        model_panel = tab.model_panel(app)
        presets = tab.presets()
        preset = gr.Dropdown(list(presets), label=tr("Preset"), value=None, visible=bool(presets))
        n_samples = None
        if tab.samples:
            with gr.Row():
                n_samples = gr.Slider(2, steering.SAMPLE_MANY_MAX, value=16, step=1, label=tr("samples N"),
                                      info=tr("runs with seeds seed, seed+1, ... merged into one tree"), scale=3)
                buttons.update(self._buttons("samples", scale=1))
        return dict(prompt=prompt, chat=chat, seed=seed, controls={"max_new_tokens": max_new,
                                                                    "stop_strings": stop_strings, **own},
                    side=side, model_panel=model_panel, preset=preset, buttons=buttons, stop=stop,
                    n_samples=n_samples, status=status, watch=watch, colour_by=colour_by)

    def _buttons(self, place: str, **style) -> dict[str, gr.Button]:
        """The run buttons ``spec.RUN_BUTTONS`` puts at ``place``, each shown where the tab has its flag."""
        return {b.name: gr.Button(tr(b.label), variant=b.variant, visible=self._shown(b), **style)
                for b in RUN_BUTTONS if b.place == place}

    def _shown(self, button: RunButton) -> bool:
        return not button.flag or bool(getattr(self.tab, button.flag))

    def _run_column(self) -> dict:
        tab = self.tab
        tokens = gr.HTML(label=tr("Tokens coloured as \"colour by\" says (hover: alternatives; click one to pick its "
                                  "step)"),
                         show_label=True, container=True, padding=True, elem_classes=["dp-token-view"],
                         elem_id=f"dp-tokens-{tab.key}", js_on_load=(ASSETS / "token_click.js").read_text())
        with gr.Row():  # several texts (DoLa beside greedy, assisted beside greedy) side by side
            texts = [gr.Textbox(label=tr(lab), lines=tab.text_lines, max_lines=tab.text_lines + 4, interactive=False)
                     for lab in tab.text_labels]
        with gr.Row():
            step = gr.Slider(0, 1, value=0, step=1, label=tr("step"), info=tr("pick a step to see its alternatives"),
                             scale=3)
            row = gr.Number(label=tr("row"), value=0, precision=0, minimum=0, info=tr("returned sequence or beam"),
                            scale=1)
        alternatives = gr.Dataframe(headers=ALTERNATIVES_HEADERS, label=tr("Top alternatives at the picked step"),
                                    interactive=False, wrap=True, max_height=230)
        # what to do with the picked step: continue with another token (or from a beam node), or attribute it; one
        # row of fields and one of buttons, so the tab stays one screen tall
        with gr.Group(elem_classes=["dp-steer"]):
            with gr.Row():
                token = gr.Textbox(label=tr("token"), scale=3, placeholder=tr("#1234 or a token's text"),
                                   info=tr("click an alternative above, or type a token (its text or #<id>); it "
                                           "replaces the picked step's choice"))
                node = gr.Number(label=tr("beam node"), value=None, precision=0, visible=tab.beam, scale=1,
                                 info=tr("click a node of the beam tree"))
                attribution_steps = gr.Slider(1, attribution.MAX_STEPS, value=attribution.DEFAULT_STEPS, step=1,
                                              scale=2, label=tr("integrated gradients steps"))
            with gr.Row():
                steer = self._buttons("steer")
                attribute = gr.Button(tr("Attribute this step"))
        attribution_parts = dict(attribute=attribute, attribution_steps=attribution_steps,
                                 attribution=self._attribution_panel())
        plots, figure_tabs = [], []
        with gr.Tabs(elem_classes=["dp-figures"]):
            for fig in self.figures:
                with gr.Tab(tr(fig.label), visible=not fig.only_with) as fig_tab:
                    plots.append(gr.Plot(label=tr(fig.label), show_label=False))
                    if fig.caption:
                        gr.Markdown(tr(fig.caption), label=f"{fig.label} caption", elem_classes=["dp-caption"])
                figure_tabs.append(fig_tab)
        with gr.Row():
            download = gr.DownloadButton(tr("Download trace (JSON)"), value=None)
            upload = gr.UploadButton(tr("Load trace (JSON)"), file_types=[".json"])
            share = gr.Button(tr("Share link"))
        # no copy button: in Gradio 6.31 a button inside a textbox's label leaves the textbox without a name
        link = gr.Textbox(label=tr("Share link"), visible=False,
                          info=tr("opens this tab with its prompt and settings (copied to the clipboard where the "
                                  "browser lets it)"))
        clicks = gr.HTML("", label="Plot clicks", elem_classes=["dp-plot-clicks"],
                         js_on_load=(ASSETS / "plot_click.js").read_text())
        code = view_code.view_code_panel()
        return dict(tokens=tokens, texts=texts, step=step, row=row, alternatives=alternatives, token=token,
                    node=node, steer=steer, plots=plots,
                    figure_tabs=figure_tabs, download=download, upload=upload, share=share, link=link, clicks=clicks,
                    code=code, **attribution_parts)

    def _attribution_panel(self) -> gr.HTML:
        """Under the steering: the panel Attribute this step fills, shown once there is something in it (the tab stays
        one screen tall until then)."""
        return gr.HTML("", label=tr("Attribution of the picked step (hover a token for its score)"), show_label=True,
                       container=True, padding=True, visible=False)

    # --- wiring ----------------------------------------------------------------------------------
    def wire(self, w: Widgets) -> None:
        app, out = self.app, w.out
        outputs = out.ordered()
        runs_events = self._wire_runs(w, outputs)
        # Stop cancels what runs: Gradio closes the handler's generator, which closes core.stream, whose
        # worker stops within a step. The browser sends the cancel as it dispatches the listener that
        # carries ``cancels``, before the next one, so ``stopped`` (registered second, and waiting for
        # the worker) sums up what streamed after the last stream update. API clients: ``job.cancel()``.
        w.stop.click(None, None, None, cancels=runs_events)
        stopped = w.stop.click(self.stopped, [out.runs], [*out.texts, out.tokens, out.status, out.download],
                               concurrency_id="stop", concurrency_limit=app.slots, api_name=False,
                               show_progress_on=[out.status])
        picked = [p for p, f in zip(out.plots, self.figures) if f.picked]
        for widget in (out.step, w.row):
            widget.input(self.pick, [out.runs, out.step, w.row], [out.alternatives, *picked],
                         trigger_mode="always_last", api_name=False)
        out.tokens.select(self.pick_token, [out.runs, w.row], [out.step, out.alternatives, *picked],
                          trigger_mode="always_last", api_name=False)
        out.alternatives.select(self.pick_alternative, None, w.token, api_name=False)
        shown = w.clicks.select(self.clicked, [out.runs, app.branches], [*outputs, w.node], api_name=False,
                                show_progress_on=[out.status])
        loaded = w.upload.upload(self.load_trace, [w.upload, out.runs], outputs, api_name=f"{self.tab.key}_load_trace",
                                 show_progress_on=[out.status])
        # View code, once the run on screen has ended (a run, Stop, a branch-tree run shown, a loaded trace)
        fill = view_code.filler(app.models)
        for done in (*runs_events, stopped, shown, loaded):
            done.then(fill, [out.runs, app.model_state], w.code, api_name=False, concurrency_id="view_code",
                      concurrency_limit=LIGHT_LANE)
        if self.tab.presets():
            w.preset.change(self.apply_preset, [w.preset, w.extra], [*w.controls.values(), w.extra], api_name=False,
                            show_progress_on=[w.preset])
        if w.model_panel:
            app.model_state.change(self.on_model_name, [app.model_state], w.model_panel, api_name=False)
        # colour by switches in the browser alone: every token already carries its bucket in each way, the
        # stylesheet shows the one its wrapper names (figures.tokens), so a streamed or reloaded view keeps it
        w.colour_by.change(None, [w.colour_by], None, js=colour_js(self.tab.key), api_name=False,
                           show_progress="hidden")
        self._wire_keeping(w, runs_events)
        self._wire_attribution(w)

    def _wire_runs(self, w: Widgets, outputs: list) -> list:
        """Each run button of the spec to its handler (the ``TabUI`` method of its name), its inputs by name; named
        in the API (``<tab>_<name>``) where the tab shows it."""
        spec = self.spec
        # The progress animation on the status line alone, not on the run's two dozen outputs: Gradio's page keeps
        # the loading status of every progress target it has seen and handles them all at each streamed message
        # (see gradio_patches: unmended, a long run kept the page too busy for Stop to be clicked).
        lane = dict(concurrency_id="generate", concurrency_limit=self.app.slots, show_progress_on=[w.out.status])
        return [w.buttons[b.name].click(named(getattr(self, b.name), spec, spec.inputs_of(b)),
                                        self.components(spec.inputs_of(b)), outputs,
                                        api_name=spec.api_name(b, self._shown(b)), **lane)
                for b in spec.buttons]

    def _wire_attribution(self, w: Widgets) -> None:
        """Attribute this step: its own lane, one at a time in the process (its backward passes take the CPU a
        generation needs), bounded by ``attribution_seconds``."""
        # the panel shows first (hidden until now), so that the progress bar has somewhere to be drawn
        shown = w.attribute.click(lambda: gr.HTML(visible=True), None, w.attribution, api_name=False,
                                  concurrency_id="attribute_panel", concurrency_limit=LIGHT_LANE,
                                  show_progress="hidden")
        shown.then(self.attribute_step, [w.out.runs, w.out.step, w.row, self.app.model_state, w.attribution_steps],
                   w.attribution, api_name=f"{self.tab.key}_attribute", concurrency_id="attribute",
                   concurrency_limit=1, show_progress_on=[w.attribution])

    def _wire_keeping(self, w: Widgets, runs_events) -> None:
        """What survives a reload (``playground.persist``): the settings go to the browser's store as they change,
        in the browser alone (a keystroke costs no round trip; a preset or a loaded config is kept too); the branch
        tree after every run; Share link puts the page's address in beside the settings."""
        settings = self.settings
        gr.on([c.change for c in settings.values()], None, [*settings.values(), w.store], w.store,
              js=persist.save_js(self.tab.key, {n: c.value for n, c in settings.items()}), api_name=False,
              show_progress="hidden")
        if self.app.tree_store is not None:
            for done in runs_events:
                done.then(persist.save_tree, [self.app.branches], [self.app.tree_store], api_name=False,
                          concurrency_id="save_tree", concurrency_limit=LIGHT_LANE, show_progress="hidden")
        n = len(settings)
        w.share.click(self.share_link, [*settings.values(), w.link], [w.link, self.out.status], api_name=False,
                      js=f"(...v) => [...v.slice(0, {n}), window.location.href]", concurrency_id="share_link",
                      concurrency_limit=LIGHT_LANE,
                      show_progress="hidden").then(None, w.link, None, js=persist.COPY_JS, api_name=False)

    # --- handlers: runs --------------------------------------------------------------------------
    def _setup(self, a: Inputs, prompt):
        """The session's model, the tab's plans from its widgets, the prompt ids and the run's facts as ``prompt``
        was encoded (raises ValueError)."""
        policy.check_prompt(prompt if isinstance(prompt, str) else None)  # before tokenizing it
        loaded = policy.load(self.app.models, a.model, "model")
        kwargs = generate_kwargs(a.controls, a.extra, self.tab.fixed)
        input_ids, mask, note = encode_prompt(loaded.tokenizer, str(prompt or ""), bool(a.chat))
        policy.check_prompt(None, input_ids.shape[-1])
        facts = Facts(prompt=str(prompt or ""), chat=uses_chat(loaded.tokenizer, bool(a.chat)))
        plans = self.tab.plans(kwargs, a.side, loaded, self.app)
        self._watch(plans, loaded, a.watch)
        return loaded, plans, input_ids, mask, note, facts

    @staticmethod
    def _watch(plans: list[Plan], loaded, watch) -> None:
        """The ``watch`` box's tokens into every plan's recorder arguments (``core.stream(watch=...)``); raises
        ValueError naming `watch`."""
        watch = parse_watch(loaded.tokenizer, watch or "", loaded.model.config.get_text_config().vocab_size)
        if watch:
            for plan in plans:
                plan.model_kwargs["watch"] = watch

    def _seed(self, seed, n: int = 1) -> int | None:
        """The seed box's value, checked (None: a fresh random seed); a tab without a seed box draws a fresh one."""
        return policy.check_seed(seed, n) if self.tab.seeded else None

    # Each run handler: ``RunButton``'s name, its inputs by name (``spec.Inputs``: ``TabSpec.inputs_of`` the button),
    # streaming the outputs of ``_run``.
    def generate(self, a: Inputs, request=None):
        """From the prompt; or, when the tab shows a paused step-mode run of this prompt, from where it stopped."""
        def starts():
            loaded, plans, input_ids, mask, note, facts = self._setup(a, a.prompt)
            current = next(iter(a.runs.values()), None) if a.runs else None
            if steering.is_paused(current, a.prompt, loaded.name):
                start = steering.resume(current, plans[0].kwargs, plans[0].run_label(facts),
                                        plans[0].facts(facts))
                return [(plans[0], start)], loaded, a.prompt, note
            return ([(plan, steering.Start(input_ids, mask, new_generator(self._seed(a.seed)), plan.kwargs,
                                           plan.run_label(facts), facts=plan.facts(facts)))
                     for plan in plans], loaded, a.prompt, note)

        yield from self._run(starts, a.branches, request)

    def branch(self, a: Inputs, request=None):
        """Continue the tab's run from the picked step with ``token`` forced there."""
        def starts():
            parent = self._parent(a.runs)
            loaded, plans, _, _, note, facts = self._setup(a, parent.prompt)
            vocab = _vocab(loaded)
            token_id = parse_token(loaded.tokenizer, a.token, vocab)
            if token_id is None:
                raise ValueError("`token` is empty: click one of the alternatives, or type a token's text or #<id>")
            step_, row_ = (policy.whole(a.step or 0, "step", 0, len(parent.steps)),
                           policy.whole(a.row or 0, "row", 0, policy.bound("rows")))
            start = steering.branch_at(parent, step_, row_, token_id, plans[0].kwargs, self._seed(a.seed), vocab,
                                       f"{plans[0].run_label(facts)} · branch", plans[0].facts(facts))
            return [(plans[0], start)], loaded, parent.prompt, note

        yield from self._run(starts, a.branches, request)

    def branch_node(self, a: Inputs, request=None):
        """Continue the hypothesis of a node of the run's beam tree."""
        def starts():
            if not self.tab.beam:
                raise ValueError(f"{self.tab.title} has no beam tree to continue from")
            parent = self._parent(a.runs)
            if a.node is None or a.node == "":
                raise ValueError("`beam node` is empty: click a node of the beam tree (or type its id)")
            node_ = policy.whole(a.node, "beam node", 0, 2 ** 31 - 1)
            loaded, plans, _, _, note, facts = self._setup(a, parent.prompt)
            start = steering.branch_at_node(parent, node_, plans[0].kwargs, self._seed(a.seed),
                                            f"{plans[0].run_label(facts)} · from node {node_}", _vocab(loaded),
                                            plans[0].facts(facts))
            return [(plans[0], start)], loaded, parent.prompt, note

        yield from self._run(starts, a.branches, request)

    def next_token(self, a: Inputs, request=None):
        """Step mode: one more token with the tab's strategy (the first one from the prompt)."""
        def starts():
            if not self.tab.steppable:  # wired on every tab, shown on some: a hand-made call to it is refused
                raise ValueError(f"{self.tab.title} has no step mode (Next token)")
            loaded, plans, input_ids, _, note, facts = self._setup(a, a.prompt)
            current = next(iter(a.runs.values()), None) if a.runs else None
            paused = current if steering.is_paused(current, a.prompt, loaded.name) else None
            start = steering.next_token(paused, input_ids, plans[0].kwargs, self._seed(a.seed),
                                        f"{plans[0].run_label(facts)} · step by step", plans[0].facts(facts))
            return [(plans[0], start)], loaded, a.prompt, note

        yield from self._run(starts, a.branches, request)

    def sample_many(self, a: Inputs, request=None):
        """N runs with seeds seed..seed+N-1 in one batch, merged into the samples' prefix tree."""
        def starts():
            n_ = policy.whole(a.n, "samples N", 2, steering.SAMPLE_MANY_MAX)
            seed_ = self._seed(a.seed, n_)
            loaded, plans, input_ids, _, note, facts = self._setup(a, a.prompt)
            start = steering.sample_many(input_ids, plans[0].kwargs, n_, seed_, plans[0].label, plans[0].facts(facts))
            # no logit lens: the samples' tree shows none of it, and N rows of it would cost N times a lens
            plan = replace(plans[0], model_kwargs={k: v for k, v in plans[0].model_kwargs.items() if k != "lens"})
            return [(plan, start)], loaded, a.prompt, note

        yield from self._run(starts, a.branches, request)

    def _run(self, starts, branches, request) -> Iterator[dict]:
        """``starts()`` -> (the (plan, ``steering.Start``) pairs, the model, the prompt, a note); a ``ValueError``
        it raises is the status (what is on screen stays); otherwise stream them. The request's deadline counts from
        here, its preparation (the model's load, the prompt's encoding) included; the session holds one of its
        slots (``policy.SESSION_RUNS``) throughout. The models ``starts`` loads (the tab's, an assistant) are held by
        the run's lease until it ends, so that no other visitor's load evicts them meanwhile (``ModelCache.lease``)."""
        deadline = time.monotonic() + self.app.max_seconds if self.app.max_seconds is not None else None
        try:
            with policy.SESSION_RUNS.slot(getattr(request, "session_hash", None)), self.app.models.lease() as lease:
                try:
                    with lease.taking():
                        pairs, loaded, prompt, note = starts()
                    for _, start in pairs:  # whatever path made them, no id past the vocabulary reaches the model
                        steering.check_vocab(start, _vocab(loaded))
                except Exception as err:  # noqa: BLE001 - any input a handler cannot use: the status says so
                    if not isinstance(err, (ValueError, OSError, TimeoutError)):
                        traceback.print_exc()
                    yield self._error(err)
                    return
                yield from self._stream(pairs, loaded, prompt, branches, note, request, deadline)
        except ValueError as err:  # the session's slots are taken
            yield self._error(err)

    def _parent(self, runs) -> Run:
        parent = next(iter(runs.values()), None) if runs else None
        if parent is None or parent.trace is None:
            raise ValueError("there is no finished run in this tab to continue: Generate first")
        return parent

    def _stream(self, starts, loaded, prompt, branches, note, request, deadline=None) -> Iterator[dict]:
        """Stream each (plan, start) in order into one view; the first is the tab's main run, which joins the
        session's branch tree when it ends (a paused step-mode run too, growing in place)."""
        branches = branches if isinstance(branches, Branches) else Branches()
        texts = TokenTexts(loaded.tokenizer)
        view = View({plan.name: Run(plan.name, start.label, start.kwargs, facts=start.facts, base=start.base,
                                    paused=start.paused, lead=list(start.lead), lead_texts=texts.pieces(start.lead)[0])
                     for plan, start in starts}, branches=branches)
        frames, throttle = Frames(self.app.frame), Throttle()
        try:
            for plan, start in starts:
                for _ in stream_run(view.runs[plan.name], loaded, start.input_ids, start.attention_mask,
                                    generator=start.generator, deadline=deadline, limits=policy.limits(),
                                    origin=start.origin, top_n=start.top_n, **plan.model_kwargs):
                    if not frames.due():  # the run's records hold the step; the next update shows it
                        continue
                    if throttle.due():
                        started = time.perf_counter()
                        out = self._outputs(view, note=note)
                        throttle.drawn(started)
                        yield out
                    else:
                        yield self._outputs(view, figures=False, note=note)
        except Exception as err:  # noqa: BLE001 - shown in the tab; what is on screen stays
            if not isinstance(err, (ValueError, TimeoutError, EngineStopped)):  # those say all there is in words
                traceback.print_exc()
            yield self._error(err)
            return
        main = view.main
        if main.paused and main.trace is not None:
            eos = loaded.model.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
            main.paused = not steering.ended(main, starts[0][1].budget, eos)
        if main.trace is not None and main.trace.run_id:
            branches.add(self.tab.key, main.label, prompt or "", main.trace)
        yield self._outputs(view, note=note, final=True, request=request)

    def stopped(self, runs: dict[str, Run], request: gr.Request = None) -> dict:
        if not runs or all(r.done for r in runs.values()):
            return {self.out.status: gr.skip()}  # an empty dict would read to Gradio as one output value
        wait_stopped(runs, timeout=2.0)  # after this no late stream update can overwrite the summary
        for run in runs.values():
            run.stopped = run.stopped or ("" if run.done else "cancelled")
        view = View(runs)  # the text and tokens too: the last streamed update may be a frame behind the runs
        return {**dict(zip(self.out.texts, self.tab.texts(view))), self.out.tokens: self._tokens(view),
                self.out.status: "Stopped.  \n" + status_line(runs, seeded=self.tab.seeded),
                self.out.download: save_runs(self.tab.key, runs, session.folder(request))}

    # --- handlers: picking ----------------------------------------------------------------------------
    def pick(self, runs: dict[str, Run], step, row) -> dict:
        if not runs:
            return {self.out.alternatives: gr.skip()}
        try:
            view = View(runs, step=policy.whole(step or 0, "step", 0, 2 ** 31), row=policy.whole(row or 0, "row", 0,
                                                                                                   2 ** 31))
        except ValueError:  # a hand-made call: nothing to show for it
            return {self.out.alternatives: gr.skip()}
        return {self.out.alternatives: self._alternatives(view),
                **{plot: self._draw(f, view) for plot, f in zip(self.out.plots, self.figures) if f.picked}}

    def pick_token(self, runs: dict[str, Run], row, evt: gr.SelectData) -> dict:
        """A click on a generated token: its step goes to the step slider and the picked figures."""
        try:
            step = policy.whole(evt.index, "step", 0, 2 ** 31)
        except ValueError:  # a hand-made event: nothing to pick
            return {self.out.step: gr.skip()}
        return {self.out.step: gr.Slider(value=step), **self.pick(runs, step, row)}

    @staticmethod
    def pick_alternative(evt: gr.SelectData):
        """A click on a row of the alternatives: its token (by id) goes to the token box."""
        row = evt.row_value or []
        try:
            return f"#{policy.whole(row[1], 'token', 0, 2 ** 31)}" if len(row) > 1 and row[1] not in (None, "") \
                else gr.skip()
        except (ValueError, TypeError):  # a hand-made event
            return gr.skip()

    def clicked(self, runs, branches, evt: gr.SelectData) -> dict:
        """A click on a point of a figure: a run of the branch tree shows that run; a beam-tree node fills the
        beam node box."""
        if evt.value == "nodes":  # the beam tree's node markers carry their node id
            try:
                return {self.w.node: policy.whole(evt.index, "beam node", 0, 2 ** 31 - 1)}
            except ValueError:
                return {self.w.node: gr.skip()}
        if evt.value != "runs" or not isinstance(branches, Branches) or not isinstance(evt.index, str) \
                or evt.index not in branches.entries:
            return {self.out.status: gr.skip()}
        entry = branches.get(evt.index)
        run = Run.from_trace("main", entry.label, entry.trace, prompt=entry.prompt,
                             lead_pieces=pieces(entry, branches)[:entry.offset])
        return self._outputs(View({"main": run}, branches=branches), final=True, download=False)

    def load_trace(self, path, previous):
        try:
            runs = load_runs(path, main_label=self.tab.title)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:  # a file of a wrong shape
            return self._error(err if isinstance(err, ValueError) else ValueError(
                f"trace file must be a trace written by this playground; this one is not ({type(err).__name__})"))
        return self._outputs(View(runs), final=True, saved=path)

    def share_link(self, *values) -> dict:
        """The link that reopens this tab with its prompt and settings (the last value: the page's address)."""
        *values, page_url = values
        settings = self.settings
        try:
            checked = {name: persist.check(name, settings[name], value) for name, value in zip(settings, values)}
        except ValueError as err:
            return {self.w.link: gr.Textbox(visible=False), **self._error(err)}
        url = persist.share_url(page_url, self.tab.key, settings, checked)
        if len(url) > persist.MAX_LINK:
            return {self.w.link: gr.Textbox(visible=False), **self._error(ValueError(
                f"the share link would be {len(url):,} characters, more than a server reads ({persist.MAX_LINK:,}); "
                "shorten the prompt or the long settings"))}
        return {self.w.link: gr.Textbox(value=url, visible=True)}

    def apply_preset(self, name, extra) -> dict:
        values, controls = self.tab.presets().get(name, {}), self.w.controls
        rest = {k: v for k, v in values.items() if k not in controls}
        return {**{widget: widget_value(f, values[f]) for f, widget in controls.items() if f in values},
                self.w.extra: {**{k: v for k, v in (extra or {}).items() if k not in values}, **rest}}

    def on_model_name(self, name) -> dict:
        try:
            values = self.tab.on_model(policy.load(self.app.models, name, "model"))
        except (ValueError, OSError):  # the status of the next Generate says why; the panel keeps what it shows
            return {self.w.model_panel[0]: gr.skip()}
        return dict(zip(self.w.model_panel, values))

    # --- handlers: attribution ---------------------------------------------------------------------
    def attribution_seconds(self) -> float:
        """How long one attribution may take: ``core.attribution.DEFAULT_SECONDS``, less under a shorter cap."""
        cap = self.app.max_seconds
        return min(attribution.DEFAULT_SECONDS, cap) if cap else attribution.DEFAULT_SECONDS

    def attribute_step(self, runs, step, row, model_name, steps, progress=gr.Progress()) -> gr.HTML:
        """Which tokens of the context drove the picked step's choice (the tab's main run, the picked row), as the
        panel's HTML; what cannot be attributed is said in the panel."""
        step, row = int(step or 0), int(row or 0)
        try:
            run = next(iter(runs.values()), None) if runs else None
            if run is None or not run.steps:
                raise attribution.AttributionError("there is no run in this tab to attribute: Generate first")
            trace = run.to_trace()
            loaded = policy.load(self.app.models, model_name, "model")
            if engine.is_remote(loaded):
                raise attribution.AttributionError(
                    f"{loaded.name} runs on the vLLM engine's server, which returns no gradients: attribution needs "
                    "a model loaded in this process")
            if trace.model_name and trace.model_name != loaded.name:
                raise attribution.AttributionError(
                    f"the run on screen was made by {trace.model_name}, the session's model is {loaded.name}: pick "
                    f"{trace.model_name} again to attribute it")
            ids, target, prompt_tokens = attribution.step_context(trace, step, row)
            progress(0.0, desc="Attributing")
            deadline = time.monotonic() + self.attribution_seconds()
            result = engine_host.attribute(loaded, ids, target, steps=int(steps or attribution.DEFAULT_STEPS),
                                           deadline=deadline, prompt_tokens=prompt_tokens,
                                           progress=lambda done: progress(done, desc="Attributing"))
        except TimeoutError as err:
            shown = attribution_figure.message_html(f"{err} ({self.attribution_seconds():.0f} s on this server)")
        except (ValueError, OSError) as err:  # AttributionError is a ValueError, as the model picker's refusals
            shown = attribution_figure.message_html(f"Cannot attribute this step: {err}")
        else:
            shown = attribution_figure.attribution_html(result, step, row)
        return gr.HTML(shown, visible=True)

    # --- output assembly -------------------------------------------------------------------------
    def _error(self, err: Exception) -> dict:
        """Everything on screen stays; only the status says what was wrong (as text: the error often quotes a value
        the visitor sent, see ``status.plain``)."""
        gr.Warning(plain(err))
        return {self.out.status: error_line(err)}

    def _draw(self, fig: Figure, view: View) -> PlotData | None:
        """The figure as Gradio's plotly payload, carrying plotly's config (scroll to zoom) along; None when it has
        nothing to show (its draw gave None or a hint, ``common.empty_figure``)."""
        try:
            drawn = fig.draw(view)
            return None if drawn is None or is_empty(drawn) else PlotData(type="plotly", plot=figure_json(drawn))
        except Exception as err:  # noqa: BLE001 - a figure that cannot draw this trace says so, others still draw
            traceback.print_exc()
            gr.Warning(plain(f"{fig.label}: cannot draw this trace ({type(err).__name__}: {err})"))
            return None

    def _tokens(self, view: View) -> str:
        own = self.tab.tokens_view(view)
        if own is not None:
            return own
        return tokens_html(view.steps, row=view.row, lead=view.main.lead_texts) if view.steps or view.main.lead \
            else ""

    def _alternatives(self, view: View):
        step = view.step if 0 <= view.step < len(view.steps) else len(view.steps) - 1
        rows = alternatives_table(view.steps, step, row=view.row) if view.steps else []
        return rows or [["", None, None, None, ""]]

    def _outputs(self, view: View, *, figures: bool = True, final: bool = False, note: str = "",
                 saved: str | None = None, request: gr.Request | None = None, download: bool = True) -> dict:
        """The outputs of a run handler: text, status and tokens always; with ``figures``, the figures (each
        figure's sub-tab shown only when it has something to draw), the alternatives and the step; ``final`` also
        writes the trace download (``saved``: an existing file; ``download=False``: leave the button as it is)."""
        tab, out = self.tab, self.out
        extra_note = tab.note(view) if final else ""
        if final and view.main.paused:
            extra_note = "; ".join(n for n in (extra_note, "step by step: Next token goes on, Generate runs to the "
                                               "end, Continue with this token replaces the picked step's") if n)
        status = status_line(view.runs, "; ".join(n for n in (note, extra_note) if n), seeded=tab.seeded)
        # the runs go to the session state at every update, so that Stop can save what streamed
        update = {**dict(zip(out.texts, tab.texts(view))), out.status: status, out.tokens: self._tokens(view),
                  out.runs: view.runs}
        if view.branches is not None:
            update[out.branches] = view.branches
        if not figures:
            return update
        for plot, fig_tab, fig in zip(out.plots, out.figure_tabs, self.figures):
            drawn = self._draw(fig, view)
            update[plot] = drawn
            if final:
                update[fig_tab] = gr.Tab(visible=drawn is not None)
        update[out.alternatives] = self._alternatives(view)
        if final:
            n_steps = len(view.steps)
            update[out.step] = gr.Slider(maximum=max(n_steps - 1, 1), value=max(n_steps - 1, 0))
            if download:
                update[out.download] = saved or save_runs(tab.key, view.runs, session.folder(request))
        return update

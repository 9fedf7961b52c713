"""What every strategy tab shares: the layout (prompt and settings left, streamed text and figures
right) and its wiring to the handlers (``playground.tabs.handlers``), both read from the tab's spec
(``playground.tabs.spec``: its run buttons, inputs, settings and outputs, by name).

A tab module subclasses ``StrategyTab`` with its controls (widgets labelled with transformers'
field names), the fields that define it (``fixed``) and its figures; tabs that run more than one
generation (DoLa beside greedy, speculative vs greedy, a cache kind vs the default one, compare)
override ``plans`` and ``texts``. Handlers only adapt: widgets -> kwargs -> ``core.stream`` ->
``Run`` -> figures.

A ``StrategyTab`` is declarative and registered once per process: it keeps nothing of a build or of a
session. ``build`` makes a ``TabUI``, which holds what one build made (its app context, its widgets, its
``TabSpec``) and inherits the handlers; what one visitor owns lives in the session's ``gr.State``s and
folder (``playground.session``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import gradio as gr


from ..figures import candidates
from ..figures.tokens import ALTERNATIVES_HEADERS, COLOUR_BY
from core import attribution

from .. import persist, session, steering, view_code
from ..branches import Entry, entropy_per_step, sample_tree, samples
from ..figures import branches as branch_figures
from ..figures import funnel
from ..figures import watch as watch_figures
from ..facts import Facts, run_label, seeds_text
from ..i18n import tr
from ..state import ModelCache
from . import TabHandle
from .advanced import with_advanced
from .handlers import TabHandlers, View
from .spec import RUN_BUTTONS, RUN_OUTPUTS, Inputs, RunButton, TabSpec, named, output_names
from .status import join_texts

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
    # its run buttons, in wiring order (``spec.RunButton``); a tab of its own adds one as (*RUN_BUTTONS, RunButton(...))
    buttons: tuple[RunButton, ...] = RUN_BUTTONS

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
    buttons: dict[str, gr.Button]  # the run buttons the tab built (``StrategyTab.buttons``), by name
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


class TabUI(TabHandlers):
    """One build of a tab: its layout (``layout``) and its wiring (``wire``), both reading the build's ``TabSpec``;
    the handlers they wire are ``TabHandlers``'. A name of the spec maps to its component through ``component``."""

    def __init__(self, tab: StrategyTab, app: AppContext):
        self.tab, self.app = tab, app
        self.figures = tab.all_figures()
        self.w: Widgets | None = None
        self.spec: TabSpec | None = None  # the build's names (``spec.TabSpec``), once the layout made its widgets

    def build(self) -> TabHandle:
        self.w = self.layout()
        self.spec = TabSpec(self.tab.key, self.tab.seeded, tuple(self.w.side), tuple(self.w.controls),
                            tuple(b for b in self.tab.buttons if b.name in self.w.buttons))
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
        own = {**fixed, **w.side, **w.controls}
        if own.get(name) is None:  # a spec's slip is said as the page builds, not found as a value in a wrong slot
            raise KeyError(f"`{name}` names no input of the {self.tab.key} tab (its spec: {list(own)})")
        return own[name]

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
        """The tab's run buttons at ``place``, each shown where the tab has its flag."""
        return {b.name: gr.Button(tr(b.label), variant=b.variant, visible=self._shown(b), **style)
                for b in self.tab.buttons if b.place == place}

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
        missing = [b.name for b in spec.buttons if not callable(getattr(self, b.name, None))]
        if missing:
            raise TypeError(f"the {self.tab.key} tab's run buttons {missing} have no handler of their name "
                            "(TabHandlers)")
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

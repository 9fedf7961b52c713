"""What a strategy tab's events call, and the view they draw from.

``TabHandlers`` holds the handlers ``TabUI`` (its layout and wiring, ``playground.tabs.base``) wires: each run button
of the spec (``StrategyTab.buttons``: a method of the button's name taking its inputs by name, ``spec.Inputs``), Stop,
picking a step or a token, a click on a figure, a loaded trace, Share link, a preset, a model switch, attribution.
Every run handler streams a ``steering.Start`` through ``_stream`` into a ``View``, which ``_outputs`` turns into the
updates ``{component: value}`` Gradio sends; each finished main run joins the session's branch tree.

Handlers read everything per session from their inputs (the session's states) and the request: what they read of
``self`` is the build (``tab``, ``app``, ``w``, ``out``, ``figures``, ``settings``), never a visitor's data.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

import gradio as gr

from gradio.components.plot import PlotData

from ..figures import attribution as attribution_figure
from ..figures.common import figure_json, is_empty
from ..figures.tokens import alternatives_table, tokens_html
from core import attribution
from core.engine.process import EngineStopped
from core.rng import new_generator
from core.text import TokenTexts

from .. import engine, engine_host, persist, policy, session, steering
from ..branches import Branches, pieces
from ..facts import Facts
from ..field_codecs import generate_kwargs, widget_value
from ..prompt import encode_prompt, parse_token, parse_watch, uses_chat
from ..runs import Run, load_runs, save_runs, stream_run, wait_stopped
from .spec import Inputs
from .status import Frames, Throttle, error_line, plain, status_line

if TYPE_CHECKING:
    from .base import Figure, Plan


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


def _vocab(loaded) -> int:
    """The model's vocabulary size: every id fed to it must be below it."""
    return loaded.model.config.get_text_config().vocab_size


class TabHandlers:
    """The handlers of one build of a tab (mixed into ``TabUI``, which makes what they read: see the module's
    docstring). They return ``{component: value}`` (an output left out stays as it is)."""

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

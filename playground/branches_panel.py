"""The "Branches" tab: the session's tree of runs on a prompt, any run shown again, two runs compared, and the whole
tree downloaded as JSON and loaded back. Everything is read from the session's ``Branches`` state (the runs'
traces); the strategy tabs add to it (``TabUI._stream``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.components.plot import PlotData

from . import persist, session
from .branches import Branches, compare, pieces, spelled, token_texts
from .figures import branches as branch_figures
from .figures.common import figure_json
from .figures.tokens import Column, cell, columns_html, tokens_html
from .i18n import tr
from .tabs.status import plain

ASSETS = Path(__file__).resolve().parents[1] / "assets"
INTRO = ("**Branches**: every run of this session, as a tree of forks per prompt. Continue a run with another "
         "token in any strategy tab (or step through it, or sample many) and the runs grow into a tree here. Click a "
         "node to read that run; pick two runs to see where they diverge and which one the model prefers.")


def run_choices(branches: Branches, key: tuple[int, ...] | None = None) -> list[tuple[str, str]]:
    """(label, run id) of the session's runs (on prompt ``key`` only, when given), newest first."""
    number = branch_figures.numbered(branches)
    out = []
    for entry in reversed(list(branches.entries.values())):
        if key is not None and entry.prompt_key != key:
            continue
        words = spelled(entry, branches, limit=8).replace("\n", " ")
        out.append((f"{branch_figures.run_title(entry, number[entry.run_id])} · {words!r}", entry.run_id))
    return out


def prompt_choices(branches: Branches) -> list[tuple[str, str]]:
    """(the prompt as typed, its key) of every prompt the session ran, newest first."""
    seen: dict[str, str] = {}
    for entry in reversed(list(branches.entries.values())):
        key = ",".join(map(str, entry.prompt_key))
        label = entry.prompt.strip().replace("\n", " ")[:80] or f"({len(entry.prompt_key)} prompt tokens)"
        seen.setdefault(key, label)
    return [(label, key) for key, label in seen.items()]


def _key(value: str | None) -> tuple[int, ...] | None:
    return tuple(int(t) for t in value.split(",") if t) if value else None


def _plot(fig):
    return PlotData(type="plotly", plot=figure_json(fig))


@dataclass
class BranchesPanel:
    """The tab's handlers over the session's ``branches`` state (an ``AppContext.branches``)."""

    branches: gr.State
    store: gr.BrowserState | None = None  # the browser's copy of the tree (``playground.persist``)

    def refresh(self, branches, prompt_key, first, second, request: gr.Request = None):
        """The prompts, the tree on the chosen (else newest) prompt, the run pickers, the newest run shown, and the
        whole tree as a JSON file to download (in the session's folder)."""
        branches = branches if isinstance(branches, Branches) else Branches()
        prompts = prompt_choices(branches)
        keys = [k for _, k in prompts]
        prompt_key = prompt_key if prompt_key in keys else (keys[0] if keys else None)
        runs = run_choices(branches)
        ids = [r for _, r in runs]
        tree = branch_figures.branch_tree_figure(branches, _key(prompt_key), None)
        return (gr.Dropdown(choices=prompts, value=prompt_key), _plot(tree),
                gr.Dropdown(choices=runs, value=first if first in ids else (ids[1] if len(ids) > 1 else None)),
                gr.Dropdown(choices=runs, value=second if second in ids else (ids[0] if ids else None)),
                self.write(branches, request) if branches.entries else None,
                *self.show(branches, ids[0] if ids else None))

    def show(self, branches, run_id):
        """One run of the tree: its text (the prefix it continued from included) and its tokens."""
        if not isinstance(branches, Branches) or run_id not in branches.entries:
            return gr.skip(), gr.skip(), gr.skip()
        entry = branches.get(run_id)
        number = branch_figures.numbered(branches)[run_id]
        origin = entry.trace.origin
        # a tree comes from a visitor's file or browser store: its labels and names as text
        kind = plain(f"`{entry.trace.strategy}`, {entry.tab} tab")
        about = (f"**{plain(branch_figures.run_title(entry, number))}** ({kind})"
                 + (branch_figures.seeds_note(entry.seeds, ", ") if entry.trace.config.get("do_sample") else "")
                 + (f"; continues run #{branch_figures.numbered(branches).get(origin.parent, '?')} at step "
                    f"{origin.step}" if origin is not None else ""))
        lead = pieces(entry, branches)[:entry.offset]
        return (spelled(entry, branches), about, tokens_html(entry.trace.steps, lead=lead))

    def clicked(self, branches, evt: gr.SelectData):
        if evt.value != "runs":
            return (gr.skip(),) * 3
        return self.show(branches, evt.index)

    def compare(self, branches, first, second):
        """Two runs side by side: their texts, where they diverge, the model's log-probability of each token, and their
        tokens as columns (``columns_html``, as the Compare tab draws its strategies)."""
        if not isinstance(branches, Branches) or first not in branches.entries or second not in branches.entries:
            message = "Pick two runs of this session to compare (run something first)."
            return (gr.skip(), gr.skip(), message, _plot(branch_figures.two_runs_figure(None, ("", ""), str)),
                    gr.skip())
        a, b = branches.get(first), branches.get(second)
        text_of = token_texts(branches)
        result = compare(a, b, branches)
        number = branch_figures.numbered(branches)
        labels = (f"#{number[first]}", f"#{number[second]}")
        if a.prompt_key != b.prompt_key:
            where = "They start from different prompts."
        elif result.diverge is None:
            where = "One run continues the other: they never diverge."
        else:
            pa, pb = result.first.logprobs[result.diverge], result.second.logprobs[result.diverge]
            prefer = ("" if pa is None or pb is None else
                      f" There the model gives {labels[0]}'s token log p = {pa:.2f} and {labels[1]}'s {pb:.2f}.")
            where = plain(f"They diverge at position {result.diverge} after the prompt: "
                          f"{text_of(result.first.tokens[result.diverge])!r} vs "
                          f"{text_of(result.second.tokens[result.diverge])!r}.{prefer}")
        columns = [Column(label, [cell(t, piece, f"position {i}: " + (f"log p = {lp:.3f}" if lp is not None
                                                                        else "log p not recorded"))
                                  for i, (t, piece, lp) in enumerate(zip(run.tokens, pieces(entry, branches),
                                                                         run.logprobs))])
                   for label, entry, run in ((labels[0], a, result.first), (labels[1], b, result.second))]
        return (spelled(a, branches), spelled(b, branches),
                where, _plot(branch_figures.two_runs_figure(result, labels, text_of)),
                columns_html(columns, result.diverge if a.prompt_key == b.prompt_key else None, "Runs A and B"))

    @staticmethod
    def write(branches: Branches, request: gr.Request | None) -> str:
        """The tree as JSON in the session's folder (removed with the session); returns its path."""
        path = session.folder(request) / "branch-tree.json"
        path.write_text(branches.to_json())
        return str(path)

    def load(self, branches, path):
        """A downloaded tree back into the session (its runs join the current ones)."""
        if not path:
            return gr.skip(), gr.skip()
        branches = branches if isinstance(branches, Branches) else Branches()
        # into a copy first: a run of the file that would continue one of the session's into a cycle leaves the tree
        # as it was; then in place, so that a run that started before the load ends in the same tree
        merged = Branches(OrderedDict(branches.entries))
        try:
            loaded = Branches.from_json(Path(path).read_text())
            for entry in loaded.entries.values():
                merged.add(entry.tab, entry.label, entry.prompt, entry.trace)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            return gr.skip(), plain(f"Not loaded: {err}")
        branches.entries = merged.entries
        return branches, f"Loaded {len(loaded.entries)} runs."

    def build(self) -> None:
        with gr.Tab(tr("Branches"), id="branches") as tab:
            gr.Markdown(tr(INTRO), label="About Branches")
            with gr.Row():
                prompt = gr.Dropdown([], label=tr("Prompt"), info=tr("the session's prompts, newest first"), scale=4)
                refresh = gr.Button(tr("Refresh"), scale=1)
            tree = gr.Plot(label=tr("Branch tree"))
            gr.Markdown(tr(branch_figures.TREE_CAPTION), label="Branch tree caption", elem_classes=["dp-caption"])
            about = gr.Markdown(label="Shown run")
            text = gr.Textbox(label=tr("Run text"), lines=4, max_lines=16, interactive=False)
            tokens = gr.HTML(label=tr("Run tokens"), show_label=True, container=True, padding=True)
            with gr.Row():
                first = gr.Dropdown([], label=tr("Run A"))
                second = gr.Dropdown([], label=tr("Run B"))
                go = gr.Button(tr("Compare two runs"), variant="primary")
            where = gr.Markdown(label="Where they diverge")
            with gr.Row():
                text_a = gr.Textbox(label=tr("Run A text"), lines=4, max_lines=16, interactive=False)
                text_b = gr.Textbox(label=tr("Run B text"), lines=4, max_lines=16, interactive=False)
            side = gr.HTML(label=tr("Runs A and B token by token (the first difference outlined, the differing "
                                    "tokens underlined)"), show_label=True, container=True, padding=True)
            evidence = gr.Plot(label=tr("Log-probability per position"))
            gr.Markdown(tr(branch_figures.COMPARE_CAPTION), label="Compare caption", elem_classes=["dp-caption"])
            with gr.Row():
                download = gr.DownloadButton(tr("Download branch tree (JSON)"))
                upload = gr.UploadButton(tr("Load branch tree (JSON)"), file_types=[".json"])
            loaded_status = gr.Markdown(label="Branch tree file")
            clicks = gr.HTML("", label="Plot clicks", elem_classes=["dp-plot-clicks"],
                             js_on_load=(ASSETS / "plot_click.js").read_text())
        state = self.branches
        views = [prompt, tree, first, second, download, text, about, tokens]
        quiet = dict(show_progress="hidden")
        tab.select(self.refresh, [state, prompt, first, second], views, api_name=False, **quiet)
        refresh.click(self.refresh, [state, prompt, first, second], views, api_name="branches_refresh", **quiet)
        prompt.input(self.refresh, [state, prompt, first, second], views, api_name=False, **quiet)
        clicks.select(self.clicked, [state], [text, about, tokens], api_name=False)
        go.click(self.compare, [state, first, second], [text_a, text_b, where, evidence, side],
                 api_name="branches_compare")
        loaded = upload.upload(self.load, [state, upload], [state, loaded_status], api_name="branches_load")
        loaded.then(self.refresh, [state, prompt, first, second], views, api_name=False)
        if self.store is not None:
            loaded.then(persist.save_tree, [state], [self.store], api_name=False, show_progress="hidden")


def build(branches: gr.State, store: gr.BrowserState | None = None) -> None:
    """Build the "Branches" tab (call inside the app's ``gr.Tabs``) over the session's ``branches`` state (kept in the
    browser's ``store`` too, when given)."""
    BranchesPanel(branches, store).build()

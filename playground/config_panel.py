"""The "Config & Share" tab: the active strategy tab's settings as the ``GenerationConfig`` JSON transformers
saves, and save / download / load / push of it (the work is done by ``playground.share``).

It follows the active tab (``active_tab``, a ``gr.State`` holding a tab key): what it shows, saves and
pushes is exactly what that tab's Generate runs (``field_codecs.generate_kwargs``: loaded extra fields, then
the widgets, then the fields that define the tab). A loaded config goes to the tab it matches (see
``matching_tab``); every widget of that tab takes the loaded value, and fields it has no widget for are
kept in the tab's ``extra`` state, so they run and are saved back.

Public mode (``policy.public_mode()``: a Space, or ``PLAYGROUND_PUBLIC=1``): nothing a visitor types reaches the
server's filesystem. The "Local folder" box is not used (each session saves to and loads from its own folder
under ``PLAYGROUND_CONFIG_DIR``), and no status names a server path: a saved file is offered as a download.

Sign-in: on a Space, ``gr.LoginButton`` (OAuth; the README asks for repo-write scopes) hands the handlers
a ``gr.OAuthToken``. Locally Gradio can only mock OAuth with an already logged-in machine and calls the Hub
at startup, so the button is only shown on a Space; locally ``HF_TOKEN`` or the masked field is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import gradio as gr

from . import policy, session, share
from .field_codecs import generate_kwargs, widget_value
from .i18n import tr
from .tabs.status import plain  # every status here may quote a file name, repo id or value a visitor typed

HEADING = "Settings of the **{title}** tab, as the `GenerationConfig` JSON transformers saves (only the values " \
          "that differ from the defaults)."


def matching_tab(values: Mapping[str, Any], handles: Iterable, active: str | None) -> tuple[Any, list[str]]:
    """The tab a loaded config belongs to, and the fields that tab would override.

    A tab matches when the fields that define it (``fixed``, e.g. ``do_sample=True``) agree with the
    config (an absent field counts as transformers' default). Among those, the one with widgets for the
    most loaded fields wins, then the more specific one (more defining fields), then the active one,
    then the first in tab order. With no match the active tab takes the config and its defining fields
    win (listed in the second value, to tell the user)."""
    handles = list(handles)

    def agrees(h) -> bool:
        return all(values.get(k, share.default_value(k)) == v for k, v in h.fixed.items())

    candidates = [h for h in handles if agrees(h)]
    if candidates:
        best = max(candidates, key=lambda h: (sum(k in h.controls for k in values), len(h.fixed), h.key == active))
        return best, []
    tab = next((h for h in handles if h.key == active), handles[0])
    return tab, [k for k, v in tab.fixed.items() if values.get(k, share.default_value(k)) != v]


@dataclass
class Panel:
    """The built panel's components (for ``app.py`` and tests)."""

    tab: gr.Tab
    heading: gr.Markdown
    json: gr.Code
    file_name: gr.Textbox
    folder: gr.Textbox
    save: gr.Button
    load_folder: gr.Button
    download: gr.File
    upload: gr.File
    repo_id: gr.Textbox
    commit_message: gr.Textbox
    token: gr.Textbox
    login: gr.LoginButton | None
    push: gr.Button
    load_hub: gr.Button
    status: gr.Markdown


class ConfigPanel:
    """Handlers over the tab handles; each reads the current widget values from one dict of inputs."""

    def __init__(self, handles, active_tab: gr.State):
        items = handles.values() if isinstance(handles, Mapping) else handles
        self.handles = {h.key: h for h in items}
        self.active_tab = active_tab
        self.panel: Panel | None = None

    # --- reading the active tab ------------------------------------------------------------------
    def handle(self, data: Mapping) -> Any:
        key = data.get(self.active_tab)
        return self.handles.get(key) or next(iter(self.handles.values()))

    def config(self, data: Mapping, h=None):
        """The ``GenerationConfig`` the tab's Generate would run with its current widgets."""
        h = h or self.handle(data)
        widgets = {name: data[c] for name, c in h.controls.items()}
        return share.config_from_settings(generate_kwargs(widgets, data.get(h.extra) or {}, h.fixed))

    @staticmethod
    def user_set(h) -> set[str]:
        """Fields the tab sets (widgets, defining fields); the rest of a config came with a loaded file."""
        return set(h.controls) | set(h.fixed)

    def folder(self, data: Mapping, request: gr.Request | None) -> Path:
        """The typed folder; in public mode a per-session folder, so that visitors never see each other's files
        and a typed path never reaches the server's filesystem."""
        if policy.public_mode():
            return session.folder(request) / "configs"  # removed with the session
        return share.check_folder(data[self.panel.folder])

    def token(self, data: Mapping, oauth_token) -> str | None:
        return share.resolve_token(getattr(oauth_token, "token", None), data.get(self.panel.token))

    # --- handlers --------------------------------------------------------------------------------
    def preview(self, data: Mapping) -> dict:
        p, h = self.panel, self.handle(data)
        try:
            text = share.config_json(self.config(data, h))
        except ValueError as err:
            return {p.heading: HEADING.format(title=h.title), p.status: plain(f"Settings are not valid: {err}")}
        return {p.heading: HEADING.format(title=h.title), p.json: text}

    def save(self, data: Mapping, request: gr.Request = None) -> dict:
        p = self.panel
        try:
            path = share.save_config(self.config(data), self.folder(data, request), data[p.file_name],
                                     self.user_set(self.handle(data)))
        except ValueError as err:
            return {p.status: plain(f"Save failed: {err}")}
        if policy.public_mode():
            status = plain(f"Saved as {path.name} (download below).")
        else:
            status = plain(f"Saved to {path}. Load it with GenerationConfig.from_pretrained({str(path.parent)!r}, "
                           f"config_file_name={path.name!r}).")
        return {**self.preview(data), p.download: str(share.download_copy(path, session.folder(request))),
                p.status: status}

    def push(self, data: Mapping, oauth_token: Optional[gr.OAuthToken] = None, request: gr.Request = None) -> dict:
        p = self.panel
        try:
            cfg, folder = self.config(data), self.folder(data, request)
        except ValueError as err:
            return {p.status: plain(f"Push failed before saving: {err}")}
        out = share.push_config(cfg, data[p.repo_id], data[p.file_name], data[p.commit_message],
                                self.token(data, oauth_token), folder, self.user_set(self.handle(data)))
        result = {**self.preview(data), p.status: plain(out.message)}  # quotes the repo id and commit message
        if out.path is not None:
            result[p.download] = str(share.download_copy(out.path, session.folder(request)))
        return result

    def load_upload(self, data: Mapping) -> dict:
        path = data[self.panel.upload]
        if not path:
            return {self.panel.status: gr.skip()}  # an empty dict would read to Gradio as one output value
        return self._load(data, lambda: share.load_file(path), f"the uploaded {Path(path).name}")

    def load_folder(self, data: Mapping, request: gr.Request = None) -> dict:
        p = self.panel

        def read():
            return share.load_local(self.folder(data, request), data[p.file_name])

        where = "this session's folder" if policy.public_mode() else "the local folder"
        return self._load(data, read, f"`{(data[p.file_name] or '').strip()}` from {where}")

    def load_hub(self, data: Mapping, oauth_token: Optional[gr.OAuthToken] = None) -> dict:
        p = self.panel

        def read():
            return share.load_hub(data[p.repo_id], data[p.file_name], token=self.token(data, oauth_token))

        return self._load(data, read, f"`{(data[p.file_name] or '').strip()}` from `{(data[p.repo_id] or '').strip()}`")

    def _load(self, data: Mapping, read, source: str) -> dict:
        p = self.panel
        try:
            values = share.config_values(read())
        except OSError as err:
            if not policy.public_mode():
                return {p.status: plain(f"Load failed ({source}): {err}")}
            # transformers' and huggingface_hub's texts name the file's server path (a temp or cache folder)
            reason = policy.hub_reason(err) or "the file could not be read as a GenerationConfig JSON file"
            return {p.status: plain(f"Load failed ({source}): {reason}.")}
        except ValueError as err:  # ours, or transformers' about a field: no path
            return {p.status: plain(f"Load failed ({source}): {err}")}
        h, overridden = matching_tab(values, self.handles.values(), data.get(self.active_tab))
        extra = {k: v for k, v in values.items() if k not in h.controls and k not in h.fixed}
        updates: dict = {h.extra: extra, self.active_tab: h.key}
        for name, component in h.controls.items():
            shown = widget_value(name, values.get(name, share.default_value(name)))
            if shown is not None:  # no value and no default: the widget keeps what it shows
                updates[component] = shown
        out = {**updates, **self.preview({**data, **updates})}
        kept = f" Kept without a widget (they run and are saved back): {', '.join(sorted(extra))}." if extra else ""
        note = (f" This tab always sets {', '.join(f'`{k}`' for k in overridden)}; the loaded value is not used."
                if overridden else "")
        # the source names what the visitor typed, and a file's unknown fields are its own: as text
        out[p.status] = f"Loaded {plain(source)} into the **{h.title}** tab.{plain(kept)}{plain(note)}"
        return out

    # --- layout and wiring -----------------------------------------------------------------------
    def build(self) -> Panel:
        space, public = share.on_space(), policy.public_mode()
        with gr.Tab(tr("Config & Share"), id="config") as tab:
            heading = gr.Markdown(label="Config heading")
            json_view = gr.Code(language="json", interactive=False, label="GenerationConfig JSON")
            with gr.Row():
                file_name = gr.Textbox(share.DEFAULT_FILE_NAME, label="config_file_name",
                                       info=tr("several named configs can live in one folder or repo"))
                # in public mode the box is not used, and shows no server path
                folder = gr.Textbox("" if public else share.DEFAULT_FOLDER, label=tr("Local folder"),
                                    interactive=not public,
                                    placeholder=tr("this session's own folder") if public else None,
                                    info=tr("a folder per session on this public server" if public else
                                            "created if missing"))
            with gr.Row():
                save = gr.Button(tr("Save"), variant="primary")
                load_folder = gr.Button(tr("Load from folder"))
            download = gr.File(label=tr("Download saved config"), interactive=False)
            upload = gr.File(label=tr("Load from an uploaded JSON"), file_types=[".json"], type="filepath")
            with gr.Group():
                repo_id = gr.Textbox(label=tr("Hub repo id"), placeholder="your-name/your-model")
                commit_message = gr.Textbox(label=tr("Commit message"), placeholder=tr("Add a generation config"))
                login = gr.LoginButton() if space else None
                token = gr.Textbox(label=tr("Hugging Face token"), type="password",
                                   info=tr("used only when you are not signed in" if space else
                                           "your own token with write access; never stored" if public else
                                           "used only when HF_TOKEN is unset; never stored"))
                with gr.Row():
                    push = gr.Button(tr("Push to the Hub"), variant="primary")
                    load_hub = gr.Button(tr("Load from the Hub"))
            status = gr.Markdown(label="Share status")
        p = self.panel = Panel(tab, heading, json_view, file_name, folder, save, load_folder, download, upload,
                               repo_id, commit_message, token, login, push, load_hub, status)

        widgets = [c for h in self.handles.values() for c in h.controls.values()]
        extras = [h.extra for h in self.handles.values()]
        reads = {self.active_tab, *widgets, *extras, file_name, folder, repo_id, commit_message, token}
        shown = [heading, json_view, status]
        writes = [*widgets, *extras, self.active_tab, *shown, download]
        quiet = dict(api_name=False, show_progress="hidden")
        # Shown when the tab is opened, not at each switch of strategy tab: an event's inputs stay in the page's
        # loading statuses once it has run, and Gradio's page refreshes every one of them at each message a
        # run streams, so these ~300 inputs read at a tab switch would tax every later stream.
        tab.select(self.preview, reads, shown, **quiet)
        save.click(self.save, reads, [*shown, download], **quiet)
        push.click(self.push, reads, [*shown, download], api_name=False)
        # a load writes every tab's widgets; its progress shows on the status alone (see ``TabUI.wire``)
        load_folder.click(self.load_folder, reads, writes, show_progress_on=[status], **quiet)
        load_hub.click(self.load_hub, reads, writes, api_name=False, show_progress_on=[status])
        upload.upload(self.load_upload, reads | {upload}, writes, show_progress_on=[status], **quiet)
        return p


def build(handles, active_tab: gr.State) -> Panel:
    """Build the "Config & Share" tab (call inside the app's ``gr.Tabs``) for ``handles`` (``TabHandle``s,
    a list or a dict by key); ``active_tab`` is the ``gr.State`` holding the active tab's key."""
    return ConfigPanel(handles, active_tab).build()

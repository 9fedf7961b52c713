"""What survives a page reload, and what a share link carries.

**Reload.** Each strategy tab keeps its settings (the prompt, the chat-template box, the seed, every control and side
input) in a ``gr.BrowserState`` of its own, rewritten in the browser whenever one of them changes: a JavaScript
listener (``save_js``), so a keystroke costs no server round trip, and a value set by a preset, a loaded config or a
share link is kept as surely as a typed one. The session's branch tree goes to one more ``gr.BrowserState`` in its
bounded form (``Branches.to_json(max_chars=TREE_CHARS)``: each run's records cut to what the tree, the comparison,
the token view and continuing read, and only the newest runs that fit), written after every run and every loaded
tree. On page load (``Keeper.load``) both come back: the settings into the widgets, the runs into the session's
``Branches`` state. A value that no longer fits (a field the tab lost, a value outside its widget's range, JSON its
codec cannot read, a stored tree of another format) is left out and the tab's status says which and why.

**Share link.** *Share link* in a tab gives ``<page>?tab=<key>&prompt=...&<field>=<value>...`` with the values that
differ from the tab's defaults (on a Space, the Space's page: Spaces hand its query to the app). The page load reads
it from ``gr.Request.query_params``, checks every value as a stored one (a hand-edited link gets a message naming the
field and what it takes), selects the tab and fills it in; then the link's part of the address is dropped, so that
a later reload restores what the visitor changed since.

``gr.DeepLinkButton`` is not used: in Gradio 6.31 it works on any host, but it writes the session's whole component
config (the prompt included) to ``<upload folder>/deep_links/`` on the server, which nothing deletes (not
``delete_cache``, not the session's end) and which public mode forbids (nothing a visitor types reaches the server's
filesystem); its link restores what the server last saw of each component, unchecked, and not the selected tab.

Nothing here is shared between sessions: what a visitor keeps lives in their browser (per origin: two pages of the
app open in one browser share it, the last write wins), and the handlers read it from their inputs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import gradio as gr

from .branches import Branches
from .field_codecs import config_value
from .fields import INT_FIELDS, as_number_type
from .tabs.status import plain

VERSION = 1  # of what a settings store holds: {"version", "tab", "values": {name: widget value}}
KEY_PREFIX = "decoding-playground"
# The BrowserState secret travels to the browser in the page config, so it hides nothing from the visitor whose data it
# is; fixed rather than Gradio's random one per start, so that what a browser kept survives a server restart.
SECRET = "decoding-playground/v1"
# The branch tree's bounded form, in JSON characters. A browser gives an origin about 5 MB of localStorage (some count
# two bytes a character), and the store holds it encrypted as base64 of the JSON string: ~1.5 characters each, so
# ~0.9 M characters for the tree, the settings of every tab a few KB more. About 25 greedy runs of 32 tokens.
TREE_CHARS = 600_000
MAX_TEXT = 20_000  # characters of a kept or linked text value (a prompt, a JSON field)
MAX_LINK = 8_000  # characters of a share link: uvicorn reads at most 16 KB of request line and headers
LINK_PARAMS = ("tab", "prompt")  # besides the tab's own setting names
GRADIO_PARAMS = {"view", "__theme", "deep_link", "__sign", "ui", "write_token", "lang"}  # Gradio's own; left alone
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


# --- the stores ------------------------------------------------------------------------------------------------
def settings_store(key: str) -> gr.BrowserState:
    """The browser's copy of tab ``key``'s settings, made unrendered: ``Keeper.wire`` renders every tab's store outside
    the app's ``gr.Tabs``. Gradio mounts a tab's components only once the tab is first shown, and a BrowserState reads
    the browser's storage when it mounts: one inside a tab not shown yet would hand the page load nothing."""
    return gr.BrowserState(None, storage_key=f"{KEY_PREFIX}:settings:{key}", secret=SECRET, render=False)


def tree_store() -> gr.BrowserState:
    """The browser's copy of the session's branch tree (its bounded JSON)."""
    return gr.BrowserState(None, storage_key=f"{KEY_PREFIX}:branches", secret=SECRET)


def save_js(key: str, defaults: Mapping[str, Any]) -> str:
    """The listener that rewrites tab ``key``'s store from its settings (inputs: the settings in ``defaults``' order,
    then the store). It keeps the values that differ from the tab's ``defaults``, so that a default a later version
    changes is not pinned by a browser that never touched it. Until the page load has restored everything
    (``READY``) it hands the store back as it is: a widget that reports a change while the page builds must not
    overwrite what the load is about to read."""
    names, plain = json.dumps(list(defaults)), json.dumps([_plain(v) for v in defaults.values()])
    return (f"(...v) => {{ if (!window.{READY}) return v[{len(defaults)}]; const d = {plain}; "
            f"return {{version: {VERSION}, tab: {json.dumps(key)}, values: Object.fromEntries({names}"
            ".map((n, i) => [n, v[i]]).filter(([n, x], i) => JSON.stringify(x) !== JSON.stringify(d[i])))}; }")


def _plain(value: Any) -> Any:
    """A default as JavaScript writes it in JSON (a whole float without its ``.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


READY = "__decodingPlaygroundRestored"
AFTER_LOAD_JS = (f"() => {{ window.{READY} = true; const url = new URL(window.location.href); "
                 "if (url.searchParams.has('tab')) { "
                 f"for (const k of [...url.searchParams.keys()]) if (!{json.dumps(sorted(GRADIO_PARAMS))}.includes(k)) "
                 "url.searchParams.delete(k); history.replaceState(history.state, '', url.toString()); } return []; }")


COPY_JS = "(link) => { if (link) navigator.clipboard?.writeText(link).catch(() => {}); return []; }"


def stored(key: str, values: Mapping[str, Any]) -> dict:
    return {"version": VERSION, "tab": key, "values": dict(values)}


def save_tree(branches) -> str | Any:
    """The bounded JSON the tree store keeps (``gr.skip()`` while the session has no run: nothing to keep)."""
    if not isinstance(branches, Branches) or not branches.entries:
        return gr.skip()
    return branches.to_json(max_chars=TREE_CHARS)


# --- checking one value ----------------------------------------------------------------------------------------
def _choices(component) -> list:
    return [c[1] if isinstance(c, (tuple, list)) else c for c in (component.choices or [])]


def _range(component) -> str:
    lo, hi = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if lo is None and hi is None:
        return ""
    return f" in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


def _whole(name: str, component) -> bool:
    return name in INT_FIELDS or getattr(component, "precision", None) == 0


def check(name: str, component, value: Any) -> Any:
    """``value`` as widget ``component`` (setting ``name``) takes it; ``ValueError`` naming the field and what it takes
    otherwise. A ``GenerationConfig`` field's value must also read through its codec (``field_codecs``)."""
    value = _check_widget(name, component, value)
    if name not in LINK_PARAMS and name != "chat":
        try:
            config_value(name, value)
        except (TypeError, ValueError, AttributeError) as err:  # the codecs' own messages name the field
            raise ValueError(str(err) if isinstance(err, ValueError) else f"`{name}` cannot read {value!r}") from None
    return value


def _check_widget(name: str, component, value: Any) -> Any:
    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be true or false; got {value!r}")
        return value
    if isinstance(component, (gr.Slider, gr.Number)):
        if value is None and isinstance(component, gr.Number):
            return None  # an empty number box (a seed: a new random one each run)
        kind = "a whole number" if _whole(name, component) else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be {kind}{_range(component)}; got {value!r}")
        lo, hi = component.minimum, component.maximum
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"`{name}` must be {kind}{_range(component)}; got {value:g}")
        if _whole(name, component):
            if not float(value).is_integer():
                raise ValueError(f"`{name}` must be {kind}{_range(component)}; got {value:g}")
            value = int(value)
        return as_number_type(name, value)
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        choices = _choices(component)
        if not isinstance(value, list) or any(v not in choices for v in value):
            raise ValueError(f"`{name}` must be a list of {choices}; got {value!r}")
        return list(value)
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        choices = _choices(component)
        if value in choices:
            return value
        if isinstance(component, gr.Dropdown) and component.allow_custom_value and isinstance(value, str) \
                and len(value) <= MAX_TEXT:
            return value  # a typed value (a Hub id, a JSON cache_config): Generate checks it as it checks any
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}")
    if isinstance(component, gr.Textbox):
        if not isinstance(value, str):
            raise ValueError(f"`{name}` must be text; got {value!r}")
        if len(value) > MAX_TEXT:
            raise ValueError(f"`{name}` must be at most {MAX_TEXT:,} characters; got {len(value):,}")
        return value
    raise ValueError(f"`{name}` is not a setting that can be kept")


def parse_link_value(name: str, component, text: str) -> Any:
    """A share link's text for setting ``name`` as its widget's value (then ``check``ed)."""
    if isinstance(component, gr.Checkbox):
        word = text.strip().lower()
        if word not in TRUE | FALSE:
            raise ValueError(f"`{name}` must be true or false; got {text!r}")
        return check(name, component, word in TRUE)
    if isinstance(component, (gr.Slider, gr.Number)):
        if not text.strip() and isinstance(component, gr.Number):
            return check(name, component, None)
        try:
            number = float(text)
        except ValueError:
            kind = "a whole number" if _whole(name, component) else "a number"
            raise ValueError(f"`{name}` must be {kind}{_range(component)}; got {text!r}") from None
        return check(name, component, int(number) if number.is_integer() else number)
    if isinstance(component, gr.CheckboxGroup) or (isinstance(component, gr.Dropdown) and component.multiselect):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"`{name}` must be a JSON list of {_choices(component)}; got {text!r}") from None
        return check(name, component, values)
    return check(name, component, text)


def link_text(value: Any) -> str:
    """A widget value as a share link writes it (``parse_link_value`` reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return float(a) == float(b) if numbers else a == b


# --- a tab's settings back -------------------------------------------------------------------------------------
def restore(key: str, components: Mapping[str, Any], kept: Any) -> tuple[dict[str, Any], list[str]]:
    """(``{name: value}`` to set, problems) from what tab ``key``'s store held; a value that does not fit is left out
    and named in the problems."""
    if kept is None:
        return {}, []
    if not isinstance(kept, Mapping) or not isinstance(kept.get("values"), Mapping):
        return {}, ["the kept settings are not in a form this version reads"]
    if kept.get("version") != VERSION or kept.get("tab") != key:
        return {}, [f"the kept settings are of another version ({kept.get('version')!r}) or tab"]
    return _checked(kept["values"].items(), components, check, "is no longer a setting of this tab")


def _checked(items, components: Mapping[str, Any], read, unknown: str) -> tuple[dict[str, Any], list[str]]:
    """(``{name: read(name, component, value)}``, problems) for ``items`` (name, value) pairs: a name with no
    component is named with ``unknown``, a value ``read`` refuses with its ValueError's message."""
    values, problems = {}, []
    for name, value in items:
        if name not in components:
            problems.append(f"`{name}` {unknown}")
            continue
        try:
            values[name] = read(name, components[name], value)
        except ValueError as err:
            problems.append(str(err))
    return values, problems


def read_link(params: Mapping[str, str], tabs: Mapping[str, Mapping[str, Any]]
              ) -> tuple[str | None, dict[str, Any], list[str]]:
    """(the linked tab's key, ``{name: value}`` to set there, problems) from a page's query; ``(None, {}, [])``
    without ``tab``. ``tabs``: each tab's settings by name."""
    key = params.get("tab")
    if key is None:
        return None, {}, []
    if key not in tabs:
        return None, {}, [f"`tab` must be one of {', '.join(tabs)}; got {key!r}"]
    items = [(name, text) for name, text in params.items() if name != "tab" and name not in GRADIO_PARAMS]
    return key, *_checked(items, tabs[key], parse_link_value, "is not a setting of this tab")


def share_url(page_url: str | None, key: str, components: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """The link that reopens tab ``key`` with its prompt and the settings that differ from the tab's defaults: on a
    Space its page on huggingface.co (which hands the query to the app), elsewhere ``page_url`` without its query."""
    pairs = [("tab", key)]
    for name, value in values.items():
        component = components[name]
        if name == "prompt" or not _same(value, component.value):
            pairs.append((name, link_text(value)))
    query = urlencode(pairs, quote_via=quote)
    space = os.environ.get("SPACE_ID")
    if space:
        return f"https://huggingface.co/spaces/{space}?{query}"
    parts = urlsplit(page_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"?{query}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


# --- the tree back ------------------------------------------------------------------------------------------------
def restore_tree(text: Any) -> tuple[Branches | None, str]:
    """(the kept tree, a problem) from the tree store's value."""
    if text is None or text == "":
        return None, ""
    if not isinstance(text, str) or len(text) > 2 * TREE_CHARS:
        return None, "the kept branch tree is not one this playground wrote"
    try:
        return Branches.from_json(text), ""
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        return None, f"the kept branch tree was not restored: {err}"


# --- the wiring ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kept:
    """What the page load restores into one tab, as its spec names it (``TabUI.kept``): its settings by name, the
    browser's store of them, and the status that says what was not restored."""

    key: str
    settings: Mapping[str, Any]
    store: gr.BrowserState
    status: gr.Markdown


class Keeper:
    """The page load's restore over every tab (``app.py`` builds one once the tabs are): each tab's kept settings and
    a share link's into the widgets, the kept branch tree into the session's runs, the linked tab selected.

    ``tabs``: the built tabs' ``TabUI``s by key; the load reads only what each one's spec keeps (``TabUI.kept``)."""

    def __init__(self, tabs: Mapping[str, Any], branches: gr.State, tree: gr.BrowserState, tabs_block: gr.Tabs,
                 active_tab: gr.State):
        self.tabs, self.branches, self.tree = dict(tabs), branches, tree
        self.kept: dict[str, Kept] = {key: ui.kept for key, ui in self.tabs.items()}
        self.tabs_block, self.active_tab = tabs_block, active_tab

    def load(self, data: Mapping, request: gr.Request | None = None) -> dict:
        params = dict(getattr(request, "query_params", None) or {})
        linked, link_values, link_problems = read_link(params, {k: tab.settings for k, tab in self.kept.items()})
        out: dict = {}
        for key, tab in self.kept.items():
            settings = tab.settings
            values, problems = restore(key, settings, data.get(tab.store))
            if key == linked:
                values.update(link_values)
            for name, value in values.items():
                if not _same(value, settings[name].value):  # what the page shows already sets nothing off
                    out[settings[name]] = value
            # the store takes what the load set (the listener skips it: see save_js), a misfit dropped
            out[tab.store] = stored(key, {n: v for n, v in values.items() if not _same(v, settings[n].value)})
            notes = []
            if key == linked:
                notes.append("Opened from a share link"
                             + (f"; not applied: {'; '.join(link_problems)}" if link_problems else "") + ".")
            if problems:
                notes.append(f"Kept settings not restored: {'; '.join(problems)}.")
            if notes:  # the problems quote what the link or the store held: as text (see status.plain)
                out[tab.status] = plain(" ".join(notes))
        if link_problems:
            gr.Warning(plain(f"Share link: {'; '.join(link_problems)}"))
        if linked is not None:
            out[self.tabs_block] = gr.Tabs(selected=linked)
            out[self.active_tab] = linked
        kept, problem = restore_tree(data.get(self.tree))
        if problem:
            gr.Warning(plain(problem))
        if kept is not None and kept.entries:
            current = data.get(self.branches)
            current = current if isinstance(current, Branches) else Branches()
            try:
                current.extend(kept)  # in place: a run that started before the load ends in the same tree
                out[self.branches] = current
            except ValueError as err:  # a kept run and one of this page's would continue each other
                gr.Warning(f"the kept branch tree was not restored: {err}")
        return out

    def wire(self, demo: gr.Blocks) -> None:
        """Render the tabs' stores (call in the app's Blocks, outside its ``gr.Tabs``) and wire the page load."""
        for tab in self.kept.values():
            tab.store.render()
        inputs = {self.branches, self.tree, *(tab.store for tab in self.kept.values())}
        outputs = [self.branches, self.tabs_block, self.active_tab]
        for tab in self.kept.values():
            outputs += [*tab.settings.values(), tab.store, tab.status]
        # progress on one status, not on the ~300 outputs: each target stays among the loading statuses Gradio's page
        # refreshes at every streamed message (see gradio_patches)
        first = next(iter(self.kept.values())).status
        demo.load(self.load, inputs, outputs, api_name=False, show_progress="hidden", concurrency_id="page_load",
                  concurrency_limit=4, show_progress_on=[first]).then(
            None, None, None, js=AFTER_LOAD_JS, api_name=False)

"""Mends of Gradio, applied once at start-up (``app.launch``), each guarded by the Gradio release it was read against
(``TESTED``, the exact version: a patch release rebuilds the page and may change the code mended): outside it, it is
not applied and says so. Two of its output path, process-wide:

- ``keep_component_ids``: a per-session leak. An output updated by props gets a per-session copy of its component,
  made with a new ``_id``; the next value update then files that copy under its new id as well (``blocks.py``
  ``postprocess_data``: ``if block._id not in state: state[block._id] = block``), so a session's config grew by ~11
  components, each holding its last value (plot JSON), on every run. The copy keeps the id of the component it
  stands for.
- ``cheap_skips``: a bare ``gr.skip()`` (``{"__type__": "update"}``, no props) still makes ``postprocess_data``
  build a new component from the old one's constructor arguments and compute its config twice, JSON schema
  included: 1.5-5.6 ms per skipped output, all of it holding the GIL. A streaming tab skips ~10 outputs per token
  (the figures between redraws), which took more of the GIL than the model's forward. A bare skip changes nothing,
  so it now goes straight out as the same ``{"__type__": "update"}`` the slow path returns for it.

And one of its page (``PatchedAssets``, an ASGI middleware ``app.launch`` installs): ``quiet_loading_statuses``. At
every message a run streams, the page's ``DependencyManager.update_loading_stati_state`` hands the loading status of
every component any event has touched so far (each finished event's inputs and progress targets: hundreds once a
visitor has run a few tabs or opened the Config tab) to ``AppTree.update_state``, which finds each one by a search of
the whole layout (~1,000 components here). Measured in chromium after runs in six tabs: ~60 ms of the page's main
thread per message, so a streaming run kept the page busy (2.4 s pauses; Stop could not be clicked). The page now
hands over only the statuses that changed since it last did, which is all the others would have set.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import gradio as gr

TESTED = ("6.31.0",)  # the Gradio releases whose blocks.py and page files these mends were read against


def version() -> str:
    return gr.__version__


def _untested() -> bool:
    if version() in TESTED:
        return False
    warnings.warn(f"Gradio {version()} is not among the versions playground.gradio_patches was checked "
                  f"against ({', '.join(TESTED)}): its mends are not applied", stacklevel=3)
    return True


def apply() -> list[str]:
    """Apply the mends once (idempotent); returns the names of those in force."""
    if _untested():
        return []
    keep_component_ids()
    cheap_skips()
    return ["keep_component_ids", "cheap_skips"]


def keep_component_ids() -> None:
    from gradio.blocks import Block
    from gradio.state_holder import SessionState

    setitem = SessionState.__setitem__
    if getattr(setitem, "mended", False):
        return

    def __setitem__(self, key: int, value: Any) -> None:
        if isinstance(value, Block) and value._id != key:
            value._id = key
        setitem(self, key, value)

    __setitem__.mended = True
    SessionState.__setitem__ = __setitem__


def cheap_skips() -> None:
    from gradio.blocks import Block, Blocks, convert_component_dict_to_list
    from gradio.components import _Keywords

    postprocess_data = Blocks.postprocess_data
    if getattr(postprocess_data, "mended", False):
        return

    async def mended(self, block_fn, predictions, state):
        outputs = block_fn.outputs
        if isinstance(predictions, dict) and predictions and all(isinstance(k, Block) for k in predictions):
            predictions = convert_component_dict_to_list(list(outputs), predictions)
        if not isinstance(predictions, (list, tuple)) or len(outputs) < 2 or len(predictions) != len(outputs):
            return await postprocess_data(self, block_fn, predictions, state)
        bare = [i for i, (value, block) in enumerate(zip(predictions, outputs))
                if not block.stateful and isinstance(value, dict) and value == gr.skip()]
        if not bare:
            return await postprocess_data(self, block_fn, predictions, state)
        predictions = list(predictions)
        for i in bare:  # the slow path's own "leave this output alone" marker
            predictions[i] = _Keywords.FINISHED_ITERATING
        data = await postprocess_data(self, block_fn, predictions, state)
        for i in bare:
            data[i] = gr.skip()
        return data

    mended.mended, mended.original = True, postprocess_data
    Blocks.postprocess_data = mended


# --- the page ------------------------------------------------------------------------------------------------
ASSETS = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
# Gradio's code and the mended code: each piece must be found exactly once in its file, or nothing of it is served
_STATI = ("async update_loading_stati_state(){await Promise.all(Object.entries(this.loading_stati.current)"
          ".map(([e,t])=>this.update_state_cb(Number(e),{loading_status:t},!1)))}")
_QUIET_STATI = ("async update_loading_stati_state(){let s=this.dp_sent||(this.dp_sent=new Map);"
                "await Promise.all(Object.entries(this.loading_stati.current)"
                ".filter(([e,t])=>{let j=JSON.stringify(t);return s.get(e)!==j&&(s.set(e,j),!0)})"
                ".map(([e,t])=>this.update_state_cb(Number(e),{loading_status:t},!1)))}")
_RELOAD = "reload(e,t,n,r,i){"  # a new layout (a re-render) gets every status again
# name: (the page file's pattern under ``ASSETS``, its (Gradio's code, the mended code) pairs)
MENDS = {"quiet_loading_statuses": ("Blocks-*.js", ((_STATI, _QUIET_STATI),
                                                    (_RELOAD, _RELOAD + "this.dp_sent=new Map;")))}


def mended_assets() -> dict[str, bytes]:
    """The page's files these mends change, by file name under ``/assets/``, as they are served instead of Gradio's.
    A file whose code is not found as it was read (another Gradio build) is left as it is, and this says so."""
    if _untested():
        return {}
    files = {}
    for name, (pattern, edits) in MENDS.items():
        texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(ASSETS.glob(pattern))}
        found = [(file, text) for file, text in texts.items() if edits[0][0] in text]
        if len(found) != 1 or any(found[0][1].count(old) != 1 for old, _ in edits):
            warnings.warn(f"playground.gradio_patches: {name} not applied: Gradio's {pattern} is not the one it was "
                          "read against", stacklevel=2)
            continue
        file, text = found[0]
        for old, new in edits:
            text = text.replace(old, new)
        files[file] = text.encode("utf-8")
    return files


class PatchedAssets:
    """ASGI middleware: answers a GET of ``/assets/<name>`` (under any root path) with the mended copy of that file of
    Gradio's page (``mended_assets``), under Gradio's name, marked ``Cache-Control: no-cache`` with an ETag of its own.

    Why not a URL of its own: the page imports the file by name from another page file (``Index-*.js``), which is
    imported by name from ``index-*.js``, which every other page file imports by name; a new name would need each of
    them rewritten and renamed up to that one, and ``index-*.js`` under a second name would load a second copy of
    Gradio's runtime beside the first. So the name stays, and the headers make every cache ask before each use:
    ``no-cache`` lets a browser or proxy store the response but never serve it without asking this server, and the
    ETag (a hash of the mended bytes, unlike Gradio's, which hashes the file's time and size) tells a copy kept of
    Gradio's file from ours, so the answer to it is the mended file, to ours a 304. What headers cannot reach: a copy
    of Gradio's file that a cache took from this host before the mend served it (Gradio sends no Cache-Control, so
    caches keep it for a while by their own rule) is used until that cache asks again."""

    def __init__(self, app, files: dict[str, bytes]):
        self.app = app
        self.files = {f"/assets/{name}": (body, '"%s"' % hashlib.sha256(body).hexdigest()[:32])
                      for name, body in files.items()}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            hit = None if "file=" in path else next((v for k, v in self.files.items() if path.endswith(k)), None)
            if hit is not None:
                from starlette.responses import Response

                body, etag = hit
                headers = {"ETag": etag, "Cache-Control": "no-cache"}
                request_etag = dict(scope.get("headers") or ()).get(b"if-none-match", b"").decode()
                response = (Response(status_code=304, headers=headers) if request_etag == etag
                            else Response(body if scope["method"] == "GET" else b"", media_type="text/javascript",
                                          headers=headers))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def middleware() -> list:
    """What ``launch`` passes to Gradio's FastAPI app (``app_kwargs["middleware"]``): the mended page files."""
    from starlette.middleware import Middleware

    files = mended_assets()
    return [Middleware(PatchedAssets, files=files)] if files else []

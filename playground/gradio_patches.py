"""Two process-wide mends of Gradio's output path, applied once at start-up (``app.launch``), each guarded by the
Gradio versions it was read against: outside them it is not applied and says so.

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
"""

from __future__ import annotations

import warnings
from typing import Any

import gradio as gr

TESTED = ((6, 31),)  # the Gradio (major, minor) versions whose blocks.py these mends were read against


def version() -> tuple[int, int]:
    major, minor, *_ = gr.__version__.split(".")
    return int(major), int(minor)


def apply() -> list[str]:
    """Apply the mends once (idempotent); returns the names of those in force."""
    if version() not in TESTED:
        warnings.warn(f"Gradio {gr.__version__} is not among the versions playground.gradio_patches was checked "
                      f"against ({', '.join('%d.%d' % v for v in TESTED)}): its mends are not applied", stacklevel=2)
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

"""The mends of Gradio's output path (``playground.gradio_patches``): a bare ``gr.skip()`` leaves its output as it
is without building a new component, on the served path a client sees."""

from __future__ import annotations

import warnings

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from playground import gradio_patches


def test_the_mends_are_in_force_on_the_tested_gradio():
    assert gradio_patches.version() in gradio_patches.TESTED
    assert gradio_patches.apply() == ["keep_component_ids", "cheap_skips"]
    assert gradio_patches.apply() == ["keep_component_ids", "cheap_skips"]  # once: a second call changes nothing
    assert getattr(gr.blocks.Blocks.postprocess_data, "mended", False)


@pytest.mark.parametrize("other", ["6.31.1", "6.31.0rc1", "6.32.0", "7.0.0"])
def test_another_gradio_release_gets_no_mend(monkeypatch, other):
    """The exact release: a patch release rebuilds the page files, whose code the page's mend replaces by text."""
    monkeypatch.setattr(gr, "__version__", other)
    with pytest.warns(UserWarning, match=f"Gradio {other} is not among the versions"):
        assert gradio_patches.apply() == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradio_patches.mended_assets() == {} and gradio_patches.middleware() == []


def served_outputs(stream, n: int) -> list[tuple]:
    """What a client receives from ``stream`` (a generator over ``n`` textboxes), message by message."""
    with gr.Blocks() as demo:
        boxes = [gr.Textbox(label=f"box{i}") for i in range(n)]
        gr.Button().click(stream, None, boxes, api_name="stream")
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        job = client.submit(api_name="/stream")
        job.result(timeout=60)
        client.close()
        return job.outputs()
    finally:
        demo.close()


def test_a_skipped_output_is_sent_as_before_and_builds_no_component(monkeypatch):
    gradio_patches.apply()
    built = []
    init = gr.Textbox.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("label"))
        init(self, *args, **kwargs)

    def stream():
        yield "a", "kept", "x"
        for i in range(5):
            yield "a" * (i + 2), gr.skip(), gr.Textbox(label="renamed") if i == 4 else gr.skip()

    mended = gr.blocks.Blocks.postprocess_data
    with monkeypatch.context() as m:  # Gradio's own path, for reference
        m.setattr(gr.blocks.Blocks, "postprocess_data", mended.original)
        reference = served_outputs(stream, 3)
    monkeypatch.setattr(gr.Textbox, "__init__", counting)
    outputs = served_outputs(stream, 3)
    assert outputs == reference and outputs[1][1] == {"__type__": "update"}
    # box1 was skipped five times and box2 four: each was built once, by the layout (the slow path builds one per skip)
    assert built.count("box1") == built.count("box2") == 1 and "renamed" in built


def gradios_copy(name: str) -> httpx.Response:
    """Page file ``name`` as Gradio serves it, without the mend."""
    with gr.Blocks() as demo:
        gr.Textbox()
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        return httpx.get(f"{demo.local_url.rstrip('/')}/assets/{name}")
    finally:
        demo.close()


def test_the_page_is_served_with_its_loading_statuses_mended():
    """``PatchedAssets`` serves the mended copy of Gradio's page file under its name, marked ``no-cache`` with an ETag
    of its own: a cache that kept Gradio's copy and asks again with Gradio's ETag gets the mended file, one that kept
    ours a 304; every other file goes out as Gradio serves it."""
    files = gradio_patches.mended_assets()
    assert len(files) == 1
    (name, body), = files.items()
    original = (gradio_patches.ASSETS / name).read_text(encoding="utf-8")
    assert gradio_patches._STATI in original and gradio_patches._QUIET_STATI in body.decode()
    gradios = gradios_copy(name)
    assert gradios.status_code == 200 and gradios.content == original.encode("utf-8")
    with gr.Blocks() as demo:
        gr.Textbox()
    demo.launch(prevent_thread_lock=True, quiet=True, app_kwargs={"middleware": gradio_patches.middleware()})
    try:
        with httpx.Client(base_url=demo.local_url.rstrip("/")) as http:
            served = http.get(f"/assets/{name}")
            assert served.status_code == 200 and served.content == body
            assert served.headers["content-type"].startswith("text/javascript")
            assert served.headers["cache-control"] == "no-cache"  # no cache uses it without asking
            assert served.headers["etag"] != gradios.headers["etag"]
            again = http.get(f"/assets/{name}", headers={"If-None-Match": served.headers["etag"]})
            assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
            stale = http.get(f"/assets/{name}", headers={"If-None-Match": gradios.headers["etag"]})
            assert stale.status_code == 200 and stale.content == body  # Gradio's copy is replaced, not confirmed
            assert http.head(f"/assets/{name}").headers["cache-control"] == "no-cache"
            index = next(p.name for p in gradio_patches.ASSETS.glob("index-*.js"))
            assert http.get(f"/assets/{index}").content == (gradio_patches.ASSETS / index).read_bytes()
    finally:
        demo.close()

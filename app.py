"""Decoding Playground: one Gradio tab per decoding strategy, the text streamed beside live figures
of what the core recorded at each step.

``python app.py`` serves on ``GRADIO_SERVER_NAME:GRADIO_SERVER_PORT`` (default 127.0.0.1:7860) with the
model named by ``PLAYGROUND_MODEL`` (default: the embedded SmolLM2-135M-Instruct;
any name ``core.load_model`` takes: a named model, a ``.gguf`` file, a local folder, a Hub id).
``PLAYGROUND_SLOTS`` generations run at once (default 8); ``PLAYGROUND_QUEUE`` more may wait (default 16); they run
in an engine process of their own (``PLAYGROUND_ENGINE_PROCESS``, ``playground.engine_host``), whose one busy loop
shares each forward between them (``core.engine``), on ``PLAYGROUND_THREADS`` torch threads (default: the cores
less one).
Public mode (on a Space, or ``PLAYGROUND_PUBLIC=1``; see ``playground.policy``) lets visitors load only named
models and Hub ids of at most ``PLAYGROUND_MAX_PARAMS`` parameters, fetched anonymously (never with the server's
``HF_TOKEN``) within ``PLAYGROUND_MAX_DISK_GB`` of disk; ``PLAYGROUND_MAX_MODELS`` stay loaded.
``PLAYGROUND_DTYPE`` is the precision models load in (float32, bfloat16, float16 or auto; default float32), which
the picker beside the model changes per session. Models go to the GPU where CUDA is present; on a ZeroGPU Space
each generation runs inside ``@spaces.GPU`` (``playground.zerogpu``).
"""

from __future__ import annotations

from playground import zerogpu  # noqa: F401, I001 - first: on a ZeroGPU Space it imports spaces before torch

import os
import sys
from pathlib import Path

import gradio as gr
import torch

import core
from core.models import DEFAULT_NAME, DTYPE_CHOICES, available_models
from playground import (branches_panel, config_panel, engine, engine_host, gradio_patches, persist, policy,
                        queue_share, session)
from playground.i18n import I18N, tr
from playground.tabs.status import plain
from playground.branches import Branches
from playground.state import MODELS, ModelCache
from playground.tabs import TabHandle, all_tabs
from playground.tabs.base import AppContext

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_ENV = "PLAYGROUND_MODEL"


def describe(loaded: core.LoadedModel) -> str:
    if engine.is_remote(loaded):
        return engine.describe(loaded)
    model = loaded.model
    params = sum(p.numel() for p in model.parameters())
    chat = "yes" if getattr(loaded.tokenizer, "chat_template", None) else "no"
    return (f"Model: **{loaded.name}** · {params / 1e6:.0f}M parameters · "
            f"{model.config.get_text_config().num_hidden_layers} layers · {loaded.dtype} on {loaded.device} · "
            f"chat template: {chat}")


def load_handler(models: ModelCache):
    """The model picker's handler: load (or reuse) a model in the shared cache, remember its name in the
    session. It runs in its own queue lane, so a slow load never holds a generation slot. In public mode
    ``policy.load`` takes only named models and Hub ids, sizes a Hub model first, and words every refusal."""

    def load(choice: str | None, path: str | None, dtype: str | None = None, progress=gr.Progress()):
        path = path if isinstance(path, str) else ""  # a hand-made call may send anything: the picker's choice then
        name = path.strip() or choice or DEFAULT_NAME
        progress(0.1, desc=f"Loading {name} (first load of a GGUF dequantizes it: ~15 s)")
        try:
            key = policy.model_key(name, dtype or policy.default_dtype())
            loaded = policy.load(models, key, "model")
        except (ValueError, OSError) as err:
            gr.Warning(plain(err))  # the message quotes the Hub id the visitor typed
            return gr.skip(), f"**Model not loaded:** {plain(err)}"
        progress(1.0, desc="Loaded")
        return key, describe(loaded)

    return load


def build_demo(startup: str | None = None, models: ModelCache = MODELS, slots: int = 2,
               max_seconds: float | None = None, dtype: str | None = None, frame: float | None = None) -> gr.Blocks:
    """The whole app. ``startup`` names the model every new session starts on (loaded here, pinned), in precision
    ``dtype`` (default ``PLAYGROUND_DTYPE``, float32); every generation stops at ``max_seconds`` of wall-clock time
    (default ``PLAYGROUND_MAX_SECONDS``, 120); a streaming run sends an update at most every ``frame`` seconds
    (default ``PLAYGROUND_FRAME_MS``, 50 ms)."""
    dtype = dtype or policy.default_dtype()
    startup_name = startup or DEFAULT_NAME
    startup = policy.model_key(startup_name, dtype)
    loaded = models.get(startup)
    models.pin(startup)
    choices = [*available_models(), *engine.served()]  # the vLLM engine's models too (PLAYGROUND_ENGINE)
    core.kernels.warm_up()  # the quantized KV cache's compiled kernels, built or loaded in the background
    max_seconds = policy.max_seconds() if max_seconds is None else max_seconds
    # Gradio's own copies of served files (uploads, files not already in its cache) go after an hour
    with gr.Blocks(title="Decoding Playground", delete_cache=(600, 3600)) as demo:
        gr.Markdown(tr("# Decoding Playground\nHow a language model picks its next token, strategy by strategy: "
                       "the text streams in while the figures show what each step considered."), label="Title")
        model_state = session.state(startup)
        branches = session.state(Branches())  # every run of the session, as a tree of forks
        tree_store = persist.tree_store()  # the browser's copy of it, back after a reload
        with gr.Row(equal_height=False):
            pick = gr.Dropdown(list(dict.fromkeys([*choices, startup_name])), value=startup_name, label=tr("Model"),
                               scale=2)
            public = policy.public_mode()  # a public server loads no local path a visitor types
            path = gr.Textbox(label=tr("Or a Hub id" if public else "Or a Hub id, local folder or .gguf file"),
                              placeholder="HuggingFaceTB/SmolLM2-360M", scale=3,
                              info=f"safetensors models of at most {policy.max_params() / 1e9:g}B parameters"
                              if public else None)
            precision = gr.Dropdown(list(DTYPE_CHOICES), value=dtype, label="dtype", scale=1,
                                    info=tr("precision of the weights; auto: bfloat16 where the hardware has it"))
            load = gr.Button(tr("Load model"), scale=1)
        model_status = gr.Markdown(describe(loaded), label="Model status")
        app = AppContext(models=models, model_state=model_state, startup=loaded, model_choices=choices, slots=slots,
                         max_seconds=max_seconds, frame=policy.frame_seconds() if frame is None else frame,
                         branches=branches, tree_store=tree_store)
        tabs = all_tabs()
        active_tab = session.state(tabs[0].key)
        with gr.Tabs() as tabs_block:
            handles: list[TabHandle] = [tab.build(app) for tab in tabs]
            for handle in handles:
                handle.tab.select(lambda key=handle.key: key, None, active_tab, api_name=False)
            branches_panel.build(branches, tree_store)  # the session's runs as a tree, compared, downloaded
            config_panel.build(handles, active_tab)  # save / load / share settings
        loader = load_handler(models)
        load.click(loader, [pick, path, precision], [model_state, model_status], concurrency_id="load",
                   concurrency_limit=1, api_name="load_model")
        for trigger in (pick.input, path.submit, precision.input):
            trigger(loader, [pick, path, precision], [model_state, model_status], concurrency_id="load",
                    concurrency_limit=1, api_name=False)

        # each tab's settings and the branch tree, kept in the browser, back on a reload; a share link opens its tab
        keeper = persist.Keeper({h.key: h.ui for h in handles}, branches, tree_store, tabs_block, active_tab)
        keeper.wire(demo)

        def end_session(request: gr.Request) -> None:  # the session's runs and files go with it
            session.end(demo, request)

        demo.unload(end_session)
    demo.handles = handles  # for tests and for panels built later
    demo.keeper = keeper  # the page load's restore (tests call it directly)
    demo.startup_model = startup  # the session's first model key (its name, @precision unless float32)
    return demo


def launch(demo: gr.Blocks, slots: int = 2, queue_size: int = 16, **kwargs):
    """Queue (``slots`` generations at once, ``queue_size`` waiting) and serve with the playground's CSS, its
    English and Arabic (``playground.i18n``: Gradio picks one from the browser's language) and the script that
    lays an Arabic page out right to left (``assets/locale.js``).

    Gradio's run history is off: it keeps up to 100 runs in the browser's localStorage, every output of each (the
    figures' JSON: ~40 KB a greedy run), so it would fill the origin's ~5 MB and leave no room for what a reload
    restores (``playground.persist``); the branch tree, View code and the trace downloads keep what was run."""
    gradio_patches.apply()  # two mends of Gradio's output path, process-wide: see there
    # api_open=False: every event goes through the queue (its limits and places), none by a direct REST call
    demo.queue(default_concurrency_limit=slots, max_size=queue_size, api_open=False)
    queue_share.apply(demo)  # and one session takes a bounded share of its places
    app_kwargs = kwargs.pop("app_kwargs", None) or {}
    # and one of its page: the loading statuses a streamed message refreshes (see gradio_patches)
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), *gradio_patches.middleware()]
    return demo.launch(css_paths=[ASSETS / "style.css"], i18n=I18N, js=(ASSETS / "locale.js").read_text(),
                       app_kwargs=app_kwargs, **{"run_history": False, "max_file_size": policy.bound("upload"),
                                                 **kwargs})


def main() -> None:
    startup = os.environ.get(MODEL_ENV) or None
    slots = int(os.environ.get("PLAYGROUND_SLOTS", "8"))
    max_params = policy.max_params()  # read now, so that a malformed value stops the start, not a visitor's load
    policy.default_dtype()
    policy.shared_forward()
    policy.frame_seconds()
    policy.engine_process(), policy.exact_batch()
    policy.limits(), policy.bound("upload"), policy.bound("session_runs"), policy.bound("session_queue")
    torch.set_num_threads(policy.torch_threads())  # threads decided once, before any model runs
    sys.setswitchinterval(policy.switch_interval())  # Python's 5 ms unless PLAYGROUND_SWITCH_MS says otherwise
    # the runs' own process (PLAYGROUND_ENGINE_PROCESS), started first on the startup model: the page's models are
    # its descriptions of them, without weights (engine_host.page_loader)
    engine_host.start(warm=(policy.model_key(startup or DEFAULT_NAME, policy.default_dtype()),))
    demo = build_demo(startup, models=ModelCache(policy.max_models(), loader=engine_host.page_loader()), slots=slots)
    print(f"Decoding Playground: serving model {demo.startup_model!r} "
          f"(set {MODEL_ENV} to choose another)", flush=True)
    if policy.public_mode():
        print(f"Public mode: visitors load named models and Hub ids of at most {max_params:,} parameters "
              f"(set {policy.MAX_PARAMS_ENV} to change)", flush=True)
    launch(demo, slots=slots, queue_size=int(os.environ.get("PLAYGROUND_QUEUE", "16")),
           server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))


if __name__ == "__main__":
    main()

"""Public mode (a Space, or PLAYGROUND_PUBLIC=1): visitors load only named models and Hub ids, a Hub model is
sized from its safetensors headers before it is downloaded (the local fake Hub serves headers only), no
message shows a server path, and the shared model cache holds at most PLAYGROUND_MAX_MODELS models and never
waits forever. Locally (public mode off) everything loads as before."""

from __future__ import annotations

import gc
import html
import json
import os
import re
import sys
import threading
import time
import types
import weakref
from pathlib import Path

import gradio as gr
import pytest
import transformers
from huggingface_hub import constants

import app
import core
from core import models as core_models
from core.models import DEFAULT_NAME, LoadedModel
from playground import policy, session, share
from playground.i18n import english
from playground.state import ModelBusy, ModelCache
from playground.tabs.speculative import PROMPT_LOOKUP
from conftest import tiny_llama, tiny_tokenizer
from tests.fake_hub import FakeHub, point_hub_at, safetensors_header
from tests.test_config_panel import small_app

NO_PROGRESS = dict(progress=lambda *a, **k: None)


# --- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "1")
    for name in ("PLAYGROUND_MAX_PARAMS", "PLAYGROUND_MAX_MODELS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def local(monkeypatch):
    for name in ("PLAYGROUND_PUBLIC", "SPACE_ID", "SYSTEM", "PLAYGROUND_MAX_PARAMS", "PLAYGROUND_MAX_MODELS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The fake Hub: ``tester/big`` declares 3e9 float32 parameters in its model.safetensors header (and serves
    no weights), ``tester/small`` 1,000,010; both have a tiny Llama's config.json (so that the config's count
    passes) and no tokenizer nor weights data, so a load past the size check fails."""
    with FakeHub() as fake:
        point_hub_at(monkeypatch, fake.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        fake.add_file("tester/big", "model.safetensors", safetensors_header({"w": ("F32", [3, 1_000_000_000])}))
        fake.add_file("tester/small", "model.safetensors", safetensors_header({
            "w": ("BF16", [1000, 1000]), "b": ("F32", [10])}))
        for repo in ("tester/big", "tester/small"):
            fake.add_file(repo, "config.json", tiny_llama().config.to_json_string().encode())
        yield fake


def forbidden(name):
    raise AssertionError(f"the cache must not load {name!r}")


@pytest.fixture(scope="module")
def public_demo(embedded):
    """The whole app, built in public mode on the embedded model; any other load fails the test."""
    models = ModelCache(capacity=2, loader=lambda name: embedded if name is None else forbidden(name))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLAYGROUND_PUBLIC", "1")
        demo = app.build_demo(None, models=models)
    return demo, models


def server_paths(*extra) -> list[str]:
    """Folders of this server a message must never show."""
    return [str(Path.home()), os.getcwd(), str(Path(transformers.__file__).parents[1]), str(core_models.cache_root()),
            str(constants.HF_HUB_CACHE), sys.prefix, "/tmp", *map(str, extra)]


def assert_no_server_path(message: str, typed: str = "", *extra) -> None:
    """No server path in ``message``, apart from the value the visitor typed, which it may echo."""
    rest = message.replace(repr(typed), "'<typed>'") if typed else message
    for path in server_paths(*extra):
        assert path not in rest, (path, message)
    assert not re.search(r"(?<![\w.:/-])(/|~/|\.\./)[\w.-]+", rest), message  # a path, not a URL


def speculative_status(demo, assistant: str) -> str:
    """The speculative tab's status line after Generate with ``assistant`` typed in its assistant_model box."""
    handle = next(h for h in demo.handles if h.key == "speculative")
    first = next(handle.ui.generate(handle.ui.inputs(model=demo.startup_model, prompt="Name a fruit.",
                                                     assistant_model=assistant)))
    return first[handle.ui.out.status]


# --- the switch and the limits ------------------------------------------------------------------------------------
def test_public_mode_is_on_for_a_space_or_playground_public(local, monkeypatch):
    assert not policy.public_mode()
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "0")
    assert not policy.public_mode()
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "1")
    assert policy.public_mode()
    monkeypatch.delenv("PLAYGROUND_PUBLIC")
    monkeypatch.setenv("SPACE_ID", "someone/decoding-playground")  # set on every Space, with or without SYSTEM
    assert policy.public_mode() and not share.on_space()


def test_limits_come_from_the_environment(local, monkeypatch):
    assert (policy.max_params(), policy.max_models(), ModelCache().capacity) == (2_000_000_000, 2, 2)
    monkeypatch.setenv("PLAYGROUND_MAX_PARAMS", "7.5e9")
    monkeypatch.setenv("PLAYGROUND_MAX_MODELS", "3")
    assert (policy.max_params(), policy.max_models(), ModelCache().capacity) == (7_500_000_000, 3, 3)
    monkeypatch.setenv("PLAYGROUND_MAX_PARAMS", "lots")
    with pytest.raises(ValueError,
                       match=r"^PLAYGROUND_MAX_PARAMS must be a number of parameters such as 2e9; got 'lots'$"):
        policy.max_params()
    monkeypatch.setenv("PLAYGROUND_MAX_MODELS", "0")
    with pytest.raises(ValueError,
                       match=r"^PLAYGROUND_MAX_MODELS must be a whole number of models, at least 1; got '0'$"):
        policy.max_models()


def test_a_malformed_limit_stops_the_start_not_a_visitors_load(local, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_PARAMS", "2 billion")
    monkeypatch.setattr(app, "build_demo", forbidden)
    with pytest.raises(ValueError, match="PLAYGROUND_MAX_PARAMS"):
        app.main()


# --- refusals: local paths, .gguf files, anything that is not a Hub id ----------------------------------------------
def refused_names(tmp_path) -> list[str]:
    (tmp_path / "org" / "name").mkdir(parents=True)  # a valid Hub id that is also a folder here
    return [str(tmp_path), "/etc", "/etc/passwd", str(tmp_path / "model.gguf"), "model.gguf", "~/x", "~", "../x",
            "./x", "..", "a/b/c", "C:\\models\\x", "org/name"]


def test_the_model_picker_refuses_local_paths_and_gguf_files(public, tmp_path, monkeypatch):
    names = refused_names(tmp_path)
    monkeypatch.chdir(tmp_path)
    load = app.load_handler(ModelCache(capacity=2, loader=forbidden))
    for typed in names:
        name, status = load(None, typed, **NO_PROGRESS)
        status = html.unescape(status)  # the text the page shows (status.plain writes the typed name as text)
        assert name == gr.skip(), typed  # the session keeps its model
        assert status.startswith("**Model not loaded:** `model` takes a named model (smollm2-135m-instruct"), status
        assert "or a Hub id such as HuggingFaceTB/SmolLM2-360M-Instruct on this public server" in status
        assert status.endswith(f"Got {typed!r}."), status
        assert_no_server_path(status, typed, tmp_path)
    _, status = load(None, "model.gguf", **NO_PROGRESS)
    assert ".gguf files cannot be loaded here" in status
    _, status = load(None, "org/name", **NO_PROGRESS)  # valid id, but from_pretrained would read the folder
    assert "local files and folders cannot be loaded here" in status


def test_the_assistant_picker_refuses_them_too(public, public_demo, tmp_path, monkeypatch):
    demo, _ = public_demo
    names = refused_names(tmp_path)
    monkeypatch.chdir(tmp_path)
    for typed in names:
        status = html.unescape(speculative_status(demo, typed))
        assert status.startswith("Not run: `assistant_model` takes a named model (smollm2-135m-instruct"), status
        assert status.endswith(f"Got {typed!r}."), status
        assert_no_server_path(status, typed, tmp_path)


def test_the_public_picker_names_what_it_takes(public_demo):
    demo, _ = public_demo
    labels = {english(b.label): b for b in demo.blocks.values() if getattr(b, "label", None)}  # as shown in English
    assert "Or a Hub id" in labels and "Or a Hub id, local folder or .gguf file" not in labels
    assert labels["Or a Hub id"].info == "safetensors models of at most 2B parameters"
    assert labels["assistant_model"].info == "a named model or Hub id; or prompt lookup"


def test_named_models_and_the_startup_model_still_load(public, embedded, tiny_checkpoint):
    models = ModelCache(capacity=2, loader=lambda name: embedded if name is None else forbidden(name))
    models.get(None)
    load = app.load_handler(models)
    assert load(DEFAULT_NAME, "", **NO_PROGRESS)[0] == DEFAULT_NAME
    # an operator's PLAYGROUND_MODEL may be a folder: picking it again is allowed, typing another one is not
    models = ModelCache(capacity=2, loader=core.load_model)
    models.get(tiny_checkpoint)
    models.pin(tiny_checkpoint)
    assert app.load_handler(models)(tiny_checkpoint, "", **NO_PROGRESS)[0] == tiny_checkpoint
    assert app.load_handler(models)(None, str(Path(tiny_checkpoint).parent), **NO_PROGRESS)[0] == gr.skip()


def test_a_named_model_whose_wheel_is_missing_says_so(public, monkeypatch):
    monkeypatch.setitem(core_models.NAMED_GGUF, "gemma-3-270m",
                        core_models.NamedModel("not_installed_wheel", lambda: None))
    _, status = app.load_handler(ModelCache(capacity=2, loader=forbidden))("gemma-3-270m", "", **NO_PROGRESS)
    assert status.startswith("**Model not loaded:** `model`: the named model 'gemma-3-270m' is not installed on "
                             "this server (installed: smollm2-135m-instruct"), status


# --- the size check, before any download ---------------------------------------------------------------------------
def ranged_only(hub: FakeHub) -> bool:
    """Every GET of a weights file asked for a byte range (the header), none for the whole file."""
    gets = [r for r in hub.calls("resolve") if r.method == "GET" and r.path.endswith(".safetensors")]
    return bool(gets) and all(r.headers.get("range", "").startswith("bytes=") for r in gets)


def test_hub_parameter_count_reads_the_safetensors_headers(hub):
    assert core_models.hub_parameter_count("tester/big") == 3_000_000_000
    assert core_models.hub_parameter_count("tester/small") == 1_000_010  # summed over BF16 and F32
    index = {"metadata": {"total_size": 0}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                           "b": "model-00002-of-00002.safetensors"}}
    hub.add_file("tester/sharded", "model.safetensors.index.json", json.dumps(index).encode())
    hub.add_file("tester/sharded", "model-00001-of-00002.safetensors", safetensors_header({"a": ("BF16", [10**9])}))
    hub.add_file("tester/sharded", "model-00002-of-00002.safetensors", safetensors_header({"b": ("BF16", [2 * 10**9])}))
    assert core_models.hub_parameter_count("tester/sharded") == 3_000_000_000
    assert ranged_only(hub)


def test_a_model_above_the_limit_is_refused_before_download(public, hub):
    load = app.load_handler(ModelCache(capacity=2, loader=forbidden))
    name, status = load(None, "tester/big", **NO_PROGRESS)
    assert name == gr.skip()
    assert status == (
        "**Model not loaded:** `model`: 'tester/big' has 3.00B (3,000,000,000) parameters, above this server's limit "
        "of 2.00B (2,000,000,000). When you host the app yourself, raise the limit with PLAYGROUND_MAX_PARAMS (e.g. "
        "PLAYGROUND_MAX_PARAMS=3e9), or run it locally without public mode (PLAYGROUND_PUBLIC and SPACE_ID unset).")
    assert ranged_only(hub)
    assert not [r for r in hub.requests if r.path.endswith("config.json")]  # nothing past the size check


def test_the_assistant_picker_sizes_hub_models_too(public, public_demo, hub):
    demo, _ = public_demo
    status = speculative_status(demo, "tester/big")
    assert status.startswith("Not run: `assistant_model`: 'tester/big' has 3.00B (3,000,000,000) parameters, "
                             "above this server's limit of 2.00B"), status
    assert_no_server_path(status)


def test_a_small_model_passes_the_size_check_and_fails_only_on_the_load(public, hub):
    load = app.load_handler(ModelCache(capacity=2, loader=core.load_model))
    name, status = load(None, "tester/small", **NO_PROGRESS)
    assert name == gr.skip()
    assert status == ("**Model not loaded:** `model`: 'tester/small' could not be loaded: transformers could not "
                      "load it as a language model with its tokenizer.")  # its weights file is a header alone
    downloads = [r for r in hub.calls("resolve") if r.method == "GET" and r.path.endswith("/model.safetensors")
                 and "range" not in r.headers]
    assert downloads  # the load went past the size check
    assert_no_server_path(status)


def test_raising_the_limit_lets_a_larger_model_through(public, hub, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_PARAMS", "4e9")
    _, status = app.load_handler(ModelCache(capacity=2, loader=core.load_model))(None, "tester/big", **NO_PROGRESS)
    assert status.startswith("**Model not loaded:** `model`: 'tester/big' could not be loaded: "), status


@pytest.mark.parametrize("repo, files, says", [
    ("tester/bin-only", {"pytorch_model.bin": b"\0" * 16, "config.json": b"{}"},
     "cannot be sized: this public server reads a model's parameter count from its safetensors weights "
     "(model.safetensors or model.safetensors.index.json) before downloading it, and this repo has none it can "
     "read. Pick a model with safetensors weights, or run the app yourself without public mode."),
    ("tester/broken", {"model.safetensors": b"\x08\0\0\0\0\0\0\0not json"}, "cannot be sized"),
    ("tester/missing", {}, "could not be sized before downloading: no such repo on the Hub (or it is private)."),
])
def test_a_model_that_cannot_be_sized_is_refused(public, hub, repo, files, says):
    for path, data in files.items():
        hub.add_file(repo, path, data)
    name, status = app.load_handler(ModelCache(capacity=2, loader=forbidden))(None, repo, **NO_PROGRESS)
    assert name == gr.skip() and status.startswith(f"**Model not loaded:** `model`: {repo!r} ")
    assert says in status, status
    assert_no_server_path(status)


def test_a_hub_model_already_loaded_is_not_sized_again(public, hub, embedded):
    models = ModelCache(capacity=2, loader=lambda name, **kw: LoadedModel(embedded.model, embedded.tokenizer, name))
    load = app.load_handler(models)
    assert load(None, "tester/small", **NO_PROGRESS)[0] == "tester/small"
    asked = len(hub.requests)
    assert load(None, "tester/small", **NO_PROGRESS)[0] == "tester/small"
    assert len(hub.requests) == asked


# --- locally: everything loads as before -------------------------------------------------------------------------
def test_locally_a_folder_loads_and_nothing_is_sized(local, hub, tmp_path):
    tiny_llama(3).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    load = app.load_handler(ModelCache(capacity=2))
    name, status = load(None, str(tmp_path), **NO_PROGRESS)
    assert name == str(tmp_path) and "2 layers" in status
    del hub.repos["tester/big"].files["config.json"]
    _, status = load(None, "tester/big", **NO_PROGRESS)  # no config.json: a load error, not a size refusal
    assert status.startswith("**Model not loaded:** model 'tester/big' could not be loaded; tried "), status
    assert not [r for r in hub.requests if ".safetensors" in r.path]
    _, status = load(None, "/etc", **NO_PROGRESS)  # locally the message may name the folder it tried
    assert "/etc" in status and "takes a named model" not in status


# --- Config & Share --------------------------------------------------------------------------------------------
@pytest.fixture
def panel(tmp_path, monkeypatch):
    monkeypatch.setattr(share, "DEFAULT_FOLDER", str(tmp_path / "configs"))
    monkeypatch.setattr(session, "root", lambda: tmp_path / "sessions")
    demo, panel, handles, active = small_app()
    p = panel.panel
    data = {active: "sampling", **{c: c.value for h in handles for c in h.controls.values()},
            **{h.extra: {} for h in handles}, p.file_name: "creative.json", p.folder: str(tmp_path / "typed"),
            p.repo_id: "", p.commit_message: "", p.token: ""}
    return panel, data


def test_config_and_share_uses_only_the_sessions_folder_and_shows_no_path(public, panel, tmp_path):
    panel, data = panel
    p, visitor = panel.panel, types.SimpleNamespace(session_hash="visitor1")
    assert p.folder.interactive is False and p.folder.value == ""
    saved = panel.save(data, visitor)
    assert saved[p.status] == "Saved as creative.json (download below)."
    assert (tmp_path / "sessions" / "visitor1" / "configs" / "creative.json").is_file()  # goes with the session
    assert not (tmp_path / "typed").exists()  # the typed folder is never touched
    loaded = panel.load_folder(data, visitor)
    assert loaded[p.status].startswith("Loaded `creative.json` from this session's folder into the **Sampling** tab")
    missing = panel.load_folder(data, types.SimpleNamespace(session_hash="visitor2"))  # not another's files
    assert missing[p.status] == ("Load failed (`creative.json` from this session's folder): `config_file_name` "
                                 "'creative.json' was not found in this session's folder (save one first)")
    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "broken.json").write_text("{not json")
    broken = panel.load_upload({**data, p.upload: str(tmp_path / "upload" / "broken.json")})
    assert broken[p.status] == ("Load failed (the uploaded broken.json): the file could not be read as a "
                                "GenerationConfig JSON file.")
    pushed = panel.push({**data, p.repo_id: "tester/configs"}, None, visitor)  # no token: saved, not pushed
    assert pushed[p.status].endswith("Nothing is lost: the config is saved as creative.json (download below).")
    for out in (saved, loaded, missing, broken, pushed):
        assert_no_server_path(out[p.status], "", tmp_path)


def test_a_public_server_never_lends_its_own_token(public, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_TOKEN", "hf_server_owner_secret")
    assert share.resolve_token(None, "") is None
    assert share.resolve_token(None, " hf_visitor ") == "hf_visitor"


def test_config_and_share_locally_uses_the_typed_folder(local, panel, tmp_path):
    panel, data = panel
    p = panel.panel
    assert p.folder.interactive is True and p.folder.value == str(tmp_path / "configs")
    saved = panel.save(data)
    assert saved[p.status].startswith(f"Saved to {tmp_path / 'typed' / 'creative.json'}.")


# --- the model cache: at most N models, LRU, pinned kept, released, bounded waits ------------------------------------
def tiny_loader(log: list | None = None, cache: list | None = None):
    """Loads a tiny random model per name; records each load and how many models the cache held meanwhile."""
    def load(name):
        if log is not None:
            log.append((name, len(cache[0].loaded()) if cache else None))
        return LoadedModel(tiny_llama(len(name or "")), None, name or DEFAULT_NAME)
    return load


def test_cache_keeps_at_most_capacity_models_least_recently_used_out_pinned_kept():
    log, holder = [], []
    models = ModelCache(capacity=2, loader=tiny_loader(log, holder))
    holder.append(models)
    models.get("startup")
    models.pin("startup")
    models.get("a")
    models.get("startup")  # the pinned one is the most recent now: still, "a" is the only one that may go
    models.get("b")
    assert models.loaded() == ["startup", "b"]
    assert [held for _, held in log] == [0, 1, 1]  # room was made before the load: never 3 in memory
    unpinned = ModelCache(capacity=2, loader=tiny_loader())
    for name in ("x", "y", "x", "z"):  # x used again after y: y is the least recently used
        unpinned.get(name)
    assert unpinned.loaded() == ["x", "z"]


def test_an_evicted_model_is_released():
    models = ModelCache(capacity=2, loader=tiny_loader())
    models.pin(models.get("startup").name)
    gone = weakref.ref(models.get("a").model)
    models.get("b")
    gc.collect()
    assert gone() is None, "the cache kept a reference to the evicted model"
    assert models.get("startup") is models.get("startup")


def test_a_failed_load_gives_its_slot_back():
    def loader(name):
        if name == "bad":
            raise ValueError("no such model")
        return LoadedModel(tiny_llama(0), None, name)

    models = ModelCache(capacity=2, loader=loader)
    models.get("a")
    with pytest.raises(ValueError, match="no such model"):
        models.get("bad")
    models.get("c")
    assert models.loaded() == ["a", "c"]


def test_no_slot_free_is_refused_not_exceeded():
    models = ModelCache(capacity=1, loader=tiny_loader())
    models.pin(models.get("startup").name)
    with pytest.raises(ModelBusy, match=r"keeps at most 1 models loaded \(PLAYGROUND_MAX_MODELS\)"):
        models.get("other")
    assert models.loaded() == ["startup"]


def test_waiting_for_another_visitors_load_has_an_end():
    started, release = threading.Event(), threading.Event()

    def slow(name):
        started.set()
        assert release.wait(30)
        return LoadedModel(tiny_llama(0), None, name)

    models = ModelCache(capacity=2, loader=slow, wait_s=0.3)
    first = threading.Thread(target=models.get, args=("big/model",))
    first.start()
    try:
        assert started.wait(10)
        t0 = time.perf_counter()
        with pytest.raises(ModelBusy) as info:
            models.get("big/model")
        assert time.perf_counter() - t0 < 5
        assert str(info.value) == "model 'big/model' is still loading for another visitor; try again in a moment"
    finally:
        release.set()
        first.join(10)
    assert models.loaded() == ["big/model"] and models.get("big/model").name == "big/model"


def test_a_running_generation_holds_its_model_until_it_ends(public, public_demo):
    """The run handlers hold the models they use (``ModelCache.lease``) while they stream, so that no other
    visitor's load evicts them; closing the stream (Stop, a visitor who leaves) lets them go."""
    demo, models = public_demo
    handle = next(h for h in demo.handles if h.key == "speculative")
    run = handle.ui.generate(handle.ui.inputs(model=demo.startup_model, prompt="Name a fruit.",
                                              assistant_model=PROMPT_LOOKUP))
    assert not next(run)[handle.ui.out.status].startswith("Not run"), "the run must be streaming"
    assert models.in_use() == {demo.startup_model: 1}
    run.close()
    assert models.in_use() == {}


def test_the_busy_message_reaches_a_public_visitor_as_it_is(public):
    models = ModelCache(capacity=2, loader=forbidden)
    lock = models._locks.setdefault(DEFAULT_NAME, threading.Lock())
    models.wait_s = 0.1
    with lock:  # another visitor is loading it
        _, status = app.load_handler(models)(DEFAULT_NAME, "", **NO_PROGRESS)
    assert status == ("**Model not loaded:** model 'smollm2-135m-instruct' is still loading for another visitor; "
                      "try again in a moment")



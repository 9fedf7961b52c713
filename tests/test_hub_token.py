"""Visitors never use the owner's token (issue 22, item 4). In public mode every Hub request made for a visitor is
anonymous, checked against a local stand-in for the Hub that records each request's headers; a model is sized by
its config.json as well as its safetensors headers; a visitor's download lies in a folder of the model cache's own,
within a disk budget, and goes when its model is evicted; a model a run uses is not evicted under it. The owner's
own loads (public mode off) keep the owner's token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import constants

import app
import core
from core.models import DEFAULT_NAME, LoadedModel
from playground import policy
from playground.facts import Facts
from playground.state import ModelBusy, ModelCache
from playground.tabs import TABS, all_tabs
from playground.tabs.base import AppContext
from conftest import tiny_llama
from conftest import tiny_tokenizer
from tests.fake_hub import FakeHub, point_hub_at, safetensors_header

OWNER_TOKEN = "hf_ownerSecretToken0123456789"


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "1")
    for name in ("PLAYGROUND_MAX_PARAMS", "PLAYGROUND_MAX_MODELS", "PLAYGROUND_MAX_DISK_GB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny Llama and its tokenizer, as the files of a Hub repo."""
    folder = tmp_path_factory.mktemp("tiny-repo")
    tiny_llama(7).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(monkeypatch, tmp_path, model_files):
    """The fake Hub with the owner's HF_TOKEN set (a token it knows): ``owner/private-model`` is private,
    ``owner/public-model`` and ``owner/other-model`` are public; all three hold the same tiny model."""
    with FakeHub() as fake:
        point_hub_at(monkeypatch, fake.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
        fake.tokens[OWNER_TOKEN] = "read"
        for repo in ("owner/private-model", "owner/public-model", "owner/other-model"):
            for name, data in model_files.items():
                fake.add_file(repo, name, data)
        fake.private.add("owner/private-model")
        yield fake


def owners_token_sent(hub: FakeHub) -> list[str]:
    """The requests that carried the owner's token, as "METHOD path"."""
    return [f"{r.method} {r.path}" for r in hub.requests if OWNER_TOKEN in r.headers.get("authorization", "")]


def cache(**kwargs) -> ModelCache:
    return ModelCache(**{"capacity": 2, "loader": core.load_model, **kwargs})


# --- the owner's token ------------------------------------------------------------------------------------------
def test_a_visitors_load_sends_no_owners_token_on_any_request(public, hub, tmp_path):
    models = cache(downloads=tmp_path / "downloads")
    with pytest.raises(policy.PublicError) as info:
        policy.load(models, "owner/private-model", "model")
    assert str(info.value) == ("`model`: 'owner/private-model' could not be sized before downloading: no such repo "
                               "on the Hub (or it is private).")
    loaded = policy.load(models, "owner/public-model", "model")  # sized, downloaded and loaded: every kind of request
    assert loaded.name == "owner/public-model" and loaded.model.name_or_path == "owner/public-model"
    kinds = {(r.method, hub.endpoint_name(r.method, r.path.split("?")[0])) for r in hub.requests}
    assert {("HEAD", "resolve"), ("GET", "resolve"), ("GET", "repo_info")} <= kinds, kinds
    assert [r for r in hub.requests if r.path.endswith("/config.json")]
    assert owners_token_sent(hub) == []


def test_the_assistant_picker_loads_anonymously_too(public, hub, embedded, tmp_path):
    models = cache(capacity=3, downloads=tmp_path / "downloads")
    all_tabs()
    ctx = AppContext(models=models, model_state=None, startup=embedded)
    plans = TABS["speculative"].plans({}, {"assistant_model": "owner/public-model"}, embedded, ctx)
    assert plans[0].assistant == "owner/public-model"
    assert plans[0].run_label(Facts()) == "Assisted by owner/public-model"  # drawn from the run's facts
    with pytest.raises(policy.PublicError, match="`assistant_model`: 'owner/private-model' could not be sized"):
        TABS["speculative"].plans({}, {"assistant_model": "owner/private-model"}, embedded, ctx)
    assert hub.requests and owners_token_sent(hub) == []


def test_the_owners_own_loads_keep_the_token(monkeypatch, hub):
    monkeypatch.delenv("PLAYGROUND_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    loaded = ModelCache(capacity=2).get("owner/private-model")  # locally: from_pretrained, the owner's HF_TOKEN
    assert loaded.name == "owner/private-model"
    assert owners_token_sent(hub)


# --- the size check reads the config too ------------------------------------------------------------------------
def big_config(**fields) -> bytes:
    """A Llama config.json whose model has ~7B parameters (or what ``fields`` change)."""
    config = tiny_llama().config.to_dict()
    config.pop("head_dim", None)  # hidden_size / heads, as Llama 2 7B has it
    config.update({"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, **fields})
    return json.dumps(config).encode()


def test_a_small_header_with_a_huge_config_is_refused_before_the_load(public, hub):
    hub.add_file("tester/liar", "model.safetensors", safetensors_header({"w": ("F32", [1000])}))
    hub.add_file("tester/liar", "config.json", big_config())
    loads = []
    with pytest.raises(policy.PublicError) as info:
        policy.load(ModelCache(capacity=2, loader=lambda *a, **k: loads.append(a)), "tester/liar", "model")
    message = str(info.value)
    assert message.startswith("`model`: 'tester/liar' has 6.74B (6,738,415,616) parameters by its config.json (its "
                              "safetensors weights declare 0.00B (1,000)), above this server's limit of 2.00B "
                              "(2,000,000,000). "), message
    assert "PLAYGROUND_MAX_PARAMS=7e9" in message
    assert loads == []
    fetched = {r.path.rsplit("/", 1)[1] for r in hub.calls("resolve") if r.method == "GET" and "range" not in r.headers}
    assert fetched == {"config.json"}  # the header (ranged) and the config: nothing else
    assert owners_token_sent(hub) == []


@pytest.mark.parametrize("config, says", [
    (big_config(num_hidden_layers=10**6, hidden_size=64, intermediate_size=64, num_attention_heads=4,
                num_key_value_heads=4), "its config.json declares num_hidden_layers=1000000 (at most 1000 are built)"),
    (b"{" + b" " * 2**20 + b"}", "its config.json takes 1,048,578 bytes (at most 1,048,576 are read)"),
    (json.dumps({"model_type": "no-such-architecture"}).encode(), "transformers cannot build a language model from it"),
])
def test_a_config_that_cannot_be_built_here_is_refused_in_our_words(public, hub, config, says):
    hub.add_file("tester/odd", "model.safetensors", safetensors_header({"w": ("F32", [1000])}))
    hub.add_file("tester/odd", "config.json", config)
    with pytest.raises(policy.PublicError) as info:
        policy.load(ModelCache(capacity=2, loader=None), "tester/odd", "model")
    assert str(info.value) == f"`model`: 'tester/odd' cannot be sized from its config.json: {says}."
    assert owners_token_sent(hub) == []


def test_a_repo_without_config_is_refused_at_the_size_check(public, hub):
    hub.add_file("tester/headless", "model.safetensors", safetensors_header({"w": ("F32", [1000])}))
    with pytest.raises(policy.PublicError) as info:
        policy.load(ModelCache(capacity=2, loader=None), "tester/headless", "model")
    assert str(info.value) == ("`model`: 'tester/headless' could not be sized from its config.json: the repo has no "
                               "config.json.")


# --- downloads: a folder of the cache's own, within a budget, gone with the model --------------------------------
def files_under(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file())


def test_a_visitors_download_is_removed_when_its_model_is_evicted(public, hub, tmp_path):
    models = cache(capacity=1, downloads=tmp_path / "downloads")
    policy.load(models, "owner/public-model", "model")
    folder = models.download_folder("owner/public-model")
    assert folder is not None and folder.parent == tmp_path / "downloads"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files_under(folder))
    assert files_under(tmp_path / "hub-cache") == []  # nothing in the shared Hub cache
    policy.load(models, "owner/other-model", "model")  # one slot: the first model goes, and its files with it
    assert models.loaded() == ["owner/other-model"]
    assert not folder.exists() and models.download_folder("owner/public-model") is None
    assert models.download_folder("owner/other-model").exists()


def test_a_failed_download_leaves_nothing(public, hub, tmp_path):
    hub.add_file("tester/no-tokenizer", "model.safetensors", hub.repos["owner/public-model"].files["model.safetensors"])
    hub.add_file("tester/no-tokenizer", "config.json", hub.repos["owner/public-model"].files["config.json"])
    models = cache(downloads=tmp_path / "downloads")
    with pytest.raises(policy.PublicError, match="`model`: 'tester/no-tokenizer' could not be loaded"):
        policy.load(models, "tester/no-tokenizer", "model")
    assert files_under(tmp_path / "downloads") == [] and models.loaded() == []


def test_the_disk_budget_refuses_what_cannot_fit_and_evicts_idle_models_for_the_rest(public, hub, tmp_path):
    # what a load sets aside: its weights by their header, and room for its configs and tokenizer
    size = core.models.hub_weights("owner/public-model", token=False)[1] + policy.OTHER_FILES_BYTES
    with pytest.raises(policy.PublicError) as info:
        policy.load(cache(disk_bytes=size - 1, downloads=tmp_path / "a"), "owner/public-model", "model")
    assert str(info.value) == ("`model`: 'owner/public-model' has 0.00 GB of weights to download (and up to 0.13 GB of "
                               "configs and tokenizer files), above this server's disk budget of 0.13 GB for visitors' "
                               "models (PLAYGROUND_MAX_DISK_GB).")
    models = cache(capacity=3, disk_bytes=size + size // 2, downloads=tmp_path / "b")  # room for one download
    policy.load(models, "owner/public-model", "model")
    policy.load(models, "owner/other-model", "model")  # slots enough, disk not: the idle first one goes
    assert models.loaded() == ["owner/other-model"]
    with models.lease() as lease, lease.taking():
        policy.load(models, "owner/other-model", "model")  # a run uses it now
    with models.lease() as lease:
        with lease.taking():
            policy.load(models, "owner/other-model", "model")
        with pytest.raises(ModelBusy, match=r"the disk budget of visitors' downloads \(PLAYGROUND_MAX_DISK_GB"):
            policy.load(models, "owner/public-model", "model")
    assert models.loaded() == ["owner/other-model"] and files_under(tmp_path / "b")
    assert owners_token_sent(hub) == []


# --- eviction waits for the runs ----------------------------------------------------------------------------------
def tiny(name, **kwargs):
    return LoadedModel(tiny_llama(0), None, name or DEFAULT_NAME)


def test_a_model_in_use_is_not_evicted_and_the_load_is_refused_until_the_run_ends():
    models = ModelCache(capacity=2, loader=tiny)
    models.pin(models.get("startup").name)
    lease = models.lease()
    with lease.taking():
        used = models.get("a")
    assert models.in_use() == {"a": 1}
    with pytest.raises(ModelBusy) as info:
        models.get("b")
    assert str(info.value) == ("model 'b' cannot be loaded now: this server keeps at most 2 models loaded "
                               "(PLAYGROUND_MAX_MODELS) and is busy with 1 models in use (1 used by running "
                               "generations, 0 still loading; the startup model stays); try again later")
    assert models.loaded() == ["startup", "a"] and models.get("a") is used
    lease.release()
    lease.release()  # once only
    assert models.in_use() == {}
    models.get("b")
    assert models.loaded() == ["startup", "b"]


def test_a_lease_takes_only_what_is_got_inside_taking():
    models = ModelCache(capacity=3, loader=tiny)
    with models.lease() as lease:
        models.get("outside")
        with lease.taking():
            models.get("inside")
            models.get("inside")  # a run that uses a model twice (an assistant the same as the model) holds it twice
        assert models.in_use() == {"inside": 2}
    assert models.in_use() == {}


def test_only_what_from_pretrained_reads_is_fetched_and_within_its_bytes(hub, tmp_path, model_files):
    repo = "tester/cluttered"
    index = {"metadata": {}, "weight_map": {"w": "model-00001-of-00001.safetensors", "x": "../escape.safetensors",
                                            "y": "onnx/model.safetensors"}}
    files = {**{n: d for n, d in model_files.items() if n != "model.safetensors"},
             "model.safetensors.index.json": json.dumps(index).encode(),
             "model-00001-of-00001.safetensors": model_files["model.safetensors"],
             "onnx/model.safetensors": b"x", "pytorch_model.bin": b"x", "notes.txt": b"x", "data.json": b"x"}
    for name, data in files.items():
        hub.add_file(repo, name, data)
    with pytest.raises(core.models.DownloadTooLarge, match="more than the 0.00 GB set aside for it"):
        core.models.fetch_hub_model(repo, tmp_path / "small", token=False, max_bytes=100)
    assert files_under(tmp_path / "small") == []  # sized before anything was fetched
    folder = core.models.fetch_hub_model(repo, tmp_path / "fits", token=False, max_bytes=10**8)
    assert files_under(folder) == sorted({*model_files, "model.safetensors.index.json",
                                          "model-00001-of-00001.safetensors"} - {"model.safetensors"})
    assert owners_token_sent(hub) == []


def test_the_default_model_without_its_wheel_is_a_visitors_hub_load_too(public, hub, tmp_path, monkeypatch,
                                                                       model_files):
    monkeypatch.setitem(core.models.NAMED_GGUF, DEFAULT_NAME, core.models.NamedModel("not_installed_wheel",
                                                                                     lambda: None))
    for name, data in model_files.items():
        hub.add_file(core.models.EMBEDDED_HUB_ID, name, data)
    models = cache(downloads=tmp_path / "downloads")
    assert policy.load(models, DEFAULT_NAME, "model").name == core.models.EMBEDDED_HUB_ID
    assert models.download_folder(DEFAULT_NAME) is not None  # sized, and fetched into the cache's own folder
    assert hub.requests and owners_token_sent(hub) == []


def test_the_load_model_endpoint_refuses_a_private_repo_without_lending_the_token(public, hub, tmp_path):
    """``/load_model``'s handler, as a visitor of issue 22 called it with ``HF_TOKEN`` set by the owner."""
    load = app.load_handler(cache(downloads=tmp_path / "downloads"))
    _, status = load(None, "owner/private-model", progress=lambda *a, **k: None)
    assert status == ("**Model not loaded:** `model`: 'owner/private-model' could not be sized before downloading: "
                      "no such repo on the Hub (or it is private).")
    key, status = load(None, "owner/public-model", progress=lambda *a, **k: None)
    assert key == "owner/public-model" and "Model: **owner/public-model**" in status
    assert owners_token_sent(hub) == []

"""Save / load / push of GenerationConfigs (playground.share) against transformers and a local fake Hub."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

import core
from playground import share
from tests.fake_hub import READ_TOKEN, USER, WRITE_TOKEN, FakeHub, point_hub_at

SAMPLING = {"do_sample": True, "temperature": 0.8, "top_k": 10, "top_p": 0.9, "max_new_tokens": 8,
            "repetition_penalty": 1.3, "min_p": None}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as fake:
        point_hub_at(monkeypatch, fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("SYSTEM", raising=False)
        # no stored `hf auth login` token may leak into the "no token" case
        from huggingface_hub import constants
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        yield fake


# --- what is shown and saved is what transformers saves --------------------------------------------

def test_json_lists_only_values_that_differ_from_defaults():
    cfg = share.config_from_settings(SAMPLING)
    reference = GenerationConfig(do_sample=True, temperature=0.8, top_k=10, top_p=0.9, max_new_tokens=8,
                                 repetition_penalty=1.3)
    assert share.config_json(cfg) == reference.to_json_string(use_diff=True)
    assert set(json.loads(share.config_json(cfg))) == {"do_sample", "temperature", "top_k", "top_p", "max_new_tokens",
                                                       "repetition_penalty", "transformers_version"}


def test_slider_numbers_get_the_type_transformers_expects(tiny_model, prompt):
    cfg = share.config_from_settings({"top_k": 20.0, "num_beams": 4.0, "temperature": 2, "repetition_penalty": 1,
                                      "do_sample": True, "max_new_tokens": 3})
    assert (cfg.top_k, cfg.num_beams, cfg.temperature, cfg.repetition_penalty) == (20, 4, 2.0, 1.0)
    assert [type(v) for v in (cfg.top_k, cfg.num_beams, cfg.temperature, cfg.repetition_penalty)] == [
        int, int, float, float]
    assert '"temperature": 2.0' in share.config_json(cfg)
    tiny_model.generate(prompt, generation_config=share.config_from_settings(
        {"do_sample": True, "temperature": 2, "max_new_tokens": 2}))  # an int 2 would be refused by transformers


def test_the_advanced_fields_get_their_types_from_the_same_table_as_the_widgets():
    """``playground.fields`` is the one table: the community samplers' fields are typed on save too."""
    cfg = share.config_from_settings({"dry_allowed_length": 3.0, "dynatemp_low": 1, "mirostat_tau": 5})
    assert [(v, type(v)) for v in (cfg.dry_allowed_length, cfg.dynatemp_low, cfg.mirostat_tau)] == [
        (3, int), (1.0, float), (5.0, float)]


def test_save_writes_the_file_save_pretrained_writes(tmp_path):
    path = share.save_config(share.config_from_settings(SAMPLING), tmp_path / "mine", "creative.json")
    assert path == tmp_path / "mine" / "creative.json"
    GenerationConfig(**{k: v for k, v in SAMPLING.items() if v is not None}).save_pretrained(
        tmp_path / "ref", config_file_name="creative.json")
    assert path.read_text() == (tmp_path / "ref" / "creative.json").read_text()


@pytest.mark.parametrize("name, message", [
    ("", "`config_file_name` must be a file name ending in .json, e.g. generation_config.json; got ''"),
    ("creative.txt", "`config_file_name` must end in .json; got 'creative.txt'"),
    ("../creative.json", "`config_file_name` must be a bare file name without folders (no '/' or '\\'); "
                         "got '../creative.json'"),
    ("a\\b.json", "`config_file_name` must be a bare file name without folders (no '/' or '\\'); got 'a\\\\b.json'"),
])
def test_file_name_is_validated_with_a_message_naming_the_field(tmp_path, name, message):
    with pytest.raises(ValueError) as err:
        share.save_config(share.config_from_settings(SAMPLING), tmp_path, name)
    assert str(err.value) == message
    assert not any(tmp_path.iterdir())


def test_a_config_transformers_refuses_to_save_is_reported(tmp_path):
    cfg = share.config_from_settings({"do_sample": False, "temperature": 0.5})
    with pytest.raises(ValueError, match="(?s)transformers refuses to save this config: .*`temperature`"):
        share.save_config(cfg, tmp_path, "greedy.json")


def test_a_loaded_field_for_another_strategy_is_saved_back_but_a_users_conflict_is_not(tmp_path):
    # a Hub generation_config.json often carries sampling values; the greedy tab sets do_sample=False
    loaded = {"temperature": 0.6, "top_p": 0.9, "max_length": 4096}
    cfg = share.config_from_settings({"do_sample": False, "max_new_tokens": 20}, loaded)
    with pytest.raises(ValueError, match="(?s)refuses.*`temperature`"):  # what save_pretrained alone says
        share.save_config(cfg, tmp_path, "strict.json")
    path = share.save_config(cfg, tmp_path, "greedy.json", user_set={"do_sample", "max_new_tokens"})
    assert {k: v for k, v in json.loads(path.read_text()).items() if k != "transformers_version"} == {
        "do_sample": False, "max_new_tokens": 20, "temperature": 0.6, "top_p": 0.9, "max_length": 4096}
    with pytest.raises(ValueError, match="(?s)refuses.*`temperature`: `do_sample` is not set to `True`"):
        share.save_config(cfg, tmp_path, "mine.json", user_set={"do_sample", "temperature"})


# --- load, and fields without a control are kept -----------------------------------------------------

def test_unknown_fields_are_kept_and_saved_back(tmp_path):
    upload = tmp_path / "upload" / "shared.json"
    upload.parent.mkdir()
    upload.write_text(json.dumps({"do_sample": True, "temperature": 0.5, "num_beams": 1, "typical_p": 0.9,
                                  "my_custom_field": [1, 2], "transformers_version": "4.55.4"}))
    values = share.config_values(share.load_file(upload))
    known, extra = share.split_values(values, {"do_sample", "temperature", "top_k"})
    assert known == {"do_sample": True, "temperature": 0.5}
    assert extra == {"num_beams": 1, "typical_p": 0.9, "my_custom_field": [1, 2]}
    # the user moves a slider, saves: every loaded field is still in the file
    path = share.save_config(share.config_from_settings({**known, "temperature": 0.7}, extra), tmp_path, "back.json")
    saved = json.loads(path.read_text())
    assert {k: saved[k] for k in ("do_sample", "temperature", "num_beams", "typical_p", "my_custom_field")} == {
        "do_sample": True, "temperature": 0.7, "num_beams": 1, "typical_p": 0.9, "my_custom_field": [1, 2]}


def test_load_from_local_folder_and_its_errors(tmp_path):
    share.save_config(share.config_from_settings(SAMPLING), tmp_path, "creative.json")
    assert share.load_local(tmp_path, "creative.json") == share.config_from_settings(SAMPLING)
    with pytest.raises(ValueError, match="`config_file_name` 'beam.json' was not found in folder"):
        share.load_local(tmp_path, "beam.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(OSError, match="not a valid JSON file"):
        share.load_local(tmp_path, "broken.json")


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_saved_config_loaded_back_gives_the_same_tokens(tmp_path, tiny_model, prompt, mode):
    settings = SAMPLING if mode == "sample" else {"do_sample": False, "max_new_tokens": 10, "no_repeat_ngram_size": 2,
                                                  "repetition_penalty": 1.2}
    original = share.config_from_settings(settings)
    torch.manual_seed(7)
    before = core.generate(tiny_model, prompt, original).sequences
    path = share.save_config(original, tmp_path, f"{mode}.json")
    loaded = share.load_local(tmp_path, path.name)
    torch.manual_seed(7)
    after = core.generate(tiny_model, prompt, loaded).sequences
    torch.manual_seed(7)
    reference = tiny_model.generate(prompt, generation_config=loaded)
    assert after.tolist() == before.tolist() == reference.tolist()


# --- push through the fake Hub -------------------------------------------------------------------

def test_push_commits_the_saved_json_with_the_commit_message(hub, tmp_path):
    cfg = share.config_from_settings(SAMPLING)
    out = share.push_config(cfg, f"{USER}/smol-configs", "creative.json", "Add a creative sampling config",
                            WRITE_TOKEN, tmp_path)
    assert out.ok, out.message
    local = tmp_path / "creative.json"
    assert out.path == local and local.read_text() == share.config_json(cfg)
    create = hub.calls("create")[-1].json()
    assert (create["name"], create["organization"]) == ("smol-configs", USER)
    header, *files = hub.calls("commit")[-1].ndjson()
    assert header == {"key": "header", "value": {"summary": "Add a creative sampling config", "description": ""}}
    assert [f["value"]["path"] for f in files] == ["creative.json"]
    committed = hub.repos[f"{USER}/smol-configs"].files["creative.json"]
    assert json.loads(committed) == {"do_sample": True, "temperature": 0.8, "top_k": 10, "top_p": 0.9,
                                     "max_new_tokens": 8, "repetition_penalty": 1.3,
                                     "transformers_version": GenerationConfig().to_dict()["transformers_version"]}
    assert committed == local.read_bytes()
    assert out.message.startswith(f"Pushed `creative.json` to `{USER}/smol-configs` (commit ")
    assert all(r.headers.get("authorization") == f"Bearer {WRITE_TOKEN}" for r in hub.calls("commit"))


def test_two_named_configs_in_one_repo_and_load_back_from_the_hub(hub, tmp_path):
    beam = share.config_from_settings({"num_beams": 4, "length_penalty": 0.8, "early_stopping": True})
    assert share.push_config(share.config_from_settings(SAMPLING), "smol", "creative.json", "creative",
                             WRITE_TOKEN, tmp_path).ok
    assert share.push_config(beam, "smol", "summaries.json", "beam", WRITE_TOKEN, tmp_path).ok
    assert sorted(hub.repos[f"{USER}/smol"].files) == ["creative.json", "summaries.json"]
    assert [c["summary"] for c in hub.repos[f"{USER}/smol"].commits] == ["creative", "beam"]
    loaded = share.load_hub(f"{USER}/smol", "summaries.json", cache_dir=tmp_path / "cache")
    assert share.config_values(loaded) == share.config_values(beam)


def test_loading_on_a_space_never_borrows_the_spaces_own_token(hub, monkeypatch, tmp_path):
    share.push_config(share.config_from_settings(SAMPLING), "private", "c.json", "m", WRITE_TOKEN, tmp_path)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)  # the Space owner's secret
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "owner/decoding-playground")
    share.load_hub(f"{USER}/private", "c.json", cache_dir=tmp_path / "cache")
    assert "authorization" not in hub.calls("resolve")[-1].headers
    hub.tokens["hf_visitor"] = "read"
    share.load_hub(f"{USER}/private", "c.json", token="hf_visitor", cache_dir=tmp_path / "cache2")
    assert hub.calls("resolve")[-1].headers["authorization"] == "Bearer hf_visitor"


def _error(hub, tmp_path, token, repo=f"{USER}/smol"):
    out = share.push_config(share.config_from_settings(SAMPLING), repo, "creative.json", "msg", token, tmp_path)
    assert not out.ok
    assert (tmp_path / "creative.json").read_text() == share.config_json(share.config_from_settings(SAMPLING))
    saved = f" Nothing is lost: the config is saved at {tmp_path / 'creative.json'}."
    assert out.message.endswith(saved)
    return out.message[: -len(saved)]


def test_push_with_an_invalid_token_says_401(hub, tmp_path):
    assert _error(hub, tmp_path, "hf_expiredOrWrong") == (
        "Push failed: the Hub rejected the token (401 Unauthorized): it is invalid or has expired. Sign in again, "
        "or create a new token with write access at https://huggingface.co/settings/tokens.")
    assert hub.calls("commit") == []


def test_push_without_write_access_says_403(hub, tmp_path):
    hub.add_file(f"{USER}/smol", "README.md", b"hi")  # the repo exists; the token may only read
    assert _error(hub, tmp_path, READ_TOKEN) == (
        f"Push failed: no write access to `{USER}/smol` (403 Forbidden): the token lacks write scope, or your "
        "account cannot write to (or create a repo in) that namespace. Use a token with write access "
        "(https://huggingface.co/settings/tokens; a fine-grained token needs write permission on this repo), or "
        "push to a repo under your own namespace.")
    assert "creative.json" not in hub.repos[f"{USER}/smol"].files


def test_push_to_a_missing_repo_says_404(hub, tmp_path):
    hub.force["preupload"] = 404
    assert _error(hub, tmp_path, WRITE_TOKEN) == (
        f"Push failed: repo `{USER}/smol` was not found (404). Check the repo id (namespace/name), that the "
        "namespace exists, and that your token can see and create repos in it.")


def test_push_offline_says_the_hub_is_unreachable(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    point_hub_at(monkeypatch, closed)
    assert _error(None, tmp_path, WRITE_TOKEN) == (
        f"Push failed: could not reach the Hub at {closed} (network unreachable or offline). Check your "
        "connection (or HF_ENDPOINT) and push again.")


def test_push_without_a_token_says_how_to_get_one(hub, tmp_path):
    assert share.resolve_token(None, "  ") is None
    assert _error(hub, tmp_path, share.resolve_token(None, "")) == (
        'Push failed: no Hugging Face token. On a Space, sign in with the "Sign in with Hugging Face" button; '
        "locally, set the HF_TOKEN environment variable or paste a token with write access into the token field "
        "(https://huggingface.co/settings/tokens).")
    assert hub.requests == []


def test_an_invalid_file_name_stops_the_push_before_anything_is_sent(hub, tmp_path):
    out = share.push_config(share.config_from_settings(SAMPLING), "smol", "creative", "m", WRITE_TOKEN, tmp_path)
    assert out.message == "Push failed before saving: `config_file_name` must end in .json; got 'creative'"
    assert hub.requests == [] and not any(tmp_path.iterdir())


def test_token_order_oauth_then_env_then_field_and_never_the_space_secret(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert share.resolve_token("hf_oauth", "hf_typed") == "hf_oauth"
    assert share.resolve_token(None, "hf_typed") == "hf_env"
    monkeypatch.delenv("HF_TOKEN")
    assert share.resolve_token(None, " hf_typed ") == "hf_typed"
    monkeypatch.setenv("HF_TOKEN", "hf_space_owner_secret")
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "someone/decoding-playground")
    assert share.resolve_token(None, "") is None
    assert share.resolve_token("hf_visitor", "") == "hf_visitor"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_the_token_is_never_logged_echoed_or_written(hub, tmp_path, capfd):
    secret = WRITE_TOKEN
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "transformers", "httpx2", "httpx", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        messages = [share.push_config(share.config_from_settings(SAMPLING), "smol", "creative.json", "m", secret,
                                      tmp_path / "saved").message]
        messages.append(share.push_config(share.config_from_settings(SAMPLING), "smol", "creative.json", "m",
                                          "hf_revoked0123456789", tmp_path / "saved").message)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    out, err = capfd.readouterr()
    assert handler.lines, "the test must have captured some log lines"
    for token in (secret, "hf_revoked0123456789"):
        assert all(token not in m for m in messages)
        assert all(token not in line for line in handler.lines)
        assert token not in out and token not in err
        for path in Path(tmp_path).rglob("*"):
            if path.is_file():
                assert token not in path.read_text(errors="replace"), path
        assert token not in hub.repos[f"{USER}/smol"].files["creative.json"].decode()

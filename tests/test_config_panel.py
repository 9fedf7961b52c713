"""The Config & Share panel's handlers, on a small Blocks with two tabs (no browser; see
test_config_panel_browser.py for the same panel driven through chromium)."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from transformers import GenerationConfig

from playground import config_panel
from playground.tabs import TabHandle
from tests.fake_hub import USER, WRITE_TOKEN, FakeHub, point_hub_at


def small_app():
    """Two strategy tabs (sampling, beam search) with the TabHandle interface, and the panel."""
    with gr.Blocks() as demo:
        active = gr.State("sampling")
        with gr.Tabs():
            with gr.Tab("Sampling", id="sampling") as t1:
                sampling = {"max_new_tokens": gr.Slider(1, 64, value=16, step=1, label="max_new_tokens"),
                            "temperature": gr.Slider(0.1, 2.0, value=0.7, label="temperature"),
                            "top_k": gr.Slider(0, 100, value=20, step=1, label="top_k"),
                            "min_p": gr.Slider(0, 1, value=0, label="min_p")}
                sampling_extra = gr.State({})
            with gr.Tab("Beam search", id="beam") as t2:
                beam = {"max_new_tokens": gr.Slider(1, 64, value=16, step=1, label="max_new_tokens (beam)"),
                        "num_beams": gr.Slider(1, 8, value=4, step=1, label="num_beams"),
                        "length_penalty": gr.Slider(-2, 2, value=1.0, label="length_penalty")}
                beam_extra = gr.State({})
            handles = [TabHandle("sampling", "Sampling", sampling, sampling_extra,
                                 fixed={"do_sample": True, "num_beams": 1}),
                       TabHandle("beam", "Beam search", beam, beam_extra, fixed={"do_sample": False})]
            t1.select(lambda: "sampling", None, active)
            t2.select(lambda: "beam", None, active)
            panel = config_panel.ConfigPanel(handles, active)
            panel.build()
    return demo, panel, handles, active


@pytest.fixture
def app(tmp_path):
    demo, panel, handles, active = small_app()
    p = panel.panel
    data = {active: "sampling", **{c: c.value for h in handles for c in h.controls.values()},
            **{h.extra: {} for h in handles}, p.file_name: "creative.json", p.folder: str(tmp_path),
            p.repo_id: "", p.commit_message: "", p.token: ""}
    return panel, handles, data


def H(key, fixed, fields):
    return TabHandle(key, key.title(), {f: object() for f in fields}, None, fixed=fixed)


TABS = [H("greedy", {"do_sample": False, "num_beams": 1}, ["max_new_tokens"]),
        H("sampling", {"do_sample": True, "num_beams": 1}, ["max_new_tokens", "temperature", "top_k", "top_p"]),
        H("beam", {"do_sample": False}, ["max_new_tokens", "num_beams", "length_penalty", "early_stopping"]),
        H("beam_sample", {"do_sample": True}, ["max_new_tokens", "num_beams", "temperature", "top_k", "top_p"]),
        H("contrastive", {"do_sample": False, "num_beams": 1}, ["max_new_tokens", "penalty_alpha", "top_k"]),
        H("compare", {}, ["max_new_tokens"])]


@pytest.mark.parametrize("values, active, expected, overridden", [
    ({"do_sample": True, "temperature": 0.9, "top_p": 0.95}, "greedy", "sampling", []),
    ({"do_sample": True, "temperature": 0.9, "top_p": 0.95}, "beam_sample", "sampling", []),  # num_beams absent = 1
    ({"do_sample": True, "num_beams": 4, "temperature": 0.9}, "sampling", "beam_sample", []),
    ({"num_beams": 4, "length_penalty": 0.8}, "sampling", "beam", []),
    ({"penalty_alpha": 0.6, "top_k": 4}, "greedy", "contrastive", []),
    ({"max_new_tokens": 8}, "contrastive", "contrastive", []),  # fits every greedy-like tab: stay
    ({"max_new_tokens": 8}, "sampling", "greedy", []),  # do_sample absent = False: not the sampling tab
])
def test_a_loaded_config_goes_to_the_tab_it_matches(values, active, expected, overridden):
    tab, over = config_panel.matching_tab(values, TABS, active)
    assert (tab.key, over) == (expected, overridden)


def test_with_no_matching_tab_the_active_one_takes_it_and_says_what_it_overrides():
    tabs = [H("greedy", {"do_sample": False, "num_beams": 1}, ["max_new_tokens"])]
    tab, over = config_panel.matching_tab({"do_sample": True, "num_beams": 3}, tabs, "greedy")
    assert (tab.key, over) == ("greedy", ["do_sample", "num_beams"])


def test_the_panel_shows_what_the_active_tab_runs(app):
    panel, handles, data = app
    p = panel.panel
    shown = panel.preview(data)
    reference = GenerationConfig(do_sample=True, num_beams=1, max_new_tokens=16, temperature=0.7, top_k=20)
    assert shown[p.json] == reference.to_json_string(use_diff=True)  # min_p 0 means "off": not listed
    assert "**Sampling**" in shown[p.heading]
    shown = panel.preview({**data, panel.active_tab: "beam"})
    assert json.loads(shown[p.json]) == {"do_sample": False, "num_beams": 4, "max_new_tokens": 16,
                                         "length_penalty": 1.0,
                                         "transformers_version": json.loads(shown[p.json])["transformers_version"]}


def test_save_then_load_restores_every_widget_and_keeps_fields_without_one(app, tmp_path):
    panel, (sampling, beam), data = app
    p = panel.panel
    (tmp_path / "beam.json").write_text(json.dumps({"num_beams": 6, "length_penalty": 0.5, "early_stopping": True,
                                                     "no_repeat_ngram_size": 3, "max_new_tokens": 12}))
    out = panel.load_folder({**data, p.file_name: "beam.json"})
    assert out[p.status] == ("Loaded `beam.json` from the local folder into the **Beam search** tab. Kept without "
                             "a widget (they run and are saved back): early_stopping, no_repeat_ngram_size.")
    assert (out[beam.controls["num_beams"]], out[beam.controls["length_penalty"]],
            out[beam.controls["max_new_tokens"]]) == (6, 0.5, 12)
    assert out[beam.extra] == {"early_stopping": True, "no_repeat_ngram_size": 3}
    assert out[panel.active_tab] == "beam"
    assert sampling.controls["temperature"] not in out  # other tabs are left alone
    # the user saves what is now on screen: the file has every loaded field
    after = {**data, **{c: v for c, v in out.items() if c in data}, p.file_name: "beam-again.json"}
    saved = panel.save(after)
    assert saved[p.status].startswith(f"Saved to {tmp_path / 'beam-again.json'}.")
    again = json.loads((tmp_path / "beam-again.json").read_text())
    assert {k: again[k] for k in ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size",
                                  "max_new_tokens", "do_sample")} == {
        "num_beams": 6, "length_penalty": 0.5, "early_stopping": True, "no_repeat_ngram_size": 3,
        "max_new_tokens": 12, "do_sample": False}
    assert open(saved[p.download]).read() == (tmp_path / "beam-again.json").read_text()


def test_absent_fields_take_transformers_defaults_so_the_tab_runs_the_loaded_config(app, tmp_path):
    panel, (sampling, beam), data = app
    p = panel.panel
    (tmp_path / "t.json").write_text(json.dumps({"do_sample": True, "temperature": 1.3}))
    out = panel.load_folder({**data, p.file_name: "t.json"})
    assert out[sampling.controls["temperature"]] == 1.3
    assert out[sampling.controls["top_k"]] == 50  # transformers' default, not the slider's previous 20
    assert out[sampling.controls["min_p"]] == 0  # off
    assert sampling.controls["max_new_tokens"] not in out  # no value and no default: unchanged


def test_save_with_a_bad_file_name_names_the_field(app):
    panel, _, data = app
    p = panel.panel
    out = panel.save({**data, p.file_name: "notes.txt"})
    assert out == {p.status: "Save failed: `config_file_name` must end in .json; got 'notes.txt'"}


def test_a_broken_upload_says_why(app, tmp_path):
    panel, _, data = app
    p = panel.panel
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_new_tokens": 0}')
    out = panel.load_upload({**data, p.upload: str(bad)})
    assert out[p.status].startswith("Load failed (the uploaded bad.json): the file holds an invalid GenerationConfig: "
                                    "`max_new_tokens` must be greater than 0")


def test_push_uses_the_signed_in_users_token_first(app, monkeypatch, tmp_path):
    panel, _, data = app
    p = panel.panel
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("SYSTEM", raising=False)
    with FakeHub() as hub:
        point_hub_at(monkeypatch, hub.url)
        hub.tokens["hf_oauthUserToken"] = "write"
        oauth = gr.OAuthToken(token="hf_oauthUserToken", scope="openid profile write-repos", expires_at=0)
        out = panel.push({**data, p.repo_id: "smol", p.commit_message: "from the panel", p.token: "hf_typedToken"},
                         oauth)
        assert out[p.status].startswith(f"Pushed `creative.json` to `{USER}/smol` (commit ")
        assert {r.headers["authorization"] for r in hub.calls("commit")} == {"Bearer hf_oauthUserToken"}
        pushed = json.loads(hub.repos[f"{USER}/smol"].files["creative.json"])
        assert pushed == json.loads(panel.preview(data)[p.json])
        assert "hf_oauthUserToken" not in out[p.status] and "hf_typedToken" not in out[p.status]
        out = panel.push({**data, p.repo_id: "smol", p.token: WRITE_TOKEN}, None)
        assert {r.headers["authorization"] for r in hub.calls("commit")[1:]} == {f"Bearer {WRITE_TOKEN}"}


def test_the_token_field_is_masked_and_the_login_button_only_exists_on_a_space(monkeypatch):
    monkeypatch.delenv("SYSTEM", raising=False)
    _, panel, _, _ = small_app()
    assert panel.panel.token.type == "password" and panel.panel.login is None
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "someone/decoding-playground")
    import gradio.oauth  # what a Space with `hf_oauth: true` sets (read by Gradio at import)

    for name, value in [("OAUTH_CLIENT_ID", "id"), ("OAUTH_CLIENT_SECRET", "secret"),
                        ("OAUTH_SCOPES", "openid profile write-repos"), ("OPENID_PROVIDER_URL", "https://hf.co")]:
        monkeypatch.setattr(gradio.oauth, name, value)
    _, panel, _, _ = small_app()
    assert isinstance(panel.panel.login, gr.LoginButton)
    assert panel.panel.folder.interactive is False


def test_a_hub_style_config_with_sampling_values_loads_into_a_greedy_like_tab_and_saves_back(app, tmp_path):
    panel, (sampling, beam), data = app
    p = panel.panel
    (tmp_path / "model.json").write_text(json.dumps({"temperature": 0.6, "top_p": 0.9, "bos_token_id": 1}))
    out = panel.load_folder({**data, p.file_name: "model.json"})
    assert out[panel.active_tab] == "beam" and out[beam.extra] == {"temperature": 0.6, "top_p": 0.9, "bos_token_id": 1}
    after = {**data, **{c: v for c, v in out.items() if c in data}, p.file_name: "back.json"}
    assert panel.save(after)[p.status].startswith("Saved to ")
    saved = json.loads((tmp_path / "back.json").read_text())
    assert (saved["temperature"], saved["top_p"], saved["bos_token_id"], saved["do_sample"]) == (0.6, 0.9, 1, False)

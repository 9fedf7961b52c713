"""The Config & Share panel in chromium: fill the push form, click Push, see the confirmation (or the 403
error) while a local fake Hub receives the commit; upload a config and see the matching tab's widgets move.

The full app (app.py, embedded model) is served once for the push from a real strategy tab; the small
two-tab Blocks of test_config_panel.py (faster) for the rest. Both run in this process, so the fake Hub's
endpoint can be patched into huggingface_hub."""

from __future__ import annotations

import json
import os

import pytest
from playwright import sync_api

from tests.fake_hub import READ_TOKEN, USER, WRITE_TOKEN, FakeHub, point_hub_at

pytestmark = pytest.mark.browser
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def served(hub, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    point_hub_at(mp, hub.url)
    mp.delenv("HF_TOKEN", raising=False)
    mp.delenv("SYSTEM", raising=False)
    mp.chdir(tmp_path_factory.mktemp("cwd"))  # the default save folder is relative to the working directory
    from tests.test_config_panel import small_app

    demo, panel, handles, active = small_app()
    from playground.i18n import I18N

    # the panel's labels are translation keys: served with the translations, as app.launch serves them
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, i18n=I18N)
    yield url
    demo.close()
    mp.undo()


@pytest.fixture(scope="module")
def full_app(hub, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    point_hub_at(mp, hub.url)
    mp.delenv("HF_TOKEN", raising=False)
    mp.delenv("SYSTEM", raising=False)
    mp.chdir(tmp_path_factory.mktemp("app-cwd"))
    import app

    demo = app.build_demo()  # PLAYGROUND_MODEL unset: the embedded SmolLM2-135M-Instruct
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url, demo
    demo.close()
    mp.undo()


@pytest.mark.slow
def test_push_from_the_full_app_sends_what_the_sampling_tab_runs(browser, full_app, hub):
    from playground.field_codecs import generate_kwargs

    url, demo = full_app
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Sampling", exact=True).click()
    page.get_by_role("tab", name="Config & Share").click()
    sync_api.expect(page.get_by_text("Settings of the Sampling tab", exact=False)).to_be_visible(timeout=20_000)
    fill_push_form(page, "smol-app", "sampling.json", "Sampling settings from the playground", WRITE_TOKEN)
    sync_api.expect(page.get_by_text(f"Pushed sampling.json to {USER}/smol-app (commit ", exact=False)).to_be_visible(
        timeout=30_000)
    page.close()
    # what arrived is what the Sampling tab's Generate runs with its widgets as built
    handle = next(h for h in demo.handles if h.key == "sampling")
    expected = generate_kwargs({name: c.value for name, c in handle.controls.items()}, {}, handle.fixed)
    committed = json.loads(hub.repos[f"{USER}/smol-app"].files["sampling.json"])
    from playground import share

    assert committed == json.loads(share.config_json(share.config_from_settings(expected)))
    assert committed["do_sample"] is True
    assert hub.repos[f"{USER}/smol-app"].commits[-1]["summary"] == "Sampling settings from the playground"


@pytest.fixture
def page(browser, served):
    page = browser.new_page()
    page.goto(served)
    page.get_by_role("tab", name="Config & Share").click()
    yield page
    page.close()


def fill_push_form(page, repo, name, message, token):
    page.get_by_label("Hub repo id").fill(repo)
    page.get_by_label("config_file_name").fill(name)
    page.get_by_label("Commit message").fill(message)
    page.get_by_label("Hugging Face token").fill(token)
    page.get_by_role("button", name="Push to the Hub").click()


def test_push_from_the_form_reaches_the_hub_and_confirms(page, hub):
    expect = sync_api.expect
    expect(page.get_by_label("Hugging Face token")).to_have_attribute("type", "password")
    fill_push_form(page, "smol-ui", "creative.json", "Add a creative config", WRITE_TOKEN)
    expect(page.get_by_text(f"Pushed creative.json to {USER}/smol-ui (commit ", exact=False)).to_be_visible(
        timeout=20_000)
    committed = json.loads(hub.repos[f"{USER}/smol-ui"].files["creative.json"])
    assert {k: v for k, v in committed.items() if k != "transformers_version"} == {
        "do_sample": True, "num_beams": 1, "max_new_tokens": 16, "temperature": 0.7, "top_k": 20}
    assert hub.repos[f"{USER}/smol-ui"].commits[-1]["summary"] == "Add a creative config"
    assert WRITE_TOKEN not in page.content()


def test_push_without_write_access_shows_the_403_error(page, hub):
    hub.add_file(f"{USER}/read-only", "README.md", b"hello")
    fill_push_form(page, f"{USER}/read-only", "creative.json", "try", READ_TOKEN)
    sync_api.expect(page.get_by_text(f"Push failed: no write access to {USER}/read-only (403 Forbidden)",
                                     exact=False)).to_be_visible(timeout=20_000)
    sync_api.expect(page.get_by_text("Nothing is lost: the config is saved at", exact=False)).to_be_visible()
    assert "creative.json" not in hub.repos[f"{USER}/read-only"].files


def test_uploading_a_beam_config_moves_the_beam_tabs_widgets(page, tmp_path):
    path = tmp_path / "summaries.json"
    path.write_text(json.dumps({"num_beams": 6, "length_penalty": 0.6, "early_stopping": True}))
    with page.expect_file_chooser() as chooser:  # the one upload area of the panel
        page.get_by_role("button", name="Click to upload or drop files").click()
    chooser.value.set_files(str(path))
    sync_api.expect(page.get_by_text("into the Beam search tab", exact=False)).to_be_visible(timeout=20_000)
    page.get_by_role("tab", name="Beam search").click()
    sync_api.expect(page.get_by_role("spinbutton", name="number input for num_beams")).to_have_value("6")
    sync_api.expect(page.get_by_role("spinbutton", name="number input for length_penalty")).to_have_value("0.6")

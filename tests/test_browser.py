"""The playground in a real browser (Playwright driving Debian's chromium) on the embedded model.

For every tab: type a prompt, move a slider, Generate, wait until the text and the tab's figure are
drawn (beam tree nodes, DoLa heatmap cells, bars...), and save a screenshot to
``artifacts/screenshots/<tab>.png``. Then: Stop halts a long generation (the text stops growing and the
worker thread ends), a bad setting shows the core's message and keeps the text, picking a step shows
its alternatives, a downloaded trace uploads back into the same figure, and the time to first token.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from PIL import Image
from playwright.sync_api import expect

import app
from browser_helpers import (ANY_TEXT, SCREENSHOTS, nudge_slider, open_figure, open_tab, set_number, status_of,
                             text_of, wait_done, wait_for_plot, wait_idle, wait_restored, wait_until_stable)
from conftest import kernels_ready
from playground import i18n

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[1] / "docs"
TIMEOUT = 90_000  # ms; the CPU is shared with other test runs

# key, title, slider moved (label, key), the figure checked, and what it must show
TABS = [
    ("greedy", "Greedy", ("repetition_penalty", "ArrowRight"), "Candidates at the picked step", "s.bars > 0"),
    ("sampling", "Sampling", ("temperature", "ArrowLeft"), "Candidates at the picked step", "s.bars > 0"),
    ("beam", "Beam search", ("num_beams", "ArrowLeft"), "Beam tree", "s.markers > 0"),
    ("beam_sample", "Beam sampling", ("num_beams", "ArrowLeft"), "Beam tree", "s.markers > 0"),
    ("diverse_beam", "Diverse beam search", ("diversity_penalty", "ArrowRight"), "Beam tree", "s.markers > 0"),
    ("contrastive", "Contrastive", ("penalty_alpha", "ArrowLeft"), "Contrastive scores", "s.points > 0"),
    ("dola", "DoLa", ("repetition_penalty", "ArrowLeft"), "Layer divergences", "s.cells > 0"),
    ("speculative", "Speculative", ("prompt_lookup_num_tokens", "ArrowLeft"), "Drafted tokens", "s.points > 0"),
    ("cache", "KV cache", None, "Cache memory per step", "s.points > 0"),
    ("compare", "Compare", None, "Tokens per second", "s.bars > 0"),
]
PROMPTS = {"speculative": "Repeat this sentence exactly: the quick brown fox jumps over the lazy dog.",
           "dola": "Who wrote the novel Pride and Prejudice?"}
TEXT_LABEL = {"dola": "DoLa text", "speculative": "Assisted text", "cache": "Text with the chosen cache",
              "compare": "Texts side by side"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(embedded):
    """The app on the embedded model, in this process (so tests can see its worker threads)."""
    demo = app.build_demo()
    kernels_ready()
    app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=free_port())
    yield demo
    demo.close()


@pytest.fixture
def page(server, browser):
    expect.set_options(timeout=TIMEOUT)
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server.local_url)
    expect(page.get_by_role("tab", name="Greedy", exact=True)).to_be_visible()
    wait_restored(page)
    yield page
    context.close()


def generate(panel, max_new_tokens: int = 8, prompt: str | None = None) -> None:
    if prompt is not None:
        panel.get_by_role("textbox", name="Prompt", exact=True).fill(prompt)
    set_number(panel, "max_new_tokens", max_new_tokens)
    panel.get_by_role("button", name="Generate").click()


def _workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("(work)"))


@pytest.mark.parametrize("key, title, slider, figure, condition", TABS, ids=[t[0] for t in TABS])
def test_tab_streams_text_and_draws_its_figure(page, key, title, slider, figure, condition):
    panel = open_tab(page, title)
    if slider:
        nudge_slider(panel, *slider)
    if key == "compare":  # two strategies are enough to compare, and keep the suite short
        folded = panel.get_by_role("button", name="Strategies to compare")
        folded.click()  # the list is folded away, and folded again after
        for name in ("beam search (4 beams)", "contrastive (alpha 0.6, top_k 4)"):
            panel.get_by_role("checkbox", name=name).uncheck()
        folded.click()
    generate(panel, max_new_tokens=10 if key == "beam" else 8, prompt=PROMPTS.get(key, "Name three fruits."))
    status = status_of(panel)
    expect(status).to_be_visible()
    assert "has no implementation" not in status.inner_text(), status.inner_text()
    assert "Not run" not in status.inner_text(), status.inner_text()
    wait_done(panel)
    expect(text_of(panel, TEXT_LABEL.get(key, "Generated text"))).to_have_value(ANY_TEXT)
    summary = wait_for_plot(page, panel, figure, condition)
    assert summary["traces"] > 0, summary
    expect(panel.get_by_role("grid", name="Top alternatives at the picked step")).to_contain_text("★")
    # one screen tells the story: the tokens lead the output column, above the figures, in about two screens
    tokens_top = panel.locator(".dp-token-view").first.bounding_box()["y"]
    figures_top = panel.locator(".dp-figures").first.bounding_box()["y"]
    assert tokens_top < figures_top, (tokens_top, figures_top)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{key}.png"
    page.screenshot(path=shot, full_page=True)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= 2200, f"the {title} tab is {height} px tall after a run"
    if key == "beam":  # the README's picture: the first screen (controls, text, beam tree), not the whole page
        readme = SCREENSHOTS / "beam_search_readme.png"
        page.screenshot(path=readme, full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": 1000})
        Image.open(readme).convert("RGB").quantize(colors=128).save(readme, optimize=True)  # a small PNG
        if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
            DOCS.mkdir(exist_ok=True)
            shutil.copy(readme, DOCS / "beam_search.png")


def test_stop_halts_a_long_generation(page):
    panel = open_tab(page, "Sampling")
    generate(panel, max_new_tokens=512)
    text = text_of(panel)
    expect(text).to_have_value(ANY_TEXT)  # it is streaming
    panel.get_by_role("button", name="Stop").click()
    expect(panel.get_by_text("Stopped.")).to_be_visible()
    # closing the stream waits for nothing (Gradio's event loop may be the one closing it): the worker ends on its
    # own within a step
    deadline = time.monotonic() + 15
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _workers() == 0, "core.stream's worker kept running after Stop"
    stopped = wait_until_stable(text.input_value)
    summary = status_of(panel).inner_text()
    assert "(stopped)" in summary
    tokens = int(re.search(r"(\d+) tokens in", summary).group(1))
    assert 0 < tokens < 512
    assert len(stopped) < 512 * 2
    # what Stop shows is what the run made, though the last streamed update may be a frame behind it
    assert panel.locator(".dp-tokens .dp-tok[data-step]").count() == tokens


def test_bad_setting_shows_the_message_and_keeps_the_text(page):
    panel = open_tab(page, "Sampling")
    generate(panel, max_new_tokens=6)
    wait_done(panel)
    before = text_of(panel).input_value()
    assert before.strip()
    set_number(panel, "top_p", 0)
    panel.get_by_role("button", name="Generate").click()
    message = re.compile(r"top_p.*must be in \(0, 1\]; got 0")
    expect(panel.get_by_text(message)).to_be_visible()  # the status line
    expect(page.get_by_test_id("toast-body").filter(has_text=message)).to_be_visible()  # and the warning toast
    wait_idle(panel)
    expect(text_of(panel)).to_have_value(before)


def test_picking_a_step_shows_its_alternatives(page):
    panel = open_tab(page, "Greedy")
    generate(panel, max_new_tokens=6)
    wait_done(panel)
    grid = panel.get_by_role("grid", name="Top alternatives at the picked step")
    expect(grid).to_contain_text("★")
    last = grid.inner_text()
    set_number(panel, "step", 0)
    expect(grid).not_to_have_text(last)
    expect(grid).to_contain_text("★")
    wait_for_plot(page, panel, "Candidates at the picked step", "String(s.title).startsWith('Step 0 ')")
    # or click a generated token: its step is picked
    panel.get_by_title(re.compile(r"^step 2 ")).click()
    expect(panel.get_by_role("spinbutton", name="number input for step")).to_have_value("2")
    wait_for_plot(page, panel, "Candidates at the picked step", "String(s.title).startsWith('Step 2 ')")


def test_downloaded_trace_uploads_back_into_the_beam_tree(page, tmp_path):
    panel = open_tab(page, "Beam search")
    generate(panel, max_new_tokens=6)
    status = status_of(panel)
    expect(status).to_be_visible()
    assert "has no implementation" not in status.inner_text(), status.inner_text()
    wait_done(panel)
    drawn = wait_for_plot(page, panel, "Beam tree", "s.markers > 0")
    text = text_of(panel).input_value()
    with page.expect_download() as download:
        panel.get_by_role("button", name="Download trace (JSON)", exact=True).click()
    path = tmp_path / "trace.json"
    download.value.save_as(path)

    page.reload()
    panel = open_tab(page, "Beam search")
    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Load trace (JSON)", exact=True).click()
    chooser.value.set_files(path)
    expect(text_of(panel)).to_have_value(text)
    again = wait_for_plot(page, panel, "Beam tree", "s.markers > 0")
    assert again["markers"] == drawn["markers"]


# --- steering: force a token and branch, sample many ------------------------------------------------------------
RUN_NODES = "s.points > 0 && s.title.includes('runs on this prompt')"


def test_continue_with_an_alternative_grows_the_branch_tree(page):
    """Generate, click a token of the text (its step), click an alternative that was not chosen, Continue with this
    token: a second run streams, and the branch tree shows both runs."""
    panel = open_tab(page, "Greedy")
    generate(panel, max_new_tokens=8, prompt="Name three fruits.")
    wait_done(panel)
    wait_for_plot(page, panel, "Branch tree", "s.title.includes('1 runs')")
    panel.locator(".dp-tok[data-step='2']").first.click()  # the third token: its step's alternatives
    expect(panel.get_by_role("spinbutton", name="number input for step")).to_have_value("2")
    grid = panel.get_by_role("grid", name="Top alternatives at the picked step")
    alternative = grid.get_by_role("row").filter(has_not_text="★").nth(1)  # a data row the run did not choose
    alternative.get_by_role("gridcell").first.click()
    token = panel.get_by_role("textbox", name=re.compile(r"^token\b"))  # not "watch tokens ..."
    expect(token).to_have_value(re.compile(r"^#\d+$"))
    panel.get_by_role("button", name="Continue with this token").click()
    expect(status_of(panel)).to_contain_text("branch")
    wait_done(panel)
    summary = wait_for_plot(page, panel, "Branch tree", "s.title.includes('2 runs')")
    assert summary["markers"] >= 3, summary  # the prompt and two runs
    expect(panel.locator(".dp-lead").first).to_be_visible()  # the branch shows the prefix it continued from
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "steer_branch.png", full_page=True)
    # the Branches tab: the tree, and the two runs compared
    branches = open_tab(page, "Branches")
    wait_for_plot(page, branches, "Branch tree", "s.title.includes('2 runs')")
    branches.get_by_role("button", name="Compare two runs").click()
    expect(branches.get_by_text(re.compile("They diverge at position 2"))).to_be_visible()
    wait_for_plot(page, branches, "Log-probability per position", "s.points > 0")
    # the same columns as the Compare tab's: the forced token is the first difference, outlined in both
    table = branches.get_by_role("table", name=re.compile(r"Runs A and B · first difference at position 2"))
    expect(table.get_by_role("columnheader")).to_have_count(2)
    expect(table.get_by_title(re.compile(r"^first difference"))).to_have_count(2)
    page.screenshot(path=SCREENSHOTS / "steer_branches_tab.png", full_page=True)
    shot = SCREENSHOTS / "steer_readme.png"
    page.screenshot(path=shot, full_page=True, clip={"x": 0, "y": 150, "width": 1400, "height": 1100})
    Image.open(shot).convert("RGB").quantize(colors=128).save(shot, optimize=True)
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "steer.png")


def test_attribute_this_step_colours_the_prompt(page):
    """Generate, click a token of the text (its step), Attribute this step: a progress bar, then the panel shows the
    prompt's and the earlier tokens coloured by score, per method, with the score on hover."""
    panel = open_tab(page, "Greedy")
    generate(panel, max_new_tokens=6, prompt="Name three fruits.")
    wait_done(panel)
    panel.locator(".dp-token-view .dp-tok[data-step='3']").first.click()
    expect(panel.get_by_role("spinbutton", name="number input for step")).to_have_value("3")
    set_number(panel, "integrated gradients steps", 16)  # a few seconds: long enough to see the progress bar
    panel.get_by_role("button", name="Attribute this step").click()
    expect(panel.get_by_text(re.compile(r"Attributing"))).to_be_visible()  # gr.Progress, on the panel
    for method in ("input_x_gradient", "integrated_gradients"):
        line = panel.locator(f".dp-attr [data-method='{method}']")
        expect(line).to_be_visible()
        spans = line.locator(".dp-tok[data-score]")
        expect(spans.first).to_have_attribute("title", re.compile(r"of the largest"))
        assert spans.count() > 10  # the chat-templated prompt and the three tokens generated before step 3
    expect(panel.get_by_text(re.compile(r"Step 3, row 0: why"))).to_be_visible()
    expect(panel.locator(".dp-attr .dp-attr-gen").first).to_be_visible()  # generated tokens of the context
    expect(panel.get_by_text(re.compile(r"Attention .*unavailable"))).to_be_visible()  # sdpa: says why
    shot = SCREENSHOTS / "attribution.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    box = panel.locator(".dp-attr").first
    box.scroll_into_view_if_needed()
    page.mouse.move(0, 0)  # no token outlined by the pointer
    box.screenshot(path=shot)
    Image.open(shot).convert("RGB").quantize(colors=128).save(shot, optimize=True)
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "attribution.png")


def test_sample_n_draws_the_tree_of_samples(page):
    panel = open_tab(page, "Sampling")
    panel.get_by_role("textbox", name="Prompt", exact=True).fill("Name a colour.")
    set_number(panel, "max_new_tokens", 6)
    set_number(panel, "samples N", 8)
    panel.get_by_role("button", name="Sample N").click()
    expect(status_of(panel)).to_contain_text("×8")
    wait_done(panel)
    summary = wait_for_plot(page, panel, "Samples", "s.title.includes('8 runs')")
    assert summary["points"] > 0, summary
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "steer_samples.png", full_page=True)


def test_an_arabic_reply_reads_right_to_left_without_replacement_characters(page):
    """Byte-level BPE splits Arabic letters across tokens: the token view merges them back (no U+FFFD) and runs
    right to left."""
    panel = open_tab(page, "Greedy")
    panel.get_by_role("checkbox", name="Apply chat template").uncheck()  # a plain continuation stays in Arabic
    generate(panel, max_new_tokens=16, prompt="البحر الأبيض المتوسط هو")
    wait_done(panel)
    view = panel.locator(".dp-tokens")
    expect(view).to_contain_text(re.compile("[\u0600-\u06ff]"))
    text = view.inner_text()
    titles = view.evaluate("(el) => [...el.querySelectorAll('[title]')].map((s) => s.title).join(' ')")
    assert "\ufffd" not in text and "\ufffd" not in titles, text
    assert view.evaluate("(el) => getComputedStyle(el).direction") == "rtl"
    grid = panel.get_by_role("grid", name="Top alternatives at the picked step")
    assert "\ufffd" not in grid.inner_text()


# --- the UI in Arabic (playground/i18n.py, assets/locale.js) ---------------------------------------------------
def _direction(page, selector: str) -> str:
    return page.locator(selector).first.evaluate("(el) => getComputedStyle(el).direction")


def test_the_arabic_ui_renders_translated_and_right_to_left(server, browser):
    """A browser set to Arabic gets the labels in Arabic, laid out right to left, with transformers' field names as
    they are; it still runs, and the screenshot of its Greedy tab is ``greedy_ar.png``."""
    expect.set_options(timeout=TIMEOUT)
    context = browser.new_context(locale="ar", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(server.local_url)
        tab = page.get_by_role("tab", name=i18n.AR["tab_greedy"], exact=True)
        expect(tab).to_have_attribute("aria-selected", "true")
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        assert _direction(page, ".gradio-container") == "rtl"
        panel = page.get_by_role("tabpanel").first
        generate = panel.get_by_role("button", name=i18n.AR["btn_generate"], exact=True)
        expect(generate).to_be_visible()
        expect(panel.get_by_role("textbox", name=i18n.AR["label_prompt"], exact=True)).to_be_visible()
        expect(page.get_by_role("tab", name=i18n.AR["tab_sampling"], exact=True)).to_be_visible()
        expect(panel.get_by_role("tab", name=i18n.AR["fig_candidates"], exact=True)).to_be_visible()
        for english in ("Generate", "Prompt", "Apply chat template", "Top alternatives at the picked step"):
            expect(panel.get_by_text(english, exact=True)).to_have_count(0)
        # field names stay, and so does what reads left to right everywhere
        expect(panel.get_by_text("max_new_tokens", exact=True)).to_be_visible()
        expect(panel.get_by_text("repetition_penalty", exact=True)).to_be_visible()
        assert _direction(page, "input[type=range]") == "ltr"
        assert "__i18n__" not in page.locator("body").inner_text()
        # it runs in Arabic as in English: the status is the core's (in English), the tokens and figure drawn
        set_number(panel, "max_new_tokens", 8)
        # the Arabic prompt says "Name three fruits."
        panel.get_by_role("textbox", name=i18n.AR["label_prompt"], exact=True).fill("اذكر ثلاث فواكه.")
        generate.click()
        wait_done(panel)
        expect(text_of(panel, i18n.AR["text_generated"])).to_have_value(ANY_TEXT)
        wait_for_plot(page, panel, i18n.AR["fig_candidates"], "s.bars > 0")
        # right to left: the settings column (the first) on the right, the run column on its left
        settings = panel.get_by_role("textbox", name=i18n.AR["label_prompt"], exact=True).bounding_box()
        tokens = panel.locator(".dp-token-view").first.bounding_box()
        assert settings["x"] > tokens["x"] + tokens["width"] - 1, (settings, tokens)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "greedy_ar.png", full_page=True)
        if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # the README's picture: the first screen, a small PNG
            readme = SCREENSHOTS / "greedy_ar_readme.png"
            page.screenshot(path=readme, full_page=True, clip={"x": 0, "y": 0, "width": 1400, "height": 1000})
            Image.open(readme).convert("RGB").quantize(colors=128).save(readme, optimize=True)
            DOCS.mkdir(exist_ok=True)
            shutil.copy(readme, DOCS / "greedy_ar.png")
    finally:
        context.close()


def test_an_english_browser_still_reads_english_left_to_right(page):
    """The default (the ``page`` fixture's English browser): English labels, left to right."""
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    assert _direction(page, ".gradio-container") == "ltr"
    panel = open_tab(page, "Greedy")
    expect(panel.get_by_role("button", name="Generate", exact=True)).to_be_visible()
    expect(panel.get_by_role("tab", name="Candidates at the picked step", exact=True)).to_be_visible()
    expect(panel.get_by_text(i18n.AR["btn_generate"], exact=True)).to_have_count(0)
    settings = panel.get_by_role("textbox", name="Prompt", exact=True).bounding_box()
    tokens = panel.locator(".dp-token-view").first.bounding_box()
    assert settings["x"] + settings["width"] < tokens["x"] + 1, (settings, tokens)


# --- nothing lost on reload; a share link opens its tab ---------------------------------------------------------
TREE_KEPT = "() => !!localStorage.getItem('decoding-playground:branches')"


def test_settings_prompt_and_branch_tree_survive_a_reload(page):
    """Change a tab's prompt and settings, run it once (the branch tree gets a node), reload: all of it is back."""
    panel = open_tab(page, "Sampling")
    panel.get_by_role("checkbox", name="Apply chat template").uncheck()
    set_number(panel, "temperature", 0.7)
    set_number(panel, "seed", 5)
    generate(panel, max_new_tokens=6, prompt="The colour of the sky is")
    wait_done(panel)
    text = text_of(panel).input_value()
    page.wait_for_function(TREE_KEPT)  # written once the run has joined the tree

    page.reload()
    expect(page.get_by_role("tab", name="Greedy", exact=True)).to_be_visible()
    panel = open_tab(page, "Sampling")
    expect(panel.get_by_role("textbox", name="Prompt", exact=True)).to_have_value("The colour of the sky is")
    expect(panel.get_by_role("spinbutton", name="number input for max_new_tokens")).to_have_value("6")
    expect(panel.get_by_role("spinbutton", name="number input for temperature")).to_have_value("0.7")
    expect(panel.get_by_role("spinbutton", name="seed", exact=True)).to_have_value("5")
    expect(panel.get_by_role("checkbox", name="Apply chat template")).not_to_be_checked()
    branches = open_tab(page, "Branches")
    wait_for_plot(page, branches, "Branch tree", "s.title.includes('1 runs') && s.points > 0")
    expect(branches.get_by_role("textbox", name="Run text", exact=True)).to_have_value(text)
    # the same settings, the same seed: Generate gives the same text again, and the tree grows
    panel = open_tab(page, "Sampling")
    panel.get_by_role("button", name="Generate").click()
    wait_done(panel)
    expect(text_of(panel)).to_have_value(text)
    wait_for_plot(page, panel, "Branch tree", "s.title.includes('2 runs')")


def test_a_share_link_opens_its_tab_with_its_prompt_and_settings(page, browser):
    panel = open_tab(page, "Beam search")
    panel.get_by_role("textbox", name="Prompt", exact=True).fill("Three words for rain:")
    set_number(panel, "num_beams", 3)
    set_number(panel, "length_penalty", 1.5)
    panel.get_by_role("button", name="Share link").click()
    box = panel.get_by_role("textbox", name="Share link")
    expect(box).to_have_value(re.compile(r"\?tab=beam&prompt=Three%20words%20for%20rain%3A&"))
    link = box.input_value()
    assert "num_beams=3" in link and "length_penalty=1.5" in link and "max_new_tokens" not in link, link

    other = browser.new_context(viewport={"width": 1400, "height": 1000})  # another visitor: nothing kept
    try:
        shared = other.new_page()
        shared.goto(link + "&num_return_sequences=99")  # and a hand-edited value the slider cannot take
        tab = shared.get_by_role("tab", name="Beam search", exact=True)
        expect(tab).to_have_attribute("aria-selected", "true")
        opened = shared.get_by_role("tabpanel").first
        expect(opened.get_by_role("textbox", name="Prompt", exact=True)).to_have_value("Three words for rain:")
        expect(opened.get_by_role("spinbutton", name="number input for length_penalty")).to_have_value("1.5")
        expect(opened.get_by_role("spinbutton", name="number input for num_beams")).to_have_value("3")
        expect(opened.get_by_text(re.compile(r"not applied: num_return_sequences must be a whole number in "
                                             r"\[1, 8\]; got 99"))).to_be_visible()
        expect(shared).not_to_have_url(re.compile(r"tab=beam"))  # applied once: a reload restores what changes next
        generate(opened, max_new_tokens=6)
        wait_done(opened)  # it runs with what the link set
        wait_for_plot(shared, opened, "Beam tree", "s.markers > 0")
    finally:
        other.close()


def test_a_share_links_values_show_as_text_and_fetch_nothing(server, browser):
    """A crafted link's values are echoed in the status and the warning toast as the visitor wrote them: no image is
    loaded from its address, no link made of its Markdown."""
    image, link = '<img src="http://example.org/p.png">', "[x](http://evil.example)"
    expect.set_options(timeout=TIMEOUT)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requested = []
    try:
        shared = context.new_page()
        shared.on("request", lambda request: requested.append(request.url))
        shared.goto(f"{server.local_url}?tab=greedy&max_new_tokens={quote(image)}&repetition_penalty={quote(link)}")
        wait_restored(shared)  # Greedy is the first tab anyway: its being selected says nothing of the load
        expect(shared.get_by_role("tab", name="Greedy", exact=True)).to_have_attribute("aria-selected", "true")
        opened = shared.get_by_role("tabpanel").first
        for value in (image, link):  # in the status line, then in the toast
            expect(opened.get_by_text(f"got {value!r}")).to_be_visible()
            expect(shared.get_by_test_id("toast-body").get_by_text(f"got {value!r}")).to_be_visible()
        assert shared.locator("img[src*='example.org'], a[href*='evil']").count() == 0
        hosts = {urlsplit(url).hostname for url in requested}
        assert hosts == {urlsplit(server.local_url).hostname}, hosts  # the page's own server only
    finally:
        context.close()


def test_a_watched_tokens_line_appears_after_a_run(page):
    """Watch two tokens, Generate: the Watched tokens figure shows up with one line each, and the logit lens offers
    them in its menu. The docs' picture of it (``docs/watch.png``) is taken here."""
    panel = open_tab(page, "Greedy")
    # "the" as typed, " Apples" with the space the comma leaves (one of the alternatives), a token by its id
    panel.get_by_role("textbox", name=re.compile(r"^watch\b")).fill("the, Apples, #11")  # its name runs into its info
    panel.get_by_role("checkbox", name="Record the logit lens").check()
    generate(panel, max_new_tokens=8, prompt="Name three fruits.")
    wait_done(panel)
    summary = wait_for_plot(page, panel, "Watched tokens", "s.traces >= 3 && s.points >= 24")
    assert summary["title"].startswith("Watched tokens"), summary
    expect(panel.get_by_text(re.compile(r"^'the' \(#\d+\)$"))).to_be_visible()  # the legend names each line
    expect(panel.get_by_text(re.compile(r"^'.*' \(#11\)$"))).to_be_visible()
    expect(panel.get_by_text(re.compile(r"^' Apples' \(#\d+\)$"))).to_be_visible()
    panel.get_by_role("radio", name="surprisal", exact=True).check()
    expect(panel.get_by_text("Colour: surprisal −ln p of the chosen token", exact=False)).to_be_visible()
    # the picture: the token view coloured by surprisal above the watched tokens' figure
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    parts = [SCREENSHOTS / "watch_tokens.png", SCREENSHOTS / "watch_figure.png"]
    panel.locator(".dp-token-view").first.screenshot(path=parts[0])
    open_figure(panel, "Watched tokens").screenshot(path=parts[1])
    images = [Image.open(p).convert("RGB") for p in parts]
    shot = SCREENSHOTS / "watch.png"
    joined = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    joined.paste(images[0], (0, 0))
    joined.paste(images[1], (0, images[0].height))
    joined.quantize(colors=128).save(shot, optimize=True)
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "watch.png")
    lens = wait_for_plot(page, panel, "Logit lens", "s.cells > 0")
    assert lens["traces"] == 4, lens  # the chosen token's heatmap and one per watched token
    # plotly draws its menu in SVG, with no roles: its items are found by their text
    panel.get_by_text("chosen token", exact=True).click()
    panel.get_by_text("' Apples'", exact=True).click()
    wait_for_plot(page, panel, "Logit lens", "s.title.includes(\"p(' Apples')\")")
    open_figure(panel, "Logit lens").screenshot(path=SCREENSHOTS / "watch_lens.png")


def test_colour_by_switches_the_token_views_legend(page):
    panel = open_tab(page, "Greedy")
    generate(panel, max_new_tokens=6, prompt="Name three fruits.")
    status = wait_done(panel)
    expect(status).to_contain_text(re.compile(r"mean entropy \d+\.\d+ nats, effective vocabulary \d"))
    by_probability = panel.get_by_text("Colour: probability of the chosen token", exact=False)
    by_entropy = panel.get_by_text("Colour: entropy H of the step", exact=False)
    expect(by_probability).to_be_visible()
    expect(by_entropy).to_be_hidden()
    panel.get_by_role("radio", name="entropy", exact=True).check()
    expect(by_entropy).to_be_visible()
    expect(by_probability).to_be_hidden()
    panel.get_by_role("radio", name="probability", exact=True).check()
    expect(by_probability).to_be_visible()
    expect(by_entropy).to_be_hidden()
    # kept on reload, as every setting is, and applied to the next run's view
    panel.get_by_role("radio", name="entropy", exact=True).check()
    expect(by_entropy).to_be_visible()
    page.reload()
    expect(page.get_by_role("tab", name="Greedy", exact=True)).to_be_visible()
    panel = open_tab(page, "Greedy")
    expect(panel.get_by_role("radio", name="entropy", exact=True)).to_be_checked()
    generate(panel, max_new_tokens=4)
    wait_done(panel)
    expect(panel.get_by_text("Colour: entropy H of the step", exact=False)).to_be_visible()
    expect(panel.get_by_text("Colour: probability of the chosen token", exact=False)).to_be_hidden()


def test_compare_shows_the_strategies_as_columns_with_the_divergence_marked(page):
    """Two strategies on one prompt: the token view holds one column per strategy, the first position where they
    differ outlined in both (its tooltip says so), and their log-probability lines, as the Branches tab draws two
    runs."""
    panel = open_tab(page, "Compare")
    panel.get_by_role("button", name="Strategies to compare").click()  # the list is folded away
    for name in ("beam search (4 beams)", "contrastive (alpha 0.6, top_k 4)"):
        panel.get_by_role("checkbox", name=name).uncheck()
    generate(panel, max_new_tokens=16, prompt="Write one sentence about a cat.")
    wait_done(panel)
    table = panel.get_by_role("table", name=re.compile("Strategies side by side"))
    expect(table).to_be_visible()
    for name in ("greedy", "sampling (temperature 0.7, top_p 0.9)"):
        expect(table.get_by_role("columnheader", name=name, exact=True)).to_be_visible()
    expect(table).to_have_accessible_name(re.compile(r"first difference at position \d+"))
    expect(table.get_by_title(re.compile(r"^first difference"))).to_have_count(2)  # outlined in both columns
    wait_for_plot(page, panel, "Log-probability per position", "s.points > 0")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "compare_columns.png"
    page.mouse.move(0, 0)  # no hover outline on the picture
    table.screenshot(path=shot)
    Image.open(shot).convert("RGB").quantize(colors=128).save(shot, optimize=True)  # a small PNG
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "compare.png")

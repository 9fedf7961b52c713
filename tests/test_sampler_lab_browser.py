"""The sampler lab in a real browser (Playwright driving Debian's chromium) on the embedded model: the Sampling tab's
Advanced accordion with DRY and a reordered chain generates, and the funnel draws the stages in the new order; the
smoothing factor, tail-free sampling, top-a and adaptive-P show as stages and the smoothing factor's curve is drawn; a
regex shows its cut among the alternatives."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_helpers import SCREENSHOTS, open_figure, open_tab, set_number, status_of, wait_done, wait_for_plot
from test_browser import DOCS, generate, page, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FUNNEL = "Sampler chain at the picked step"
CURVE = "Smoothing factor curve"


def test_sampling_with_dry_and_a_reordered_chain_draws_the_funnel(page):
    panel = open_tab(page, "Sampling")
    set_number(panel, "min_p", 0.05)
    set_number(panel, "temperature", 0.7)
    panel.get_by_text("Advanced", exact=True).click()
    expect(panel.get_by_role("spinbutton", name="number input for dry_multiplier")).to_be_visible()
    set_number(panel, "dry_multiplier", 0.8)
    order = panel.get_by_role("textbox", name="sampler_order")  # the name also holds the info line
    order.fill("min_p, temperature")
    order.press("Tab")
    generate(panel, max_new_tokens=12, prompt="List the days of the week, then list them again.")
    status = status_of(panel)
    expect(status).to_be_visible()
    assert "Not run" not in status.inner_text(), status.inner_text()
    wait_done(panel)
    summary = wait_for_plot(page, panel, FUNNEL, "s.bars >= 4")
    assert summary["traces"] == 3, summary
    stages = page.evaluate("""(block) => block.querySelector('.js-plotly-plot').data[0].x""",
                           open_figure(panel, FUNNEL).element_handle())
    assert stages[:2] == ["model", "dry"] and stages.index("min_p") < stages.index("top_k")
    assert stages[-1] == "temperature"  # moved to min_p's place, after top_k
    wait_for_plot(page, panel, "Entropy per step", "s.points > 0")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    open_figure(panel, FUNNEL).scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOTS / "sampler_lab.png", full_page=True)


def test_the_new_samplers_show_in_the_funnel_and_the_smoothing_curve(page):
    """The smoothing factor, tail-free sampling, top-a and adaptive-P set in the Advanced accordion: each is a stage of
    the funnel, adaptive-P the last, and the smoothing factor's curve gets a sub-tab of its own. The docs' picture of
    them (``docs/samplers.png``: the funnel above the curve) is taken here."""
    panel = open_tab(page, "Sampling")
    set_number(panel, "top_k", 0)  # the new samplers do the cutting
    panel.get_by_text("Advanced", exact=True).click()
    for name, value in (("smoothing_factor", 0.3), ("tfs", 0.95), ("top_a", 0.1)):
        set_number(panel, name, value)
    target = panel.get_by_role("textbox", name=re.compile(r"^adaptive_target\b"))  # its name runs into its info
    target.fill("0.5")
    target.press("Tab")
    generate(panel, max_new_tokens=12, prompt="Write one sentence about a cat.")
    wait_done(panel)
    wait_for_plot(page, panel, FUNNEL, "s.bars >= 5")
    stages = page.evaluate("""(block) => block.querySelector('.js-plotly-plot').data[0].x""",
                           open_figure(panel, FUNNEL).element_handle())
    assert stages == ["model", "smoothing", "tfs", "top_a", "adaptive_p"], stages
    curve = wait_for_plot(page, panel, CURVE, "s.points > 100")
    assert curve["title"].startswith("Smoothing factor 0.3, curve 1"), curve
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)  # no hover label on the picture
    parts = [SCREENSHOTS / "samplers_funnel.png", SCREENSHOTS / "samplers_curve.png"]
    open_figure(panel, FUNNEL).screenshot(path=parts[0])
    open_figure(panel, CURVE).screenshot(path=parts[1])
    images = [Image.open(p).convert("RGB") for p in parts]
    shot = SCREENSHOTS / "samplers.png"
    joined = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    joined.paste(images[0], (0, 0))
    joined.paste(images[1], (0, images[0].height))
    joined.quantize(colors=128).save(shot, optimize=True)  # a small PNG
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "samplers.png")


def test_the_grammars_cut_shows_in_the_alternatives(page):
    """A regex on the Greedy tab: at the first step the model's favourite words are not a phone number, so they show
    among the alternatives with their probability and "grammar" under removed by."""
    panel = open_tab(page, "Greedy")
    panel.get_by_text("Advanced", exact=True).click()
    regex = panel.get_by_role("textbox", name="regex")  # the name also holds the info line
    regex.fill(r"\(\d{3}\) \d{3}-\d{4}")
    regex.press("Tab")
    generate(panel, max_new_tokens=4, prompt="Give me a phone number.")
    wait_done(panel)
    panel.locator(".dp-token-view .dp-tok[data-step='0']").first.click()
    expect(panel.get_by_role("spinbutton", name="number input for step")).to_have_value("0")
    grid = panel.get_by_role("grid", name="Top alternatives at the picked step")
    expect(grid.get_by_role("row").filter(has_text="grammar").first).to_be_visible()
    expect(grid.get_by_role("row").filter(has_text="★")).to_contain_text("(")  # what the grammar let through
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    grid.scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    shot = SCREENSHOTS / "grammar_cut.png"
    grid.screenshot(path=shot)
    Image.open(shot).convert("RGB").quantize(colors=64).save(shot, optimize=True)  # a small PNG
    if os.environ.get("PLAYGROUND_UPDATE_DOCS"):  # refresh the committed copy only when asked
        shutil.copy(shot, DOCS / "grammar_cut.png")

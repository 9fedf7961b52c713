"""Playwright helpers for the playground's browser tests: Debian's chromium, and widgets found by role
and label (Gradio names a slider's boxes "number input for X" / "range slider for X").

Two things are read from the DOM directly, having no role or label: a plotly figure's data, which lives on its
``.js-plotly-plot`` element inside the block whose label is the figure's label, and whether an event is still pending
on a tab's status line (its progress tracker, ``wait_idle``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
ANY_TEXT = re.compile(r"\S")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_restored(page: Page) -> None:
    """Wait until the page's load has restored its tabs (kept settings, a share link): the app then sets the flag
    ``playground.persist.READY``; before it, the load's updates may still land on what a test set or opened."""
    page.wait_for_function("() => window.__decodingPlaygroundRestored === true")


def open_tab(page: Page, title: str) -> Locator:
    """Select the tab called ``title``; returns its panel (the first visible tabpanel: the figures' sub-tabs are
    tabpanels inside it)."""
    tab = page.get_by_role("tab", name=title, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    return page.get_by_role("tabpanel").first


def set_number(panel: Locator, label: str, value) -> None:
    """Type ``value`` into a slider's number box (or a number field) and commit it."""
    # either name, waited for: a box just rendered (an accordion opened a moment ago) may not be there yet, and
    # counting it then would settle on the wrong name
    box = panel.get_by_role("spinbutton", name=f"number input for {label}").or_(
        panel.get_by_role("spinbutton", name=label, exact=True)).first
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def nudge_slider(panel: Locator, label: str, key: str = "ArrowRight", times: int = 1) -> str:
    """Move a slider with the keyboard, as a user would; returns its new value."""
    slider = panel.get_by_role("slider", name=f"range slider for {label}")
    before = slider.input_value()
    slider.focus()
    for _ in range(times):
        slider.press(key)
    expect(slider).not_to_have_value(before)
    return slider.input_value()


def text_of(panel: Locator, label: str = "Generated text") -> Locator:
    return panel.get_by_role("textbox", name=label, exact=True)


def status_of(panel: Locator) -> Locator:
    """The status line under the buttons (run summary or the reason a run did not start)."""
    return panel.get_by_text(re.compile(r"tokens in .* s|Not run:|Stopped\."))


RUNNING = re.compile(r"\((running|waiting)\)")


def wait_done(panel: Locator) -> Locator:
    """Wait until the tab's runs have all finished (text and status update together, per step) and their event has
    ended (``wait_idle``)."""
    status = status_of(panel)
    expect(status).to_contain_text("tokens in")
    expect(status).not_to_contain_text(RUNNING)
    wait_idle(panel)
    return status


def wait_idle(panel: Locator) -> None:
    """Wait until no event shows progress on the tab's status line. A run's final output comes a message before its
    event ends (a second or more apart on a loaded CPU), and until the end Gradio drops another click of the same
    button (``trigger_mode="once"``) and may still be applying that output to other components: a test that reads
    the page or clicks again on the final status alone passes or fails by timing. The status line's progress tracker
    (Gradio's ``.wrap`` in it) is hidden once every event that shows progress there has ended."""
    expect(panel.locator(".dp-status .wrap").first).to_have_class(re.compile(r"\bhide\b"))


def open_figure(panel: Locator, label: str) -> Locator:
    """Select the figure sub-tab called ``label`` in a strategy tab's ``panel`` (from Gradio's "More tabs" menu where
    the tab bar overflows); returns its panel."""
    tab = panel.get_by_role("tab", name=label, exact=True)
    if tab.count() and tab.first.is_visible():
        tab.click()
        expect(tab).to_have_attribute("aria-selected", "true")
    else:
        panel.get_by_role("button", name="More tabs").first.click()
        panel.locator(".overflow-dropdown").get_by_role("button", name=label, exact=True).click()
    return panel.get_by_role("tabpanel")


def _plot_block(panel: Locator, label: str) -> Locator:
    """The figure ``label``: a strategy tab's figure sub-tab (selected), or a labelled plot (the Branches panel)."""
    if (panel.get_by_role("tab", name=label, exact=True).count()
            or panel.get_by_role("button", name="More tabs").count()):
        return open_figure(panel, label)
    title = panel.get_by_text(label, exact=True)
    return title.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' block ')][1]")


PLOT_SUMMARY = """(block) => {
    const plot = block.querySelector('.js-plotly-plot');
    if (!plot || !plot.data) return null;
    const count = (a) => Array.isArray(a) ? a.length : 0;
    let points = 0, cells = 0;
    for (const t of plot.data) {
        if (t.type === 'heatmap') cells += (t.z || []).flat().filter(v => v !== null && v !== undefined).length;
        else points += Math.max(count(t.x), count(t.y));
    }
    return {traces: plot.data.length, points, cells, types: plot.data.map(t => t.type || 'scatter'),
            markers: block.querySelectorAll('.scatterlayer .point').length,
            bars: block.querySelectorAll('.barlayer .point').length,
            title: (plot.layout && plot.layout.title && (plot.layout.title.text || plot.layout.title)) || ''};
}"""


def plot_summary(panel: Locator, label: str) -> dict | None:
    """What the figure labelled ``label`` draws: traces, points, heatmap cells, rendered markers and bars."""
    return _plot_block(panel, label).evaluate(PLOT_SUMMARY)


def wait_for_plot(page: Page, panel: Locator, label: str, condition: str, timeout: float = 90_000) -> dict:
    """Wait until ``condition`` (a JS expression over ``s``, the summary) holds for the figure ``label``."""
    handle = _plot_block(panel, label).element_handle(timeout=timeout)
    page.wait_for_function(f"(block) => {{ const s = ({PLOT_SUMMARY})(block); return s && ({condition}); }}",
                           arg=handle, timeout=timeout)
    return plot_summary(panel, label)


def wait_until_stable(read, settle_s: float = 1.5, timeout_s: float = 30.0):
    """Wait until ``read()`` returns the same value for ``settle_s`` seconds; returns it. A text that
    stopped growing can only be told apart from a slow one by watching it for a while."""
    deadline = time.monotonic() + timeout_s
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return value
    raise AssertionError(f"value kept changing for {timeout_s} s")


TTFT_PROBE = """(panel, label) => {
    // resolves with the ms from now until the panel's labelled textbox shows a text other than the
    // current one (rejects after two minutes, so that a test fails rather than hangs)
    const box = [...panel.querySelectorAll('label')].find(l => l.textContent.trim().startsWith(label))
        ?.querySelector('textarea');
    const before = box ? box.value : '';
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
        const poll = () => {
            if (box && box.value.trim() && box.value !== before) resolve(performance.now() - t0);
            else if (performance.now() - t0 > 120000) reject(new Error(`no text in ${label}`));
            else requestAnimationFrame(poll);
        };
        requestAnimationFrame(poll);
    });
}"""


def time_to_first_token(page: Page, panel: Locator, text_label: str = "Generated text") -> float:
    """Seconds from the Generate click to the first streamed text in the textbox ``text_label``."""
    panel.evaluate(f"(panel, label) => {{ window.__ttft = ({TTFT_PROBE})(panel, label); }}", text_label)
    panel.get_by_role("button", name="Generate").click()
    return page.evaluate("() => window.__ttft") / 1000.0

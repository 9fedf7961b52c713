"""What a streamed run costs the browser's page: Gradio's page against the mended one (``playground.gradio_patches``),
an update per step against one per frame (``PLAYGROUND_FRAME_MS``).

For each configuration it serves the app in this process (the model is loaded once, for all of them), and drives
Debian's chromium as a visitor touring the playground would: a short Generate in a few tabs, a look at the Config
tab, then one long sampling run, streamed. Per configuration one row:

- tokens/s: what the run's status line reports (the server's side; the page and the model share this machine's cores);
- messages and KB a message: the updates the run's handler sent (each one message) and the bytes the page received
  over them;
- busy: the share of the run's wall time the page's main thread spent in tasks (chromium's ``TaskDuration``);
- timer delay p90 / max: how late a 20 ms timer fired, i.e. how long a click (Stop) waits to be handled.

    python bench/bench_page.py [--tokens 256] [--frames 0,50] [--pages gradio,mended] [--tour greedy,beam,dola]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from playwright.sync_api import expect, sync_playwright  # noqa: E402

import app  # noqa: E402
from browser_helpers import RUNNING, launch_chromium, open_tab, set_number, status_of, wait_done  # noqa: E402
from playground import gradio_patches  # noqa: E402
from playground.tabs import TABS  # noqa: E402
from playground.tabs.base import TabUI  # noqa: E402

TIMER = """() => { window.__lags = []; let last = performance.now();
    const tick = () => { const now = performance.now(); window.__lags.push(now - last - 20); last = now;
                         setTimeout(tick, 20); };
    setTimeout(tick, 20); }"""


def task_seconds(cdp) -> float:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics["TaskDuration"]


def measure(browser, url: str, tokens: int, tour: list[str]) -> dict:
    expect.set_options(timeout=300_000)  # Gradio's page, unmended, falls far behind a long run
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    expect(page.get_by_role("tab", name="Greedy", exact=True)).to_be_visible()
    for key in tour:  # what a visitor has done before: each event leaves loading statuses behind on the page
        panel = open_tab(page, TABS[key].title)
        set_number(panel, "max_new_tokens", 4)
        panel.get_by_role("button", name="Generate").click()
        wait_done(panel)
    open_tab(page, "Config & Share")
    page.wait_for_timeout(1000)
    panel = open_tab(page, TABS["sampling"].title)
    set_number(panel, "max_new_tokens", tokens)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    cdp.send("Network.enable")
    received = {"bytes": 0, "messages": 0}
    cdp.on("Network.dataReceived", lambda e: received.update(bytes=received["bytes"] + e["dataLength"]))
    build = TabUI._outputs  # each update a run handler builds is one message to the page (Gradio streams over fetch)

    def counted(self, *args, **kwargs):
        received["messages"] += 1
        return build(self, *args, **kwargs)

    TabUI._outputs = counted
    page.evaluate(TIMER)
    busy0, t0 = task_seconds(cdp), time.perf_counter()
    panel.get_by_role("button", name="Generate").click()
    expect(status_of(panel)).to_contain_text(RUNNING)
    summary = wait_done(panel).inner_text()
    wall, busy = time.perf_counter() - t0, task_seconds(cdp) - busy0
    TabUI._outputs = build
    lags = sorted(page.evaluate("window.__lags"))
    page.context.close()
    speed = float(summary.split("tokens/s")[0].rsplit("(", 1)[1])
    messages = received["messages"]
    return {"tokens/s": speed, "messages": messages,
            "KB/message": received["bytes"] / 1024 / messages if messages else float("nan"),
            "busy": busy / wall, "p90": lags[int(0.9 * (len(lags) - 1))] if lags else 0.0,
            "max": lags[-1] if lags else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--frames", default="0,50", help="PLAYGROUND_FRAME_MS values, comma-separated")
    parser.add_argument("--pages", default="gradio,mended", help="gradio (as Gradio serves it), mended, or both")
    parser.add_argument("--tour", default="greedy,beam,contrastive,dola,speculative",
                        help="tabs run (4 tokens each) before the measured run")
    args = parser.parse_args()
    frames = [float(f) for f in args.frames.split(",")]
    tour = [k for k in args.tour.split(",") if k]
    mend = gradio_patches.middleware
    rows = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        for page in args.pages.split(","):
            for frame in frames:
                gradio_patches.middleware = mend if page == "mended" else (lambda: [])
                demo = app.build_demo(frame=frame / 1000)
                app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=None)
                try:
                    rows.append((page, frame, measure(browser, demo.local_url, args.tokens, tour)))
                finally:
                    demo.close()
                    gradio_patches.middleware = mend
        browser.close()
    print(f"\n{args.tokens}-token sampling run, after a Generate in {', '.join(tour) or 'no tab'} and the Config tab "
          "opened; one row per page and frame\n")
    print("| page | frame (ms) | tokens/s | messages | KB/message | page busy | timer delay p90 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for page, frame, r in rows:
        print(f"| {page} | {frame:g} | {r['tokens/s']:.1f} | {r['messages']} | {r['KB/message']:.1f} | "
              f"{r['busy']:.0%} | {r['p90']:.0f} | {r['max']:.0f} |")


if __name__ == "__main__":
    main()

"""Time to first token in the browser: click Generate -> the first streamed text is visible.

Serves the app in-process on the embedded model (or ``PLAYGROUND_MODEL``), drives Debian's chromium
with Playwright, and prints one row per tab: the browser-side time (what a user waits) beside the
server-side time to the first ``StreamEvent`` the status line reports (what the core waits).

    python bench/bench_ttft.py [--runs 5] [--max-new-tokens 16] [--tabs greedy,sampling,beam]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from playwright.sync_api import expect, sync_playwright  # noqa: E402

import app  # noqa: E402
from browser_helpers import (launch_chromium, open_tab, set_number, status_of, time_to_first_token,  # noqa: E402
                             wait_done)
from playground.tabs import TABS  # noqa: E402

DEFAULT_TABS = "greedy,sampling,beam,contrastive,dola,speculative"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--tabs", default=DEFAULT_TABS)
    args = parser.parse_args()

    demo = app.build_demo(os.environ.get(app.MODEL_ENV) or None)
    app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=None)
    expect.set_options(timeout=120_000)
    rows = []
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(demo.local_url)
            for key in args.tabs.split(","):
                panel = open_tab(page, TABS[key].title)
                set_number(panel, "max_new_tokens", args.max_new_tokens)
                label = TABS[key].text_labels[0]
                browser_s, server_s = [], []
                for _ in range(args.runs):
                    browser_s.append(time_to_first_token(page, panel, label))
                    wait_done(panel)
                    first = re.search(r"first token ([\d.]+) s", status_of(panel).inner_text())
                    server_s.append(float(first.group(1)) if first else float("nan"))
                rows.append((key, browser_s, server_s))
            browser.close()
    finally:
        demo.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nmodel {demo.startup_model}, max_new_tokens {args.max_new_tokens}, {args.runs} runs per tab, "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'tab':<14}{'browser median s':>18}{'browser min s':>15}{'server median s':>17}")
    for key, browser_s, server_s in rows:
        print(f"{key:<14}{median(browser_s):>18.2f}{min(browser_s):>15.2f}{median(server_s):>17.2f}")


if __name__ == "__main__":
    main()

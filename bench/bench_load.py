"""Many visitors at once: ``python app.py`` in a child process, N concurrent ``gradio_client`` sessions over R rounds
across the seeded tabs, every run checked against the same call made alone.

    python bench/bench_load.py [--sessions 8] [--rounds 25] [--tokens 16] [--ended 32]

Phases, all against one server process:
1. solo: one session runs every (tab, seed) the load will use, alone: the reference texts;
2. warm-up: ``--sessions`` clients at once, one run each (the server's worker threads and heap reach their working
   size), then the server's RSS (``/proc/<pid>/status``);
3. load: ``--sessions`` new clients at once, each ``--rounds`` runs, tab and seed varying per round; latency is
   submit -> final result (queue wait included), tokens/s per session is its new tokens over its busy time; the
   server's RSS is sampled every second meanwhile (its peak is reported);
4. the load's clients close (their sessions end: Gradio's unload), then ``--ended`` one-run sessions that close
   again; the server's RSS after each.
Prints one table row; absolute numbers move with the machine's load, the equal-to-solo count and the RSS growth
are what to read.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Write one sentence about the sea."
TABS = {  # the seeded tabs, with settings that keep each run short
    "sampling": dict(temperature=1.0, top_k=50, top_p=0.95),
    "beam_sample": dict(num_beams=3, temperature=1.0, top_k=50),
}
SEEDS = (0, 1, 2, 3)
TOKENS_RE = re.compile(r"\): (\d+) tokens in ([\d.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(port: int, slots: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "PLAYGROUND_SLOTS": str(slots),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # drain its output
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("the app did not start within 300 s")


class Visitor:
    """One session (a gradio_client), its runs and their timings."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False)
        self.latencies: list[float] = []
        self.tokens = 0
        self.busy_s = 0.0
        self.results: list[tuple[str, int, str]] = []  # (tab, seed, text)

    def run(self, tab: str, seed: int, tokens: int) -> str:
        started = time.perf_counter()
        job = self.client.submit(api_name=f"/{tab}_generate", prompt=PROMPT, seed=seed, max_new_tokens=tokens,
                                 **TABS[tab])
        out = job.result(timeout=600)
        elapsed = time.perf_counter() - started
        text, status = out[0], out[1]
        self.latencies.append(elapsed)
        self.busy_s += elapsed
        match = TOKENS_RE.search(status)
        self.tokens += int(match.group(1)) if match else 0
        self.results.append((tab, seed, text))
        return text

    def close(self) -> None:
        self.client.close()


def plan(session: int, rounds: int) -> list[tuple[str, int]]:
    """The (tab, seed) of each round of a session: every session walks the tabs and seeds in its own order."""
    tabs = list(TABS)
    return [(tabs[(session + r) % len(tabs)], SEEDS[(session * 3 + r) % len(SEEDS)]) for r in range(rounds)]


def concurrently(visitors: list[Visitor], work) -> None:
    """``work(i)`` for every visitor at once, each in its own thread; re-raises the first error."""
    start = threading.Barrier(len(visitors))
    errors: list[BaseException] = []

    def visit(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as err:  # re-raised below
            errors.append(err)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(visitors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def settle(pid: int, seconds: float) -> float:
    """Wait for ended sessions to be let go (Gradio's unload), then the server's RSS."""
    time.sleep(seconds)
    return rss_mb(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--ended", type=int, default=32, help="one-run sessions opened and closed after the load")
    parser.add_argument("--slots", type=int, default=2, help="PLAYGROUND_SLOTS of the server")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait for ended sessions to go")
    args = parser.parse_args()

    port = free_port()
    server = start_server(port, args.slots)
    url = f"http://127.0.0.1:{port}/"
    try:
        # 1. solo references
        solo_visitor = Visitor(url)
        solo = {(tab, seed): solo_visitor.run(tab, seed, args.tokens) for tab in TABS for seed in SEEDS}
        solo_visitor.close()
        # 2. warm-up: every session at once, one run each, then the baseline RSS
        warm = [Visitor(url) for _ in range(args.sessions)]
        concurrently(warm, lambda i: warm[i].run(*plan(i, 1)[0], args.tokens))
        for v in warm:
            v.close()
        rss_warm = settle(server.pid, args.settle)

        # 3. the load, the server's RSS sampled meanwhile
        visitors = [Visitor(url) for _ in range(args.sessions)]
        samples: list[float] = []
        loading = threading.Event()
        loading.set()

        def sample_rss() -> None:
            while loading.is_set():
                samples.append(rss_mb(server.pid))
                time.sleep(1)

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        began = time.perf_counter()
        concurrently(visitors, lambda i: [visitors[i].run(tab, seed, args.tokens) for tab, seed in plan(i, args.rounds)])
        wall = time.perf_counter() - began
        loading.clear()
        sampler.join()
        rss_loaded = rss_mb(server.pid)
        for v in visitors:
            v.close()
        rss_after = settle(server.pid, args.settle)

        # 4. sessions that run once and end
        for _ in range(args.ended):
            v = Visitor(url)
            v.run("sampling", SEEDS[0], args.tokens)
            v.close()
        rss_ended = settle(server.pid, args.settle)
    finally:
        server.terminate()
        server.wait(timeout=30)

    results = [r for v in visitors for r in v.results]
    equal = sum(text == solo[(tab, seed)] for tab, seed, text in results)
    latencies = sorted(x for v in visitors for x in v.latencies)
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    per_session = [v.tokens / v.busy_s for v in visitors if v.busy_s]
    print(f"python bench/bench_load.py --sessions {args.sessions} --rounds {args.rounds} --tokens {args.tokens} "
          f"--ended {args.ended} --slots {args.slots}: tabs {', '.join(TABS)}, seeds {list(SEEDS)}, "
          f"{wall:.0f} s under load")
    print()
    print("| sessions | runs | equal to solo | p50 latency | p95 latency | tokens/s per session | RSS after warm-up "
          "| peak RSS under load | RSS after the load | RSS after its sessions ended | RSS after "
          f"{args.ended} one-run sessions | growth |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.sessions} | {len(results)} | {equal}/{len(results)} | {statistics.median(latencies):.1f} s "
          f"| {p95:.1f} s | {statistics.median(per_session):.1f} | {rss_warm:.0f} MB | {max(samples):.0f} MB "
          f"| {rss_loaded:.0f} MB | {rss_after:.0f} MB | {rss_ended:.0f} MB | {rss_ended - rss_warm:+.0f} MB |")
    quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)] for q in (1, 2, 3, 4)]
    print(f"\nRSS under load at 1/4, 1/2, 3/4 and the end of it: {', '.join(f'{q:.0f} MB' for q in quarters)}")
    mismatched = [(tab, seed) for tab, seed, text in results if text != solo[(tab, seed)]]
    if mismatched:
        print(f"\nnot equal to their solo run: {sorted(set(mismatched))}")


if __name__ == "__main__":
    main()

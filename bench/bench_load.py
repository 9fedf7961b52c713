"""Every visitor at the core's speed: the core in-process, then ``python app.py`` in a child process under 1, 8 and 16
concurrent ``gradio_client`` sessions, every seeded run checked against the same call made alone.

    python bench/bench_load.py [--visitors 8,16] [--rounds 3] [--tokens 32] [--ended 32] [--dtype float32]
                               [--switch-ms 5,1] [--engine 1,0] [--exact 1,0] [--vllm auto]

Phases (one run of this script prints them all; absolute numbers move with the machine's load, read the ratios):
1. core, in this process, on the app's model and precision with the app's torch threads, interleaved: tokens/s of
   ``core.generate`` with a ``ListRecorder`` and of ``core.stream`` (what the app iterates);
2. the app, one visitor: ``/greedy_generate`` runs one after another; tokens/s is the status line's own (server-side)
   figure; its ratio to ``core.generate`` is what the serving path costs;
3. solo references: one session runs every (tab, seed) the load will use, alone;
4. for each ``--visitors`` N: N sessions at once, ``--rounds`` runs each, tab and seed varying per run: the total
   new tokens over the wall time of the round, its ratio to one visitor's tokens/s, p50/p95 latency (submit -> final
   result, queue wait included) and time to first token (submit -> the first streamed output reaches the client),
   the server's peak RSS;
5. the load's clients close (their sessions end: Gradio's unload), then ``--ended`` one-run sessions that close
   again; RSS growth is the server's RSS then against right after the warm-up, the page's process and the engine's
   (``PLAYGROUND_ENGINE_PROCESS=1``) each;
6. where ``.venv-engine`` holds vLLM (``--vllm auto``), vLLM's CPU build on the same model in float32, 1 and each
   ``--visitors`` N concurrent completions of ``--tokens`` tokens with 5 logprobs each: the anchor beside the app.

``--engine 1,0`` measures one server with the engine process and one without, one after the other; ``--exact 1,0``
one whose engine keeps every row's solo bits (``PLAYGROUND_EXACT_BATCH=1``) and one that batches linears plainly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPT = "Write one sentence about the sea."
TABS = {  # the seeded tabs (and greedy), with settings that keep each run's length fixed by max_new_tokens
    "greedy": dict(),
    "sampling": dict(temperature=1.0, top_k=50, top_p=0.95),
    "beam_sample": dict(num_beams=4, temperature=1.0, top_k=50),  # the tab's own num_beams
}
SEEDS = (0, 1, 2, 3)
TOKENS_RE = re.compile(r"\): (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the app's engine process)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def tree_rss(pid: int) -> tuple[float, float]:
    """RSS of the page's process and of its children (the engine's, 0 without one), in MB."""
    engines = 0.0
    for child in children(pid):
        try:
            engines += rss_mb(child)
        except (OSError, RuntimeError):  # ended meanwhile
            pass
    return rss_mb(pid), engines


def start_server(port: int, slots: int, dtype: str, shared: bool, switch_ms: str = "",
                 engine: str = "1", exact: str = "1") -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "PLAYGROUND_SLOTS": str(slots), "PLAYGROUND_QUEUE": "64",
           "PLAYGROUND_DTYPE": dtype, "PLAYGROUND_SHARED_FORWARD": "1" if shared else "0",
           "PLAYGROUND_ENGINE_PROCESS": engine, "PLAYGROUND_EXACT_BATCH": exact, "GRADIO_ANALYTICS_ENABLED": "False"}
    if switch_ms:
        env["PLAYGROUND_SWITCH_MS"] = switch_ms
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    said: list[str] = []  # its output, drained (the last lines kept for an error)
    threading.Thread(target=lambda: [said.append(line) for line in server.stdout], daemon=True).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            time.sleep(0.5)
            raise RuntimeError(f"the app exited with {server.returncode}: {''.join(said[-15:])}")
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
        self.first: list[float] = []
        self.tokens = 0
        self.server_rates: list[float] = []
        self.results: list[tuple[str, int, str]] = []  # (tab, seed, text)

    def run(self, tab: str, seed: int, tokens: int) -> str:
        started = time.perf_counter()
        job = self.client.submit(api_name=f"/{tab}_generate", prompt=PROMPT, seed=seed, max_new_tokens=tokens,
                                 **TABS[tab])
        first = None
        while not job.done():
            if first is None and job.outputs():
                first = time.perf_counter() - started
            time.sleep(0.05)  # the clients share the server's cores: poll gently
        out = job.result(timeout=600)
        elapsed = time.perf_counter() - started
        text, status = out[0], out[1]
        self.latencies.append(elapsed)
        self.first.append(first if first is not None else elapsed)
        match = TOKENS_RE.search(status)
        if match:
            self.tokens += int(match.group(1))
            self.server_rates.append(float(match.group(3)))
        self.results.append((tab, seed, text))
        return text

    def close(self) -> None:
        self.client.close()


class EventBytes:
    """The bytes of each streamed message the clients receive (Gradio sends each output as a diff against the last):
    ``gradio_client`` parses every SSE message with ``json.loads``, and this counts what it parses meanwhile."""

    def __init__(self):
        self.sizes: dict[str, list[int]] = {}

    def __enter__(self):
        import gradio_client.client as gc

        self.module, self.json = gc, gc.json
        sizes = self.sizes

        class Counting:
            def __getattr__(self, name):
                return getattr(json, name)

            @staticmethod
            def loads(text, *args, **kwargs):
                value = json.loads(text, *args, **kwargs)
                if isinstance(value, dict) and value.get("msg") in ("process_generating", "process_completed"):
                    sizes.setdefault(value["msg"], []).append(len(text.encode() if isinstance(text, str) else text))
                return value

        gc.json = Counting()
        return self

    def __exit__(self, *exc):
        self.module.json = self.json


def plan(session: int, rounds: int) -> list[tuple[str, int]]:
    """The (tab, seed) of each round of a session: every session walks the tabs and seeds in its own order."""
    tabs = list(TABS)
    return [(tabs[(session + r) % len(tabs)], SEEDS[(session * 3 + r) % len(SEEDS)]) for r in range(rounds)]


def concurrently(n: int, work) -> None:
    """``work(i)`` for i < n at once, each in its own thread; re-raises the first error."""
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def visit(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as err:  # re-raised below
            errors.append(err)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def core_speeds(dtype: str, tokens: int, threads: int, repeats: int = 3) -> tuple[float, float]:
    """Median tokens/s of ``core.generate`` (ListRecorder) and ``core.stream`` on the app's model, interleaved."""
    import torch

    import core
    from core.models import DEFAULT_NAME

    torch.set_num_threads(threads)
    lm = core.load_model(os.environ.get("PLAYGROUND_MODEL") or DEFAULT_NAME, dtype=dtype)
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    settings = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, tokenizer=lm.tokenizer)

    def generate():
        core.generate(lm.model, ids, recorder=core.ListRecorder(), **settings)

    def stream():
        for _ in core.stream(lm.model, ids, **settings):
            pass

    rates: dict[str, list[float]] = {"generate": [], "stream": []}
    generate()
    for _ in range(repeats):
        for name, fn in (("generate", generate), ("stream", stream)):
            t0 = time.perf_counter()
            fn()
            rates[name].append(tokens / (time.perf_counter() - t0))
    return statistics.median(rates["generate"]), statistics.median(rates["stream"])


@dataclass
class Served:
    """What one server (one ``--switch-ms`` value) measured: one visitor, the solo references, the loads, RSS."""

    switch_ms: str
    engine: str = "1"
    exact: str = "1"
    app_rate: float = 0.0
    one_client_rate: float = 0.0
    streamed: list[int] = field(default_factory=list)
    final_bytes: int = 0
    solo: dict = field(default_factory=dict)
    loads: list = field(default_factory=list)  # (visitors, their Visitor objects, wall time, peak RSS)
    rss: tuple = ((0.0, 0.0),) * 3  # (page, engine) after the warm-up, after the load, after the ended sessions


def serve(args, counts: list[int], switch_ms: str, engine: str, exact: str = "1") -> Served:
    """Phases 2-5 on one server started with ``PLAYGROUND_SWITCH_MS=switch_ms`` and
    ``PLAYGROUND_ENGINE_PROCESS=engine``."""
    got = Served(switch_ms, engine, exact)
    port = free_port()
    server = start_server(port, args.slots, args.dtype, not args.alone, switch_ms, engine, exact)
    url = f"http://127.0.0.1:{port}/"
    try:
        # 2. one visitor, greedy, one run after another
        one = Visitor(url)
        one.run("greedy", 0, args.tokens)  # warm
        one.server_rates.clear()
        t0 = time.perf_counter()
        one_tokens = 0
        for _ in range(3):
            before = one.tokens
            one.run("greedy", 0, args.tokens)
            one_tokens += one.tokens - before
        got.one_client_rate = one_tokens / (time.perf_counter() - t0)
        got.app_rate = statistics.median(one.server_rates)
        with EventBytes() as sent:  # one more run, its messages counted
            one.run("greedy", 0, args.tokens)
        got.streamed = sent.sizes.get("process_generating", [])
        got.final_bytes = sum(sent.sizes.get("process_completed", [0]))
        # 3. solo references
        got.solo = {(tab, seed): one.run(tab, seed, args.tokens) for tab in TABS for seed in SEEDS}
        one.close()
        rss_warm = None
        for n in counts:
            visitors = [Visitor(url) for _ in range(n)]
            concurrently(n, lambda i: visitors[i].run(*plan(i, 1)[0], args.tokens))  # warm-up round
            for v in visitors:  # the warm-up round does not count
                v.latencies.clear()
                v.first.clear()
                v.results.clear()
                v.tokens = 0
            if rss_warm is None:
                rss_warm = tree_rss(server.pid)
            samples: list[float] = []
            loading = threading.Event()
            loading.set()

            def sample_rss() -> None:
                while loading.is_set():
                    samples.append(sum(tree_rss(server.pid)))
                    time.sleep(1)

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            began = time.perf_counter()
            concurrently(n, lambda i: [visitors[i].run(t, s, args.tokens) for t, s in plan(i + 1, args.rounds)])
            wall = time.perf_counter() - began
            loading.clear()
            sampler.join()
            for v in visitors:
                v.close()
            got.loads.append((n, visitors, wall, max(samples)))
        if rss_warm is None:  # no load phase
            rss_warm = tree_rss(server.pid)
        rss_after = settle(server.pid, args.settle)
        for _ in range(args.ended):
            v = Visitor(url)
            v.run("sampling", SEEDS[0], args.tokens)
            v.close()
        got.rss = (rss_warm, rss_after, settle(server.pid, args.settle))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", default="8,16", help="concurrent sessions per load phase")
    parser.add_argument("--rounds", type=int, default=3, help="runs per session in each load phase")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--ended", type=int, default=32, help="one-run sessions opened and closed after the load")
    parser.add_argument("--slots", type=int, default=16, help="PLAYGROUND_SLOTS of the server")
    parser.add_argument("--dtype", default="float32", help="PLAYGROUND_DTYPE of the server")
    parser.add_argument("--alone", action="store_true", help="PLAYGROUND_SHARED_FORWARD=0: each run by itself")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait for ended sessions to go")
    parser.add_argument("--engine", default="1", help="PLAYGROUND_ENGINE_PROCESS of the server; 1,0 measures both")
    parser.add_argument("--exact", default="1", help="PLAYGROUND_EXACT_BATCH of an engine server; 1,0 measures both")
    parser.add_argument("--vllm", default="auto", help="auto: vLLM beside the app where .venv-engine has it; off")
    parser.add_argument("--switch-ms", default="", help="PLAYGROUND_SWITCH_MS of the server (the app's default if "
                        "empty); several, comma-separated, measure one server each, one after another")
    args = parser.parse_args()
    counts = [int(n) for n in args.visitors.split(",") if n.strip()]

    from playground.policy import switch_interval, torch_threads

    threads = int(os.environ.get("PLAYGROUND_THREADS") or torch_threads())
    core_rate, stream_rate = core_speeds(args.dtype, args.tokens, threads)
    switches = [v.strip() for v in args.switch_ms.split(",")] if args.switch_ms else [""]
    engines = [v.strip() for v in args.engine.split(",")]
    exacts = [v.strip() for v in args.exact.split(",")]
    served = [serve(args, counts, switch, engine, exact) for switch in switches for engine in engines
              for exact in (exacts if engine == "1" else ["1"])]

    def named(got: Served) -> str:
        switch = f"{got.switch_ms} ms" if got.switch_ms else f"{switch_interval() * 1000:g} ms"
        where = ("engine process" + ("" if got.exact == "1" else ", plain linears")) if got.engine == "1" \
            else "in the page"
        return f"{where}, switch {switch}"

    print(f"python bench/bench_load.py --visitors {args.visitors} --rounds {args.rounds} --tokens {args.tokens} "
          f"--ended {args.ended} --slots {args.slots} --dtype {args.dtype}{' --alone' if args.alone else ''}"
          f"{' --switch-ms ' + args.switch_ms if args.switch_ms else ''}: "
          f"{os.environ.get('PLAYGROUND_MODEL') or 'embedded model'}, {threads} torch thread(s), "
          f"forwards {'each run alone' if args.alone else 'shared'}, tabs {', '.join(TABS)}, seeds {list(SEEDS)}")
    print()
    print("| path | server | tokens/s | ratio | target |")
    print("|---|---|---:|---:|---|")
    print(f"| `core.generate` (ListRecorder) | | {core_rate:.1f} | 1.00x | |")
    print(f"| `core.stream` | | {stream_rate:.1f} | {stream_rate / core_rate:.2f}x core | >= 0.95x |")
    for got in served:
        print(f"| the app, one visitor (status line, server-side) | {named(got)} | {got.app_rate:.1f} "
              f"| {got.app_rate / core_rate:.2f}x core | >= 0.9x |")
        print(f"| the app, one visitor (client: tokens / wall time) | {named(got)} "
              f"| {got.one_client_rate:.1f} | {got.one_client_rate / core_rate:.2f}x core | |")
    for got in served:
        if got.streamed:
            print(f"\nbytes per streamed event ({named(got)}; one greedy run of {args.tokens} tokens): "
                  f"{len(got.streamed)} events, mean {statistics.mean(got.streamed):.0f} B, median "
                  f"{statistics.median(got.streamed):.0f} B, max {max(got.streamed)} B; the final message "
                  f"{got.final_bytes} B")
    print()
    print("| visitors | server | runs | total tokens/s | / one visitor | p50 latency | p95 latency "
          "| p50 first token | p95 first token | equal to solo | peak RSS |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    mismatched = set()
    for got in served:
        for n, visitors, wall, peak in got.loads:
            results = [r for v in visitors for r in v.results]
            equal = sum(text == got.solo[(tab, seed)] for tab, seed, text in results)
            mismatched |= {(tab, seed) for tab, seed, text in results if text != got.solo[(tab, seed)]}
            latencies = [x for v in visitors for x in v.latencies]
            first = [x for v in visitors for x in v.first]
            total = sum(v.tokens for v in visitors) / wall
            print(f"| {n} | {named(got)} | {len(results)} | {total:.1f} | {total / got.app_rate:.2f}x "
                  f"| {statistics.median(latencies):.1f} s | {percentile(latencies, 0.95):.1f} s "
                  f"| {statistics.median(first):.2f} s | {percentile(first, 0.95):.2f} s | {equal}/{len(results)} "
                  f"| {peak:.0f} MB |")
    try:  # after the app's tables: a vLLM that fails to start loses none of them
        anchor = vllm_rates(counts, args.tokens) if args.vllm == "auto" else {}
    except Exception as err:  # noqa: BLE001 - said, and the rest printed
        print(f"\nvLLM beside it: not measured ({type(err).__name__}: {err})")
        anchor = {}
    if anchor:
        one = anchor[1]
        print(f"\nvLLM's CPU build beside it (float32, {args.tokens} tokens, 5 logprobs, concurrent completions):")
        print("\n| requests | total tokens/s | / one request | the app's total / vLLM's |")
        print("|---:|---:|---:|---:|")
        app_totals = {n: sum(v.tokens for v in vs) / wall for n, vs, wall, _ in served[0].loads}
        for n, rate in anchor.items():
            ours = f"{app_totals[n] / rate:.2f}x" if n in app_totals else ""
            print(f"| {n} | {rate:.1f} | {rate / one:.2f}x | {ours} |")
    print()
    for got in served:
        for name, i in (("page", 0), ("engine", 1)):
            warm, after, ended = (r[i] for r in got.rss)
            if warm or ended:
                print(f"RSS of the {name} process ({named(got)}): {warm:.0f} MB after the first warm-up, {after:.0f} "
                      f"MB after the load's sessions ended, {ended:.0f} MB after {args.ended} one-run sessions: "
                      f"growth {ended - warm:+.0f} MB (target <= 40 MB)")
    if mismatched:
        print(f"\nnot equal to their solo run: {sorted(mismatched)}")


def settle(pid: int, seconds: float) -> tuple[float, float]:
    """Wait for ended sessions to be let go (Gradio's unload), then the RSS of the page's process and the engine's."""
    time.sleep(seconds)
    return tree_rss(pid)


def vllm_rates(counts: list[int], tokens: int) -> dict[int, float]:
    """vLLM's CPU build (``.venv-engine``) on the embedded model in float32: total tokens/s of 1 and of each count of
    concurrent completions (``tokens`` tokens each, 5 logprobs, EOS ignored), the median of 2 rounds. {} without it."""
    from core.remote import client, serve as vllm

    if not vllm.ENGINE_PYTHON.exists():
        return {}
    import tempfile

    port = vllm.free_port()
    log = Path(tempfile.mkdtemp()) / "vllm.log"
    proc = vllm.start(vllm.model_dir(), port, log)
    server = client.Server(f"http://127.0.0.1:{port}/v1")
    rates: dict[int, float] = {}
    try:
        vllm.wait_ready(server, proc, log, timeout_s=600)
        (model,) = client.models(server)
        request = {"model": model, "prompt": PROMPT, "max_tokens": tokens, "min_tokens": tokens, "logprobs": 5,
                   "ignore_eos": True, "temperature": 1.0, "seed": 0}

        def one(i: int) -> None:
            client.post(server, "/v1/completions", {**request, "seed": i}, timeout=600)

        one(0)  # warm
        for n in [1, *counts]:
            walls = []
            for _ in range(2):
                began = time.perf_counter()
                concurrently(n, one)
                walls.append(time.perf_counter() - began)
            rates[n] = n * tokens / statistics.median(walls)
    finally:
        vllm.stop(proc)
    return rates


if __name__ == "__main__":
    main()

"""The core alone, many runs at once: N seeded sampling streams (``core.stream``, ``top_n=10``, what a tab records) on
the embedded model, served three ways side by side, no page:

- ``threads``: a worker thread per run, its decode steps batched by ``core.scheduler.StepScheduler`` (the app before
  ``core.engine``);
- ``loop``: every run a greenlet of ``core.engine.EngineLoop``'s one thread;
- ``loop, plain``: the same with ``exact=False`` (plain batched linear layers: no solo bits promised);
- ``alone``: one stream, no scheduler: the reference each total is divided by.

    python bench/bench_engine.py [--streams 1,8,16] [--tokens 48] [--dtype float32,bfloat16] [--threads 1,2]
                                 [--rounds 2]

Each (precision, threads) pair runs every way once per round, interleaved, and the median round is printed: total
new tokens over the wall time from the first submit to the last token, and its ratio to ``alone``. Every stream's
tokens are checked against the same seeded stream run alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core.engine import EngineLoop  # noqa: E402
from core.rng import new_generator  # noqa: E402
from core.scheduler import StepScheduler  # noqa: E402

PROMPT = "Write one sentence about the sea."
SETTINGS = dict(do_sample=True, temperature=1.0, top_k=50, top_p=0.95)


def streams(lm, ids, n: int, tokens: int, way: str, server, first_seed: int = 0) -> tuple[float, list[list[int]]]:
    """Wall time of ``n`` seeded streams started at once (seeds ``first_seed`` on), and each stream's tokens."""
    out: list[list[int]] = [[] for _ in range(n)]

    def one(i: int) -> None:
        kwargs = dict(engine=server) if way.startswith("loop") else dict(scheduler=server)
        generator = new_generator(first_seed + i)
        for event in core.stream(lm.model, ids, tokenizer=lm.tokenizer, top_n=10, generator=generator,
                                 max_new_tokens=tokens, min_new_tokens=tokens, **SETTINGS, **kwargs):
            out[i] = event.tokens[0]

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,8,16")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    print(f"{args.tokens} new tokens per stream, top_n=10, seeded sampling; median of {args.rounds} rounds\n")
    print("| precision | threads | streams | way | total tokens/s | vs one stream alone | equal to solo |")
    print("|---|---:|---:|---|---:|---:|---|")
    for dtype in args.dtype.split(","):
        lm = core.load_model(dtype=dtype)
        ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            solo = {i: streams(lm, ids, 1, args.tokens, "alone", None, i)[1][0] for i in range(max(counts))}
            rates: dict[tuple[int, str], list[float]] = {}
            equal: dict[tuple[int, str], bool] = {}
            for _ in range(args.rounds):
                for n in counts:
                    for way in ("alone", "threads", "loop") if n == 1 else ("threads", "loop", "loop, plain"):
                        server = {"alone": None, "threads": StepScheduler(lm.model), "loop": EngineLoop(),
                                  "loop, plain": EngineLoop(exact=False)}[way]
                        wall, out = streams(lm, ids, n, args.tokens, way, server)
                        rates.setdefault((n, way), []).append(n * args.tokens / wall)
                        equal[(n, way)] = equal.get((n, way), True) and all(out[i] == solo[i] for i in range(n))
            alone = statistics.median(rates[(1, "alone")])
            for (n, way), values in rates.items():
                rate = statistics.median(values)
                print(f"| {dtype} | {threads} | {n} | {way} | {rate:.1f} | {rate / alone:.2f}x | "
                      f"{'yes' if equal[(n, way)] else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()

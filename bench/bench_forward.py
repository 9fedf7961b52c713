"""What one decoding step's forward costs on the embedded model, by rows and precision: the numbers behind the
ported strategies' ratios to greedy in ``bench_core.py``.

Greedy search runs the model on one row per step, LM head included; contrastive search runs the body on ``top_k``
rows (its candidates, hidden states returned, no logits) and the head on the chosen row only. Where a forward is
bound by reading the weights, more rows cost little; where it is bound by computing, they cost up to ``top_k``
times the body's arithmetic. One forward per row count and precision, on a 60-token cache, interleaved, median:

    python bench/bench_forward.py [--rows 1,4] [--dtype float32,bfloat16] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core.lens import no_logits  # noqa: E402

CONTEXT = 60  # tokens already in the cache


def step_ms(model, rows: int, head: bool, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` one-token forwards of ``rows`` rows against a ``CONTEXT``-token cache (the new
    entry dropped after each), with the LM head on every row or on none (hidden states returned, as contrastive
    search asks)."""
    from transformers import DynamicCache

    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 1000, (rows, CONTEXT), generator=generator)
    token = torch.randint(100, 1000, (rows, 1), generator=generator)
    cache = DynamicCache()
    extra = {} if head else {"logits_to_keep": no_logits("cpu"), "output_hidden_states": True}
    times = []
    with torch.no_grad():
        model(prompt, cache=cache, use_cache=True)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(token, cache=cache, use_cache=True, **extra)
            times.append((time.perf_counter() - t0) * 1000)
            cache.crop(-1)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,4", help="comma-separated row counts (contrastive's top_k)")
    parser.add_argument("--dtype", default="float32,bfloat16", help="comma-separated precisions")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [int(r) for r in args.rows.split(",")]
    models = {d: core.load_model(None, dtype=d).model for d in args.dtype.split(",")}
    cases = [(d, r, head) for d in models for r in rows for head in (True, False)]
    times: dict[tuple, list[float]] = {case: [] for case in cases}
    for case in cases:  # warm-up
        step_ms(models[case[0]], case[1], case[2], 2)
    for _ in range(3):  # rounds, each case in turn, so the machine's load hits them alike
        for case in cases:
            times[case] += step_ms(models[case[0]], case[1], case[2], args.repeats)
    print(f"\none forward step on a {CONTEXT}-token cache, median of {3 * args.repeats}, torch {torch.__version__} "
          f"on {torch.get_num_threads()} threads\n")
    print("| dtype | rows | head | ms per step | vs 1 row with head |")
    print("|---|---:|---|---:|---:|")
    for d, r, head in cases:
        ms = statistics.median(times[(d, r, head)])
        base = statistics.median(times[(d, 1, True)]) if 1 in rows else None
        ratio = f"{ms / base:.2f}x" if base else "-"
        print(f"| {d} | {r} | {'every row' if head else 'none (hidden states)'} | {ms:.1f} | {ratio} |")


if __name__ == "__main__":
    main()

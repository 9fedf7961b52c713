"""What keeping every row's solo bits costs in the linear layers of one batched decode step, by the runs' row counts:
every linear layer of the embedded model over the rows of a step, side by side, four ways:

- ``plain``: one ``F.linear`` over every row (no solo bits promised: ``PLAYGROUND_EXACT_BATCH=0``);
- ``exact``: ``core.batching.RowExactLinear`` with ``probe``'s answer: the runs of ``shared_from`` rows or more in one
  plain product, the 1-row runs in one pass of 1-row products (``row_exact_linear``), any other run its own product;
- ``each alone``: each run's own product, one after another (what the step costs with no batching at all);
- ``one row``: a single 1-row step, the unit the table divides by.

    python bench/bench_linears.py [--dtype float32] [--threads 1] [--repeats 5]

It also prints ``probe``'s answer for the model here, and checks that ``exact`` gives every run the bits of its own
product.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core import batching  # noqa: E402

MIXES = {  # the runs' rows in one step
    "8 one-row runs (greedy, sampling)": [1] * 8,
    "6 one-row runs, 2 beams of 4": [1, 1, 4, 1, 4, 1, 1, 1],
    "6 one-row runs, 2 beams of 3": [1, 1, 3, 1, 3, 1, 1, 1],
    "4 beams of 4": [4] * 4,
    "16 one-row runs": [1] * 16,
}


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = core.load_model(None, dtype=args.dtype).model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    linears = batching.probe(model)
    print(f"python bench/bench_linears.py --dtype {args.dtype} --threads {args.threads} --repeats {args.repeats}")
    print(f"\nprobe: {linears}; every linear layer of the embedded model ({len(layers)}), median of {args.repeats}\n")
    gen = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(64, 1, k, generator=gen).to(model.dtype) for k in {m.in_features for m in layers}}
    with torch.no_grad():
        one = timed(lambda: [F.linear(inputs[m.in_features][:1], m.weight) for m in layers], args.repeats)
        print("| runs in the step | rows | plain | exact | each alone | exact / plain |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, sizes in MIXES.items():
            rows = sum(sizes)
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            mode = batching.RowExactLinear(sizes, linears) if not linears.plain else None

            def exact():
                if mode is None:
                    return [F.linear(inputs[m.in_features][:rows], m.weight) for m in layers]
                with mode:
                    return [F.linear(inputs[m.in_features][:rows], m.weight) for m in layers]

            def alone():
                return [[F.linear(inputs[m.in_features][a:a + n], m.weight) for a, n in zip(starts, sizes)]
                        for m in layers]

            for got, own in zip(exact(), alone()):  # every run keeps the bits of its own product
                assert all(torch.equal(got[a:a + n], o) for a, n, o in zip(starts, sizes, own)), name
            plain = timed(lambda: [F.linear(inputs[m.in_features][:rows], m.weight) for m in layers], args.repeats)
            ex, al = timed(exact, args.repeats), timed(alone, args.repeats)
            print(f"| {name} | {rows} | {plain / one:.2f} | {ex / one:.2f} | {al / one:.2f} | {ex / plain:.2f}x |")
    print(f"\nin units of one 1-row step's linears ({one:.1f} ms here)")


if __name__ == "__main__":
    main()

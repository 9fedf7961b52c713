"""How often a run under load differs from the same run alone: ``--runs`` seeded runs of mixed strategies (greedy,
sampling with warpers, sampling with penalties and DRY, beam search, beam sampling), ``--concurrent`` at a time
through one ``core.scheduler.StepScheduler``, each compared token for token with the same call made alone.

    python bench/bench_equal.py [--runs 1000] [--concurrent 8] [--tokens 16] [--model tiny|embedded]
                                [--dtype float32]

Prints one table row: runs, runs equal to solo, forwards made and the rows they carried (rows per forward > 1 is
how much was shared). ``--model tiny`` is the tests' 2-layer Llama (seconds); ``embedded`` the 135M model (slow).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import core  # noqa: E402
from core.rng import new_generator  # noqa: E402
from core.scheduler import StepScheduler  # noqa: E402

SETTINGS = [
    dict(do_sample=False),
    dict(do_sample=True, temperature=0.9, top_k=20, top_p=0.9),
    dict(do_sample=True, repetition_penalty=1.3, dry_multiplier=0.8, dry_sequence_breakers=[3]),
    dict(num_beams=3),
    dict(num_beams=2, do_sample=True, top_k=30),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--model", default="tiny", choices=["tiny", "embedded"])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    if args.model == "tiny":
        from conftest import tiny_llama

        model, vocab = tiny_llama(0, dtype=dtype), 64
    else:
        from core.models import DEFAULT_NAME

        model = core.load_model(DEFAULT_NAME, dtype=args.dtype).model
        vocab = model.config.vocab_size
    rng = random.Random(0)
    plans = [(SETTINGS[i % len(SETTINGS)], [1] + [rng.randrange(3, vocab) for _ in range(rng.randrange(2, 12))],
              rng.randrange(args.tokens // 2, args.tokens + 1), i) for i in range(args.runs)]

    def call(plan, scheduler=None):
        settings, prompt, tokens, seed = plan
        out = core.generate(model, torch.tensor([prompt]), max_new_tokens=tokens, generator=new_generator(seed),
                            scheduler=scheduler, **settings)
        return out.sequences.tolist()

    t0 = time.perf_counter()
    solo = [call(p) for p in plans]
    solo_s = time.perf_counter() - t0
    scheduler = StepScheduler(model)
    shared: list = [None] * len(plans)
    t0 = time.perf_counter()
    for start in range(0, len(plans), args.concurrent):
        def one(i):
            shared[i] = call(plans[i], scheduler)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(start, min(start + args.concurrent,
                                                                                  len(plans)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    shared_s = time.perf_counter() - t0
    equal = sum(a == b for a, b in zip(solo, shared))
    stats = scheduler.stats
    print(f"python bench/bench_equal.py --runs {args.runs} --concurrent {args.concurrent} --tokens {args.tokens} "
          f"--model {args.model} --dtype {args.dtype} (linears: {scheduler.linears or 'one run at a time'})")
    print()
    print("| runs | equal to solo | forwards | rows per forward | solo wall | shared wall |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(plans)} | {equal}/{len(plans)} | {stats.forwards} | {stats.rows / max(stats.forwards, 1):.2f} "
          f"| {solo_s:.1f} s | {shared_s:.1f} s |")
    differing = [i for i, (a, b) in enumerate(zip(solo, shared)) if a != b]
    if differing:
        print(f"\ndiffering runs (index: settings): {[(i, plans[i][0]) for i in differing[:10]]}")


if __name__ == "__main__":
    main()

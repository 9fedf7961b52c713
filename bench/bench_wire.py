"""What a step record costs on the engine's pipe (``core.engine.process``): pickle, as the engine sends it, against
msgpack of the record's JSON form (``dataclasses.asdict``, rebuilt as ``Trace.from_dict`` rebuilds its steps), for
the records of one seeded sampling run on the embedded model (``top_n=10``, what a tab records).

    python bench/bench_wire.py [--tokens 32] [--repeats 200]

Prints, per way: bytes per record, microseconds to write and to read one, median over the run's records.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # noqa: E402

import core  # noqa: E402
from core.records import StepRecord, _build  # noqa: E402
from core.rng import new_generator  # noqa: E402


def timed(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    lm = core.load_model()
    ids = lm.tokenizer("Write one sentence about the sea.", return_tensors="pt").input_ids
    out = core.generate(lm.model, ids, tokenizer=lm.tokenizer, recorder=core.ListRecorder(top_n=10),
                        generator=new_generator(0), do_sample=True, top_k=50, top_p=0.95,
                        max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    records = out.trace.steps
    ways = {
        "pickle (the engine's)": (lambda r: pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
        "msgpack of its JSON form": (lambda r: msgpack.packb(dataclasses.asdict(r)),
                                     lambda b: _build(StepRecord, msgpack.unpackb(b, strict_map_key=False))),
    }
    print(f"{len(records)} records of a seeded sampling run, top_n=10; median over records, {args.repeats} repeats\n")
    print("| way | bytes | write (µs) | read (µs) | equal after the trip |")
    print("|---|---:|---:|---:|---|")
    for name, (write, read) in ways.items():
        sizes, writes, reads, equal = [], [], [], True
        for record in records:
            data = write(record)
            sizes.append(len(data))
            writes.append(timed(lambda: write(record), args.repeats))
            reads.append(timed(lambda: read(data), args.repeats))
            equal = equal and read(data) == record
        print(f"| {name} | {statistics.median(sizes):.0f} | {statistics.median(writes):.0f} | "
              f"{statistics.median(reads):.0f} | {'yes' if equal else 'no'} |")


if __name__ == "__main__":
    main()

"""The 4.55.4 figures ``bench_core.py`` compares the ported strategies with, measured BY HAND in a transformers 4.55.4
venv (as ``tests/oracle/make_fixture.py`` is run):

    python3 -m venv /tmp/venv455
    /tmp/venv455/bin/pip install torch==2.13.0 transformers==4.55.4 gguf safetensors
    /tmp/venv455/bin/python bench/bench_455.py --threads 1

It loads the embedded SmolLM2-135M-Instruct GGUF in float32 as the fixture script does, and times 4.55.4's own
``model.generate`` for greedy search, contrastive search and DoLa with ``bench_core.py``'s prompt ids and settings,
interleaved, median of the runs. Paste the printed dict into ``REFERENCE_4_55_4`` in ``bench_core.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracle"))

from make_fixture import find_gguf, load  # noqa: E402

# bench_core.PROMPT through the 5.x tokenizer's chat template (4.55.4's tokenizer would add a BOS token)
PROMPT_IDS = [[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
               8182, 2, 198, 1, 4093, 198, 19161, 253, 1890, 1977, 563, 253, 8085, 617, 17542, 288, 7670, 30, 2, 198,
               1, 520, 9531, 198]]
SETTINGS = {  # as bench_core.STRATEGIES
    "greedy": dict(do_sample=False),
    "contrastive": dict(penalty_alpha=0.6, top_k=4),
    "DoLa": dict(dola_layers="high", repetition_penalty=1.2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    assert transformers.__version__ == "4.55.4", f"run with a 4.55.4 venv; got transformers {transformers.__version__}"
    torch.set_num_threads(args.threads)
    model = load(find_gguf())
    ids = torch.tensor(PROMPT_IDS)
    speeds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, settings in SETTINGS.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                                     pad_token_id=2, trust_remote_code=True, **settings)
            if repeat:
                speeds[name].append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t0))
    medians = {name: round(statistics.median(v), 2) for name, v in speeds.items()}
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.tokens} new tokens, median of {args.repeats}")
    print(medians)
    print({name: round(v / medians["greedy"], 2) for name, v in medians.items()})


if __name__ == "__main__":
    main()

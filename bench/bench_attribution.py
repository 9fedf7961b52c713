"""Attribution of one step (``core.attribution``) on the embedded model: seconds and integrated gradients'
completeness gap (captum's convergence delta) per number of steps and per chunk size, on a chat-templated prompt.

    python bench/bench_attribution.py [--prompt "Name three fruits."] [--answer "1. Ban"] [--steps 8,16,32,64]
                                      [--chunks 512] [--threads 1]

The context is the prompt through the chat template and ``--answer`` after it (the tokens generated before the
step); the target is the model's most probable next token there, as a greedy step would choose it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

import core  # noqa: E402
from core import attribution  # noqa: E402
from playground.prompt import encode_prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="Name three fruits.")
    parser.add_argument("--answer", default="1. Ban")
    parser.add_argument("--steps", default="8,16,32,64")
    parser.add_argument("--chunks", default="512", help="CHUNK_TOKENS values: context positions per forward")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = core.load_model()
    tok = loaded.tokenizer
    prompt_ids, _, _ = encode_prompt(tok, args.prompt, True)
    ids = prompt_ids[0].tolist() + tok(args.answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        target = int(loaded.model(torch.tensor([ids])).logits[0, -1].argmax())
    started = time.monotonic()
    attribution.attribute(loaded.model, tok, ids, target, "input_x_gradient")
    print(f"{len(ids)} context tokens, target {tok.decode([target])!r}; input x gradient "
          f"{time.monotonic() - started:.2f} s")
    print("| chunk | steps | seconds | delta |\n|---|---|---|---|")
    for chunk in (int(c) for c in args.chunks.split(",")):
        attribution.CHUNK_TOKENS = chunk
        for steps in (int(s) for s in args.steps.split(",")):
            started = time.monotonic()
            att = attribution.attribute(loaded.model, tok, ids, target, "integrated_gradients", steps=steps,
                                        deadline=time.monotonic() + 600)
            print(f"| {chunk} | {steps} | {time.monotonic() - started:.2f} | {att.delta:+.2f} |")


if __name__ == "__main__":
    main()

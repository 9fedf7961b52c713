"""Speed of the decoding core against transformers 5.x, per strategy, on the embedded model.

For each strategy it times ``core.generate`` with recording off (no recorder), with recording on
(``ListRecorder``) and transformers' own ``model.generate`` where 5.x still has the strategy, interleaved
(off, on, transformers, off, on, ...) so that the machine's load hits all three alike, and prints the
median tokens/s of each with the ratios core / transformers. Targets: off >= 1.0x, on >= 0.9x.
Strategies no module implements yet are listed with a note; so are those 5.x moved to the Hub. The community
samplers (DRY, XTC, top-nσ, mirostat, dynamic temperature, presence/frequency penalties) have a row each, on top of
sampling; DRY and the penalties also run in transformers as ``logits_processor``. The grammar row is greedy decoding
constrained by a JSON Schema (xgrammar): compare it with the greedy row, the same decoding without the grammar.

    python bench/bench_core.py [--tokens 32] [--repeats 5] [--only greedy,beam]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core  # noqa: E402
from core import config as config_checks  # noqa: E402
from core.chain import FIELDS as CORE_FIELDS  # noqa: E402
from core.processors import DRYLogitsProcessor, PresenceFrequencyPenaltyLogitsProcessor  # noqa: E402
from core.strategies import get_strategy  # noqa: E402
from transformers.generation.utils import GENERATION_MODES_MAPPING  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."


@dataclass
class Setup:
    """What one strategy needs: settings, and optionally an assistant model. ``hf_processors(lm, prompt_len)``
    gives transformers' ``generate`` the same community processors as ``logits_processor`` (it puts them where the
    core puts DRY and the penalties); without it a row with core-only fields has no transformers column."""

    kwargs: dict
    assistant: object | None = None
    hf_processors: Callable | None = None


SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                           "colours": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
          "required": ["title", "colours"], "additionalProperties": False}


def draft_model(model, layers: int = 4):
    """The embedded model's first ``layers`` layers under its own head: a cheap assistant with the same vocabulary."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.num_hidden_layers = layers
    draft = model.__class__(config).eval()
    missing, _ = draft.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing if "lm_head" not in k], missing  # lm_head is tied to the embeddings
    draft.generation_config = copy.deepcopy(model.generation_config)  # candidate generators may update it
    return draft


# name -> function (loaded model) -> Setup
STRATEGIES: dict[str, Callable[[core.LoadedModel], Setup]] = {
    "greedy": lambda lm: Setup(dict(do_sample=False)),
    "sampling": lambda lm: Setup(dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9)),
    "beam": lambda lm: Setup(dict(num_beams=4)),
    "beam sampling": lambda lm: Setup(dict(num_beams=4, do_sample=True, top_k=50)),
    "diverse beam": lambda lm: Setup(dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0)),
    "contrastive": lambda lm: Setup(dict(penalty_alpha=0.6, top_k=4)),
    "DoLa": lambda lm: Setup(dict(dola_layers="high", repetition_penalty=1.2)),
    "constrained": lambda lm: Setup(dict(num_beams=4, force_words_ids=[lm.tokenizer(" paint", add_special_tokens=False)
                                                                         ["input_ids"]])),
    "prompt lookup": lambda lm: Setup(dict(prompt_lookup_num_tokens=5)),
    "assisted": lambda lm: Setup(dict(), assistant=draft_model(lm.model)),
    # community samplers (core.processors), each on top of sampling with top_k 50
    "DRY": lambda lm: Setup(dict(do_sample=True, top_k=50, dry_multiplier=0.8), hf_processors=lambda lm, n: [
        DRYLogitsProcessor.from_strings(0.8, tokenizer=lm.tokenizer)]),
    "presence/frequency": lambda lm: Setup(dict(do_sample=True, top_k=50, presence_penalty=0.5, frequency_penalty=0.5),
                                           hf_processors=lambda lm, n: [
                                               PresenceFrequencyPenaltyLogitsProcessor(0.5, 0.5, prompt_length=n)]),
    "XTC": lambda lm: Setup(dict(do_sample=True, top_k=50, xtc_probability=0.5, xtc_threshold=0.1)),
    "top-nσ": lambda lm: Setup(dict(do_sample=True, top_k=0, top_n_sigma=1.0)),
    "mirostat": lambda lm: Setup(dict(do_sample=True, top_k=0, mirostat_tau=5.0)),
    "dynatemp": lambda lm: Setup(dict(do_sample=True, top_k=50, dynatemp_low=0.5, dynatemp_high=1.5)),
    # structured output: compare with the greedy row (the same decoding without the grammar)
    "grammar (json_schema)": lambda lm: Setup(dict(do_sample=False, json_schema=SCHEMA)),
}


@dataclass
class Row:
    name: str
    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    hf: list[float] = field(default_factory=list)
    note: str = ""
    same_tokens: bool | None = None


def tokens_per_s(run: Callable[[], torch.Tensor], prompt_len: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)  # sampling strategies draw the same tokens in every variant
    t0 = time.perf_counter()
    sequences = run()
    seconds = time.perf_counter() - t0
    new = (sequences.shape[1] - prompt_len) * sequences.shape[0]
    return new / seconds, sequences


def core_missing(lm, setup: Setup) -> str:
    """Why core cannot run this strategy now ("" when it can)."""
    cfg = config_checks.merged_config(lm.model, None, setup.kwargs)
    mode = cfg.get_generation_mode(setup.assistant).value
    try:
        get_strategy(mode)
    except ValueError:
        return f"{mode}: not implemented yet"
    return ""


def hf_missing(lm, setup: Setup) -> str:
    cfg = config_checks.merged_config(lm.model, None, setup.kwargs)
    mode = cfg.get_generation_mode(setup.assistant)
    return "transformers 5.x: moved to the Hub" if "/" in GENERATION_MODES_MAPPING[mode] else ""


def bench(lm: core.LoadedModel, names: list[str], new_tokens: int, repeats: int) -> list[Row]:
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    model, prompt_len = lm.model, ids.shape[1]
    rows = []
    for name in names:
        row = Row(name)
        rows.append(row)
        setup = STRATEGIES[name](lm)
        row.note = core_missing(lm, setup)
        if row.note:
            print(f"{name}: skipped ({row.note})", file=sys.stderr)
            continue
        kwargs = dict(setup.kwargs, max_new_tokens=new_tokens)
        extra = {"assistant_model": setup.assistant} if setup.assistant is not None else {}
        variants = {
            "off": lambda: core.generate(model, ids, tokenizer=lm.tokenizer, **extra, **kwargs).sequences,
            "on": lambda: core.generate(model, ids, recorder=core.ListRecorder(), tokenizer=lm.tokenizer, **extra,
                                        **kwargs).sequences,
        }
        hf_note = hf_missing(lm, setup)
        own = [k for k in kwargs if k in CORE_FIELDS]
        if own and setup.hf_processors is None:
            hf_note = f"transformers has no {', '.join(own)}"
        elif own:  # the same processors handed to transformers
            hf_kwargs = {k: v for k, v in kwargs.items() if k not in CORE_FIELDS}
            variants["hf"] = lambda: model.generate(ids, logits_processor=setup.hf_processors(lm, prompt_len),
                                                    **hf_kwargs)
        elif not hf_note:
            variants["hf"] = lambda: model.generate(ids, **extra, **kwargs)
        row.note = hf_note
        outputs = {key: tokens_per_s(run, prompt_len)[1] for key, run in variants.items()}  # warm-up
        if "hf" in outputs:
            row.same_tokens = outputs["off"].tolist() == outputs["hf"].tolist() == outputs["on"].tolist()
        for _ in range(repeats):
            for key, run in variants.items():
                getattr(row, key).append(tokens_per_s(run, prompt_len)[0])
        print(f"{name}: done", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    fmt = lambda x: f"{x:.1f}" if x is not None else "-"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"  # noqa: E731
    lines = ["| strategy | core off tok/s | core on tok/s | transformers tok/s | off / tf | on / tf | on / off "
             "| same tokens | note |", "|---|---:|---:|---:|---:|---:|---:|:---:|---|"]
    for r in rows:
        off, on, hf = med(r.off), med(r.on), med(r.hf)
        same = {True: "yes", False: "NO", None: "-"}[r.same_tokens]
        lines.append(f"| {r.name} | {fmt(off)} | {fmt(on)} | {fmt(hf)} | {ratio(off, hf)} | {ratio(on, hf)} | "
                     f"{ratio(on, off)} | {same} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (after one warm-up)")
    parser.add_argument("--only", default="", help="comma-separated strategy names (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(STRATEGIES)
    unknown = set(names) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {list(STRATEGIES)}")
    lm = core.load_model(None)
    rows = bench(lm, names, args.tokens, args.repeats)
    print(f"\n{lm.name}, {args.tokens} new tokens, median of {args.repeats} interleaved runs, "
          f"torch {torch.__version__} on {torch.get_num_threads()} threads\n")
    print(table(rows))


if __name__ == "__main__":
    main()

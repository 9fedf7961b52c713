"""The vLLM engine (``core.remote``) against a real vLLM server started here on 127.0.0.1 (float32, the embedded
model): greedy equals the server's own completion, the recorded candidates are its logprobs, a seeded sample
reproduces, the beam tree returns what vLLM's ``use_beam_search`` returns, and float32 greedy equals in-process
greedy.

The server comes from ``.venv-engine`` (``bash scripts/setup.sh --engine``). Where that venv is missing the tests
fail, unless ``PLAYGROUND_NO_ENGINE=1`` says this machine has no engine set up (they are then skipped, saying so);
a venv whose server does not come up fails them with the server's log. ``PLAYGROUND_ENGINE_TEST_URL``
(``http://host:port/v1``) points them at a server already running on the embedded model in float32 instead.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch

import core
from core.remote import client, engine, fields, serve

NO_ENGINE_ENV = "PLAYGROUND_NO_ENGINE"
URL_ENV = "PLAYGROUND_ENGINE_TEST_URL"
START_S = 400.0  # the server's start: ~80-100 s on a busy 2-core machine, most of it importing vLLM
PROMPT = "Write one sentence about the sea."


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A vLLM server on the embedded model for the whole session, stopped at its end."""
    if os.environ.get(URL_ENV):
        yield client.check_url(os.environ[URL_ENV], URL_ENV)
        return
    if not serve.ENGINE_PYTHON.exists():
        if os.environ.get(NO_ENGINE_ENV) == "1":
            pytest.skip(f"{NO_ENGINE_ENV}=1: no vLLM engine is set up on this machine")
        pytest.fail(f"the vLLM engine is not set up: {serve.ENGINE_PYTHON} is missing. Run `bash scripts/setup.sh "
                    f"--engine`, or set {NO_ENGINE_ENV}=1 where this machine is not meant to run it.")
    folder = serve.model_dir()
    port = serve.free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    proc = serve.start(folder, port, log)
    try:
        serve.wait_ready(client.Server(f"http://127.0.0.1:{port}/v1"), proc, log, timeout_s=START_S)
    except RuntimeError as err:
        serve.stop(proc)
        pytest.fail(str(err))
    yield f"http://127.0.0.1:{port}/v1"
    serve.stop(proc)


@pytest.fixture(scope="session")
def model(server) -> engine.EngineModel:
    (served,) = engine.connect(server)
    return served


@pytest.fixture(scope="session")
def prompt_ids(embedded) -> list[int]:
    """The chat-formatted prompt, tokenized here as the playground does."""
    return embedded.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                                  return_dict=True)["input_ids"]


def completion(model: engine.EngineModel, **request) -> dict:
    """The server's own answer to a completion request, with token ids in its logprobs."""
    return client.post(model.server, "/v1/completions", {"model": model.model_id, "return_tokens_as_token_ids": True,
                                                         "return_token_ids": True, **request})["choices"]


def new_tokens(trace: core.Trace) -> list[list[int]]:
    prompt = trace.prompt_ids[0]
    return [seq[len(prompt):] for seq in trace.sequences]


def test_greedy_equals_the_servers_completion(model, prompt_ids):
    result = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=24)
    (own,) = completion(model, prompt=prompt_ids, max_tokens=24, temperature=0)
    assert new_tokens(result.trace)[0] == own["token_ids"]
    assert result.trace.texts == [own["text"]]
    assert [r.rows[0].chosen[0] for r in result.trace.steps] == own["token_ids"]


def test_recorded_candidates_are_the_servers_logprobs(model, prompt_ids):
    result = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=12, top_n=5)
    (own,) = completion(model, prompt=prompt_ids, max_tokens=12, temperature=0, logprobs=5)
    assert len(result.trace.steps) == len(own["logprobs"]["top_logprobs"])
    for record, top in zip(result.trace.steps, own["logprobs"]["top_logprobs"]):
        recorded = {c.token_id: c.prob for c in record.rows[0].candidates}
        assert set(recorded) == {engine.token_id(t) for t in top}
        for token, logprob in top.items():
            assert recorded[engine.token_id(token)] == pytest.approx(math.exp(logprob), rel=1e-6)


def test_a_seeded_sample_reproduces(model, prompt_ids):
    settings = dict(do_sample=True, temperature=0.9, top_k=40, top_p=0.95, max_new_tokens=16)
    first = engine.generate(model, prompt_ids, generator=torch.Generator().manual_seed(11), **settings)
    again = engine.generate(model, prompt_ids, generator=torch.Generator().manual_seed(11), **settings)
    assert first.trace.seed == 11 and first.trace.sequences == again.trace.sequences
    (own,) = completion(model, prompt=prompt_ids, max_tokens=16, temperature=0.9, top_k=40, top_p=0.95, seed=11)
    assert new_tokens(first.trace)[0] == own["token_ids"]


def test_sample_n_rows_equal_their_single_seeds(model, prompt_ids):
    settings = dict(do_sample=True, temperature=1.0, max_new_tokens=10)
    many = engine.generate(model, prompt_ids, generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
                           **settings)
    alone = [new_tokens(engine.generate(model, prompt_ids, seed=s, **settings).trace)[0] for s in (3, 4)]
    assert [row[:len(a)] for row, a in zip(new_tokens(many.trace), alone)] == alone


def test_the_beam_trees_returned_sequences_equal_vllms_beam_search(model, prompt_ids):
    result = engine.generate(model, prompt_ids, num_beams=3, num_return_sequences=3, max_new_tokens=12)
    own = completion(model, prompt=prompt_ids, max_tokens=12, temperature=0, n=3, use_beam_search=True)
    assert new_tokens(result.trace) == [c["token_ids"] for c in own]
    assert result.trace.texts == [c["text"] for c in own]
    last = result.trace.steps[-1]
    nodes = {n.node_id: n for r in result.trace.steps for n in r.beam}

    def path(node_id):
        tokens = []
        while node_id != -1:
            tokens.append(nodes[node_id].token_id)
            node_id = nodes[node_id].parent
        return [t for t in reversed(tokens) if t != model.eos_token_id]

    assert [path(n) for n in last.best_nodes] == [c["token_ids"] for c in own]


def test_float32_greedy_equals_in_process_greedy(model, embedded, prompt_ids):
    ids = torch.tensor([prompt_ids])
    local = core.generate(embedded.model, ids, do_sample=False, max_new_tokens=24, tokenizer=embedded.tokenizer)
    remote = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=24)
    tokens = local.sequences[0, ids.shape[1]:].tolist()
    eos = embedded.model.generation_config.eos_token_id
    remote_tokens = new_tokens(remote.trace)[0]
    eos_ids = [eos] if isinstance(eos, int) else eos
    assert remote_tokens == tokens[:len(remote_tokens)] and (len(remote_tokens) == len(tokens)
                                                             or tokens[len(remote_tokens)] in eos_ids)


def test_structured_output_and_stop_go_to_the_server(model, prompt_ids):
    shaped = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=8, regex="[0-9]{3}")
    assert re.fullmatch("[0-9]{3}", shaped.trace.texts[0])
    stopped = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=24, stop_strings=["."])
    assert "." not in stopped.trace.texts[0]


# --- no server needed: what is refused before any request ---------------------------------------------------
OFFLINE = engine.EngineModel(client.Server("http://127.0.0.1:9/v1", timeout_s=1.0), "m", 2)


@pytest.mark.parametrize("settings, words", [
    (dict(penalty_alpha=0.6, top_k=4), "contrastive search"),
    (dict(dola_layers="high"), "DoLa"),
    (dict(prompt_lookup_num_tokens=3), "speculative decoding"),
    (dict(num_beams=2, num_beam_groups=2, diversity_penalty=1.0), "diverse beam search"),
    (dict(do_sample=True, num_beams=2), "beam sampling"),
    (dict(do_sample=True, typical_p=0.5), "`typical_p`"),
    (dict(do_sample=True, top_n_sigma=1.0), "`top_n_sigma`"),
    (dict(cache_implementation="quantized"), "KV cache"),
])
def test_what_needs_the_in_process_model_says_so(settings, words):
    with pytest.raises(ValueError, match="needs the in-process model") as err:
        engine.generate(OFFLINE, [1, 2, 3], max_new_tokens=4, **settings)
    assert words in str(err.value)


def test_the_logit_lens_needs_the_in_process_model():
    with pytest.raises(ValueError, match="logit lens.*in-process model"):
        engine.generate(OFFLINE, [1, 2, 3], max_new_tokens=4, lens=True)
    with pytest.raises(ValueError, match="`watch`.*in-process model"):
        engine.generate(OFFLINE, [1, 2, 3], max_new_tokens=4, watch=[5])


def test_fields_at_their_off_value_ask_nothing_of_the_server():
    cfg = fields.merged(None, dict(do_sample=True, typical_p=1.0, no_repeat_ngram_size=0, xtc_probability=0.0))
    assert fields.mode_of(cfg) == "sample"


def test_sampling_fields_map_to_vllms_names():
    cfg = fields.merged(None, dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05,
                                   repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25,
                                   min_new_tokens=2, max_new_tokens=9, bad_words_ids=[" sorry", [5, 6]],
                                   stop_strings=["\n"], num_return_sequences=2, json_schema={"type": "object"}))
    request = fields.sampling_request(cfg, fields.mode_of(cfg), words=lambda ids: f"<{ids}>")
    assert request == {"max_tokens": 9, "n": 2, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.05,
                       "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                       "min_tokens": 2, "bad_words": [" sorry", "<[5, 6]>"], "stop": ["\n"],
                       "structured_outputs": {"json": {"type": "object"}}}


@pytest.mark.parametrize("settings, message", [
    (dict(do_sample=True, temperature=-1.0), "`temperature` must be a number >= 1e-05; got -1.0"),
    (dict(do_sample=True, top_p=1.5), r"`top_p` must be a number in \[1e-09, 1\]; got 1.5"),
    (dict(max_new_tokens=0), "`max_new_tokens` must be greater than 0"),  # transformers' own check
])
def test_bad_values_name_the_field_and_range(settings, message):
    with pytest.raises(ValueError, match=message):
        engine.generate(OFFLINE, [1, 2, 3], **{"max_new_tokens": 4, **settings})


def test_a_server_that_dies_fails_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("ValueError: no model at DIR")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="(?s)exited with 3.*no model at DIR"):
        serve.wait_ready(client.Server("http://127.0.0.1:9/v1"), proc, log, timeout_s=60)


def test_an_unreachable_server_is_named():
    with pytest.raises(client.EngineError, match="127.0.0.1:9"):
        engine.generate(OFFLINE, [1, 2, 3], do_sample=False, max_new_tokens=4)


# --- the playground on the engine -----------------------------------------------------------------------------
def test_the_engines_models_join_the_picker(monkeypatch, server, model, embedded):
    import app
    from playground import policy
    from playground.i18n import english
    from playground.state import ModelCache

    monkeypatch.setenv("PLAYGROUND_ENGINE", server)
    cache = ModelCache(capacity=2, loader=lambda name=None, dtype="float32": embedded)
    demo = app.build_demo(models=cache)
    picker = next(b for b in demo.blocks.values() if english(getattr(b, "label", None)) == "Model")
    assert model.name in [choice[0] for choice in picker.choices]
    key, status = app.load_handler(cache)(model.name, "", None, progress=lambda *a, **k: None)
    assert key == model.name and "served by vLLM" in status
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "1")  # a visitor may pick it: the operator's server, not a path
    assert policy.load(cache, model.name, "model").name == model.name


def test_the_engines_runs_go_through_stream_run_and_draw(monkeypatch, server, model, prompt_ids):
    from playground import engine as engine_ui
    from playground.prompt import encode_prompt
    from playground.runs import Run, stream_run
    from playground.figures.beam_tree import beam_tree_figure, returned_paths
    from playground.figures.candidates import candidates_figure
    from playground.figures.tokens import tokens_html
    from playground.state import ModelCache

    monkeypatch.setenv(engine_ui.ENGINE_ENV, server)
    assert model.name in engine_ui.served()
    loaded = ModelCache(capacity=1).get(model.name)  # no slot taken by weights: nothing loads
    assert engine_ui.is_remote(loaded)
    ids, mask, _ = encode_prompt(loaded.tokenizer, PROMPT, chat=True)  # the server's chat template
    assert ids[0].tolist() == prompt_ids
    run = Run("main", "Greedy", kwargs={"do_sample": False, "max_new_tokens": 10})
    for _ in stream_run(run, loaded, ids, mask, generator=None):
        pass
    alone = engine.generate(model, prompt_ids, do_sample=False, max_new_tokens=10)
    assert run.done and run.tokens == new_tokens(alone.trace) and run.texts == alone.trace.texts
    assert candidates_figure(run.steps).data and "<span" in tokens_html(run.steps)
    beams = Run("main", "Beam", kwargs={"num_beams": 2, "max_new_tokens": 6})
    for _ in stream_run(beams, loaded, ids, mask, generator=None):
        pass
    assert beam_tree_figure(beams.steps).data and len(returned_paths(beams.steps)) == 1 and beams.tokens[0]

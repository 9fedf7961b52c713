"""The playground's handlers through its API (``gradio_client``), on a tiny random model saved to a
temporary folder with the embedded tokenizer, the way ``PLAYGROUND_MODEL`` points the app at a model.

What the tabs show is checked against the reference: the text of the Greedy and Beam search tabs
equals ``transformers`` ``model.generate`` on the same prompt ids; a figure is a plotly figure with
the records drawn (beam nodes, DoLa cells); a bad setting returns the core's message and leaves the
text on screen untouched; a downloaded trace loads back into the same figures.
"""

from __future__ import annotations

import json
import re
import threading
import time

import gradio as gr
import plotly.graph_objects as go
import pytest
import torch
from gradio_client import Client, handle_file
from transformers import LlamaConfig, LlamaForCausalLM

import app
from conftest import kernels_ready
import core
from core.records import Trace
from playground import field_codecs
from playground.prompt import encode_prompt
from playground.figures.beam_tree import node_count
from playground.state import ModelCache
from playground.tabs import TABS, all_tabs
from playground.tabs.cache import QUANTIZED_CONFIGS

PROMPT = "Name a fruit."
FAST = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, embedded):
    """A 4-layer Llama over the embedded tokenizer's vocabulary, saved like a Hub checkpoint."""
    torch.manual_seed(0)
    tok = embedded.tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = 2
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def served(tiny_folder):
    """The app on the tiny model, in this process; yields (demo, client, model cache)."""
    models = ModelCache()
    demo = app.build_demo(tiny_folder, models=models)
    kernels_ready()
    app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=None)
    client = Client(demo.local_url, verbose=False)
    yield demo, client, models
    client.close()
    demo.close()


def outputs_of(key: str, values: tuple) -> dict:
    """Name a run endpoint's outputs (``StrategyTab.output_names``)."""
    names = TABS[key].output_names()
    assert len(names) == len(values), (names, values)
    return dict(zip(names, values))


def generate(client, key: str, **kwargs) -> tuple[dict, int]:
    """Run a tab's Generate to the end; returns its final outputs and how many updates streamed."""
    job = client.submit(api_name=f"/{key}_generate", prompt=PROMPT, **{**FAST, **kwargs})
    final = job.result(timeout=120)
    return outputs_of(key, final), len(job.outputs())


def figure(out: dict, label: str) -> go.Figure:
    value = out[f"figure:{label}"]
    assert value["type"] == "plotly", value
    data = json.loads(value["plot"])
    return go.Figure(data=data["data"], layout=data["layout"])


def reference_text(loaded, **kwargs) -> str:
    ids, mask, _ = encode_prompt(loaded.tokenizer, PROMPT, chat=True)
    seqs = loaded.model.generate(ids, attention_mask=mask, **kwargs)
    return loaded.tokenizer.decode(seqs[0, ids.shape[1]:], skip_special_tokens=True)


# --- every tab streams text, records and figures --------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key", [tab.key for tab in all_tabs()])
def test_every_tab_streams_text_and_figures(served, key):
    _, client, _ = served
    out, updates = generate(client, key)
    assert "has no implementation" not in out["status"], out["status"]
    assert updates > 1, "the text should stream, one update per step"
    assert isinstance(out["text0"], str) and out["text0"].strip(), out
    assert "tokens" in out["status"] and "Not run" not in out["status"], out["status"]
    for fig in TABS[key].all_figures():  # a figure that needs a setting (watermarking) is checked where it is set
        if out[f"figure:{fig.label}"] is None:  # nothing to show: its sub-tab is hidden
            assert fig.only_with, f"{fig.label} drew nothing"
        else:
            assert figure(out, fig.label).data, f"{fig.label} drew nothing"
    assert 'class="dp-tok' in out["tokens"]
    assert out["alternatives"]["data"] and out["alternatives"]["data"][0][0], out["alternatives"]
    assert out["step"]["maximum"] >= 1
    trace = json.loads(open(out["download"]).read())
    runs = trace["runs"] if "runs" in trace else {"main": trace}
    for run in runs.values():
        assert Trace.from_dict(run).steps, "the downloaded trace holds the step records"


@pytest.mark.slow
def test_greedy_and_beam_text_match_transformers_generate(served):
    _, client, models = served
    loaded = models.get(served[0].startup_model)
    out, _ = generate(client, "greedy", max_new_tokens=8)
    assert out["text0"] == reference_text(loaded, do_sample=False, max_new_tokens=8)
    out, _ = generate(client, "beam", max_new_tokens=8, num_beams=3, early_stopping="True", length_penalty=0.5)
    expected = reference_text(loaded, do_sample=False, max_new_tokens=8, num_beams=3, early_stopping=True,
                              length_penalty=0.5)
    assert out["text0"] == expected
    assert node_count(figure(out, "Beam tree")) >= 3 * 8


@pytest.mark.slow
def test_greedy_with_the_models_defaults_stops_where_generate_does(served):
    """No max_new_tokens: transformers' default max_length=20 applies, as in a bare ``model.generate``."""
    _, client, models = served
    job = client.submit(api_name="/greedy_generate", prompt=PROMPT, defaults_only=True)
    out = outputs_of("greedy", job.result(timeout=120))
    assert out["text0"] == reference_text(models.get(served[0].startup_model), do_sample=False)
    assert re.search(r"\b20 tokens in", out["status"]), out["status"]


@pytest.mark.slow
def test_sampling_seed_makes_text_reproducible(served):
    _, client, _ = served
    first, _ = generate(client, "sampling", seed=7, max_new_tokens=10)
    again, _ = generate(client, "sampling", seed=7, max_new_tokens=10)
    assert first["text0"] == again["text0"]


@pytest.mark.slow
def test_dola_heatmap_has_cells_and_greedy_text_beside(served):
    _, client, models = served
    out, _ = generate(client, "dola", dola_layers="high")
    assert "has no implementation" not in out["status"], out["status"]
    heat = [t for t in figure(out, "Layer divergences").data if t.type == "heatmap"]
    assert heat and any(v is not None for row in heat[0].z for v in row)
    loaded = models.get(served[0].startup_model)
    assert out["text1"] == reference_text(loaded, do_sample=False, max_new_tokens=6, repetition_penalty=1.2)


@pytest.mark.slow
def test_speculative_text_equals_greedy_with_an_assistant_model(served, tiny_folder):
    _, client, _ = served
    out, _ = generate(client, "speculative", assistant_model=tiny_folder, max_new_tokens=10)
    assert "Assisted by" in out["status"] and "same tokens as greedy" in out["status"], out["status"]
    facts = {name: run["facts"] for name, run in json.loads(open(out["download"]).read())["runs"].items()}
    assert facts["main"]["assistant"] and f"Assisted by {facts['main']['assistant']}" in out["status"]
    assert facts["greedy"]["assistant"] == ""  # the plain greedy run beside it had none
    assert out["text0"] == out["text1"]
    assert figure(out, "Timing vs plain greedy").data


@pytest.mark.slow
@pytest.mark.parametrize("cache_config", QUANTIZED_CONFIGS)
def test_cache_tab_runs_each_quantized_backend_beside_the_dynamic_cache(served, cache_config):
    _, client, _ = served
    out, _ = generate(client, "cache", cache_implementation="quantized", cache_config=cache_config)
    assert "QuantizedCache" in out["status"] and "DynamicCache" in out["status"], out["status"]
    lines = {t.name for t in figure(out, "Cache memory per step").data}
    assert len(lines) == 2, lines


# --- bad settings ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key, bad, field", [
    ("beam", {"num_beams": 2, "num_return_sequences": 4}, "num_return_sequences"),
    ("sampling", {"top_p": 0.0}, "top_p"),
    ("sampling", {"temperature": 0.0}, "temperature"),
    ("diverse_beam", {"num_beams": 4, "num_beam_groups": 3}, "num_beam_groups"),
    ("dola", {"dola_layers": "[0, 99]"}, "dola_layers"),
    ("dola", {"dola_layers": "middle"}, "dola_layers"),
    ("cache", {"cache_config": "{not json"}, "cache_config"),
    ("greedy", {"watch": "#5, #99999999"}, "watch"),
])
def test_bad_setting_names_the_field_and_keeps_the_text(served, key, bad, field):
    _, client, _ = served
    good, _ = generate(client, key)
    assert "has no implementation" not in good["status"], good["status"]
    assert good["text0"]
    job = client.submit(api_name=f"/{key}_generate", prompt=PROMPT, **{**FAST, **bad})
    out = outputs_of(key, job.result(timeout=60))
    assert f"`{field}`" in out["status"] and "got" in out["status"], out["status"]
    # every other output is a no-op update: the browser keeps the last good text and figures
    for name, value in out.items():
        if name != "status":
            assert isinstance(value, dict) and value.get("__type__") == "update" and "value" not in value, name


@pytest.mark.slow
def test_watched_tokens_are_drawn_saved_and_loaded_back(served):
    _, client, _ = served
    out, _ = generate(client, "greedy", watch="#5, #9", logit_lens=True)
    fig = figure(out, "Watched tokens")
    assert [t.meta for t in fig.data if t.meta.startswith("watched:")] == ["watched:5", "watched:9"]
    assert [b.label for b in figure(out, "Logit lens").layout.updatemenus[0].buttons][0] == "chosen token"
    trace = Trace.from_json(open(out["download"]).read())
    assert all([w.token_id for w in r.rows[0].watched] == [5, 9] for r in trace.steps)
    assert all([w.token_id for w in layer.watched] == [5, 9] for r in trace.steps for layer in r.lens[0])
    loaded = outputs_of("greedy", client.predict(handle_file(out["download"]), api_name="/greedy_load_trace"))
    assert figure(loaded, "Watched tokens").to_dict() == fig.to_dict()
    plain, _ = generate(client, "greedy")
    assert plain["figure:Watched tokens"] is None  # nothing watched: its sub-tab stays hidden


@pytest.mark.slow
def test_empty_prompt_is_refused_with_the_cores_message(served):
    _, client, _ = served
    job = client.submit(api_name="/greedy_generate", prompt="", chat=False, **FAST)
    out = outputs_of("greedy", job.result(timeout=60))
    assert "`input_ids`" in out["status"] and "empty prompt" in out["status"]


# --- stop, traces, model picker ------------------------------------------------------------------------
def _workers() -> int:
    """core.stream's worker threads still alive."""
    return sum(1 for t in threading.enumerate() if t.name.endswith("(work)"))


@pytest.mark.slow
def test_stop_ends_the_worker_within_a_step(served):
    _, client, _ = served
    job = client.submit(api_name="/sampling_generate", prompt=PROMPT, max_new_tokens=512)
    deadline = time.time() + 60
    while len(job.outputs()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert len(job.outputs()) >= 3 and _workers() >= 1
    job.cancel()  # what the Stop button's cancels= does: the server closes the handler's generator
    deadline = time.time() + 20
    while _workers() and time.time() < deadline:
        time.sleep(0.05)
    assert _workers() == 0, "the generation thread kept running after Stop"
    last = outputs_of("sampling", job.outputs()[-1])
    tokens = int(re.search(r"(\d+) tokens in", last["status"]).group(1))
    assert tokens < 512, "Stop came after the whole generation"


@pytest.mark.slow
def test_downloaded_trace_loads_back_into_the_same_figures(served):
    _, client, _ = served
    out, _ = generate(client, "beam")
    assert "has no implementation" not in out["status"], out["status"]
    loaded = outputs_of("beam", client.predict(handle_file(out["download"]), api_name="/beam_load_trace"))
    assert loaded["text0"] == out["text0"]
    assert node_count(figure(loaded, "Beam tree")) == node_count(figure(out, "Beam tree"))
    assert loaded["tokens"] == out["tokens"]


@pytest.mark.slow
def test_attribute_this_step_scores_the_picked_steps_context_as_the_core_does(served):
    """Attribute this step after a Greedy run: the panel's scores are ``core.attribution``'s on the ids the trace
    says the step saw; with no run, or a row the run does not have, the panel says why."""
    from core.attribution import attribute, step_context

    demo, client, models = served

    def attribute_api(session, **kwargs) -> str:  # the panel's HTML (an update: the panel shows once filled)
        update = session.predict(**kwargs, api_name="/greedy_attribute")
        assert update["visible"] is True
        return update["value"]

    fresh = Client(demo.local_url, verbose=False)  # a session with no run yet
    assert "Generate first" in attribute_api(fresh, step=0, row=0, steps=2)
    fresh.close()
    out, _ = generate(client, "greedy")
    panel = attribute_api(client, step=2, row=0, steps=4)
    trace = Trace.from_json(open(out["download"]).read())
    ids, target, prompt_tokens = step_context(trace, 2)
    loaded = models.get(demo.startup_model)
    want = attribute(loaded.model, loaded.tokenizer, ids, target, "all", steps=4, prompt_tokens=prompt_tokens)
    for method in ("input_x_gradient", "integrated_gradients"):
        line = re.search(f'data-method="{method}">(.*?)</div>', panel, re.S)
        assert line, panel[:2000]
        line = line.group(1)
        scores = [float(v) for v in re.findall(r'data-score="([^"]+)"', line)]
        assert scores == pytest.approx(want.scores[method], rel=1e-4, abs=1e-6), method
    assert "attn_implementation" in panel  # the tiny model runs sdpa: attention says why it is missing
    assert "`row` must be a row of step 0" in attribute_api(client, step=0, row=3, steps=4)


@pytest.mark.slow
def test_loading_a_non_trace_file_says_so(served, tmp_path):
    _, client, _ = served
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    out = outputs_of("greedy", client.predict(handle_file(str(bad)), api_name="/greedy_load_trace"))
    assert "trace" in out["status"], out["status"]


@pytest.mark.slow
def test_model_picker_loads_into_the_shared_cache(served, tiny_folder):
    _, _, models = served
    load = app.load_handler(models)
    name, status = load(None, tiny_folder, progress=lambda *a, **k: None)
    assert name == tiny_folder and "4 layers" in status
    skipped, message = load(None, "/no/such/model/folder", progress=lambda *a, **k: None)
    assert "not loaded" in message and "/no/such/model/folder" in message


@pytest.mark.slow
def test_a_session_switches_model_and_others_keep_theirs(served, embedded):
    demo, client, _ = served
    switched = Client(demo.local_url, verbose=False)
    status = switched.predict("smollm2-135m-instruct", "", api_name="/load_model")
    assert "smollm2-135m-instruct" in status and "30 layers" in status
    out, _ = generate(switched, "greedy", max_new_tokens=8)
    assert out["text0"] == reference_text(embedded, do_sample=False, max_new_tokens=8)
    tiny, _ = generate(client, "greedy", max_new_tokens=8)  # the first session still runs the tiny model
    assert tiny["text0"] != out["text0"]
    switched.close()


@pytest.mark.slow
def test_main_serves_the_model_named_in_the_environment(tiny_folder, monkeypatch, capsys):
    launched = {}
    monkeypatch.setenv(app.MODEL_ENV, tiny_folder)
    monkeypatch.setattr(app, "launch", lambda demo, **kw: launched.update(demo=demo, **kw))
    threads, switches = [], []
    monkeypatch.setattr(app.torch, "set_num_threads", threads.append)  # decided once, at start-up
    monkeypatch.setattr(app.sys, "setswitchinterval", switches.append)
    engines = []  # the engine process is started first, warmed on the startup model (here: none, the page loads it)
    monkeypatch.setattr(app.engine_host, "start", lambda **kw: engines.append(kw))
    app.main()
    assert engines == [{"warm": (tiny_folder,)}]
    assert launched["demo"].startup_model == tiny_folder
    assert launched["server_port"] == 7860 and launched["slots"] == 8  # runs share forwards: more may run at once
    assert threads == [app.policy.torch_threads()] and switches == [app.policy.switch_interval()]
    assert tiny_folder in capsys.readouterr().out


# --- the adapters themselves (no server) --------------------------------------------------------------------
@pytest.mark.parametrize("field, text, value", [
    ("stop_strings", "\\n\\n, END", ["\n\n", "END"]),
    ("dola_layers", "high", "high"),
    ("dola_layers", "[8, 10]", [8, 10]),
    ("cache_config", '{"backend": "hqq", "nbits": 2}', {"backend": "hqq", "nbits": 2}),
    ("early_stopping", "never", "never"),
    ("early_stopping", "True", True),
])
def test_widget_values_round_trip_to_config_values(field, text, value):
    assert field_codecs.config_value(field, text) == value
    assert field_codecs.config_value(field, field_codecs.widget_value(field, value)) == value


def test_whole_number_sliders_reach_transformers_as_floats(tiny_model, prompt):
    """A temperature slider on 2 sends the int 2, which transformers' TemperatureLogitsWarper refuses."""
    temperature = field_codecs.config_value("temperature", 2)
    assert type(temperature) is float and field_codecs.config_value("top_k", 20.0) == 20
    torch.manual_seed(0)
    expected = tiny_model.generate(prompt, do_sample=True, temperature=2.0, max_new_tokens=4)
    torch.manual_seed(0)
    assert torch.equal(core.generate(tiny_model, prompt, do_sample=True, temperature=temperature,
                                     max_new_tokens=4).sequences, expected)


def test_tab_fields_win_over_loaded_extra_and_widgets_over_extra():
    kwargs = field_codecs.generate_kwargs({"top_k": 20.0, "min_p": 0, "stop_strings": ""},
                                      extra={"do_sample": False, "top_k": 5, "repetition_penalty": 1.3},
                                      fixed={"do_sample": True})
    assert kwargs == {"do_sample": True, "top_k": 20, "repetition_penalty": 1.3}
    assert isinstance(kwargs["top_k"], int)


def test_presets_set_widgets_and_keep_unknown_fields_in_extra(served):
    demo, _, _ = served
    tab, ui = TABS["sampling"], next(h.ui for h in demo.handles if h.key == "sampling")
    name = next(n for n, v in tab.presets().items() if "min_p" in v)
    out = ui.apply_preset(name, {"repetition_penalty": 1.1})
    assert out[ui.w.controls["min_p"]] == tab.presets()[name]["min_p"]
    assert out[ui.w.extra] == {"repetition_penalty": 1.1}


def test_tabs_come_in_registry_order_whatever_imports_what():
    """A tab module importing another (greedy uses sampling's pieces) must not reorder the tab bar."""
    from playground import tabs

    assert [t.key for t in all_tabs()] == list(tabs._MODULES)


def test_the_shared_forward_threads_and_switch_knobs_name_their_variable_when_malformed(monkeypatch):
    from playground import policy

    monkeypatch.setenv(policy.SHARED_ENV, "yes")
    with pytest.raises(ValueError, match=policy.SHARED_ENV):
        policy.shared_forward()
    monkeypatch.setenv(policy.THREADS_ENV, "0")
    with pytest.raises(ValueError, match=policy.THREADS_ENV):
        policy.torch_threads()
    monkeypatch.setenv(policy.SWITCH_ENV, "0")
    with pytest.raises(ValueError, match=policy.SWITCH_ENV):
        policy.switch_interval()
    monkeypatch.setenv(policy.FRAME_ENV, "fast")
    with pytest.raises(ValueError, match=policy.FRAME_ENV):
        policy.frame_seconds()
    for env, knob in ((policy.ENGINE_PROCESS_ENV, policy.engine_process), (policy.EXACT_ENV, policy.exact_batch)):
        monkeypatch.setenv(env, "on")
        with pytest.raises(ValueError, match=env):
            knob()
        monkeypatch.setenv(env, "0")
        assert knob() is False
    monkeypatch.setenv(policy.SHARED_ENV, "0")
    monkeypatch.setenv(policy.THREADS_ENV, "3")
    monkeypatch.setenv(policy.SWITCH_ENV, "0.5")
    monkeypatch.setenv(policy.FRAME_ENV, "0")
    assert policy.shared_forward() is False and policy.torch_threads() == 3 and policy.switch_interval() == 0.0005
    assert policy.frame_seconds() == 0
    monkeypatch.delenv(policy.FRAME_ENV)
    assert policy.frame_seconds() == 0.05


def test_a_run_streams_at_most_one_update_per_frame(monkeypatch):
    """``Frames``: the first step goes out at once, then none sooner than a frame after the last; 0 sends each."""
    from playground.tabs import status

    clock = [0.0]
    monkeypatch.setattr(status.time, "perf_counter", lambda: clock[0])
    frames = status.Frames(0.05)
    sent = []
    for _ in range(10):  # a step every 20 ms
        sent.append(frames.due())
        clock[0] += 0.02
    assert sent == [True, False, False, True, False, False, True, False, False, True]
    every = status.Frames(0.0)
    assert all(every.due() for _ in range(5))


def test_switching_tabs_and_streaming_touch_few_loading_statuses(served):
    """Gradio's page refreshes the loading status of every component an event has read or shown progress on, at each
    streamed message (``gradio_patches``): a tab switch reads a few (opening the Config tab reads every tab's
    settings), a run shows progress on its status."""
    demo, _, _ = served
    config = demo.get_config_file()
    tabs = {c["id"] for c in config["components"] if c["type"] == "tabitem"}
    states = {c["id"] for c in config["components"] if c["type"] == "state"}
    for dep in config["dependencies"]:
        triggers = {(target, event) for target, event in dep["targets"]}
        if any(t in tabs and e == "select" for t, e in triggers) or any(t in states and e == "change"
                                                                        for t, e in triggers):
            opens_config = any(getattr(demo.blocks[t], "id", None) == "config" for t, _ in triggers if t in tabs)
            assert opens_config or len(dep["inputs"]) <= 8, (dep["api_name"], len(dep["inputs"]))
    for handle in demo.handles:
        status = handle.ui.out.status._id
        runs = [d for d in config["dependencies"] if d["api_name"] == f"{handle.key}_generate"]
        assert runs and runs[0]["show_progress_on"] == [status]


def test_output_names_follow_what_a_build_sends(served):
    """The API names of a run endpoint's outputs match the components a build wires, one by one."""
    demo, _, _ = served
    for handle in demo.handles:
        api = [c for c in handle.ui.out.ordered() if not c.skip_api]
        names = handle.ui.tab.output_names()
        assert len(api) == len(names), handle.key
        kinds = {"text": gr.Textbox, "status": gr.Markdown, "figure": gr.Plot, "tokens": gr.HTML, "step": gr.Slider,
                 "alternatives": gr.Dataframe, "download": gr.DownloadButton}
        assert all(isinstance(c, kinds[n.split(":")[0].rstrip("0123456789")]) for c, n in zip(api, names)), handle.key

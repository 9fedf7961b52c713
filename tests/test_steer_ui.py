"""Steering through the API, on the tiny model the handler tests serve: /<tab>_branch forces a token and continues
like transformers' generate from that prefix; /<tab>_next_token to the end equals one Generate; Sample N's runs equal
their seeded single runs; the session's branch tree downloads, loads back and compares two runs."""

from __future__ import annotations

import html
import json

import pytest
import torch
from gradio_client import Client, handle_file

from core.records import Trace
from playground.branches import Branches
from test_ui_handlers import PROMPT, outputs_of, served, tiny_folder  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture
def client(served):  # noqa: F811 - one session per test
    demo, _, _ = served
    c = Client(demo.local_url, verbose=False)
    yield c
    c.close()


def call(client, api: str, key: str, **kwargs) -> dict:
    return outputs_of(key, client.submit(api_name=f"/{api}", prompt=PROMPT, **kwargs).result(timeout=180))


def trace_of(out: dict) -> Trace:
    data = json.loads(open(out["download"]).read())
    return Trace.from_dict(data["runs"]["main"] if "runs" in data else data)


def model_of(served):  # noqa: F811
    demo, _, models = served
    return models.get(demo.startup_model)


@pytest.mark.parametrize("key,settings", [("greedy", {}), ("sampling", dict(seed=3, temperature=1.0, top_k=0)),
                                          ("beam", dict(num_beams=3))])
def test_a_branch_continues_like_transformers_from_its_prefix(served, client, key, settings):  # noqa: F811
    parent = trace_of(call(client, f"{key}_generate", key, max_new_tokens=8, **settings))
    rs = parent.steps[2].rows[1 if key == "beam" else 0]
    forced = next(c.token_id for c in rs.candidates if c.token_id not in rs.chosen)
    out = call(client, f"{key}_branch", key, max_new_tokens=8, step=2, row=1 if key == "beam" else 0,
               token=f"#{forced}", **settings)
    assert "Not run" not in out["status"], out["status"]
    child = trace_of(out)
    assert child.origin.parent == parent.run_id and child.origin.step == 2 and child.origin.token_id == forced
    prefix = child.origin.prefix
    assert len(prefix) == 3 and prefix[-1] == forced
    if key != "beam":  # the prefix before the forced token is the parent's, unchanged
        assert prefix[:2] == parent.sequences[0][len(parent.prompt_ids[0]):][:2]
    ids = torch.tensor(child.prompt_ids)
    assert ids[0].tolist() == parent.prompt_ids[0] + prefix
    loaded = model_of(served)
    reference = dict(do_sample=key == "sampling", max_new_tokens=8, num_beams=settings.get("num_beams", 1))
    if key == "sampling":
        reference.update(temperature=1.0, top_k=0)
        torch.manual_seed(3)
    expected = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), **reference)
    assert child.sequences[0] == expected[0].tolist()


def test_a_token_typed_as_text_or_out_of_range_is_named(client):
    call(client, "greedy_generate", "greedy", max_new_tokens=4)
    bad = call(client, "greedy_branch", "greedy", max_new_tokens=4, step=1, row=0, token="#999999")
    assert "`token` must be a token id in [0," in html.unescape(bad["status"])  # the status writes it as text
    many = call(client, "greedy_branch", "greedy", max_new_tokens=4, step=1, row=0, token="two words")
    assert "`token` must be one token of the model's vocabulary" in many["status"] and "is 2 tokens" in many["status"]
    empty = call(client, "greedy_branch", "greedy", max_new_tokens=4, step=1, row=0, token="")
    assert "`token` is empty" in empty["status"]


@pytest.mark.parametrize("key,settings", [("greedy", {}), ("sampling", dict(seed=5, temperature=1.0, top_k=0))])
def test_next_token_to_the_end_equals_one_generate(client, key, settings):
    whole = trace_of(call(client, f"{key}_generate", key, max_new_tokens=6, **settings))
    for _ in range(6):
        out = call(client, f"{key}_next_token", key, max_new_tokens=6, **settings)
        assert "Not run" not in out["status"], out["status"]
    stepped = trace_of(out)
    assert stepped.sequences == whole.sequences and len(stepped.steps) == 6
    assert "Next token goes on" not in out["status"]  # the sixth token ended it: no longer paused


def test_generate_resumes_a_paused_run_to_the_end(client):
    settings = dict(seed=9, temperature=1.0, top_k=0)
    whole = trace_of(call(client, "sampling_generate", "sampling", max_new_tokens=8, **settings))
    for _ in range(3):
        paused = call(client, "sampling_next_token", "sampling", max_new_tokens=8, **settings)
    assert "Next token goes on" in paused["status"]
    resumed = trace_of(call(client, "sampling_generate", "sampling", max_new_tokens=8, **settings))
    assert resumed.sequences == whole.sequences and resumed.run_id == trace_of(paused).run_id


def test_sample_many_equals_its_seeded_single_runs(client):
    settings = dict(seed=20, temperature=1.0, top_k=0, max_new_tokens=6, logit_lens=True)
    many = call(client, "sampling_sample_many", "sampling", n=4, **settings)
    assert "×4 (seeds 20..23)" in many["status"]
    facts = trace_of(many).facts  # the label is drawn from the facts the trace file carries
    assert facts["seeds"] == [20, 21, 22, 23] and facts["prompt"] == PROMPT and facts["chat"] in (True, False)
    rows = trace_of(many).sequences
    assert len(rows) == 4
    assert all(step.lens is None for step in trace_of(many).steps)  # the tab's logit lens is left out of Sample N
    for i in range(4):
        single = trace_of(call(client, "sampling_generate", "sampling", **{**settings, "seed": 20 + i}))
        assert rows[i][:len(single.sequences[0])] == single.sequences[0] and single.steps[0].lens
    tree = many["figure:Samples"]
    counts = [p for t in json.loads(tree["plot"])["data"] if t.get("meta") == "branches" for p in t["customdata"]]
    assert sum(c for c in counts[:1]) <= 4 and max(counts) <= 4  # counts of the first steps add up to N


def test_the_branch_tree_downloads_loads_back_and_compares(client):
    first = trace_of(call(client, "greedy_generate", "greedy", max_new_tokens=6))
    assert first.steps[0].lens is None  # the logit lens is off unless its checkbox asks for it
    rs = first.steps[1].rows[0]
    forced = next(c.token_id for c in rs.candidates if c.token_id not in rs.chosen)
    out = call(client, "greedy_branch", "greedy", max_new_tokens=6, step=1, row=0, token=f"#{forced}")
    second = trace_of(out)
    tree = json.loads(out["figure:Branch tree"]["plot"])
    runs = [p for t in tree["data"] if t.get("meta") == "runs" for p in t["customdata"]]
    assert set(runs) >= {first.run_id, second.run_id}
    _, _, first_pick, second_pick, path, *_ = client.predict(None, None, None, api_name="/branches_refresh")
    branches = Branches.from_json(open(path).read())
    assert {first.run_id, second.run_id} <= set(branches.entries)
    assert json.loads(Branches.from_json(branches.to_json()).to_json()) == json.loads(branches.to_json())
    text_a, text_b, where, *_ = client.predict(first.run_id, second.run_id, api_name="/branches_compare")
    assert "diverge at position 1" in where and text_a != text_b
    fresh = Client(client.src, verbose=False)
    status = fresh.predict(handle_file(path), api_name="/branches_load")
    fresh.close()
    assert status == f"Loaded {len(branches.entries)} runs."


def test_a_beam_node_branch_continues_its_hypothesis(served, client):  # noqa: F811
    parent = trace_of(call(client, "beam_generate", "beam", max_new_tokens=6, num_beams=3))
    node = next(n for n in parent.steps[2].beam if n.fate == "pruned")
    out = call(client, "beam_branch_node", "beam", max_new_tokens=4, num_beams=3, node=node.node_id)
    assert "Not run" not in out["status"], out["status"]
    child = trace_of(out)
    nodes = {n.node_id: n for rec in parent.steps for n in rec.beam}
    path, cursor = [], node.node_id
    while cursor in nodes:
        path.append(nodes[cursor].token_id)
        cursor = nodes[cursor].parent
    assert child.origin.prefix == path[::-1] and child.origin.parent == parent.run_id
    ids = torch.tensor(child.prompt_ids)
    expected = model_of(served).model.generate(ids, attention_mask=torch.ones_like(ids), num_beams=3, do_sample=False,
                                               max_new_tokens=4)
    assert child.sequences[0] == expected[0].tolist()


def test_clicking_a_run_of_the_branch_tree_shows_it(served, client):  # noqa: F811
    """The branch tree's click (a select event with the run id, from assets/plot_click.js) shows that run."""
    demo, _, _ = served
    first = trace_of(call(client, "greedy_generate", "greedy", max_new_tokens=5))
    call(client, "greedy_generate", "greedy", max_new_tokens=3)
    ui = next(h.ui for h in demo.handles if h.key == "greedy")
    branches = demo.state_holder.session_data[client.session_hash]
    state = next(v for v in branches.state_data.values() if type(v).__name__ == "Branches")
    out = ui.clicked({}, state, type("Evt", (), {"value": "runs", "index": first.run_id})())
    assert out[ui.out.texts[0]] == first.texts[0]
    assert "Greedy" in out[ui.out.status]


def test_a_loaded_trace_that_is_not_a_tree_or_past_the_vocabulary_is_refused_with_its_field(client, tmp_path):
    """A ~300-byte trace whose beam node is its own parent answers at once; a loaded trace's out-of-vocabulary prompt
    id is named before the branch reaches the model."""
    loop = tmp_path / "loop.json"
    loop.write_text(json.dumps({"strategy": "beam", "config": {}, "prompt_ids": [[1, 5]], "steps": [
        {"step": 0, "strategy": "beam", "rows": [], "best_nodes": [7], "beam": [
            {"node_id": 7, "parent": 7, "batch": 0, "token_id": 3, "text": "a", "score": -1.0,
             "normalized_score": -1.0, "fate": "kept"}]}]}))
    job = client.submit(handle_file(str(loop)), api_name="/beam_load_trace")
    out = outputs_of("beam", job.result(timeout=30))
    assert "beam node 7's parent 7 is not an earlier node" in out["status"], out["status"]
    parent = call(client, "greedy_generate", "greedy", max_new_tokens=4)
    data = trace_of(parent).to_dict()
    data["prompt_ids"][0][1] = 99_999
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    outputs_of("greedy", client.predict(handle_file(str(edited)), api_name="/greedy_load_trace"))
    out = call(client, "greedy_branch", "greedy", max_new_tokens=4, step=1, row=0, token="#5")
    assert "trace prompt_ids: token id 99999 is outside the model's vocabulary [0, " in html.unescape(out["status"]), \
        out["status"]

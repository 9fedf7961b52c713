"""Many visitors, one process: builds and sessions own nothing in common. Two apps built in one process work each on
their own cache; seeded runs of concurrent API clients equal their solo runs; a session's files and states go when
it ends; every run stops at the server's wall-clock cap."""

from __future__ import annotations

import os
import threading
import time

import pytest
from gradio_client import Client

import app
from playground import session
from playground.state import ModelCache
from test_ui_handlers import PROMPT, outputs_of, tiny_folder  # noqa: F401 - the fixture

SAMPLING = dict(max_new_tokens=12, temperature=1.0, top_k=0, top_p=1.0)


@pytest.fixture(scope="module")
def served(tiny_folder):  # noqa: F811
    models = ModelCache()
    demo = app.build_demo(tiny_folder, models=models, max_seconds=60)
    app.launch(demo, prevent_thread_lock=True, quiet=True, server_port=None)
    yield demo
    demo.close()


def sample(client: Client, seed: int) -> str:
    job = client.submit(api_name="/sampling_generate", prompt=PROMPT, seed=seed, **SAMPLING)
    return outputs_of("sampling", job.result(timeout=120))["text0"]


def test_two_apps_in_one_process_each_use_their_own_build(tiny_folder, embedded):  # noqa: F811
    """Tab objects are registered once per process; what a build makes (its cache, its widgets) stays with it."""
    first, second = ModelCache(), ModelCache()
    demo_a = app.build_demo(tiny_folder, models=first)
    demo_b = app.build_demo(None, models=second)  # the embedded model
    ui_a = {h.key: h.ui for h in demo_a.handles}
    ui_b = {h.key: h.ui for h in demo_b.handles}
    assert all(ui_a[k] is not ui_b[k] and ui_a[k].app.models is first and ui_b[k].app.models is second
               for k in ui_a)
    greedy = ui_a["greedy"]  # its settings as the page shows them: the side checkboxes unticked
    out = list(greedy.generate(greedy.inputs(model=demo_a.startup_model, prompt=PROMPT)))[-1]
    assert out[ui_a["greedy"].out.status].startswith("**Greedy**")
    assert first.loaded() == [tiny_folder] and second.loaded() == ["smollm2-135m-instruct"]


def test_concurrent_seeded_clients_get_their_solo_text(served):
    """Four API sessions sampling at once (two generation slots, so runs interleave) with fixed seeds: each text
    equals the same call made alone."""
    solo_client = Client(served.local_url, verbose=False)
    solo = {seed: sample(solo_client, seed) for seed in (1, 2)}
    solo_client.close()
    clients = [Client(served.local_url, verbose=False) for _ in range(4)]
    results: dict[int, str] = {}
    start = threading.Barrier(len(clients))

    def visit(i: int, client: Client):
        start.wait()
        results[i] = sample(client, 1 + i % 2)

    threads = [threading.Thread(target=visit, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    for c in clients:
        c.close()
    assert {i: results[i] for i in range(4)} == {i: solo[1 + i % 2] for i in range(4)}


def test_a_sessions_files_and_states_go_when_it_ends(served):
    client = Client(served.local_url, verbose=False)
    job = client.submit(api_name="/greedy_generate", prompt=PROMPT, max_new_tokens=4)
    download = outputs_of("greedy", job.result(timeout=120))["download"]
    folder = session.root() / client.session_hash
    assert folder.is_dir() and [p.name for p in folder.iterdir()] and download
    assert client.session_hash in served.state_holder
    client.close()  # its heartbeat stops: Gradio fires the unload event
    deadline = time.monotonic() + 60
    while (folder.exists() or client.session_hash in served.state_holder) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()
    assert client.session_hash not in served.state_holder


def test_a_session_keeps_one_trace_file_per_tab(served):
    client = Client(served.local_url, verbose=False)
    for _ in range(3):
        client.submit(api_name="/greedy_generate", prompt=PROMPT, max_new_tokens=3).result(timeout=120)
    files = list((session.root() / client.session_hash).glob("greedy-*.json"))
    client.close()
    assert len(files) == 1


def test_every_run_stops_at_the_servers_time_cap(tiny_folder):  # noqa: F811
    demo = app.build_demo(tiny_folder, models=ModelCache(), max_seconds=0.3)
    ui = next(h.ui for h in demo.handles if h.key == "sampling")
    # its settings as the page shows them (the side checkboxes unticked) but these
    out = list(ui.generate(ui.inputs(model=demo.startup_model, prompt=PROMPT * 20, chat=False, max_new_tokens=512,
                                     stop_strings="")))[-1]
    assert "stopped at the server's time limit" in out[ui.out.status]


def test_sweep_removes_folders_nobody_touched(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "root", lambda: tmp_path)
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        folder.mkdir()
        (folder / "t.json").write_text("{}")
    for path in (old, old / "t.json"):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert session.sweep(3600) == 1 and not old.exists() and new.exists()


def test_a_sessions_gradio_config_does_not_grow_with_its_runs(served):
    """Gradio 6.31 filed a per-session copy of every prop-updated output under a new id on each run (~11
    components, each with its last value, per run); ``gradio_patches.keep_component_ids`` keeps the copies' ids."""
    client = Client(served.local_url, verbose=False)
    sizes = []
    for i in range(3):
        client.submit(api_name="/sampling_generate", prompt=PROMPT, seed=i, **SAMPLING).result(timeout=120)
        sizes.append(len(served.state_holder.session_data[client.session_hash].blocks_config.blocks))
    client.close()
    assert sizes[0] == sizes[-1] <= len(served.blocks)


def test_the_heap_is_trimmed_on_glibc():
    assert session.trim_heap()  # Linux with glibc, as on a Space

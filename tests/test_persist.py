"""What survives a reload and what a share link carries (``playground.persist``), without a browser: the branch tree's
bounded form, each value checked as its widget takes it, the share link written and read back, and the page load's
restore over a built app (a value that does not fit is left out with a message; nothing crashes)."""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import gradio as gr
import pytest

import core
from core.steer import branch
from playground import persist
from playground.branches import KEEP_CANDIDATES, Branches, edge_label, spelled
from playground.figures.branches import branch_tree_figure
from playground.runs import Run
from playground.tabs import status as status_text
from test_ui_handlers import tiny_folder  # noqa: F401 - the fixture


# --- the branch tree's bounded form --------------------------------------------------------------------------------
def run(model, ids, origin=None, **kwargs):
    rec = core.ListRecorder(top_n=10)
    return core.generate(model, ids, recorder=rec, origin=origin, **{"max_new_tokens": 8, **kwargs}).trace


@pytest.fixture(scope="module")
def tree(tiny_model):
    """A greedy run, a beam run, and a branch of the greedy run forcing its 9th-best candidate at step 2."""
    import torch

    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    first = run(tiny_model, ids, repetition_penalty=1.2)
    beam = run(tiny_model, ids, num_beams=3)
    forced = first.steps[2].rows[0].candidates[8].token_id
    child_ids, origin = branch(first, 2, 0, forced)
    child = run(tiny_model, child_ids, origin=origin)
    branches = Branches()
    for tab, trace in (("greedy", first), ("beam", beam), ("greedy", child)):
        branches.add(tab, tab, "a prompt", trace)
    return branches, forced


def test_the_bounded_form_keeps_what_the_tree_and_the_comparison_read(tree):
    branches, forced = tree
    full = branches.to_json()
    bounded = branches.to_json(max_chars=10 ** 9)
    assert len(bounded) < 0.6 * len(full)
    back = Branches.from_json(bounded)
    assert list(back.entries) == list(branches.entries)
    for run_id, entry in branches.entries.items():
        again = back.entries[run_id]
        assert again.tokens() == entry.tokens() and again.prompt_key == entry.prompt_key
        assert spelled(again, back) == spelled(entry, branches)
        assert edge_label(again, back) == edge_label(entry, branches)
        for rec in again.trace.steps:
            assert rec.contrastive is None and rec.cache is None and rec.best is None
            for rs in rec.rows:
                assert rs.effects == [] and set(rs.chosen) <= {c.token_id for c in rs.candidates}
    first = back.entries[next(iter(back.entries))]
    kept = [c.token_id for c in first.trace.steps[2].rows[0].candidates]
    assert forced in kept and len(kept) == KEEP_CANDIDATES + 1  # the child's forced token stays with its parent
    key = first.prompt_key
    assert branch_tree_figure(back, key, None).to_json() == branch_tree_figure(branches, key, None).to_json()
    beam = next(e for e in back.entries.values() if e.tab == "beam")
    nodes = {n.node_id for rec in beam.trace.steps for n in rec.beam or ()}
    assert nodes and all(n in nodes for n in beam.trace.steps[-1].best_nodes)  # the returned hypotheses' paths


def test_the_bounded_form_keeps_the_newest_runs_that_fit(tree):
    branches, _ = tree
    sizes = [len(json.dumps(json.loads(Branches({k: e}).to_json(max_chars=10 ** 9))["runs"][0]))
             for k, e in branches.entries.items()]
    budget = sizes[-1] + sizes[-2] + 200  # the two newest, not the oldest
    kept = Branches.from_json(branches.to_json(max_chars=budget))
    assert list(kept.entries) == list(branches.entries)[1:]
    assert len(branches.to_json(max_chars=budget)) <= budget
    assert Branches.from_json(branches.to_json(max_chars=50)).entries == {}  # nothing fits: an empty tree, still valid
    # the child lost its parent: it hangs from the prompt, its prefix spelled by ids, and nothing crashes
    orphan = Branches.from_json(branches.to_json(max_chars=sizes[-1] + 100))
    entry = next(iter(orphan.entries.values()))
    assert edge_label(entry, orphan) == "" and spelled(entry, orphan)


def test_a_kept_tree_goes_before_the_session_runs(tree):
    branches, _ = tree
    ids = list(branches.entries)
    session = Branches({ids[2]: branches.entries[ids[2]]})
    session.extend(Branches.from_json(branches.to_json()))
    assert list(session.entries) == [ids[0], ids[1], ids[2]]
    assert session.entries[ids[2]] is branches.entries[ids[2]]  # the session's own run stays as it is


def test_a_kept_tree_that_is_not_one_is_ignored_with_a_message():
    assert persist.restore_tree(None) == (None, "")
    for bad in ("{", json.dumps({"format": "other", "runs": []}), 12, "x" * (2 * persist.TREE_CHARS + 1)):
        tree, problem = persist.restore_tree(bad)
        assert tree is None and problem, bad


# --- one value, as its widget takes it -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def widgets():
    with gr.Blocks():
        return {"temperature": gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature"),
                "max_new_tokens": gr.Slider(1, 512, value=32, step=1, label="max_new_tokens"),
                "seed": gr.Number(value=0, precision=0, label="seed"),
                "chat": gr.Checkbox(value=True, label="chat"),
                "prompt": gr.Textbox("hi", label="Prompt"),
                "num_assistant_tokens_schedule": gr.Radio(["constant", "heuristic"], value="constant", label="s"),
                "assistant_model": gr.Dropdown(["a", "b"], value="a", allow_custom_value=True, label="assistant"),
                "strategies": gr.CheckboxGroup(["x, y", "z"], value=["z"], label="Strategies"),
                "sequence_bias": gr.Textbox("", label="sequence_bias"),
                "dola_layers": gr.Textbox("low", label="dola_layers")}


@pytest.mark.parametrize("name,value,message", [
    ("temperature", 5, r"`temperature` must be a number in \[0, 2\]; got 5"),
    ("temperature", "hot", r"`temperature` must be a number in \[0, 2\]; got 'hot'"),
    ("temperature", float("nan"), "`temperature` must be a number"),
    ("max_new_tokens", 7.5, r"`max_new_tokens` must be a whole number in \[1, 512\]; got 7.5"),
    ("seed", 1.5, "`seed` must be a whole number; got 1.5"),
    ("chat", "yes", "`chat` must be true or false"),
    ("prompt", 3, "`prompt` must be text"),
    ("prompt", "x" * (persist.MAX_TEXT + 1), "`prompt` must be at most 20,000 characters"),
    ("num_assistant_tokens_schedule", "fast", r"must be one of \['constant', 'heuristic'\]; got 'fast'"),
    ("strategies", ["w"], r"`strategies` must be a list of"),
    ("sequence_bias", "[[", r"`sequence_bias` must be JSON"),
    ("dola_layers", "top", r"`dola_layers` must be \"low\", \"high\" or a list"),
])
def test_a_value_that_does_not_fit_its_widget_is_named_with_what_it_takes(widgets, name, value, message):
    with pytest.raises(ValueError, match=message):
        persist.check(name, widgets[name], value)


def test_values_that_fit_come_back_as_the_widget_takes_them(widgets):
    assert persist.check("max_new_tokens", widgets["max_new_tokens"], 12.0) == 12
    assert persist.check("temperature", widgets["temperature"], 1) == 1.0
    assert persist.check("seed", widgets["seed"], None) is None  # empty: a new random seed each run
    assert persist.check("assistant_model", widgets["assistant_model"], "org/model") == "org/model"  # typed
    assert persist.check("strategies", widgets["strategies"], ["x, y"]) == ["x, y"]


def test_a_share_link_reads_back_the_values_it_wrote(widgets, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    values = {"prompt": "Name a fruit & a colour?", "temperature": 0.7, "max_new_tokens": 32, "chat": False,
              "strategies": ["x, y", "z"], "assistant_model": "a", "seed": None, "sequence_bias": '[[" a", -1.5]]'}
    url = persist.share_url("http://127.0.0.1:7860/?view=api#x", "sampling", widgets, values)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("http", "127.0.0.1:7860", "/", "")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    # the defaults stay out of the link (max_new_tokens 32, assistant_model "a"); the prompt is always in it
    assert set(params) == {"tab", "prompt", "temperature", "chat", "strategies", "seed", "sequence_bias"}
    key, read, problems = persist.read_link(params, {"sampling": widgets})
    assert key == "sampling" and problems == []
    assert read == {k: v for k, v in values.items() if k in params}
    monkeypatch.setenv("SPACE_ID", "someone/decoding-playground")
    space = persist.share_url("https://someone-decoding-playground.hf.space/", "sampling", widgets, values)
    assert space.startswith("https://huggingface.co/spaces/someone/decoding-playground?tab=sampling&prompt=")


def test_a_hand_edited_share_link_applies_what_fits_and_names_the_rest(widgets):
    params = {"tab": "sampling", "prompt": "Hi", "temperature": "9", "max_new_tokens": "ten", "chat": "maybe",
              "top_q": "1", "__theme": "dark", "strategies": "z"}
    key, values, problems = persist.read_link(params, {"sampling": widgets})
    assert key == "sampling" and values == {"prompt": "Hi"}
    text = "; ".join(problems)
    for expected in (r"`temperature` must be a number in [0, 2]; got 9", "`max_new_tokens` must be a whole number",
                     "`chat` must be true or false; got 'maybe'", "`top_q` is not a setting of this tab",
                     "`strategies` must be a JSON list"):
        assert expected in text, text
    assert persist.read_link({"tab": "nope"}, {"sampling": widgets})[2] == ["`tab` must be one of sampling; got 'nope'"]
    assert persist.read_link({"__theme": "dark"}, {"sampling": widgets}) == (None, {}, [])


def test_kept_settings_of_another_version_or_with_a_lost_field_are_left_out(widgets):
    good = persist.stored("sampling", {"prompt": "Hello", "temperature": 0.5, "top_q": 3, "max_new_tokens": 999})
    values, problems = persist.restore("sampling", widgets, good)
    assert values == {"prompt": "Hello", "temperature": 0.5}
    assert problems[0] == "`top_q` is no longer a setting of this tab" and "`max_new_tokens` must be" in problems[1]
    for bad in ("text", {"version": 0, "tab": "sampling", "values": {}}, {"version": 1, "tab": "beam", "values": {}}):
        values, problems = persist.restore("sampling", widgets, bad)
        assert values == {} and len(problems) == 1
    assert persist.restore("sampling", widgets, None) == ({}, [])


def test_the_listener_keeps_what_differs_from_the_defaults_once_the_load_is_done():
    js = persist.save_js("greedy", {"prompt": "Hi", "top_p": 1.0})
    assert f"if (!window.{persist.READY}) return v[2];" in js and 'const d = ["Hi", 1];' in js
    assert '["prompt", "top_p"]' in js and "JSON.stringify(x) !== JSON.stringify(d[i])" in js


# --- the page load over a built app --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tiny_folder):  # noqa: F811
    import app
    from playground.state import ModelCache

    return app.build_demo(tiny_folder, models=ModelCache())


def request(**params):
    return SimpleNamespace(query_params=params, session_hash="test")


def test_the_page_load_restores_each_tab_and_the_tree(built, tree):
    keeper = built.keeper
    greedy, sampling = keeper.tabs["greedy"], keeper.tabs["sampling"]
    g, s = greedy.settings, sampling.settings
    data = {greedy.w.store: persist.stored("greedy", {"prompt": "Kept prompt", "repetition_penalty": 1.3,
                                                      "max_new_tokens": 600, "gone": 1}),
            sampling.w.store: persist.stored("sampling", {"temperature": 0.4, "seed": 7}),
            keeper.tree: tree[0].to_json(max_chars=persist.TREE_CHARS), keeper.branches: Branches()}
    out = keeper.load(data, request())
    assert out[g["prompt"]] == "Kept prompt" and out[g["repetition_penalty"]] == 1.3
    assert g["max_new_tokens"] not in out  # out of range: left as the page shows it
    assert "`max_new_tokens` must be a whole number in [1, 512]; got 600" in shown(out[greedy.out.status])
    assert "`gone` is no longer a setting" in shown(out[greedy.out.status])
    assert out[s["temperature"]] == 0.4 and out[s["seed"]] == 7 and sampling.out.status not in out
    assert out[greedy.w.store]["values"] == {"prompt": "Kept prompt", "repetition_penalty": 1.3}  # misfits dropped
    assert list(out[keeper.branches].entries) == list(tree[0].entries)
    assert keeper.tabs_block not in out  # no link: the first tab stays selected


def test_a_share_link_opens_its_tab_over_what_the_browser_kept(built):
    keeper = built.keeper
    beam = keeper.tabs["beam"]
    b = beam.settings
    data = {beam.w.store: persist.stored("beam", {"prompt": "Kept", "num_beams": 3, "length_penalty": 1.5})}
    out = keeper.load(data, request(tab="beam", prompt="Linked", num_beams="5", length_penalty="99"))
    assert out[b["prompt"]] == "Linked" and out[b["num_beams"]] == 5 and out[b["length_penalty"]] == 1.5
    assert out[keeper.active_tab] == "beam" and out[keeper.tabs_block].selected == "beam"
    assert "Opened from a share link; not applied: `length_penalty` must be" in shown(out[beam.out.status])
    bad = keeper.load({}, request(tab="nowhere"))
    assert keeper.tabs_block not in bad and all(ui.out.status not in bad for ui in keeper.tabs.values())


def test_share_link_in_a_tab_writes_its_prompt_and_changed_settings(built, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    ui = built.keeper.tabs["greedy"]
    values = {name: c.value for name, c in ui.settings.items()}
    values.update(prompt="Why?", repetition_penalty=1.25)
    out = ui.share_link(*values.values(), "http://localhost:7860/")
    link = out[ui.w.link].value
    assert link == "http://localhost:7860/?tab=greedy&prompt=Why%3F&repetition_penalty=1.25"
    values["prompt"] = "x" * 9_000
    out = ui.share_link(*values.values(), "http://localhost:7860/")
    assert out[ui.w.link].visible is False and "more than a server reads" in out[ui.out.status]


# --- what a visitor sent shows as text ----------------------------------------------------------------------------
IMAGE, LINK = '<img src="http://example.org/p.png">', "[x](http://evil)"


def shown(markdown: str) -> str:
    """The text a page shows of status ``markdown``: rendered as CommonMark (markdown-it, as the page's marked reads
    it), checked to make no element but paragraphs, line breaks, emphasis and code (no image, no link, no raw HTML),
    and no bare ``http://`` or ``www.`` that the page's GitHub-flavoured Markdown would make a link of. A code span
    reads as its text in backticks."""
    from markdown_it import MarkdownIt

    assert "http://" not in markdown and "www." not in markdown, markdown
    rendered = MarkdownIt("commonmark").render(markdown)
    assert set(re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", rendered)) <= {"p", "br", "em", "strong", "code"}, rendered
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"</?code>", "`", rendered))).strip()


def toast(message: str) -> str:
    """The text a toast shows of ``message`` (the page renders it as HTML), checked to hold no tag."""
    assert "<" not in message and ">" not in message and "http://" not in message, message
    return html.unescape(message)


@pytest.mark.parametrize("value", [IMAGE, LINK])
def test_a_share_links_values_show_as_text_in_the_status_and_the_warning(built, value):
    keeper = built.keeper
    greedy = keeper.tabs["greedy"]
    with pytest.warns(UserWarning) as caught:
        out = keeper.load({}, request(tab="greedy", max_new_tokens=value, **{value: "1"}))
    status = shown(out[greedy.out.status])
    assert f"`max_new_tokens` must be a whole number in [1, 512]; got {value!r}" in status
    assert f"`{value}` is not a setting of this tab" in status  # a name the link made up, too
    (warning,) = [str(w.message) for w in caught if str(w.message).startswith("Share link")]
    assert f"got {value!r}" in toast(warning) and f"`{value}` is not a setting" in toast(warning)
    assert out[greedy.w.store]["values"] == {}  # what was refused is not written back


def test_kept_values_show_as_text_and_a_refused_one_is_not_kept(built):
    keeper = built.keeper
    greedy = keeper.tabs["greedy"]
    data = {greedy.w.store: persist.stored("greedy", {"prompt": LINK, "max_new_tokens": IMAGE, IMAGE: 1}),
            keeper.tree: LINK}
    with pytest.warns(UserWarning) as caught:
        out = keeper.load(data, request())
    status = shown(out[greedy.out.status])
    assert f"got {IMAGE!r}" in status and f"`{IMAGE}` is no longer a setting" in status
    assert out[greedy.w.store]["values"] == {"prompt": LINK}  # a prompt is text in a textbox: kept as typed
    assert any("branch tree" in toast(str(w.message)) for w in caught)


def test_a_refused_value_shows_as_text_in_a_tabs_status_and_warning(built):
    """``_error``, the path every handler's ValueError takes (here Share link's check of the settings)."""
    ui = built.keeper.tabs["greedy"]
    values = {name: c.value for name, c in ui.settings.items()}
    values["max_new_tokens"] = IMAGE
    with pytest.warns(UserWarning) as caught:
        out = ui.share_link(*values.values(), "http://localhost:7860/")
    assert shown(out[ui.out.status]) == f"Not run: `max_new_tokens` must be a whole number in [1, 512]; got {IMAGE!r}"
    assert toast(str(caught[0].message)) == f"`max_new_tokens` must be a whole number in [1, 512]; got {IMAGE!r}"


def test_a_runs_label_and_note_show_as_text():
    """A label may come from a loaded trace or tree file, a note may quote a setting."""
    line = status_text.status_line({"main": Run("main", IMAGE, done=True)}, note=LINK)
    assert shown(line).splitlines() == [f"{IMAGE}: 0 tokens in 0.00 s (0.0 tokens/s)", LINK]
    names = "`max_new_tokens` and `owner/model-1.5`"  # names stay code spans
    assert status_text.plain(names) == names

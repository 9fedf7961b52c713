"""The UI's English and Arabic (``playground.i18n``): every entry in both languages, the field names and code in it
kept as they are, every Arabic text opening with an Arabic word (the page lays each paragraph out in the direction of
its first letters), and a built app whose every translated label has an entry, whose every entry is in use and whose
``GenerationConfig``-field widgets keep the field's name untranslated. The browser side (the Arabic page renders
translated, right to left) is in ``test_browser.py``."""

from __future__ import annotations

import re
import unicodedata

import pytest
import torch
from gradio.i18n import I18nData
from transformers import GenerationConfig

import app
from conftest import tiny_llama
from core.models import DEFAULT_NAME, LoadedModel
from playground import i18n
from playground.fields import GROUPS
from playground.state import ModelCache

# entries a build shows only on a Space, or only with (or without) a GPU
CONDITIONAL = {"info_token_space", "intro_cache", "intro_cache_no_gpu"}
SAME_IN_BOTH = {"tab_dola"}  # a name, in Latin letters in Arabic too
ARABIC = re.compile("[\u0600-\u06ff]")
CODE = re.compile(r"`[^`]+`")
FIELD_NAMES = set(GenerationConfig().to_dict()) | {f.name for g in GROUPS.values() for f in g.fields} | {"seed"}


def first_strong(text: str) -> str:
    """The bidi class of ``text``'s first strongly directional letter, markdown marks and code spans left out: "L"
    (Latin), "R"/"AL" (Hebrew, Arabic), "" for none."""
    for ch in CODE.sub("", text):
        kind = unicodedata.bidirectional(ch)
        if kind in ("L", "R", "AL"):
            return kind
    return ""


def test_every_entry_has_both_languages():
    assert set(i18n.EN) == set(i18n.AR) == set(i18n.TEXTS)
    for key, (en, ar) in i18n.TEXTS.items():
        assert en.strip() and ar.strip(), key
        assert re.fullmatch(r"[a-z][a-z0-9_]*", key), f"{key!r}: keys are snake_case (a dot is a path to Gradio)"
        if key in SAME_IN_BOTH:
            assert ar == en, key
        else:
            assert ARABIC.search(ar) and ar != en, f"{key}: no Arabic in {ar!r}"
    assert i18n.I18N.translations_dict == {"en": i18n.EN, "ar": i18n.AR}


def test_field_names_and_code_stay_as_they_are_in_arabic():
    for key, (en, ar) in i18n.TEXTS.items():
        spans = CODE.findall(en)
        assert sorted(spans) == sorted(CODE.findall(ar)), f"{key}: code spans differ"
        for name in set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", CODE.sub("", en))) & FIELD_NAMES:
            assert name in ar, f"{key}: the field name {name} is not in the Arabic"


def test_every_arabic_text_opens_with_an_arabic_word():
    for key, ar in i18n.AR.items():
        if key not in SAME_IN_BOTH:
            assert first_strong(ar) == "AL", f"{key}: {ar[:40]!r} opens with a Latin word and would lay out LTR"


def test_tr_marks_known_texts_and_leaves_the_rest(monkeypatch):
    monkeypatch.setattr(i18n, "_MISSING", set())  # the build's own misses are checked below
    mark = i18n.tr("Generate")
    assert isinstance(mark, I18nData) and mark.key == "btn_generate" and i18n.english(mark) == "Generate"
    assert i18n.tr("num_beams") == "num_beams" and i18n.english("num_beams") == "num_beams"
    assert i18n.missing() == {"num_beams"}


class Loader:
    """Tiny random models for every name: the layout, not the model, is under test."""

    def __call__(self, name=None, dtype="float32"):
        return LoadedModel(tiny_llama(0).to(getattr(torch, dtype)), None, name or DEFAULT_NAME, dtype=dtype)


def built(public: bool) -> object:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPACE_ID", raising=False)
        mp.setenv("PLAYGROUND_PUBLIC", "1") if public else mp.delenv("PLAYGROUND_PUBLIC", raising=False)
        return app.build_demo("org/model", models=ModelCache(capacity=2, loader=Loader()))


@pytest.fixture(scope="module")
def demos():
    return built(public=False), built(public=True)


def marked(demo):
    """(block, attribute, I18nData) for every translated text of ``demo``'s components."""
    for block in demo.blocks.values():
        for attr in ("label", "info", "placeholder", "value"):
            value = getattr(block, attr, None)
            if isinstance(value, I18nData):
                yield block, attr, value


def test_a_built_app_translates_through_entries_it_has_and_uses_them_all(demos):
    for demo in demos:
        assert not i18n.missing(), f"texts with no entry (English in every language): {i18n.missing()}"
        keys = {value.key for _, _, value in marked(demo)}
        assert keys and keys <= set(i18n.TEXTS)
    assert i18n.unused() <= CONDITIONAL, f"entries no call site uses: {i18n.unused() - CONDITIONAL}"


def test_field_name_labels_are_not_translated(demos):
    demo = demos[0]
    seen = set()
    for handle in demo.handles:
        for name, widget in handle.controls.items():
            assert not isinstance(widget.label, I18nData) and widget.label == name, (handle.key, name, widget.label)
            seen.add(name)
    assert {"max_new_tokens", "num_beams", "temperature", "penalty_alpha", "dola_layers"} <= seen
    plain = {block.label for block in demo.blocks.values() if isinstance(getattr(block, "label", None), str)}
    assert {"seed", "dtype", "config_file_name", "model.generation_config", "GenerationConfig JSON"} <= plain


def test_api_names_stay_english(demos):
    """What API clients address is not translated: endpoint names, output names, tab titles and figure labels."""
    demo = demos[0]
    assert all(isinstance(h.title, str) for h in demo.handles)
    for handle in demo.handles:
        if handle.ui is not None:
            names = handle.ui.tab.output_names()
            assert all(isinstance(n, str) and "__i18n__" not in n for n in names), handle.key
    api = demo.get_api_info()["named_endpoints"]
    assert "/greedy_generate" in api and "/load_model" in api

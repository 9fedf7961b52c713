"""The tab registry: one module per strategy tab, each registering a ``StrategyTab`` under its key.
``app.py`` builds every registered tab in order; adding a tab is one new module plus one line in
``_MODULES``.

Each built tab returns a ``TabHandle``: what other panels (the config save / load / share panel)
need to read a tab's settings as a ``GenerationConfig`` and to write a loaded one back.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gradio as gr

from ..field_codecs import config_value, widget_value

if TYPE_CHECKING:
    from .base import StrategyTab, TabUI

__all__ = ["TabHandle", "TABS", "register", "all_tabs", "config_value", "widget_value"]


@dataclass
class TabHandle:
    """A built tab.

    ``controls`` maps ``GenerationConfig`` field names to the widgets that set them. A widget's value
    is the field's value, except for three fields shown as text: ``stop_strings`` (comma-separated,
    ``\\n`` escapes), ``dola_layers`` ("low", "high" or "[8, 10]") and ``cache_config`` (JSON);
    convert with ``config_value(field, widget_value)`` / ``widget_value(field, config_value)``.
    ``extra`` is a ``gr.State`` holding a dict of loaded fields the tab has no widget for; the tab's
    Generate passes them to ``generate`` as they are (the tab's own defining fields still win).
    """

    key: str
    title: str
    controls: dict[str, gr.components.Component]
    extra: gr.State
    fixed: dict = field(default_factory=dict)  # fields that define the tab, e.g. {"do_sample": False}
    tab: gr.Tab | None = None
    generate: gr.Button | None = None
    ui: "TabUI | None" = None  # the build's handlers (tests call them directly)


TABS: dict[str, "StrategyTab"] = {}

# Tab order in the app. Each module registers itself on import.
_MODULES = ("greedy", "sampling", "beam", "beam_sample", "diverse_beam", "contrastive", "dola", "speculative",
            "cache", "compare")


def register(tab: "StrategyTab") -> "StrategyTab":
    TABS[tab.key] = tab
    return tab


def all_tabs() -> list["StrategyTab"]:
    """Every tab, in ``_MODULES`` order (each module registers the tab of its own name, whatever imported it first)."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return [TABS[name] for name in _MODULES] + [tab for key, tab in TABS.items() if key not in _MODULES]

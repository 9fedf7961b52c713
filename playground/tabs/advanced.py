"""The "Advanced" accordion of a tab, built from the declared fields (``playground.fields``): one widget per field,
labelled with the field's name, grouped as declared; fields the tab already has a control for are left out."""

from __future__ import annotations

import gradio as gr

from ..fields import GROUPS, Field
from ..i18n import tr


def widget(field: Field) -> gr.components.Component:
    """The widget of one declared field (its label is the field's name, so tests and the API find it by name)."""
    label, info = field.name, field.info
    if field.kind == "slider":
        return gr.Slider(field.lo, field.hi, value=field.default, step=field.step, label=label, info=info)
    if field.kind == "number":  # text, so that empty (unset) has a value the API can default to
        return gr.Textbox("" if field.default is None else str(field.default), label=label, info=info)
    if field.kind == "checkbox":
        return gr.Checkbox(value=field.default, label=label, info=info)
    lines = 3 if field.kind in ("lines", "json") else 1
    return gr.Textbox(field.default, label=label, info=info, lines=lines, max_lines=12)


def accordion(groups: tuple[str, ...], own: dict) -> dict[str, gr.components.Component]:
    """Build the "Advanced" accordion of ``groups`` (call inside the settings column); returns the widgets by field.
    ``own`` are the tab's controls: a field it already has is not repeated."""
    if not groups:
        return {}
    widgets: dict[str, gr.components.Component] = {}
    with gr.Accordion(tr("Advanced"), open=False):
        for key in groups:
            group = GROUPS[key]
            fields = [f for f in group.fields if f.name not in own]
            if not fields:
                continue
            gr.Markdown(f"**{tr(group.title)}**", label=f"{group.title} heading")
            for field in fields:
                widgets[field.name] = widget(field)
    return widgets


def with_advanced(own: dict, groups: tuple[str, ...]) -> dict[str, gr.components.Component]:
    """A tab's own controls followed by its Advanced widgets."""
    return {**own, **accordion(groups, own)}


__all__ = ["accordion", "with_advanced", "widget"]

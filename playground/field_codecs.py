"""Widget value <-> ``GenerationConfig`` value, field by field, and a tab's widgets -> ``generate`` kwargs. The
fields themselves (kinds, ranges, defaults) are in ``playground.fields``; this is how each is read and shown."""

from __future__ import annotations

import codecs
import json
from typing import Any

from .fields import BY_NAME as ADVANCED
from .fields import as_number_type

# Fields where 0 on a slider means "off"; transformers' own "off" is None for these.
ZERO_IS_OFF = {"min_p", "epsilon_cutoff", "eta_cutoff", "no_repeat_ngram_size",
               *(f.name for f in ADVANCED.values() if f.off == 0)}


# --- field codecs: config value <-> widget value ------------------------------------------------
def parse_stop_strings(value) -> list[str] | None:
    """Comma-separated text (``\\n`` escapes allowed) or a list -> list of stop strings, None when empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value) or None
    parts = [codecs.decode(p.strip(), "unicode_escape") for p in str(value).split(",")]
    return [p for p in parts if p] or None


def format_stop_strings(value) -> str:
    if not value:
        return ""
    values = [value] if isinstance(value, str) else value
    return ", ".join(v.encode("unicode_escape").decode() for v in values)


def parse_dola_layers(value) -> str | list[int] | None:
    """"low", "high", a JSON-ish list "[8, 10, 12]" / "8, 10, 12", or a list -> ``dola_layers``."""
    if value is None or value == "" or isinstance(value, list):
        return value or None
    text = str(value).strip()
    if text in ("low", "high"):
        return text
    try:
        layers = [int(p) for p in text.strip("[]").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f'`dola_layers` must be "low", "high" or a list of layer indices such as [8, 10, 12]; '
                         f"got {text!r}") from None
    return layers or None


def format_dola_layers(value) -> str:
    return value if isinstance(value, str) or value is None else json.dumps(list(value))


def parse_cache_config(value) -> dict | None:
    """JSON text or a dict -> ``cache_config``."""
    if value is None or value == "" or isinstance(value, dict):
        return value or None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`cache_config` must be a JSON object such as {{\"backend\": \"quanto\", \"nbits\": 4}}; "
                         f"got {value!r} ({err.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"`cache_config` must be a JSON object; got {value!r}")
    return parsed


def format_cache_config(value) -> str:
    return "" if not value else json.dumps(value)


def json_codec(name: str):
    """(parse, format) for a field shown as JSON text: empty text is unset."""

    def parse(value):
        if value is None or isinstance(value, (list, dict, tuple)):
            return value or None
        text = str(value).strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            example = ADVANCED[name].info if name in ADVANCED else "a JSON value"
            raise ValueError(f"`{name}` must be JSON ({example}); got {text!r} ({err.msg})") from None

    def format_(value):
        return "" if value is None else json.dumps(value, ensure_ascii=False)

    return parse, format_


def text_codec(value):
    """A string field: empty (or only blanks) is unset."""
    return value if isinstance(value, str) and value.strip() else None


def number_codec(name: str, integer: bool = False):
    """(parse, format) for a number shown as text: empty is unset; ``integer`` fields (token ids) parse to ints."""
    kind = "an integer" if integer else "a number"

    def parse(value):
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if not text:
            return None
        try:
            return int(text) if integer else float(text)
        except ValueError:
            raise ValueError(f"`{name}` must be {kind} (or empty: unset); got {text!r}") from None

    return parse, lambda v: "" if v is None else str(v)


def parse_names(value) -> list[str] | None:
    """Comma-separated names (or a list) -> a list, None when empty."""
    if value is None or isinstance(value, (list, tuple)):
        return list(value) or None if value is not None else None
    return [p.strip() for p in str(value).split(",") if p.strip()] or None


def format_names(value) -> str:
    return ", ".join(value) if value else ""


PARSERS = {"stop_strings": parse_stop_strings, "dola_layers": parse_dola_layers, "cache_config": parse_cache_config}
FORMATTERS = {"stop_strings": format_stop_strings, "dola_layers": format_dola_layers,
              "cache_config": format_cache_config}
for _field in ADVANCED.values():  # the Advanced fields shown as text (``playground.fields``)
    if _field.kind == "json":
        PARSERS[_field.name], FORMATTERS[_field.name] = json_codec(_field.name)
    elif _field.kind in ("text", "lines"):
        PARSERS[_field.name], FORMATTERS[_field.name] = text_codec, lambda v: v or ""
    elif _field.kind == "number":
        PARSERS[_field.name], FORMATTERS[_field.name] = number_codec(_field.name, _field.integer)
    elif _field.kind == "names":
        PARSERS[_field.name], FORMATTERS[_field.name] = parse_names, format_names


def config_value(name: str, widget_value: Any) -> Any:
    """The ``GenerationConfig`` value of field ``name`` from its widget's value. An Advanced field at its widget's
    default is unset, so a saved config holds only what was changed (the core's defaults are the same)."""
    value = _config_value(name, widget_value)
    if name in ADVANCED and value is not None and value == _config_value(name, ADVANCED[name].default):
        return None
    return value


def _config_value(name: str, widget_value: Any) -> Any:
    if name in PARSERS:
        return PARSERS[name](widget_value)
    if widget_value is None:
        return None
    widget_value = as_number_type(name, widget_value)
    if name in ZERO_IS_OFF and widget_value == 0:
        return None
    if name == "early_stopping" and widget_value in ("True", "False"):  # a radio of True / False / "never"
        return widget_value == "True"
    return widget_value


def widget_value(name: str, config_value_: Any) -> Any:
    """The widget value showing ``config_value_`` of field ``name`` (inverse of ``config_value``)."""
    if config_value_ is None and name in ADVANCED:
        return ADVANCED[name].default
    if name in FORMATTERS:
        return FORMATTERS[name](config_value_)
    if name in ZERO_IS_OFF and config_value_ is None:
        return 0
    if name == "early_stopping" and isinstance(config_value_, bool):
        return str(config_value_)
    return config_value_


def generate_kwargs(controls: dict[str, Any], extra: dict | None = None, fixed: dict | None = None) -> dict:
    """``generate`` overrides from a tab: loaded fields it has no widget for, then its widgets, then
    what defines the tab (``do_sample=False`` for greedy), which nothing may override."""
    kwargs = dict(extra or {})
    for name, value in controls.items():
        parsed = config_value(name, value)
        if parsed is None:
            kwargs.pop(name, None)
        else:
            kwargs[name] = parsed
    kwargs.update(fixed or {})
    return kwargs

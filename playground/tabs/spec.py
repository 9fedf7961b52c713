"""A strategy tab's inputs, outputs and run buttons, declared once by name.

Everything that used to list them again by position reads them from here: the run buttons' layout and wiring, the
names a handler receives its inputs by (``Inputs``), the API's parameter names (``named``) and ``api_name``s, the
settings a reload keeps and a share link carries (``TabSpec.settings``), the page load's outputs
(``persist.Keeper``) and a run endpoint's output names (``output_names``). A new run button is one ``RunButton`` line
(in ``RUN_BUTTONS`` for every tab, or in one tab's ``StrategyTab.buttons``) and one handler of the same name
(``TabHandlers``) that takes ``(inputs, request=None)``.

No Gradio here beyond the ``gr.Request`` annotation ``named`` hands on: the spec is names, the build maps them to
components (``TabUI.component``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import gradio as gr


@dataclass(frozen=True)
class RunButton:
    """A button that runs something into the tab's run outputs (streamed, cancelled by Stop, kept in the branch
    tree, followed by View code). ``name`` is the ``TabUI`` handler it calls and its API name's suffix
    (``<tab>_<name>``); ``inputs``, what it reads besides the run inputs (``TabSpec.run_inputs``), by name.
    ``flag`` names the ``StrategyTab`` attribute that shows it and names it in the API: on a tab without it the
    button is hidden and its event unnamed (still validated: a hand-made call is refused in words), or, in a
    ``place`` the tab does not lay out at all (``samples``), not built."""

    name: str
    label: str
    inputs: tuple[str, ...] = ()
    place: str = "steer"  # "prompt": beside Generate and Stop; "steer": under the alternatives; "samples": by N
    flag: str = ""
    variant: str = "secondary"


RUN_BUTTONS = (
    RunButton("generate", "Generate", place="prompt", variant="primary"),
    RunButton("branch", "Continue with this token", ("step", "row", "token")),
    RunButton("branch_node", "Continue from this node", ("node",), flag="beam"),
    RunButton("next_token", "Next token", flag="steppable"),
    RunButton("sample_many", "Sample N", ("n",), place="samples", flag="samples"),
)

# What every run button reads first: the session's states, the model, the prompt and the seed, then (by the tab's
# names, ``TabSpec``) its side inputs and controls, then the watched tokens.
RUN_HEAD = ("runs", "branches", "model", "prompt", "chat", "seed", "extra")


@dataclass(frozen=True)
class Output:
    """One entry of a run endpoint's outputs: a component of ``Outputs`` (``many``: a list of them, one per text
    label or figure) and whether API clients read it (``api``; states and figure tabs they do not)."""

    name: str
    api: bool = True
    many: str = ""  # "text": one per ``text_labels`` entry; "figure": one per figure


RUN_OUTPUTS = (Output("texts", many="text"), Output("status"), Output("plots", many="figure"), Output("tokens"),
               Output("step"), Output("alternatives"), Output("runs", api=False), Output("download"),
               Output("branches", api=False), Output("figure_tabs", api=False, many="figure"))


def output_names(n_texts: int, figure_labels: tuple[str, ...]) -> list[str]:
    """The API names of a run endpoint's outputs, in the order ``Outputs.ordered`` sends them (``RUN_OUTPUTS``)."""
    names: list[str] = []
    for out in RUN_OUTPUTS:
        if not out.api:
            continue
        if out.many == "text":
            names += [f"text{i}" for i in range(n_texts)]
        elif out.many == "figure":
            names += [f"figure:{label}" for label in figure_labels]
        else:
            names.append(out.name)
    return names


@dataclass(frozen=True)
class TabSpec:
    """One tab's names as a build made them: its side inputs and controls (by API name, in layout order) and which
    run buttons it has; the lists every handler, event and store reads are derived from these."""

    key: str
    seeded: bool
    side: tuple[str, ...]
    controls: tuple[str, ...]
    buttons: tuple[RunButton, ...]

    @property
    def run_inputs(self) -> tuple[str, ...]:
        return (*RUN_HEAD, *self.side, *self.controls, "watch")

    def inputs_of(self, button: RunButton) -> tuple[str, ...]:
        return (*self.run_inputs, *button.inputs)

    @property
    def settings(self) -> tuple[str, ...]:
        """What a reload keeps and a share link carries: the prompt, the chat box, the seed (seeded tabs), the side
        inputs and the controls, then the watched tokens and the token view's colouring."""
        return ("prompt", "chat", *(("seed",) if self.seeded else ()), *self.side, *self.controls, "watch",
                "colour_by")

    def api_name(self, button: RunButton, shown: bool) -> str | bool:
        return f"{self.key}_{button.name}" if shown else False


class Inputs(Mapping):
    """A handler's inputs by name (``inputs.prompt``, ``inputs["top_k"]``), with the tab's side inputs and controls
    as dicts of their own (``side``, ``controls``)."""

    def __init__(self, spec: TabSpec, values: Mapping[str, Any]):
        self._spec, self._values = spec, dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def side(self) -> dict[str, Any]:
        return {n: self._values[n] for n in self._spec.side}

    @property
    def controls(self) -> dict[str, Any]:
        return {n: self._values[n] for n in self._spec.controls}


def named(fn: Callable, spec: TabSpec, names: tuple[str, ...]) -> Callable:
    """``fn(Inputs, request=...)`` as Gradio calls an event's function: positionally, in ``names``' order, the
    ``gr.Request`` last. Its signature names each input, so the API (``gradio_client``) takes ``temperature=0.7``
    rather than ``param_9=0.7``."""
    def inputs(args) -> Inputs:
        return Inputs(spec, dict(zip(names, args)))

    if inspect.isgeneratorfunction(fn):
        def call(*args):
            yield from fn(inputs(args[:-1]), request=args[-1])
    else:
        def call(*args):
            return fn(inputs(args[:-1]), request=args[-1])
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    call.__signature__ = inspect.Signature(params)
    call.__annotations__ = {"request": gr.Request}  # how Gradio finds the parameter to pass the request in
    call.__name__ = getattr(fn, "__name__", "call")
    return call

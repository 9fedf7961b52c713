"""What a run's records cannot say of it, known where it starts (no Gradio here): the prompt as typed, whether the
chat template wrapped it, Sample N's seeds, the assistant model.

A tab's handler fills ``Facts`` when it encodes the prompt and picks the plans, ``playground.steering`` adds the
seeds of the generators it makes, ``Run`` holds them and writes them into its trace (``Trace.facts``), so a run read
back from a trace file or the branch tree has them too. View code, the branch tree and the labels read these fields;
a label is drawn from them (``run_label``) and never read back: a label translated or renamed changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import policy

SEED_RANGE = 2 ** 64  # torch's seeds are in [0, 2**64)
SHOWN_SEEDS = 3  # seeds that are not consecutive: a label names the first few


@dataclass(frozen=True)
class Facts:
    """A run's facts beside its records."""

    prompt: str = ""  # as typed (a run that continues another: its parent's)
    chat: bool | None = None  # whether the chat template wrapped the prompt; None: not known (an older trace)
    seeds: tuple[int, ...] = ()  # one per row's generator (Sample N); a run with one generator has ``Trace.seed``
    assistant: str = ""  # the assistant model's name as the app knows it (assisted decoding with a draft model)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chat": self.chat, "seeds": list(self.seeds), "assistant": self.assistant}

    @classmethod
    def from_dict(cls, data: Any) -> "Facts":
        """The facts ``to_dict`` wrote, checked: a trace file may hold anything there. A missing field keeps its
        default (a trace written before runs carried it); a field of the wrong type, a prompt longer than a typed one
        may be or more seeds than a run has rows raises ValueError naming it."""
        if not isinstance(data, dict):
            raise ValueError(f"trace facts must be an object; got {type(data).__name__}")
        prompt, chat = data.get("prompt", ""), data.get("chat")
        seeds, assistant = data.get("seeds", []), data.get("assistant", "")
        if not isinstance(prompt, str):
            raise ValueError(f"trace facts: `prompt` must be text; got {type(prompt).__name__}")
        policy.check_prompt(prompt, field="facts.prompt")
        if chat is not None and not isinstance(chat, bool):
            raise ValueError(f"trace facts: `chat` must be true, false or null; got {chat!r:.40}")
        if not isinstance(seeds, list) or not all(type(s) is int and 0 <= s < SEED_RANGE for s in seeds):
            raise ValueError(f"trace facts: `seeds` must be a list of whole numbers in [0, 2**64); got {seeds!r:.60}")
        if len(seeds) > policy.bound("rows"):
            raise ValueError(f"trace facts: `seeds` must hold at most {policy.bound('rows')} seeds, one per row; got "
                             f"{len(seeds)}")
        if not isinstance(assistant, str):
            raise ValueError(f"trace facts: `assistant` must be text; got {type(assistant).__name__}")
        return cls(prompt, chat, tuple(seeds), assistant)

    def continuing(self, parent: "Facts") -> "Facts":
        """These facts for a run that continues ``parent`` (a branch, a step, a resume): it starts from the parent's
        prompt ids, so the prompt and its encoding are the parent's; its generator and its assistant are its own."""
        return Facts(parent.prompt, parent.chat, (), self.assistant)


UNKNOWN = Facts()  # a run nobody told the facts of (a caller that has none, a trace written before them)


def run_label(name: str, facts: Facts) -> str:
    """What a run is called: the plan's ``name`` ("Sampling", "Assisted"), then the facts that tell it apart from
    the tab's other runs: the assistant model, Sample N's count and seeds."""
    text = f"{name} by {facts.assistant}" if facts.assistant else name
    if len(facts.seeds) > 1:
        text += f" ×{len(facts.seeds)} (seeds {seeds_text(facts.seeds)})"
    return text


def seeds_text(seeds: Sequence[int]) -> str:
    """``3..18`` for consecutive seeds (what Sample N draws), ``3, 7, 9, …`` otherwise; one seed alone; "" for none."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds[:SHOWN_SEEDS])) + (", …" if len(seeds) > SHOWN_SEEDS else "")


__all__ = ["Facts", "UNKNOWN", "run_label", "seeds_text"]

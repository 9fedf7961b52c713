"""The engine: every run of a process stepped by one busy loop (``loop.EngineLoop``), and that loop in a process of its
own beside the page (``process``), so that the page's Python never slows a model's step."""

from .loop import EngineLoop, Lane, LoopSeat

__all__ = ["EngineLoop", "Lane", "LoopSeat"]

"""The Gradio playground: one tab per decoding strategy, streaming the core's records into figures.

Arrows point one way: ``app.py`` -> ``playground`` -> ``core``. The core yields one ``StepRecord``
per step; the handlers here turn a tab's sliders into ``generate`` keyword arguments, iterate
``core.stream`` and hand the records to the figure builders in ``playground/figures``.
"""

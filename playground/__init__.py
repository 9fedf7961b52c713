"""The Gradio playground: one tab per decoding strategy, streaming the core's records into figures.

Arrows point one way: ``app.py`` -> ``playground`` -> ``core``. The core yields one ``StepRecord``
per step; ``field_codecs`` turns a tab's widgets into ``generate`` keyword arguments, ``runs`` iterates
``core.stream`` into the runs a tab shows, and the tabs (``playground/tabs``) hand their records to the figure
builders in ``playground/figures``.
"""

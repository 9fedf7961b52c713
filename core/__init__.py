"""The decoding core: every strategy of the transformers generation guide as an instrumented loop.

Public face: ``load_model``, ``generate``, ``stream`` and the record types. No UI imports here.
"""

from .constraints import DisjunctiveConstraint, PhrasalConstraint
from .limits import LimitError, Limits
from .loop import GenerationResult, RunContext, StreamEvent, generate, stream
from .models import LoadedModel, load_model
from .records import (AssistedStep, BeamNode, CacheInfo, Candidate, ContrastiveCandidate, DolaStep, LayerLens,
                      ListRecorder, Origin, ProcessorEffect, Recorder, RowStep, StepRecord, Trace, WatchedLayer,
                      WatchedToken)

__all__ = [
    "generate", "stream", "load_model", "LoadedModel", "GenerationResult", "StreamEvent", "RunContext",
    "Recorder", "ListRecorder", "Trace", "StepRecord", "RowStep", "Candidate", "ProcessorEffect", "BeamNode",
    "ContrastiveCandidate", "DolaStep", "Origin", "AssistedStep", "CacheInfo", "LayerLens", "PhrasalConstraint",
    "DisjunctiveConstraint", "Limits", "LimitError", "WatchedToken", "WatchedLayer",
]

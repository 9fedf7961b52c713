"""The playground's side of the vLLM engine (``core.remote``): ``PLAYGROUND_ENGINE=http://host:port/v1`` connects a
server at start-up, and each model it serves joins the model picker as ``vllm:<its id>``.

Picking one "loads" a ``LoadedModel`` whose ``model`` is a ``RemoteModel`` (what the tabs read of a model: its
config's vocabulary size, its generation config's EOS id) and whose ``tokenizer`` is a ``RemoteTokenizer`` (the
server's own, through ``/tokenize`` and ``/detokenize``, chat template included), so the tabs encode prompts as for
any model; ``handlers.stream_run`` sends its runs to ``core.remote.stream``. The served models are read once per
process and never written (a process owns only what is read-only).

    PLAYGROUND_ENGINE  a vLLM server's OpenAI base URL (``http://host:port/v1``); unset: no engine
"""

from __future__ import annotations

import functools
import os

import torch
from transformers import GenerationConfig, PretrainedConfig

from core.models import LoadedModel
from core.remote import client
from core.remote.engine import EngineModel, connect

ENGINE_ENV = "PLAYGROUND_ENGINE"
UNKNOWN_VOCAB = 2**31 - 1  # the server does not say; an id past its vocabulary is refused by the server itself


def engine_url() -> str | None:
    raw = os.environ.get(ENGINE_ENV, "").strip()
    return client.check_url(raw, ENGINE_ENV) if raw else None


@functools.lru_cache(maxsize=4)
def _served(url: str) -> dict[str, EngineModel]:
    return {model.name: model for model in connect(url)}


def served() -> dict[str, EngineModel]:
    """The picker name -> model of every model the ``PLAYGROUND_ENGINE`` server serves ({} without one). A server
    that cannot be reached raises ``EngineError`` naming it (at start-up, where ``app.main`` reads it first)."""
    url = engine_url()
    return _served(url) if url else {}


class RemoteTokenizer:
    """The server's tokenizer, with the part of transformers' tokenizer interface the tabs use."""

    def __init__(self, model: EngineModel):
        self.engine = model
        self.chat_template = model.chat_template
        self.eos_token_id = model.eos_token_id

    def _post(self, path: str, payload: dict) -> dict:
        return client.post(self.engine.server, path, {"model": self.engine.model_id, **payload})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._post("/tokenize", {"prompt": text, "add_special_tokens": add_special_tokens})["tokens"]

    def __call__(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = True) -> dict:
        return self._encoded(self.encode(text, add_special_tokens), return_tensors)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            return_tensors: str | None = None, return_dict: bool = False, tokenize: bool = True):
        ids = self._post("/tokenize", {"messages": messages, "add_generation_prompt": add_generation_prompt})["tokens"]
        if not tokenize:
            return self.decode(ids)
        return self._encoded(ids, return_tensors) if return_dict else ids

    @staticmethod
    def _encoded(ids: list[int], return_tensors: str | None) -> dict:
        if return_tensors == "pt":
            return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i != self.eos_token_id]
        return self._post("/detokenize", {"tokens": ids})["prompt"] if ids else ""

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]


class RemoteModel:
    """What the tabs read of a model, for one the engine serves; ``engine`` is what its runs go to."""

    def __init__(self, model: EngineModel):
        self.engine = model
        self.name_or_path = model.name
        self.config = PretrainedConfig(vocab_size=UNKNOWN_VOCAB)
        self.generation_config = GenerationConfig(eos_token_id=model.eos_token_id)


def is_remote(loaded) -> bool:
    return isinstance(getattr(loaded, "model", None), RemoteModel)


def load(name: str) -> LoadedModel:
    """The ``LoadedModel`` of the served model ``name`` (a ``served()`` key): nothing is loaded here."""
    model = served()[name]
    return LoadedModel(RemoteModel(model), RemoteTokenizer(model), name, model.server.base_url,
                       dtype="as served", device=f"vLLM at {model.server.base_url}")


def describe(loaded: LoadedModel) -> str:
    return (f"Model: **{loaded.name}** · served by vLLM at {loaded.source} · greedy, sampling, Sample N, structured "
            "output and beam search run there; contrastive, DoLa, the logit lens and speculative steps need an "
            "in-process model")


__all__ = ["ENGINE_ENV", "served", "load", "describe", "is_remote", "RemoteModel", "RemoteTokenizer"]

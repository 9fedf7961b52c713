"""The vLLM engine: runs on a vLLM server's OpenAI-compatible API, as the core's own records (``engine``), the
request fields they map to (``fields``), a small HTTP client (``client``) and a local server for tests (``serve``)."""

from .client import EngineError, Server
from .engine import EngineModel, connect, generate, stream

__all__ = ["stream", "generate", "connect", "EngineModel", "Server", "EngineError"]

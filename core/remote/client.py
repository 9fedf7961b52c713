"""A small HTTP client for a vLLM server's OpenAI-compatible API, on the standard library only.

``Server`` names one server (its ``.../v1`` base URL and how long any one call may wait); ``post`` sends one JSON
request and returns the JSON answer, ``stream`` sends one with ``"stream": true`` and yields each server-sent event's
JSON. Every call has a timeout, so no wait is endless. The server's own refusals (HTTP 400 with an OpenAI error body:
"temperature must be ...") come back as ``ValueError`` with its message; a server that cannot be reached, or answers
anything else, as ``EngineError`` naming the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator

DEFAULT_TIMEOUT_S = 120.0


class EngineError(RuntimeError):
    """The vLLM server could not be reached, or answered something other than a result or a refusal."""


@dataclass(frozen=True)
class Server:
    """One vLLM server: ``base_url`` is its OpenAI base (``http://host:port/v1``); ``root`` serves the tokenizer
    routes (``/tokenize``, ``/detokenize``) beside it."""

    base_url: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def root(self) -> str:
        return self.base_url.rstrip("/").removesuffix("/v1")

    def url(self, path: str) -> str:
        """``path`` is absolute on the server: ``/v1/completions``, ``/tokenize``."""
        return self.root + path


def check_url(url: str, field: str = "PLAYGROUND_ENGINE") -> str:
    """``url`` without a trailing slash, when it is an http(s) URL ending in ``/v1``."""
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or not url.endswith("/v1"):
        raise ValueError(f"`{field}` must be a vLLM server's OpenAI base URL such as http://127.0.0.1:8000/v1; "
                         f"got {url!r}")
    return url


def _request(server: Server, path: str, payload: dict | None, timeout: float | None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(server.url(path), data=data, method="GET" if payload is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=server.timeout_s if timeout is None else timeout)
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        message = _error_message(body)
        if err.code in (400, 422) and message:
            raise ValueError(f"the vLLM server refused the request: {message}") from None
        raise EngineError(f"the vLLM server at {server.base_url} answered HTTP {err.code} to {path}: "
                          f"{message or body[:300]}") from None
    except (urllib.error.URLError, OSError) as err:
        raise EngineError(f"the vLLM server at {server.base_url} could not be reached ({path}): "
                          f"{getattr(err, 'reason', err)}") from None


def _error_message(body: str) -> str:
    """The ``error.message`` of an OpenAI error body (``detail`` of FastAPI's), else ''."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error", data.get("detail", "")) if isinstance(data, dict) else ""
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(error)


def post(server: Server, path: str, payload: dict, timeout: float | None = None) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``path``; the JSON answer."""
    with _request(server, path, payload, timeout) as response:
        return json.loads(response.read())


def get(server: Server, path: str, timeout: float | None = None) -> dict[str, Any]:
    with _request(server, path, None, timeout) as response:
        return json.loads(response.read())


def stream(server: Server, path: str, payload: dict, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """POST ``payload`` with ``"stream": true``; each server-sent event's JSON until ``[DONE]``. ``timeout`` bounds
    every read, so a server gone silent ends the stream with ``EngineError``. Closing the iterator closes the
    connection, which vLLM takes as the request's abort."""
    response = _request(server, path, {**payload, "stream": True}, timeout)
    try:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise ValueError(f"the vLLM server refused the request: {_error_message(data)}")
            yield event
    except (TimeoutError, OSError) as err:
        raise EngineError(f"the vLLM server at {server.base_url} stopped answering ({path}): {err}") from None
    finally:
        response.close()


def models(server: Server) -> list[str]:
    """The ids of the models the server serves (``/v1/models``)."""
    return [entry["id"] for entry in get(server, "/v1/models").get("data", [])]


__all__ = ["Server", "EngineError", "check_url", "post", "get", "stream", "models"]

"""A local HTTP server standing in for the Hugging Face Hub, for push and load tests without the internet.

It answers the requests huggingface_hub 2.4.0 makes for ``HfApi.create_repo`` and ``HfApi.upload_file``
(see ``hf_api.py`` / ``_commit_api.py``), for ``GenerationConfig.from_pretrained`` (``file_download.py``),
for ``HfApi.get_safetensors_metadata`` and for ``whoami``:

    POST /api/repos/create                              {"name", "organization", ...} -> {"url"}; 409 if it exists
    GET  /api/models/{repo_id}[/revision/{rev}]          repo_info (create_repo falls back to it on 401/403/409)
    POST /api/models/{repo_id}/preupload/{rev}           -> {"files": [{"path", "uploadMode": "regular", ...}]}
    POST /api/models/{repo_id}/commit/{rev}              NDJSON: a "header" line, then one "file" line per file
    HEAD|GET /{repo_id}/resolve/{rev}/{path}             file bytes, with X-Repo-Commit and ETag; a ``Range:
                                                         bytes=a-b`` header gets those bytes (206)
    GET  /api/whoami-v2

``get_safetensors_metadata`` (``hf_api.py``) asks ``file_exists`` (a HEAD of ``model.safetensors``, then of
``model.safetensors.index.json``), then reads each weights file's header with ``parse_safetensors_file_metadata``:
a GET with ``range: bytes=0-100000`` (8 bytes of header length, then the JSON header), and a second ranged
GET when the header is longer; a sharded repo's index is fetched with ``hf_hub_download``. So a repo whose
weights files are only ``safetensors_header(...)`` (a header declaring billions of parameters, no data) is
sized like the real one.

Tokens are ``"write"`` or ``"read"`` (see ``tokens``); an unknown token gets the Hub's 401 ("Invalid
credentials in Authorization header"), a read token gets 403 on writes. A repo in ``private`` is read only with a
known token: without one the Hub's 404 (RepoNotFound), as it answers anyone who may not see a private repo.
``force[name] = status`` makes the endpoint ``name`` (create, repo_info, preupload, commit, resolve, whoami) answer that
status instead.
Every request is recorded in ``requests`` (method, path, headers, body).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "tester"
WRITE_TOKEN = "hf_fakeWriteToken0123456789"
READ_TOKEN = "hf_fakeReadToken0123456789"

# The Hub's own error texts, so that huggingface_hub classifies the answers as it does for the real one.
ERRORS = {
    401: ({"X-Error-Message": "Invalid credentials in Authorization header"},
          "Invalid credentials in Authorization header"),
    403: ({"X-Error-Message": "You don't have the rights to create or write to this repo"},
          "You don't have the rights to create or write to this repo"),
    404: ({"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, "Repository not found"),
    409: ({"X-Error-Message": "You already created this model repo"}, "You already created this model repo"),
}


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_header(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """The start of a safetensors file: 8 bytes of header length, then the JSON header naming each tensor's
    dtype, shape and byte offsets, and no tensor data (enough for ``get_safetensors_metadata``)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    return struct.pack("<Q", len(data)) + data


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)
    sha: str = "0" * 40


class FakeHub:
    def __init__(self):
        self.tokens: dict[str, str] = {WRITE_TOKEN: "write", READ_TOKEN: "read"}
        self.force: dict[str, int] = {}
        self.repos: dict[str, Repo] = {}
        self.private: set[str] = set()  # repo ids read only with a known token
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _serve(self, method: str):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with hub._lock:
                    hub.requests.append(Request(method, self.path, {k.lower(): v for k, v in self.headers.items()},
                                                body))
                status, headers, payload = hub.route(method, self.path.split("?")[0], self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                if "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_HEAD(self):
                self._serve("HEAD")

            def do_POST(self):
                self._serve("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "FakeHub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- helpers for tests -----------------------------------------------------------------------
    def calls(self, name: str) -> list[Request]:
        """Recorded requests of one endpoint (create, repo_info, preupload, commit, resolve, whoami)."""
        return [r for r in self.requests if self.endpoint_name(r.method, r.path.split("?")[0]) == name]

    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        repo = self.repos.setdefault(repo_id, Repo())
        repo.files[path] = data
        repo.sha = hashlib.sha1(repo.sha.encode() + data).hexdigest()

    @staticmethod
    def endpoint_name(method: str, path: str) -> str | None:
        if path == "/api/repos/create":
            return "create"
        if path == "/api/whoami-v2":
            return "whoami"
        if re.fullmatch(r"/api/models/[^/]+/[^/]+/preupload/.+", path):
            return "preupload"
        if re.fullmatch(r"/api/models/[^/]+/[^/]+/commit/.+", path):
            return "commit"
        if re.fullmatch(r"/api/models/[^/]+/[^/]+(/revision/.+)?", path):
            return "repo_info"
        if re.fullmatch(r"/[^/]+/[^/]+/resolve/[^/]+/.+", path):
            return "resolve"
        return None

    # --- the Hub ---------------------------------------------------------------------------------
    def _error(self, status: int):
        headers, message = ERRORS.get(status, ({}, f"HTTP {status}"))
        return status, dict(headers), {"error": message}

    def _role(self, headers) -> str | None:
        auth = headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        return self.tokens.get(token) if token else None

    def route(self, method: str, path: str, headers, body: bytes):
        name = self.endpoint_name(method, path)
        if name in self.force:
            return self._error(self.force[name])
        role = self._role(headers)
        has_auth = bool(headers.get("Authorization"))
        if has_auth and role is None:
            return self._error(401)
        if name == "whoami":
            if not role:
                return self._error(401)
            return (200, {}, {"type": "user", "name": USER, "fullname": "Test User", "avatarUrl": "",
                              "auth": {"type": "access_token", "accessToken": {"role": role}}})
        if name == "create":
            if role is None:
                return self._error(401)
            data = json.loads(body)
            repo_id = f"{data.get('organization') or USER}/{data['name']}"
            if role != "write":
                return self._error(403)
            if repo_id in self.repos:  # the Hub's 409 carries the url; create_repo(exist_ok=True) reads it
                status, headers, payload = self._error(409)
                return status, headers, {**payload, "url": f"{self.url}/{repo_id}"}
            self.repos[repo_id] = Repo()
            return 200, {}, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}
        match = re.match(r"/api/models/([^/]+/[^/]+)", path) or re.match(r"/([^/]+/[^/]+)/resolve/", path)
        repo_id = match.group(1) if match else ""
        repo = self.repos.get(repo_id)
        if repo_id in self.private and role is None:
            repo = None  # the Hub tells an anonymous reader nothing of a private repo
        if name == "repo_info":
            return (200, {}, {"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                              "siblings": [{"rfilename": f} for f in repo.files]}) if repo else self._error(404)
        if name in ("preupload", "commit"):
            if repo is None:
                return self._error(404)
            if role != "write":
                return self._error(403)
            if name == "preupload":
                files = json.loads(body)["files"]
                return 200, {}, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                            "oid": None} for f in files]}
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            for line in lines:
                if line["key"] == "file":
                    self.add_file(repo_id, line["value"]["path"], base64.b64decode(line["value"]["content"]))
            repo.commits.append({"summary": header["summary"], "description": header.get("description", "")})
            return 200, {}, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                             "pullRequestUrl": None}
        if name == "resolve":
            if repo is None:
                return self._error(404)
            file_path = path.split("/resolve/", 1)[1].split("/", 1)[1]
            if file_path not in repo.files:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha}, {"error": "Entry not found"}
            data = repo.files[file_path]
            found = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                     "Content-Type": "application/octet-stream"}
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", (headers.get("Range") or "").strip())
            if ranged and method == "GET":
                start = int(ranged.group(1))
                end = min(int(ranged.group(2) or len(data) - 1), len(data) - 1)
                if start >= len(data):
                    return 416, {"Content-Range": f"bytes */{len(data)}"}, {"error": "Range Not Satisfiable"}
                return 206, {**found, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]
            return 200, found, data
        return 404, {}, {"error": f"fake hub has no route for {method} {path}"}


def point_hub_at(monkeypatch, url: str) -> None:
    """Make huggingface_hub (and transformers through it) talk to ``url``: ``constants.ENDPOINT`` and the
    download URL template are computed from HF_ENDPOINT at import, so patch them, not just the env var."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

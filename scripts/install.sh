#!/usr/bin/env bash
# Set up r1lab from nothing: a virtual environment in .venv (or $R1LAB_VENV), torch, r1lab and its test extras.
#
# subtle: on a machine without a GPU, pip's default torch wheel on Linux is a multi-GB CUDA build. We put the
# CPU build in first: a local CPU wheel if pip's find-links offers one, else PyTorch's CPU index. With a GPU,
# pip's default (CUDA) build is what we want.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${R1LAB_VENV:-.venv}
TORCH=${R1LAB_TORCH:-torch==2.13.0}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true

if "$PY" -c "import torch" 2>/dev/null; then
  echo "install: torch $("$PY" -c 'import torch; print(torch.__version__)') already present"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install: GPU found, installing the default (CUDA) build of $TORCH"
  "$PY" -m pip install -q "$TORCH"
else
  echo "install: no GPU, installing the CPU build of $TORCH"
  if ! "$PY" -m pip install -q --no-index --no-deps "$TORCH" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps "$TORCH" --index-url https://download.pytorch.org/whl/cpu
  fi
  "$PY" -m pip install -q "$TORCH" 2>&1 | grep -v "^WARNING: Location" || true   # its small dependencies
fi
"$PY" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -c "import torch, r1lab; print('install: r1lab', r1lab.__version__, 'torch', torch.__version__)"

# The report test opens report.html in headless Chromium (Debian's `chromium`) and skips without it. Installed only
# when it is missing and we can: apt-get present and running as root (CI containers); quiet, and never fatal.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "install: installing chromium for the report test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >/dev/null 2>&1 || echo "install: could not install chromium; the report test will be skipped"
fi

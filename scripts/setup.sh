#!/usr/bin/env bash
# Create .venv and install froq_ray with its dev tools. Idempotent: re-running is quick.
#  - torch is installed first as the CPU build 2.13.0 so that no resolver step can pick a multi-GB CUDA build;
#  - onnx2torch is installed without dependencies: its metadata requires torchvision, which must not be installed
#    beside this torch (froq_ray shims the import; see froq_ray/models/onnx_model.py);
#  - the review page's browser test drives the OS's Chromium with Playwright (the dev extra), which is told its
#    path and never downloads a browser: Chromium comes from the OS packages (apt), installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -m pip install -q --no-deps 'onnx2torch>=1.5,<1.6'
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: install Chromium (apt-get install chromium) for the browser test" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium-browser
fi
echo "froq_ray environment ready in .venv"

#!/usr/bin/env bash
# Create .venv/ in the repo root (if missing) and install CPU torch first, then fedsafe-plugin.
# An unpinned torch would pull several GB of CUDA wheels; torch==2.13.0 takes the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
echo "fedsafe-plugin installed in $(pwd)/.venv"

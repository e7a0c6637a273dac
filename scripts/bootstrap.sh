#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment with everything it needs.
# menpo3d 0.8.6 builds a Cython extension whose setup.py imports numpy, so its build
# requirements go in first and it is built without build isolation (DESIGN.md §2).
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# menpo3d is the optional '3d' extra (template build, 3D helpers); the tests need it
"${PIP[@]}" install -q wheel "setuptools>=64" "numpy>=2.0,<2.6" "cython==0.29.37"
"${PIP[@]}" install -q --no-build-isolation "menpo3d==0.8.6"
# torch: the pinned CPU build (an unpinned torch would pull a multi-GB CUDA build)
"${PIP[@]}" install -q "torch==2.13.0"
# dev = pytest, black + the peers, notebooks and 3d extras (menpo3d is already built)
"${PIP[@]}" install -q -e ".[dev]"
touch "$VENV/.installed"
echo "environment ready: $VENV"

#!/usr/bin/env bash
# Create .venv (if missing) and install lit_opt with its dev, onnx and recipe extras into it.
#
# torch is pinned and installed FIRST: pip finds the CPU build of torch 2.13.0 on local disk,
# whereas an unpinned torch (or a range admitting a newer release) would pull a multi-GB CUDA
# build. With 2.13.0 already installed, lit_opt's own `torch>=2.4,<3` is satisfied and pip
# installs nothing more for it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x .venv/bin/python ]; then
    echo "install.sh: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

pip_install() {
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"
}

if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "install.sh: installing torch==$TORCH_VERSION"
    pip_install "torch==$TORCH_VERSION"
fi

echo "install.sh: installing lit_opt (editable) with extras dev, onnx, recipe"
pip_install -e '.[dev,onnx,recipe]'
.venv/bin/python -c "import torch, lit_opt.targets; print('install.sh: torch', torch.__version__)"

#!/usr/bin/env bash
# The main job: install (scripts/install.sh), then run the QAT benchmark on all-MiniLM-L6-v2
# (inference: fp32, bf16, torch.ao dynamic int8, lit_opt int8/int4 exports; training: plain vs
# QATCallback). Writes outputs/bench_qat/report.md, report.json and the exported artifacts.
# Extra arguments go to scripts/bench_qat.py (e.g. --quick).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
exec .venv/bin/python scripts/bench_qat.py "$@"

#!/usr/bin/env bash
# Install (scripts/install.sh), then run the whole test suite, the linter and the type checker.
# Exits non-zero if either fails; pytest's exit code 5 ("no tests collected") counts as a failure.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow" -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh

status=0

echo "test.sh: pytest"
set +e
.venv/bin/python -m pytest -q "$@"
pytest_rc=$?
set -e
if [ "$pytest_rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit 5); treating as failure" >&2
    status=1
elif [ "$pytest_rc" -ne 0 ]; then
    echo "test.sh: pytest failed (exit $pytest_rc)" >&2
    status=1
fi

echo "test.sh: ruff check lit_opt tests benchmarks"
if ! .venv/bin/python -m ruff check lit_opt tests benchmarks; then
    echo "test.sh: ruff check failed" >&2
    status=1
fi

echo "test.sh: ruff format --check lit_opt tests benchmarks"
if ! .venv/bin/python -m ruff format --check lit_opt tests benchmarks; then
    echo "test.sh: ruff format --check failed (run: ruff format lit_opt tests benchmarks)" >&2
    status=1
fi

echo "test.sh: mypy (the package)"
if ! .venv/bin/python -m mypy; then
    echo "test.sh: mypy failed" >&2
    status=1
fi

exit "$status"

"""lit_opt's benchmarks: one module per benchmark, run as ``python -m benchmarks.<name> [--quick]``.

``python -m benchmarks`` lists them; :mod:`benchmarks.harness` does what they share and
:mod:`benchmarks.tables` writes their committed results into the README. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

# Nothing here downloads: models come from installed packages, the data from lit_opt.data's cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks.harness import Benchmark

#: Every benchmark: each module here but the shared ones, in the order ``python -m benchmarks all`` runs them.
NAMES = sorted(
    p.stem for p in Path(__file__).parent.glob("[!_]*.py") if p.stem not in ("common", "harness", "tables")
)


def load(name: str) -> Benchmark:
    """The :class:`~benchmarks.harness.Benchmark` that ``benchmarks/<name>.py`` declares.

    Raises:
        ValueError: ``name`` is not one of :data:`NAMES`.
    """
    if name not in NAMES:
        raise ValueError(f"benchmark {name!r} is not one of {NAMES}. HINT: python -m benchmarks lists them.")
    return Benchmark(name, importlib.import_module(f"benchmarks.{name}"))

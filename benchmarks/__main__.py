"""``python -m benchmarks``: list the benchmarks; ``python -m benchmarks NAME [args]`` runs one,
``python -m benchmarks all [args]`` (e.g. ``--quick``) runs each in turn."""

from __future__ import annotations

import sys

from benchmarks import NAMES, load


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__.replace("``", "'") + "\n")
        for name in NAMES:
            print(f"  {name:<14} {load(name).description}")
        return 0
    names = NAMES if argv[0] == "all" else [argv[0]]
    for name in names:
        load(name).execute(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``python -m benchmarks``: list the benchmarks; ``python -m benchmarks NAME [args]`` runs one,
``python -m benchmarks all [args]`` (e.g. ``--quick``) runs each in turn."""

import sys

from benchmarks import NAMES, load

if not sys.argv[1:] or sys.argv[1] in ("-h", "--help", "list"):
    print(__doc__.replace("``", "'") + "\n")
    for name in NAMES:
        print(f"  {name:<14} {load(name).description}")
else:
    for name in NAMES if sys.argv[1] == "all" else sys.argv[1:2]:
        load(name).execute(sys.argv[2:])

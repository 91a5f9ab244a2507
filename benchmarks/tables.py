"""Write the README's benchmark tables from the committed results: ``python -m benchmarks.tables [--check]``.

Each region of README.md between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is replaced
by the markdown of ``benchmarks/results/NAME.json`` (:func:`benchmarks.harness.render`); the rest of
the file is left as it is. ``--check`` changes nothing and exits 1 when a region is out of date.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.harness import RESULTS, ROOT, render, validate

REGION = re.compile(r"(<!-- bench:(\w+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.S)


def markdown(name: str, results: Path = RESULTS) -> str:
    """The markdown of result file ``results/<name>.json``, checked against the schema.

    Raises:
        ValueError: the file is missing or does not follow the schema.
    """
    path = results / f"{name}.json"
    if not path.is_file():
        raise ValueError(
            f"README region bench:{name} has no result file {path}. "
            f"HINT: run python -m benchmarks.{name} (a full run writes it), or remove the region."
        )
    result = json.loads(path.read_text())
    validate(result)
    return render(result)


def regenerate(text: str, results: Path = RESULTS) -> str:
    """``text`` with every benchmark region rewritten from its result file."""
    return REGION.sub(lambda m: m.group(1) + markdown(m.group(2), results) + m.group(4), text)


def regions(text: str) -> list[str]:
    """The benchmark names that have a region in ``text``."""
    return [m.group(2) for m in REGION.finditer(text)]


def stale(text: str, results: Path = RESULTS) -> list[str]:
    """The regions of ``text`` whose contents differ from their result file's markdown."""
    return [m.group(2) for m in REGION.finditer(text) if m.group(3) != markdown(m.group(2), results)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    text, hint = args.readme.read_text(), "HINT: python -m benchmarks.tables"
    if args.check and stale(text):
        print(f"{args.readme}: out of date for {stale(text)}. {hint}", file=sys.stderr)
        return 1
    if not args.check:
        args.readme.write_text(regenerate(text))
        print(f"{args.readme}: rewrote {regions(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

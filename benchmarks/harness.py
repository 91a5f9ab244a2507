"""What every benchmark shares: settings and ``--quick``, the environment, one JSON result, tables, plots.

A benchmark module has a docstring (its first line describes it), ``SETTINGS`` (each setting's full-run
default, or a ``(full, quick)`` pair), optionally ``HELP`` (setting -> text) and ``MINIMUM`` (setting ->
``(least value, why)``), and ``run(s, out)``, which fills ``out`` (a :class:`Run`) with raw ``rows``, tables
and goals. The harness parses one option per setting, sets the torch threads, runs it and writes the result
(:data:`SCHEMA`): a full run to ``benchmarks/results/<name>.json``, a quick one under
``outputs/benchmarks/<name>/``, with plots."""

import argparse
import datetime
import functools
import json
import logging
import re
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import torch
from matplotlib.figure import Figure

from lit_opt.inference.measure import Timing, environment, loadavg, synced_forward, time_round_robin
from lit_opt.recipe.quiet import quiet

log = logging.getLogger("benchmarks")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1
#: Every key of a result file and its type. ``rows`` hold the raw measurements (dicts), ``tables`` what
#: the README shows (``{"title", "columns", "rows": [[str, ...]], "notes", "plot"}``), ``goals``
#: ``{"goal", "measured", "pass"}``; ``provenance`` says where the numbers come from.
SCHEMA: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(["benchmark", "description", "date", "command", "provenance"], str),
    **dict.fromkeys(["settings", "environment"], dict),
    **dict.fromkeys(["rows", "tables", "goals"], list),
    **{"schema_version": int, "quick": bool, "wall_s": (int, float)},
}
#: What ``--quick`` sets in every benchmark that has the setting: the tiny model and data (no download).
QUICK = {"model": "tiny", "data": "synthetic"}
#: kept to warnings while a benchmark runs (``quiet`` silences the other libraries and lit_opt's info lines)
HTTPX = logging.getLogger("httpx")
#: What a benchmark's ``run`` gets as ``s``: one attribute per setting, and ``quick``.
Settings = argparse.Namespace


@dataclass
class Run:
    """What a benchmark's ``run`` fills: raw measurements, tables and goals; ``work_dir`` is for its files."""

    work_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)

    def table(self, title: str, rows: list, notes: str = "", plot: str | None = None, columns=()) -> None:
        """Add a markdown table of ``rows``: dicts (column -> cell; a column a row lacks stays empty) or, with
        ``columns``, sequences of cells. ``plot`` names a numeric column to chart."""
        rows = [dict(zip(columns, row, strict=True)) for row in rows] if columns else rows
        columns = list(dict.fromkeys(column for row in rows for column in row))
        cells = [[str(row.get(column, "")) for column in columns] for row in rows]
        self.tables.append({"title": title, "columns": columns, "rows": cells, "notes": notes, "plot": plot})

    def goal(self, goal: str, measured: str, passed: bool | None) -> None:
        """Add a goal and whether it was met (``None``: could not be measured)."""
        self.goals.append({"goal": goal, "measured": measured, "pass": passed})


@dataclass
class Benchmark:
    """The benchmark that module ``benchmarks.<name>`` declares (see the module docstring)."""

    name: str
    module: ModuleType

    @property
    def description(self) -> str:
        return str(self.module.__doc__).strip().splitlines()[0]

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """``--quick``, ``--out``, ``--work-dir`` and one option per setting (unset ones take the defaults);
        ValueError for a setting below its ``MINIMUM``."""
        raw, prog = argparse.RawDescriptionHelpFormatter, f"python -m benchmarks.{self.name}"
        parser = argparse.ArgumentParser(prog, description=self.module.__doc__, formatter_class=raw)
        add = parser.add_argument
        add("--quick", action="store_true", help="tiny settings, no download (what CI runs)")
        add("--out", type=Path, help="result file (default benchmarks/results/NAME.json)")
        add("--work-dir", type=Path, help="artifacts, plots (default outputs/benchmarks/NAME)")
        settings = self.module.SETTINGS  # defaults: each setting's (full, quick) values
        defaults = {k: v if isinstance(v, tuple) else (v, QUICK.get(k, v)) for k, v in settings.items()}
        for key, (full, quick) in defaults.items():
            kind = type(full[0] if isinstance(full, list) and full else full)
            extra: dict[str, Any] = {"nargs": "*"} if isinstance(full, list) else {}
            extra |= {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
            text = f"{getattr(self.module, 'HELP', {}).get(key, '')} (default {full}; quick {quick})"
            add(f"--{key.replace('_', '-')}", dest=key, help=text.strip(), **extra)
        args = parser.parse_args(argv)
        for key, (full, quick) in defaults.items():
            if getattr(args, key) is None:
                setattr(args, key, quick if args.quick else full)
        for key, (least, why) in getattr(self.module, "MINIMUM", {}).items():
            if getattr(args, key) < least:
                reject(key, getattr(args, key), f"{least} or more", why)
        return args

    def execute(self, argv: list[str]) -> dict[str, Any]:
        """Parse ``argv``, run, write and print the result; returns it."""
        args = self.parse(argv)
        work = args.work_dir or ROOT / "outputs" / "benchmarks" / self.name
        work.mkdir(parents=True, exist_ok=True)
        out = args.out or (work / "result-quick.json" if args.quick else RESULTS / f"{self.name}.json")
        settings = {key: getattr(args, key) for key in self.module.SETTINGS}
        run = Run(work)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        threads, httpx_level = torch.get_num_threads(), HTTPX.level
        torch.set_num_threads(getattr(args, "threads", threads))
        HTTPX.setLevel(logging.WARNING)
        started, load_start, commit = time.perf_counter(), loadavg(), git_state()  # the code that runs
        try:
            with quiet(verbose=False):
                self.module.run(Settings(quick=args.quick, **settings), run)
            env = environment(getattr(args, "threads", None))  # torch's threads as the run had them
        finally:
            torch.set_num_threads(threads)
            HTTPX.setLevel(httpx_level)
        result = {
            "schema_version": SCHEMA_VERSION,
            "benchmark": self.name,
            "description": self.description,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join([f"python -m benchmarks.{self.name}", *argv]),
            "provenance": f"measured by this run of the benchmarks harness at git {commit}",
            "quick": args.quick,
            "settings": settings,
            "environment": {**env, "loadavg_start": load_start},
            "wall_s": round(time.perf_counter() - started, 1),
            **{"rows": run.rows, "tables": run.tables, "goals": run.goals},
        }
        validate(result)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(render(result))
        for path in plot(result, work):
            log.info("plot: %s", path)
        log.info("wrote %s (%.0f s)", out, result["wall_s"])
        return result


def main(module: str) -> int:
    """``python -m benchmarks.<name>``: run the benchmark of the module named ``module`` on ``sys.argv``."""
    found = sys.modules[module]
    Benchmark(found.__spec__.name.rsplit(".", 1)[-1], found).execute(sys.argv[1:])
    return 0


def git_state() -> str:
    """The short commit of the checkout, with ``+dirty`` when files differ from it."""
    git = functools.partial(subprocess.run, capture_output=True, text=True, cwd=ROOT)
    try:
        head, dirty = git(["git", "rev-parse", "--short", "HEAD"]), git(["git", "status", "--porcelain"])
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def compare(timings: dict[str, Timing], baseline: str) -> dict[str, dict[str, float]]:
    """Per call of an interleaved timing: median and p90 ms, ``ratio`` (its median over the baseline's),
    ``paired_ratio`` (the median of the per-round ratios), CPU seconds per wall second and rounds."""
    base = timings[baseline]
    return {
        name: {
            "median_ms": t.median_ms,
            "p90_ms": t.p90_ms,
            "ratio": t.median_ms / base.median_ms,
            "paired_ratio": statistics.median(a / b for a, b in zip(t.times_ms, base.times_ms, strict=False)),
            "cpu_per_wall": t.cpu_per_wall,
            "rounds": len(t.times_ms),
        }
        for name, t in timings.items()
    }


def time_models(
    models: dict[str, Any],
    inputs: dict[str, torch.Tensor],
    baseline: str,
    warmup: int,
    repeats: int,
    settle_ms: float = 0.0,
) -> dict[str, dict[str, float]]:
    """:func:`compare` of the models' forward passes on ``inputs``, interleaved round by round (inference
    mode), ``settle_ms`` apart (give it when the models run on different runtimes)."""
    calls = {name: functools.partial(synced_forward, model, inputs) for name, model in models.items()}
    with torch.inference_mode():
        return compare(time_round_robin(calls, warmup, repeats, settle_ms), baseline)


def reject(setting: str, value: Any, expected: str, hint: str) -> NoReturn:
    """Raise the ValueError for a setting a benchmark cannot run with."""
    raise ValueError(f"{setting}={value} is not accepted; expected {expected}. HINT: {hint}")


def validate(result: dict[str, Any]) -> None:
    """Check a result against :data:`SCHEMA` and every table's shape.

    Raises:
        ValueError: naming every key that is missing or of the wrong type, and every ragged table.
    """
    problems = [
        f"{key!r} missing or not {kind}"
        for key, kind in SCHEMA.items()
        if not isinstance(result.get(key), kind) or isinstance(result.get(key), bool) is not (kind is bool)
    ]
    for table in result.get("tables") or []:
        width = len(table.get("columns", []))
        if not width or any(len(row) != width for row in table.get("rows", [])):
            problems.append(f"table {table.get('title')!r}: every row needs {width} cells")
    for goal in result.get("goals") or []:
        if set(goal) != {"goal", "measured", "pass"}:
            problems.append(f"goal {goal!r} needs exactly goal, measured and pass")
    if problems:
        raise ValueError(
            f"benchmark result {result.get('benchmark')!r} does not follow the schema: {'; '.join(problems)}. "
            "HINT: results are written by Benchmark.execute(); see benchmarks/harness.py SCHEMA."
        )


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table; columns whose (non-empty) cells all start with a digit are right-aligned."""
    cells = [[row[i] for row in rows if row[i]] for i in range(len(columns))]
    numeric = [bool(c) and all(re.match(r"[-+]?[\d.]", x) for x in c) for c in cells]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render(result: dict[str, Any]) -> str:
    """A result as markdown: each table (title, table, notes), the goals, and where the numbers come from."""
    lines: list[str] = []
    for table in result["tables"]:
        lines += [f"**{table['title']}**", "", *markdown_table(table["columns"], table["rows"]), ""]
        lines += [table["notes"], ""] if table.get("notes") else []
    if result["goals"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}
        rows = [[g["goal"], g["measured"], verdict[g["pass"]]] for g in result["goals"]]
        lines += ["**Goals**", "", *markdown_table(["goal", "measured", "pass"], rows), ""]
    env = result["environment"]
    load = env.get("loadavg") and f"load average {env['loadavg_start']} at start, {env['loadavg']} at end"
    where = [result["date"], env.get("cpu"), env.get("threads") and f"{env['threads']} threads", load]
    where_run = "; ".join(str(w) for w in where if w)
    lines.append(f"`{result['command']}` ({where_run}). Provenance: {result['provenance']}.")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """A horizontal bar chart of each table's ``plot`` column (the number each cell starts with)."""
    paths = []
    for table in filter(lambda t: t.get("plot"), result["tables"]):
        column, rows = table["columns"].index(table["plot"]), table["rows"]
        labels = [row[0] for row in rows]
        if len(set(labels)) < len(labels):  # e.g. one row per model and batch size: name both
            labels = [f"{row[0]}, {table['columns'][1]} {row[1]}" for row in rows]
        numbers = [re.match(r"[-+]?\d[\d,]*\.?\d*(e[-+]?\d+)?", row[column]) for row in rows]
        points = [(lab, float(n[0].replace(",", ""))) for lab, n in zip(labels, numbers, strict=True) if n]
        if not points:
            continue
        fig = Figure(figsize=(8, 0.45 * len(points) + 1.2))
        ax = fig.subplots()
        ax.barh(*zip(*points[::-1], strict=True))
        ax.set_xlabel(table["plot"])
        ax.set_title(textwrap.fill(table["title"], 100), fontsize=8)
        fig.tight_layout()
        slug = re.sub(r"[^a-z0-9]+", "-", table["title"].lower())[:40]
        paths.append(directory / f"{result['benchmark']}-{slug}.png")
        fig.savefig(paths[-1], dpi=100)
    return paths

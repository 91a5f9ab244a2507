"""The recipe's report: ``report.json`` (rows, goals, stage times, machine), ``report.md`` and PNG plots.

``markdown``, ``plot``, ``write`` and ``summary`` serve every task; ``goals`` and ``table`` are the
classification task's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lit_opt.recipe.task import Task

#: The row the goals compare with, and the row they are about.
BASELINE, BF16, COMPRESSED, PEER = "teacher-fp32", "teacher-bf16", "lit-opt-compressed", "ptq-int8-torch-ao"


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals for ``lit-opt-compressed``, each with what was measured and whether it was met.

    Example::

        >>> row = {"accuracy": 0.8, "size_bytes": 10, "latency_ms_b1": 1.0, "latency_ms_b32": 1.0}
        >>> rows = [{"name": n, **row} for n in ("teacher-fp32", "teacher-bf16", "ptq-int8-torch-ao")]
        >>> [g["met"] for g in goals(rows + [{"name": "lit-opt-compressed", **row}])]
        [True, False, False, False, False, False]
    """
    by = {r["name"]: r for r in rows}
    base, ours, bf16, peer = by[BASELINE], by[COMPRESSED], by[BF16], by[PEER]
    relative = ours["accuracy"] / base["accuracy"]
    smaller = base["size_bytes"] / ours["size_bytes"]
    b1 = base["latency_ms_b1"] / ours["latency_ms_b1"]
    b32 = base["latency_ms_b32"] / ours["latency_ms_b32"]
    vs_bf16 = bf16["latency_ms_b32"] / ours["latency_ms_b32"]
    return [
        {
            "goal": "accuracy >= 97% of teacher-fp32's",
            "measured": f"{100 * relative:.1f}%",
            "met": relative >= 0.97,
        },
        {
            "goal": "file >= 10x smaller than teacher-fp32's",
            "measured": f"{smaller:.1f}x",
            "met": smaller >= 10,
        },
        {
            "goal": "latency >= 5x lower than teacher-fp32 at batch 1",
            "measured": f"{b1:.2f}x",
            "met": b1 >= 5,
        },
        {
            "goal": "latency >= 5x lower than teacher-fp32 at batch 32",
            "measured": f"{b32:.2f}x",
            "met": b32 >= 5,
        },
        {
            "goal": ">= 2x faster than teacher-bf16 at batch 32",
            "measured": f"{vs_bf16:.2f}x",
            "met": vs_bf16 >= 2,
        },
        {
            "goal": f"accuracy above the PTQ peer's ({PEER})",
            "measured": f"{100 * ours['accuracy']:.2f}% vs {100 * peer['accuracy']:.2f}%",
            "met": ours["accuracy"] > peer["accuracy"],
        },
    ]


#: The ONNX Runtime rows (see :mod:`lit_opt.recipe.onnx_rows`).
ONNX_FP32, ONNX_INT8, COMPRESSED_ONNX = "teacher-onnx-fp32", "teacher-onnx-int8", "lit-opt-compressed-onnx"
#: Longest accepted :func:`lit_opt.export_onnx` of the compressed student, in seconds.
EXPORT_SECONDS = 60.0


def onnx_goals(rows: list[dict[str, Any]], export_seconds: float | None) -> list[dict[str, Any]]:
    """The goals for ``lit-opt-compressed-onnx`` (none when the ONNX rows were not run).

    Example::

        >>> row = {"accuracy": 0.8, "size_bytes": 100, "latency_ms_b1": 10.0, "latency_ms_b32": 10.0}
        >>> rows = [{"name": n, **row} for n in ("teacher-fp32", "teacher-onnx-fp32", "teacher-onnx-int8")]
        >>> ours = {**row, "name": "lit-opt-compressed-onnx", "size_bytes": 5, "latency_ms_b1": 1.0}
        >>> [g["met"] for g in onnx_goals(rows + [ours], 12.0)]
        [True, True, True, False, True, False, True, False, False, True]
    """
    by = {r["name"]: r for r in rows}
    if COMPRESSED_ONNX not in by:
        return []
    ours, base, fp32, int8 = by[COMPRESSED_ONNX], by[BASELINE], by[ONNX_FP32], by[ONNX_INT8]
    goals = [
        (
            f"{COMPRESSED_ONNX} accuracy >= 99% of {BASELINE}'s",
            ours["accuracy"] / base["accuracy"],
            0.99,
            "pct",
        ),
        (
            f"{COMPRESSED_ONNX} file >= 10x smaller than {BASELINE}'s",
            base["size_bytes"] / ours["size_bytes"],
            10,
            "x",
        ),
    ]
    for peer, factor in ((base, 8.0), (fp32, 4.0), (int8, 1.0)):
        for b in (1, 32):
            speedup = peer[f"latency_ms_b{b}"] / ours[f"latency_ms_b{b}"]
            what = f">= {factor:g}x faster" if factor > 1 else "faster"
            goals.append((f"{COMPRESSED_ONNX} {what} than {peer['name']} at batch {b}", speedup, factor, "x"))
    out = [
        {
            "goal": goal,
            "measured": f"{100 * value:.1f}%" if unit == "pct" else f"{value:.2f}x",
            "met": value >= bound if bound != 1.0 else value > 1.0,
        }
        for goal, value, bound, unit in goals
    ]
    out.append(
        {
            "goal": f"{COMPRESSED_ONNX} more accurate and smaller than {ONNX_INT8}",
            "measured": f"{100 * ours['accuracy']:.2f}% vs {100 * int8['accuracy']:.2f}%, "
            f"{ours['size_bytes'] / 1e6:.2f} MB vs {int8['size_bytes'] / 1e6:.2f} MB",
            "met": ours["accuracy"] > int8["accuracy"] and ours["size_bytes"] < int8["size_bytes"],
        }
    )
    if export_seconds is not None:
        out.append(
            {
                "goal": f"export_onnx of the compressed student <= {EXPORT_SECONDS:g} s",
                "measured": f"{export_seconds:.1f} s",
                "met": export_seconds <= EXPORT_SECONDS,
            }
        )
    return out


def fastest(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The row with the lowest median latency at each batch size.

    Example::

        >>> fastest([{"name": "a", "latency_ms_b1": 2.0, "latency_ms_b32": 5.0},
        ...          {"name": "b", "latency_ms_b1": 3.0, "latency_ms_b32": 4.0}])
        {'b1': 'a', 'b32': 'b'}
    """
    keys = sorted({k for r in rows for k in r if k.startswith("latency_ms_b")}, key=lambda k: int(k[12:]))
    return {k.removeprefix("latency_ms_"): min(rows, key=lambda r: r[k])["name"] for k in keys}


def summary(goal_rows: list[dict[str, Any]]) -> str:
    """The goals in words, one line each (a Markdown list): which were met and which were not.

    Example: ``"lit-opt-compressed met 1 of 2 goals:\n- met: file >= 10x smaller\n- missed: ..."``.
    """
    lines = [f"{COMPRESSED} met {sum(g['met'] for g in goal_rows)} of {len(goal_rows)} goals:"]
    lines += [f"- met: {g['goal']}" for g in goal_rows if g["met"]]
    lines += [f"- missed: {g['goal']} (measured {g['measured']})" for g in goal_rows if not g["met"]]
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, sizes and latencies with their ratio to ``teacher-fp32``."""
    base = next(r for r in rows if r["name"] == BASELINE)
    lines = [
        "| model | accuracy | size MB | smaller | params | b1 ms | b1 speedup | b32 ms | b32 speedup | seq/s b32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {100 * r['accuracy']:.2f}% | {r['size_bytes'] / 1e6:.2f} | "
            f"{base['size_bytes'] / r['size_bytes']:.1f}x | {r['params'] / 1e6:.2f}M | {r['latency_ms_b1']:.1f} | "
            f"{base['latency_ms_b1'] / r['latency_ms_b1']:.2f}x | {r['latency_ms_b32']:.1f} | "
            f"{base['latency_ms_b32'] / r['latency_ms_b32']:.2f}x | {r['throughput_b32']:.0f} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any], task: Task) -> str:
    """``report.md``: the task's table, the goals in words, how each row was made, the stage times, the machine."""
    env = report["env"]
    lines = [
        "# lit-opt recipe report",
        "",
        task.method(report),
        "",
        task.table(report["rows"]),
        "",
        *(
            [
                "Fastest row: "
                + "; ".join(f"batch {b[1:]}: **{name}**" for b, name in report["fastest"].items())
                + ".",
                "",
            ]
            if report.get("fastest")
            else []
        ),
        "## Goals",
        "",
        report["goals_summary"],
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'no'} |" for g in report["goals"]),
        "",
        "## Rows",
        "",
        *(f"- **{r['name']}**: {r['how']}" for r in report["rows"]),
        "",
        *task.sections(report),
        "## Stage times",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.0f} |" for k, v in report["stage_seconds"].items()),
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} CPUs, {env['cpu_capability']}, bf16 kernels "
        f"{'yes' if env['mkldnn_bf16_supported'] else 'no'}); load average at start {env['loadavg_start']}, "
        f"at the end {env['loadavg_end']}. On a shared machine latencies vary; the ratios come from one interleaved loop.",
        "",
        f"Plots: {', '.join(f'`{name}`' for _, _, name in task.plots)}.",
    ]
    return "\n".join(lines) + "\n"


MARKERS = "osD^vP*X<>"


def plot(rows: list[dict[str, Any]], x_key: str, x_label: str, task: Task, path: Path) -> None:
    """The task's metric against ``x_key`` on a log axis, one marker per row named in the legend (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    figure = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, r in enumerate(rows):
        x = r[x_key] / 1e6 if x_key == "size_bytes" else r[x_key]
        y = task.metric_scale * r[task.metric]
        axes.scatter([x], [y], s=60, marker=MARKERS[i % len(MARKERS)], label=r["name"])
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.margins(x=0.15, y=0.15)
    axes.set_xlabel(x_label)
    axes.set_ylabel(task.metric_label)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write(report: dict[str, Any], directory: Path, task: Task) -> None:
    """Write ``report.json``, ``report.md`` and the task's plots into ``directory``."""
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    (directory / "report.md").write_text(markdown(report, task))
    for x_key, x_label, name in task.plots:
        plot(report["rows"], x_key, x_label, task, directory / name)

"""``lit-opt bench``: latency, throughput, size and peak memory of an artifact, beside a baseline.

Inputs are synthetic token ids (``1..vocab_size-1``, full attention mask), so an artifact without a
tokenizer is measured as well as one with. Every configuration is measured for the artifact and the
baseline back to back, in the same process, so the two see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_opt._checks import check_device
from lit_opt.commands.batch_size_search import check_latency_budget, format_search, plot_search, search
from lit_opt.export.architecture import is_causal_lm
from lit_opt.export.format import MANIFEST, WEIGHTS
from lit_opt.export.loader import load
from lit_opt.export.onnx import ONNX_FILE, ONNX_MANIFEST
from lit_opt.export.onnx_runtime import load_onnx
from lit_opt.inference.generation import measure_generation
from lit_opt.inference.measure import (
    PeakMemory,
    call_model,
    dir_bytes,
    environment,
    file_bytes,
    loadavg,
    synthetic_batch,
    time_forward,
)
from lit_opt.nn.quantized import KERNELS

log = logging.getLogger(__name__)

KERNEL_CHOICES: tuple[str, ...] = ("auto", *KERNELS)
HF_WEIGHT_PATTERNS: tuple[str, ...] = ("*.safetensors", "pytorch_model*.bin")


def parse_int_list(name: str, value: str | Sequence[int]) -> list[int]:
    """``"1,8,32"`` (or a list of ints) as a list of positive integers.

    Raises:
        ValueError: If an item is not a positive integer, or there is none.

    Example::

        >>> parse_int_list("batch_sizes", "1, 8,32")
        [1, 8, 32]
    """
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else list(value)
    try:
        numbers = [int(item) for item in items if item != ""]
    except (TypeError, ValueError):
        numbers = []
    if not numbers or any(n < 1 for n in numbers) or len(numbers) != len([i for i in items if i != ""]):
        raise ValueError(
            f"{name}={value!r} is not accepted; expected positive integers separated by commas, e.g. '1,8,32'."
        )
    return numbers


def _check_bench_device(device: Any) -> torch.device:
    resolved = check_device("device", device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA, which this PyTorch build or machine does not have. "
            "HINT: use --device cpu, or run on a machine with a GPU and a CUDA build of PyTorch."
        )
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} names GPU {resolved.index}, but this machine has {torch.cuda.device_count()}. "
            f"HINT: use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
        )
    return resolved


def _onnx_dir(path: str) -> Path | None:
    """The ONNX export directory ``path`` names (it, or its ``model.onnx``), else None."""
    root = Path(path)
    root = root.parent if root.suffix == ".onnx" else root
    return root if (root / ONNX_MANIFEST).is_file() or Path(path).suffix == ".onnx" else None


def _load_artifact(name: str, path: str, kernel: str, device: torch.device) -> nn.Module:
    root = Path(path)
    onnx_dir = _onnx_dir(path)
    if onnx_dir is not None:
        if device.type != "cpu":
            raise ValueError(
                f"{name}={path!r} is an ONNX graph, which lit-opt bench runs with ONNX Runtime on the CPU only, "
                f"not device={str(device)!r}. HINT: drop --device."
            )
        return load_onnx(onnx_dir, threads=torch.get_num_threads())
    if not (root / MANIFEST).is_file():
        raise ValueError(
            f"{name}={path!r} is not a lit_opt artifact (no {MANIFEST} in it). HINT: pass the directory that "
            "lit_opt.export or `lit-opt export` wrote; a Hugging Face model directory goes in --baseline."
        )
    return load(root, device=device, kernel=kernel)  # type: ignore[arg-type]


def _load_baseline(path: str, kernel: str, device: torch.device) -> nn.Module:
    root = Path(path)
    if (root / MANIFEST).is_file() or _onnx_dir(path) is not None:
        return _load_artifact("baseline", path, kernel, device)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"baseline={path!r} is neither a lit_opt artifact ({MANIFEST}) nor a Hugging Face model directory "
            "(config.json). HINT: pass one of those, or leave --baseline out."
        )
    import transformers

    architectures = json.loads(config_file.read_text()).get("architectures") or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    cls = (
        cls
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)
        else transformers.AutoModel
    )
    return cls.from_pretrained(str(root)).float().eval().to(device)


def _weights_bytes(path: str) -> int:
    root = Path(path)
    onnx_dir = _onnx_dir(path)
    if onnx_dir is not None:
        return file_bytes(onnx_dir / ONNX_FILE)
    if (root / MANIFEST).is_file():
        return file_bytes(root / WEIGHTS)
    files = {p for pattern in HF_WEIGHT_PATTERNS for p in root.glob(pattern)}
    return sum(file_bytes(p) for p in files) if files else dir_bytes(root)


def _vocab_and_positions(name: str, model: nn.Module) -> tuple[int, int | None]:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int):
        raise ValueError(
            f"{name}: {type(model).__name__} has no config.vocab_size, so bench cannot feed it token ids. "
            "HINT: bench measures token-id models (Hugging Face architectures); time others with "
            "lit_opt.inference.time_forward."
        )
    return vocab, getattr(config, "max_position_embeddings", None)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Throughput against batch size, one line per model and sequence length (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for model in dict.fromkeys(r["model"] for r in rows):
        for seq_len in dict.fromkeys(r["seq_len"] for r in rows):
            points = [
                (r["batch_size"], r["throughput_seq_s"])
                for r in rows
                if (r["model"], r["seq_len"]) == (model, seq_len)
            ]
            style = "-o" if model == "artifact" else "--s"
            axes.plot(*zip(*points, strict=True), style, label=f"{model}, seq {seq_len}")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size")
    axes.set_ylabel("throughput (sequences / s)")
    axes.set_title("lit-opt bench")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table.

    Example::

        >>> row = {"model": "artifact", "seq_len": 32, "batch_size": 1, "median_ms": 1.0, "p90_ms": 1.5,
        ...        "throughput_seq_s": 1000.0, "speedup": None, "weights_bytes": 2**20, "peak_delta_bytes": 0}
        >>> print(format_table([row]).splitlines()[2])
        artifact   32      1       1.00    1.50  1000.0        -         1.0       0.0
    """
    header = ("model", "seq", "batch", "median ms", "p90 ms", "seq/s", "speedup", "weights MB", "peak +MB")
    lines = [
        (
            r["model"],
            str(r["seq_len"]),
            str(r["batch_size"]),
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['throughput_seq_s']:.1f}",
            "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
            f"{r['weights_bytes'] / 2**20:.1f}",
            f"{r['peak_delta_bytes'] / 2**20:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths)), *(fmt(line) for line in lines)])


def bench(
    artifact: str,
    baseline: str | None = None,
    batch_sizes: str | Sequence[int] = "1,8,32",
    seq_lens: str | Sequence[int] = "32,128",
    output_dir: str = ".",
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    kernel: str = "auto",
    device: str = "cpu",
    progress: bool = True,
    find_batch_size: bool = False,
    latency_budget_ms: float | None = None,
    max_batch_size: int = 256,
    prompt_len: int = 128,
    new_tokens: int = 64,
    decode_batch_sizes: str | Sequence[int] = "1,8",
) -> dict[str, Any]:
    """Measure ``artifact`` (and ``baseline``) on every batch size and sequence length; write the report.

    Writes ``bench.json`` (settings, machine, every row) and ``bench.png`` (throughput against batch
    size) into ``output_dir`` and prints the table. Each row holds the median and p90 latency over
    ``repeats`` calls after ``warmup``, the throughput, the weights' file size, the peak memory rise of
    one extra call and, for the artifact, the speedup over the baseline.

    Args:
        artifact: A lit_opt artifact directory, or an ONNX export (its directory or ``model.onnx``, run by
            ONNX Runtime with the process's torch thread count).
        baseline: A lit_opt artifact or a Hugging Face model directory to compare with.
        batch_sizes: Batch sizes, e.g. ``"1,8,32"``.
        seq_lens: Sequence lengths, e.g. ``"32,128"``.
        output_dir: Where ``bench.json`` and ``bench.png`` go.
        threads: ``torch.set_num_threads`` for the run (default: torch's).
        repeats: Timed calls per configuration.
        warmup: Untimed calls per configuration.
        kernel: The kernel :func:`lit_opt.load` uses for artifacts.
        device: Where the models run, e.g. ``"cuda"``; on a GPU every call is timed until the device
            has finished, and peak memory is the CUDA allocator's.
        progress: Show a progress bar.
        find_batch_size: Instead of the ``batch_sizes`` grid, search each model's batch size per sequence
            length (:func:`~lit_opt.inference.find_batch_size`: 1, 2, 4, ... up to ``max_batch_size``);
            prints the choice and the curve, and ``bench.json`` holds them under ``search``.
        latency_budget_ms: With ``find_batch_size``: pick the largest batch size whose median latency
            stays within it (default: the best throughput).
        max_batch_size: With ``find_batch_size``: the largest batch size tried.
        prompt_len: For causal LMs, the prompt tokens of the generation figures (prefill at batch 1).
        new_tokens: For causal LMs, the greedy tokens generated (KV cache) per decode measurement.
        decode_batch_sizes: For causal LMs, the batch sizes decode tokens/s is measured at.

    For causal LMs (``*ForCausalLM``) the report also holds ``generation``: per model the prefill
    latency, decode tokens/s at each batch size and peak memory
    (:func:`lit_opt.inference.generation.measure_generation`), printed as a second table.

    Returns:
        The report written to ``bench.json``.

    Raises:
        ValueError: For a path that is not an artifact (or model directory), a malformed list, a
            non-positive count, a sequence longer than the model's positions, a device torch
            does not know or this machine does not have, or a latency budget that is not > 0 or is
            given without ``find_batch_size``.

    Example::

        >>> report = bench("artifacts/minilm-int8", baseline="path/to/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> sorted(report)  # doctest: +SKIP
        ['env', 'rows', 'settings']
        >>> bench("artifacts/minilm-int8", find_batch_size=True, latency_budget_ms=50)  # doctest: +SKIP
    """
    budget = check_latency_budget(latency_budget_ms, find_batch_size)
    sizes, lengths = parse_int_list("batch_sizes", batch_sizes), parse_int_list("seq_lens", seq_lens)
    for name, value, minimum in (
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("threads", threads or 1, 1),
        ("max_batch_size", max_batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel={kernel!r} is not accepted; expected one of {list(KERNEL_CHOICES)}.")
    target = _check_bench_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    models = {"artifact": (artifact, _load_artifact("artifact", artifact, kernel, target))}
    if baseline is not None:
        models["baseline"] = (baseline, _load_baseline(baseline, kernel, target))
    vocab: dict[str, int] = {}
    for name, (_, model) in models.items():
        vocab[name], positions = _vocab_and_positions(name, model)
        if positions is not None and max(lengths) > positions:
            raise ValueError(
                f"seq_lens={seq_lens!r} exceeds the {positions} positions of the {name} model. "
                f"HINT: use sequence lengths up to {positions}."
            )
    settings: dict[str, Any] = {
        "artifact": str(artifact),
        "baseline": baseline,
        "batch_sizes": sizes,
        "seq_lens": lengths,
        "repeats": repeats,
        "warmup": warmup,
        "kernel": kernel,
        "device": str(target),
        "inputs": "synthetic token ids (uniform in [1, vocab_size)), full attention mask",
    }
    env = {**environment(threads), "loadavg_start": loadavg()}
    if target.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(target)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if find_batch_size:
        settings.update(batch_sizes=None, latency_budget_ms=budget, max_batch_size=max_batch_size)
        found = [
            result
            for name, (_, model) in models.items()
            for result in search(name, model, lengths, budget, max_batch_size, warmup, repeats, target)
        ]
        env["loadavg_end"] = loadavg()
        report: dict[str, Any] = {"settings": settings, "env": env, "search": found}
        plot_search(found, budget, out / "bench.png")
        text = format_search(found, budget)
    else:
        rows = _measure_all(models, vocab, sizes, lengths, repeats, warmup, target, progress)
        report = {"settings": settings, "env": env, "rows": rows}
        text = format_table(rows)
        if all(is_causal_lm(model) for _, model in models.values()):
            report["generation"] = _generation(
                models, vocab, prompt_len, new_tokens, decode_batch_sizes, repeats, warmup
            )
            settings["generation"] = {
                "prompt_len": prompt_len,
                "new_tokens": new_tokens,
                "decode_batch_sizes": parse_int_list("decode_batch_sizes", decode_batch_sizes),
                "decode": "greedy, KV cache; tokens/s of the decode steps alone (generate(new_tokens) - generate(1))",
            }
            text += "\n\n" + format_generation(report["generation"])
        env["loadavg_end"] = loadavg()
        _plot(rows, out / "bench.png")
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print(text)  # the command's output: the table (or the search's choice and curve), on stdout
    log.info("lit-opt bench: wrote %s and %s", out / "bench.json", out / "bench.png")
    return report


def _generation(
    models: dict[str, tuple[str, nn.Module]],
    vocab: dict[str, int],
    prompt_len: int,
    new_tokens: int,
    decode_batch_sizes: str | Sequence[int],
    repeats: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    decode_sizes = parse_int_list("decode_batch_sizes", decode_batch_sizes)
    for name, (_, model) in models.items():
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if positions is not None and prompt_len + new_tokens > positions:
            raise ValueError(
                f"prompt_len={prompt_len} + new_tokens={new_tokens} exceeds the {positions} positions of the "
                f"{name} model. HINT: shorten the prompt or generate fewer tokens."
            )
    return measure_generation(
        {name: model for name, (_, model) in models.items()},
        min(vocab.values()),
        prompt_len=prompt_len,
        new_tokens=new_tokens,
        batch_sizes=decode_sizes,
        repeats=repeats,
        warmup=warmup,
    )


def format_generation(figures: dict[str, dict[str, float]]) -> str:
    """The generation figures as an aligned text table, one line per model.

    Example::

        >>> print(format_generation({"artifact": {"prefill_ms_b1": 12.0, "decode_tokens_per_s_b1": 50.0,
        ...                                       "peak_bytes": 2**20}}))
        model     prefill ms b1  decode tok/s b1  peak MB
        artifact          12.00             50.0      1.0
    """
    keys = [k for k in next(iter(figures.values())) if k.startswith("decode_tokens_per_s_b")]
    header = ["model", "prefill ms b1", *(f"decode tok/s b{k.rsplit('_b', 1)[1]}" for k in keys), "peak MB"]
    lines = [
        [name, f"{f['prefill_ms_b1']:.2f}", *(f"{f[k]:.1f}" for k in keys), f"{f['peak_bytes'] / 2**20:.1f}"]
        for name, f in figures.items()
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        for cells in [header, *lines]
    )


def _measure_all(
    models: dict[str, tuple[str, nn.Module]],
    vocab: dict[str, int],
    sizes: list[int],
    lengths: list[int],
    repeats: int,
    warmup: int,
    device: torch.device,
    progress: bool,
) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    weights = {name: _weights_bytes(path) for name, (path, _) in models.items()}
    rows: list[dict[str, Any]] = []
    with tqdm(
        total=len(models) * len(sizes) * len(lengths), desc="lit-opt bench", disable=not progress
    ) as bar:
        for seq_len in lengths:
            for batch_size in sizes:
                for name, (path, model) in models.items():  # back to back: the same machine load
                    bar.set_postfix_str(f"{name} seq={seq_len} batch={batch_size}")
                    inputs = {
                        key: value.to(device)
                        for key, value in synthetic_batch(batch_size, seq_len, vocab[name]).items()
                    }
                    timing = time_forward(model, inputs, warmup, repeats)
                    with PeakMemory(device) as peak, torch.inference_mode():
                        call_model(model, inputs)
                    rows.append(
                        {
                            "model": name,
                            "path": str(path),
                            "seq_len": seq_len,
                            "batch_size": batch_size,
                            "median_ms": timing.median_ms,
                            "p90_ms": timing.p90_ms,
                            "min_ms": timing.min_ms,
                            "throughput_seq_s": batch_size / (timing.median_ms / 1e3),
                            "cpu_per_wall": timing.cpu_per_wall,
                            "weights_bytes": weights[name],
                            "peak_bytes": peak.peak_bytes,
                            "peak_kind": "cuda allocator" if device.type == "cuda" else "process rss",
                            "peak_delta_bytes": peak.delta_bytes,
                            "peak_scope": peak.scope,
                        }
                    )
                    bar.update()
    by_key = {(r["model"], r["seq_len"], r["batch_size"]): r for r in rows}
    for row in rows:
        base = by_key.get(("baseline", row["seq_len"], row["batch_size"]))
        row["speedup"] = base["median_ms"] / row["median_ms"] if base and row["model"] == "artifact" else None
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The ``lit-opt bench`` command line (see :func:`bench`)."""
    parser = argparse.ArgumentParser(
        prog="lit-opt bench",
        description="Latency (median, p90), throughput, file size and peak memory of a lit_opt artifact, "
        "side by side with a baseline; prints a table, writes bench.json and bench.png.",
    )
    parser.add_argument(
        "artifact", metavar="ARTIFACT", help="a lit_opt artifact directory, or an ONNX export (model.onnx)"
    )
    parser.add_argument(
        "--baseline", help="a lit_opt artifact or a Hugging Face model directory to compare with"
    )
    parser.add_argument(
        "--batch-sizes", default="1,8,32", help="comma-separated batch sizes (default: 1,8,32)"
    )
    parser.add_argument(
        "--seq-lens", default="32,128", help="comma-separated sequence lengths (default: 32,128)"
    )
    parser.add_argument("--output-dir", default=".", help="where bench.json and bench.png go (default: .)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per configuration (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per configuration (default: 2)")
    parser.add_argument(
        "--kernel", default="auto", choices=KERNEL_CHOICES, help="lit_opt.load kernel (default: auto)"
    )
    parser.add_argument("--device", default="cpu", help="where the models run, e.g. cuda (default: cpu)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.add_argument(
        "--find-batch-size",
        action="store_true",
        help="search the batch size per sequence length (1, 2, 4, ...) instead of --batch-sizes; "
        "prints the choice and the latency/throughput curve",
    )
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        default=None,
        help="with --find-batch-size: the largest batch size within this median latency (default: best throughput)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=256,
        help="with --find-batch-size: the largest tried (default: 256)",
    )
    parser.add_argument(
        "--prompt-len",
        type=int,
        default=128,
        help="causal LMs: prompt tokens for prefill/decode (default: 128)",
    )
    parser.add_argument(
        "--new-tokens",
        type=int,
        default=64,
        help="causal LMs: greedy tokens generated per decode (default: 64)",
    )
    parser.add_argument(
        "--decode-batch-sizes", default="1,8", help="causal LMs: decode batch sizes (default: 1,8)"
    )
    return parser


def bench_main(argv: list[str]) -> None:
    """Measure a lit_opt artifact (latency, throughput, size, peak memory) beside a baseline; writes bench.json/png.

    ``argv`` holds the arguments after ``bench``; ``lit-opt bench --help`` lists them.

    Example::

        >>> bench_main(["artifacts/minilm-int8", "--batch-sizes", "1,8", "--seq-lens", "32"])  # doctest: +SKIP
    """
    bench(**vars(build_parser().parse_args(argv)))

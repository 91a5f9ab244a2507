"""Static (calibrated) int8 activations against dynamic ones on this CPU: does any kernel here gain?

1. One Linear layer at MiniLM's feed-forward shapes (``rows`` = batch x tokens), timed round-robin
   against fp32 ``F.linear``: dynamic int8 (``quantized::linear_dynamic``, what ``packed_int8`` runs);
   PyTorch's static ``quantized::linear`` on quint8 activations, once with float in and out (quantize,
   integer product, dequantize), once with integer activations in and out (the best case of a model
   whose activations stay int8 end to end) and once with a float input quantized at the calibrated scale
   and a float output (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``); ``torch._int_mm`` with
   a calibrated scale (lit_opt's ``int8`` kernel, static) and with per-row scales (dynamic).
2. The whole model: MiniLM (``model``) quantized after training with static activations (calibrated on
   ``calibration_batches`` batches) and with dynamic ones, loaded with each kernel that can run it,
   timed round-robin against the fp32 model at batch ``batch_size`` x ``seq_len`` tokens.
3. The same two artifacts exported with ``lit_opt.export_onnx`` and run by ``lit_opt.load_onnx`` (ONNX Runtime,
   ``threads`` intra-op threads), timed in the same rounds as part 2, at batch 1 too: static layers quantize their
   input with the calibrated constant scale (``Clip`` -> ``QuantizeLinear``), dynamic ones per row (``Abs`` ->
   ``ReduceMax`` -> ``QuantizeLinear``), both before ``MatMulIntegerToFloat`` (float out). Agreement: the largest
   logit difference from the fp32 model on 8 rows of 64 random token ids. Needs onnxruntime (an ImportError with
   the extra to install, before anything is timed).
"""

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import VOCAB, classifier, logit_diff, time_batches
from benchmarks.harness import Run, compare, main
from lit_opt import export, export_onnx, load, load_onnx
from lit_opt.export.onnx import require_onnxruntime
from lit_opt.inference.measure import synthetic_batch, time_round_robin

SETTINGS = dict(
    model="minilm",
    threads=1,
    hidden=(384, 32),
    rows=([64, 2048], [16]),
    batch_size=(32, 2),
    seq_len=(64, 8),
    calibration_batches=4,
    kernels=["int8", "packed_int8", "bf16", "reference"],
    warmup=2,
    repeats=(15, 2),
)


def layer_calls(rows: int, inner: int, outer: int) -> dict[str, Any]:
    """Calls of one ``inner -> outer`` Linear on ``rows`` GELU-like activations, each way."""
    torch.manual_seed(0)
    x = torch.randn(rows, inner).clamp_(min=-0.17) * 2  # (rows, in): a GELU output's shape of values
    w, b = torch.randn(outer, inner) / inner**0.5, torch.zeros(outer)
    w_scale = w.abs().amax(dim=1) / 127  # (out,) per channel
    w_t = torch.round(w / w_scale[:, None]).to(torch.int8).t().contiguous().t()
    qw = torch.quantize_per_channel(w, w_scale.double(), torch.zeros(outer, dtype=torch.long), 0, torch.qint8)
    packed, ops = torch.ops.quantized.linear_prepack(qw, b), torch.ops.quantized
    x_scale = float(x.abs().max()) / 127  # calibrated: a fixed range
    y_scale = float((x @ w.T).abs().max()) / 127
    xq = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)

    def int_mm_static() -> torch.Tensor:
        codes = torch.round(x / x_scale).clamp_(-127, 127).to(torch.int8)
        return torch._int_mm(codes, w_t.t()) * (x_scale * w_scale)

    def int_mm_dynamic() -> torch.Tensor:
        scale = x.abs().amax(dim=1, keepdim=True) / 127
        return torch._int_mm(torch.round(x / scale).to(torch.int8), w_t.t()) * scale * w_scale

    return {
        "fp32 F.linear": lambda: F.linear(x, w, b),
        "dynamic int8 (quantized::linear_dynamic)": lambda: ops.linear_dynamic(x, packed, True),
        "static int8, float in/out (quantized::linear)": lambda: ops.linear(
            torch.quantize_per_tensor(x, x_scale, 128, torch.quint8), packed, y_scale, 128
        ).dequantize(),
        "static int8, int8 in/out (quantized::linear)": lambda: ops.linear(xq, packed, y_scale, 128),
        "static int8, fp32 out (quantized::linear_with_input_q_dq_qweight_dq_output_fp32)": lambda: (
            ops.linear_with_input_q_dq_qweight_dq_output_fp32(x, x_scale, 128, packed)
        ),
        "static int8, torch._int_mm (lit_opt int8)": int_mm_static,
        "dynamic int8, torch._int_mm (lit_opt int8)": int_mm_dynamic,
    }


def run(s: argparse.Namespace, out: Run) -> None:
    require_onnxruntime()  # the ONNX Runtime rows: say what to install before anything is timed
    torch.set_num_threads(s.threads)
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
    cells = []
    for rows in s.rows:
        for inner, outer in ((s.hidden, 4 * s.hidden), (4 * s.hidden, s.hidden)):
            with torch.inference_mode():
                timings = time_round_robin(layer_calls(rows, inner, outer), s.warmup, s.repeats)
            for name, st in compare(timings, "fp32 F.linear").items():
                out.rows.append({"part": "layer", "rows": rows, "in": inner, "out": outer, "call": name} | st)
                ms, ratio = f"{st['median_ms']:.3f}", f"{st['paired_ratio']:.2f}x"
                cells.append((f"{rows} x {inner} -> {outer}", name, ms, ratio))
    out.table(
        "One Linear layer, timed round-robin (ratio: paired median over fp32 F.linear; lower is faster)",
        cells,
        columns=("shape", "call", "median ms", "vs fp32"),
        notes=f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}, {s.threads} thread(s).",
    )
    model = classifier(s.model).eval()
    seeds = range(1, s.calibration_batches + 1)
    calibration = [synthetic_batch(s.batch_size, s.seq_len, VOCAB, seed=seed) for seed in seeds]
    static, dynamic = ({"weight_bits": 8, "activations": kind} for kind in ("static", "dynamic"))
    static_dir = export(model, out.work_dir / "static", quantization=static, calibration=calibration)
    dynamic_dir = export(model, out.work_dir / "dynamic", quantization=dynamic)
    models = {"fp32 (float model)": model}
    for label, path in (("static", static_dir), ("dynamic", dynamic_dir)):
        for kernel in s.kernels:
            try:
                models[f"{label} activations, kernel {kernel}"] = load(path, kernel=kernel)
            except ValueError as err:  # a kernel that cannot run this artifact says so
                out.rows.append({"part": "model", "call": f"{label} {kernel}", "skipped": str(err)})
    runtimes = {
        f"{label} activations, ONNX Runtime": load_onnx(export_onnx(path, f"{path}_onnx"), threads=s.threads)
        for label, path in (("static", static_dir), ("dynamic", dynamic_dir))
    }
    timings = time_batches(
        models | runtimes, "fp32 (float model)", {1: s.repeats, s.batch_size: s.repeats}, s.seq_len, s.warmup
    )
    stats = {name: timings[s.batch_size][name] for name in models}
    out.rows += [{"part": "model", "call": name, **st} for name, st in stats.items()]
    out.table(
        f"{s.model} forward at batch {s.batch_size} x {s.seq_len} tokens, timed round-robin",
        [
            {"model": name, "median ms": f"{st['median_ms']:.1f}", "vs fp32": f"{st['paired_ratio']:.2f}x"}
            for name, st in stats.items()
        ],
        notes="Static artifacts: post-training int8 with activation ranges calibrated on "
        f"{s.calibration_batches} batches (QAT with activations='static' writes the same encoding).",
        plot="vs fp32",
    )
    best = min((st["paired_ratio"], n) for n, st in stats.items() if n.startswith("static"))
    dyn = min((st["paired_ratio"], n) for n, st in stats.items() if n.startswith("dynamic"))
    measured = f"best: {best[1]} {best[0]:.2f}x fp32; {dyn[1]} {dyn[0]:.2f}x fp32"
    out.goal(
        "static int8 activations run faster than dynamic ones on some kernel here", measured, best[0] < dyn[0]
    )
    out.rows += [
        {"part": "model", "batch": b, "call": n, **timings[b][n]}
        for b in timings
        if b != s.batch_size
        for n in models
    ]
    diffs, cells = {name: logit_diff(model, ort) for name, ort in runtimes.items()}, []
    for b, at in timings.items():
        for name, diff in {"fp32 (float model)": 0.0, **diffs}.items():
            out.rows.append({"part": "onnx", "call": name, "batch": b, "max_logit_diff": diff, **at[name]})
            ms, ratio = f"{at[name]['median_ms']:.2f}", f"{at[name]['paired_ratio']:.2f}x"
            cells.append((name, b, ms, ratio, f"{diff:.3f}"))
        static_ms, dynamic_ms = (at[name]["median_ms"] for name in runtimes)
        measured = f"{static_ms:.2f} vs {dynamic_ms:.2f} ms ({static_ms / dynamic_ms:.2f}x)"
        out.goal(
            f"static int8 faster than dynamic on ONNX Runtime at batch {b}", measured, static_ms < dynamic_ms
        )
    out.table(
        f"{s.model} forward on ONNX Runtime (export_onnx, load_onnx) x {s.seq_len} tokens, in the same rounds",
        cells,
        columns=("model", "batch", "median ms", "vs fp32", "max logit diff vs fp32"),
        notes="fp32: the eager float model, the baseline of vs fp32 (paired medians) at each batch. The ONNX graphs "
        f"compute the last layer for [CLS] alone (export_onnx's default); {s.threads} ORT thread(s).",
        plot="median ms",
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))

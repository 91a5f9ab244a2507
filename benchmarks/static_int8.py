"""Static (calibrated) int8 activations against dynamic ones on this CPU: does any kernel here gain?

1. One Linear layer at MiniLM's feed-forward shapes (``rows`` = batch x tokens), timed round-robin
   against fp32 ``F.linear``: dynamic int8 (``quantized::linear_dynamic``, what ``packed_int8`` runs);
   PyTorch's static ``quantized::linear`` on quint8 activations, once with float in and out (quantize,
   integer product, dequantize), once with integer activations in and out (the best case of a model
   whose activations stay int8 end to end) and once with a float input quantized at the calibrated scale
   and a float output (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``); ``torch._int_mm`` with a calibrated scale (lit_opt's ``int8``
   kernel, static) and with per-row scales (dynamic).
2. The whole model: MiniLM (``model``) quantized after training with static activations (calibrated on
   ``calibration_batches`` batches) and with dynamic ones, loaded with each kernel that can run it,
   timed round-robin against the fp32 model at batch ``batch_size`` x ``seq_len`` tokens.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import VOCAB, classifier
from benchmarks.harness import Benchmark, Run, compare, time_models
from lit_opt import export, load
from lit_opt.inference.measure import synthetic_batch, time_round_robin


def layer_calls(rows: int, inner: int, outer: int) -> dict[str, Any]:
    """Calls of one ``inner -> outer`` Linear on ``rows`` GELU-like activations, each way."""
    torch.manual_seed(0)
    x = torch.randn(rows, inner).clamp_(min=-0.17) * 2  # (rows, in): a GELU output's shape of values
    w, b = torch.randn(outer, inner) / inner**0.5, torch.zeros(outer)
    w_scale = w.abs().amax(dim=1) / 127  # (out,) per channel
    w_codes = torch.round(w / w_scale[:, None]).to(torch.int8)
    qw = torch.quantize_per_channel(w, w_scale.double(), torch.zeros(outer, dtype=torch.long), 0, torch.qint8)
    dynamic = torch.ops.quantized.linear_prepack(qw, b)
    x_scale = float(x.abs().max()) / 127  # calibrated: a fixed range
    y_scale = float((x @ w.T).abs().max()) / 127
    xq = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)
    w_t = w_codes.t().contiguous().t()

    def static_float() -> torch.Tensor:
        q = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8)
        return torch.ops.quantized.linear(q, dynamic, y_scale, 128).dequantize()

    def int_mm_static() -> torch.Tensor:
        codes = torch.round(x / x_scale).clamp_(-127, 127).to(torch.int8)
        return torch._int_mm(codes, w_t.t()) * (x_scale * w_scale)

    def int_mm_dynamic() -> torch.Tensor:
        s = x.abs().amax(dim=1, keepdim=True) / 127
        codes = torch.round(x / s).to(torch.int8)
        return torch._int_mm(codes, w_t.t()) * s * w_scale

    return {
        "fp32 F.linear": lambda: F.linear(x, w, b),
        "dynamic int8 (quantized::linear_dynamic)": lambda: torch.ops.quantized.linear_dynamic(
            x, dynamic, True
        ),
        "static int8, float in/out (quantized::linear)": static_float,
        "static int8, int8 in/out (quantized::linear)": lambda: torch.ops.quantized.linear(
            xq, dynamic, y_scale, 128
        ),
        "static int8, fp32 out (quantized::linear_with_input_q_dq_qweight_dq_output_fp32)": lambda: (
            torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(x, x_scale, 128, dynamic)
        ),
        "static int8, torch._int_mm (lit_opt int8)": int_mm_static,
        "dynamic int8, torch._int_mm (lit_opt int8)": int_mm_dynamic,
    }


def run(s: argparse.Namespace, out: Run) -> None:
    torch.set_num_threads(s.threads)
    torch.backends.quantized.engine = (
        "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    )
    cells = []
    for rows in s.rows:
        for inner, outer in ((s.hidden, 4 * s.hidden), (4 * s.hidden, s.hidden)):
            with torch.inference_mode():
                stats = compare(time_round_robin(layer_calls(rows, inner, outer), s.warmup, s.repeats), "fp32 F.linear")  # fmt: skip
            for name, st in stats.items():
                out.rows.append({"part": "layer", "rows": rows, "in": inner, "out": outer, "call": name, **st})  # fmt: skip
                cells.append({"shape": f"{rows} x {inner} -> {outer}", "call": name,
                              "median ms": f"{st['median_ms']:.3f}", "vs fp32": f"{st['paired_ratio']:.2f}x"})  # fmt: skip
    out.table(
        "One Linear layer, timed round-robin (ratio: paired median over fp32 F.linear; lower is faster)",
        cells,
        notes=f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}, {s.threads} thread(s).",
    )
    model = classifier(s.model).eval()
    batch = synthetic_batch(s.batch_size, s.seq_len, VOCAB)
    calibration = [
        synthetic_batch(s.batch_size, s.seq_len, VOCAB, seed=i + 1) for i in range(s.calibration_batches)
    ]
    static_dir = export(model, out.work_dir / "static", quantization={"weight_bits": 8, "activations": "static"},
                        calibration=calibration)  # fmt: skip
    dynamic_dir = export(
        model, out.work_dir / "dynamic", quantization={"weight_bits": 8, "activations": "dynamic"}
    )
    models = {"fp32 (float model)": model}
    for label, path, kernels in (("static", static_dir, s.kernels), ("dynamic", dynamic_dir, s.kernels)):
        for kernel in kernels:
            try:
                models[f"{label} activations, kernel {kernel}"] = load(path, kernel=kernel)
            except ValueError as err:  # a kernel that cannot run this artifact says so
                out.rows.append({"part": "model", "call": f"{label} {kernel}", "skipped": str(err)})
    stats = time_models(models, batch, "fp32 (float model)", s.warmup, s.repeats)
    for name, st in stats.items():
        out.rows.append({"part": "model", "call": name, **st})
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
    out.goal("static int8 activations run faster than dynamic ones on some kernel here",
             f"best: {best[1]} {best[0]:.2f}x fp32; {dyn[1]} {dyn[0]:.2f}x fp32",
             best[0] < dyn[0])  # fmt: skip


BENCH = Benchmark(
    "static_int8",
    __doc__,
    settings={
        "model": "minilm",
        "threads": 1,
        "hidden": 384,
        "rows": [64, 2048],
        "batch_size": 32,
        "seq_len": 64,
        "calibration_batches": 4,
        "kernels": ["int8", "packed_int8", "bf16", "reference"],
        "warmup": 2,
        "repeats": 15,
    },
    quick={"model": "tiny", "hidden": 32, "rows": [16], "batch_size": 2, "seq_len": 8, "repeats": 2},
    run=run,
)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())

"""Weight sharing and low-rank factorization on all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU).

One dense fine-tuning run (``base_steps``, the fixed length-bucketed batches of ``common.fixed_batches``)
gives the common start; every row then trains ``steps`` more optimizer steps from it on the same batches
in the same order with the same dropout seed: ``dense`` (no callback), ``weight sharing k=16 / 256``
(``WeightSharingCallback``: 4- and 8-bit indices) and ``low rank energy 0.9 / 0.7`` (``LowRankCallback(
at_step=0)``), on the encoder's Linear layers. Per row: test accuracy, the size of its ``lit_opt.export``
artifact, the loaded artifact's logits against the trained model's, and for dense and low rank the
batch-32 latency of the loaded artifacts (``kernel="reference"``: fp32, so it is the factorization
alone; seq 128, interleaved rounds) as a ratio to dense measured in the same run.
"""

import copy
from typing import Any

from torch import nn

import lit_opt
from benchmarks import common
from benchmarks.harness import Run, Settings, main
from lit_opt.inference.measure import file_bytes
from lit_opt.recipe.evaluation import accuracy

SETTINGS = common.FIXED_SETTINGS | dict(
    base_steps=(150, 2), steps=(60, 2), test_size=(800, 32), lr=5e-5, repeats=(15, 2)
)
ROWS: list[dict[str, Any]] = [
    {"name": "dense"},
    *({"name": f"weight sharing k={k}", "n_clusters": k} for k in (16, 256)),
    *({"name": f"low rank energy {e}", "energy": e} for e in (0.9, 0.7)),
]


def train_row(row: dict, start: nn.Module, data: dict, s: Settings, out: Run) -> nn.Module:
    """Train ``row`` from ``start``, export it and load it back; fills ``row``, returns the loaded model."""
    callbacks: list[Any] = []
    if "n_clusters" in row:
        callbacks = [lit_opt.WeightSharingCallback(n_clusters=row["n_clusters"], **common.ENCODER)]
    elif "energy" in row:
        callbacks = [lit_opt.LowRankCallback(energy=row["energy"], at_step=0, **common.ENCODER)]
    module = common.Classifier(copy.deepcopy(start).train(), lr=s.lr)
    row["fit_s"] = common.fit_batches(module, data, data["batches"][s.base_steps :], callbacks=callbacks)
    model = module.model.eval()
    if "energy" in row:
        row["ranks"] = callbacks[0].ranks
    row["parameters"] = sum(p.numel() for p in model.parameters())
    row["accuracy"] = accuracy(model, data["dm"])[0]
    path = lit_opt.export(model, out.work_dir / "artifacts" / row["name"].replace(" ", "_").replace("=", ""))
    row["bytes"] = file_bytes(path / "model.safetensors")
    loaded = lit_opt.load(path, kernel="reference")
    row["max_abs_logit_diff_loaded_vs_trained"] = common.logit_diff(loaded, model)
    return loaded


def cells(row: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    """One row of the table: accuracy, size, parameters, fidelity and latency against ``dense``."""
    if "reason" in row:
        return {"row": row["name"], "accuracy": f"n/a: {row['reason']}"}
    timed = "b32_ratio" in row
    return {
        "row": row["name"],
        "accuracy": f"{row['accuracy']:.4f}",
        "exported MB": f"{row['bytes'] / 1e6:.1f}",
        "size vs dense": f"{row['bytes'] / dense['bytes']:.2f}x",
        "parameters": f"{row['parameters'] / 1e6:.2f}M",
        "loaded vs trained (max abs logit diff)": f"{row['max_abs_logit_diff_loaded_vs_trained']:.1e}",
        "b32 median ms": f"{row['b32_median_ms']:.0f}" if timed else "-",
        "latency vs dense": f"{row['b32_ratio']:.2f}x" if timed else "-",
    }


def run(s: Settings, out: Run) -> None:
    data = common.fixed_batches(s, out.work_dir, s.base_steps + s.steps)
    start = common.Classifier(common.classifier(s.model), lr=s.lr)
    common.fit_batches(start, data, data["batches"][: s.base_steps])
    start_accuracy = accuracy(start.model, data["dm"])[0]
    rows, loaded = [dict(r) for r in ROWS], {}
    for row in rows:
        try:
            loaded[row["name"]] = train_row(row, start.model, data, s, out)
        except Exception as err:  # report what a row does, whatever it is; the others still run
            row["reason"] = f"{type(err).__name__}: {err}"
    timed = {name: model for name, model in loaded.items() if "sharing" not in name}
    stats = common.time_batches(timed, "dense", {32: s.repeats}, s.latency_seq_len, s.warmup)[32]
    notes = []
    for row in rows:
        row.update({f"b32_{k}": v for k, v in stats.get(row["name"], {}).items()})
        if row.get("ranks") is not None:
            ranks = sorted(row["ranks"].values())
            spread = f"ranks {ranks[0]}..{ranks[-1]} (median {ranks[len(ranks) // 2]})" if ranks else "none"
            notes.append(f"{row['name']}: {len(ranks)} layers factorized, {spread}.")
    out.rows += [{"name": "dense start", "accuracy": start_accuracy, "sizes": data["sizes"]}, *rows]
    out.table(
        f"Weight sharing and low rank ({s.model}: {s.base_steps} dense steps, then {s.steps} steps per row, batch "
        f"32, max_length 64; test accuracy on {data['sizes']['test']} snippets, dense start {start_accuracy:.4f})",
        [cells(r, rows[0]) for r in rows],
        notes=" ".join(notes)
        + f" Latency: loaded artifacts, fp32 reference kernel, batch 32 x seq {s.latency_seq_len}, median of "
        f"{s.repeats} interleaved rounds, {s.threads} threads (a shared machine: the ratios are the fair part).",
        plot="exported MB",
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))

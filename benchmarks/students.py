"""Narrow and MobileBERT-style students distilled from the fine-tuned MiniLM (CPU): accuracy, size, latency.

On ``train_rows`` of Rotten Tomatoes' stratified training split (``common.epoch_data``: the same bucketed
batches in every run), constant-lr AdamW, ``epochs`` epochs each:

1. the teacher, all-MiniLM-L6-v2, fine-tuned with cross-entropy and saved;
2. a narrow random student (``students.narrow``: ``narrow_layers`` layers, ``narrow_hidden`` wide), once
   on the teacher's softened logits and the labels only, and once TinyBERT-style: the same plus the
   embedding-layer, hidden-state and attention-map losses over the default layer map (learned projections),
   once more with the hidden states centered (``center_hidden=True``), once centered and compared by direction
   (``hidden_metric="cosine"``), and once in TinyBERT's two stages
   (those losses alone for ``intermediate_epochs``, then logits alone);
3. the ``keep_layers`` student (teacher layers 0, 2, 4) on logits, and the MobileBERT-style student
   (``mobilebert``: bottleneck blocks at the teacher's width, feature-map transfer plus logits);
4. test accuracy, non-embedding parameters, and fp32 latency at batch 1 and 32 (``seq_len`` tokens),
   every model timed round-robin against the teacher in the same rounds.
"""

import argparse

import lightning as L
import torch
from torch import nn

from benchmarks import common
from benchmarks.common import pct
from benchmarks.harness import Run, main
from lit_opt import DistillationModule
from lit_opt.distillation import students
from lit_opt.distillation.mobilebert import mobilebert

SETTINGS = (
    common.EPOCH_SETTINGS
    | common.DISTILL_SETTINGS
    | dict(
        train_rows=(1280, 64),
        test_rows=(640, 32),
        student_lr=2e-4,
        attention_weight=1.0,
        intermediate_epochs=1,
        narrow_hidden=(256, 16),
        narrow_layers=4,
        narrow_heads=4,
        keep_layers=([0, 2, 4], [0]),
        mobile_layers=(6, 2),
        mobile_bottleneck=(128, 16),
        mobile_intermediate=(512, 32),
        mobile_embedding=(128, 16),
        seq_len=(64, 16),
        warmup=2,
        repeats=(10, 2),
    )
)
HELP = {
    "test_rows": "test examples (0: all)",
    "threads": "torch threads (training and latency)",
    "intermediate_epochs": "epochs of the two-stage TinyBERT row on the intermediate losses alone",
}


def build(s: argparse.Namespace, kind: str, teacher_dir: str) -> nn.Module:
    L.seed_everything(common.SEED + 1, verbose=False)  # the same random start for the two narrow runs
    if kind == "narrow":
        return students.narrow(teacher_dir, s.narrow_hidden, s.narrow_layers, s.narrow_heads, num_labels=2)
    if kind == "keep_layers":
        return students.keep_layers(teacher_dir, s.keep_layers, num_labels=2)
    shape = dict(bottleneck_size=s.mobile_bottleneck, num_layers=s.mobile_layers, num_heads=s.narrow_heads)
    sizes = dict(intermediate_size=s.mobile_intermediate, embedding_size=s.mobile_embedding)
    return mobilebert(teacher_dir, **shape, **sizes, num_labels=2)


def run(s: argparse.Namespace, out: Run) -> None:
    teacher_model, measured, teacher_dir = common.fine_tune_teacher(s, out.work_dir)
    rows, models = [{"name": "teacher", "loss": "cross-entropy"} | measured], {"teacher": teacher_model}
    tiny = "narrow, TinyBERT (embeddings + hidden + attention + logits)"
    centered = "narrow, TinyBERT with centered hidden states"
    cosine = "narrow, TinyBERT with centered hidden states, cosine"
    staged = f"narrow, TinyBERT in two stages ({s.intermediate_epochs} epoch(s) intermediate, then logits)"
    plans = [
        ("narrow, logits only", "narrow", 0.0, 0.0, 0, False, "mse"),
        (tiny, "narrow", s.hidden_weight, s.attention_weight, 0, False, "mse"),
        (centered, "narrow", s.hidden_weight, s.attention_weight, 0, True, "mse"),
        (cosine, "narrow", s.hidden_weight, s.attention_weight, 0, True, "cosine"),
        (staged, "narrow", s.hidden_weight, s.attention_weight, s.intermediate_epochs, False, "mse"),
        ("keep_layers [0, 2, 4], logits", "keep_layers", 0.0, 0.0, 0, False, "mse"),
        ("MobileBERT-style, feature maps + logits", "mobilebert", s.hidden_weight, 0.0, 0, False, "mse"),
    ]
    for name, kind, hidden, attention, stages, center, metric in plans:
        models[name] = model = build(s, kind, str(teacher_dir))
        teacher = students.pretrained(str(teacher_dir), num_labels=2)
        weights = dict(hidden_weight=hidden, attention_weight=attention, intermediate_epochs=stages)
        weights |= dict(center_hidden=center, hidden_metric=metric, lr=s.student_lr)
        module = DistillationModule(model, teacher, temperature=s.temperature, alpha=s.alpha, **weights)
        loss = f"{s.alpha:g}·T²·KL + {1 - s.alpha:g}·CE"
        loss += (
            f" + {hidden:g}·{'centered ' if center else ''}hidden {'1 - cos' if metric == 'cosine' else 'MSE'}"
            if hidden
            else ""
        )
        loss += f" + {attention:g}·attention MSE" if attention else ""
        loss += f" (layer map {dict(module.layer_map)})" if module.layer_map else ""
        loss += f"; intermediate terms alone for {stages} epoch(s), then the others" if stages else ""
        fit = common.fit_epochs(s, out.work_dir, module)
        rows.append({"name": name, "loss": loss} | fit | common.evaluate(s, out.work_dir, model))
    torch.set_num_threads(s.threads)  # fp32 latency at batch 1 and 32, round-robin against the teacher
    models = {name: model.eval() for name, model in models.items()}
    timing = common.time_batches(models, "teacher", {1: s.repeats, 32: s.repeats}, s.seq_len, s.warmup)
    for row in rows:
        model = models[row["name"]]
        row["params"] = sum(p.numel() for p in model.parameters())
        outside = [p for n, p in model.named_parameters() if ".embeddings." not in f".{n}"]  # head included
        row["non_embedding_params"] = sum(p.numel() for p in outside)
        row["hidden_size"] = model.config.hidden_size
        row["latency"] = {b: timing[b][row["name"]] for b in timing}
    out.rows += [{k: v for k, v in r.items() if k != "test"} for r in rows]
    teacher, base_params = rows[0], rows[0]["non_embedding_params"]
    out.table(
        f"Students ({s.data}: {teacher['train_rows']} train rows, {teacher['test_n']} test rows, max_length "
        f"{s.max_length}, batch {s.batch_size}, {s.epochs} epochs = {teacher['steps']} steps each)",
        [
            {
                "model": r["name"],
                "width": r["hidden_size"],
                "loss": r["loss"],
                "test acc": pct(r["test_acc"]),
                "% of teacher": f"{100 * r['test_acc'] / teacher['test_acc']:.1f}%",
                "non-emb params": f"{r['non_embedding_params'] / 1e6:.2f}M",
                "% of teacher params": f"{100 * r['non_embedding_params'] / base_params:.1f}%",
            }
            | {
                f"ms b{b} (vs teacher)": f"{r['latency'][b]['median_ms']:.1f} ({r['latency'][b]['paired_ratio']:.2f}x)"
                for b in (1, 32)
            }
            for r in rows
        ],
        notes=f"One seed each; fp32, {s.threads} thread(s), seq {s.seq_len}, latency ratios are paired medians "
        f"over {s.repeats} round-robin rounds against the teacher. Test accuracy's standard error is about "
        f"{pct(common.standard_error(teacher['test_acc'], teacher['test_n']))}.",
        plot="test acc",
    )
    logits, *tinybert, _, mobile = rows[1:]
    tiny_row = max(tinybert, key=lambda r: r["test_acc"])
    out.goal(
        f"TinyBERT-style >= logits-only distillation (narrow student, hidden {s.narrow_hidden})",
        f"{pct(tiny_row['test_acc'])} ({tiny_row['name']}) vs {pct(logits['test_acc'])}",
        tiny_row["test_acc"] >= logits["test_acc"],
    )
    share, ratio = mobile["non_embedding_params"] / base_params, mobile["test_acc"] / teacher["test_acc"]
    out.goal(
        "MobileBERT-style: >= 95% of the teacher's accuracy at <= 40% of its non-embedding parameters",
        f"{100 * ratio:.1f}% of the accuracy at {100 * share:.1f}% of the parameters",
        ratio >= 0.95 and share <= 0.40,
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))

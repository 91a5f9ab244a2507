"""The causal-LM task: SmolLM2 (or any Llama-style LM) → a shallower distilled student → int8-QAT, int4-embedding artifact (MLP-row and KV-head pruning optional).

Rows are ranked by held-out perplexity (the test split's packed blocks) and measured for generation:
prefill latency at batch 1, greedy decode tokens/s with the KV cache at each batch size
(:func:`~lit_opt.inference.generation.measure_generation`), and three greedy continuations each.

Example::

    from lit_opt.recipe import load_config, run_recipe
    run_recipe(load_config("configs/recipes/smollm2_rotten_tomatoes.yaml"))  # task: causal_lm
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lit_opt import load
from lit_opt.data.causal_lm import CausalLMDataModule
from lit_opt.inference.generation import measure_generation
from lit_opt.nn.quantized import QuantizedLinear
from lit_opt.recipe.classification import artifact_params, params
from lit_opt.recipe.evaluation import shipped_bytes
from lit_opt.recipe.lm_config import CausalLMRecipeConfig
from lit_opt.recipe.lm_training import (
    compress_student,
    distill_student,
    load_teacher,
    make_data,
    ptq_peer,
    student_layers,
    teacher_source,
)
from lit_opt.recipe.task import Candidate, Task, Trained, announce

BASELINE, COMPRESSED = "teacher-fp32", "lit-opt-compressed"


def perplexity(model: nn.Module, dm: CausalLMDataModule, max_blocks: int | None) -> tuple[float, int]:
    """``exp`` of the mean next-token cross-entropy over the test split's first ``max_blocks`` blocks, and the tokens."""
    total, tokens, blocks = 0.0, 0, 0
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            if max_blocks is not None and blocks >= max_blocks:
                break
            take = (
                len(batch["input_ids"])
                if max_blocks is None
                else min(len(batch["input_ids"]), max_blocks - blocks)
            )
            ids, mask = batch["input_ids"][:take], batch["attention_mask"][:take]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
            targets = batch["labels"][:take, 1:]
            keep = targets != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum"))
            tokens += int(keep.sum())
            blocks += take
    return math.exp(total / tokens), tokens


def continuations(model: nn.Module, prompts: torch.Tensor, new_tokens: int, tokenizer: Any) -> list[str]:
    """Greedy continuations (KV cache) of each prompt row, decoded."""
    with torch.inference_mode():
        out = cast(Any, model).generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )
    return [tokenizer.decode(row[prompts.shape[1] :], skip_special_tokens=True) for row in out]


class CausalLMTask(Task):
    """Causal language modelling (``task: causal_lm``, :class:`~lit_opt.recipe.lm_config.CausalLMRecipeConfig`)."""

    config: CausalLMRecipeConfig
    metric, metric_label = "perplexity", "held-out perplexity (lower is better)"
    stages = {
        "data": "the teacher's files (converted once from GGUF), reading, tokenizing, splitting and packing the text",
        "teacher": "loading the teacher (fp32)",
        "distill": "choosing the teacher layers the student keeps (unless given), distilling it on the training split",
        "compress": "MLP-row / head pruning + int8 QAT + int4 embeddings while distilling, then export",
        "ptq_peer": "the peer: the distilled student quantized after training (torch.ao dynamic int8)",
        "evaluate": "perplexity on the test split, sizes, prefill and decode speed, samples of every row",
    }
    plots = (
        ("size_bytes", "file size (MB, log)", "perplexity_vs_size.png"),
        ("decode_tokens_per_s_b1", "decode tokens/s at batch 1 (log)", "perplexity_vs_decode_speed.png"),
    )

    def __init__(self, config: CausalLMRecipeConfig) -> None:
        super().__init__(config)
        self.source: Path | None = None
        self.samples: dict[str, Any] = {}
        self.layers: list[int] = []  # the teacher layers the student keeps, known once it is distilled

    def make_data(self) -> CausalLMDataModule:
        self.source = teacher_source(self.config)
        return make_data(self.config, self.source)

    def teacher(self, dm: CausalLMDataModule, run_dir: Path) -> tuple[nn.Module, Path]:
        assert self.source is not None  # make_data ran first
        return load_teacher(self.source), self.source

    def distill(
        self, dm: CausalLMDataModule, teacher: nn.Module, teacher_dir: Path, run_dir: Path
    ) -> nn.Module:
        start = time.perf_counter()
        self.layers = student_layers(self.config, dm, teacher)
        if isinstance(self.config.student.layers, int):
            announce(
                f"distill: the layer search keeps teacher layers {self.layers} ({time.perf_counter() - start:.0f} s)"
            )
        return distill_student(self.config, dm, teacher, self.layers, run_dir)

    def compress(
        self, dm: CausalLMDataModule, distilled: nn.Module, teacher: nn.Module, run_dir: Path
    ) -> Path:
        return compress_student(self.config, dm, distilled, teacher, run_dir)

    def peer(
        self, dm: CausalLMDataModule, distilled: nn.Module, teacher: nn.Module, run_dir: Path
    ) -> Candidate:
        model, how, directory = ptq_peer(distilled, run_dir)
        return Candidate(
            "ptq-int8-torch-ao", model, directory, params(distilled), f"the distilled student, {how}"
        )

    def candidates(self, dm: CausalLMDataModule, trained: Trained) -> list[Candidate]:
        config, c = self.config, self.config.compress
        compressed = load(trained.artifact, kernel=config.latency.kernel)
        kernels = sorted({m.kernel for m in compressed.modules() if isinstance(m, QuantizedLinear)})
        pruned = (
            f", MLP rows {c.mlp_sparsity:.0%} and KV-head groups {c.head_sparsity:.0%} pruned (physically removed)"
            if c.mlp_sparsity or c.head_sparsity
            else ""
        )
        teacher_layers = cast(Any, trained.teacher).config.num_hidden_layers
        searched = ", chosen by layer search" if isinstance(config.student.layers, int) else ""
        from lit_opt.models.smollm2 import PROVENANCE

        source = PROVENANCE if config.teacher.path is None else f"{trained.teacher_dir}"
        return [
            Candidate(
                BASELINE,
                trained.teacher,
                trained.teacher_dir,
                params(trained.teacher),
                f"the teacher ({teacher_layers} layers): {source}; fp32, eager",
            ),
            Candidate(
                "student-distilled-fp32",
                trained.distilled,
                trained.run_dir / "student_distilled",
                params(trained.distilled),
                f"teacher layers {self.layers} kept ({len(self.layers)} of {teacher_layers}{searched}), "
                f"distilled (T={config.student.temperature:g}, alpha={config.student.alpha:g}), fp32",
            ),
            trained.peer,
            Candidate(
                COMPRESSED,
                compressed,
                trained.artifact,
                artifact_params(trained.artifact),
                f"the distilled student, distilled further under int{c.weight_bits} QAT (activations "
                f"{c.activations}) on the decoder layers and int{c.embedding_bits} per-group ({c.embedding_group_size}) "
                f"QAT on the tied embedding / LM head{pruned}; other tensors {c.export_dtype}; exported and loaded with lit_opt.load "
                f"(kernels: {', '.join(kernels)})",
            ),
        ]

    def evaluate(self, candidates: list[Candidate], dm: CausalLMDataModule) -> list[dict[str, Any]]:
        g = self.config.latency
        previous = torch.get_num_threads()
        torch.set_num_threads(g.threads)
        try:
            for candidate in candidates:
                candidate.model.eval()
                ppl, tokens = perplexity(candidate.model, dm, self.config.data.eval_blocks)
                candidate.measured.update(perplexity=ppl, eval_tokens=tokens)
                candidate.measured["size_bytes"] = shipped_bytes(candidate.directory)
            vocab = int(cast(Any, candidates[0].model).config.vocab_size)
            figures = measure_generation(
                {c.name: c.model for c in candidates},
                vocab,
                prompt_len=g.prompt_len,
                new_tokens=g.new_tokens,
                batch_sizes=g.batch_sizes,
                repeats=g.repeats,
                warmup=g.warmup,
            )
            prompts = self._prompts(dm)
            tokenizer = dm.tokenizer()
            self.samples = {
                "prompts": [tokenizer.decode(row) for row in prompts],
                "rows": {
                    c.name: continuations(c.model, prompts, g.sample_new_tokens, tokenizer)
                    if len(prompts)
                    else []
                    for c in candidates
                },
            }
        finally:
            torch.set_num_threads(previous)
        return [
            {
                "name": c.name,
                "params": c.params,
                **c.measured,
                **figures[c.name],
                "samples": self.samples["rows"][c.name],
                "how": c.how,
                "directory": c.directory.name,
            }
            for c in candidates
        ]

    def _prompts(self, dm: CausalLMDataModule) -> torch.Tensor:
        """The first ``sample_prompt_tokens`` of the first test blocks (one per sample)."""
        g = self.config.latency
        rows = [ids[: g.sample_prompt_tokens] for ids in dm.splits["test"][: g.samples]]
        return torch.tensor(rows, dtype=torch.long) if rows else torch.empty(0, 0, dtype=torch.long)

    def goals(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return goals(rows)

    def table(self, rows: list[dict[str, Any]]) -> str:
        return table(rows)

    def data_summary(self, dm: CausalLMDataModule) -> dict[str, Any]:
        return {
            "texts": dm.text_counts,
            "blocks": {name: len(blocks) for name, blocks in dm.splits.items()},
            "block_size": dm.block_size,
            "source": self.config.data.path or "Rotten Tomatoes critic snippets (default)",
            "teacher": str(self.source),
        }

    def method(self, report: dict[str, Any]) -> str:
        s, data = report["config"], report["data"]
        g = s["latency"]
        return (
            f"Data: {data['source']}, split by text ({data['texts']['train']} / {data['texts']['val']} / "
            f"{data['texts']['test']} texts) and packed into {data['block_size']}-token blocks ({data['blocks']['train']} "
            f"train blocks). Perplexity on the test split's blocks (the same tokens for every row); size = bytes of "
            f"{', '.join(report['size_files'])} (tokenizer excluded); prefill = batch 1 x {g['prompt_len']} tokens; "
            f"decode = greedy with the KV cache, {g['new_tokens']} new tokens, tokens/s of the decode steps alone; "
            f"medians of {g['repeats']} interleaved rounds, {g['threads']} threads."
        )

    def sections(self, report: dict[str, Any]) -> list[str]:
        lines = ["## Samples", "", "Greedy continuations of held-out prompts.", ""]
        for i, prompt in enumerate(self.samples.get("prompts", [])):
            lines += [f"**Prompt {i + 1}**: `{prompt!r}`", ""]
            lines += [f"- {r['name']}: `{r['samples'][i]!r}`" for r in report["rows"]]
            lines.append("")
        return lines


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The causal-LM goals for ``lit-opt-compressed``, each with what was measured and whether it was met.

    Example::

        >>> row = {"perplexity": 10.0, "size_bytes": 100, "decode_tokens_per_s_b1": 10.0}
        >>> rows = [{"name": "teacher-fp32", **row}, {"name": "ptq-x", **row},
        ...         {"name": "lit-opt-compressed", **row, "decode_tokens_per_s_b1": 60.0, "size_bytes": 9}]
        >>> [g["met"] for g in goals(rows)]
        [True, True, True, False]
    """
    by = {r["name"]: r for r in rows}
    base, ours = by[BASELINE], by[COMPRESSED]
    peer = next(r for r in rows if r["name"].startswith("ptq"))
    speed = ours["decode_tokens_per_s_b1"] / base["decode_tokens_per_s_b1"]
    smaller = base["size_bytes"] / ours["size_bytes"]
    ratio = ours["perplexity"] / base["perplexity"]
    return [
        {
            "goal": "decode tokens/s at batch 1 >= 5x teacher-fp32's",
            "measured": f"{speed:.2f}x",
            "met": speed >= 5,
        },
        {
            "goal": "file >= 10x smaller than teacher-fp32's",
            "measured": f"{smaller:.1f}x",
            "met": smaller >= 10,
        },
        {
            "goal": "held-out perplexity <= 1.5x teacher-fp32's",
            "measured": f"{ratio:.2f}x ({ours['perplexity']:.2f} vs {base['perplexity']:.2f})",
            "met": ratio <= 1.5,
        },
        {
            "goal": f"perplexity below the PTQ peer's ({peer['name']}) at a file no larger",
            "measured": f"{ours['perplexity']:.2f} vs {peer['perplexity']:.2f}, "
            f"{ours['size_bytes'] / 1e6:.1f} MB vs {peer['size_bytes'] / 1e6:.1f} MB",
            "met": ours["perplexity"] < peer["perplexity"] and ours["size_bytes"] <= peer["size_bytes"],
        },
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table with ratios to ``teacher-fp32``."""
    base = next(r for r in rows if r["name"] == BASELINE)
    sizes = sorted(int(k.rsplit("_b", 1)[1]) for k in base if k.startswith("decode_tokens_per_s_b"))
    head = "| model | perplexity | size MB | smaller | params | prefill ms b1 |"
    head += "".join(f" decode tok/s b{b} | speedup b{b} |" for b in sizes)
    lines = [head, "|---|" + "---:|" * (5 + 2 * len(sizes))]
    for r in rows:
        line = (
            f"| {r['name']} | {r['perplexity']:.2f} | {r['size_bytes'] / 1e6:.1f} | "
            f"{base['size_bytes'] / r['size_bytes']:.1f}x | {r['params'] / 1e6:.1f}M | {r['prefill_ms_b1']:.1f} |"
        )
        for b in sizes:
            key = f"decode_tokens_per_s_b{b}"
            line += f" {r[key]:.1f} | {r[key] / base[key]:.2f}x |"
        lines.append(line)
    return "\n".join(lines)

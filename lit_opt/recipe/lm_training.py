"""The causal-LM recipe's training stages: the teacher, a shallower student distilled from it, its compression and PTQ peer.

Every stage is an ordinary Lightning ``fit`` on the :class:`~lit_opt.data.CausalLMDataModule` (packed
blocks of the training split) with a TensorBoard logger under ``<run>/logs/<stage>``. The student is
trained on ``alpha * T² * KL(teacher ‖ student) + (1 - alpha) * CE`` per predicted token.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from lit_opt import ExportCallback
from lit_opt.data.causal_lm import CausalLMDataModule, check_block_size
from lit_opt.recipe.lm_config import CausalLMRecipeConfig, LMCompressConfig
from lit_opt.recipe.training import fit, qat_callbacks, structured_pruning

log = logging.getLogger(__name__)

MLP_TARGETS = ["student.*.mlp.gate_proj", "student.*.mlp.up_proj"]
HEAD_TARGETS = ["student.*.self_attn"]
DECODER_TARGETS = ["student.model.layers.*"]
EMBEDDING_TARGETS = ["student.model.embed_tokens"]


def teacher_source(config: CausalLMRecipeConfig) -> Path:
    """The teacher's directory: ``teacher.path``, or SmolLM2-135M-Instruct converted once from its GGUF file."""
    if config.teacher.path is not None:
        path = Path(config.teacher.path).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(
                f"teacher.path={config.teacher.path!r} is not a Hugging Face model directory (no config.json). "
                "HINT: pass a directory saved with save_pretrained (with its tokenizer), or null for SmolLM2."
            )
        return path
    from lit_opt.models.smollm2 import smollm2_135m_instruct

    return smollm2_135m_instruct(config.data.cache_dir)


def make_data(config: CausalLMRecipeConfig, teacher_dir: Path) -> CausalLMDataModule:
    """The data module (the teacher's tokenizer), set up; ``block_size`` and ``student.layers`` checked against the teacher."""
    from transformers import AutoConfig

    teacher_config = AutoConfig.from_pretrained(str(teacher_dir))
    check_layers(config.student.layers, getattr(teacher_config, "num_hidden_layers", None))
    positions = getattr(teacher_config, "max_position_embeddings", None)
    check_block_size(config.data.block_size, positions, f"the teacher ({teacher_dir})")
    d = config.data
    dm = CausalLMDataModule(
        path=d.path,
        text_column=d.text_column,
        tokenizer=str(teacher_dir),
        block_size=d.block_size,
        batch_size=d.batch_size,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
        max_positions=positions,
        max_texts=d.max_texts,
        cache_dir=d.cache_dir,
    )
    dm.setup("fit")
    return dm


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, ce)``: ``alpha * T² * mean KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * CE`` over kept targets.

    Position ``i`` predicts token ``i + 1``; labels ``-100`` are ignored; both terms are means over the
    kept target tokens. Without a teacher the loss is the CE alone.
    """
    s = student_logits[:, :-1].flatten(0, 1)  # (B*(T-1), V)
    y = labels[:, 1:].flatten()  # (B*(T-1),)
    keep = y != -100
    s, y = s[keep], y[keep]
    ce = F.cross_entropy(s, y)
    if teacher_logits is None or alpha == 0:
        return ce, ce
    t = teacher_logits[:, :-1].flatten(0, 1)[keep]
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=-1),
        F.log_softmax(t / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * temperature**2 * kl + (1 - alpha) * ce, ce


class CausalLMDistillation(L.LightningModule):
    """Trains ``student`` on next-token CE, and on the frozen ``teacher``'s distribution when there is one.

    Logs ``train_loss`` and ``train_ce``; :meth:`export_module` hands ``ExportCallback`` the student.

    Example::

        module = CausalLMDistillation(student, teacher, temperature=2.0, alpha=0.5, lr=3e-4)
        Trainer(max_steps=100).fit(module, datamodule=CausalLMDataModule(tokenizer=...))
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None, temperature: float, alpha: float, lr: float
    ) -> None:
        super().__init__()
        self.student = student.train()
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.temperature, self.alpha, self.lr = temperature, alpha, lr
        self.tokenizer: Any = None

    def export_module(self) -> nn.Module:
        return self.student

    @override
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        teacher_logits = None
        if self.teacher is not None and self.alpha > 0:
            self.teacher.eval()
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits
        logits = self.student(**inputs).logits
        loss, ce = distillation_loss(logits, teacher_logits, batch["labels"], self.temperature, self.alpha)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_ce", ce)
        return loss

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.student.parameters(), lr=self.lr, weight_decay=0.01)


def load_teacher(
    config: CausalLMRecipeConfig, dm: CausalLMDataModule, source: Path, run_dir: Path
) -> tuple[Any, Path]:
    """The teacher in fp32; fine-tuned on the training split first when ``teacher.max_steps > 0`` (then saved)."""
    from transformers import AutoModelForCausalLM

    teacher: Any = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    if config.teacher.max_steps <= 0:
        return teacher.eval(), source
    module = CausalLMDistillation(teacher, None, 1.0, 0.0, config.teacher.lr)
    fit(config, run_dir, "teacher", module, dm, 1, config.teacher.max_steps)
    directory = run_dir / "teacher"
    teacher.save_pretrained(str(directory), safe_serialization=True)
    dm.tokenizer().save_pretrained(str(directory))
    return teacher.eval(), directory


def check_layers(layers: list[int], count: int | None) -> None:
    """Raise ``ValueError`` if ``layers`` names a layer a teacher of ``count`` layers does not have."""
    if count is not None and max(layers) >= count:
        raise ValueError(
            f"student.layers={layers!r} names layers the teacher's {count} do not have. "
            f"HINT: use indices 0..{count - 1}."
        )


def keep_decoder_layers(teacher: nn.Module, layers: list[int]) -> Any:
    """A copy of a Llama-style causal LM (``model.layers``) keeping the decoder ``layers``; embeddings and head copied.

    Raises:
        ValueError: For a model without ``model.layers`` or a layer index it does not have.
    """
    blocks = getattr(getattr(teacher, "model", None), "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(
            f"student.layers needs a Llama-style causal LM (model.layers); {type(teacher).__name__} has none. "
            "HINT: the causal-LM recipe's teacher is a Llama/Qwen2/Mistral-style model."
        )
    check_layers(layers, len(blocks))
    student: Any = copy.deepcopy(teacher)
    student.model.layers = nn.ModuleList(student.model.layers[i] for i in layers)
    for index, block in enumerate(student.model.layers):  # the KV cache is indexed by layer
        block.self_attn.layer_idx = index
    student.config.num_hidden_layers = len(layers)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in layers]
    return student


def distill_student(
    config: CausalLMRecipeConfig, dm: CausalLMDataModule, teacher: nn.Module, run_dir: Path
) -> Any:
    """The student (teacher ``student.layers`` kept) distilled on the training split; saved to ``run_dir/student_distilled``."""
    L.seed_everything(config.seed, verbose=False)
    s = config.student
    student = keep_decoder_layers(teacher, s.layers)
    module = CausalLMDistillation(student, teacher, s.temperature, s.alpha, s.lr)
    fit(config, run_dir, "distill", module, dm, s.epochs, s.max_steps)
    student.eval().save_pretrained(str(run_dir / "student_distilled"), safe_serialization=True)
    return student


def _steps(dm: CausalLMDataModule, epochs: int, max_steps: int) -> int:
    total = len(dm.train_dataloader()) * epochs
    return total if max_steps < 0 else min(total, max_steps)


def compress_callbacks(config: LMCompressConfig, steps: int) -> list[L.Callback]:
    """MLP rows (gate and up together) and KV-head groups pruned over the first steps; int8 QAT; int4 embeddings."""
    plan = [("rows", config.mlp_sparsity, MLP_TARGETS), ("heads", config.head_sparsity, HEAD_TARGETS)]
    pruning = structured_pruning(plan, config.prune_fraction_of_training, steps)
    return [*pruning, *qat_callbacks(config, DECODER_TARGETS, EMBEDDING_TARGETS)]


def compress_student(
    config: CausalLMRecipeConfig,
    dm: CausalLMDataModule,
    distilled: nn.Module,
    teacher: nn.Module,
    run_dir: Path,
) -> Path:
    """Go on distilling a copy of the student under pruning and QAT; exported to ``run_dir/compressed``."""
    c, s = config.compress, config.student
    student = copy.deepcopy(distilled).train()
    module = CausalLMDistillation(student, teacher, s.temperature, s.alpha, c.lr)
    module.tokenizer = dm.tokenizer()
    artifact = run_dir / "compressed"
    callbacks = [
        *compress_callbacks(c, _steps(dm, c.epochs, c.max_steps)),
        ExportCallback(str(artifact), dtype=c.export_dtype),
    ]
    fit(config, run_dir, "compress", module, dm, c.epochs, c.max_steps, callbacks)
    return artifact


def ptq_peer(distilled: nn.Module, run_dir: Path) -> tuple[nn.Module, str, Path]:
    """The distilled student quantized after training with torch.ao's dynamic int8 (its Linear layers, LM head included).

    Saved as a user would ship it: ``model.pt`` (its state dict) and ``config.json``. Returns the model,
    the method's label and the directory.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(distilled).eval(), {nn.Linear}, dtype=torch.qint8
        ).eval()
    directory = run_dir / "ptq_peer"
    directory.mkdir()
    torch.save(quantized.state_dict(), directory / "model.pt")
    cast(Any, distilled).config.to_json_file(str(directory / "config.json"))
    return quantized, "torch.ao quantize_dynamic({nn.Linear}, qint8); embeddings fp32", directory

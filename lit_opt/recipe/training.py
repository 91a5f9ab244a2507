"""The recipe's training stages: fine-tune the teacher, distil the student, compress it (and its PTQ peer).

Every stage is an ordinary Lightning ``fit`` on the same :class:`RecipeDataModule` (length-bucketed
batches that carry ``idx``, so the teacher's logits are computed once and then read from the
teacher cache), with a TensorBoard logger under ``<run>/logs/<stage>``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from typing_extensions import override

from lit_opt import DistillationModule, ExportCallback, IterativePruningCallback, QATCallback, export, load
from lit_opt.data import TextClassificationDataModule
from lit_opt.distillation import students
from lit_opt.optim import adamw, check_schedule
from lit_opt.recipe.config import CompressConfig, DataConfig, RecipeConfig, StudentConfig

log = logging.getLogger(__name__)

#: Batch keys that are not model inputs.
NOT_INPUTS = ("labels", "idx")
FFN_TARGETS = ["student.*.intermediate.dense"]
HEAD_TARGETS = ["student.*.attention.self"]
ENCODER_TARGETS = ["student.*.encoder.*", "student.*.pooler.*"]
EMBEDDING_TARGETS = ["student.*word_embeddings"]


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of the data module without its labels and row numbers (what the model takes)."""
    return {k: v for k, v in batch.items() if k not in NOT_INPUTS}


class RecipeDataModule(TextClassificationDataModule):
    """:class:`~lit_opt.data.TextClassificationDataModule` with the training split cut to ``max_train_rows``.

    The cut keeps the first rows of the (seeded, shuffled) stratified training split; validation and
    test splits are whole. ``idx`` stays the row number in the file, so the teacher cache's keys hold.
    """

    def __init__(self, max_train_rows: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_train_rows = max_train_rows

    @override
    def setup(self, stage: str) -> None:
        fresh = not self.splits
        super().setup(stage)
        if fresh and self.max_train_rows is not None:
            train = self.splits["train"]
            self.splits["train"] = train.select(range(min(self.max_train_rows, len(train))))


def make_data(config: DataConfig) -> RecipeDataModule:
    """The recipe's data module, set up (the file is read, checked, tokenized and split here)."""
    dm = RecipeDataModule(
        max_train_rows=config.max_train_rows,
        path=config.path,
        text_column=config.text_column,
        label_column=config.label_column,
        max_length=config.max_length,
        batch_size=config.batch_size,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        bucketing=True,
        cache_dir=config.cache_dir,
        return_index=True,
    )
    dm.setup("fit")
    return dm


class Classifier(L.LightningModule):
    """A Hugging Face sequence classifier trained on cross-entropy (the teacher's fine-tune).

    Example::

        module = Classifier(students.pretrained(None, num_labels=2), lr=5e-5, lr_schedule="linear", warmup=0.1)
        Trainer(max_epochs=1).fit(module, datamodule)
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        lr_schedule: str = "constant",
        warmup: float = 0.0,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        check_schedule(lr_schedule, warmup)
        # from_pretrained returns eval mode and Lightning keeps module modes: train with dropout on
        self.model, self.lr, self.weight_decay = model.train(), lr, weight_decay
        self.lr_schedule, self.warmup = lr_schedule, warmup

    @override
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**model_inputs(batch), labels=batch["labels"]).loss
        self.log("train_loss", loss, prog_bar=True)
        return loss

    @override
    def configure_optimizers(self) -> Any:
        return adamw(
            self.parameters(), self.lr, self.weight_decay, self.lr_schedule, self.warmup, self._trainer
        )


def fit(
    config: Any,
    run_dir: Path,
    stage: str,
    module: L.LightningModule,
    dm: L.LightningDataModule,
    epochs: int,
    max_steps: int,
    callbacks: Sequence[L.Callback] = (),
) -> L.Trainer:
    """One recipe stage's ``fit`` on CPU (``config.seed``, ``config.progress``), logged to ``run_dir/logs/<stage>``."""
    L.seed_everything(config.seed, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(str(run_dir / "logs"), name=stage, version=""),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        callbacks=list(callbacks),
        default_root_dir=str(run_dir),
    )
    trainer.fit(module, datamodule=dm)
    return trainer


def train_steps(dm: L.LightningDataModule, epochs: int, max_steps: int) -> int:
    """Optimizer steps a fit of ``epochs`` epochs (capped by ``max_steps`` unless -1) takes."""
    per_epoch = len(dm.train_dataloader())
    total = per_epoch * epochs
    return total if max_steps < 0 else min(total, max_steps)


def fine_tune_teacher(config: RecipeConfig, dm: RecipeDataModule, run_dir: Path) -> tuple[Any, Path]:
    """Fine-tune the teacher on the training split; saved (with the tokenizer) under ``run_dir/teacher``."""
    L.seed_everything(config.seed, verbose=False)
    teacher: Any = name_labels(students.pretrained(config.teacher.path, num_labels=dm.num_classes), dm)
    fit(
        config,
        run_dir,
        "teacher",
        Classifier(teacher, config.teacher.lr, config.teacher.lr_schedule, config.teacher.warmup),
        dm,
        config.teacher.epochs,
        config.teacher.max_steps,
    )
    directory = run_dir / "teacher"
    teacher.save_pretrained(str(directory), safe_serialization=True)
    dm._tokenizer().save_pretrained(str(directory))
    return teacher.eval(), directory


def name_labels(model: Any, dm: RecipeDataModule) -> Any:
    """Give ``model``'s config the data's label names (``id2label``/``label2id``), so artifacts carry them."""
    model.config.id2label = dict(enumerate(dm.label_names))
    model.config.label2id = {name: i for i, name in enumerate(dm.label_names)}
    return model


def _student(config: RecipeConfig, teacher_dir: Path, dm: RecipeDataModule) -> Any:
    L.seed_everything(config.seed, verbose=False)
    if config.student.init == "minilm_l3":
        return name_labels(students.minilm_l3(num_labels=dm.num_classes), dm)
    return name_labels(students.keep_layers(str(teacher_dir), config.student.layers, dm.num_classes), dm)


def distillation_module(
    module_class: type[DistillationModule],
    student_config: Any,
    stage: Any,
    student: nn.Module,
    teacher: nn.Module,
    **kwargs: Any,
) -> Any:
    """A ``module_class`` distilling with ``student_config``'s temperature and alpha, trained as ``stage``
    (a student or compress section) says: its ``lr``, ``lr_schedule`` and ``warmup``."""
    return module_class(
        student,
        teacher,
        temperature=student_config.temperature,
        alpha=student_config.alpha,
        lr=stage.lr,
        lr_schedule=stage.lr_schedule,
        warmup=stage.warmup,
        **kwargs,
    )


def _cached_distillation(
    config: RecipeConfig,
    stage: StudentConfig | CompressConfig,
    student: nn.Module,
    teacher: nn.Module,
    run_dir: Path,
) -> DistillationModule:
    """The classification recipe's distillation, trained as ``stage`` says, the teacher's logits cached in
    ``run_dir/teacher_cache``."""
    return distillation_module(
        DistillationModule,
        config.student,
        stage,
        student,
        teacher,
        teacher_cache=str(run_dir / "teacher_cache"),
    )


def distill_student(
    config: RecipeConfig, dm: RecipeDataModule, teacher: nn.Module, teacher_dir: Path, run_dir: Path
) -> Any:
    """Distil the 3-layer student from the teacher (logits and labels); the teacher's logits are cached."""
    student = _student(config, teacher_dir, dm)
    module = _cached_distillation(config, config.student, student, teacher, run_dir)
    fit(config, run_dir, "distill", module, dm, config.student.epochs, config.student.max_steps)
    return student.eval()


def vocabulary(dm: RecipeDataModule) -> list[int]:
    """The token ids the training split uses, plus the tokenizer's special tokens."""
    from lit_opt import token_ids_in_use

    return token_ids_in_use(dm.splits["train"]["input_ids"], special_ids=dm._tokenizer().all_special_ids)


def pruning_callbacks(config: CompressConfig, steps: int) -> list[L.Callback]:
    """Structured pruning of the student: FFN neurons (rows) and attention heads, over the first steps."""
    plan = [("rows", config.ffn_sparsity, FFN_TARGETS), ("heads", config.head_sparsity, HEAD_TARGETS)]
    return structured_pruning(plan, config.prune_fraction_of_training, steps)


def structured_pruning(
    plan: list[tuple[str, float, list[str]]], prune_fraction_of_training: float, steps: int
) -> list[L.Callback]:
    """One cubic, local, magnitude ``IterativePruningCallback`` per ``(structure, sparsity, targets)`` with sparsity > 0.

    Pruning runs over the first ``prune_fraction_of_training`` of ``steps`` (eight mask updates), the
    rest of the training recovers.
    """
    end = max(1, math.ceil(prune_fraction_of_training * steps))
    return [
        IterativePruningCallback(
            sparsity,
            schedule="cubic",
            start_step=0,
            end_step=end,
            every_n_steps=max(1, end // 8),
            criterion="magnitude",
            structure=structure,
            scope="local",
            targets=targets,
        )
        for structure, sparsity, targets in plan
        if sparsity > 0
    ]


def qat_callbacks(
    config: Any, layer_targets: list[str] = ENCODER_TARGETS, embedding_targets: list[str] = EMBEDDING_TARGETS
) -> list[L.Callback]:
    """``weight_bits`` QAT (with ``activations``) on ``layer_targets`` (default: the encoder and pooler);
    ``embedding_bits`` per-group QAT on ``embedding_targets`` (default: the word embeddings)."""
    return [
        QATCallback(weight_bits=config.weight_bits, activations=config.activations, targets=layer_targets),
        QATCallback(
            weight_bits=config.embedding_bits,
            activations="none",
            granularity="per_group",
            group_size=config.embedding_group_size,
            targets=embedding_targets,
        ),
    ]


def compress_student(
    config: RecipeConfig,
    dm: RecipeDataModule,
    distilled: nn.Module,
    teacher: nn.Module,
    run_dir: Path,
    keep_token_ids: list[int] | None,
) -> Path:
    """Go on distilling a copy of the student under structured pruning and QAT; export it (``ExportCallback``).

    With ``keep_token_ids`` the word embeddings first keep only those rows (vocabulary pruning).
    Returns the artifact's directory, ``run_dir/compressed``.
    """
    c = config.compress
    student = copy.deepcopy(distilled).train()
    if keep_token_ids is not None:
        from lit_opt import prune_vocabulary

        prune_vocabulary(student, keep_token_ids, dm._tokenizer().unk_token_id)
    module = _cached_distillation(config, c, student, teacher, run_dir)
    module.tokenizer = dm._tokenizer()  # ExportCallback ships it beside the weights
    artifact = run_dir / "compressed"
    steps = train_steps(dm, c.epochs, c.max_steps)
    callbacks = [
        *pruning_callbacks(c, steps),
        *qat_callbacks(c),
        ExportCallback(str(artifact), dtype=c.export_dtype),
    ]
    fit(config, run_dir, "compress", module, dm, c.epochs, c.max_steps, callbacks)
    return artifact


def ptq_peer(
    config: RecipeConfig, dm: RecipeDataModule, distilled: nn.Module, teacher: nn.Module, run_dir: Path
) -> tuple[nn.Module, int, str, Path]:
    """The peer: the same student distilled and pruned the same way without QAT, then quantized after training.

    The pruned student is exported in float (heads and neurons physically removed), loaded back and
    quantized with ``torch.ao``'s dynamic int8 (``quantize_dynamic`` on its Linear layers). Returns the
    model, its parameter count before quantization, the method's label and the directory a user
    would ship (``torch.save`` of its state dict and the model's ``config.json``); where ``torch.ao`` cannot
    run, lit_opt's own post-training int8 export is used and labelled so.
    """
    c = config.compress
    student = copy.deepcopy(distilled).train()
    module = _cached_distillation(config, c, student, teacher, run_dir)
    steps = train_steps(dm, c.epochs, c.max_steps)
    fit(config, run_dir, "ptq_peer", module, dm, c.epochs, c.max_steps, pruning_callbacks(c, steps))
    pruned = load(export(student, run_dir / "ptq_peer_fp32"), kernel="reference")
    params = sum(p.numel() for p in pruned.parameters())
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(pruned, {nn.Linear}, dtype=torch.qint8).eval()
            with torch.inference_mode():
                quantized(**model_inputs(next(iter(dm.test_dataloader()))))
        directory = run_dir / "ptq_peer"
        directory.mkdir()
        torch.save(quantized.state_dict(), directory / "model.pt")
        cast(Any, pruned).config.to_json_file(str(directory / "config.json"))
        return quantized, params, "torch.ao quantize_dynamic({nn.Linear}, qint8)", directory
    except (RuntimeError, AttributeError, NotImplementedError) as err:
        log.warning("torch.ao dynamic int8 is unavailable here (%s); using lit_opt's post-training int8", err)
        path = export(
            student, run_dir / "ptq_peer_lit_opt", quantization={"weight_bits": 8, "activations": "dynamic"}
        )
        label = "lit_opt post-training int8 (torch.ao unavailable)"
        return load(path, kernel=config.latency.kernel), params, label, path

"""``DistillationModule``: train a student from a frozen teacher (Hinton et al., 2015; TinyBERT losses)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lit_opt._checks import check_module, check_number
from lit_opt.distillation.cache import TeacherCache, state_fingerprint
from lit_opt.functional.distillation import (
    HIDDEN_METRICS,
    attention_map_loss,
    distillation_loss,
    hidden_state_loss,
)
from lit_opt.optim import adamw, check_schedule

log = logging.getLogger(__name__)
TEACHER = "teacher."
INDEX = "idx"


def _num_classes(model: nn.Module) -> int | None:
    """Classes a classifier predicts: a Hugging Face ``config.num_labels``, else the last Linear's width."""
    config = getattr(model, "config", None)
    if config is not None and isinstance(getattr(config, "num_labels", None), int):
        return int(config.num_labels)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _hidden_width(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "hidden_size", None)


class DistillationModule(pl.LightningModule):
    """Train ``student`` to match a frozen ``teacher``'s softened predictions and the labels.

    .. math::

        \\mathcal{L} = \\alpha T^2 \\mathrm{KL}(\\mathrm{softmax}(t/T) \\| \\mathrm{softmax}(s/T))
                     + (1 - \\alpha) \\mathrm{CE}(s, y) + w_h \\sum_{i \\to j} \\mathrm{MSE}(P_i h^s_i, h^t_j)

    The KL term is averaged over examples (``batchmean``). Batches are ``(x, y)`` or ``(x, y, idx)``
    tuples for modules that return logits, or dicts with ``labels`` (and optionally ``idx``) for
    Hugging Face models (the dict minus ``labels`` and ``idx`` is passed as keyword arguments;
    ``.logits`` is read). ``idx`` holds the examples' indices in the dataset, which the teacher
    cache needs (:class:`~lit_opt.data.TextClassificationDataModule` gives them with
    ``return_index=True``).

    With ``teacher_cache`` (a directory) the teacher's logits are computed once per example and
    kept (see :class:`~lit_opt.distillation.cache.TeacherCache`): written to a per-rank shard at
    the end of each training epoch and read back by every rank, so later epochs and later runs skip
    the teacher. The cache is keyed by the teacher's weights and the data module's ``fingerprint``;
    a cache written for another teacher, data or ``cache_top_k`` raises ``ValueError`` at ``setup``
    instead of being used. With ``cache_top_k`` the soft term uses the teacher's top-k logits
    (:func:`~lit_opt.functional.distillation.top_k_soft_target_loss`), in every epoch alike.

    The student is put in training mode here (Hugging Face's ``from_pretrained`` returns models in
    eval mode, and Lightning keeps each module's mode, so it would otherwise train with dropout off);
    the teacher is frozen, stays in eval mode, runs under ``torch.no_grad()`` and is left out of checkpoints (give it again
    when resuming, as a LightningCLI config does). :func:`lit_opt.export` of this module writes
    the student alone.

    Args:
        student: the model to train.
        teacher: the trained model to imitate.
        temperature: softmax temperature ``T`` (> 0).
        alpha: weight of the soft (teacher) term, in [0, 1]; ``1 - alpha`` weighs cross-entropy.
        hidden_weight: weight of the hidden-state loss (``hidden_metric``; Hugging Face models; 0 disables it).
        layer_map: ``{student_layer: teacher_layer}`` of hidden states to match (indices into
            ``hidden_states``, 0 being the embedding layer's output). Default (TinyBERT's uniform
            map): every student hidden state ``i`` in ``0..L_s``, the embeddings included, against the
            teacher's ``round(i * L_t / L_s)``, e.g. ``{0: 0, 1: 2, 2: 4, 3: 6}`` for 3 student and
            6 teacher layers. A linear projection per mapped state learns the map when the widths
            differ (TinyBERT's :math:`W_h`, one per layer here).
        center_hidden: match the hidden states minus their per-feature means over the batch's kept
            tokens (:func:`~lit_opt.functional.distillation.hidden_state_loss` with ``center=True``).
            Use it when the teacher's states share a large constant part, as all-MiniLM-L6-v2's do
            (a few features near 10 in every token): a narrow random student then spends its
            LayerNorm-bounded states on that constant, stops telling inputs apart and predicts one
            class (students benchmark: 57.8% plain, 71.9% centered, 76.8% centered with ``hidden_metric="cosine"``,
            76.1% logits only).
        hidden_metric: ``"mse"`` (TinyBERT) matches the states' values; ``"cosine"`` (DistilBERT's
            loss) matches each token's direction, ``1 - cos`` averaged over the kept tokens, and leaves
            the student free to choose its states' lengths
            (:func:`~lit_opt.functional.distillation.hidden_state_loss`).
        attention_weight: weight of the attention-map MSE (TinyBERT): layer ``i`` of the student's
            attention probabilities against layer ``j`` of the teacher's for each ``i: j`` of
            ``layer_map`` (maps averaged over heads when the head counts differ); switches both
            models to eager attention, which returns the maps. 0 disables it.
        intermediate_epochs: TinyBERT's two stages in one fit: for the first ``intermediate_epochs``
            epochs the student learns from the intermediate losses alone (hidden states and attention
            maps, weighted as given), then from the output loss alone (KL and cross-entropy). 0 (the
            default) trains on every term together from the first step. On the students benchmark a
            random narrow student trained in two stages ends at the majority class, centered or not:
            after the first stage the output loss alone does not make its [CLS] state depend on the
            input again (all-MiniLM-L6-v2's own [CLS] state is constant up to layer 4).
        lr: AdamW learning rate (a LightningCLI ``optimizer:`` section overrides the optimizer).
        weight_decay: AdamW weight decay.
        lr_schedule: ``"constant"``, or ``"linear"``: the rate rises over the first ``warmup`` share of
            the fit's optimizer steps, then falls to 0 at the last one (:func:`lit_opt.optim.adamw`).
        warmup: with ``lr_schedule="linear"``, the share of the steps spent warming up, in [0, 1).
        teacher_cache: Directory of the teacher-output cache; None runs the teacher on every batch.
        cache_top_k: Logits kept per example in the cache: the ``cache_top_k`` largest (float16), or
            every logit (float32) with 0 or a value at least the number of classes.

    Raises:
        ValueError: ``temperature <= 0``, ``alpha`` outside [0, 1], a negative ``hidden_weight``, an
            ``lr_schedule`` other than ``"constant"``/``"linear"`` or a ``warmup`` outside [0, 1), a
            ``center_hidden`` that is not a bool, a ``hidden_metric`` that is not ``"mse"`` or ``"cosine"``,
            student and teacher predicting different numbers of classes, or a ``layer_map``
            naming layers that don't exist; ``intermediate_epochs`` that is not an integer >= 0 or is
            set without an intermediate loss; a ``cache_top_k`` that is not an integer >= 0 or is set
            without ``teacher_cache``, or ``teacher_cache`` with ``hidden_weight > 0``; (at ``setup``)
            a data module without a ``fingerprint`` or a stale cache; (in training) a batch without
            ``idx`` while the cache is on.

    Example::

        module = DistillationModule(student=small_bert, teacher=fine_tuned_bert, temperature=4.0, alpha=0.5)
        Trainer(max_epochs=3).fit(module, datamodule)
        lit_opt.export(module, "artifacts/student")     # the student only
        # the teacher runs once per example; later epochs and runs read its top-5 logits from disk
        cached = DistillationModule(student, teacher, teacher_cache="outputs/teacher_cache", cache_top_k=5)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.5,
        hidden_weight: float = 0.0,
        layer_map: dict[int, int] | None = None,
        center_hidden: bool = False,
        hidden_metric: str = "mse",
        attention_weight: float = 0.0,
        intermediate_epochs: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        lr_schedule: str = "constant",
        warmup: float = 0.0,
        teacher_cache: str | None = None,
        cache_top_k: int = 0,
    ) -> None:
        super().__init__()
        check_module(
            "student",
            student,
            "HINT: pass the model to train, e.g. students.keep_layers(teacher, [0, 2, 4]).",
        )
        check_module("teacher", teacher, "HINT: pass the trained model to imitate (frozen by this module).")
        check_number("lr", lr, 0.0, inclusive=False)
        check_number("weight_decay", weight_decay, 0.0)
        check_schedule(lr_schedule, warmup)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(
                f"temperature={temperature!r} must be > 0. HINT: 2 to 8 is usual; 1 is plain softmax."
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha={alpha!r} must be in [0, 1]: the weight of the teacher's soft targets.")
        for name, weight in (("hidden_weight", hidden_weight), ("attention_weight", attention_weight)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"{name}={weight!r} must be >= 0 (0 disables that loss).")
        if not isinstance(center_hidden, bool):
            raise ValueError(
                f"center_hidden={center_hidden!r} must be True or False (True: match the hidden states minus "
                "their means over the batch)."
            )
        if hidden_metric not in HIDDEN_METRICS:
            raise ValueError(
                f"hidden_metric={hidden_metric!r} is not one of {HIDDEN_METRICS}. HINT: 'mse' matches the hidden "
                "states' values (TinyBERT), 'cosine' their directions (DistilBERT)."
            )
        if (
            isinstance(intermediate_epochs, bool)
            or not isinstance(intermediate_epochs, int)
            or intermediate_epochs < 0
        ):
            raise ValueError(
                f"intermediate_epochs={intermediate_epochs!r} must be an integer >= 0 (0: every loss from the start)."
            )
        if intermediate_epochs and hidden_weight + attention_weight == 0:
            raise ValueError(
                f"intermediate_epochs={intermediate_epochs} trains on the intermediate losses first, but "
                "hidden_weight and attention_weight are both 0. HINT: set hidden_weight=1.0 (and attention_weight), "
                "or intermediate_epochs=0."
            )
        if isinstance(cache_top_k, bool) or not isinstance(cache_top_k, int) or cache_top_k < 0:
            raise ValueError(
                f"cache_top_k={cache_top_k!r} must be an integer >= 0 (0 keeps every logit of the teacher)."
            )
        if teacher_cache is not None and (not isinstance(teacher_cache, str) or not teacher_cache):
            raise ValueError(
                f"teacher_cache={teacher_cache!r} must be a directory path, or None for no cache."
            )
        if cache_top_k and teacher_cache is None:
            raise ValueError(
                f"cache_top_k={cache_top_k} only applies to the teacher cache. HINT: also set "
                "teacher_cache='<a directory>', or leave cache_top_k=0."
            )
        if teacher_cache is not None and hidden_weight + attention_weight > 0:
            raise ValueError(
                f"teacher_cache={teacher_cache!r} keeps logits only, but hidden_weight={hidden_weight!r} / "
                f"attention_weight={attention_weight!r} need the teacher's hidden states and attention maps, "
                "which are too large to cache (MiniLM at 64 tokens, float16: up to 0.35 MB of hidden states and "
                "0.6 MB of attention maps per example, some 10 GB for Rotten Tomatoes). HINT: teacher_cache=None "
                "runs the teacher on every batch; or train in TinyBERT's two stages: a fit with the intermediate "
                "losses and teacher_cache=None, then a new DistillationModule on the same student with "
                "hidden_weight=0, attention_weight=0 and the cache."
            )
        self._check_models(student, teacher)
        self.save_hyperparameters(ignore=["student", "teacher"])
        self.student = student.train()  # from_pretrained gives eval mode; Lightning keeps modes
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha, self.hidden_weight = (
            float(temperature),
            float(alpha),
            float(hidden_weight),
        )
        self.lr, self.weight_decay = lr, weight_decay
        self.lr_schedule, self.warmup = lr_schedule, warmup
        self.teacher_cache, self.cache_top_k = teacher_cache, cache_top_k
        self._cache: TeacherCache | None = None
        self.attention_weight = float(attention_weight)
        self.intermediate_epochs = intermediate_epochs
        self.center_hidden, self.hidden_metric = center_hidden, hidden_metric
        self.layer_map = self._layer_map(layer_map) if hidden_weight + attention_weight > 0 else {}
        if attention_weight > 0:  # fused attention kernels return no probabilities
            for model in (student, teacher):
                cast(Any, model).set_attn_implementation("eager")
        width_s, width_t = _hidden_width(student), _hidden_width(teacher)
        self.projections = nn.ModuleDict(
            {
                str(i): nn.Linear(width_s, width_t)
                for i in self.layer_map
                if width_s is not None and width_t is not None and width_s != width_t
            }
        )
        self._build_metrics()

    def _check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        """Raise ``ValueError`` for a student and teacher that cannot be distilled into one another."""
        classes_s, classes_t = _num_classes(student), _num_classes(teacher)
        if classes_s is not None and classes_t is not None and classes_s != classes_t:
            raise ValueError(
                f"the student predicts {classes_s} classes but the teacher {classes_t}. HINT: build the student "
                f"with the teacher's number of labels (num_labels={classes_t})."
            )

    def _build_metrics(self) -> None:
        classes = _num_classes(self.student) or _num_classes(self.teacher) or 2
        self.val_accuracy = MulticlassAccuracy(num_classes=classes)
        self.test_accuracy = MulticlassAccuracy(num_classes=classes)

    def _layer_map(self, layer_map: Mapping[int, int] | None) -> dict[int, int]:
        layers_s = getattr(getattr(self.student, "config", None), "num_hidden_layers", None)
        layers_t = getattr(getattr(self.teacher, "config", None), "num_hidden_layers", None)
        if layers_s is None or layers_t is None:
            raise ValueError(
                "hidden_weight > 0 or attention_weight > 0 needs Hugging Face student and teacher "
                "(config.num_hidden_layers, output_hidden_states). HINT: set both to 0 for other models."
            )
        if layer_map is None:  # TinyBERT's uniform map, embeddings (0 <- 0) included
            return {i: round(i * layers_t / layers_s) for i in range(layers_s + 1)}
        mapping = {int(k): int(v) for k, v in layer_map.items()}
        bad = {k: v for k, v in mapping.items() if not (0 <= k <= layers_s and 0 <= v <= layers_t)}
        if bad:
            raise ValueError(
                f"layer_map={layer_map!r} names layers that don't exist: {bad}. The student has hidden states "
                f"0..{layers_s} and the teacher 0..{layers_t} (0 is the embedding output). HINT: map student "
                f"hidden states 0..{layers_s} to teacher ones 0..{layers_t}, or leave layer_map=None for "
                f"{ {i: round(i * layers_t / layers_s) for i in range(layers_s + 1)} }."
            )
        return mapping

    @override
    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        self.teacher.eval()  # Lightning calls .train() every epoch: the teacher stays in eval mode
        return self

    def export_module(self) -> nn.Module:
        """What :func:`lit_opt.export` writes for this module: the student."""
        return self.student

    @staticmethod
    def _split(batch: Any) -> tuple[Any, Tensor, Tensor | None]:
        """``(inputs, labels, example indices or None)`` of a dict or ``(x, y)``/``(x, y, idx)`` batch."""
        if isinstance(batch, Mapping):
            inputs = {k: v for k, v in batch.items() if k not in ("labels", INDEX)}
            return inputs, batch["labels"], batch.get(INDEX)
        if len(batch) == 3:
            x, y, index = batch
            return x, y, index
        x, y = batch
        return x, y, None

    def _run(self, model: nn.Module, inputs: Any, hidden: bool) -> tuple[Tensor, Any]:
        """``(logits, outputs)``; with ``hidden`` the outputs carry hidden states (and attention maps)."""
        if isinstance(inputs, Mapping):
            extra = (
                {"output_hidden_states": True, "output_attentions": self.attention_weight > 0}
                if hidden
                else {}
            )
            out = model(**inputs, **extra)
        else:
            out = model(inputs)
        logits = out if isinstance(out, Tensor) else out.logits
        return logits, (out if hidden else None)

    @override
    def forward(self, inputs: Any) -> Tensor:
        return self._run(self.student, inputs, hidden=False)[0]

    @override
    def setup(self, stage: str) -> None:
        if self.teacher_cache is None or stage != "fit":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        data = getattr(datamodule, "fingerprint", None)
        if not isinstance(data, str):
            raise ValueError(
                f"teacher_cache={self.teacher_cache!r} keys the cache by the data, but the Trainer's data module "
                f"({type(datamodule).__name__}) has no `fingerprint` string. HINT: use a data module that exposes "
                "one (TextClassificationDataModule does), or teacher_cache=None."
            )
        fingerprint = {"teacher": state_fingerprint(self.teacher), "data": data}
        self._cache = TeacherCache(self.teacher_cache, fingerprint, self.cache_top_k, rank=self.global_rank)
        self._cache.load()

    @override
    def on_train_epoch_end(self) -> None:
        if self._cache is None:
            return
        self._cache.save()  # each rank its own shard
        self.trainer.strategy.barrier("teacher_cache")
        self._cache.load()  # the examples the other ranks computed

    def _teacher_logits(
        self, inputs: Any, index: Tensor | None, hidden: bool
    ) -> tuple[Tensor, Tensor | None, Any]:
        """``(logits or top-k values, top-k indices or None, intermediate outputs or None)`` of the teacher."""
        if self._cache is None:
            with torch.no_grad():
                logits, teacher_hidden = self._run(self.teacher, inputs, hidden)
            return logits, None, teacher_hidden
        if index is None:
            raise ValueError(
                f"teacher_cache={self.teacher_cache!r} needs the examples' indices in every batch. HINT: batches as "
                "dicts with 'idx' (TextClassificationDataModule(return_index=True)) or (x, y, idx) tuples."
            )
        cached = self._cache.get(index)
        if cached is None:  # the same stored form (top-k, float16) in the first epoch as in later ones
            with torch.no_grad():
                cached = self._cache.put(index, self._run(self.teacher, inputs, hidden=False)[0])
        return cached[0], cached[1], None

    def _labels_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy with the labels alone (``alpha == 0``)."""
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))

    def _output_loss(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, teacher_indices: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(total, soft, hard)`` from the two models' outputs (teacher: logits, or top-k values and indices)."""
        return distillation_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha, teacher_indices
        )

    def intermediate_stage(self) -> bool:
        """Whether training is in the first of TinyBERT's two stages (see ``intermediate_epochs``)."""
        return self.current_epoch < self.intermediate_epochs

    def losses(self, batch: Any) -> dict[str, Tensor]:
        """Every part of the loss for ``batch`` (``loss`` is the total)."""
        inputs, labels, index = self._split(batch)
        intermediate_only = self.intermediate_stage()  # never with intermediate_epochs=0
        hidden = self.hidden_weight + self.attention_weight > 0 and (
            intermediate_only or not self.intermediate_epochs
        )
        if self.alpha == 0 and not hidden:  # labels only: the teacher's forward pass would be wasted
            hard = self._labels_loss(self._run(self.student, inputs, False)[0], labels)
            return {"loss": hard, "soft_loss": torch.zeros_like(hard), "hard_loss": hard}
        teacher_logits, teacher_indices, teacher_hidden = self._teacher_logits(inputs, index, hidden)
        student_logits, student_hidden = self._run(self.student, inputs, hidden)
        total, soft, hard = self._output_loss(student_logits, teacher_logits, labels, teacher_indices)
        parts = {
            "loss": torch.zeros_like(total) if intermediate_only else total,
            "soft_loss": soft,
            "hard_loss": hard,
        }
        if hidden and student_hidden is not None and teacher_hidden is not None:
            mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
            if self.hidden_weight > 0:
                terms = []
                for i, j in self.layer_map.items():
                    h_s = student_hidden.hidden_states[i]
                    if str(i) in self.projections:
                        h_s = self.projections[str(i)](h_s)
                    h_t = teacher_hidden.hidden_states[j]
                    terms.append(hidden_state_loss(h_s, h_t, mask, self.center_hidden, self.hidden_metric))
                parts["hidden_loss"] = torch.stack(terms).mean()
                parts["loss"] = parts["loss"] + self.hidden_weight * parts["hidden_loss"]
            if self.attention_weight > 0:  # attention maps of layer i are hidden state i's inputs' (i >= 1)
                pairs = [(i - 1, j - 1) for i, j in self.layer_map.items() if i >= 1 and j >= 1]
                maps = [
                    attention_map_loss(student_hidden.attentions[i], teacher_hidden.attentions[j])
                    for i, j in pairs
                ]
                parts["attention_loss"] = torch.stack(maps).mean()
                parts["loss"] = parts["loss"] + self.attention_weight * parts["attention_loss"]
        return parts

    def _log(self, values: Mapping[str, Tensor | MulticlassAccuracy], **kwargs: Any) -> None:
        if self._trainer is not None:  # training_step also works called directly, outside a Trainer
            self.log_dict(dict(values), **kwargs)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        parts = self.losses(batch)
        self._log({f"train_{k}": v for k, v in parts.items()}, prog_bar=False)
        return parts["loss"]

    def _evaluate(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        inputs, labels, _ = self._split(batch)
        logits = self(inputs)
        metric.update(logits.argmax(dim=-1), labels)
        loss = nn.functional.cross_entropy(logits.float(), labels)
        self._log({f"{stage}_loss": loss, f"{stage}_acc": metric}, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val", self.val_accuracy)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", self.test_accuracy)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [
            p for name, p in self.named_parameters() if p.requires_grad and not name.startswith(TEACHER)
        ]
        return adamw(trainable, self.lr, self.weight_decay, self.lr_schedule, self.warmup, self._trainer)

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(TEACHER)
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the teacher is frozen and given again (as LightningCLI does from the config): fill its keys in
        checkpoint["state_dict"].update({TEACHER + k: v for k, v in self.teacher.state_dict().items()})

"""The causal-LM recipe's training stages: the teacher, a shallower student distilled from it, its compression and PTQ peer.

Every stage is an ordinary Lightning ``fit`` on the :class:`~lit_opt.data.CausalLMDataModule` (packed
blocks of the training split) with a TensorBoard logger under ``<run>/logs/<stage>``. The student
(:func:`~lit_opt.distillation.students.select_layers` of the teacher) is trained by
:class:`~lit_opt.distillation.CausalLMDistillationModule` on ``alpha * T² * KL(teacher ‖ student) +
(1 - alpha) * CE`` per predicted token.
"""

from __future__ import annotations

import copy
import itertools
import logging
import warnings
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch import nn

from lit_opt import CausalLMDistillationModule, ExportCallback
from lit_opt.data.causal_lm import CausalLMDataModule, check_block_size
from lit_opt.distillation.layer_search import choose_layers
from lit_opt.distillation.students import select_layers
from lit_opt.recipe.lm_config import CausalLMRecipeConfig, LMCompressConfig
from lit_opt.recipe.training import distillation_module, fit, qat_callbacks, structured_pruning, train_steps

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


def load_teacher(source: Path) -> Any:
    """The teacher in fp32, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()


def check_layers(layers: list[int] | int, count: int | None) -> None:
    """Raise ``ValueError`` if ``layers`` names a layer (or more layers than) a teacher of ``count`` layers does not have."""
    if count is not None and isinstance(layers, int) and layers > count:
        raise ValueError(
            f"student.layers={layers} asks for more layers than the teacher's {count}. "
            f"HINT: a number in 1..{count}, or a list of layer indices."
        )
    if count is not None and isinstance(layers, list) and max(layers) >= count:
        raise ValueError(
            f"student.layers={layers!r} names layers the teacher's {count} do not have. "
            f"HINT: use indices 0..{count - 1}."
        )


def student_layers(config: CausalLMRecipeConfig, dm: CausalLMDataModule, teacher: nn.Module) -> list[int]:
    """The teacher layers the student keeps: ``student.layers`` as given, or that many chosen by :func:`choose_layers`."""
    s = config.student
    if isinstance(s.layers, list):
        return s.layers
    L.seed_everything(config.seed, verbose=False)  # the same shuffled batches, whatever ran before
    batches = list(itertools.islice(dm.train_dataloader(), s.search_batches))
    return choose_layers(teacher, s.layers, batches, task="causal_lm")


def distill_student(
    config: CausalLMRecipeConfig, dm: CausalLMDataModule, teacher: nn.Module, layers: list[int], run_dir: Path
) -> Any:
    """The student (teacher ``layers`` kept) distilled on the training split; saved to ``run_dir/student_distilled``."""
    L.seed_everything(config.seed, verbose=False)
    s = config.student
    student: Any = select_layers(teacher, layers)
    module = distillation_module(CausalLMDistillationModule, s, s, student, teacher)
    fit(config, run_dir, "distill", module, dm, s.epochs, s.max_steps)
    student.eval().save_pretrained(str(run_dir / "student_distilled"), safe_serialization=True)
    return student


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
    module = distillation_module(CausalLMDistillationModule, s, c, student, teacher)
    module.tokenizer = dm.tokenizer()  # ExportCallback ships it beside the weights
    artifact = run_dir / "compressed"
    callbacks = [
        *compress_callbacks(c, train_steps(dm, c.epochs, c.max_steps)),
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

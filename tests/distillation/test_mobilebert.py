"""The MobileBERT-style student: bottleneck blocks at the teacher's width, feature-map transfer, bad sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_opt import DistillationModule
from lit_opt.distillation.mobilebert import mobilebert
from tests.helpers.models import hf_dataloader, tiny_bert

SMALL = {
    "bottleneck_size": 16,
    "num_heads": 2,
    "intermediate_size": 32,
    "embedding_size": 16,
    "num_layers": 2,
}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher")
    tiny_bert().save_pretrained(str(path))  # 32 wide, 2 layers
    return path


def test_narrow_body_wide_interface(teacher_dir: Path) -> None:
    student = mobilebert(str(teacher_dir), **SMALL)
    config = student.config
    assert (config.hidden_size, config.true_hidden_size, config.num_feedforward_networks) == (32, 16, 2)
    block = student.mobilebert.encoder.layer[0]
    assert block.bottleneck.input.dense.weight.shape == (16, 32)  # interface -> body
    assert block.output.bottleneck.dense.weight.shape == (32, 16)  # body -> interface
    batch = {k: v for k, v in next(iter(hf_dataloader())).items() if k != "labels"}
    out = student(**batch, output_hidden_states=True)
    assert out.logits.shape == (8, 2) and all(h.shape[-1] == 32 for h in out.hidden_states)


def test_embeddings_start_from_the_teachers(teacher_dir: Path) -> None:
    teacher = tiny_bert()
    student = mobilebert(str(teacher_dir), **SMALL)
    ids = torch.arange(1, 50)
    words, code = (
        teacher.bert.embeddings.word_embeddings(ids),
        student.mobilebert.embeddings.word_embeddings(ids),
    )
    # the best rank-16 approximation of the teacher's embeddings, mapped back by the transformation's middle block
    back = code @ student.mobilebert.embeddings.embedding_transformation.weight[:, 16:32].T
    residual = (back - words).norm() / words.norm()
    assert residual < 0.8  # 16 of 32 singular directions of random embeddings
    torch.testing.assert_close(
        student.mobilebert.embeddings.position_embeddings.weight,
        teacher.bert.embeddings.position_embeddings.weight,
    )


def test_feature_map_transfer_needs_no_extra_projection(teacher_dir: Path) -> None:
    student = mobilebert(str(teacher_dir), **SMALL)
    module = DistillationModule(student, tiny_bert(), hidden_weight=1.0)
    assert module.layer_map == {0: 0, 1: 1, 2: 2} and list(module.projections) == []
    parts = module.losses(next(iter(hf_dataloader())))
    assert torch.isfinite(parts["hidden_loss"]) and parts["hidden_loss"] > 0
    parts["loss"].backward()
    assert student.mobilebert.encoder.layer[0].bottleneck.input.dense.weight.grad is not None


def test_linear_transfer_allows_another_width(teacher_dir: Path) -> None:
    student = mobilebert(str(teacher_dir), hidden_size=24, transfer="linear", **SMALL)
    module = DistillationModule(student, tiny_bert(), hidden_weight=1.0)
    assert list(module.projections) == ["0", "1", "2"]  # 24 -> 32 learned per mapped layer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"hidden_size": 64},
            r"hidden_size=64 with transfer='bottleneck' must equal the teacher's hidden size 32: .* HINT: leave "
            r"hidden_size=None \(or 32\), or use transfer='linear'",
        ),
        (
            {"bottleneck_size": 32},
            r"bottleneck_size=32 must be below hidden_size=32 and a multiple of num_heads=2",
        ),
        (
            {"bottleneck_size": 15},
            r"bottleneck_size=15 must be below hidden_size=32 and a multiple of num_heads=2",
        ),
        ({"embedding_size": 48}, r"embedding_size=48 exceeds the teacher's width 32"),
        ({"num_layers": 0}, r"num_layers=0 is not accepted; expected a positive integer"),
        (
            {"transfer": "identity"},
            r"transfer='identity' is not accepted; expected one of \['bottleneck', 'linear'\]",
        ),
    ],
)
def test_bad_sizes(teacher_dir: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mobilebert(str(teacher_dir), **{**SMALL, **kwargs})


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a Hugging Face model directory \(no config.json\)\. HINT"):
        mobilebert(str(tmp_path))

"""Student builders from local Hugging Face directories."""

import pytest
import torch

from lit_opt.distillation.students import keep_layers, pretrained
from tests.helpers.models import hf_dataloader, tiny_bert


@pytest.fixture
def teacher_dir(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


def test_keep_layers_copies_the_chosen_teacher_layers(teacher_dir):
    teacher = pretrained(teacher_dir)
    student = keep_layers(teacher_dir, layers=[1])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert torch.equal(
        student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight
    )
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    batch = next(iter(hf_dataloader()))
    batch.pop("labels")
    assert student(**batch).logits.shape == (8, 2)
    assert len(keep_layers(teacher_dir).bert.encoder.layer) == 1  # default: every other layer of 2


@pytest.mark.parametrize("layers", [[], [0, 0], [2], [-1]])
def test_bad_layers(teacher_dir, layers):
    with pytest.raises(ValueError, match=r"must be distinct indices of the teacher's 2 layers \(0..1\)"):
        keep_layers(teacher_dir, layers=layers)


def test_pretrained_needs_a_model_directory(tmp_path):
    with pytest.raises(ValueError, match=r"is not a Hugging Face model directory \(no config.json\)"):
        pretrained(str(tmp_path))


def test_narrow_student_trains_through_projections(teacher_dir):
    from lit_opt import DistillationModule
    from lit_opt.distillation.students import narrow

    student = narrow(teacher_dir, hidden_size=8, num_layers=1, num_heads=2)
    assert (
        student.config.hidden_size == 8
        and student.config.vocab_size == 100
        and student.config.intermediate_size == 32
    )
    module = DistillationModule(student, pretrained(teacher_dir), hidden_weight=1.0)
    assert module.projections["1"].in_features == 8 and module.projections["1"].out_features == 32
    assert torch.isfinite(module.losses(next(iter(hf_dataloader())))["loss"])
    with pytest.raises(ValueError, match=r"hidden_size=10 must be divisible by num_heads=4"):
        narrow(teacher_dir, hidden_size=10, num_heads=4)

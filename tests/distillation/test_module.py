"""DistillationModule: loss, frozen teacher, checkpoints without the teacher, HF batches, export."""

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt import DistillationModule
from lit_opt.functional.distillation import distillation_loss
from tests.helpers.models import TinyMLP, hf_dataloader, random_dataloader, tiny_bert
from tests.helpers.trainer import modes_at_training_start, tiny_trainer


def _pair(seed=0):
    torch.manual_seed(seed)
    return TinyMLP(hidden=8), TinyMLP(hidden=64)


def test_training_step_outside_a_trainer_returns_the_reference_loss():
    student, teacher = _pair()
    module = DistillationModule(student, teacher, temperature=3.0, alpha=0.7)
    x, y = next(iter(random_dataloader("mlp")))
    loss = module.training_step((x, y), 0)
    with torch.no_grad():
        expected, _, _ = distillation_loss(student(x), teacher(x), y, 3.0, 0.7)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert student.fc1.weight.grad is not None and teacher.fc1.weight.grad is None


def test_teacher_is_frozen_and_stays_in_eval_mode():
    student, teacher = _pair()
    teacher.train()
    module = DistillationModule(student, teacher).train()
    assert not module.teacher.training and module.student.training
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert all(
        not any(p is q for q in teacher.parameters())
        for g in module.configure_optimizers().param_groups
        for p in g["params"]
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": 0}, r"temperature=0 must be > 0"),
        ({"alpha": 1.5}, r"alpha=1.5 must be in \[0, 1\]"),
        ({"hidden_weight": -1}, r"hidden_weight=-1 must be >= 0"),
        (
            {"hidden_weight": 1.0},
            r"hidden_weight > 0 or attention_weight > 0 needs Hugging Face student and teacher",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationModule(*_pair(), **kwargs)


def test_class_mismatch_and_bad_layer_map():
    with pytest.raises(
        ValueError, match=r"the student predicts 3 classes but the teacher 4. HINT: .*num_labels=4"
    ):
        DistillationModule(TinyMLP(num_classes=3), TinyMLP())
    with pytest.raises(
        ValueError,
        match=r"layer_map=\{5: 1\} names layers that don't exist: \{5: 1\}\. The student has hidden states 0\.\.2 "
        r"and the teacher 0\.\.2 .* HINT: .* or leave layer_map=None for \{0: 0, 1: 1, 2: 2\}",
    ):
        DistillationModule(tiny_bert(), tiny_bert(), hidden_weight=1.0, layer_map={5: 1})
    with pytest.raises(ValueError, match=r"layer_map=\{1: 7\} names layers that don't exist: \{1: 7\}"):
        DistillationModule(tiny_bert(), tiny_bert(), attention_weight=1.0, layer_map={1: 7})


def test_checkpoints_leave_the_teacher_out_and_resume_with_it_given_again(tmp_path):
    student, teacher = _pair()
    module = DistillationModule(student, teacher, lr=1e-2)
    trainer = tiny_trainer(tmp_path, max_steps=3)
    trainer.fit(module, train_dataloaders=random_dataloader("mlp"))
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    state = torch.load(tmp_path / "a.ckpt", weights_only=True)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state) and "student.fc1.weight" in state
    resumed = DistillationModule(TinyMLP(hidden=8), teacher, lr=1e-2)
    tiny_trainer(tmp_path, max_steps=5).fit(
        resumed, train_dataloaders=random_dataloader("mlp"), ckpt_path=tmp_path / "a.ckpt"
    )
    assert torch.equal(resumed.teacher.fc1.weight, teacher.fc1.weight)


def test_hugging_face_batches_with_hidden_state_projection(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    student = BertForSequenceClassification(config)
    module = DistillationModule(student, tiny_bert(), hidden_weight=1.0, lr=1e-2)
    assert module.layer_map == {0: 0, 1: 2} and list(module.projections) == ["0", "1"]
    batch = next(iter(hf_dataloader()))
    parts = module.losses(batch)
    assert set(parts) == {"loss", "soft_loss", "hard_loss", "hidden_loss"} and torch.isfinite(parts["loss"])
    tiny_trainer(tmp_path, max_steps=3).fit(
        module, train_dataloaders=hf_dataloader(), val_dataloaders=hf_dataloader(n=8)
    )


def test_export_writes_the_student_only(tmp_path):
    student, teacher = _pair()
    module = DistillationModule(student, teacher)
    path = lit_opt.export(module, tmp_path / "student", quantization={"weight_bits": 8})
    loaded = lit_opt.load(path, model=TinyMLP(hidden=8), kernel="reference")
    x = torch.randn(4, 16)
    assert loaded(x).shape == (4, 4)
    assert isinstance(loaded.fc1, nn.Module) and loaded.fc1.in_features == 16


def test_composes_with_pruning_and_qat_on_the_student(tmp_path):
    from lit_opt import ExportCallback, IterativePruningCallback, QATCallback

    student, teacher = _pair()
    module = DistillationModule(student, teacher, lr=1e-2)
    callbacks = [
        IterativePruningCallback(0.5, every_n_steps=2, targets=["student.*"]),
        QATCallback(targets=["student.*"]),
        ExportCallback(str(tmp_path / "student")),
    ]
    tiny_trainer(tmp_path, max_steps=6, callbacks=callbacks).fit(
        module, train_dataloaders=random_dataloader("mlp")
    )
    assert not any(
        name.startswith("teacher") for name, _ in module.named_modules() if "parametrizations" in name
    )
    loaded = lit_opt.load(tmp_path / "student", model=TinyMLP(hidden=8), kernel="reference")
    x = torch.randn(8, 16)
    student.eval()
    torch.testing.assert_close(loaded(x), student(x), atol=1e-5, rtol=1e-5)


def test_attention_map_loss_is_a_separate_logged_part(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    module = DistillationModule(
        BertForSequenceClassification(config), tiny_bert(), hidden_weight=0.5, attention_weight=2.0, lr=1e-2
    )
    batch = next(iter(hf_dataloader()))
    parts = module.losses(batch)
    assert set(parts) == {"loss", "soft_loss", "hard_loss", "hidden_loss", "attention_loss"}
    expected = (
        module.alpha * parts["soft_loss"]
        + (1 - module.alpha) * parts["hard_loss"]
        + 0.5 * parts["hidden_loss"]
        + 2.0 * parts["attention_loss"]
    )
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["attention_loss"].item() > 0
    with pytest.raises(ValueError, match=r"attention_weight=-1 must be >= 0"):
        DistillationModule(tiny_bert(), tiny_bert(), attention_weight=-1)


def test_labels_only_skips_the_teacher():
    class CountingTeacher(TinyMLP):
        calls = 0

        def forward(self, x):
            CountingTeacher.calls += 1
            return super().forward(x)

    module = DistillationModule(TinyMLP(), CountingTeacher(), alpha=0.0)
    x, y = next(iter(random_dataloader("mlp")))
    loss = module.training_step((x, y), 0)
    assert CountingTeacher.calls == 0
    assert loss.item() == pytest.approx(nn.functional.cross_entropy(module.student(x), y).item(), abs=1e-6)


def test_a_student_loaded_in_eval_mode_trains_in_training_mode(tmp_path, monkeypatch):
    # from_pretrained returns eval mode and Lightning keeps module modes: dropout would be off all fit long
    student, teacher = tiny_bert(seed=1).eval(), tiny_bert(seed=2).eval()
    module = DistillationModule(student, teacher, hidden_weight=1.0)
    with modes_at_training_start(monkeypatch) as fits:
        tiny_trainer(tmp_path, max_steps=1).fit(module, hf_dataloader())
    (in_eval,) = fits
    assert in_eval and all(name.startswith("teacher") for name in in_eval)  # the frozen teacher only


def test_tinybert_default_layer_map_includes_the_embedding_layer():
    teacher, student = tiny_bert(num_layers=6), tiny_bert(num_layers=4)
    module = DistillationModule(student, teacher, hidden_weight=1.0, attention_weight=1.0)
    assert module.layer_map == {0: 0, 1: 2, 2: 3, 3: 4, 4: 6}  # round(i * 6 / 4), Python's rounding


def test_embedding_layer_loss_matches_hidden_state_zero():
    from lit_opt.functional.distillation import hidden_state_loss

    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    module = DistillationModule(student, teacher, alpha=1.0, hidden_weight=2.0, layer_map={0: 0})
    batch = next(iter(hf_dataloader()))
    parts = module.losses(batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        embeddings_s = student(**inputs, output_hidden_states=True).hidden_states[0]
        embeddings_t = teacher(**inputs, output_hidden_states=True).hidden_states[0]
    expected = hidden_state_loss(
        embeddings_s, embeddings_t, batch["attention_mask"]
    )  # equal widths: no projection
    assert list(module.projections) == []
    torch.testing.assert_close(parts["hidden_loss"], expected)
    torch.testing.assert_close(parts["loss"], parts["soft_loss"] + 2.0 * expected)


def test_center_hidden_and_hidden_metric_pick_the_hidden_state_loss():
    from lit_opt.functional.distillation import hidden_state_loss

    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    batch = next(iter(hf_dataloader()))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        states_s = student(**inputs, output_hidden_states=True).hidden_states[2]
        states_t = teacher(**inputs, output_hidden_states=True).hidden_states[2]
    for center in (False, True):
        for metric in ("mse", "cosine"):
            module = DistillationModule(
                student,
                teacher,
                hidden_weight=1.0,
                layer_map={2: 2},
                center_hidden=center,
                hidden_metric=metric,
            )
            expected = hidden_state_loss(states_s, states_t, batch["attention_mask"], center, metric)
            torch.testing.assert_close(module.losses(batch)["hidden_loss"], expected)
    assert hidden_state_loss(states_s, states_t, center=True) < hidden_state_loss(states_s, states_t)


def test_center_hidden_must_be_a_bool():
    with pytest.raises(ValueError, match=r"center_hidden='yes' must be True or False"):
        DistillationModule(tiny_bert(seed=1), tiny_bert(seed=2), hidden_weight=1.0, center_hidden="yes")


def test_hidden_metric_must_be_known():
    with pytest.raises(ValueError, match=r"hidden_metric='l2' is not one of \('mse', 'cosine'\)"):
        DistillationModule(tiny_bert(seed=1), tiny_bert(seed=2), hidden_weight=1.0, hidden_metric="l2")


def test_two_stages_train_on_intermediate_losses_then_on_the_output_loss_alone(monkeypatch):
    student, teacher = tiny_bert(seed=1), tiny_bert(seed=2)
    module = DistillationModule(
        student, teacher, hidden_weight=0.5, attention_weight=2.0, intermediate_epochs=1
    )
    batch = next(iter(hf_dataloader()))
    first = module.losses(batch)  # epoch 0: TinyBERT's intermediate stage
    assert module.intermediate_stage()
    expected = 0.5 * first["hidden_loss"] + 2.0 * first["attention_loss"]
    assert first["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    monkeypatch.setattr(DistillationModule, "current_epoch", property(lambda self: 1))
    second = module.losses(batch)  # the prediction stage: the output loss alone, no hidden states run
    assert not module.intermediate_stage() and "hidden_loss" not in second
    expected = module.alpha * second["soft_loss"] + (1 - module.alpha) * second["hard_loss"]
    assert second["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_two_stages_across_epochs_of_a_fit(tmp_path):
    module = DistillationModule(
        tiny_bert(seed=1), tiny_bert(seed=2), hidden_weight=1.0, intermediate_epochs=1
    )
    seen = []
    original = module.losses

    def record(batch):
        parts = original(batch)
        seen.append((module.current_epoch, "hidden_loss" in parts))
        return parts

    module.losses = record
    tiny_trainer(tmp_path, max_steps=-1, max_epochs=2, limit_train_batches=2).fit(module, hf_dataloader())
    assert seen == [(0, True), (0, True), (1, False), (1, False)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"intermediate_epochs": -1}, r"intermediate_epochs=-1 must be an integer >= 0"),
        ({"intermediate_epochs": 2}, r"intermediate_epochs=2 trains on the intermediate losses first, but"),
    ],
)
def test_bad_intermediate_epochs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationModule(tiny_bert(), tiny_bert(), **kwargs)

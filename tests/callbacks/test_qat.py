"""QATCallback: arguments, schedule, Hugging Face models, several callbacks, logging."""

import csv

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lit_opt import QATCallback
from lit_opt.parametrizations import WeightFakeQuant
from lit_opt.quantization import weight_quantizers
from tests.helpers.models import BoringClassifier, HFClassifier, hf_dataloader, random_dataloader
from tests.helpers.trainer import tiny_trainer


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weight_bits": 2}, r"weight_bits=2 is not supported; accepted: 4 or 8"),
        ({"activations": "fp8"}, r"activations='fp8' is not one of"),
        ({"granularity": "per_block"}, r"granularity='per_block' is not one of"),
        ({"granularity": "per_group", "group_size": 0}, r"group_size=0 must be a positive integer"),
        ({"start_step": -1}, r"start_step=-1 must be a non-negative integer"),
        ({"freeze_bn_step": 1.5}, r"freeze_bn_step=1.5 must be a non-negative integer .* or None"),
        ({"freeze_observers_step": 10}, r"freeze_observers_step=10 only applies to activations='static'"),
        (
            {"activations": "static", "start_step": 5, "freeze_observers_step": 2},
            r"freeze_observers_step=2 is before start_step=5",
        ),
        ({"exclude": "classifier*"}, r"exclude='classifier\*' must be a list of fnmatch patterns"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QATCallback(**kwargs)


def test_errors_that_need_the_model_come_before_any_step(tmp_path):
    model = BoringClassifier("mlp")
    trainer = tiny_trainer(tmp_path, callbacks=[QATCallback(targets=["*.mlp.*"])])
    with pytest.raises(ValueError, match=r"targets=\['\*.mlp.\*'\] matched no"):
        trainer.fit(model)
    trainer = tiny_trainer(tmp_path, callbacks=[QATCallback(granularity="per_group", group_size=12)])
    with pytest.raises(
        ValueError, match=r"group_size=12 does not divide the 16 inputs per channel of module 'net.fc1'"
    ):
        trainer.fit(BoringClassifier("mlp"))
    assert trainer.global_step == 0


def test_fit_trains_the_original_parameters_through_fake_quantization(tmp_path):
    model = BoringClassifier("mlp")
    qat = QATCallback()
    trainer = tiny_trainer(tmp_path, callbacks=[qat], max_steps=8)
    trainer.fit(model)
    assert qat.quantized_modules == ["net.fc1", "net.fc2"]
    params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(model.net.fc1.parametrizations.weight.original) in params
    scale = model.net.fc1.parametrizations.weight[0].scale
    codes = model.net.fc1.weight / scale  # (32, 1) broadcast over (32, 16)
    torch.testing.assert_close(codes, codes.round(), atol=1e-4, rtol=0)  # on the int8 grid
    assert qat.phase == "quantized" and qat.state_dict() == {"phase": "quantized", "last_step": 7}


def test_start_step_delays_fake_quantization(tmp_path):
    model = BoringClassifier("mlp")
    seen = []

    class Probe(QATCallback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            seen.append(bool(pl_module.net.fc1.parametrizations.weight[0].enabled))

    tiny_trainer(tmp_path, callbacks=[Probe(start_step=3)], max_steps=5).fit(model)
    assert seen == [False, False, False, True, True]


def test_static_observers_freeze_and_batchnorm_freezes(tmp_path):
    model = BoringClassifier("conv")
    history = []

    class Probe(QATCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            quantizer = pl_module.net.fc.input_quantizer
            history.append(
                (quantizer.scale.item(), pl_module.net.bn.running_mean.clone(), pl_module.net.bn.training)
            )

    qat = Probe(activations="static", freeze_observers_step=3, freeze_bn_step=4)
    tiny_trainer(tmp_path, callbacks=[qat], max_steps=7).fit(model)
    scales = [h[0] for h in history]
    assert len(set(scales[:3])) == 3  # observing: the range moves every step
    assert len(set(scales[2:])) == 1  # frozen from step 3 on
    assert [h[2] for h in history] == [True] * 4 + [False] * 3
    assert all(torch.equal(history[3][1], h[1]) for h in history[4:])  # BN statistics frozen
    assert not torch.equal(history[0][1], history[3][1])


def test_hugging_face_keyword_model_with_two_callbacks(tmp_path):
    model = HFClassifier()
    linears = QATCallback(exclude=["*embeddings*", "*classifier"])
    embeddings = QATCallback(
        weight_bits=4,
        granularity="per_group",
        group_size=16,
        activations="none",
        targets=["*word_embeddings"],
    )
    assert linears.state_key != embeddings.state_key
    trainer = tiny_trainer(tmp_path, callbacks=[linears, embeddings], max_steps=3)
    trainer.fit(model, train_dataloaders=hf_dataloader())
    owners = {name: q.owner for name, _, q in weight_quantizers(model)}
    assert owners["model.bert.embeddings.word_embeddings"] == embeddings.state_key
    assert owners["model.bert.encoder.layer.0.attention.self.query"] == linears.state_key
    assert "model.classifier" not in owners
    table = model.model.bert.embeddings.word_embeddings.weight
    assert all(len(torch.unique(row)) <= 15 for row in table[:, :16])  # int4 grid per group


def test_overlapping_callbacks_are_refused(tmp_path):
    trainer = tiny_trainer(
        tmp_path, callbacks=[QATCallback(), QATCallback(weight_bits=4, targets=["net.fc1"])]
    )
    with pytest.raises(ValueError, match=r"module 'net.fc1' is already quantized by QATCallback"):
        trainer.fit(BoringClassifier("mlp"))


def test_logs_phase_and_weight_error(tmp_path):
    logger = CSVLogger(tmp_path, name="qat")
    trainer = tiny_trainer(
        tmp_path, callbacks=[QATCallback(start_step=2)], logger=logger, max_steps=4, log_every_n_steps=1
    )
    trainer.fit(BoringClassifier("mlp"))
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    phases = [float(r["qat[*]/phase"]) for r in rows if r.get("qat[*]/phase")]
    errors = [float(r["qat[*]/weight_error"]) for r in rows if r.get("qat[*]/weight_error")]
    assert phases == [0.0, 0.0, 2.0, 2.0]
    assert errors[0] == 0.0 and 0 < errors[-1] < 0.02  # int8 per-channel: well under 2% relative error


def test_validate_and_test_reuse_the_structure(tmp_path):
    model = BoringClassifier("mlp")
    qat = QATCallback()
    trainer = tiny_trainer(tmp_path, callbacks=[qat], max_steps=2)
    trainer.fit(model)
    trainer.validate(model, dataloaders=random_dataloader("mlp", n=8))
    assert len(model.net.fc1.parametrizations.weight) == 1
    assert isinstance(model.net.fc1.parametrizations.weight[0], WeightFakeQuant)


def test_bf16_mixed_precision_and_conv1d(tmp_path):
    class Conv1dNet(BoringClassifier):
        def __init__(self):
            super().__init__("mlp")
            self.net = torch.nn.Sequential(
                torch.nn.Unflatten(1, (1, 16)),
                torch.nn.Conv1d(1, 4, 3),
                torch.nn.Flatten(),
                torch.nn.Linear(56, 4),
            )

    model = Conv1dNet()
    qat = QATCallback(weight_bits=4, granularity="per_group", group_size=3, targets=["net.1"])
    tiny_trainer(
        tmp_path, callbacks=[qat, QATCallback(targets=["net.3"])], precision="bf16-mixed", max_steps=3
    ).fit(model)
    assert qat.quantized_modules == ["net.1"]
    conv = model.net[1]
    assert conv.input_quantizer.per_sample
    assert all(len(torch.unique(row)) <= 15 for row in conv.weight.reshape(4, -1))
    assert torch.isfinite(conv.parametrizations.weight.original).all()

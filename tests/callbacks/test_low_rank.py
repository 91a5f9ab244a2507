"""LowRankCallback: swap at setup or mid-run, optimizer rebuilt, exact resume, export, bad input."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_opt
from lit_opt import LowRankCallback, QATCallback
from lit_opt.nn import LowRankLinear
from tests.helpers.models import BoringClassifier, random_dataloader
from tests.helpers.trainer import tiny_trainer

STEPS, SWAP, CKPT_STEP = 14, 3, 8  # 8 steps per epoch: the checkpoint closes epoch 0, after the swap


class ScheduledClassifier(BoringClassifier):
    """SGD with momentum and a per-step StepLR, so optimizer state and LR progress both matter."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.8)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class RecordLR(Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_at_step_0_factorizes_at_setup_and_skips_layers_that_would_not_shrink(tmp_path):
    model = BoringClassifier("mlp")
    callback = LowRankCallback(rank=3, at_step=0, min_saving=0.5)  # fc2 (4x32) at rank 3 saves only 16%
    trainer = tiny_trainer(tmp_path, callbacks=[callback])
    trainer.fit(model)
    assert isinstance(model.net.fc1, LowRankLinear) and model.net.fc1.rank == 3
    assert isinstance(model.net.fc2, torch.nn.Linear)
    assert callback.ranks == {"net.fc1": 3} and callback.done
    params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(model.net.fc1.first.weight) in params


def test_energy_chooses_the_smallest_rank_keeping_it(tmp_path):
    model = BoringClassifier("mlp")
    s = torch.linalg.svdvals(model.net.fc1.weight.detach().double())
    kept = s.square().cumsum(0) / s.square().sum()
    expected = int((kept < 0.5).sum()) + 1
    callback = LowRankCallback(energy=0.5, targets=["net.fc1"], min_saving=0.0)
    tiny_trainer(tmp_path, callbacks=[callback], max_steps=1).fit(model)
    assert callback.ranks == {"net.fc1": expected}


def test_mid_run_swap_rebuilds_the_optimizer_and_keeps_the_schedule(tmp_path):
    dense_lrs, swapped_lrs = RecordLR(), RecordLR()
    tiny_trainer(tmp_path, callbacks=[dense_lrs], max_steps=8).fit(ScheduledClassifier("mlp", lr=0.05))
    model = ScheduledClassifier("mlp", lr=0.05)
    seen = {}

    class Spy(Callback):  # listed after LowRankCallback: sees the optimizer just before and after the swap
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == SWAP:
                seen["before"] = (
                    trainer.optimizers[0].state[pl_module.net.fc2.bias]["momentum_buffer"].clone()
                )

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == SWAP:
                seen["after"] = trainer.optimizers[0].state[pl_module.net.fc2.bias]["momentum_buffer"].clone()
                seen["factor_state"] = dict(trainer.optimizers[0].state[pl_module.net.fc1.first.weight])

    callback = LowRankCallback(rank=2, at_step=SWAP, targets=["net.fc1"])
    trainer = tiny_trainer(tmp_path, callbacks=[callback, Spy(), swapped_lrs], max_steps=8)
    trainer.fit(model)
    assert isinstance(model.net.fc1, LowRankLinear)
    params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert {id(p) for p in params} == {id(p) for p in model.parameters()}
    assert swapped_lrs.lrs == dense_lrs.lrs  # the scheduler continued where it was
    assert torch.equal(seen["after"], seen["before"])  # untouched parameters keep their momentum
    assert seen["factor_state"] == {}  # the factors start fresh


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    model = ScheduledClassifier("mlp", lr=0.05)
    checkpoints = ModelCheckpoint(dirpath=tmp, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True)
    trainer = tiny_trainer(
        tmp,
        callbacks=[LowRankCallback(energy=0.8, at_step=SWAP), checkpoints],
        max_steps=STEPS,
        enable_checkpointing=True,
    )
    trainer.fit(model)
    return model, trainer.optimizers[0].state_dict(), tmp / f"epoch=0-step={CKPT_STEP}.ckpt"


def _assert_equal(expected, got, where=""):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(expected, got), where
    elif isinstance(expected, dict):
        assert expected.keys() == got.keys(), where
        for key in expected:
            _assert_equal(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(got), where
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            _assert_equal(e, g, f"{where}[{i}]")
    else:
        assert expected == got, where


def test_checkpoint_after_the_swap_resumes_exactly(uninterrupted, tmp_path):
    full, optimizer_state, path = uninterrupted
    ckpt = torch.load(path, weights_only=True)
    callback = LowRankCallback(energy=0.8, at_step=SWAP)
    assert ckpt["callbacks"][callback.state_key]["done"] is True
    assert "net.fc1.first.weight" in ckpt["state_dict"]
    resumed = ScheduledClassifier("mlp", lr=0.05)
    trainer = tiny_trainer(tmp_path, callbacks=[callback], max_steps=STEPS)
    trainer.fit(resumed, ckpt_path=path)
    _assert_equal(full.state_dict(), resumed.state_dict(), "state_dict")
    _assert_equal(optimizer_state, trainer.optimizers[0].state_dict(), "optimizer")


def test_restore_rebuilds_the_factorized_model_outside_the_trainer(uninterrupted):
    _, _, path = uninterrupted
    state = torch.load(path, weights_only=True)["state_dict"]
    model = lit_opt.restore(BoringClassifier("mlp"), state)
    assert isinstance(model.net.fc1, LowRankLinear)
    assert torch.equal(model.net.fc1.first.weight, state["net.fc1.first.weight"])


def test_low_rank_then_qat_exports_quantized_factors_and_loads_equal(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    callbacks = [LowRankCallback(rank=4, targets=["net.fc1"]), QATCallback(activations="none")]
    tiny_trainer(tmp_path, callbacks=callbacks, max_steps=6).fit(model)
    path = lit_opt.export(model, tmp_path / "artifact")
    manifest = (path / "lit_opt.json").read_text()
    assert '"net.fc1.first.weight"' in manifest and '"int8"' in manifest
    loaded = lit_opt.load(path, model=BoringClassifier("mlp"), kernel="reference")
    assert isinstance(loaded.net.fc1, LowRankLinear)
    assert isinstance(loaded.net.fc1.first, lit_opt.nn.QuantizedLinear)
    x, _ = next(iter(random_dataloader("mlp", n=16)))
    torch.testing.assert_close(loaded(x), model.eval()(x), atol=1e-5, rtol=0)


def test_float_export_stores_the_factors_and_is_smaller(tmp_path):
    model = BoringClassifier("mlp")
    tiny_trainer(tmp_path, callbacks=[LowRankCallback(rank=2, targets=["net.fc1"])]).fit(model)
    dense = lit_opt.export(BoringClassifier("mlp"), tmp_path / "dense")
    path = lit_opt.export(model, tmp_path / "low")
    assert (path / "model.safetensors").stat().st_size < (dense / "model.safetensors").stat().st_size
    loaded = lit_opt.load(path, kernel="reference")  # architecture from the manifest
    x, _ = next(iter(random_dataloader("mlp", n=16)))
    assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"energy": 0.0}, r"energy=0.0 is not accepted; expected .* \(0, 1\]. HINT"),
        ({"energy": float("nan")}, r"energy=nan is not accepted"),
        ({"energy": 1.5}, r"energy=1.5 is not accepted; expected .* \(0, 1\]. HINT"),
        ({"rank": 0}, r"rank=0 is not accepted; expected an integer >= 1 or None. HINT: rank=None"),
        ({"min_saving": 1.0}, r"min_saving=1.0 is not accepted; expected .* \[0, 1\). HINT"),
        ({"min_saving": -0.1}, r"min_saving=-0.1 is not accepted"),
        ({"at_step": -1}, r"at_step=-1 is not accepted"),
        ({"targets": []}, r"targets=\[\] selects no layer. HINT"),
        ({"targets": "*"}, r"targets='\*' must be a list"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LowRankCallback(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"rank": 5, "targets": ["net.fc2"]},
            r"rank=5 exceeds min\(out_features, in_features\) = 4 of layer 'net.fc2'.*HINT",
        ),
        (
            {"targets": ["net.fc9"]},
            r"targets=\['net.fc9'\] matched no Linear(/Conv1D)? module; modules include 'net.fc2', 'net.fc1'",
        ),
        (
            {"targets": ["net.relu"]},
            r"targets=\['net.relu'\] matched 1 module\(s\) but no Linear(/Conv1D)? module; it matched ReLU",
        ),
    ],
)
def test_bad_targets_and_ranks_are_refused_at_setup(tmp_path, kwargs, match):
    trainer = tiny_trainer(tmp_path, callbacks=[LowRankCallback(**kwargs)])
    with pytest.raises(ValueError, match=match):
        trainer.fit(BoringClassifier("mlp"))


def test_mid_run_swap_of_a_quantized_layer_is_refused_before_training(tmp_path):
    callbacks = [LowRankCallback(rank=2, at_step=2), QATCallback()]
    with pytest.raises(
        ValueError,
        match=r"would factorize 'net.fc1', which already carries quantizers .* HINT: use at_step=0",
    ):
        tiny_trainer(tmp_path, callbacks=callbacks).fit(BoringClassifier("mlp"))


def test_low_rank_then_weight_sharing_clusters_the_factors_and_loads_equal(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    callbacks = [LowRankCallback(rank=3, targets=["net.fc1"]), lit_opt.WeightSharingCallback(n_clusters=16)]
    tiny_trainer(tmp_path, callbacks=callbacks).fit(model)
    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "artifact"), kernel="reference")
    assert isinstance(loaded.net.fc1, LowRankLinear)
    x, _ = next(iter(random_dataloader("mlp", n=16)))
    assert torch.equal(loaded(x), model.eval()(x))


def test_factorizing_a_layer_quantized_before_the_swap_is_refused(tmp_path):
    callbacks = [QATCallback(), LowRankCallback(rank=2)]  # QAT first: its quantizers would be lost
    with pytest.raises(ValueError, match=r"list LowRankCallback before QATCallback"):
        tiny_trainer(tmp_path, callbacks=callbacks).fit(BoringClassifier("mlp"))

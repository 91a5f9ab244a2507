"""QATCallback: resume from a checkpoint mid-QAT, and checkpoints loaded outside the Trainer."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lit_opt
from lit_opt import QATCallback
from tests.helpers.models import BoringClassifier, random_dataloader
from tests.helpers.trainer import tiny_trainer

STEPS, CKPT_STEP = 14, 8  # 64 samples / batch 8 = 8 steps per epoch: the checkpoint closes epoch 0


def _qat():
    # static observers still observing at the checkpoint (they freeze at 10)
    return QATCallback(activations="static", symmetric=False, freeze_observers_step=10)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    model = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    checkpoints = ModelCheckpoint(dirpath=tmp, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True)
    trainer = tiny_trainer(tmp, callbacks=[_qat(), checkpoints], max_steps=STEPS, enable_checkpointing=True)
    trainer.fit(model)
    return model, tmp / f"epoch=0-step={CKPT_STEP}.ckpt"


def test_checkpoint_is_weights_only_and_holds_quantizer_state(uninterrupted):
    _, path = uninterrupted
    ckpt = torch.load(path, weights_only=True)
    qat = _qat()
    assert ckpt["callbacks"][qat.state_key] == {"phase": "observing", "last_step": CKPT_STEP - 1}
    state = ckpt["state_dict"]
    assert "net.fc1.parametrizations.weight.original" in state
    assert bool(state["net.fc1.input_quantizer.initialized"])
    assert state["net.fc1.parametrizations.weight.0._extra_state"]["bits"] == 8


def test_resume_reproduces_the_uninterrupted_run_exactly(uninterrupted, tmp_path):
    full, path = uninterrupted
    resumed = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    qat = _qat()
    tiny_trainer(tmp_path, callbacks=[qat], max_steps=STEPS).fit(resumed, ckpt_path=path)
    expected, got = full.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, got[key]), key
    assert qat.phase == "quantized"
    assert not bool(resumed.net.fc1.input_quantizer.observing)


def test_restore_loads_a_checkpoint_outside_the_trainer(uninterrupted, tmp_path):
    _, path = uninterrupted
    state = torch.load(path, weights_only=True)["state_dict"]
    model = lit_opt.restore(BoringClassifier("mlp"), state).eval()
    assert torch.equal(
        model.net.fc2.parametrizations.weight.original, state["net.fc2.parametrizations.weight.original"]
    )
    x, _ = next(iter(random_dataloader("mlp", n=8)))
    twin = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    tiny_trainer(tmp_path, callbacks=[_qat()], max_steps=CKPT_STEP).fit(
        twin
    )  # the same run, stopped at the checkpoint
    assert torch.equal(model(x), twin.eval()(x))


def test_resuming_with_different_quantization_is_refused(uninterrupted, tmp_path):
    _, path = uninterrupted
    model = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    trainer = tiny_trainer(
        tmp_path, callbacks=[QATCallback(weight_bits=4, activations="static")], max_steps=STEPS
    )
    with pytest.raises(
        ValueError, match=r"does not match this model's .* HINT: resume with the same QATCallback"
    ):
        trainer.fit(model, ckpt_path=path)

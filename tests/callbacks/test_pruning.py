"""IterativePruningCallback: arguments, schedule, structures, composition with QAT, logging."""

import csv

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from lit_opt import IterativePruningCallback, QATCallback
from lit_opt.parametrizations import Mask, WeightFakeQuant
from tests.helpers.models import BoringClassifier, HFClassifier, hf_dataloader
from tests.helpers.trainer import tiny_trainer


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"target_sparsity": 1.0}, r"target_sparsity=1.0 must be a number in \[0, 1\)"),
        ({"target_sparsity": -0.1}, r"target_sparsity=-0.1 must be a number in \[0, 1\)"),
        ({"schedule": "exp"}, r"schedule='exp' is not one of \('cubic', 'linear', 'constant'\)"),
        (
            {"criterion": "l1"},
            r"criterion='l1' is not one of \('magnitude', 'activation', 'movement', 'random'\)",
        ),
        ({"structure": "columns"}, r"structure='columns' is not one of .* HINT: N:M is written"),
        ({"structure": "2-4"}, r"structure='2-4' is not one of"),
        ({"structure": "4:2"}, r"structure='4:2' needs 0 < N < M"),
        (
            {"structure": "1:4"},
            r"target_sparsity=0.5 does not match structure='1:4'.* HINT: set target_sparsity=0.75",
        ),
        ({"scope": "layer"}, r"scope='layer' is not one of \('global', 'local'\)"),
        ({"start_step": 10, "end_step": 10}, r"end_step=10 must be after start_step=10"),
        ({"every_n_steps": 0}, r"every_n_steps=0 must be an integer >= 1"),
        (
            {"structure": "heads", "criterion": "activation"},
            r"criterion='activation' .* not defined for structure='heads'",
        ),
        ({"targets": "fc1"}, r"HINT: write targets=\['fc1'\]"),
        ({"mask_gradients": "yes"}, r"mask_gradients='yes' is not accepted; expected True, False or None"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IterativePruningCallback(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"structure": "heads"}, r"structure='heads' found no attention block .* HINT: use structure='rows'"),
        ({"targets": ["*.mlp.*"]}, r"targets=\['\*.mlp.\*'\] matched no"),
        (
            {"structure": "3:5", "target_sparsity": 0.4},
            r"needs the 16 inputs per row of module 'net.fc1' to be a multiple of M=5",
        ),
    ],
)
def test_model_dependent_errors_come_before_training(tmp_path, kwargs, match):
    trainer = tiny_trainer(tmp_path, callbacks=[IterativePruningCallback(**kwargs)])
    with pytest.raises(ValueError, match=match):
        trainer.fit(BoringClassifier("mlp"))
    assert trainer.global_step == 0


class RecordSparsity(Callback):
    def __init__(self):
        self.history = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        weights = [pl_module.net.fc1.weight, pl_module.net.fc2.weight]
        zeros = sum(int((w == 0).sum()) for w in weights)
        self.history.append(zeros / sum(w.numel() for w in weights))


def test_cubic_schedule_reaches_the_target_exactly_and_stays(tmp_path):
    model = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    record = RecordSparsity()
    pruning = IterativePruningCallback(target_sparsity=0.8, start_step=2, end_step=10, every_n_steps=2)
    tiny_trainer(tmp_path, callbacks=[pruning, record], max_steps=16).fit(model)
    total = model.net.fc1.weight.numel() + model.net.fc2.weight.numel()
    assert record.history[:2] == [0.0, 0.0]
    assert record.history[10:] == [round(0.8 * total) / total] * 6  # exact, and stays through momentum SGD
    assert all(a <= b for a, b in zip(record.history, record.history[1:], strict=False))  # monotone
    assert pruning.state_dict() == {"current_sparsity": 0.8, "last_pruned_step": 10}


def test_end_step_none_means_the_end_of_training(tmp_path):
    model = BoringClassifier("mlp")
    record = RecordSparsity()
    tiny_trainer(
        tmp_path, callbacks=[IterativePruningCallback(0.5, every_n_steps=3), record], max_steps=8
    ).fit(model)
    assert record.history[-1] == pytest.approx(0.5, abs=1 / 640)
    assert record.history[-2] < 0.5


def test_pruned_weights_stay_exactly_zero_and_get_no_gradient(tmp_path):
    model = BoringClassifier("mlp", lr=0.5, momentum=0.9)
    pruning = IterativePruningCallback(0.5, schedule="constant", structure="rows", scope="local")
    tiny_trainer(tmp_path, callbacks=[pruning], max_steps=6).fit(model)
    rows = model.net.fc1.parametrizations.weight[0].mask.all(dim=1)
    assert int((~rows).sum()) == 16
    assert bool((model.net.fc1.weight[~rows] == 0).all()) and bool((model.net.fc1.bias[~rows] == 0).all())
    assert bool((model.net.fc1.weight[rows] != 0).any())


def test_n_m_structure(tmp_path):
    model = BoringClassifier("mlp")
    tiny_trainer(
        tmp_path, callbacks=[IterativePruningCallback(0.5, structure="2:4", every_n_steps=1)], max_steps=5
    ).fit(model)
    for weight in (model.net.fc1.weight, model.net.fc2.weight):
        groups = (weight != 0).reshape(weight.shape[0], -1, 4).sum(dim=-1)
        assert bool((groups <= 2).all())


def test_heads_on_bert_are_whole_and_compose_with_qat_in_either_order(tmp_path):
    for order in ("qat-first", "pruning-first"):
        model = HFClassifier()
        pruning = IterativePruningCallback(0.5, schedule="constant", structure="heads", scope="local")
        qat = QATCallback(exclude=["*embeddings*"])
        callbacks = [qat, pruning] if order == "qat-first" else [pruning, qat]
        tiny_trainer(tmp_path, callbacks=callbacks, max_steps=4).fit(model, train_dataloaders=hf_dataloader())
        attention = model.model.bert.encoder.layer[1].attention
        kinds = [type(p) for p in attention.self.query.parametrizations.weight]
        assert kinds == [Mask, WeightFakeQuant], order  # mask first, so zeros reach the quantizer as zeros
        alive = attention.self.query.weight.abs().sum(dim=1).reshape(2, 16).ne(0).all(dim=1)  # (heads,)
        assert int(alive.sum()) == 1
        dead = int(torch.nonzero(~alive)[0])
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            assert bool((linear.weight.reshape(2, 16, -1)[dead] == 0).all())
            assert bool((linear.bias.reshape(2, 16)[dead] == 0).all())
        assert bool((attention.output.dense.weight.reshape(-1, 2, 16)[:, dead] == 0).all())


def test_logs_global_and_per_layer_sparsity(tmp_path):
    logger = CSVLogger(tmp_path, name="pruning")
    pruning = IterativePruningCallback(0.5, end_step=4, every_n_steps=2, scope="local")
    tiny_trainer(tmp_path, callbacks=[pruning], logger=logger, max_steps=6).fit(BoringClassifier("mlp"))
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("pruning/sparsity")]
    assert [int(r["step"]) for r in rows] == [0, 2, 4]
    assert float(rows[-1]["pruning/sparsity"]) == pytest.approx(0.5, abs=1e-3)
    assert float(rows[-1]["pruning/sparsity/net.fc1"]) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("criterion", ["activation", "movement", "random"])
def test_data_dependent_criteria_reach_the_target(tmp_path, criterion):
    model = BoringClassifier("mlp")
    pruning = IterativePruningCallback(0.6, criterion=criterion, end_step=6, every_n_steps=2)
    tiny_trainer(tmp_path, callbacks=[pruning], max_steps=8).fit(model)
    weights = [model.net.fc1.weight, model.net.fc2.weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.6 * sum(w.numel() for w in weights))
    assert all(float((w == 0).float().mean()) < 1.0 for w in weights)  # no layer wiped out


def test_global_scope_compares_layers_relative_to_their_own_scale():
    from lit_opt.pruning import PruningConfig, prepare_pruning, sparsity_report, update_masks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 32))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)  # e.g. a freshly initialised head next to trained layers
    config = PruningConfig(0.7)
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.7, step=0)
    report = sparsity_report(groups)
    assert report["global"] == pytest.approx(0.7, abs=1 / 2048)
    assert report["0"] < 0.95 and report["1"] < 0.95  # raw magnitudes would prune layer 1 entirely


def test_movement_before_any_accumulated_score_falls_back_to_magnitude():
    from lit_opt.pruning import PruningConfig, accumulate_movement, prepare_pruning, update_masks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    config = PruningConfig(0.5, criterion="movement", scope="local")
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.5, step=0)  # step 0: no gradient seen yet
    weight = model[0].parametrizations.weight.original.detach()
    magnitude_keep = weight.abs() > weight.abs().flatten().kthvalue(32).values  # the 32 smallest pruned
    assert torch.equal(groups[0].masks()[0].mask, magnitude_keep)
    # once a step has accumulated movement, the score is -W * dL/dW, not |W|
    model(torch.randn(4, 8)).pow(2).sum().backward()
    accumulate_movement(groups)
    mask = groups[0].masks()[0]
    assert int(mask.score_count) == 1
    assert torch.equal(mask.score, -(weight * model[0].parametrizations.weight.original.grad))


class CheckPrunedGradients(Callback):
    """After IterativePruningCallback's own hook: pruned weights are zero, their gradients masked or not."""

    def __init__(self, zeroed: bool, masked: bool):
        self.zeroed, self.masked, self.checked, self.unmultiplied = zeroed, masked, 0, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for layer in (pl_module.net.fc1, pl_module.net.fc2):
            plist = layer.parametrizations.weight
            pruned = ~plist[0].mask
            if bool(pruned.any()):
                if self.masked:  # e.g. so that the clip norm is the masked model's
                    assert bool((plist.original.grad[pruned] == 0).all())
                else:  # left as it is: the weight is zeroed after the step anyway
                    assert bool((plist.original.grad[pruned] != 0).any())
                if self.zeroed:  # in place after the last step
                    assert bool((plist.original[pruned] == 0).all())
                self.checked += 1
                self.unmultiplied += layer.weight is plist.original


class PrunedSGD(torch.optim.SGD):
    """An optimizer lit_opt cannot vouch for (not one of PER_ENTRY_OPTIMIZERS, though it behaves like SGD)."""


@pytest.mark.parametrize(
    ("clip", "optimizer", "mask_gradients", "masked"),
    [
        (None, None, None, False),  # plain SGD, no clipping: gradients left as they are
        (0.5, None, None, True),  # clipping: masked before Lightning clips
        (None, PrunedSGD, None, True),  # an optimizer not known to be per-entry
        (None, None, True, True),  # asked for
        (None, PrunedSGD, False, False),  # declined (PrunedSGD is per-entry in fact, so nothing changes)
    ],
)
def test_in_place_zeroing_trains_exactly_like_the_multiplied_masks(
    tmp_path, monkeypatch, clip, optimizer, mask_gradients, masked
):
    def run(fast: bool):
        torch.manual_seed(0)
        model = BoringClassifier("mlp", lr=0.05, momentum=0.9)
        if optimizer is not None:
            model.configure_optimizers = lambda: optimizer(model.parameters(), lr=0.05, momentum=0.9)
        pruning = IterativePruningCallback(
            0.7, start_step=1, end_step=5, every_n_steps=2, mask_gradients=mask_gradients
        )
        check = CheckPrunedGradients(zeroed=fast, masked=masked or not fast)
        with monkeypatch.context() as patch:
            if not fast:  # the masks multiply on every forward, as before in-place zeroing existed
                patch.setattr(Mask, "zero_pruned", lambda self, original: None)
            tiny_trainer(tmp_path, callbacks=[pruning, check], max_steps=8, gradient_clip_val=clip).fit(model)
        assert pruning._step_hooks == []  # removed after fit
        return model, check

    fast, fast_check = run(True)
    slow, slow_check = run(False)
    assert fast_check.checked > 0 and fast_check.checked == slow_check.checked
    assert fast_check.unmultiplied == fast_check.checked and slow_check.unmultiplied == 0
    for name in ("fc1", "fc2"):
        fast_layer, slow_layer = getattr(fast.net, name), getattr(slow.net, name)
        assert torch.equal(
            fast_layer.parametrizations.weight[0].mask, slow_layer.parametrizations.weight[0].mask
        )
        assert torch.equal(fast_layer.weight, slow_layer.weight)
        assert fast_layer.weight is not fast_layer.parametrizations.weight.original  # multiplies after fit


class ManualClassifier(BoringClassifier):
    """Manual optimization that clips by itself before stepping."""

    def __init__(self):
        super().__init__("mlp", lr=0.05)
        self.automatic_optimization = False
        self.unmultiplied = self.pruned_steps = 0

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        grad = self.net.fc1.parametrizations.weight.original.grad
        assert bool((grad[~self.net.fc1.parametrizations.weight[0].mask] == 0).all())  # masked in backward
        self.clip_gradients(optimizer, gradient_clip_val=0.5)
        optimizer.step()
        plist = self.net.fc1.parametrizations.weight
        if not bool(plist[0].mask.all()):  # with nothing pruned the weight is returned as it is anyway
            self.pruned_steps += 1
            self.unmultiplied += self.net.fc1.weight is plist.original
        return loss


def test_manual_optimization_keeps_the_masks_multiplying(tmp_path):
    model = ManualClassifier()
    pruning = IterativePruningCallback(0.5, start_step=0, end_step=3, every_n_steps=1)
    tiny_trainer(tmp_path, callbacks=[pruning], max_steps=5).fit(model)
    assert model.pruned_steps > 0 and model.unmultiplied == 0 and pruning._step_hooks == []
    assert bool((model.net.fc1.weight[~model.net.fc1.parametrizations.weight[0].mask] == 0).all())

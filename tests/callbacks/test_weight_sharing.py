"""WeightSharingCallback: clustering at start_step, trainable centroids, composition, bad input, export."""

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

import lit_opt
from lit_opt import IterativePruningCallback, QATCallback, WeightSharingCallback
from lit_opt.parametrizations import Codebook
from lit_opt.sharing import codebooks
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer


def _distinct(weight: torch.Tensor) -> int:
    return len(torch.unique(weight.detach()))


def test_clusters_at_start_step_and_trains_the_centroids(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    sharing = WeightSharingCallback(n_clusters=8, start_step=2, exclude=["net.fc2"])
    seen = {}

    class Probe(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen[trainer.global_step] = (
                _distinct(pl_module.net.fc1.weight),
                pl_module.net.fc1.weight.detach().clone(),
            )

    tiny_trainer(tmp_path, callbacks=[sharing, Probe()], max_steps=5).fit(model)
    assert sharing.shared_modules == ["net.fc1"] and sharing.clustered_step == 2
    assert seen[2][0] > 8 and all(seen[s][0] <= 8 for s in (3, 4, 5))
    assert not torch.equal(seen[4][1], seen[5][1])  # the centroids keep training
    book = model.net.fc1.parametrizations.weight[0]
    assert isinstance(book, Codebook) and book.indices.dtype == torch.uint8
    assert _distinct(model.net.fc2.weight) > 8
    assert torch.equal(model.net.fc1.weight, book.centroids.detach().half().float()[book.indices.long()])


def test_optimizer_holds_the_centroids_from_the_start(tmp_path):
    model = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    trainer = tiny_trainer(
        tmp_path, callbacks=[WeightSharingCallback(n_clusters=4, start_step=1)], max_steps=3
    )
    trainer.fit(model)
    held = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(book.centroids) in held for _, _, book in codebooks(model))


def test_composes_with_pruning_and_qat(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    callbacks = [
        QATCallback(weight_bits=8, activations="none", targets=["net.fc1"], start_step=0),
        WeightSharingCallback(n_clusters=4, start_step=3, targets=["net.fc1"]),
        IterativePruningCallback(0.5, schedule="constant", start_step=1, targets=["net.fc1"], scope="local"),
    ]
    tiny_trainer(tmp_path, callbacks=callbacks, max_steps=6).fit(model)
    names = [type(p).__name__ for p in model.net.fc1.parametrizations.weight]
    assert names == ["Mask", "Codebook", "WeightFakeQuant"]  # mask, then share, then quantize
    mask, book, _ = model.net.fc1.parametrizations.weight
    weight = model.net.fc1.weight.detach()
    assert bool(book.zero_cluster) and torch.equal(weight[~mask.mask], torch.zeros(int((~mask.mask).sum())))
    assert all(_distinct(row) <= 4 for row in weight)  # zero and three shared values, quantized per channel
    assert book.values()[0].item() == 0


def test_export_stores_a_float16_codebook_and_packed_indices_and_loads_exactly(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    sharing = WeightSharingCallback(n_clusters=16, start_step=1, init="linear")
    pruning = IterativePruningCallback(
        0.6, schedule="constant", start_step=0, targets=["net.fc2"], scope="local"
    )
    tiny_trainer(tmp_path, callbacks=[sharing, pruning], max_steps=4).fit(model)
    path = lit_opt.export(model, tmp_path / "artifact")
    manifest = json.loads((path / "lit_opt.json").read_text())
    for key, shape in (("net.fc1.weight", [32, 16]), ("net.fc2.weight", [4, 32])):
        entry = manifest["tensors"][key]
        assert entry["encoding"] == "codebook" and entry["bits"] == 4 and entry["shape"] == shape
    stored = load_file(path / "model.safetensors")
    assert (
        stored["net.fc1.weight"].numel() == 32 * 16 // 2
        and stored["net.fc1.weight.codebook"].dtype == torch.float16
    )
    loaded = lit_opt.load(path, model=BoringClassifier("mlp"), kernel="reference")
    assert not any(isinstance(m, Codebook) for m in loaded.modules())
    model.eval()
    for name in ("fc1", "fc2"):
        assert torch.equal(getattr(loaded.net, name).weight, getattr(model.net, name).weight)  # exact
    x = torch.randn(8, 16)
    assert torch.equal(loaded(x), model(x))


def test_restore_rebuilds_codebooks_from_a_state_dict(tmp_path):
    model = BoringClassifier("mlp")
    tiny_trainer(tmp_path, callbacks=[WeightSharingCallback(n_clusters=4)], max_steps=2).fit(model)
    plain = lit_opt.restore(BoringClassifier("mlp"), model.state_dict())
    assert torch.equal(plain.net.fc1.weight, model.net.fc1.weight)
    assert bool(plain.net.fc1.parametrizations.weight[0].clustered)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_clusters": 1}, r"n_clusters=1 must be an integer from 2 to 256.*HINT: indices are stored"),
        ({"n_clusters": 257}, r"n_clusters=257 must be an integer from 2 to 256"),
        ({"n_clusters": 16.0}, r"n_clusters=16.0 must be an integer"),
        ({"n_clusters": True}, r"n_clusters=True must be an integer"),
        ({"init": "random"}, r"init='random' is not one of \('kmeans\+\+', 'linear'\).*HINT"),
        ({"start_step": -1}, r"start_step=-1 is not accepted; expected an integer >= 0"),
        ({"max_iter": 0}, r"max_iter=0 is not accepted; expected an integer >= 1"),
        ({"targets": "fc1"}, r"targets='fc1'.*HINT: write targets=\['fc1'\]"),
        ({"exclude": [3]}, r"exclude=\[3\] must hold only strings"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightSharingCallback(**kwargs)


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        (
            ["net.fc9"],
            r"targets=\['net.fc9'\] matched no Linear/Conv1d/Conv2d/Embedding(/Conv1D)? module.*'net.fc1'",
        ),
        (
            ["net.relu"],
            r"targets=\['net.relu'\] matched 1 module\(s\) but no Linear/Conv1d/Conv2d/Embedding.*ReLU",
        ),
    ],
)
def test_targets_matching_nothing_or_no_weight_fail_at_setup(tmp_path, targets, match):
    trainer = tiny_trainer(tmp_path, callbacks=[WeightSharingCallback(targets=targets)], max_steps=1)
    with pytest.raises(ValueError, match=match):
        trainer.fit(BoringClassifier("mlp"))


def test_two_callbacks_on_one_weight_fail(tmp_path):
    callbacks = [
        WeightSharingCallback(n_clusters=4),
        WeightSharingCallback(n_clusters=8, targets=["net.fc1"]),
    ]
    with pytest.raises(ValueError, match=r"module 'net.fc1' is already shared by .*HINT: give each"):
        tiny_trainer(tmp_path, callbacks=callbacks, max_steps=1).fit(BoringClassifier("mlp"))

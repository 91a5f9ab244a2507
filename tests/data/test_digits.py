"""DigitsDataModule: split sizes, stratification, determinism and argument errors."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from lit_opt.data import DigitsDataModule

N_SAMPLES = 1797  # sklearn.datasets.load_digits


def _labels(dataset: torch.utils.data.TensorDataset) -> torch.Tensor:
    return dataset.tensors[1]


@pytest.fixture(scope="module")
def dm() -> DigitsDataModule:
    module = DigitsDataModule()
    module.prepare_data()
    module.setup("fit")
    return module


def test_split_sizes_cover_every_sample_once(dm: DigitsDataModule) -> None:
    sizes = [len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)]
    assert sizes == [
        N_SAMPLES - 2 * round(0.15 * N_SAMPLES),
        round(0.15 * N_SAMPLES),
        round(0.15 * N_SAMPLES),
    ]
    # Every sample lands in exactly one split: the label counts add up to the whole dataset's.
    labels = torch.cat([_labels(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    assert torch.equal(
        torch.bincount(labels), torch.tensor([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    )


def test_features_and_labels(dm: DigitsDataModule) -> None:
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 64) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        features, labels = dataset.tensors
        assert features.min() >= 0.0 and features.max() <= 1.0
        assert set(labels.tolist()) == set(range(10))
    assert dm.train_dataset.tensors[0].max() == 1.0


def test_split_is_stratified(dm: DigitsDataModule) -> None:
    splits = {"train": dm.train_dataset, "val": dm.val_dataset, "test": dm.test_dataset}
    total = Counter()
    for dataset in splits.values():
        total.update(_labels(dataset).tolist())
    for dataset in splits.values():
        counts = Counter(_labels(dataset).tolist())
        share = len(dataset) / N_SAMPLES
        for label, n in total.items():
            assert abs(counts[label] - share * n) <= 1.5, (label, counts[label], share * n)


def test_split_is_deterministic_per_seed() -> None:
    def split(seed: int) -> list[torch.Tensor]:
        module = DigitsDataModule(seed=seed)
        module.setup("fit")
        return [d.tensors[0] for d in (module.train_dataset, module.val_dataset, module.test_dataset)]

    first, again, other = split(0), split(0), split(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[2], other[2])


def test_setup_is_idempotent_across_stages(dm: DigitsDataModule) -> None:
    test_before = dm.test_dataset
    dm.setup("test")
    assert dm.test_dataset is test_before


def test_dataloaders() -> None:
    module = DigitsDataModule(batch_size=100, val_fraction=0.1, test_fraction=0.2)
    module.setup("fit")
    assert len(module.val_dataset) == round(0.1 * N_SAMPLES)
    assert len(module.test_dataset) == round(0.2 * N_SAMPLES)
    assert sum(len(y) for _, y in module.test_dataloader()) == len(module.test_dataset)
    assert sum(len(y) for _, y in module.val_dataloader()) == len(module.val_dataset)
    predict = [x for x, _ in module.predict_dataloader()]
    assert torch.equal(torch.cat(predict), module.test_dataset.tensors[0])  # not shuffled


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size=0 is not accepted; expected an integer >= 1"),
        ({"batch_size": 8.0}, r"batch_size=8.0 is not accepted; expected an integer >= 1"),
        (
            {"val_fraction": 0.0},
            r"val_fraction=0.0 is not accepted; expected a float strictly between 0 and 1",
        ),
        ({"val_fraction": True}, r"val_fraction=True is not accepted"),
        (
            {"test_fraction": 1.0},
            r"test_fraction=1.0 is not accepted; expected a float strictly between 0 and 1",
        ),
        (
            {"val_fraction": 0.5, "test_fraction": 0.5},
            r"val_fraction=0.5 and test_fraction=0.5 add up to 1; expected a sum below 1.*HINT",
        ),
        ({"seed": -1}, r"seed=-1 is not accepted; expected an integer >= 0"),
        ({"num_workers": -2}, r"num_workers=-2 is not accepted; expected an integer >= 0"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"val_fraction": 0.001},
            r"val_fraction=0.001 gives 2 of 1797 samples, fewer than the 10 classes.*HINT",
        ),
        ({"test_fraction": 0.004}, r"test_fraction=0.004 gives 7 of 1797 samples, fewer than the 10 classes"),
        (
            {"val_fraction": 0.5, "test_fraction": 0.499},
            r"val_fraction=0.5 with test_fraction=0.499 leaves a training split that gives 2 of 1797 samples",
        ),
    ],
)
def test_split_too_small_for_stratification(kwargs: dict, match: str) -> None:
    module = DigitsDataModule(**kwargs)
    with pytest.raises(ValueError, match=match):
        module.setup("fit")


def test_dataloader_before_setup() -> None:
    with pytest.raises(RuntimeError, match=r"DigitsDataModule.train_dataloader was called before setup\(\)"):
        DigitsDataModule().train_dataloader()


def test_missing_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import sklearn...` raise ImportError
    module = DigitsDataModule()
    for step in (module.prepare_data, lambda: module.setup("fit")):
        with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install 'lit_opt\[recipe\]'"):
            step()

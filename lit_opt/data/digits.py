"""scikit-learn's 8x8 handwritten digits as a LightningDataModule: the small, offline dataset of the recipes."""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lit_opt._checks import check_int, check_split_fractions

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'lit_opt[recipe]'  (or: pip install scikit-learn)"


def _import_sklearn() -> tuple[Any, Any]:
    """Returns scikit-learn's ``(load_digits, train_test_split)``, imported only when the data is needed."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise ImportError(
            f"DigitsDataModule needs scikit-learn, which is an optional dependency. Install it with: {_INSTALL_HINT}"
        ) from err
    return load_digits, train_test_split


class DigitsDataModule(LightningDataModule):
    """The 1,797 8x8 handwritten digits of scikit-learn, split into train, val and test.

    The split is stratified by class and fixed by ``seed``, so every run (and every DDP rank) sees the same
    samples in the same split. Features are the 64 pixel intensities scaled from ``[0, 16]`` to ``[0, 1]``
    (``float32``); labels are the digits ``0``-``9`` (``int64``). The predict dataloader runs over the test
    split and yields ``(x, y)`` batches like the others.

    The dataset ships inside scikit-learn (no download), which is an optional dependency:
    ``pip install 'lit_opt[recipe]'``. It is imported only in :meth:`prepare_data` and :meth:`setup`.

    Args:
        batch_size: Samples per batch in every dataloader.
        val_fraction: Share of all samples in the validation split, in ``(0, 1)``.
        test_fraction: Share of all samples in the test split, in ``(0, 1)``; ``val_fraction + test_fraction``
            must stay below 1 so that something is left to train on.
        seed: Seed of the stratified split (not of the shuffling, which ``seed_everything`` controls).
        num_workers: Worker processes of each dataloader; ``0`` loads in the main process.

    Raises:
        ValueError: If an argument is out of range, or if a split would hold fewer samples than there are
            classes (checked in :meth:`setup`).
        ImportError: If scikit-learn is not installed (raised by :meth:`prepare_data` and :meth:`setup`).

    Example::

        >>> dm = DigitsDataModule(batch_size=32, seed=0)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), x.dtype, y.dtype
        ((32, 64), torch.float32, torch.int64)
    """

    num_features: int = 64
    num_classes: int = 10

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, minimum=1)
        check_split_fractions(val_fraction, test_fraction, defaults=(0.15, 0.15))
        check_int("seed", seed, minimum=0)
        check_int("num_workers", num_workers, minimum=0)
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.seed = seed
        self.num_workers = num_workers
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    @override
    def prepare_data(self) -> None:
        # Nothing to download: the data ships with scikit-learn. Fail here, early, when it is missing.
        _import_sklearn()

    @override
    def setup(self, stage: str) -> None:
        if self.train_dataset is not None:
            return  # the split is the same for every stage; build it once
        load_digits, train_test_split = _import_sklearn()
        bunch = load_digits()
        features, labels = bunch.data, bunch.target  # (N, 64) float64 in 0..16, (N,) int
        n_total = len(labels)
        n_test = round(self.test_fraction * n_total)
        n_val = round(self.val_fraction * n_total)
        sizes = {"val_fraction": n_val, "test_fraction": n_test, "train": n_total - n_val - n_test}
        for name, size in sizes.items():
            if size < self.num_classes:
                raise ValueError(
                    f"{self._split_description(name)} gives {size} of {n_total} samples, fewer than the "
                    f"{self.num_classes} classes that a stratified split needs. HINT: keep every split at "
                    f"{self.num_classes / n_total:.4f} of the data or more."
                )

        indices = list(range(n_total))
        rest, test_idx = train_test_split(indices, test_size=n_test, stratify=labels, random_state=self.seed)
        train_idx, val_idx = train_test_split(
            rest, test_size=n_val, stratify=[labels[i] for i in rest], random_state=self.seed
        )
        # (N, 64) pixel intensities 0..16 -> [0, 1]
        x = torch.as_tensor(features, dtype=torch.float32) / 16.0
        y = torch.as_tensor(labels, dtype=torch.int64)  # (N,)
        self.train_dataset = self._subset(x, y, train_idx)
        self.val_dataset = self._subset(x, y, val_idx)
        self.test_dataset = self._subset(x, y, test_idx)
        log.info(
            "digits split with seed=%d: %d train, %d val, %d test samples",
            self.seed,
            len(train_idx),
            len(val_idx),
            len(test_idx),
        )

    def _split_description(self, name: str) -> str:
        if name == "train":
            return (
                f"val_fraction={self.val_fraction!r} with test_fraction={self.test_fraction!r} "
                "leaves a training split that"
            )
        return f"{name}={getattr(self, name)!r}"

    @staticmethod
    def _subset(x: torch.Tensor, y: torch.Tensor, indices: Any) -> TensorDataset:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return TensorDataset(x[index], y[index])

    def _loader(self, dataset: TensorDataset | None, name: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"DigitsDataModule.{name} was called before setup(); call dm.setup('fit') first "
                "(a Trainer does this for you)."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, "train_dataloader", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val_dataloader", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test_dataloader", shuffle=False)

    @override
    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "predict_dataloader", shuffle=False)

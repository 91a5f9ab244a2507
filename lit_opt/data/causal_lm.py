"""Causal language modelling from a local text, CSV, JSON Lines or Parquet file, tokenized once and cached."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from typing_extensions import override

from lit_opt._checks import check_flag, check_int, check_split_fractions, check_str
from lit_opt.data.rotten_tomatoes import DEFAULT_CACHE_DIR, rotten_tomatoes_csv
from lit_opt.data.text_classification import (
    BUILDERS,
    TokenizedFileDataModule,
    check_data_file,
    read_rows,
    save_dataset,
)
from lit_opt.export.format import sha256
from lit_opt.inference.bucketing import LengthBucketBatchSampler

log = logging.getLogger(__name__)

#: The ``datasets`` builder for each accepted file suffix (``.txt``: one text per non-empty line).
LM_BUILDERS: dict[str, str] = {**BUILDERS, ".txt": "text"}
SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_block_size(block_size: int, positions: int | None, model: str = "the model") -> None:
    """Raise ``ValueError`` if ``block_size`` tokens do not fit ``positions`` (a model's ``max_position_embeddings``).

    Example::

        >>> check_block_size(128, 2048)
        >>> check_block_size(4096, 2048)
        Traceback (most recent call last):
        ...
        ValueError: block_size=4096 is longer than the 2048 positions of the model. HINT: use block_size <= 2048.
    """
    if positions is not None and block_size > positions:
        raise ValueError(
            f"block_size={block_size} is longer than the {positions} positions of {model}. "
            f"HINT: use block_size <= {positions}."
        )


class CausalLMDataModule(TokenizedFileDataModule):
    """Texts from a local file, tokenized once (cached), split by text, packed into blocks for next-token training.

    The file is plain text (``.txt``, one text per non-empty line), ``.csv``, ``.jsonl``/``.json`` (one object
    per line) or ``.parquet`` with a ``text_column``. Its texts are tokenized once (no truncation, an EOS
    token after each) and cached under ``cache_dir``, keyed by the file's SHA-256, the tokenizer and the
    column. The texts are shuffled with ``seed`` and split into train/val/test *by text* (no text is
    in two splits), then each split is:

    - ``packing=True`` (default): concatenated and cut into blocks of exactly ``block_size`` tokens (the
      last partial block is dropped; attention crosses the EOS between texts, as in GPT-2's training).
      Every batch is full, so no padding and no bucketing is needed.
    - ``packing=False``: one example per text, truncated to ``block_size``; batches are padded to their
      longest text, and ``bucketing=True`` (default) groups texts of similar length so padding stays small.

    Batches are dicts ``{"input_ids", "attention_mask", "labels"}`` where ``labels`` are the input ids
    (unshifted, as a Hugging Face causal LM takes them) with ``-100`` on padding; with
    ``return_index=True`` they also hold ``idx``, the example's number within its split (for a teacher
    cache, together with :attr:`fingerprint`).

    With ``path=None`` the texts are the 12,808 Rotten Tomatoes critic snippets (see
    :mod:`lit_opt.data.rotten_tomatoes`), fetched once into ``cache_dir``.

    Args:
        path: The data file, or None for Rotten Tomatoes.
        text_column: The column holding the texts (ignored for ``.txt``).
        tokenizer: A Hugging Face tokenizer directory or name; None: SmolLM2-135M-Instruct's (the causal-LM
            teacher's, converted once into ``cache_dir`` by :func:`~lit_opt.models.smollm2.smollm2_135m_instruct`).
        block_size: Tokens per example (packed) or the most per example (not packed).
        batch_size: Examples per batch.
        val_fraction: Share of the texts in the validation split, in ``(0, 1)``.
        test_fraction: Share of the texts in the test split, in ``(0, 1)``.
        seed: Seed of the split and of the shuffling.
        packing: Pack texts into full blocks (else one example per text).
        bucketing: With ``packing=False``, batch texts of similar length together.
        max_positions: The model's positions; ``block_size`` must fit (also checked by :func:`check_block_size`).
        max_texts: Use only the first ``max_texts`` texts of the shuffled file (a quick run).
        num_workers: Worker processes per dataloader.
        cache_dir: Where the downloaded and tokenized data are kept (default ``~/.cache/lit_opt``).
        return_index: Add each example's number as ``idx``.

    Raises:
        ValueError: For an argument out of range, a missing file or one of another type (here), or (in
            :meth:`setup`) a file without the column, without any text, or too small to fill every split.

    Example::

        >>> dm = CausalLMDataModule("notes.txt", tokenizer="path/to/tokenizer", block_size=256)  # doctest: +SKIP
        >>> dm.setup("fit")  # doctest: +SKIP
        >>> next(iter(dm.train_dataloader()))["input_ids"].shape  # doctest: +SKIP
        torch.Size([8, 256])
    """

    def __init__(
        self,
        path: str | None = None,
        text_column: str = "text",
        tokenizer: str | None = None,
        block_size: int = 128,
        batch_size: int = 8,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        packing: bool = True,
        bucketing: bool = True,
        max_positions: int | None = None,
        max_texts: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        return_index: bool = False,
    ) -> None:
        super().__init__()
        if path is not None:
            if not isinstance(path, str) or not path:
                raise ValueError(f"path={path!r} is not accepted; expected a file path or None.")
            check_data_file(
                path, LM_BUILDERS, "save the texts one per line as .txt, or as a CSV with a text column."
            )
        check_str("text_column", text_column)
        if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer):
            raise ValueError(
                f"tokenizer={tokenizer!r} is not accepted; expected a non-empty string (a Hugging Face "
                "tokenizer directory or name), or None for SmolLM2's."
            )
        check_int("block_size", block_size, minimum=2)
        check_int("batch_size", batch_size, minimum=1)
        check_split_fractions(val_fraction, test_fraction, defaults=(0.05, 0.05))
        check_int("seed", seed, minimum=0)
        for name, flag in (("packing", packing), ("bucketing", bucketing), ("return_index", return_index)):
            check_flag(name, flag)
        if max_positions is not None:
            check_int("max_positions", max_positions, minimum=1)
            check_block_size(block_size, max_positions)
        if max_texts is not None:
            check_int("max_texts", max_texts, minimum=3)
        check_int("num_workers", num_workers, minimum=0)
        self.save_hyperparameters()
        self.path, self.text_column, self.tokenizer_name = path, text_column, tokenizer
        self.block_size, self.batch_size = block_size, batch_size
        self.val_fraction, self.test_fraction, self.seed = float(val_fraction), float(test_fraction), seed
        self.packing, self.bucketing, self.return_index = packing, bucketing, return_index
        self.max_texts, self.num_workers = max_texts, num_workers
        self.cache_dir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        self.pad_token_id = 0
        #: Per split, the examples: lists of token ids (``block_size`` long when packed).
        self.splits: dict[str, list[list[int]]] = {}
        #: Per split, the texts it holds (what the examples were made of).
        self.text_counts: dict[str, int] = {}
        #: SHA-256 of what the tokens depend on (file, tokenizer, column, and how they are split and packed).
        self.fingerprint: str | None = None

    # ------------------------------------------------------------------ data

    def _data_path(self) -> Path:
        return Path(self.path).expanduser() if self.path is not None else rotten_tomatoes_csv(self.cache_dir)

    def tokenizer(self) -> Any:
        """The tokenizer (``AutoTokenizer.from_pretrained(tokenizer)``; SmolLM2-135M-Instruct's when None)."""
        from transformers import AutoTokenizer

        if self.tokenizer_name is None:
            from lit_opt.models.smollm2 import smollm2_135m_instruct

            return AutoTokenizer.from_pretrained(str(smollm2_135m_instruct(self.cache_dir)))
        return AutoTokenizer.from_pretrained(self.tokenizer_name)

    def _tokenized(self) -> list[list[int]]:
        """Every text's token ids followed by EOS, in file order: from the cache, or built and cached."""
        import datasets
        from datasets.fingerprint import Hasher

        data_path, tokenizer = self._data_path(), self.tokenizer()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        key = [sha256(data_path), Hasher.hash(tokenizer), self.text_column]
        digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()
        cached = self.cache_dir / "tokenized" / f"lm-{data_path.stem}-{digest[:16]}"
        if not cached.is_dir():
            self._build(data_path, tokenizer, cached)
        split = [
            self.seed,
            self.val_fraction,
            self.test_fraction,
            self.max_texts,
            self.packing,
            self.block_size,
        ]
        self.fingerprint = hashlib.sha256(json.dumps([digest, split]).encode()).hexdigest()
        return list(datasets.load_from_disk(str(cached))["input_ids"])

    def _build(self, data_path: Path, tokenizer: Any, target: Path) -> None:
        builder = LM_BUILDERS[data_path.suffix.lower()]
        column = "text" if builder == "text" else self.text_column
        raw = read_rows(data_path, builder, f"a {column!r} column", self.cache_dir / "datasets")
        if column not in raw.column_names:
            raise ValueError(
                f"text_column={column!r} is not a column of {data_path}; its columns are {raw.column_names}. "
                "HINT: pass --data.text_column with one of them."
            )
        texts = [t for t in raw[column] if isinstance(t, str) and t.strip()]
        if not texts:
            raise ValueError(
                f"text_column={column!r} of {data_path} holds no text (every value is empty or not a string). "
                "HINT: check the column, or the file's contents."
            )
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = [row + eos for row in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        import datasets

        save_dataset(datasets.Dataset.from_dict({"input_ids": ids}), target)
        log.info("tokenized %d texts of %s into %s", len(ids), data_path, target)

    def _examples(self, texts: list[list[int]]) -> list[list[int]]:
        if not self.packing:
            return [t[: self.block_size] for t in texts if len(t) >= 2]
        stream = [token for text in texts for token in text]
        n = len(stream) // self.block_size
        return [stream[i * self.block_size : (i + 1) * self.block_size] for i in range(n)]

    @override
    def _split(self) -> None:
        texts = self._tokenized()
        random.Random(self.seed).shuffle(texts)
        if self.max_texts is not None:
            texts = texts[: self.max_texts]
        n_val, n_test = round(self.val_fraction * len(texts)), round(self.test_fraction * len(texts))
        parts = {
            "test": texts[:n_test],
            "val": texts[n_test : n_test + n_val],
            "train": texts[n_test + n_val :],
        }
        splits = {name: self._examples(part) for name, part in parts.items()}
        for name in SPLITS:
            if not splits[name]:
                tokens = sum(len(t) for t in parts[name])
                raise ValueError(
                    f"the {name} split ({len(parts[name])} texts, {tokens} tokens) holds no example of "
                    f"block_size={self.block_size} tokens. HINT: use a smaller block_size, larger "
                    "val_fraction/test_fraction, or more text."
                )
        self.splits = {name: splits[name] for name in SPLITS}
        self.text_counts = {name: len(parts[name]) for name in SPLITS}
        log.info(
            "causal LM split with seed=%d: %s texts, %s examples of <= %d tokens",
            self.seed,
            self.text_counts,
            {k: len(v) for k, v in self.splits.items()},
            self.block_size,
        )

    def tokens(self, split: str) -> int:
        """Tokens the model predicts in ``split`` (per example, its length minus the first)."""
        return sum(len(ids) - 1 for ids in self.splits[split])

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError(
                f"CausalLMDataModule: the {split} dataloader was requested before setup(); call "
                "dm.setup('fit') first (a Trainer does this for you)."
            )
        examples = [
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": ids,
                **({"idx": i} if self.return_index else {}),
            }
            for i, ids in enumerate(self.splits[split])
        ]
        common = self._loader_options()
        if self.packing or not self.bucketing:
            return DataLoader(examples, batch_size=self.batch_size, shuffle=shuffle, **common)  # type: ignore[arg-type]
        sampler = LengthBucketBatchSampler(
            [len(ids) for ids in self.splits[split]], self.batch_size, shuffle=shuffle, seed=self.seed
        )
        return DataLoader(examples, batch_sampler=sampler, **common)  # type: ignore[arg-type]

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

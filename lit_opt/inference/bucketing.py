"""Length bucketing for training and evaluation: batches of similar length, padded only to their longest.

:class:`LengthBucketBatchSampler` forms the batches; :func:`pad_collate` pads each batch of tokenized
examples to its own longest one (dynamic padding). Together they cut the share of padding tokens, and so
the compute spent on them, far below what random batches padded to a fixed length waste.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from lit_opt._checks import check_int

log = logging.getLogger(__name__)

#: Padding value of each known key; any other key pads with 0.
PAD_VALUES: dict[str, int] = {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0, "labels": -100}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")


def _distributed_defaults(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``, each taken from ``torch.distributed`` where not given (1 and 0 without it)."""
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialized else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialized else 0
    return num_replicas, rank


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of examples of similar length; shuffled, deterministic per epoch and seed, DDP-aware.

    Each epoch (with ``shuffle=True``) the indices are permuted with a generator seeded by
    ``seed + epoch``, cut into buckets of ``batch_size * num_replicas * bucket_batches`` examples, each
    bucket sorted by length (ties keep the random order) and cut into batches; then the order of all
    batches is shuffled. So batch membership is random within a bucket and batch order random across
    buckets, while every batch holds examples of similar length. With ``shuffle=False`` the whole
    dataset is sorted by length (evaluation: the least padding, the same order every time).

    Under DDP every rank builds the same batches and takes every ``num_replicas``-th one: the ranks'
    shards are disjoint and, with ``drop_last=False``, cover the dataset; every rank gets the same
    number of batches (the examples are spread over ``num_replicas * len(self)`` batches of at most
    ``batch_size``, so some batches hold one example fewer). With ``drop_last=True`` every batch holds
    ``batch_size`` examples and the remainder is left out for the epoch.

    Call :meth:`set_epoch` at the start of every epoch. Lightning calls ``set_epoch`` on
    ``batch_sampler.sampler``; :attr:`sampler` is this sampler itself, so a Trainer does it for you.

    Args:
        lengths: The length (e.g. token count) of every example, in dataset order.
        batch_size: The most examples in a batch.
        shuffle: Shuffle per epoch (training); ``False`` sorts by length (evaluation).
        seed: Seed of the shuffling; the order of epoch ``e`` depends only on ``seed`` and ``e``.
        bucket_batches: Batches per bucket and rank: larger buckets give less padding, less randomness.
        drop_last: Leave out the examples that would not fill a whole batch on every rank.
        num_replicas: Number of DDP ranks (default: the world size of ``torch.distributed``, else 1).
        rank: This process's rank (default: from ``torch.distributed``, else 0).

    Raises:
        ValueError: If an argument is out of range, or there are fewer examples than ranks.

    Example::

        >>> sampler = LengthBucketBatchSampler([5, 1, 4, 2, 3, 6], batch_size=2, shuffle=False)
        >>> list(sampler)
        [[1, 3], [4, 2], [0, 5]]
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket_batches: int = 50,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("seed", seed, minimum=0)
        _check_int("bucket_batches", bucket_batches, minimum=1)
        num_replicas, rank = _distributed_defaults(num_replicas, rank)
        _check_int("num_replicas", num_replicas, minimum=1)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank={rank!r} is not accepted; expected an integer in [0, num_replicas={num_replicas})."
            )
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.int64)
        if self.lengths.dim() != 1 or (self.lengths < 0).any():
            raise ValueError(
                "lengths=... is not accepted; expected a flat sequence of non-negative integers."
            )
        if len(self.lengths) < num_replicas:
            raise ValueError(
                f"lengths=... holds {len(self.lengths)} examples, fewer than num_replicas={num_replicas}; "
                "HINT: every rank needs at least one example."
            )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    @property
    def sampler(self) -> LengthBucketBatchSampler:
        """This sampler: Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` at every epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` yields.

        Example::

            >>> sampler = LengthBucketBatchSampler([3, 1, 2, 4], batch_size=2, seed=1)
            >>> sampler.set_epoch(1)
            >>> sorted(i for batch in sampler for i in batch)
            [0, 1, 2, 3]
        """
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per rank and epoch."""
        per_step = self.batch_size * self.num_replicas
        n = len(self.lengths)
        return n // per_step if self.drop_last else -(-n // per_step)

    def _order(self, generator: torch.Generator) -> Tensor:
        """All indices, grouped by length into buckets (shuffled) or sorted (``shuffle=False``)."""
        if not self.shuffle:
            return torch.sort(self.lengths, stable=True).indices
        order = torch.randperm(len(self.lengths), generator=generator)
        bucket = self.batch_size * self.num_replicas * self.bucket_batches
        chunks = [order[i : i + bucket] for i in range(0, len(order), bucket)]
        # stable sort: equal lengths keep their random order
        return torch.cat([chunk[torch.sort(self.lengths[chunk], stable=True).indices] for chunk in chunks])

    def _global_batches(self) -> list[Tensor]:
        """Every rank's batches, in the epoch's order: rank ``r`` takes batches ``r, r + R, ...``."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = self._order(generator)
        n_batches = len(self) * self.num_replicas
        if self.drop_last:
            order = order[: n_batches * self.batch_size]
        # n_batches near-equal, contiguous slices of the length-grouped order
        batches = list(torch.tensor_split(order, n_batches)) if n_batches else []
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches()[self.rank :: self.num_replicas]:
            yield batch.tolist()


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """The share of padding tokens when each batch is padded to its longest example.

    Example::

        >>> padding_fraction([[0, 1]], [2, 4])  # 2 of 8 positions are padding
        0.25
    """
    padded = real = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        padded += max(sizes, default=0) * len(sizes)
        real += sum(sizes)
    return 1.0 - real / padded if padded else 0.0


def round_up(length: int, multiple: int) -> int:
    """``length`` rounded up to a multiple of ``multiple``.

    Example::

        >>> round_up(9, 8), round_up(16, 8)
        (16, 16)
    """
    return -(-length // multiple) * multiple


def pad_collate(
    examples: Sequence[Mapping[str, Any]], pad_token_id: int = 0, pad_to_multiple_of: int = 1
) -> dict[str, Tensor]:
    """Stack tokenized examples into tensors, padding sequences to the longest in the batch (on the right).

    Sequence values (lists or 1-D tensors) are padded with :data:`PAD_VALUES` (``input_ids`` with
    ``pad_token_id``); scalars (e.g. ``labels``) are stacked. Every example must have the same keys.

    Args:
        examples: Dicts such as ``{"input_ids": [...], "attention_mask": [...], "labels": 1}``.
        pad_token_id: The tokenizer's padding id.
        pad_to_multiple_of: ``T`` is rounded up to a multiple of this (fewer distinct shapes, for
            kernels that are built or tuned per shape).

    Returns:
        A dict of ``(B, T)`` tensors for sequences and ``(B,)`` tensors for scalars.

    Raises:
        ValueError: If ``examples`` is empty or the examples' keys differ.

    Example::

        >>> batch = pad_collate([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}])
        >>> batch["input_ids"].tolist(), batch["labels"].tolist()
        ([[5, 6, 7], [8, 0, 0]], [1, 0])
        >>> pad_collate([{"input_ids": [5, 6, 7]}], pad_to_multiple_of=4)["input_ids"].tolist()
        [[5, 6, 7, 0]]
    """
    if not examples:
        raise ValueError("examples=[] is not accepted; expected at least one example to collate.")
    check_int("pad_to_multiple_of", pad_to_multiple_of, 1)
    keys = list(examples[0].keys())
    for example in examples:
        if list(example.keys()) != keys:
            raise ValueError(
                f"examples have different keys ({keys} and {list(example.keys())}); "
                "HINT: tokenize every example the same way."
            )
    batch: dict[str, Tensor] = {}
    for key in keys:
        values = [torch.as_tensor(example[key]) for example in examples]
        if values[0].dim() == 0:
            batch[key] = torch.stack(values)  # (B,)
            continue
        pad = pad_token_id if key == "input_ids" else PAD_VALUES.get(key, 0)
        longest = round_up(max(len(v) for v in values), pad_to_multiple_of)
        out = torch.full((len(values), longest), pad, dtype=values[0].dtype)  # (B, T)
        for row, value in enumerate(values):
            out[row, : len(value)] = value
        batch[key] = out
    return batch

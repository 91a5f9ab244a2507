"""LengthBucketBatchSampler and pad_collate: DDP shards, equal batch counts, determinism, less padding."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from lit_opt.inference import LengthBucketBatchSampler, pad_collate, padding_fraction


def skewed_lengths(n: int = 1000, seed: int = 0) -> list[int]:
    """Mostly short examples with a long tail (as review snippets): lognormal, median ~30."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.exp(torch.randn(n, generator=generator) * 0.6 + 3.4).round().clamp(2, 256)
    return [int(v) for v in lengths]


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
@pytest.mark.parametrize("n", [7, 100, 101])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards_are_disjoint_cover_and_have_equal_batch_counts(
    num_replicas: int, n: int, drop_last: bool
) -> None:
    lengths = skewed_lengths(n)
    batch_size = 4
    shards = [
        list(
            LengthBucketBatchSampler(
                lengths, batch_size, seed=3, drop_last=drop_last, num_replicas=num_replicas, rank=rank
            )
        )
        for rank in range(num_replicas)
    ]
    counts = {len(batches) for batches in shards}
    assert len(counts) == 1  # same number of batches on every rank
    expected = LengthBucketBatchSampler(lengths, batch_size, drop_last=drop_last, num_replicas=num_replicas)
    assert counts == {len(expected)}
    seen = [i for batches in shards for batch in batches for i in batch]
    assert len(seen) == len(set(seen))  # disjoint
    assert all(0 < len(batch) <= batch_size for batches in shards for batch in batches)
    if drop_last:
        assert all(len(batch) == batch_size for batches in shards for batch in batches)
        assert len(seen) == (n // (batch_size * num_replicas)) * batch_size * num_replicas
    else:
        assert sorted(seen) == list(range(n))  # covers the dataset


def test_order_is_deterministic_per_seed_and_epoch() -> None:
    lengths = skewed_lengths(200)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = LengthBucketBatchSampler(lengths, 8, seed=seed, bucket_batches=4)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)


def test_lightning_sets_the_epoch_through_batch_sampler_sampler() -> None:
    sampler = LengthBucketBatchSampler(skewed_lengths(50), 4)
    loader = DataLoader(list(range(50)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 3)  # what a Trainer does at every epoch start
    assert sampler.epoch == 3


def test_bucketing_pads_far_less_than_random_batches() -> None:
    lengths = skewed_lengths(2000)
    batch_size = 32
    bucketed = list(LengthBucketBatchSampler(lengths, batch_size, seed=0))
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bucketed_fraction = padding_fraction(bucketed, lengths)
    random_fraction = padding_fraction(random_batches, lengths)
    assert random_fraction > 0.4
    assert bucketed_fraction < 0.3 * random_fraction


def test_shuffle_false_sorts_by_length() -> None:
    lengths = skewed_lengths(50)
    flat = [i for batch in LengthBucketBatchSampler(lengths, 4, shuffle=False) for i in batch]
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_batches_are_shuffled_across_buckets() -> None:
    lengths = skewed_lengths(400)
    batches = list(LengthBucketBatchSampler(lengths, 4, bucket_batches=2))
    maxima = [max(lengths[i] for i in batch) for batch in batches]
    assert maxima != sorted(maxima)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size=0 is not accepted; expected an integer >= 1"),
        ({"batch_size": 2, "bucket_batches": 0}, r"bucket_batches=0 is not accepted"),
        ({"batch_size": 2, "seed": -1}, r"seed=-1 is not accepted"),
        (
            {"batch_size": 2, "num_replicas": 2, "rank": 2},
            r"rank=2 is not accepted; expected an integer in \[0, ",
        ),
        ({"batch_size": 2, "num_replicas": 9}, r"holds 3 examples, fewer than num_replicas=9"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LengthBucketBatchSampler([1, 2, 3], **kwargs)


def test_bad_lengths() -> None:
    with pytest.raises(ValueError, match=r"lengths=\.\.\. is not accepted; expected a flat sequence"):
        LengthBucketBatchSampler([3, -1], 2)


def test_pad_collate_pads_to_the_longest_in_the_batch() -> None:
    examples = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [8], "attention_mask": [1], "labels": 0},
    ]
    batch = pad_collate(examples, pad_token_id=9)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_pad_collate_rounds_the_length_up_to_a_multiple() -> None:
    batch = pad_collate(
        [{"input_ids": [5] * 9, "attention_mask": [1] * 9}], pad_token_id=9, pad_to_multiple_of=8
    )
    assert batch["input_ids"].tolist() == [[5] * 9 + [9] * 7]
    assert batch["attention_mask"].tolist() == [[1] * 9 + [0] * 7]
    assert pad_collate([{"input_ids": [5] * 8}], pad_to_multiple_of=8)["input_ids"].shape == (1, 8)


def test_pad_collate_errors() -> None:
    with pytest.raises(ValueError, match=r"examples=\[\] is not accepted"):
        pad_collate([])
    with pytest.raises(ValueError, match=r"examples have different keys"):
        pad_collate([{"input_ids": [1]}, {"input_ids": [1], "labels": 0}])
    with pytest.raises(ValueError, match=r"pad_to_multiple_of=0 is not accepted; expected an integer >= 1"):
        pad_collate([{"input_ids": [1]}], pad_to_multiple_of=0)

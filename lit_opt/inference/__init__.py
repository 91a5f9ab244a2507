"""Batched inference: length bucketing, a dynamic batcher for serving, batch-size selection, measurement."""

from lit_opt.inference.batch_size import BatchSizeChoice, BatchSizeTrial, find_batch_size
from lit_opt.inference.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from lit_opt.inference.bucketing import LengthBucketBatchSampler, pad_collate, padding_fraction
from lit_opt.inference.measure import PeakMemory, Timing, time_forward

__all__ = [
    "BatchSizeChoice",
    "BatchSizeTrial",
    "BatcherClosedError",
    "DynamicBatcher",
    "LengthBucketBatchSampler",
    "PeakMemory",
    "QueueFullError",
    "Timing",
    "find_batch_size",
    "pad_collate",
    "padding_fraction",
    "time_forward",
]

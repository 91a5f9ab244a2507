"""Measurement helpers: percentiles, timings, peak memory, synthetic inputs, sizes."""

from __future__ import annotations

import mmap
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_opt.inference import measure
from lit_opt.inference.measure import (
    PeakMemory,
    Timing,
    dir_bytes,
    environment,
    file_bytes,
    input_device,
    percentile,
    synced_forward,
    synthetic_batch,
    time_calls,
    time_forward,
    time_round_robin,
)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = torch.rand(37, generator=torch.Generator().manual_seed(1)).tolist()
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing() -> None:
    with pytest.raises(ValueError, match="empty list"):
        percentile([], 50)


def test_timing_statistics() -> None:
    timing = Timing([4.0, 1.0, 3.0, 2.0])
    assert (timing.median_ms, timing.min_ms) == (2.5, 1.0)
    assert timing.p90_ms == pytest.approx(3.7)


def test_time_calls_counts_repeats_after_warmup() -> None:
    calls: list[int] = []
    timing = time_calls(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(timing.times_ms) == 5
    with pytest.raises(ValueError, match=r"repeats=0 is not accepted"):
        time_calls(lambda: None, repeats=0)


def test_time_forward_takes_keyword_inputs() -> None:
    class KW(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids * attention_mask

    assert len(time_forward(KW(), synthetic_batch(2, 4, 10), warmup=0, repeats=2).times_ms) == 2


def test_peak_memory_sees_a_large_allocation() -> None:
    # a fresh anonymous mapping, touched page by page: new resident memory whatever the allocator
    # kept from earlier tests (a torch tensor here can reuse pages that are already resident)
    with PeakMemory() as peak:
        block = mmap.mmap(-1, 64 << 20)  # 64 MiB
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        block.close()
    assert peak.peak_bytes > 64 << 20
    if peak.scope == "block":
        assert peak.delta_bytes >= 48 << 20


def test_synthetic_batch_is_seeded_and_avoids_padding_id() -> None:
    a, b = synthetic_batch(3, 7, vocab_size=50, seed=4), synthetic_batch(3, 7, vocab_size=50, seed=4)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].min() >= 1 and a["input_ids"].max() < 50
    assert a["attention_mask"].shape == (3, 7)


def test_sizes_and_environment(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"x" * 5)
    assert file_bytes(tmp_path / "a") == 10 and dir_bytes(tmp_path) == 15
    env = environment(threads=2)
    assert env["threads"] == 2 and "loadavg" in env


def test_round_robin_rotates_which_candidate_goes_first() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    timings = time_round_robin(calls, warmup=1, repeats=3)
    assert order[:6] == list("aabbcc")  # per candidate: the warm-up, then one discarded timed call
    assert order[6:] == list("abcbcacab")
    assert {name: len(t.times_ms) for name, t in timings.items()} == {"a": 3, "b": 3, "c": 3}


def test_round_robin_pauses_before_every_timed_call() -> None:
    spans: list[tuple[float, float]] = []

    def record() -> None:
        start = time.perf_counter()
        spans.append((start, time.perf_counter()))

    time_round_robin({"a": record, "b": record}, warmup=0, repeats=3, settle_ms=20)
    timed = spans[2:]  # after each candidate's discarded first call
    gaps = [later[0] - earlier[1] for earlier, later in pairwise(timed)]
    assert len(gaps) == 5 and min(gaps) >= 0.020


def test_round_robin_refuses_a_negative_pause() -> None:
    with pytest.raises(ValueError, match=r"settle_ms=-1 is not accepted; expected a pause >= 0"):
        time_round_robin({"a": lambda: None}, warmup=0, repeats=1, settle_ms=-1)


def test_input_device_finds_the_first_tensor() -> None:
    meta = torch.ones(2, device="meta")
    assert input_device({"mask": None, "input_ids": meta}) == torch.device("meta")
    assert input_device((3, meta)) == torch.device("meta")
    assert input_device(meta) == torch.device("meta")
    assert input_device({"n": 1}) == torch.device("cpu")  # no tensor: the host


def test_synced_forward_waits_for_the_inputs_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[torch.device] = []
    monkeypatch.setattr(measure, "input_device", lambda inputs: torch.device("cuda", 1))
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    assert synced_forward(torch.nn.Identity(), torch.ones(2)).tolist() == [1.0, 1.0]
    assert synced == [torch.device("cuda", 1)]
    monkeypatch.setattr(measure, "input_device", lambda inputs: torch.device("cpu"))
    synced_forward(torch.nn.Identity(), torch.ones(2))
    assert synced == [torch.device("cuda", 1)]  # nothing to wait for on the CPU

"""find_batch_size: best throughput, largest within a latency budget, stops on errors and memory."""

from __future__ import annotations

import time

import pytest
import torch
from torch import Tensor, nn

from lit_opt.inference import batch_size as batch_size_module
from lit_opt.inference import find_batch_size
from tests.helpers.models import tiny_bert


class Sleepy(nn.Module):
    """Takes ``ms_per_example`` per example; raises RuntimeError (as an OOM would) above ``fails_above``."""

    def __init__(
        self, ms_per_example: float = 0.0, fails_above: int | None = None, bytes_per_example: int = 0
    ):
        super().__init__()
        self.ms_per_example, self.fails_above, self.bytes_per_example = (
            ms_per_example,
            fails_above,
            bytes_per_example,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.fails_above is not None and len(x) > self.fails_above:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        if self.bytes_per_example:
            torch.ones(len(x) * self.bytes_per_example // 4)
        time.sleep(self.ms_per_example * len(x) / 1e3)
        return x


def rows(batch_size: int) -> Tensor:
    return torch.zeros(batch_size, 1)


def test_largest_within_the_latency_budget() -> None:
    choice = find_batch_size(Sleepy(ms_per_example=2.0), make_inputs=rows, latency_budget_ms=11.0, repeats=3)
    assert choice.batch_size == 4  # 4 * 2 ms fits, 8 * 2 ms does not
    assert [t.batch_size for t in choice.trials] == [1, 2, 4, 8]
    assert "took" in choice.stopped


def test_best_throughput_on_a_real_model() -> None:
    choice = find_batch_size(tiny_bert(), seq_len=16, max_batch_size=16, repeats=3)
    assert choice.batch_size in {t.batch_size for t in choice.trials}
    best = max(choice.trials, key=lambda t: t.throughput)
    assert choice.batch_size == best.batch_size


def test_stops_growing_on_runtime_error() -> None:
    choice = find_batch_size(
        Sleepy(fails_above=8), make_inputs=rows, max_batch_size=64, repeats=2, patience=9
    )
    assert [t.batch_size for t in choice.trials] == [1, 2, 4, 8]
    assert choice.stopped.startswith("batch size 16 failed: RuntimeError")


def test_stops_before_the_predicted_peak_exceeds_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_size_module, "available_memory", lambda device: 64 << 20)  # 64 MiB left
    model = Sleepy(bytes_per_example=16 << 20)  # 16 MiB per example
    choice = find_batch_size(model, make_inputs=rows, max_batch_size=64, repeats=1, warmup=0, patience=9)
    assert max(t.batch_size for t in choice.trials) <= 4
    assert "would exceed 80% of the available memory" in choice.stopped


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"max_batch_size=0 is not accepted; expected an integer >= 1"):
        find_batch_size(Sleepy(), make_inputs=rows, max_batch_size=0)
    with pytest.raises(ValueError, match=r"latency_budget_ms=0 is not accepted"):
        find_batch_size(Sleepy(), make_inputs=rows, latency_budget_ms=0)
    with pytest.raises(ValueError, match=r"has no config.vocab_size .* HINT: pass make_inputs"):
        find_batch_size(Sleepy())
    with pytest.raises(ValueError, match=r"latency_budget_ms=1 is not met even by batch size 1"):
        find_batch_size(Sleepy(ms_per_example=5.0), make_inputs=rows, latency_budget_ms=1, repeats=1)
    with pytest.raises(RuntimeError, match="can't allocate"):
        find_batch_size(Sleepy(fails_above=0), make_inputs=rows)

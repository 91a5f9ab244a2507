"""Measuring a model honestly: latency (median, p90), throughput, file size, peak memory, the machine.

Timings are wall-clock over ``repeats`` calls after ``warmup`` untimed ones, under
``torch.inference_mode``. Each :class:`Timing` also records the process's CPU seconds per wall second
over the timed calls: about the thread count on an idle machine, lower when other processes took the
CPU (the latencies are then inflated). Peak memory is the process's peak resident set size during one
extra, untimed call (Linux lets the peak be reset, so it is the peak of that call; elsewhere it is the
peak since the process started), or the CUDA allocator's peak on a GPU. ``tracemalloc`` is not used:
it does not see tensor memory, which torch allocates outside Python's allocator, and it slows the
timed code.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

Key = TypeVar("Key", bound=Hashable)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` with linear interpolation (NumPy's default method).

    Example::

        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not values:
        raise ValueError("percentile() of an empty list of values.")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timing:
    """Latencies of repeated calls, in milliseconds, and the CPU share the process got while timing.

    Example::

        >>> t = Timing(times_ms=[2.0, 1.0, 3.0], cpu_per_wall=1.9)
        >>> t.median_ms, t.min_ms
        (2.0, 1.0)
    """

    times_ms: list[float]
    cpu_per_wall: float = float("nan")

    @property
    def median_ms(self) -> float:
        """The median latency."""
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        """The 90th percentile latency."""
        return percentile(self.times_ms, 90)

    @property
    def min_ms(self) -> float:
        """The fastest call."""
        return min(self.times_ms)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping (Hugging Face style keyword inputs), else ``model(inputs)``.

    Example::

        >>> call_model(torch.nn.Identity(), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def time_calls(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10) -> Timing:
    """Latency of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones.

    Example::

        >>> timing = time_calls(lambda: sum(range(1000)), warmup=1, repeats=5)
        >>> len(timing.times_ms)
        5
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r} is not accepted; expected an integer >= 1.")
    for _ in range(warmup):
        fn()
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    cpu_per_wall = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    return Timing(times, cpu_per_wall)


def time_round_robin(
    calls: Mapping[Key, Callable[[], Any]], warmup: int, repeats: int, settle_ms: float = 0.0
) -> dict[Key, Timing]:
    """Latency of each call, timed in rounds (one call of each per round) so that a change in the load of
    the shared machine hits every candidate alike; each round starts one candidate later than the last,
    so that no candidate always runs first in a round.

    ``settle_ms`` pauses before every timed call. Runtimes keep their worker threads busy-waiting for a
    while after a call returns (ONNX Runtime's thread pool for tens of milliseconds, OpenMP briefly), and
    on a small machine those threads take the cores from the next candidate when it belongs to another
    runtime. The pause lets them go to sleep, so each candidate is timed as it runs on its own.

    Example::

        >>> timings = time_round_robin({"a": lambda: sum(range(100)), "b": lambda: None}, warmup=1, repeats=3)
        >>> sorted(timings), len(timings["a"].times_ms)
        (['a', 'b'], 3)
    """
    if settle_ms < 0:
        raise ValueError(f"settle_ms={settle_ms!r} is not accepted; expected a pause >= 0 milliseconds.")
    for fn in calls.values():
        time_calls(fn, warmup=warmup, repeats=1)
    times: dict[Key, list[float]] = {name: [] for name in calls}
    cpu = dict.fromkeys(calls, 0.0)
    names = list(calls)
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle_ms / 1e3)
            c0 = time.process_time()
            times[name] += time_calls(calls[name], warmup=0, repeats=1).times_ms
            cpu[name] += time.process_time() - c0
    return {name: Timing(t, cpu[name] / (sum(t) / 1e3)) for name, t in times.items()}


def input_device(inputs: Any) -> torch.device:
    """The device of the first tensor in ``inputs`` (a tensor, a mapping or a sequence of them); CPU if none.

    Example::

        >>> input_device({"input_ids": torch.ones(1, 3, dtype=torch.long)})
        device(type='cpu')
    """
    if isinstance(inputs, Mapping):
        inputs = list(inputs.values())
    for value in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def synced_forward(model: nn.Module, inputs: Any) -> Any:
    """:func:`call_model`, returning only once the inputs' GPU has finished the work (so its time counts).

    Example::

        >>> synced_forward(torch.nn.Identity(), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    output = call_model(model, inputs)
    device = input_device(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return output


def time_forward(model: nn.Module, inputs: Any, warmup: int = 2, repeats: int = 10) -> Timing:
    """Latency of ``model``'s forward on ``inputs`` (see :func:`call_model`) under ``inference_mode``; on a GPU
    each call ends when the device has finished (:func:`synced_forward`).

    Example::

        >>> timing = time_forward(torch.nn.Linear(4, 2), torch.ones(8, 4), warmup=1, repeats=3)
        >>> timing.median_ms > 0
        True
    """
    with torch.inference_mode():
        return time_calls(lambda: synced_forward(model, inputs), warmup, repeats)


def _read_status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) on Linux; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class PeakMemory:
    """The peak memory of the code run inside ``with PeakMemory(device) as peak:``.

    On CPU: ``peak_bytes`` is the process's peak resident set size, ``delta_bytes`` its rise over the
    resident size at entry; ``scope`` is ``"block"`` where the peak could be reset at entry (Linux),
    else ``"process"`` (the peak since the process started). On CUDA: the allocator's peak and its
    rise over the memory allocated at entry (``scope="block"``).

    Example::

        >>> with PeakMemory() as peak:
        ...     _ = torch.ones(1 << 20)
        >>> peak.peak_bytes > 0
        True
    """

    device: str | torch.device = "cpu"
    peak_bytes: int = 0
    delta_bytes: int = 0
    scope: str = field(default="block")
    _start: int = 0

    def __enter__(self) -> PeakMemory:
        device = torch.device(self.device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self._start = torch.cuda.memory_allocated(device)
        else:
            self.scope = "block" if _reset_peak_rss() else "process"
            self._start = 1024 * (_read_status_kib("VmRSS") or 0)
        return self

    def __exit__(self, *exc: object) -> None:
        device = torch.device(self.device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.peak_bytes = torch.cuda.max_memory_allocated(device)
        else:
            hwm = _read_status_kib("VmHWM")
            # ru_maxrss is in KiB on Linux, bytes on macOS
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_bytes = (
                1024 * hwm if hwm is not None else maxrss * (1 if sys.platform == "darwin" else 1024)
            )
        self.delta_bytes = max(self.peak_bytes - self._start, 0)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` (``MemAvailable`` on Linux, free CUDA memory), or None.

    Example::

        >>> isinstance(available_memory(), (int, type(None)))
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return 1024 * int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a file in bytes.

    Example::

        >>> file_bytes(__file__) > 0
        True
    """
    return Path(path).stat().st_size


def dir_bytes(path: str | os.PathLike) -> int:
    """Total size of the files under a directory, in bytes.

    Example::

        >>> dir_bytes(Path(__file__).parent) > 0
        True
    """
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, Tensor]:
    """Random token ids (no tokenizer needed) with a full attention mask, fixed by ``seed``.

    Ids are drawn from ``[1, vocab_size)``; 0 is left out, as it is the padding id of most vocabularies.

    Example::

        >>> batch = synthetic_batch(2, 5, vocab_size=100)
        >>> tuple(batch["input_ids"].shape), int(batch["attention_mask"].sum())
        ((2, 5), 10)
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, max(vocab_size, 2), (batch_size, seq_len), generator=generator)  # (B, T)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages of the machine, or None where the OS has none.

    Example::

        >>> value = loadavg()
        >>> value is None or len(value) == 3
        True
    """
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(threads: int | None = None) -> dict[str, Any]:
    """What a measurement ran on: versions, CPU model and flags, threads, load average.

    Example::

        >>> "torch" in environment()
        True
    """
    import lightning
    import transformers

    import lit_opt

    flags: set[str] = set()
    model_name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "loadavg": loadavg(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "lit_opt": lit_opt.__version__,
        "python": sys.version.split()[0],
        "threads": threads if threads is not None else torch.get_num_threads(),
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": model_name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "quantized_engine": torch.backends.quantized.engine,
        "cpu_flags": {
            "amx": sorted(f for f in flags if f.startswith("amx")),
            "avx512": sorted(f for f in flags if f.startswith("avx512")),
        },
    }

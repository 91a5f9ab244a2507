"""Run a function in several CPU processes joined by a gloo process group, and collect results.

Two ways to test DDP on CPU:

1. Tensor-level code (an all-reduce of statistics, masks that must agree across ranks):
   :func:`run_ddp` starts ``world_size`` processes, initializes ``torch.distributed`` with gloo,
   calls ``fn(rank, world_size, *args)`` in each and returns the per-rank results::

       def _sum(rank, world_size):
           t = torch.tensor([rank + 1.0])
           dist.all_reduce(t)
           return t

       assert [t.item() for t in run_ddp(_sum)] == [3.0, 3.0]

   ``fn``, its arguments and its result must pickle, so ``fn`` is a module-level function of an
   importable module (a test module works: ``tests`` is a package).

2. A whole fit: ``tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2)`` with a
   ``BoringClassifier``/``HFClassifier`` from :mod:`tests.helpers.models` (they rebuild from
   primitive hyperparameters and pickle). With ``ddp_spawn`` the launching process's model holds
   the trained state after ``fit``; to compare state across ranks, have a callback write
   ``trainer.global_rank``-named files under ``tmp_path`` (e.g. ``torch.save`` of its buffers in
   ``on_train_end``) and compare them in the test. Mark such tests ``@pytest.mark.ddp`` (and
   ``@pytest.mark.slow`` when they take more than ~20 s).
"""

from __future__ import annotations

import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

__all__ = ["find_free_port", "run_ddp"]


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    fn: Callable[..., Any],
    world_size: int,
    port: int,
    result_dir: str,
    args: tuple[Any, ...],
    timeout_s: float,
) -> None:
    # Keep each process to one thread: two ranks share the CI machine's two cores.
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        result = fn(rank, world_size, *args)
    except BaseException:
        (Path(result_dir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(result_dir) / f"rank{rank}.pt")


def run_ddp(fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout_s: float = 120.0) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` spawned gloo processes.

    Args:
        fn: A picklable (module-level) function; it runs after ``init_process_group("gloo")``.
        *args: Picklable extra arguments passed to ``fn`` on every rank.
        world_size: Number of processes.
        timeout_s: Timeout of the process group's collectives.

    Returns:
        ``fn``'s return value on each rank, indexed by rank.

    Raises:
        RuntimeError: If any process failed; the message carries the traceback of every rank
            whose ``fn`` raised.
    """
    port = find_free_port()
    with tempfile.TemporaryDirectory(prefix="lit_opt_ddp_") as result_dir:
        try:
            mp.spawn(
                _worker,
                args=(fn, world_size, port, result_dir, args, timeout_s),
                nprocs=world_size,
                join=True,
            )
        except ProcessException as err:
            # The first process to fail may only be a victim (a collective whose peer died): report
            # every rank's own traceback.
            reports = sorted(Path(result_dir).glob("rank*.err"))
            details = "\n".join(f"--- {p.stem} ---\n{p.read_text()}" for p in reports) or str(err)
            raise RuntimeError(f"run_ddp({getattr(fn, '__name__', fn)!r}) failed:\n{details}") from err
        # Our own files from the processes above; results may be arbitrary picklable objects.
        return [
            torch.load(Path(result_dir) / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)
        ]

"""``TeacherCache``: the teacher's logits computed once and kept on disk, keyed by example index.

A distillation run with a frozen teacher recomputes the same teacher outputs every epoch. The cache
keeps them per example (every logit, or the ``top_k`` largest as float16 values plus int32 class
indices; for a causal LM, per token of the example) in safetensors shards, one per rank
(``teacher-logits-rank{r}.safetensors``: under DDP each rank writes only the examples it computed, the
one exception to rule 4 of docs/architecture.md, which has shared files written by rank 0 alone), and
reads every shard back, so later epochs and later runs skip the teacher's forward pass.

Each shard's safetensors header (a small JSON) holds the cache's fingerprint: the SHA-256 of the
teacher's weights (:func:`state_fingerprint`), the data's fingerprint (e.g.
:attr:`lit_opt.data.TextClassificationDataModule.fingerprint`: file, tokenizer, ``max_length``,
columns) and ``top_k``. A shard written for another teacher, data or ``top_k`` is never used: opening
the cache raises ``ValueError`` (nothing is deleted; remove the directory or choose another).

Size, in memory and on disk: ``examples x positions x top_k x 6`` bytes (float16 value + int32
index), or ``examples x positions x vocabulary x 4`` with every logit kept (``positions`` is 1 for a
classifier). A causal LM's cache keeps every token: 10,000 blocks of 256 tokens at ``top_k=32``
is 492 MB; the full 49,152-token vocabulary would be 503 GB, so keep ``top_k`` small for LMs.
Every example of a causal-LM cache has the same number of positions (fixed-length blocks).

Example::

    cache = TeacherCache("outputs/teacher_cache", {"teacher": state_fingerprint(teacher), "data": dm.fingerprint})
    cache.load()
    # get() is None unless every example of the batch is cached; put() returns what get() will
    values, indices = cache.get(batch["idx"]) or cache.put(batch["idx"], teacher(**inputs).logits)
    # indices is None when every logit is kept (values are then the logits)
    cache.save()                              # this rank's shard, at the end of an epoch
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

FORMAT = "lit_opt.teacher_cache"
VERSION = "1"
SHARD = "teacher-logits-rank{rank}.safetensors"


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 over every tensor of ``module.state_dict()`` (names, dtypes, shapes and bytes).

    Hashing all bytes is cheap next to one epoch (about 0.1 s for all-MiniLM-L6-v2's 22M weights).

    Example::

        >>> state_fingerprint(nn.Linear(2, 2)) == state_fingerprint(nn.Linear(2, 2))  # doctest: +SKIP
        False
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class TeacherCache:
    """Teacher logits per example index, in memory and in per-rank safetensors shards under ``directory``.

    Args:
        directory: Where the shards are kept (created when the first shard is written).
        fingerprint: What the cached logits depend on, e.g. ``{"teacher": ..., "data": ...}`` (strings).
        top_k: Keep the ``top_k`` largest logits of each example (float16 values, int32 indices);
            ``0``, or ``top_k`` at least the number of classes, keeps every logit (float32).
        rank: This process's rank: the shard it writes.

    Raises:
        ValueError: ``top_k`` is not an integer >= 0, or (in :meth:`load`) a shard under ``directory``
            was written for another fingerprint or ``top_k``.
    """

    def __init__(
        self, directory: str | os.PathLike, fingerprint: Mapping[str, str], top_k: int = 0, rank: int = 0
    ):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0 keeps every logit).")
        self.directory = Path(directory).expanduser()
        self.fingerprint = json.dumps(dict(sorted(fingerprint.items())))
        self.top_k, self.rank = top_k, rank
        self._values: Tensor | None = None  # (N, *S, W) float32 (all logits) or float16 (top-k values)
        self._indices: Tensor | None = None  # (N, *S, W) int32 class indices, top-k only
        self._present = torch.zeros(0, dtype=torch.bool)  # (N,) rows held
        self._own = torch.zeros(0, dtype=torch.bool)  # (N,) rows this rank computed (its shard)
        self._dirty = False

    @property
    def path(self) -> Path:
        """This rank's shard."""
        return self.directory / SHARD.format(rank=self.rank)

    def __len__(self) -> int:
        return int(self._present.sum())

    def _grow(self, size: int, shape: tuple[int, ...], sparse: bool) -> None:
        """Make room for example indices below ``size``, each holding ``shape`` (``(*S, W)``) stored values."""
        if self._values is None:
            self._values = torch.zeros(0, *shape, dtype=torch.float16 if sparse else torch.float32)
            self._indices = torch.zeros(0, *shape, dtype=torch.int32) if sparse else None
        if tuple(self._values.shape[1:]) != shape:
            raise ValueError(
                f"the teacher cache holds {tuple(self._values.shape[1:])} values per example, but got {shape}. "
                "HINT: every example needs the same number of positions: pack a causal LM's text into "
                "fixed-length blocks (or pad to max_length), or set teacher_cache=None."
            )
        if size <= len(self._present):
            return
        extra = max(size, 2 * len(self._present)) - len(self._present)  # doubling: appends stay linear
        self._values = torch.cat([self._values, self._values.new_zeros(extra, *shape)])
        if self._indices is not None:
            self._indices = torch.cat([self._indices, self._indices.new_zeros(extra, *shape)])
        self._present = torch.cat([self._present, torch.zeros(extra, dtype=torch.bool)])
        self._own = torch.cat([self._own, torch.zeros(extra, dtype=torch.bool)])

    def _store(self, index: Tensor, values: Tensor, indices: Tensor | None, own: bool) -> None:
        self._grow(int(index.max()) + 1, tuple(values.shape[1:]), indices is not None)
        assert self._values is not None  # set by _grow
        self._values[index] = values.to(self._values.dtype)
        if self._indices is not None and indices is not None:
            self._indices[index] = indices.to(torch.int32)
        self._present[index] = True
        if own:
            self._own[index] = True

    def put(self, index: Tensor, logits: Tensor) -> tuple[Tensor, Tensor | None]:
        """Keep the teacher's ``logits`` ``(B, C)`` or ``(B, L, C)`` of the examples ``index`` ``(B,)``;
        returns them as :meth:`get` will."""
        if logits.dim() < 2 or index.shape != logits.shape[:1]:
            raise ValueError(
                f"the teacher cache keeps the logits of each example, but got logits of shape "
                f"{tuple(logits.shape)} for example indices of shape {tuple(index.shape)}. HINT: logits are "
                "(batch, classes) or (batch, seq, vocab), one example index per batch row."
            )
        rows = index.detach().cpu().long()
        if 0 < self.top_k < logits.shape[-1]:  # top-k on the logits' device: only (B, ..., k) is copied
            values, indices = logits.detach().topk(self.top_k, dim=-1)  # largest first
            values, indices = values.float().cpu(), indices.cpu()
            self._store(rows, values, indices, own=True)
        else:
            self._store(rows, logits.detach().float().cpu(), None, own=True)
        self._dirty = True
        return self._rows(rows, index.device)

    def get(self, index: Tensor) -> tuple[Tensor, Tensor | None] | None:
        """``(values, indices)`` of the examples ``index``, or None unless every one of them is cached.

        ``values`` is float32 ``(B, *S, W)`` on ``index``'s device; ``indices`` ``(B, *S, k)`` int64, or
        None when every logit is kept (then ``values`` are the logits).
        """
        rows = index.detach().cpu().long()
        if (
            self._values is None
            or int(rows.max()) >= len(self._present)
            or not bool(self._present[rows].all())
        ):
            return None
        return self._rows(rows, index.device)

    def _rows(self, rows: Tensor, device: torch.device) -> tuple[Tensor, Tensor | None]:
        assert self._values is not None  # internal: rows are stored before they are read
        values = self._values[rows].to(device=device, dtype=torch.float32)  # (B, *S, W)
        indices = None if self._indices is None else self._indices[rows].to(device=device, dtype=torch.long)
        return values, indices

    def _metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "top_k": str(self.top_k),
        }

    def load(self) -> int:
        """Read every rank's shard under ``directory``; returns the number of cached examples.

        Raises:
            ValueError: A shard was written for another teacher, data or ``top_k`` (a stale cache).
        """
        from safetensors import safe_open

        expected = self._metadata()
        for shard in sorted(self.directory.glob(SHARD.format(rank="*"))):
            with safe_open(str(shard), framework="pt") as f:
                found = f.metadata() or {}
                if found != expected:
                    raise ValueError(
                        f"teacher_cache={str(self.directory)!r} holds {shard.name}, written for another teacher, "
                        f"data or top_k ({found.get('fingerprint')}, top_k={found.get('top_k')}), not "
                        f"{self.fingerprint}, top_k={self.top_k}. HINT: delete the directory or point teacher_cache "
                        "at a new one; a stale cache is never used."
                    )
                indices = f.get_tensor("indices") if "indices" in f.keys() else None  # noqa: SIM118
                self._store(f.get_tensor("index"), f.get_tensor("values"), indices, own=shard == self.path)
        log.info("teacher cache %s: %d examples cached", self.directory, len(self))
        return len(self)

    def save(self) -> Path | None:
        """Write this rank's shard (the examples it computed) if it changed; returns its path, else None."""
        if not self._dirty or self._values is None:
            return None
        from safetensors.torch import save_file

        rows = self._own.nonzero().squeeze(1)  # (n,)
        tensors = {"index": rows, "values": self._values[rows].contiguous()}
        if self._indices is not None:
            tensors["indices"] = self._indices[rows].contiguous()
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        save_file(tensors, str(partial), metadata=self._metadata())
        os.replace(partial, self.path)  # a shard is whole or absent
        self._dirty = False
        log.info("teacher cache: wrote %d examples to %s", len(rows), self.path)
        return self.path

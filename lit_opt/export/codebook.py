"""The ``codebook`` encoding of a shared weight: a float16 codebook plus bit-packed indices.

A weight trained with :class:`lit_opt.WeightSharingCallback` holds at most ``n_clusters``
distinct values. It is stored as ``<key>.codebook`` (``n_clusters`` float16 values) and ``<key>``
(one index per entry, packed at ``ceil(log2(n_clusters))`` bits, least significant bit first).
Loading gathers ``codebook[indices]`` back into a dense weight: exactly the trained one, since the
trained centroids are float16-representable. The manifest entry is untrusted input:
:func:`check_entry` rejects any inconsistency with a ``ValueError``.

Example:
    >>> import torch
    >>> book = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float16)
    >>> tensors, entry = encode("w", book, torch.tensor([[2, 0], [1, 2]], dtype=torch.uint8), torch.float32)
    >>> entry["bits"], tensors["w"].numel()
    (2, 1)
    >>> decode("w", entry, tensors).tolist()
    [[0.5, -1.0], [0.0, 0.5]]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_opt.functional.packing import pack_codes, packed_size, unpack_codes

ENCODING = "codebook"
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def index_bits(n_clusters: int) -> int:
    """Bits per index: ``ceil(log2(n_clusters))``, at least 1."""
    return max(1, math.ceil(math.log2(n_clusters)))


def encode(
    key: str, codebook: Tensor, indices: Tensor, dtype: torch.dtype
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and the manifest entry of weight ``key``: ``codebook`` (float16) and ``indices`` (uint8, full shape)."""
    bits = index_bits(codebook.numel())
    tensors = {
        key: pack_codes(indices, bits).cpu().contiguous(),
        f"{key}.codebook": codebook.to(torch.float16).cpu().contiguous(),
    }
    entry = {
        "encoding": ENCODING,
        "shape": list(indices.shape),
        "dtype": str(dtype).removeprefix("torch."),
        "bits": bits,
        "n_clusters": codebook.numel(),
        "codebook": f"{key}.codebook",
    }
    return tensors, entry


def decode(key: str, entry: dict[str, Any], tensors: dict[str, Tensor]) -> Tensor:
    """The dense weight ``codebook[indices]`` in the entry's dtype (checked by :func:`check_entry` first).

    Raises:
        ValueError: an index that points past the codebook.
    """
    shape = torch.Size(entry["shape"])
    indices = unpack_codes(tensors[key], entry["bits"], shape.numel()).long()
    codebook = tensors[entry["codebook"]]
    if indices.numel() and int(indices.max()) >= codebook.numel():
        raise ValueError(
            f"tensor {key!r} holds index {int(indices.max())}, past its {codebook.numel()}-entry codebook."
        )
    return codebook.to(getattr(torch, entry["dtype"]))[indices].reshape(shape)


def check_entry(key: str, entry: dict[str, Any], tensors: dict[str, Tensor], where: Path) -> None:
    """Raise ``ValueError`` unless the ``codebook`` entry of ``key`` agrees with its tensors."""
    shape, n_clusters, bits = entry.get("shape"), entry.get("n_clusters"), entry.get("bits")
    book = tensors.get(entry["codebook"]) if isinstance(entry.get("codebook"), str) else None
    valid = (
        isinstance(n_clusters, int)
        and not isinstance(n_clusters, bool)
        and 2 <= n_clusters <= 256
        and bits == index_bits(n_clusters)
        and entry.get("dtype") in FLOAT_DTYPES
        and book is not None
        and book.dtype == torch.float16
        and list(book.shape) == [n_clusters]
        and tensors[key].dtype == torch.uint8
        and tensors[key].numel() == packed_size(math.prod(shape), bits)  # type: ignore[arg-type]
    )
    if not valid:
        raise ValueError(
            f"{where}: the codebook entry of tensor {key!r} (n_clusters {n_clusters!r}, bits {bits!r}, "
            f"codebook {entry.get('codebook')!r}) is inconsistent with the weights."
        )

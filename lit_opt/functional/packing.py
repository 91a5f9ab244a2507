"""Bit packing of small unsigned codes (1 to 8 bits each) into a flat ``uint8`` stream.

Code ``i`` occupies bits ``i * bits`` to ``i * bits + bits - 1`` of the stream, least significant
bit first, so one packer serves pruning masks (1 bit), int4 codes (4 bits) and codebook indices
(``ceil(log2(n_clusters))`` bits). Work is done in chunks of whole bytes to bound memory.

Example:
    >>> import torch
    >>> packed = pack_codes(torch.tensor([5, 0, 7, 2], dtype=torch.uint8), bits=3)
    >>> packed.numel(), unpack_codes(packed, bits=3, numel=4).tolist()
    (2, [5, 0, 7, 2])
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK = 1 << 20  # codes per chunk: a multiple of 8, so every chunk starts on a byte boundary


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits={bits!r} must be an integer from 1 to 8.")


def packed_size(numel: int, bits: int) -> int:
    """Bytes :func:`pack_codes` returns for ``numel`` codes of ``bits`` bits."""
    return (numel * bits + 7) // 8


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Pack unsigned integer ``codes`` (each below ``2**bits``) into ``ceil(n * bits / 8)`` bytes.

    Raises:
        ValueError: ``bits`` outside 1..8.
    """
    _check_bits(bits)
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte
        per_byte = 8 // bits
        rows = torch.cat([flat, flat.new_zeros((-flat.numel()) % per_byte)]).reshape(-1, per_byte)
        out = rows[:, 0].clone()
        for slot in range(1, per_byte):
            out |= rows[:, slot] << (slot * bits)
        return out
    shifts = torch.arange(bits, dtype=torch.uint8, device=flat.device)
    chunks = []
    for start in range(0, flat.numel(), _CHUNK):
        stream = ((flat[start : start + _CHUNK].unsqueeze(1) >> shifts) & 1).reshape(-1)  # (n * bits,)
        stream = torch.cat([stream, stream.new_zeros((-stream.numel()) % 8)]).reshape(-1, 8)  # (bytes, 8)
        out = stream[:, 0].clone()
        for bit in range(1, 8):
            out |= stream[:, bit] << bit
        chunks.append(out)
    return torch.cat(chunks) if chunks else flat.new_zeros(0)


def unpack_codes(packed: Tensor, bits: int, numel: int) -> Tensor:
    """Inverse of :func:`pack_codes`: a flat ``uint8`` tensor of ``numel`` codes."""
    _check_bits(bits)
    if bits == 8:
        return packed.reshape(-1)[:numel].to(torch.uint8)
    if 8 % bits == 0:
        low = (1 << bits) - 1
        slots = [(packed >> (slot * bits)) & low for slot in range(8 // bits)]
        return torch.stack(slots, dim=1).reshape(-1)[:numel]
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    chunk_bytes = _CHUNK * bits // 8
    chunks = []
    for start in range(0, packed.numel(), chunk_bytes):
        stream = ((packed[start : start + chunk_bytes].unsqueeze(1) >> shifts) & 1).reshape(-1)
        stream = stream[: stream.numel() // bits * bits].reshape(-1, bits)  # (codes, bits)
        out = stream[:, 0].clone()
        for bit in range(1, bits):
            out |= stream[:, bit] << bit
        chunks.append(out)
    flat = torch.cat(chunks) if chunks else packed.new_zeros(0, dtype=torch.uint8)
    return flat[:numel]

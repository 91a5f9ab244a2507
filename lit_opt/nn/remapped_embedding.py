"""``RemappedEmbedding``: an embedding table that keeps only some rows of a vocabulary.

Vocabulary pruning (:func:`lit_opt.prune_vocabulary`) keeps the rows of the tokens a corpus uses.
The tokenizer is unchanged: a persistent ``remap`` buffer, one entry per original token id, says
which compact row each id reads (ids that were dropped read the UNK token's row). The module is
an ``nn.Embedding`` over the compact rows, so QAT, pruning and export treat its ``weight`` like any
embedding's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def check_remap(remap: Tensor, vocab_size: int, num_rows: int, where: str) -> None:
    """Raise ``ValueError`` unless ``remap`` is an integer vector of ``vocab_size`` rows in ``[0, num_rows)``.

    ``where`` names the tensor in the message (e.g. the artifact file and key): a remap read from
    an untrusted file must not index outside the table.
    """
    if remap.dtype not in (torch.int16, torch.int32, torch.int64):
        raise ValueError(f"{where}: the remap has dtype {remap.dtype}; expected an integer dtype.")
    if tuple(remap.shape) != (vocab_size,):
        raise ValueError(f"{where}: the remap has shape {list(remap.shape)}; expected [{vocab_size}].")
    if remap.numel() and (int(remap.min()) < 0 or int(remap.max()) >= num_rows):
        raise ValueError(
            f"{where}: the remap points at rows {int(remap.min())}..{int(remap.max())}, outside the "
            f"table's {num_rows} rows; the artifact or checkpoint is corrupt."
        )


class RemappedEmbedding(nn.Embedding):
    """An ``nn.Embedding`` of ``num_embeddings`` compact rows, indexed by ids of a ``vocab_size`` vocabulary.

    ``forward(ids)`` returns ``weight[remap[ids]]``; ``remap`` (int32, persistent) is filled by
    :func:`lit_opt.prune_vocabulary`.

    Args:
        num_embeddings: rows kept (the compact table's height).
        embedding_dim: width of each row.
        vocab_size: the tokenizer's vocabulary size (the length of ``remap``).
        padding_idx: the compact row of the padding token, or None.
        device, dtype: of the weight.

    Example::

        >>> emb = RemappedEmbedding(2, 3, vocab_size=5)
        >>> emb.remap.copy_(torch.tensor([0, 0, 1, 0, 0]))
        tensor([0, 0, 1, 0, 0], dtype=torch.int32)
        >>> bool((emb(torch.tensor([2, 4])) == emb.weight[[1, 0]]).all())
        True
    """

    remap: Tensor

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        vocab_size: int,
        padding_idx: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx, device=device, dtype=dtype)
        self.vocab_size = vocab_size
        self.register_buffer("remap", torch.zeros(vocab_size, dtype=torch.int32, device=device))

    @classmethod
    def like(cls, embedding: nn.Embedding, num_rows: int, padding_idx: int | None) -> RemappedEmbedding:
        """An empty ``RemappedEmbedding`` of ``num_rows`` rows standing in for ``embedding`` (same width,
        vocabulary, device, dtype and norm options)."""
        weight = embedding.weight
        new = cls(
            num_rows,
            embedding.embedding_dim,
            embedding.num_embeddings,
            padding_idx,
            weight.device,
            weight.dtype,
        )
        new.max_norm, new.norm_type = embedding.max_norm, embedding.norm_type
        new.scale_grad_by_freq, new.sparse = embedding.scale_grad_by_freq, embedding.sparse
        return new

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(
            self.remap[input],  # (...) original ids -> compact rows
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, vocab_size={self.vocab_size}"

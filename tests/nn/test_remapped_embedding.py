"""RemappedEmbedding: reads ``weight[remap[ids]]``; ``check_remap`` guards remaps read from files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_opt.nn import RemappedEmbedding
from lit_opt.nn.remapped_embedding import check_remap


def test_forward_reads_the_remapped_rows_and_like_copies_options() -> None:
    full = nn.Embedding(10, 4, padding_idx=0, max_norm=2.0)
    emb = RemappedEmbedding.like(full, 3, padding_idx=0)
    assert (emb.num_embeddings, emb.embedding_dim, emb.vocab_size, emb.max_norm) == (3, 4, 10, 2.0)
    emb.remap.copy_(torch.tensor([0, 1, 1, 2, 1, 1, 1, 1, 1, 1]))
    emb.max_norm = None
    ids = torch.tensor([[3, 0, 7]])  # (B, T)
    assert torch.equal(emb(ids), emb.weight[torch.tensor([[2, 0, 1]])])  # (B, T, D)
    assert "vocab_size=10" in repr(emb)


def test_it_is_an_embedding_with_a_persistent_int32_remap() -> None:
    emb = RemappedEmbedding(2, 3, vocab_size=5)
    assert isinstance(emb, nn.Embedding)
    assert emb.state_dict()["remap"].dtype == torch.int32


@pytest.mark.parametrize(
    ("remap", "pattern"),
    [
        (
            torch.tensor([0, 1, 3], dtype=torch.int32),
            r"x: the remap points at rows 0..3, outside the table's 3 rows",
        ),
        (torch.tensor([0, 1], dtype=torch.int32), r"x: the remap has shape \[2\]; expected \[3\]"),
        (torch.tensor([0.0, 1.0, 2.0]), r"x: the remap has dtype torch.float32"),
    ],
)
def test_check_remap_rejects_bad_remaps(remap: torch.Tensor, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_remap(remap, vocab_size=3, num_rows=3, where="x")
    check_remap(torch.tensor([0, 2, 1], dtype=torch.int16), vocab_size=3, num_rows=3, where="x")

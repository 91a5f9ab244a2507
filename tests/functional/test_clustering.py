"""kmeans_1d against a brute-force Lloyd reference, and the generic bit packer against the older ones."""

import pytest
import torch

from lit_opt.functional.clustering import kmeans_1d
from lit_opt.functional.packing import pack_codes, packed_size, unpack_codes
from lit_opt.functional.quantize import pack_int4
from lit_opt.functional.sparsity import pack_bits


def _lloyd_reference(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> torch.Tensor:
    for _ in range(iters):
        assign = (x[:, None] - centroids[None]).abs().argmin(dim=1)
        centroids = torch.stack(
            [x[assign == j].mean() if (assign == j).any() else centroids[j] for j in range(len(centroids))]
        )
    return centroids


@pytest.mark.parametrize("k", [2, 5, 16])
def test_linear_init_matches_brute_force_lloyd(k):
    x = (
        torch.randn(3000, generator=torch.Generator().manual_seed(k)).half().double()
    )  # fp16 values: exact bins
    centroids, indices = kmeans_1d(x, k, init="linear", max_iter=200)
    expected = _lloyd_reference(
        x, torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64), 200
    )
    torch.testing.assert_close(centroids, expected.sort().values, rtol=0, atol=1e-9)
    assert torch.equal(indices, (x[:, None] - centroids[None]).abs().argmin(dim=1))


def test_kmeanspp_is_seeded_and_beats_linear_on_clumped_values():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4000, generator=g) * 0.01, torch.randn(40, generator=g) * 0.01 + 3.0])
    a = kmeans_1d(x, 4, "kmeans++", generator=torch.Generator().manual_seed(1))
    b = kmeans_1d(x, 4, "kmeans++", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    error = lambda c, i: float(((c[i] - x) ** 2).mean())  # noqa: E731
    assert error(*a) <= error(*kmeans_1d(x, 4, "linear")) * 1.01


def test_fewer_distinct_values_than_clusters_and_shapes():
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    centroids, indices = kmeans_1d(x, 8)
    assert centroids.shape == (8,) and indices.shape == (2, 2)
    assert torch.equal(centroids[indices], x)
    with pytest.raises(ValueError, match="init='random' is not one of"):
        kmeans_1d(x, 2, init="random")


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 9, 1001])
def test_pack_codes_round_trip(bits, n):
    codes = torch.randint(0, 2**bits, (n,), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_size(n, bits)
    assert torch.equal(unpack_codes(packed, bits, n), codes)


def test_pack_codes_is_byte_compatible_with_masks_and_int4():
    mask = torch.rand(1003) > 0.5
    assert torch.equal(pack_codes(mask, 1), pack_bits(mask))
    int4 = torch.randint(-8, 8, (1003,), dtype=torch.int8)
    assert torch.equal(pack_codes((int4.to(torch.int16) + 8).to(torch.uint8), 4), pack_int4(int4))
    with pytest.raises(ValueError, match="bits=9 must be an integer from 1 to 8"):
        pack_codes(mask, 9)

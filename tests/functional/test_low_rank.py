"""functional.low_rank: truncated SVD against the Eckart-Young error and hand-computed ranks."""

import pytest
import torch

from lit_opt.functional.low_rank import energy_rank, parameter_saving, singular_values, svd_factors


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (16, 16)])
def test_full_rank_factors_reproduce_the_weight(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    first, second = svd_factors(w, min(shape))
    assert first.shape == (min(shape), shape[1]) and second.shape == (shape[0], min(shape))
    torch.testing.assert_close(second @ first, w, atol=1e-5, rtol=0)


def test_truncation_error_is_the_dropped_singular_values():
    w = torch.randn(20, 10, generator=torch.Generator().manual_seed(1))
    s = singular_values(w)
    first, second = svd_factors(w, 4)
    error = torch.linalg.matrix_norm(second @ first - w).double()
    torch.testing.assert_close(error, s[4:].square().sum().sqrt(), rtol=1e-5, atol=1e-6)


def test_energy_rank_is_the_smallest_rank_keeping_the_energy():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert energy_rank(s, 16 / 22) == 1
    assert energy_rank(s, 16 / 22 + 1e-3) == 2
    assert energy_rank(s, 0.95) == 3
    assert energy_rank(s, 1.0) == 4


def test_parameter_saving():
    assert parameter_saving(32, 16, 2) == pytest.approx(1 - 2 * 48 / 512)
    assert parameter_saving(4, 4, 4) < 0

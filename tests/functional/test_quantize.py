"""Quantization math against hand-computed references."""

import pytest
import torch

from lit_opt.functional.quantize import (
    dequantize,
    dequantize_weight,
    dynamic_qparams,
    fake_quantize,
    fake_quantize_weight,
    pack_int4,
    qparams_from_range,
    quant_range,
    quantize,
    quantize_weight,
    unpack_int4,
    weight_blocks,
    weight_qparams,
)

CONFIGS = [
    (8, True, "per_channel", None),
    (8, False, "per_channel", None),
    (8, True, "per_tensor", None),
    (8, False, "per_tensor", None),
    (4, True, "per_group", 8),
    (4, False, "per_group", 4),
    (4, True, "per_channel", None),
]


def test_quant_range():
    assert quant_range(8, True) == (-127, 127)
    assert quant_range(8, False) == (-128, 127)
    assert quant_range(4, True) == (-7, 7)
    assert quant_range(4, False) == (-8, 7)


def test_symmetric_qparams_by_hand():
    scale, zp = qparams_from_range(torch.tensor([-0.5, -3.0]), torch.tensor([2.54, 1.0]), 8, True)
    torch.testing.assert_close(scale, torch.tensor([2.54 / 127, 3.0 / 127]))
    assert torch.equal(zp, torch.zeros(2))


def test_asymmetric_qparams_by_hand():
    # range [-1, 3]: scale 4/255; zero point -128 - round(-1 / (4/255)) = -128 + 64 = -64
    scale, zp = qparams_from_range(torch.tensor(-1.0), torch.tensor(3.0), 8, False)
    torch.testing.assert_close(scale, torch.tensor(4 / 255))
    assert zp.item() == -64
    # the range is widened to contain 0, so 0 is exactly representable
    scale, zp = qparams_from_range(torch.tensor(1.0), torch.tensor(3.0), 8, False)
    assert dequantize(quantize(torch.tensor(0.0), scale, zp, -128, 127), scale, zp).item() == 0.0


def test_constant_zero_tensor_gets_a_positive_scale():
    scale, _ = weight_qparams(torch.zeros(3, 4), 8, True, "per_channel")
    assert bool((scale > 0).all())
    assert torch.equal(
        fake_quantize_weight(torch.zeros(3, 4), scale, torch.zeros_like(scale), 8, True, "per_channel"),
        torch.zeros(3, 4),
    )


def test_quantize_by_hand():
    x = torch.tensor([0.26, -0.5, 10.0, -10.0])
    codes = quantize(x, torch.tensor(0.1), torch.tensor(0.0), -7, 7)
    assert codes.tolist() == [3.0, -5.0, 7.0, -7.0]  # round-half-to-even: -0.5/0.1 = -5 exactly


def test_fake_quantize_equals_quantize_then_dequantize_exactly():
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(64, 33, generator=g) * 3
        scale, zp = dynamic_qparams(x, (-1,), symmetric=seed % 2 == 0)
        expected = dequantize(quantize(x, scale, zp, -128, 127), scale, zp)
        assert torch.equal(fake_quantize(x, scale, zp, -128, 127), expected)
        assert torch.equal(fake_quantize(x.requires_grad_(), scale, zp, -128, 127).detach(), expected)


def test_straight_through_gradient_is_masked_where_clipped():
    x = torch.tensor([0.05, 0.71, 0.76, -0.9], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0.0), -7, 7)
    (grad,) = torch.autograd.grad((y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum(), x)
    assert grad.tolist() == [1.0, 2.0, 0.0, 0.0]  # 0.76 and -0.9 round to codes outside [-7, 7]


def test_weight_blocks_shapes_and_group_error():
    w = torch.arange(24.0).reshape(3, 8)
    assert weight_blocks(w, "per_tensor").shape == (1, 1, 24)
    assert weight_blocks(w, "per_channel").shape == (3, 1, 8)
    assert weight_blocks(w, "per_group", 4).shape == (3, 2, 4)
    conv = torch.zeros(5, 2, 3, 3)
    assert weight_blocks(conv, "per_group", 9).shape == (5, 2, 9)
    with pytest.raises(ValueError, match=r"group_size=5 must be a positive divisor of the 8 elements"):
        weight_blocks(w, "per_group", 5)
    with pytest.raises(ValueError, match=r"granularity='per_row' is not one of"):
        weight_blocks(w, "per_row")


def test_per_group_scales_by_hand():
    w = torch.tensor([[1.0, -2.0, 0.5, 0.25], [4.0, 0.0, -8.0, 1.0]])
    scale, zp = weight_qparams(w, 4, True, "per_group", 2)
    torch.testing.assert_close(scale, torch.tensor([[2.0, 0.5], [4.0, 8.0]]) / 7)
    assert torch.equal(zp, torch.zeros(2, 2))


@pytest.mark.parametrize("bits,symmetric,granularity,group_size", CONFIGS)
def test_weight_round_trip_is_exact_and_error_bounded(bits, symmetric, granularity, group_size):
    for seed in range(10):
        w = torch.randn(6, 16, generator=torch.Generator().manual_seed(seed))
        scale, zp = weight_qparams(w, bits, symmetric, granularity, group_size)
        codes = quantize_weight(w, scale, zp, bits, symmetric, granularity, group_size)
        qmin, qmax = quant_range(bits, symmetric)
        assert codes.dtype == torch.int8 and int(codes.min()) >= qmin and int(codes.max()) <= qmax
        fake = fake_quantize_weight(w, scale, zp, bits, symmetric, granularity, group_size)
        assert torch.equal(fake, dequantize_weight(codes, scale, zp, granularity, group_size))
        step = weight_blocks(torch.ones_like(w), granularity, group_size) * scale.unsqueeze(-1)
        error = weight_blocks((fake - w).abs(), granularity, group_size)
        assert bool((error <= step / 2 * (1 + 1e-5)).all())


def test_dynamic_qparams_per_row():
    x = torch.tensor([[1.0, -2.54], [0.127, 0.0]])
    scale, zp = dynamic_qparams(x, (-1,), symmetric=True)
    torch.testing.assert_close(scale, torch.tensor([[0.02], [0.001]]))
    assert scale.shape == (2, 1) and torch.equal(zp, torch.zeros(2, 1))


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_int4_pack_round_trip(n):
    codes = torch.arange(n, dtype=torch.int8) % 16 - 8
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 1) // 2
    assert torch.equal(unpack_int4(packed, n), codes)


def test_int4_packing_layout_low_nibble_first():
    assert pack_int4(torch.tensor([-8, 7], dtype=torch.int8)).tolist() == [0xF0]


def test_symmetric_fast_path_equals_the_general_one_and_passes_gradients_through():
    from lit_opt.functional.quantize import fake_quantize_symmetric

    for seed in range(10):
        x = torch.randn(32, 48, generator=torch.Generator().manual_seed(seed)) * 5
        scale, zp = dynamic_qparams(x, (-1,), symmetric=True)
        assert torch.equal(fake_quantize_symmetric(x, scale), fake_quantize(x, scale, zp, -127, 127))
        leaf = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad((fake_quantize_symmetric(leaf, scale) * x).sum(), leaf)
        assert torch.equal(grad, x)  # identity: no value can clip

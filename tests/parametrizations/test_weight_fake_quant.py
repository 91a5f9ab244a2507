import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lit_opt.functional.quantize import fake_quantize_weight, weight_qparams
from lit_opt.parametrizations import WeightFakeQuant


def _quantized_linear(**kwargs):
    layer = nn.Linear(8, 4)
    parametrize.register_parametrization(layer, "weight", WeightFakeQuant(layer.weight.shape, **kwargs))
    return layer


def test_keeps_the_original_parameter_and_fake_quantizes():
    layer = nn.Linear(8, 4)
    original = layer.weight
    parametrize.register_parametrization(
        layer, "weight", WeightFakeQuant((4, 8), bits=4, granularity="per_group", group_size=4)
    )
    assert layer.parametrizations.weight.original is original
    scale, zp = weight_qparams(original, 4, True, "per_group", 4)
    assert torch.equal(layer.weight, fake_quantize_weight(original, scale, zp, 4, True, "per_group", 4))
    assert torch.equal(layer.parametrizations.weight[0].scale, scale)  # observed into the buffer
    assert len(torch.unique(layer.weight[0, :4])) <= 15


def test_straight_through_gradient_reaches_the_original():
    layer = _quantized_linear()
    layer(torch.randn(3, 8)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
    assert bool(layer.parametrizations.weight.original.grad.abs().sum() > 0)


def test_state_dict_holds_buffers_and_config():
    state = _quantized_linear(bits=8, symmetric=False).state_dict()
    assert {
        "parametrizations.weight.0.scale",
        "parametrizations.weight.0.zero_point",
        "parametrizations.weight.0.enabled",
    } <= set(state)
    assert state["parametrizations.weight.0._extra_state"]["symmetric"] is False


def test_disabled_passes_through():
    layer = _quantized_linear()
    layer.parametrizations.weight[0].enabled.fill_(False)
    assert torch.equal(layer.weight, layer.parametrizations.weight.original)


def test_loading_a_different_configuration_is_refused():
    state = _quantized_linear(bits=4, granularity="per_tensor").state_dict()
    with pytest.raises(ValueError, match="does not match this model's"):
        _quantized_linear(bits=8, granularity="per_tensor").load_state_dict(state)

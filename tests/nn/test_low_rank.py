"""LowRankLinear: a full-rank factorization is the layer; its shape travels as extra state."""

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt.nn import LowRankLinear


@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_factorization_reproduces_the_layer(bias):
    torch.manual_seed(0)
    layer = nn.Linear(24, 10, bias=bias)
    low = LowRankLinear.from_linear(layer, rank=10)
    x = torch.randn(8, 24)
    torch.testing.assert_close(low(x), layer(x), atol=1e-5, rtol=0)
    assert (low.second.bias is None) == (not bias)


def test_restore_rebuilds_factorized_layers_from_a_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    model[0] = LowRankLinear.from_linear(model[0], rank=3)
    state = model.state_dict()
    assert state["0._extra_state"] == {
        "kind": "LowRankLinear",
        "in_features": 16,
        "out_features": 12,
        "rank": 3,
        "bias": True,
    }
    plain = lit_opt.restore(nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)), state)
    assert isinstance(plain[0], LowRankLinear) and plain[0].rank == 3
    x = torch.randn(5, 16)
    assert torch.equal(plain(x), model(x))


def test_loading_factors_of_another_rank_is_refused_with_a_hint():
    low = LowRankLinear(16, 12, rank=3)
    with pytest.raises(ValueError, match=r"does not match this layer .* HINT: load it with lit_opt.restore"):
        low.load_state_dict(
            LowRankLinear(16, 12, rank=3).state_dict() | {"_extra_state": {**low.config(), "rank": 4}}
        )


def test_rank_out_of_range_is_refused():
    with pytest.raises(
        ValueError, match=r"rank=5 must be between 1 and min\(out_features, in_features\) = 4"
    ):
        LowRankLinear(4, 8, rank=5)


def test_restore_refuses_a_recorded_layer_of_another_width():
    state = LowRankLinear(16, 12, rank=3).state_dict()
    state = {f"0.{k}": v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"factorized layer '0' .* HINT: use the model the checkpoint"):
        lit_opt.restore(nn.Sequential(nn.Linear(8, 12)), state)

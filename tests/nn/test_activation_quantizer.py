import pytest
import torch
from torch import nn

from lit_opt.functional.quantize import dequantize, dynamic_qparams, quantize
from lit_opt.nn.activation_quantizer import ActivationQuantizer, attach_input_quantizer


def test_dynamic_quantizes_each_row_with_its_own_scale():
    x = torch.randn(4, 3, 10)
    scale, zp = dynamic_qparams(x, (-1,))
    expected = dequantize(quantize(x, scale, zp, -127, 127), scale, zp)
    assert torch.equal(ActivationQuantizer("dynamic")(x), expected)


def test_dynamic_per_sample_for_convolutions():
    x = torch.randn(2, 3, 5, 5)
    x[1] *= 100  # a per-row (last dim) scale would differ from a per-sample one
    scale, zp = dynamic_qparams(x, (1, 2, 3))
    assert scale.shape == (2, 1, 1, 1)
    expected = dequantize(quantize(x, scale, zp, -127, 127), scale, zp)
    assert torch.equal(ActivationQuantizer("dynamic", per_sample=True)(x), expected)


def test_static_moving_average_by_hand():
    q = ActivationQuantizer("static", symmetric=False, momentum=0.5).train()
    x = torch.tensor([[1.0, 2.0]])
    assert torch.equal(q.eval()(x), x)  # before any observation: pass-through
    q.train()
    q(torch.tensor([[-1.0, 3.0]]))
    q(torch.tensor([[-3.0, 1.0]]))
    assert q.running_min.item() == -2.0 and q.running_max.item() == 2.0  # lerp by 0.5
    torch.testing.assert_close(q.scale, torch.tensor(4.0 / 255))
    q.observing.fill_(False)
    q(torch.tensor([[-100.0, 100.0]]))
    assert q.running_min.item() == -2.0  # frozen
    assert q.eval()(torch.tensor([[100.0]])).item() == pytest.approx(2.0, abs=4 / 255)  # clipped to the range


def test_disabled_is_identity_and_unknown_mode_errors():
    q = ActivationQuantizer("dynamic")
    q.enabled.fill_(False)
    x = torch.randn(3, 3)
    assert torch.equal(q(x), x)
    with pytest.raises(ValueError, match=r"mode='none' is not one of \('dynamic', 'static'\)"):
        ActivationQuantizer("none")


def test_hook_quantizes_positional_and_keyword_input():
    layer = nn.Linear(6, 2)
    attach_input_quantizer(layer, ActivationQuantizer("dynamic"))
    x = torch.randn(5, 6)
    scale, zp = dynamic_qparams(x, (-1,))
    expected = nn.functional.linear(
        dequantize(quantize(x, scale, zp, -127, 127), scale, zp), layer.weight, layer.bias
    )
    assert torch.equal(layer(x), expected)
    assert torch.equal(layer(input=x), expected)
    assert "input_quantizer.enabled" in layer.state_dict()


def test_extra_state_mismatch_names_the_fix():
    q = ActivationQuantizer("static")
    state = q.state_dict()
    with pytest.raises(ValueError, match="HINT: resume with the same QATCallback arguments"):
        ActivationQuantizer("dynamic").load_state_dict(state, strict=False)


def _observe_on_rank(rank, world_size):
    q = ActivationQuantizer("static", symmetric=False).train()
    q(torch.tensor([[-1.0 - rank, 2.0 + 3 * rank]]))
    return q.running_min.item(), q.running_max.item(), q.scale.item()


@pytest.mark.ddp
def test_static_observation_is_all_reduced_across_ranks():
    from tests.helpers.ddp import run_ddp

    results = run_ddp(_observe_on_rank, world_size=2)
    assert results[0] == results[1]
    assert results[0][:2] == (-2.0, 5.0)  # global min over ranks, global max over ranks

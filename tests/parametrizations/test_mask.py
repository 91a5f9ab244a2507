"""Mask: the cached multiplier follows every change of the boolean mask; zeros stay exactly zero."""

import copy

import torch
from torch.nn.utils import parametrize

from lit_opt.parametrizations import Mask


def _masked_linear() -> tuple[torch.nn.Linear, Mask]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    mask = Mask((4, 6))
    parametrize.register_parametrization(layer, "weight", mask)
    return layer, mask


def test_nothing_pruned_returns_the_weight_itself():
    layer, _ = _masked_linear()
    original = layer.parametrizations.weight.original
    assert torch.equal(layer.weight, original)
    layer.weight.sum().backward()
    assert torch.equal(original.grad, torch.ones_like(original))


def test_factor_follows_in_place_changes_state_dict_loads_and_moves():
    layer, mask = _masked_linear()
    original = layer.parametrizations.weight.original
    mask.mask[1, 2] = False  # in place: the version counter moves
    assert layer.weight[1, 2].item() == 0.0 and int((layer.weight == 0).sum()) == 1
    state = copy.deepcopy(layer.state_dict())
    mask.mask.fill_(True)
    assert int((layer.weight == 0).sum()) == 0
    layer.load_state_dict(state)  # copies into the mask buffer
    assert layer.weight[1, 2].item() == 0.0
    assert "parametrizations.weight.0.factor" not in state  # only the bool mask is persistent
    layer.double()
    assert layer.weight.dtype == torch.float64 and layer.weight[1, 2].item() == 0.0
    layer.weight.sum().backward()
    assert original.grad is not None and original.grad[1, 2].item() == 0.0


def test_a_change_first_seen_under_inference_mode_still_trains():
    layer, mask = _masked_linear()
    mask.mask[0] = False
    with torch.inference_mode():
        assert layer.weight[0].abs().sum().item() == 0.0
    layer.weight.sum().backward()  # the cached factor is a normal tensor, usable for autograd
    assert layer.parametrizations.weight.original.grad[0].abs().sum().item() == 0.0


def test_training_holds_the_last_product_detached_so_copies_still_work():
    layer, mask = _masked_linear()
    mask.mask[0] = False
    loss = layer(torch.ones(2, 6)).sum()
    held = mask._held
    assert held is not None and held.grad_fn is None and torch.equal(held, layer.weight.detach())
    loss.backward()
    copied = copy.deepcopy(layer)  # a held tensor with a grad_fn would refuse deepcopy
    assert torch.equal(copied.weight, layer.weight)
    assert not any("held" in key for key in layer.state_dict())
    with torch.no_grad():
        layer(torch.ones(2, 6))
    assert mask._held is None  # inference holds nothing


def test_zeroed_original_is_used_unmultiplied_until_it_or_the_mask_changes():
    layer, mask = _masked_linear()
    original = layer.parametrizations.weight.original
    mask.mask[1, 2] = False
    mask.zero_pruned(original)
    assert original[1, 2].item() == 0.0 and layer.weight is original  # no multiply, no new tensor
    layer.weight.sum().backward()
    assert original.grad[1, 2].item() == 1.0  # unmasked gradient: the caller masks it ...
    mask.mask_grad(original)
    assert original.grad[1, 2].item() == 0.0 and original.grad[0, 0].item() == 1.0  # ... with mask_grad
    with torch.no_grad():
        original.add_(1.0)  # e.g. an optimizer step nobody re-zeroed after: the version counter moves
    assert layer.weight is not original and layer.weight[1, 2].item() == 0.0  # multiplied again
    mask.zero_pruned(original)
    mask.mask[3, 0] = False  # a new mask: the zeroing was for the old one
    assert layer.weight is not original and layer.weight[3, 0].item() == 0.0 and original[3, 0].item() != 0.0


def test_the_unmultiplied_path_is_only_for_training_forwards_of_the_same_tensor():
    layer, mask = _masked_linear()
    original = layer.parametrizations.weight.original
    mask.mask[1, 2] = False
    mask.zero_pruned(original)
    with torch.no_grad():  # validation, inference: always multiplied
        assert layer.weight is not original and layer.weight[1, 2].item() == 0.0
    assert copy.deepcopy(mask)._zeroed is None  # a copy's tensors are not this one's
    original.data = torch.ones_like(original)  # a new storage, the version counter untouched
    assert layer.weight is not original and layer.weight[1, 2].item() == 0.0
    mask.zero_pruned(original)
    assert layer.weight is original
    mask.forget_zeroed()
    assert layer.weight is not original

"""Codebook: forward is codebook[indices], each centroid's gradient is the sum of its members' gradients."""

import pytest
import torch
from torch.nn.utils import parametrize

from lit_opt.parametrizations import Codebook, Mask, register_in_order


def _shared_linear(centroids, indices, zero_cluster=False):
    layer = torch.nn.Linear(3, 2, bias=False)
    book = Codebook((2, 3), n_clusters=len(centroids))
    parametrize.register_parametrization(layer, "weight", book)
    with torch.no_grad():
        book.centroids.copy_(torch.tensor(centroids))
        book.indices.copy_(torch.tensor(indices))
        book.clustered.fill_(True)
        book.zero_cluster.fill_(zero_cluster)
    return layer, book


def test_passes_through_until_clustered():
    layer = torch.nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    parametrize.register_parametrization(layer, "weight", Codebook((2, 3), 4))
    assert torch.equal(layer.weight, before)


def test_centroid_gradient_is_the_sum_of_member_gradients_by_hand():
    layer, book = _shared_linear([0.5, -0.25, 1.0], [[0, 1, 1], [2, 0, 1]])
    assert layer.weight.tolist() == [[0.5, -0.25, -0.25], [1.0, 0.5, -0.25]]
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    upstream = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    (layer(x) * upstream).sum().backward()
    # dL/dW[i, j] = sum_b upstream[b, i] * x[b, j]: row 0 = [9, 12, 15], row 1 = [1, 0.5, 0]
    # centroid 0 <- W[0,0] + W[1,1] = 9 + 0.5; centroid 1 <- W[0,1] + W[0,2] + W[1,2] = 12 + 15 + 0; centroid 2 <- W[1,0]
    assert book.centroids.grad.tolist() == [9.5, 27.0, 1.0]
    assert torch.equal(
        layer.parametrizations.weight.original.grad, torch.zeros(2, 3)
    )  # unused, still in the graph


def test_centroids_are_float16_representable_with_straight_through_gradient():
    layer, book = _shared_linear([0.1, 1 / 3], [[0, 1, 1], [1, 0, 0]])
    assert torch.equal(layer.weight, layer.weight.half().float())
    layer.weight.sum().backward()
    assert book.centroids.grad.tolist() == [3.0, 3.0]


def test_zero_cluster_is_pinned_and_follows_the_mask():
    layer = torch.nn.Linear(3, 2, bias=False)
    mask, book = Mask((2, 3)), Codebook((2, 3), 3)
    register_in_order(layer, "weight", book)
    register_in_order(layer, "weight", mask)
    assert [type(p).__name__ for p in layer.parametrizations.weight] == ["Mask", "Codebook"]
    with torch.no_grad():
        mask.mask[0, 0] = False
        book.centroids.copy_(torch.tensor([0.7, 0.5, -0.5]))  # centroid 0 is pinned: 0.7 never shows
        book.indices.copy_(torch.tensor([[0, 1, 2], [1, 1, 2]]))
        book.clustered.fill_(True)
        book.zero_cluster.fill_(True)
    assert layer.weight.tolist() == [[0.0, 0.5, -0.5], [0.5, 0.5, -0.5]]
    mask.mask[1, 2] = False  # pruned after clustering: stays zero
    assert layer.weight.tolist() == [[0.0, 0.5, -0.5], [0.5, 0.5, 0.0]]
    layer.weight.sum().backward()
    assert book.centroids.grad.tolist() == [0.0, 3.0, 1.0]
    codebook, indices = book.encoded(mask(layer.parametrizations.weight.original))
    assert codebook.dtype == torch.float16 and torch.equal(codebook.float()[indices.long()], layer.weight)


def test_checkpoint_config_mismatch_and_bad_size():
    book = Codebook((2, 3), 4)
    state = book.state_dict()
    with pytest.raises(ValueError, match="does not match this model's.*HINT: resume with the same"):
        Codebook((2, 3), 8).load_state_dict(state)
    with pytest.raises(ValueError, match="n_clusters=300 must be from 2 to 256"):
        Codebook((2, 3), 300)

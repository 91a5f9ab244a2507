"""transformers' ``Conv1D`` (weight stored ``(in, out)``) through QAT, pruning, weight sharing, low rank,
export and load, against hand-written references."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers.pytorch_utils import Conv1D

import lit_opt
from lit_opt.nn import LowRankLinear, QuantizedLinear
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from lit_opt.sharing import SharingConfig, cluster_weights, prepare_sharing
from tests.helpers.trainer import tiny_trainer


def _conv1d(nf: int = 6, nx: int = 8, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(Conv1D(nf, nx))
    nn.init.normal_(model[0].weight)
    nn.init.normal_(model[0].bias)
    return model


def test_qat_scales_each_output_column_by_hand() -> None:
    model = _conv1d()
    weight = model[0].weight.detach().clone()  # (in=8, out=6)
    prepare_quantization(model, QuantizationConfig(weight_bits=8, activations="none"))
    scale = weight.abs().amax(dim=0) / 127  # one scale per output channel: a column
    expected = torch.clamp(torch.round(weight / scale), -127, 127) * scale
    torch.testing.assert_close(model[0].weight, expected, rtol=0, atol=1e-7)
    quantizer = model[0].parametrizations.weight[0]
    assert quantizer.scale.shape == (6, 1)
    torch.testing.assert_close(quantizer.scale.flatten(), scale)


def test_qat_per_group_runs_along_each_column() -> None:
    model = _conv1d()
    weight = model[0].weight.detach().clone()
    prepare_quantization(
        model, QuantizationConfig(weight_bits=4, activations="none", granularity="per_group", group_size=4)
    )
    blocks = weight.t().reshape(6, 2, 4)  # (out, groups, group)
    scale = blocks.abs().amax(dim=-1, keepdim=True) / 7
    expected = (torch.clamp(torch.round(blocks / scale), -7, 7) * scale).reshape(6, 8).t()
    torch.testing.assert_close(model[0].weight, expected, rtol=0, atol=1e-7)


def test_group_size_must_divide_the_inputs_not_the_outputs() -> None:
    model = _conv1d(nf=8, nx=6)
    with pytest.raises(ValueError, match="group_size=4 does not divide the 6 inputs per channel.*HINT"):
        prepare_quantization(model, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=4))


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_export_load_is_a_quantized_linear_equal_to_the_trained_model(tmp_path, bits) -> None:
    model = _conv1d()
    granularity = {"granularity": "per_group", "group_size": 4} if bits == 4 else {}
    prepare_quantization(model, QuantizationConfig(weight_bits=bits, **granularity))
    x = torch.randn(3, 5, 8)
    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "a"), model=_conv1d(), kernel="reference")
    assert isinstance(loaded[0], QuantizedLinear) and loaded[0].codes.shape == (6, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)


def test_rows_prune_output_columns_and_their_bias() -> None:
    model = _conv1d()
    config = PruningConfig(target_sparsity=0.5, structure="rows", scope="local")
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.5, 0)
    weight, bias = model[0].weight, model[0].bias
    dead = weight.eq(0).all(dim=0)  # whole output columns
    assert int(dead.sum()) == 3 and bool(bias[dead].eq(0).all()) and not bool(weight[:, ~dead].eq(0).any())


def test_n_m_groups_run_along_the_inputs() -> None:
    model = _conv1d()
    config = PruningConfig(target_sparsity=0.5, structure="2:4", scope="local")
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.5, 0)
    kept = model[0].weight.ne(0).t().reshape(6, 2, 4).sum(dim=-1)  # per output channel, per 4 inputs
    assert bool(kept.eq(2).all())


def test_unstructured_mask_exports_sparse_and_loads_equal(tmp_path) -> None:
    model = _conv1d()
    config = PruningConfig(target_sparsity=0.75, scope="local")
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.75, 0)
    prepare_quantization(model, QuantizationConfig(weight_bits=8, activations="none"))
    path = lit_opt.export(model, tmp_path / "a")
    x = torch.randn(4, 8)
    torch.testing.assert_close(
        lit_opt.load(path, model=_conv1d(), kernel="reference")(x), model(x), rtol=0, atol=1e-6
    )


def test_weight_sharing_exports_a_codebook_and_loads_equal(tmp_path) -> None:
    model = _conv1d()
    config = SharingConfig(n_clusters=4, init="linear")
    prepare_sharing(model, config)
    cluster_weights(model, config)
    assert len(torch.unique(model[0].weight)) <= 4
    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, model=_conv1d(), kernel="reference")
    assert isinstance(loaded[0], Conv1D)
    x = torch.randn(4, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


class _Conv1DNet(L.LightningModule):
    """A LightningModule around one rank-2 ``Conv1D(16, 16)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = Conv1D(16, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 2) @ torch.randn(2, 16))  # (in, out), rank 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 16)), batch_size=2)


def test_low_rank_factorizes_the_linear_a_conv1d_computes(tmp_path) -> None:
    model = _Conv1DNet()
    x = torch.randn(3, 16)
    expected = model(x).detach()
    tiny_trainer(tmp_path, callbacks=[lit_opt.LowRankCallback(rank=2)], max_steps=1).fit(model)
    assert isinstance(model.proj, LowRankLinear) and model.proj.rank == 2
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-4)
    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "a"), model=_Conv1DNet(), kernel="reference")
    assert isinstance(loaded.proj, LowRankLinear)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

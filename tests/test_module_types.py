"""The table of module types every plugin consults, the unsupported-type warning and tied weights."""

from __future__ import annotations

import warnings

import pytest
from torch import nn
from transformers.pytorch_utils import Conv1D

from lit_opt.module_types import (
    in_features,
    layout_of,
    linear_weight,
    out_features,
    supported_types,
    tied_groups,
    warn_unsupported,
    with_tied,
)
from tests.helpers.models import tiny_gpt2, tiny_llama


def test_conv1d_is_known_transposed_to_every_plugin() -> None:
    layer = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs: weight (4, 6)
    assert layout_of(layer).out_dim == 1 and layout_of(layer).transposed
    assert (out_features(layer), in_features(layer)) == (6, 4)
    assert linear_weight(layer).shape == (6, 4)
    for plugin in ("qat", "pruning", "sharing", "low_rank"):
        assert Conv1D in supported_types(plugin)


def test_table_facts_for_torch_types() -> None:
    conv = nn.Conv2d(3, 5, 3)
    assert (out_features(conv), in_features(conv)) == (5, 27)
    assert nn.Embedding in supported_types("qat") and nn.Embedding not in supported_types("pruning")
    assert nn.Conv2d not in supported_types("low_rank")
    with pytest.raises(ValueError, match="LayerNorm is not a module type"):
        out_features(nn.LayerNorm(4))


def test_warn_unsupported_lists_weight_layers_only() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.warns(
        UserWarning, match=r"IterativePruningCallback: targets match 1 module\(s\) of type Embedding .*'0'"
    ):
        assert warn_unsupported(model, ["*"], [], "pruning") == ["0"]


def test_warn_unsupported_is_quiet_when_excluded() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_unsupported(model, ["*"], ["0"], "pruning") == []


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_tied_groups_find_lm_head_and_embedding(build) -> None:
    model = build()
    groups = tied_groups(model)
    assert len(groups) == 1 and groups[0][-1] == "lm_head"
    assert model.get_submodule(groups[0][0]) is model.get_input_embeddings()


def test_with_tied_adds_partners_with_a_warning() -> None:
    model = tiny_llama()
    selected = {"lm_head": model.lm_head}
    with pytest.warns(UserWarning, match="'lm_head' shares its weight with \\['model.embed_tokens'\\]"):
        assert with_tied(model, selected, "qat") == [["model.embed_tokens", "lm_head"]]


def test_with_tied_refuses_layouts_that_differ() -> None:
    model = nn.Module()
    model.a = nn.Linear(4, 4, bias=False)
    model.b = Conv1D(4, 4)
    model.b.weight = model.a.weight
    with pytest.raises(ValueError, match="share one weight but store it in different layouts.*HINT"):
        with_tied(model, {"a": model.a}, "qat")


def test_untied_model_has_no_groups() -> None:
    assert tied_groups(tiny_llama(tie=False)) == []

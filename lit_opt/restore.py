"""Rebuild lit_opt's structure on a plain model from a state dict, then load it.

Compression modules store their configuration as extra state (``..._extra_state`` keys), so a
checkpoint alone says which parametrizations and input quantizers to install and which linear
layers were factorized into a :class:`~lit_opt.nn.LowRankLinear` (and at what rank); a
``<name>.remap`` key marks a pruned vocabulary (:func:`lit_opt.prune_vocabulary`), rebuilt from
the tensors' shapes. This is how a
QAT checkpoint is loaded outside the Trainer, and how the launching process of a ``ddp_spawn``
run receives the compressed model.

Example::

    ckpt = torch.load("last.ckpt", weights_only=True)
    model = MyLightningModule()            # plain, as constructed
    lit_opt.restore(model, ckpt["state_dict"])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt._checks import check_module
from lit_opt.module_types import in_features, layout_of, out_features
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER, ActivationQuantizer, attach_input_quantizer
from lit_opt.nn.low_rank import KIND as LOW_RANK_KIND
from lit_opt.nn.low_rank import LowRankLinear
from lit_opt.nn.remapped_embedding import RemappedEmbedding, check_remap
from lit_opt.parametrizations.codebook import Codebook
from lit_opt.parametrizations.mask import Mask
from lit_opt.parametrizations.ordering import register_in_order
from lit_opt.parametrizations.weight_fake_quant import WeightFakeQuant
from lit_opt.submodules import replace_submodule

PARAMETRIZATIONS: dict[str, type[nn.Module]] = {
    "Mask": Mask,
    "Codebook": Codebook,
    "WeightFakeQuant": WeightFakeQuant,
}
_PARAMETRIZATION_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.([^.]+)\.(\d+)\._extra_state$")
_INPUT_QUANTIZER_KEY = re.compile(rf"^(?:(.*)\.)?{INPUT_QUANTIZER}\._extra_state$")
_REMAP_KEY = re.compile(r"^(.+)\.remap$")


def _build(config: Mapping[str, Any], registry: Mapping[str, type[nn.Module]], key: str) -> nn.Module:
    kind = str(config.get("kind")) if isinstance(config, Mapping) else ""
    if kind not in registry:
        raise ValueError(
            f"state_dict key {key!r} names an unknown lit_opt module kind {kind!r}; known: {sorted(registry)}."
        )
    try:
        return registry[kind](**{k: v for k, v in config.items() if k != "kind"})
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"state_dict key {key!r} holds a {kind} configuration that cannot be rebuilt ({err}); the checkpoint "
            "is corrupt or was written by an incompatible lit_opt version."
        ) from None


def _install_remapped_embeddings(model: nn.Module, state_dict: Mapping[str, Any]) -> int:
    """Swap each plain ``nn.Embedding`` whose ``<name>.remap`` is in ``state_dict`` for a RemappedEmbedding."""
    installed = 0
    modules = dict(model.named_modules())
    for key, remap in state_dict.items():
        match = _REMAP_KEY.match(key)
        name = match.group(1) if match else ""
        module = modules.get(name)
        if not isinstance(module, nn.Embedding) or isinstance(module, RemappedEmbedding):
            continue
        weight = state_dict.get(f"{name}.weight", state_dict.get(f"{name}.parametrizations.weight.original"))
        if not isinstance(weight, Tensor) or not isinstance(remap, Tensor) or weight.dim() != 2:
            raise ValueError(
                f"state_dict key {key!r} is a vocabulary remap, but {name!r} has no 2-D weight beside it."
            )
        check_remap(remap, module.num_embeddings, weight.shape[0], f"state_dict key {key!r}")
        pad = None if module.padding_idx is None else int(remap[module.padding_idx])
        replace_submodule(model, name, RemappedEmbedding.like(module, weight.shape[0], pad))
        installed += 1
    return installed


def low_rank_layers(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """The :class:`~lit_opt.nn.LowRankLinear` configurations ``state_dict`` holds under ``prefix``, by module name."""
    layers = {}
    for key, value in state_dict.items():
        framed = key.startswith(prefix) and key.endswith("._extra_state")
        if framed and isinstance(value, Mapping) and value.get("kind") == LOW_RANK_KIND:
            layers[key[len(prefix) : -len("._extra_state")]] = dict(value)
    return layers


def install_low_rank(model: nn.Module, layers: Mapping[str, Mapping[str, Any]]) -> int:
    """Make each module named in ``layers`` a :class:`~lit_opt.nn.LowRankLinear` of the given shape.

    A plain ``nn.Linear`` (or a ``LowRankLinear`` of another rank) of the same width is replaced by a
    fresh one on its device and dtype; its weights are left to ``load_state_dict``. Returns how many
    modules were replaced.

    Raises:
        ValueError: a named module that is neither, or whose width differs.
    """
    replaced = 0
    for name, config in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"a factorized layer {name!r} is recorded, but the model has no such module."
            ) from None
        shape = {k: config.get(k) for k in ("in_features", "out_features")}
        layout = layout_of(module)
        plain = isinstance(module, nn.Linear) or (layout is not None and layout.transposed)  # Linear, Conv1D
        widths = (
            {"in_features": module.in_features, "out_features": module.out_features}
            if isinstance(module, LowRankLinear)
            else {"in_features": in_features(module), "out_features": out_features(module)}
            if plain
            else None
        )
        if widths is None or shape != widths:
            raise ValueError(
                f"a factorized layer {name!r} {dict(config)} is recorded, but the model's is {module!r}. "
                "HINT: use the model the checkpoint or artifact was trained with."
            )
        if isinstance(module, LowRankLinear) and module.config() == {**config, "kind": LOW_RANK_KIND}:
            continue
        weight = module.second.weight if isinstance(module, LowRankLinear) else cast(Tensor, module.weight)
        built = _build(config, {LOW_RANK_KIND: LowRankLinear}, f"{name}._extra_state")
        replace_submodule(model, name, built.to(device=weight.device, dtype=weight.dtype))
        replaced += 1
    return replaced


def install_structure(model: nn.Module, state_dict: Mapping[str, Any]) -> int:
    """Install the parametrizations and input quantizers ``state_dict`` describes but ``model`` lacks.

    Returns how many modules were installed. Tensors are not loaded; see :func:`restore`.
    """
    installed = install_low_rank(model, low_rank_layers(state_dict))
    installed += _install_remapped_embeddings(model, state_dict)
    parametrizations = sorted(
        (m.group(1) or "", m.group(2), int(m.group(3)), key)
        for key in state_dict
        if (m := _PARAMETRIZATION_KEY.match(key))
    )
    for module_name, tensor_name, index, key in parametrizations:
        module = model.get_submodule(module_name)
        have = (
            len(cast(Any, module).parametrizations[tensor_name])
            if parametrize.is_parametrized(module, tensor_name)
            else 0
        )
        if index < have:
            continue
        built = _build(state_dict[key], PARAMETRIZATIONS, key).to(getattr(module, tensor_name).device)
        register_in_order(module, tensor_name, built)
        installed += 1
    for key in state_dict:
        if m := _INPUT_QUANTIZER_KEY.match(key):
            module = model.get_submodule(m.group(1) or "")
            if not isinstance(getattr(module, INPUT_QUANTIZER, None), ActivationQuantizer):
                built = _build(state_dict[key], {"ActivationQuantizer": ActivationQuantizer}, key)
                attach_input_quantizer(module, built.to(next(module.parameters()).device))  # type: ignore[arg-type]
                installed += 1
    return installed


def restore(model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True) -> nn.Module:
    """Install the structure ``state_dict`` describes on ``model``, load the tensors, return ``model``.

    Args:
        model: the model as constructed (plain), or one that already holds the structure.
        state_dict: e.g. ``torch.load(ckpt, weights_only=True)["state_dict"]`` for a LightningModule.
        strict: passed to ``load_state_dict``.

    Raises:
        TypeError: ``model`` is not a module or ``state_dict`` not a mapping (e.g. a path).
        ValueError: a key of an unknown lit_opt module kind, a configuration that cannot be rebuilt,
            or tensors that don't fit ``model`` (another architecture, or a corrupt checkpoint).
    """
    check_module("model", model, "HINT: construct the model first, e.g. restore(MyModule(), state_dict).")
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict is a {type(state_dict).__name__}; expected a mapping of names to tensors. "
            "HINT: torch.load(path, weights_only=True)['state_dict'] for a Lightning checkpoint."
        )
    install_structure(model, state_dict)
    try:
        model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:
        raise ValueError(
            f"state_dict does not fit {type(model).__name__}: {err} HINT: pass the model the checkpoint was "
            "trained with (same architecture and arguments); a checkpoint that never did is corrupt."
        ) from None
    return model

"""How an artifact says what architecture to rebuild, and how ``load`` rebuilds it without running
code from the artifact: a Hugging Face class name from the ``transformers`` namespace plus its
config, or an import path of an installed class plus JSON init arguments."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

from torch import nn


def describe(model: nn.Module) -> dict[str, Any] | None:
    """A JSON-able recipe that rebuilds ``model``'s architecture, or None (a skeleton is then needed)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        PreTrainedModel = ()  # type: ignore[assignment,misc]
    cls = type(model)
    if isinstance(model, PreTrainedModel):
        # `_name_or_path` is where the writer loaded the model from (often a temporary directory):
        # meaningless on another machine, so the artifact does not carry it
        config = {**model.config.to_dict(), "_name_or_path": ""}
        return {"type": "huggingface", "class": cls.__name__, "config": config}
    hparams = getattr(model, "hparams", None)
    if hparams is not None:
        accepted = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        # LightningCLI adds private bookkeeping (`_class_path`, `_instantiator`); keep what __init__ accepts
        kept = {
            k: v for k, v in dict(hparams).items() if not k.startswith("_") and (takes_any or k in accepted)
        }
        try:
            init_args = json.loads(json.dumps(kept))
        except TypeError:
            return None
        return {"type": "import", "target": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
    return None


def hf_config(recipe: dict[str, Any]) -> Any:
    """The ``transformers`` config object of a ``"huggingface"`` recipe (see :func:`describe`)."""
    import transformers

    config = dict(recipe["config"])
    return transformers.AutoConfig.for_model(config.pop("model_type"), **config)


def rebuild(recipe: dict[str, Any] | None, where: str) -> nn.Module:
    """Build the skeleton a :func:`describe` recipe names (weights are loaded separately).

    Raises:
        ValueError: no recipe, or one that names something other than a model class.
    """
    if not recipe or not isinstance(recipe, dict):
        raise ValueError(
            f"{where} records no architecture. HINT: pass the model skeleton: lit_opt.load(dirpath, model=MyModel())."
        )
    if recipe.get("type") == "huggingface":
        import transformers

        cls = getattr(transformers, str(recipe.get("class")), None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise ValueError(
                f"{where} names {recipe.get('class')!r}, which is not a transformers model class."
            )
        return cls(hf_config(recipe))
    if recipe.get("type") == "import":
        module_name, _, name = str(recipe.get("target")).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{where} names {recipe.get('target')!r}, which cannot be imported ({err}). "
                "HINT: install the package that defines it, or pass model=..."
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"{where} names {recipe.get('target')!r}, which is not an nn.Module class.")
        return cls(**recipe.get("init_args", {}))
    raise ValueError(f"{where} has an architecture of unknown type {recipe.get('type')!r}.")


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face causal LM that ``generate`` can run (a ``*ForCausalLM``/``*LMHeadModel``).

    Example::

        >>> is_causal_lm(nn.Linear(2, 2))
        False
    """
    name = type(getattr(model, "_orig_mod", model)).__name__
    return callable(getattr(model, "generate", None)) and name.endswith(("ForCausalLM", "LMHeadModel"))

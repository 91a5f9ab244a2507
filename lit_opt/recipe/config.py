"""The recipe's settings: dataclasses read from a YAML file, every field overridable from the command line.

Example::

    >>> config = load_config(None, ["--output_dir=out", "--data.max_length", "64"])
    >>> config.output_dir, config.data.max_length
    ('out', 64)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lit_opt.optim import check_schedule


@dataclass
class DataConfig:
    """The text-classification data (:class:`~lit_opt.data.TextClassificationDataModule`'s arguments).

    ``path: null`` is the Rotten Tomatoes critic snippets; ``max_train_rows`` cuts the training split
    to its first rows (a seeded sample) for quick runs.
    """

    path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = 128
    batch_size: int = 32
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    max_train_rows: int | None = None
    cache_dir: str | None = None


@dataclass
class TeacherConfig:
    """Fine-tuning the teacher (a Hugging Face directory; ``null``: all-MiniLM-L6-v2 of its package)."""

    path: str | None = None
    epochs: int = 1
    max_steps: int = -1
    lr: float = 5.0e-5
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup: float = 0.0


@dataclass
class StudentConfig:
    """The 3-layer student and its distillation (``DistillationModule``).

    ``init: keep_layers`` copies the fine-tuned teacher's ``layers``; ``minilm_l3`` is the pretrained
    paraphrase-MiniLM-L3-v2.
    """

    init: Literal["keep_layers", "minilm_l3"] = "keep_layers"
    layers: list[int] = field(default_factory=lambda: [0, 2, 4])
    epochs: int = 1
    max_steps: int = -1
    lr: float = 1.0e-4
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.5


@dataclass
class CompressConfig:
    """Compressing the distilled student while it keeps distilling: structured pruning, QAT, vocabulary.

    ``ffn_sparsity`` removes that share of each feed-forward layer's neurons, ``head_sparsity`` of the
    attention heads (0 disables either). Encoder Linear layers get ``weight_bits`` QAT with
    ``activations``; the word embeddings ``embedding_bits`` per group of ``embedding_group_size``.
    ``prune_vocabulary`` keeps only the embedding rows of tokens the training split uses.
    ``lr_schedule: linear`` (the default here) brings the learning rate to 0 at the last step, so the
    quantized weights settle instead of crossing rounding steps until the end.
    """

    epochs: int = 1
    max_steps: int = -1
    lr: float = 1.0e-4
    lr_schedule: Literal["constant", "linear"] = "linear"
    warmup: float = 0.0
    ffn_sparsity: float = 0.5
    head_sparsity: float = 0.5
    prune_fraction_of_training: float = 0.5
    weight_bits: Literal[4, 8] = 8
    activations: Literal["dynamic", "static", "none"] = "none"
    embedding_bits: Literal[4, 8] = 4
    embedding_group_size: int = 128
    prune_vocabulary: bool = True
    export_dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"


@dataclass
class LatencyConfig:
    """Latency at batch 1 and 32: synthetic token ids, all rows interleaved in one loop, medians.

    ``onnx`` adds the ONNX Runtime rows (``teacher-onnx-fp32``, ``teacher-onnx-int8``,
    ``lit-opt-compressed-onnx``; needs ``pip install 'lit_opt[onnx]'``). ``settle_ms`` pauses before each
    timed call: ONNX Runtime's threads busy-wait for tens of milliseconds after a call and would otherwise
    slow the PyTorch row after them (about 2x for the teacher at batch 1 on 2 cores).
    """

    threads: int = 2
    seq_len: int = 128
    repeats: int = 10
    warmup: int = 2
    settle_ms: float = 50.0
    kernel: Literal["auto", "reference", "int8", "bf16", "packed_int8", "packed_int4"] = "auto"
    onnx: bool = True


@dataclass
class RecipeConfig:
    """Everything the sequence-classification recipe runs (see ``configs/recipes/rotten_tomatoes.yaml``)."""

    task: Literal["classification"] = "classification"
    output_dir: str = "outputs/recipe"
    seed: int = 0
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def check(self) -> None:
        """Raise ``ValueError`` for a value out of its range (types are checked when the config is built)."""
        _check_ranges(self)


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            keys += valid_keys(typing.cast(type, kind), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _accepts(kind: Any, value: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if origin is Literal:
        return value in typing.get_args(kind) and type(value) in {type(a) for a in typing.get_args(kind)}
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _build(cls: type, values: Any, prefix: str = "", root: type | None = None) -> Any:
    if not isinstance(values, dict):
        raise ValueError(
            f"{prefix.rstrip('.') or 'the config'}={values!r} is not accepted; expected a mapping of "
            f"{[f.name for f in dataclasses.fields(cls)]}."
        )
    root = root or cls
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(
                f"unknown config key {prefix + str(key)!r}. Valid keys: {', '.join(valid_keys(root))}."
            )
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(typing.cast(type, kind), value, f"{prefix}{key}.", root)
        elif _accepts(kind, value):
            kwargs[key] = float(value) if kind is float else value
        elif _accepts(kind, number := _exponent_text(value)):
            kwargs[key] = number
        else:
            raise ValueError(
                f"{prefix}{key}={value!r} is not accepted; expected {_describe(kind)}. "
                f"HINT: e.g. --{prefix}{key}={_example(cls, key)}."
            )
    return cls(**kwargs)


def _exponent_text(value: Any) -> Any:
    """``"5e-5"`` as the float YAML 1.1 leaves it a string of (an exponent without a dot); else ``value``."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _describe(kind: Any) -> str:
    text = str(kind).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")


def _example(cls: type, key: str) -> str:
    default = getattr(cls(), key)
    return yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ValueError(f"--{dotted}: {name!r} is not a section of the config.")
        node = child
    node[leaf] = value


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``["--data.path=x.csv", "--output_dir", "out"]`` as a nested dict; values are read as YAML.

    Example::

        >>> parse_overrides(["--data.max_length=64", "--teacher.path", "null"])
        {'data': {'max_length': 64}, 'teacher': {'path': None}}
    """
    tree: dict[str, Any] = {}
    items = list(argv)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or item == "--":
            raise ValueError(
                f"{item!r} is not an override; expected --key=value or --key value, e.g. --output_dir=outputs/run."
            )
        key, sep, text = item[2:].partition("=")
        if not sep:
            if not items:
                raise ValueError(f"--{key} has no value; expected --{key}=VALUE.")
            text = items.pop(0)
        _set_dotted(tree, key, yaml.safe_load(text) if text != "" else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_class(task: Any) -> type:
    """The settings' dataclass of ``task`` (``classification`` or ``causal_lm``).

    Raises:
        ValueError: For another task.
    """
    from lit_opt.recipe.lm_config import CausalLMRecipeConfig

    classes: dict[str, type] = {"classification": RecipeConfig, "causal_lm": CausalLMRecipeConfig}
    if task not in classes:
        raise ValueError(
            f"task={task!r} is not accepted; expected one of {list(classes)}. "
            "HINT: configs/recipes/rotten_tomatoes.yaml (classification), smollm2_rotten_tomatoes.yaml (causal_lm)."
        )
    return classes[task]


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """The recipe's settings: the defaults, then the YAML file at ``path``, then the ``--key=value`` overrides.

    The ``task`` key (default ``classification``) picks the settings' dataclass: :class:`RecipeConfig`
    or :class:`~lit_opt.recipe.lm_config.CausalLMRecipeConfig`.

    Raises:
        ValueError: a missing or malformed file, an unknown task or key (the message lists the valid ones)
            or a value of the wrong type.

    Example::

        >>> load_config(None, ["--student.layers=[0, 5]"]).student.layers
        [0, 5]
    """
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ValueError(
                f"config={str(path)!r} is not a file. HINT: e.g. configs/recipes/rotten_tomatoes.yaml."
            )
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"config={str(path)!r} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(
                f"config={str(path)!r} holds {type(loaded).__name__}; expected a mapping of settings."
            )
        values = loaded or {}
    values = _merge(values, parse_overrides(overrides or []))
    config = _build(config_class(values.get("task", "classification")), values)
    config.check()
    return config


def check_ranges(
    minimums: list[tuple[str, int, int]],
    sparsities: list[tuple[str, float]],
    prune_fraction_of_training: float,
    output_dir: str,
    training_stages: dict[str, Any],
) -> None:
    """The range checks every recipe config shares: integers' minimums, sparsities, the pruning share, the
    output, and each training stage's (``{"student": config.student, ...}``) ``lr_schedule`` and ``warmup``.

    Raises:
        ValueError: naming the first value out of its range.
    """
    for name, value, minimum in minimums:
        if value < minimum:
            raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")
    for name, fraction in sparsities:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name}={fraction!r} is not accepted; expected a fraction in [0, 1).")
    if not 0.0 < prune_fraction_of_training <= 1.0:
        raise ValueError(
            f"compress.prune_fraction_of_training={prune_fraction_of_training!r} is not "
            "accepted; expected a fraction in (0, 1]: the share of the compression steps that prune."
        )
    if not output_dir:
        raise ValueError("output_dir='' is not accepted; expected a directory path, e.g. outputs/recipe.")
    for name, stage in training_stages.items():
        check_schedule(stage.lr_schedule, stage.warmup, prefix=f"{name}.")


def _check_ranges(config: RecipeConfig) -> None:
    checks = [
        ("data.max_length", config.data.max_length, 2),
        ("data.batch_size", config.data.batch_size, 1),
        ("data.max_train_rows", config.data.max_train_rows or 1, 1),
        ("teacher.epochs", config.teacher.epochs, 1),
        ("student.epochs", config.student.epochs, 1),
        ("compress.epochs", config.compress.epochs, 1),
        ("compress.embedding_group_size", config.compress.embedding_group_size, 1),
        ("latency.threads", config.latency.threads, 1),
        ("latency.seq_len", config.latency.seq_len, 1),
        ("latency.repeats", config.latency.repeats, 1),
        ("latency.warmup", config.latency.warmup, 0),
    ]
    if config.latency.settle_ms < 0:
        raise ValueError(
            f"latency.settle_ms={config.latency.settle_ms!r} is not accepted; expected a pause >= 0 "
            "milliseconds (0 times the rows back to back)."
        )
    sparsities = [
        ("compress.ffn_sparsity", config.compress.ffn_sparsity),
        ("compress.head_sparsity", config.compress.head_sparsity),
    ]
    stages = {"teacher": config.teacher, "student": config.student, "compress": config.compress}
    check_ranges(checks, sparsities, config.compress.prune_fraction_of_training, config.output_dir, stages)

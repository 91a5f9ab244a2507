"""``lit-opt export``: write the compressed artifact of a trained checkpoint."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from lit_opt.export.exporter import export
from lit_opt.export.onnx import export_onnx
from lit_opt.restore import restore

log = logging.getLogger(__name__)


def export_command(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    trainer: pl.Trainer,
    ckpt_path: str,
    dirpath: str = "artifacts/model",
    submodule: str | None = None,
    dtype: Literal["float32", "float16", "bfloat16"] | None = None,
    format: Literal["lit_opt", "onnx"] = "lit_opt",  # noqa: A002 - the command line's --format
) -> None:
    """Write the compressed artifact (int8/int4 codes, scales, manifest) of a trained checkpoint.

    The checkpoint's compression structure (QAT quantizers) is rebuilt on the configured model with
    :func:`lit_opt.restore`, then :func:`lit_opt.export` writes it to ``dirpath``; with ``--format onnx``,
    :func:`lit_opt.export_onnx` writes ``model.onnx`` (run by ONNX Runtime, see :func:`lit_opt.load_onnx`).

    Example::

        lit-opt export --config configs/digits_qat.yaml --ckpt_path outputs/.../last.ckpt --dirpath out/
        lit-opt export --config my_bert.yaml --ckpt_path last.ckpt --submodule model --format onnx --dirpath out/
    """
    if format not in ("lit_opt", "onnx"):
        raise ValueError(f"format={format!r} is not one of ('lit_opt', 'onnx'). HINT: e.g. --format onnx.")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    restore(model, checkpoint["state_dict"])
    if submodule is not None and not hasattr(model, submodule):
        raise ValueError(f"submodule={submodule!r} is not an attribute of {type(model).__name__}.")
    target = getattr(model, submodule) if submodule else model
    if format == "onnx":
        with tempfile.TemporaryDirectory(prefix="lit_opt_export-") as scratch:
            path = export_onnx(export(target, Path(scratch) / "artifact", dtype=dtype), dirpath)
    else:
        path = export(target, dirpath, dtype=dtype)
    log.info("lit-opt export: wrote %s", path)

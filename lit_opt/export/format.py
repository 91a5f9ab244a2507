"""The artifact on disk: a directory with ``model.safetensors`` and the ``lit_opt.json`` manifest.

Written under a temporary name and renamed when complete, so an interrupted export never looks
whole. Reading checks the format key and version, the weights file's size and SHA-256, and that
every tensor the manifest names is present, so a truncated, tampered or foreign artifact gets a
``ValueError`` that names the file and what is wrong. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from lit_opt.export import codebook as codebook_encoding
from lit_opt.functional.quantize import GRANULARITIES, weight_blocks

FORMAT = "lit_opt"
FORMAT_VERSION = 2  # 2: plan.tied, "transposed" entries (Conv1D), "attributes" structure steps
MANIFEST = "lit_opt.json"
WEIGHTS = "model.safetensors"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
ENCODINGS: tuple[str, ...] = ("raw", "int8", "int4", codebook_encoding.ENCODING)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(dirpath: Path, fill: Callable[[Path], None], overwrite: bool) -> Path:
    """Let ``fill`` write into a fresh temporary sibling of ``dirpath``, then rename it into place.

    Raises:
        FileExistsError: ``dirpath`` exists and ``overwrite`` is False.
    """
    dirpath = Path(dirpath).absolute()
    if dirpath.exists() and not overwrite:
        raise FileExistsError(
            f"dirpath={str(dirpath)!r} exists. HINT: pass overwrite=True or choose a new directory."
        )
    dirpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = dirpath.parent / f".{dirpath.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        if dirpath.exists():
            old = dirpath.parent / f".{dirpath.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(dirpath, old)
            os.replace(tmp, dirpath)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dirpath)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dirpath


def write_manifest(dirpath: Path, manifest: dict[str, Any]) -> None:
    """Write ``lit_opt.json`` (last, after the weights whose hash it records)."""
    (dirpath / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def read_artifact(dirpath: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Validate and read an artifact directory; returns ``(manifest, tensors)``.

    Raises:
        FileNotFoundError: the directory does not exist.
        ValueError: not a lit_opt artifact, an unsupported version, or a truncated or modified file.
    """
    root = Path(dirpath)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dirpath={str(root)!r} is not a directory. HINT: pass the directory export() wrote."
        )
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(
            f"{manifest_path} is missing: {root} is not a lit_opt artifact (or its export did not finish)."
        )
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"{manifest_path} is {manifest_path.stat().st_size} bytes, too large for a lit_opt manifest."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest_path} is not valid JSON ({err}); the artifact is corrupt.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{manifest_path} has format {found!r}, expected {FORMAT!r}: not a lit_opt artifact."
        )
    version = manifest.get("format_version")
    if not (_is_int(version) and 1 <= cast(int, version) <= FORMAT_VERSION):
        raise ValueError(
            f"{manifest_path} has format_version {version!r}; this lit_opt reads versions 1 to "
            f"{FORMAT_VERSION}. HINT: load it with the lit_opt version that wrote it "
            f"({manifest.get('lit_opt_version')!r}) or a newer one."
        )
    weights = root / WEIGHTS
    files = manifest.get("files")
    expected = files.get(WEIGHTS) if isinstance(files, dict) else None
    expected = expected if isinstance(expected, dict) else {}
    if not weights.is_file():
        raise ValueError(f"{weights} is missing from the artifact {root}.")
    size = weights.stat().st_size
    if size != expected.get("bytes"):
        raise ValueError(
            f"{weights} is {size} bytes but {MANIFEST} records {expected.get('bytes')}: truncated or replaced."
        )
    if sha256(weights) != expected.get("sha256"):
        raise ValueError(
            f"{weights} does not match the SHA-256 recorded in {MANIFEST}: the file was modified."
        )
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights} cannot be read as safetensors: {err}") from None
    _check_entries(manifest, tensors, manifest_path, weights)
    return manifest, tensors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sparse(
    key: str, entry: dict[str, Any], tensors: dict[str, Tensor], numel: int, where: Path
) -> int:
    """For a sparse entry (packed mask + kept values) check the mask and return the kept count."""
    mask = entry.get("mask")
    if mask is None:
        return numel
    nnz = entry.get("nnz")
    packed = tensors[mask]
    if (
        not (isinstance(nnz, int) and 0 <= nnz <= numel)
        or packed.dtype != torch.uint8
        or packed.numel() != (numel + 7) // 8
    ):
        raise ValueError(
            f"{where}: the sparse entry of tensor {key!r} (mask {mask!r}, nnz {nnz!r}) is malformed."
        )
    return int(nnz)


def _check_entries(manifest: dict[str, Any], tensors: dict[str, Tensor], where: Path, weights: Path) -> None:
    """Check that the manifest's entries are well formed and agree with the tensors in ``weights``.

    The manifest carries no hash of itself, so a hand-edited or damaged one must fail here with a
    ``ValueError`` rather than load the skeleton's own weights silently or crash inside torch.
    """
    entries, modules = manifest.get("tensors"), manifest.get("modules", {})
    if (
        not isinstance(entries, dict)
        or not isinstance(modules, dict)
        or not all(isinstance(v, dict) for v in (*entries.values(), *modules.values()))
    ):
        raise ValueError(f"{where} has malformed 'tensors'/'modules' sections; the artifact is corrupt.")
    referenced = [
        ref
        for key, entry in entries.items()
        for ref in (
            key,
            entry.get("scale"),
            entry.get("zero_point"),
            entry.get("mask"),
            entry.get("codebook"),
        )
        if ref is not None
    ]
    missing = [key for key in referenced if not isinstance(key, str) or key not in tensors]
    if missing:
        raise ValueError(f"{weights} lacks tensors the manifest names, e.g. {missing[:3]}.")
    quantized_modules = {f"{name}.weight" if name else "weight" for name in modules}
    for key, entry in entries.items():
        encoding, shape, data = entry.get("encoding"), entry.get("shape"), tensors[key]
        if encoding not in ENCODINGS:
            raise ValueError(f"{where}: tensor {key!r} has encoding {encoding!r}, not one of {ENCODINGS}.")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise ValueError(f"{where}: tensor {key!r} has shape {shape!r}, not a list of sizes.")
        if encoding == codebook_encoding.ENCODING:
            codebook_encoding.check_entry(key, entry, tensors, where)
            continue
        numel = math.prod(shape)
        count = _check_sparse(key, entry, tensors, numel, where)  # entries stored: all, or the kept ones
        if encoding == "raw":
            if list(data.shape) != shape and (entry.get("mask") is None or data.numel() != count):
                raise ValueError(f"{where}: tensor {key!r} is {list(data.shape)} in {weights}, not {shape}.")
            continue
        stored = (torch.uint8, (count + 1) // 2) if encoding == "int4" else (torch.int8, count)
        group_size = entry.get("group_size")
        if (
            (data.dtype, data.numel()) != stored
            or len(shape) < 2
            or entry.get("granularity") not in GRANULARITIES
            or not (group_size is None or _is_int(group_size))
            or key not in quantized_modules
        ):
            raise ValueError(
                f"{where}: the {encoding} entry of tensor {key!r} is inconsistent with {weights}."
            )
        try:
            blocks = weight_blocks(torch.empty(shape, device="meta"), entry["granularity"], group_size).shape[
                :2
            ]
        except ValueError as err:
            raise ValueError(
                f"{where}: the {encoding} entry of tensor {key!r} is inconsistent: {err}"
            ) from None
        for ref in (entry.get("scale"), entry.get("zero_point")):
            if ref is not None and tensors[ref].shape != blocks:
                raise ValueError(
                    f"{where}: {ref!r} has shape {list(tensors[ref].shape)}, not {list(blocks)}."
                )
    for name, spec in modules.items():
        mode, prefix = spec.get("activations", "none"), f"{name}." if name else ""
        if mode not in ("dynamic", "static", "none") or (
            mode != "none" and not all(isinstance(spec.get(k), bool) for k in ("per_sample", "symmetric"))
        ):
            raise ValueError(f"{where}: module {name!r} has a malformed activation spec {spec!r}.")
        for ref in (f"{prefix}input_quantizer.scale", f"{prefix}input_quantizer.zero_point"):
            if mode == "static" and (ref not in tensors or tensors[ref].numel() != 1):
                raise ValueError(f"{weights} lacks the static activation range {ref!r} the manifest names.")

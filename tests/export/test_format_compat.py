"""Artifacts written by an earlier format version keep loading (the compatibility promise of docs/format.md).

``tests/fixtures/artifact_v<N>`` was written by lit_opt with ``format_version`` N: a tiny BERT student
distilled with heads and FFN-row pruning (physically removed), static int8 QAT on the encoder and int4
word embeddings over a pruned vocabulary. ``artifact_v<N>_expected.safetensors`` beside it holds inputs
and the logits the trained model gave for them. When the format version moves, keep every fixture and
add one written by the new version with::

    python -m tests.export.test_format_compat tests/fixtures/artifact_v<N>
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lit_opt
from lit_opt.export.format import FORMAT_VERSION, MANIFEST

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPECTED = "expected.safetensors"


@pytest.mark.parametrize("version", range(1, FORMAT_VERSION + 1))
def test_artifacts_of_every_format_version_load_and_reproduce_their_logits(version: int) -> None:
    artifact = FIXTURES / f"artifact_v{version}"
    assert json.loads((artifact / MANIFEST).read_text())["format_version"] == version
    expected = load_file(FIXTURES / f"artifact_v{version}_{EXPECTED}")
    loaded = lit_opt.load(artifact, kernel="reference")
    with torch.no_grad():
        got = loaded(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).logits
    torch.testing.assert_close(got, expected["logits"], atol=1e-5, rtol=0)
    assert [layer.attention.self.num_attention_heads for layer in loaded.bert.encoder.layer] == [1, 1]


def _write_fixture(dirpath: Path) -> None:
    """Train the composed tiny student for a few steps and export it with the current format version."""
    from tests.hardening.test_composition import _fit
    from tests.helpers.models import hf_dataloader

    with tempfile.TemporaryDirectory() as tmp:
        module = _fit(Path(tmp))
        lit_opt.export(module, dirpath)
    batch = next(iter(hf_dataloader(n=8, batch_size=8, seed=3)))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        logits = module.student.eval()(**inputs).logits
    save_file({**inputs, "logits": logits.contiguous()}, str(dirpath.parent / f"{dirpath.name}_{EXPECTED}"))
    print(f"wrote {dirpath} (format_version {FORMAT_VERSION})")


if __name__ == "__main__":
    _write_fixture(Path(sys.argv[1]))

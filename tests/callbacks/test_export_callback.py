"""``ExportCallback``: the artifact written at the end of ``fit`` loads and equals the trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lit_opt
from lit_opt import ExportCallback, QATCallback
from tests.helpers.models import BoringClassifier, HFClassifier, hf_dataloader, tiny_bert
from tests.helpers.trainer import tiny_trainer


def test_export_at_fit_end_equals_trained_model(tmp_path: Path) -> None:
    module = BoringClassifier(net="mlp", lr=0.1, seed=0)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    callback = ExportCallback(dirpath=str(tmp_path / "a"))
    trainer = tiny_trainer(tmp_path, max_steps=3, callbacks=[QATCallback(), callback])
    trainer.fit(module)
    assert trainer.global_step == 3
    assert callback.path == (tmp_path / "a").absolute()
    assert not torch.equal(
        module.net.fc1.parametrizations.weight.original, initial["net.fc1.weight"]
    )  # it trained

    manifest = json.loads((tmp_path / "a" / "lit_opt.json").read_text())
    assert manifest["plan"] == {"quantization": "qat", "structure": [], "notes": []}
    assert manifest["tensors"]["net.fc1.weight"]["encoding"] == "int8"
    assert manifest["architecture"]["type"] == "import"  # a LightningModule with saved hyperparameters
    assert manifest["architecture"]["init_args"] == {"net": "mlp", "lr": 0.1, "seed": 0, "momentum": 0.0}

    module.eval()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = module(x)
        skeleton = lit_opt.load(tmp_path / "a", model=BoringClassifier(net="mlp", seed=7), kernel="reference")
        rebuilt = lit_opt.load(tmp_path / "a", kernel="reference")  # from the import-path recipe
        assert torch.equal(skeleton(x), expected)
        assert torch.equal(rebuilt(x), expected)


def test_export_submodule_with_dtype(tmp_path: Path) -> None:
    """``submodule="model"`` writes the wrapped Hugging Face model, which then rebuilds without a skeleton."""
    module = HFClassifier(num_labels=2, seed=0)
    callback = ExportCallback(dirpath=str(tmp_path / "hf"), submodule="model", dtype="bfloat16")
    trainer = tiny_trainer(tmp_path, max_steps=2, callbacks=[QATCallback(exclude=["*classifier"]), callback])
    trainer.fit(module)
    manifest = json.loads((tmp_path / "hf" / "lit_opt.json").read_text())
    assert manifest["architecture"]["class"] == "BertForSequenceClassification"
    assert manifest["tensors"]["classifier.weight"] == {
        "encoding": "raw",
        "shape": [2, 32],
        "dtype": "bfloat16",
    }
    loaded = lit_opt.load(tmp_path / "hf", kernel="reference")
    batch = next(iter(hf_dataloader(n=8, seed=3)))
    module.eval()
    with torch.no_grad():
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # bf16-rounded float tensors (LayerNorm, biases, classifier): close, not equal
    assert (got - want).abs().max().item() <= 0.05 * want.abs().max().item()
    assert type(loaded) is type(tiny_bert())


def test_bad_dtype_rejected() -> None:
    with pytest.raises(
        ValueError, match=r"dtype='int8' is not one of \['bfloat16', 'float16', 'float32'\] or None"
    ):
        ExportCallback(dtype="int8")  # type: ignore[arg-type]


def test_bad_dirpath_rejected() -> None:
    with pytest.raises(ValueError, match=r"dirpath='' must be a non-empty path"):
        ExportCallback(dirpath="")


def test_missing_submodule_rejected(tmp_path: Path) -> None:
    module = BoringClassifier(net="mlp")
    trainer = tiny_trainer(
        tmp_path, max_steps=1, callbacks=[ExportCallback(str(tmp_path / "a"), submodule="student")]
    )
    with pytest.raises(
        ValueError,
        match=r"submodule='student' is not an attribute of BoringClassifier; its children are \['net'\]",
    ):
        trainer.fit(module)
    assert not (tmp_path / "a").exists()


def test_plain_model_without_quantizers_exports_raw(tmp_path: Path) -> None:
    """Without QAT the callback writes the float weights as they are (and says so in the plan)."""
    module = BoringClassifier(net="mlp", seed=0)
    trainer = tiny_trainer(tmp_path, max_steps=1, callbacks=[ExportCallback(str(tmp_path / "a"))])
    trainer.fit(module)
    manifest = json.loads((tmp_path / "a" / "lit_opt.json").read_text())
    assert manifest["plan"] == {"quantization": None, "structure": [], "notes": []}
    assert {e["encoding"] for e in manifest["tensors"].values()} == {"raw"}
    loaded = lit_opt.load(tmp_path / "a", model=BoringClassifier(net="mlp", seed=3), kernel="reference")
    x = torch.randn(4, 16)
    module.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))

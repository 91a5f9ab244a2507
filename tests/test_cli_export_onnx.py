"""``lit-opt export --format onnx``: a trained checkpoint's QAT model as an ONNX graph run by ONNX Runtime."""

import pytest
import torch

import lit_opt
from lit_opt import QATCallback
from lit_opt.commands.export import export_command
from tests.helpers.models import HFClassifier, hf_dataloader


def test_export_command_writes_an_onnx_graph_of_the_checkpoint(tmp_path, make_trainer):
    module = HFClassifier()
    trainer = make_trainer(
        max_steps=2, callbacks=[QATCallback(weight_bits=8, targets=["model.bert.encoder.*"])]
    )
    trainer.fit(module, hf_dataloader())
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    export_command(
        HFClassifier(),
        None,
        trainer,
        str(tmp_path / "last.ckpt"),
        str(tmp_path / "onnx"),
        "model",
        None,
        "onnx",
    )
    batch = next(iter(hf_dataloader()))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.inference_mode():
        expected = module.model.eval()(**inputs).logits
    torch.testing.assert_close(
        lit_opt.load_onnx(tmp_path / "onnx")(**inputs).logits, expected, atol=0.02, rtol=0
    )


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"format='tflite' is not one of \('lit_opt', 'onnx'\)"):
        export_command(
            HFClassifier(), None, None, str(tmp_path / "x.ckpt"), str(tmp_path / "out"), None, None, "tflite"
        )

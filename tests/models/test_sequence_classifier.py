"""``SequenceClassifier``: a Hugging Face classifier fine-tuned in training mode, its metrics, export and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt.models import SequenceClassifier
from tests.helpers.models import hf_dataloader, tiny_bert
from tests.helpers.trainer import modes_at_training_start, tiny_trainer


def test_fits_in_training_mode_and_logs_accuracy(tmp_path, monkeypatch):
    module = SequenceClassifier(tiny_bert().eval(), lr=1e-3)  # as from_pretrained returns it
    trainer = tiny_trainer(tmp_path, max_steps=4)  # one epoch, then validation
    with modes_at_training_start(monkeypatch) as fits:
        trainer.fit(module, hf_dataloader(), hf_dataloader(n=16))
    assert fits == [[]]
    assert 0.0 <= trainer.callback_metrics["val_acc"].item() <= 1.0
    (predictions,) = trainer.predict(module, hf_dataloader(n=8))
    assert predictions.shape == (8,)


def test_export_writes_the_hugging_face_model(tmp_path):
    module = SequenceClassifier(tiny_bert())
    loaded = lit_opt.load(lit_opt.export(module, tmp_path / "a"), kernel="reference")
    batch = {k: v for k, v in next(iter(hf_dataloader())).items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(loaded(**batch).logits, module.eval()(batch))


def test_a_model_without_num_labels_is_refused():
    with pytest.raises(
        ValueError, match=r"model=Linear has no config.num_labels\. HINT: pass a Hugging Face"
    ):
        SequenceClassifier(nn.Linear(2, 2))

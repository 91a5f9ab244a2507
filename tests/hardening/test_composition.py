"""Distillation + vocabulary pruning + structured pruning + QAT + export in one Trainer run, on a Hugging Face student.

Under two-process DDP (gloo, ``ddp_spawn``) and under ``precision="bf16-mixed"``: every tensor of the
model (weights, masks, quantizer scales and ranges) is identical on both ranks at every checkpoint;
the artifact is written once, by rank 0; the loaded artifact equals the trained student.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_opt
from tests.helpers.models import hf_dataloader, tiny_bert
from tests.helpers.trainer import tiny_trainer

STEPS = 12


class RecordCheckpointState(Callback):
    """Saves each rank's copy of the model state whenever a checkpoint is taken (every rank runs this)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        state = {
            k: v.detach().clone() for k, v in checkpoint["state_dict"].items() if isinstance(v, torch.Tensor)
        }
        torch.save(state, Path(self.out) / f"rank{trainer.global_rank}-step{trainer.global_step}.pt")


def _module() -> lit_opt.DistillationModule:
    # the student's vocabulary pruned to the training ids before fit (a structure change), its
    # embeddings then trained in int4 by their own QATCallback
    keep = lit_opt.token_ids_in_use(
        [batch["input_ids"] for batch in hf_dataloader(n=32, batch_size=4)], special_ids=[0, 1]
    )
    student = lit_opt.prune_vocabulary(tiny_bert(seed=1), keep, unk_token_id=1)
    return lit_opt.DistillationModule(
        student=student, teacher=tiny_bert(seed=0), temperature=2.0, alpha=0.5, lr=1e-2
    )


def _callbacks(tmp_path: Path) -> list[Callback]:
    return [
        lit_opt.IterativePruningCallback(
            0.5,
            structure="heads",
            scope="local",
            start_step=1,
            end_step=7,
            every_n_steps=2,
            targets=["student.*.attention.self"],
        ),
        lit_opt.IterativePruningCallback(
            0.5,
            structure="rows",
            scope="local",
            criterion="activation",
            start_step=1,
            end_step=7,
            every_n_steps=2,
            targets=["student.*.intermediate.dense"],
        ),
        lit_opt.QATCallback(
            weight_bits=8,
            activations="static",
            start_step=3,
            freeze_observers_step=9,
            targets=["student.bert.encoder.*"],
        ),
        lit_opt.QATCallback(
            weight_bits=4,
            granularity="per_group",
            group_size=16,
            activations="none",
            targets=["student.*word_embeddings"],
        ),
        lit_opt.ExportCallback(dirpath=str(tmp_path / "artifact")),
    ]


def _fit(tmp_path: Path, **trainer_kwargs) -> lit_opt.DistillationModule:
    module = _module()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    trainer = tiny_trainer(
        tmp_path,
        max_steps=STEPS,
        enable_checkpointing=True,
        callbacks=[*_callbacks(tmp_path), checkpoints, RecordCheckpointState(str(tmp_path))],
        **trainer_kwargs,
    )
    trainer.fit(module, train_dataloaders=hf_dataloader(n=64, batch_size=4))
    return module


def _assert_loaded_equals_trained(module: lit_opt.DistillationModule, artifact: Path) -> None:
    batch = next(iter(hf_dataloader(n=16, batch_size=16, seed=3)))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    student = module.student.eval()
    loaded = lit_opt.load(artifact, kernel="reference")
    with torch.no_grad():
        expected = student(**inputs).logits
        got = loaded(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    heads = [layer.attention.self.num_attention_heads for layer in loaded.bert.encoder.layer]
    widths = [layer.intermediate.dense.out_features for layer in loaded.bert.encoder.layer]
    assert heads == [1, 1] and widths == [32, 32]  # half of 2 heads and of 64 FFN units removed
    assert loaded.bert.embeddings.word_embeddings.remap is not None  # int4 codes of the kept rows only


@pytest.mark.ddp
@pytest.mark.slow
def test_two_rank_ddp_run_agrees_everywhere_and_exports_once(tmp_path):
    module = _fit(tmp_path, strategy="ddp_spawn", devices=2)
    steps = sorted(int(p.stem.split("step")[1]) for p in tmp_path.glob("rank0-step*.pt"))
    assert steps == [4, 8, 12]
    for step in steps:
        rank0 = torch.load(tmp_path / f"rank0-step{step}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1-step{step}.pt", weights_only=True)
        assert rank0.keys() == rank1.keys()
        assert any(k.endswith(".mask") for k in rank0) and any("input_quantizer" in k for k in rank0)
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)
    # rank 0 wrote the artifact once: one directory, no temporary siblings left behind
    assert sorted(p.name for p in tmp_path.iterdir() if "artifact" in p.name) == ["artifact"]
    # the launching process holds the trained student (ddp_spawn hand-back), equal to the artifact
    # (a weight quantizer's scale/zero_point mirror its last forward pass, which the export ran after
    # the last checkpoint, so those two are recomputed from the weights rather than compared)
    final = torch.load(tmp_path / f"rank0-step{STEPS}.pt", weights_only=True)
    for key, value in module.state_dict().items():
        if key in final and not re.search(r"parametrizations\.weight\.\d+\.(scale|zero_point)$", key):
            assert torch.equal(value, final[key]), key
    _assert_loaded_equals_trained(module, tmp_path / "artifact")


@pytest.mark.slow
def test_bf16_mixed_run_exports_what_it_trained(tmp_path):
    module = _fit(tmp_path, precision="bf16-mixed")
    assert sorted(int(p.stem.split("step")[1]) for p in tmp_path.glob("rank0-step*.pt")) == [4, 8, 12]
    _assert_loaded_equals_trained(module, tmp_path / "artifact")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_mixed_run_exports_what_it_trained(tmp_path):
    module = _fit(tmp_path, accelerator="gpu", devices=1, precision="bf16-mixed")
    assert sorted(int(p.stem.split("step")[1]) for p in tmp_path.glob("rank0-step*.pt")) == [4, 8, 12]
    saved = torch.load(tmp_path / f"rank0-step{STEPS}.pt", weights_only=True)
    assert any(k.endswith(".mask") for k in saved) and any("input_quantizer" in k for k in saved)
    module.cpu()  # trained on the GPU; the artifact is compared on the CPU with the reference kernel
    _assert_loaded_equals_trained(module, tmp_path / "artifact")
    loaded = lit_opt.load(tmp_path / "artifact", device="cuda")  # auto: bf16 on a GPU
    batch = next(iter(hf_dataloader(n=16, batch_size=16, seed=3)))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = module.student.eval()(**inputs).logits
        got = loaded(**{k: v.cuda() for k, v in inputs.items()}).logits.float().cpu()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean().item() >= 0.9

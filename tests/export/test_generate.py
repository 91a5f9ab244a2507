"""Causal LMs trained with the callbacks unchanged (QAT + heads/rows pruning), exported and loaded:
``generate()`` of the loaded model (reference kernel, KV cache, pruned widths, tied embeddings)
decodes greedily what the trained (fake-quantized, masked) model decodes."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_opt
from lit_opt.nn import QuantizedLinear
from tests.helpers.models import lm_ids, tiny_gpt2, tiny_llama
from tests.helpers.trainer import tiny_trainer


class CausalLM(L.LightningModule):
    """A tiny causal LM trained on next-token loss (labels = inputs)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.model = tiny_llama() if kind == "llama" else tiny_gpt2()

    def forward(self, input_ids: torch.Tensor):
        return self.model(input_ids=input_ids)

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        return DataLoader(TensorDataset(lm_ids(batch=8, seq_len=16, seed=1)), batch_size=4)

    def export_module(self):
        return self.model


ATTENTION = {"llama": "*.self_attn", "gpt2": "*.attn"}
MLP_ROWS = {"llama": ["*.gate_proj", "*.up_proj"], "gpt2": ["*.c_fc"]}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_loaded_model_generates_what_the_trained_model_generates(tmp_path, kind) -> None:
    module = CausalLM(kind)
    callbacks = [
        lit_opt.QATCallback(exclude=["*embed_tokens", "*wte", "*wpe", "*lm_head"]),
        lit_opt.IterativePruningCallback(
            target_sparsity=0.5, structure="heads", schedule="constant", targets=[ATTENTION[kind]]
        ),
        lit_opt.IterativePruningCallback(
            target_sparsity=0.25, structure="rows", schedule="constant", targets=MLP_ROWS[kind]
        ),
    ]
    tiny_trainer(tmp_path, callbacks=callbacks, max_steps=3).fit(module)
    trained = module.model.eval()

    path = lit_opt.export(module, tmp_path / "artifact")
    loaded = lit_opt.load(path, kernel="reference")
    layers = loaded.model.layers if kind == "llama" else loaded.transformer.h
    first_mlp = layers[0].mlp.up_proj if kind == "llama" else layers[0].mlp.c_fc
    assert isinstance(first_mlp, QuantizedLinear) and first_mlp.out_features < 64 * (
        2 if kind == "gpt2" else 1
    )
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight  # still tied

    prompt = lm_ids(batch=2, seq_len=5, seed=3)
    options = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    expected = trained.generate(prompt, attention_mask=torch.ones_like(prompt), **options)
    got = loaded.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True, **options)
    assert got.shape == (2, 17)
    assert torch.equal(got, expected)
    full = loaded(got).logits  # one pass without the cache agrees with the cached decoding
    assert torch.equal(full[:, 4:-1].argmax(-1), got[:, 5:])


def test_int4_llama_with_tied_int4_embeddings_generates_the_same(tmp_path) -> None:
    module = CausalLM("llama")
    callbacks = [lit_opt.QATCallback(weight_bits=4, granularity="per_group", group_size=16)]
    tiny_trainer(tmp_path, callbacks=callbacks, max_steps=2).fit(module)
    loaded = lit_opt.load(lit_opt.export(module, tmp_path / "a"), kernel="reference")
    assert loaded.lm_head.codes is loaded.model.embed_tokens.codes
    prompt = lm_ids(batch=1, seq_len=4, seed=5)
    options = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(loaded.generate(prompt, **options), module.model.eval().generate(prompt, **options))

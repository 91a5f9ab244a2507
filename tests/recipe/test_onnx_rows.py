"""The recipe's ONNX rows: the agreement of the compressed graph with the reference-loaded model."""

from types import SimpleNamespace

import torch

import lit_opt
from lit_opt.recipe.onnx_rows import top1_agreement
from tests.helpers.models import hf_dataloader, tiny_bert


def test_top1_agreement_of_the_onnx_graph_with_the_reference_model(tmp_path):
    model = tiny_bert()
    artifact = lit_opt.export(
        model, tmp_path / "a", quantization={"weight_bits": 8, "activations": "dynamic"}
    )
    graph = lit_opt.load_onnx(lit_opt.export_onnx(artifact, tmp_path / "onnx"))
    dm = SimpleNamespace(test_dataloader=lambda: hf_dataloader(n=16, batch_size=8))
    assert top1_agreement(graph, lit_opt.load(artifact, kernel="reference"), dm) >= 0.9

    class Flipped(torch.nn.Module):
        def forward(self, **inputs):
            return SimpleNamespace(logits=-graph(**inputs).logits)

    assert top1_agreement(graph, Flipped(), dm) == 0.0

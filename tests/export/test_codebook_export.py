"""The codebook encoding: sizes, exact reload (Hugging Face embeddings too, pruned rows removed), and
damaged manifest entries rejected as untrusted input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lit_opt
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from lit_opt.sharing import SharingConfig, cluster_weights, prepare_sharing
from tests.export.test_artifact_errors import MANIFEST, edit_manifest, rewrite_weights
from tests.helpers.models import BERT_VOCAB, build_net, tiny_bert


def _shared_mlp(n_clusters: int = 16):
    model = build_net("mlp", seed=0)
    config = SharingConfig(n_clusters=n_clusters)
    prepare_sharing(model, config)
    cluster_weights(model, config)
    return model.eval()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lit_opt.export(_shared_mlp(), tmp_path_factory.mktemp("shared") / "mlp")


@pytest.fixture
def art(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "art"))


@pytest.mark.parametrize(("n_clusters", "bits"), [(2, 1), (5, 3), (16, 4), (256, 8)])
def test_sizes_and_exact_reload(tmp_path: Path, n_clusters: int, bits: int) -> None:
    model = _shared_mlp(n_clusters)
    path = lit_opt.export(model, tmp_path / "mlp")
    manifest = json.loads((path / MANIFEST).read_text())
    entry = manifest["tensors"]["fc1.weight"]
    assert (entry["encoding"], entry["bits"], entry["n_clusters"]) == ("codebook", bits, n_clusters)
    assert any("weight sharing gives no speedup" in note for note in manifest["plan"]["notes"])
    stored = load_file(path / "model.safetensors")
    assert stored["fc1.weight"].numel() == (32 * 16 * bits + 7) // 8
    assert stored["fc1.weight.codebook"].shape == (n_clusters,)
    loaded = lit_opt.load(path, model=build_net("mlp", seed=5), kernel="reference")
    x = torch.randn(4, 16)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight) and torch.equal(loaded(x), model(x))


def test_hugging_face_model_with_embeddings_and_removed_rows(tmp_path: Path) -> None:
    model = tiny_bert()
    pruning = PruningConfig(0.5, structure="rows", scope="local", targets=["*.intermediate.dense"])
    groups = prepare_pruning(model, pruning)
    sharing = SharingConfig(n_clusters=16, exclude=["classifier"])
    shared = prepare_sharing(model, sharing)
    assert "bert.embeddings.word_embeddings" in shared
    update_masks(groups, pruning, 0.5, step=0)
    cluster_weights(model, sharing)
    path = lit_opt.export(model, tmp_path / "bert")
    manifest = json.loads((path / MANIFEST).read_text())
    entry = manifest["tensors"]["bert.encoder.layer.0.intermediate.dense.weight"]
    assert entry["encoding"] == "codebook" and entry["shape"] == [32, 32]  # half the rows physically removed
    assert manifest["tensors"]["bert.embeddings.word_embeddings.weight"]["encoding"] == "codebook"
    loaded = lit_opt.load(path, kernel="reference")
    ids = torch.randint(1, BERT_VOCAB, (2, 8))
    assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_with_qat_the_integer_codes_are_exported(tmp_path: Path) -> None:
    model = build_net("mlp", seed=0)
    sharing = SharingConfig(n_clusters=4)
    prepare_sharing(model, sharing)
    prepare_quantization(model, QuantizationConfig(weight_bits=8, activations="none"))
    cluster_weights(model, sharing)
    path = lit_opt.export(model.eval(), tmp_path / "mlp")
    entry = json.loads((path / MANIFEST).read_text())["tensors"]["fc1.weight"]
    assert entry["encoding"] == "int8"
    loaded = lit_opt.load(path, model=build_net("mlp", seed=5), kernel="reference")
    x = torch.randn(4, 16)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(bits=3), r"codebook entry of tensor 'fc1.weight'.*inconsistent"),
        (lambda e: e.update(n_clusters=300), r"n_clusters 300"),
        (lambda e: e.update(n_clusters=True), r"codebook entry of tensor 'fc1.weight'"),
        (lambda e: e.update(codebook="fc2.bias"), r"codebook 'fc2.bias'"),
        (lambda e: e.update(codebook=None), r"codebook entry of tensor 'fc1.weight'"),
        (lambda e: e.update(codebook="nowhere"), r"lacks tensors the manifest names.*nowhere"),
        (lambda e: e.update(shape=[32, 17]), r"codebook entry of tensor 'fc1.weight'"),
        (lambda e: e.update(shape="32x16"), r"shape '32x16'"),
        (lambda e: e.update(dtype="int8"), r"codebook entry of tensor 'fc1.weight'"),
    ],
)
def test_edited_codebook_entry_is_rejected(art: Path, edit, message: str) -> None:
    edit_manifest(art, lambda m: edit(m["tensors"]["fc1.weight"]))
    with pytest.raises(ValueError, match=message):
        lit_opt.load(art, model=build_net("mlp"))


def test_index_past_the_codebook_is_rejected(art: Path) -> None:
    def shrink_codebook(tensors):
        tensors["fc1.weight.codebook"] = tensors["fc1.weight.codebook"][:2].clone()
        tensors["fc1.weight"] = torch.full_like(tensors["fc1.weight"], 0x33)  # every 4-bit index is 3

    rewrite_weights(art, shrink_codebook)
    edit_manifest(art, lambda m: m["tensors"]["fc1.weight"].update(n_clusters=2, bits=1))
    with pytest.raises(ValueError, match="codebook entry of tensor 'fc1.weight'"):
        lit_opt.load(art, model=build_net("mlp"))
    edit_manifest(art, lambda m: m["tensors"]["fc1.weight"].update(n_clusters=2, bits=4))
    with pytest.raises(ValueError, match="codebook entry"):
        lit_opt.load(art, model=build_net("mlp"))


def test_index_past_a_valid_codebook_is_rejected(art: Path) -> None:
    def wrong_codebook(tensors):
        tensors["fc1.weight.codebook"] = tensors["fc1.weight.codebook"][:10].clone()

    rewrite_weights(art, wrong_codebook)
    edit_manifest(art, lambda m: m["tensors"]["fc1.weight"].update(n_clusters=10))
    with pytest.raises(ValueError, match=r"holds index 1\d, past its 10-entry codebook"):
        lit_opt.load(art, model=build_net("mlp"))

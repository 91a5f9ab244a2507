"""``load(..., dtype=...)``: the loaded model stays in fp16/bf16, inputs to outputs, and computes the fp32 model's logits."""

import pytest
import torch

import lit_opt
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from tests.helpers.models import BERT_VOCAB, tiny_bert


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    model = tiny_bert()
    prepare_quantization(
        model, QuantizationConfig(weight_bits=8, activations="dynamic", targets=["bert.encoder.*"])
    )
    embeddings = QuantizationConfig(
        weight_bits=4, granularity="per_group", group_size=16, targets=["*word_embeddings"]
    )
    prepare_quantization(model, embeddings, owner="embeddings")
    return lit_opt.export(model.eval(), tmp_path_factory.mktemp("dtype") / "bert")


COMBINATIONS = [(k, d) for k in ("reference", "auto", "bf16", "packed_int8") for d in ("float16", "bfloat16")]


@pytest.mark.parametrize(("kernel", "dtype"), [c for c in COMBINATIONS if c != ("bf16", "float16")])
def test_loaded_model_keeps_the_dtype_and_the_fp32_logits(artifact, kernel, dtype):
    wanted = getattr(torch, dtype)
    model = lit_opt.load(artifact, kernel=kernel, dtype=dtype)
    floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    assert floats and all(t.dtype == wanted for t in floats)
    ids = torch.randint(1, BERT_VOCAB, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        expected = lit_opt.load(artifact, kernel="reference")(
            input_ids=ids, attention_mask=torch.ones_like(ids)
        ).logits
    assert logits.dtype == wanted
    torch.testing.assert_close(logits.float(), expected, atol=0.02 if dtype == "bfloat16" else 0.005, rtol=0)


def test_bad_dtypes_are_rejected(artifact):
    with pytest.raises(ValueError, match=r"dtype='float64' is not one of \['bfloat16', 'float16'\] or None"):
        lit_opt.load(artifact, dtype="float64")
    with pytest.raises(ValueError, match="dtype='float16' with kernel='bf16' asks for two dtypes"):
        lit_opt.load(artifact, kernel="bf16", dtype="float16")

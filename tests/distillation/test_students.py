"""Student builders: from local Hugging Face directories, and shallower encoders and decoders (select_layers)."""

import pytest
import torch

from lit_opt.distillation.students import keep_layers, pretrained
from tests.helpers.models import hf_dataloader, lm_ids, tiny_bert, tiny_gpt2, tiny_llama


@pytest.fixture
def teacher_dir(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path / "teacher")
    return str(tmp_path / "teacher")


def test_keep_layers_copies_the_chosen_teacher_layers(teacher_dir):
    teacher = pretrained(teacher_dir)
    student = keep_layers(teacher_dir, layers=[1])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert torch.equal(
        student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight
    )
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    batch = next(iter(hf_dataloader()))
    batch.pop("labels")
    assert student(**batch).logits.shape == (8, 2)
    assert len(keep_layers(teacher_dir).bert.encoder.layer) == 1  # default: every other layer of 2


@pytest.mark.parametrize("layers", [[], [0, 0], [2], [-1]])
def test_bad_layers(teacher_dir, layers):
    with pytest.raises(ValueError, match=r"must be distinct indices of the teacher's 2 layers \(0..1\)"):
        keep_layers(teacher_dir, layers=layers)


def test_pretrained_needs_a_model_directory(tmp_path):
    with pytest.raises(ValueError, match=r"is not a Hugging Face model directory \(no config.json\)"):
        pretrained(str(tmp_path))


def test_narrow_student_trains_through_projections(teacher_dir):
    from lit_opt import DistillationModule
    from lit_opt.distillation.students import narrow

    student = narrow(teacher_dir, hidden_size=8, num_layers=1, num_heads=2)
    assert (
        student.config.hidden_size == 8
        and student.config.vocab_size == 100
        and student.config.intermediate_size == 32
    )
    module = DistillationModule(student, pretrained(teacher_dir), hidden_weight=1.0)
    assert module.projections["1"].in_features == 8 and module.projections["1"].out_features == 32
    assert torch.isfinite(module.losses(next(iter(hf_dataloader())))["loss"])
    with pytest.raises(ValueError, match=r"hidden_size=10 must be divisible by num_heads=4"):
        narrow(teacher_dir, hidden_size=10, num_heads=4)


DECODERS = {
    "llama": tiny_llama,
    "llama_untied": lambda: tiny_llama(tie=False),
    "qwen2": lambda: tiny_llama(family="qwen2"),
    "gpt2": tiny_gpt2,
}


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_select_layers_with_every_layer_reproduces_the_decoder_exactly(family):
    from lit_opt.distillation.students import select_layers

    teacher = DECODERS[family]()
    student = select_layers(teacher, [0, 1])
    ids = lm_ids()
    torch.testing.assert_close(student(ids).logits, teacher(ids).logits, rtol=0, atol=0)
    tied = teacher.get_output_embeddings().weight is teacher.get_input_embeddings().weight
    assert (student.get_output_embeddings().weight is student.get_input_embeddings().weight) == tied
    assert student.get_input_embeddings().weight is not teacher.get_input_embeddings().weight  # a copy


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_a_shallower_decoder_generates_with_its_kv_cache(family):
    from lit_opt.distillation.students import select_layers

    teacher = DECODERS[family]()
    student = select_layers(teacher, [1])
    blocks = student.transformer.h if family == "gpt2" else student.model.layers
    teacher_blocks = teacher.transformer.h if family == "gpt2" else teacher.model.layers
    assert student.config.num_hidden_layers == 1 and len(blocks) == 1 and len(teacher_blocks) == 2
    assert [m.layer_idx for m in blocks.modules() if hasattr(m, "layer_idx")] == [
        0
    ]  # was 1: the cache's index
    if family == "qwen2":
        assert student.config.layer_types == ["full_attention"]
    for (name, a), b in zip(
        blocks[0].state_dict().items(), teacher_blocks[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    prompt = lm_ids(1, 4)
    cached = student.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    uncached = student.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=False)
    assert cached.shape == (1, 10) and torch.equal(cached, uncached)


def test_keep_layers_of_a_causal_lm_directory(tmp_path):
    from lit_opt.distillation.students import select_layers

    tiny_llama().save_pretrained(tmp_path / "llama")
    student = keep_layers(str(tmp_path / "llama"), layers=[1], task="causal_lm")
    assert type(student).__name__ == "LlamaForCausalLM" and student.config.num_hidden_layers == 1
    student.save_pretrained(tmp_path / "student")  # the updated config is valid and reloads
    assert keep_layers(str(tmp_path / "student"), [0], task="causal_lm").config.num_hidden_layers == 1
    with pytest.raises(ValueError, match=r"task='lm' is not one of 'classification', 'causal_lm'"):
        keep_layers(str(tmp_path / "llama"), task="lm")
    with pytest.raises(ValueError, match=r"must be distinct indices of the teacher's 2 layers"):
        select_layers(tiny_gpt2(), [2])
    with pytest.raises(ValueError, match=r"select_layers found no list\(s\) of config.num_hidden_layers"):
        select_layers(torch.nn.Linear(2, 2), [0])

"""Teacher-output cache: top-k loss, shards per rank, stale caches, and DistillationModule runs that skip the teacher."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_opt import DistillationModule
from lit_opt.distillation.cache import TeacherCache, state_fingerprint
from lit_opt.functional.distillation import soft_target_loss, top_k_soft_target_loss
from tests.helpers.models import TinyMLP, hf_dataloader, tiny_bert
from tests.helpers.trainer import tiny_trainer

FINGERPRINT = {"teacher": "t", "data": "d"}


@pytest.mark.parametrize("shape", [(8, 4), (3, 5, 7)])
def test_top_k_loss_with_every_class_equals_the_full_loss(shape):
    s, t = torch.randn(shape) * 3, torch.randn(shape) * 3
    values, indices = t.topk(shape[-1], dim=-1)  # every class, in another order
    full = soft_target_loss(s, t, 3.0).item()  # float32: 1e-6 relative is a few ulps at this size
    assert top_k_soft_target_loss(s, values, indices, 3.0).item() == pytest.approx(full, rel=1e-6, abs=1e-6)


def test_top_k_loss_matches_a_hand_written_reference():
    s, t, temperature = torch.randn(6, 10), torch.randn(6, 10), 2.0
    values, indices = t.topk(3, dim=1)
    p = torch.softmax(values / temperature, dim=1)  # teacher renormalized over its top 3
    log_q = torch.log_softmax(s / temperature, dim=1).gather(1, indices)  # student over all 10 classes
    expected = (p * (p.log() - log_q)).sum(1).mean() * temperature**2
    loss = top_k_soft_target_loss(s, values, indices, temperature)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6) and loss.item() >= 0


def test_cache_keeps_top_k_as_float16_and_reads_every_rank_shard(tmp_path):
    logits = torch.randn(6, 10)
    rank0, rank1 = (TeacherCache(tmp_path, FINGERPRINT, top_k=3, rank=r) for r in (0, 1))
    assert rank0.get(torch.tensor([0])) is None
    values, indices = rank0.put(torch.tensor([0, 2, 4]), logits[[0, 2, 4]])
    rank1.put(torch.tensor([1, 3, 5]), logits[[1, 3, 5]])
    expected_values, expected_indices = logits[[0, 2, 4]].topk(3, dim=1)
    assert torch.equal(indices, expected_indices) and torch.equal(values, expected_values.half().float())
    assert rank0.save() == tmp_path / "teacher-logits-rank0.safetensors" and rank1.save() is not None
    assert rank0.save() is None  # unchanged since
    reader = TeacherCache(tmp_path, FINGERPRINT, top_k=3)
    assert reader.load() == 6
    got = reader.get(torch.tensor([5, 0]))
    assert got is not None and torch.equal(got[1], logits[[5, 0]].topk(3, dim=1).indices)
    assert reader.get(torch.tensor([0, 6])) is None  # one example not cached


def test_full_logits_are_kept_exactly_when_top_k_covers_every_class(tmp_path):
    cache = TeacherCache(tmp_path, FINGERPRINT, top_k=20)
    logits = torch.randn(4, 10)
    values, indices = cache.put(torch.arange(4), logits)
    assert indices is None and torch.equal(values, logits)


@pytest.mark.parametrize(
    "other",
    [{"fingerprint": {"teacher": "another", "data": "d"}}, {"top_k": 2}],
)
def test_a_stale_cache_raises_instead_of_being_used(tmp_path, other):
    writer = TeacherCache(tmp_path, FINGERPRINT, top_k=3)
    writer.put(torch.arange(2), torch.randn(2, 5))
    writer.save()
    kwargs = {"fingerprint": FINGERPRINT, "top_k": 3, **other}
    with pytest.raises(
        ValueError, match=r"holds teacher-logits-rank0.safetensors, written for another teacher"
    ):
        TeacherCache(tmp_path, **kwargs).load()


def test_cache_errors(tmp_path):
    with pytest.raises(ValueError, match=r"top_k=-1 must be an integer >= 0"):
        TeacherCache(tmp_path, FINGERPRINT, top_k=-1)
    with pytest.raises(
        ValueError, match=r"got logits of shape \(2, 3, 4\) for example indices of shape \(3,\)"
    ):
        TeacherCache(tmp_path, FINGERPRINT).put(torch.arange(3), torch.randn(2, 3, 4))
    cache = TeacherCache(tmp_path, FINGERPRINT, top_k=2)
    cache.put(torch.arange(2), torch.randn(2, 3, 4))  # a causal LM's (batch, seq, vocab): per token
    with pytest.raises(
        ValueError, match=r"holds \(3, 2\) values per example, but got \(5, 2\). HINT: .*fixed-length"
    ):
        cache.put(torch.arange(2, 4), torch.randn(2, 5, 4))


def test_state_fingerprint_follows_the_weights():
    a, b = TinyMLP(), TinyMLP()
    b.load_state_dict(a.state_dict())
    assert state_fingerprint(a) == state_fingerprint(b)
    with torch.no_grad():
        b.fc2.bias[0] += 1e-3
    assert state_fingerprint(a) != state_fingerprint(b)


class IndexedData(L.LightningDataModule):
    """``(x, y, idx)`` batches of 32 MLP examples, with a data fingerprint."""

    fingerprint = "indexed-mlp-32"

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)
        return DataLoader(TensorDataset(x, y, torch.arange(32)), batch_size=8, shuffle=True, generator=g)


def _fit(tmp_path, teacher, cache=None, top_k=0, epochs=2):
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(1)
    module = DistillationModule(TinyMLP(hidden=8), teacher, lr=1e-2, teacher_cache=cache, cache_top_k=top_k)
    tiny_trainer(tmp_path, max_epochs=epochs, max_steps=-1).fit(module, datamodule=IndexedData())
    hook.remove()
    return module, len(calls)


def test_cached_runs_skip_the_teacher_and_train_the_same(tmp_path):
    teacher = TinyMLP(hidden=64)
    plain, plain_calls = _fit(tmp_path, teacher)
    cached, cached_calls = _fit(tmp_path, teacher, cache=str(tmp_path / "cache"))
    assert plain_calls == 8 and cached_calls == 4  # 4 batches a epoch: the teacher runs in the first only
    torch.testing.assert_close(cached.student.fc1.weight, plain.student.fc1.weight, rtol=0, atol=0)
    _, later_calls = _fit(tmp_path, teacher, cache=str(tmp_path / "cache"), epochs=1)
    assert later_calls == 0  # a later run reads the shard
    top_k, _ = _fit(tmp_path, teacher, cache=str(tmp_path / "top5"), top_k=5)  # 5 >= 4 classes: all kept
    torch.testing.assert_close(top_k.student.fc1.weight, plain.student.fc1.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"written for another teacher, data or top_k"):
        _fit(tmp_path, TinyMLP(hidden=64), cache=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cache_top_k": -1}, r"cache_top_k=-1 must be an integer >= 0"),
        (
            {"cache_top_k": 5},
            r"cache_top_k=5 only applies to the teacher cache. HINT: also set teacher_cache",
        ),
        ({"teacher_cache": ""}, r"teacher_cache='' must be a directory path"),
    ],
)
def test_bad_cache_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationModule(TinyMLP(), TinyMLP(), **kwargs)


def test_cache_needs_logits_only_indices_and_a_data_fingerprint(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"teacher_cache='c' keeps logits only, but hidden_weight=1.0 / attention_weight=0.0 need",
    ):
        DistillationModule(tiny_bert(), tiny_bert(), hidden_weight=1.0, teacher_cache="c")
    module = DistillationModule(TinyMLP(), TinyMLP(), teacher_cache=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"has no `fingerprint` string. HINT: use a data module"):
        tiny_trainer(tmp_path).fit(module, train_dataloaders=hf_dataloader())
    module._cache = TeacherCache(tmp_path / "c", FINGERPRINT)
    with pytest.raises(ValueError, match=r"needs the examples' indices in every batch"):
        module.training_step((torch.randn(2, 16), torch.tensor([0, 1])), 0)

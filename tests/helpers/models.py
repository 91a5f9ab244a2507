"""Tiny models, LightningModules and synthetic data shared by the whole test suite.

Everything here is importable (``from tests.helpers.models import ...``) so that code running in a
spawned DDP process can rebuild it, and every builder takes primitive arguments so that
``save_hyperparameters`` can restore it from a checkpoint.

Qualified module names, for ``targets`` patterns in tests:

- ``TinyMLP``: ``fc1`` (Linear 16->32), ``relu``, ``fc2`` (Linear 32->4).
- ``TinyConvNet``: ``conv`` (Conv2d 1->4, k=3), ``bn``, ``relu``, ``fc`` (Linear 144->4);
  input (B, 1, 8, 8).
- ``TinyEmbeddingNet``: ``embedding`` (Embedding 50x16), ``fc`` (Linear 16->3); input (B, 12) ids.
- Inside ``BoringClassifier`` each of these lives under ``net.`` (``net.fc1``); inside
  ``HFClassifier`` the BERT model lives under ``model.`` (``model.bert.encoder.layer.0...``).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

NetKind = Literal["mlp", "conv", "embedding"]

MLP_IN, MLP_CLASSES = 16, 4
CONV_SIZE, CONV_CLASSES = 8, 4
EMB_VOCAB, EMB_SEQ, EMB_CLASSES = 50, 12, 3
BERT_VOCAB, BERT_SEQ = 100, 16


class TinyMLP(nn.Module):
    """Linear(16, 32) -> ReLU -> Linear(32, 4)."""

    def __init__(self, in_features: int = MLP_IN, hidden: int = 32, num_classes: int = MLP_CLASSES) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))  # (B, 16) -> (B, 4)


class TinyConvNet(nn.Module):
    """Conv2d(1, 4, 3) -> BatchNorm2d -> ReLU -> flatten -> Linear(144, 4) on (B, 1, 8, 8) input."""

    def __init__(self, channels: int = 4, num_classes: int = CONV_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=3)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        side = CONV_SIZE - 2
        self.fc = nn.Linear(channels * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv(x)))  # (B, 1, 8, 8) -> (B, C, 6, 6)
        return self.fc(h.flatten(1))  # (B, C*36) -> (B, 4)


class TinyEmbeddingNet(nn.Module):
    """Embedding(50, 16) -> mean over tokens -> Linear(16, 3) on (B, T) token ids."""

    def __init__(self, vocab: int = EMB_VOCAB, dim: int = 16, num_classes: int = EMB_CLASSES) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(x).mean(dim=1))  # (B, T) -> (B, T, D) -> (B, D) -> (B, 3)


NETS: dict[str, type[nn.Module]] = {"mlp": TinyMLP, "conv": TinyConvNet, "embedding": TinyEmbeddingNet}


def build_net(kind: str = "mlp", seed: int = 0) -> nn.Module:
    """Build one of the tiny nets with weights fixed by ``seed``."""
    if kind not in NETS:
        raise ValueError(f"net={kind!r} is not one of {sorted(NETS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NETS[kind]()


LM_VOCAB = 96


def _seeded(model_class: Any, config: Any, seed: int) -> nn.Module:
    """``model_class(config)`` initialised from ``seed`` without touching the global RNG, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def tiny_llama(
    seed: int = 0, tie: bool = True, kv_heads: int = 2, heads: int = 4, family: str = "llama"
) -> nn.Module:
    """A 2-layer, 32-wide ``LlamaForCausalLM`` (``family="qwen2"``: ``Qwen2ForCausalLM``, biased q/k/v)
    with random weights (no download): ``heads`` query heads of size ``32 // heads`` sharing ``kv_heads``
    key/value heads (grouped-query attention), MLP 64 wide, tied embeddings by default."""
    import transformers

    prefix = {"llama": "Llama", "qwen2": "Qwen2"}[family]
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=LM_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return _seeded(getattr(transformers, f"{prefix}ForCausalLM"), config, seed)


def tiny_gpt2(seed: int = 0) -> nn.Module:
    """A 2-layer, 32-wide ``GPT2LMHeadModel`` (transformers ``Conv1D`` blocks, 4 heads, tied embeddings)
    with random weights and no dropout (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    config = GPT2Config(
        vocab_size=LM_VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        **no_dropout,
    )
    return _seeded(GPT2LMHeadModel, config, seed)


def lm_ids(batch: int = 2, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    """Random token ids ``(batch, seq_len)`` for :func:`tiny_llama` / :func:`tiny_gpt2`, avoiding ids 0-2."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, LM_VOCAB, (batch, seq_len), generator=g)


def _synthetic(kind: str, n: int, seed: int) -> TensorDataset:
    """Learnable synthetic data: labels come from a fixed random rule over the inputs."""
    g = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        x = torch.randn(n, MLP_IN, generator=g)
        w = torch.randn(MLP_IN, MLP_CLASSES, generator=torch.Generator().manual_seed(1234))
        y = (x @ w).argmax(dim=1)
    elif kind == "conv":
        x = torch.randn(n, 1, CONV_SIZE, CONV_SIZE, generator=g)
        w = torch.randn(CONV_SIZE * CONV_SIZE, CONV_CLASSES, generator=torch.Generator().manual_seed(1234))
        y = (x.flatten(1) @ w).argmax(dim=1)
    elif kind == "embedding":
        x = torch.randint(0, EMB_VOCAB, (n, EMB_SEQ), generator=g)
        y = (x.float().mean(dim=1) * EMB_CLASSES / EMB_VOCAB).long().clamp(max=EMB_CLASSES - 1)
    else:
        raise ValueError(f"kind={kind!r} is not one of {sorted(NETS)}")
    return TensorDataset(x, y)


def random_dataloader(
    kind: str = "mlp", n: int = 64, batch_size: int = 8, seed: int = 0, shuffle: bool = False
) -> DataLoader:
    """A deterministic DataLoader of ``(x, y)`` batches shaped for ``build_net(kind)``."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(_synthetic(kind, n, seed), batch_size=batch_size, shuffle=shuffle, generator=g)


class BoringClassifier(L.LightningModule):
    """A LightningModule around one of the tiny nets, trained with SGD and cross-entropy.

    Args:
        net: Which tiny net to build: ``"mlp"``, ``"conv"`` or ``"embedding"``.
        lr: SGD learning rate.
        seed: Seed of the initial weights.
        momentum: SGD momentum (0 keeps the optimizer stateless).
    """

    def __init__(self, net: str = "mlp", lr: float = 0.1, seed: int = 0, momentum: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_net(net, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=self.hparams["momentum"])

    def train_dataloader(self) -> DataLoader:
        return random_dataloader(self.hparams["net"], seed=self.hparams["seed"])

    def val_dataloader(self) -> DataLoader:
        return random_dataloader(self.hparams["net"], n=16, seed=self.hparams["seed"] + 1)


def tiny_bert(
    num_labels: int = 2, seed: int = 0, vocab_size: int = BERT_VOCAB, num_layers: int = 2
) -> nn.Module:
    """A 2-layer (``num_layers``), 32-wide ``BertForSequenceClassification`` with random weights (no download).

    ``vocab_size=30522`` reads all-MiniLM-L6-v2's token ids (the data modules' default tokenizer).
    """
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return _seeded(BertForSequenceClassification, config, seed)


class _DictDataset(Dataset):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


def hf_dataloader(
    n: int = 32, batch_size: int = 8, seq_len: int = BERT_SEQ, num_labels: int = 2, seed: int = 0
) -> DataLoader:
    """Deterministic dict batches ``{input_ids, attention_mask, labels}`` for :func:`tiny_bert`.

    Rows are right-padded (id 0, mask 0) to random lengths; the label is a fixed rule over the
    visible tokens, so the task is learnable.
    """
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, BERT_VOCAB, (n, seq_len), generator=g)  # (N, T)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (n,), generator=g)  # (N,)
    attention_mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()  # (N, T)
    input_ids = input_ids * attention_mask
    mean_id = (input_ids.float().sum(1) / lengths.float()) / BERT_VOCAB  # (N,) in [0, 1)
    labels = (mean_id * num_labels).long().clamp(max=num_labels - 1)
    data = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return DataLoader(_DictDataset(data), batch_size=batch_size, shuffle=False)


class HFClassifier(L.LightningModule):
    """A LightningModule around :func:`tiny_bert` that calls it with keyword arguments.

    Args:
        num_labels: Number of classes.
        lr: AdamW learning rate.
        seed: Seed of the initial weights.
    """

    def __init__(self, num_labels: int = 2, lr: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = tiny_bert(num_labels=num_labels, seed=seed)

    def forward(self, **batch: Any) -> Any:
        return self.model(**batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        self.log("train_loss", out.loss)
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(**batch)
        self.log("val_loss", out.loss)
        return out.loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"])

    def train_dataloader(self) -> DataLoader:
        return hf_dataloader(num_labels=self.hparams["num_labels"], seed=self.hparams["seed"])

    def val_dataloader(self) -> DataLoader:
        return hf_dataloader(n=16, num_labels=self.hparams["num_labels"], seed=self.hparams["seed"] + 1)

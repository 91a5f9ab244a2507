"""Vocabulary pruning: keep only the embedding rows of the tokens a corpus uses.

A 30522-token BERT vocabulary holds about half of a MiniLM's parameters, and a text-classification
corpus uses a fraction of it. :func:`token_ids_in_use` lists the ids a corpus uses (plus the special
tokens); :func:`prune_vocabulary` swaps the word embedding for a
:class:`~lit_opt.nn.RemappedEmbedding` that keeps only those rows, the tokenizer unchanged (dropped
ids read the UNK row). It changes the model's structure, so call it before ``Trainer.fit`` (before
the callbacks' ``setup``); QAT, export, ``load`` and ``restore`` handle the result.

Example::

    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
    ...                              num_attention_heads=1, intermediate_size=8))
    >>> keep = token_ids_in_use([[2, 5, 7], [5, 9]], special_ids=[0, 1])
    >>> keep
    [0, 1, 2, 5, 7, 9]
    >>> _ = prune_vocabulary(model, keep, unk_token_id=1)
    >>> model.embeddings.word_embeddings
    RemappedEmbedding(6, 8, padding_idx=0, vocab_size=100)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt._checks import check_module
from lit_opt.nn.remapped_embedding import RemappedEmbedding
from lit_opt.submodules import replace_submodule
from lit_opt.targets import select_modules

log = logging.getLogger(__name__)


def _ids(value: Any) -> Iterable[int]:
    """Flatten a tensor, an int or a (nested) list of ids."""
    if isinstance(value, Tensor):
        yield from value.reshape(-1).tolist()
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _ids(item)
    elif not isinstance(value, int) and callable(getattr(value, "tolist", None)):  # numpy
        yield from _ids(value.tolist())
    else:
        yield value


def _id_list(name: str, value: Any) -> list[int]:
    """``value``'s ids as a list of ints, or a ``ValueError`` naming ``name``."""
    if isinstance(value, Mapping) and "input_ids" in value:  # a tokenizer's BatchEncoding
        value = value["input_ids"]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(
            f"{name}={value!r} is not accepted; expected token ids: a tensor, a list of lists of ints, "
            "or a tokenizer's output. HINT: token_ids_in_use(tokenizer(texts))."
        )
    ids = list(_ids(value if isinstance(value, Tensor) else list(value)))
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{name} holds {i!r} ({type(i).__name__}); expected integer token ids.")
    return ids


def token_ids_in_use(input_ids: Any, special_ids: Iterable[int] = ()) -> list[int]:
    """The sorted distinct token ids of a tokenized corpus, plus ``special_ids``.

    Args:
        input_ids: a tokenizer's output (``{"input_ids": ...}``), a tensor of ids, or an iterable
            of id sequences (e.g. one list per text, or batches of tensors).
        special_ids: ids always kept (pass ``tokenizer.all_special_ids``: UNK, PAD, CLS, SEP, ...).

    Returns:
        The ids to pass to :func:`prune_vocabulary` as ``keep_token_ids``.

    Raises:
        ValueError: ``input_ids`` or ``special_ids`` holds something other than integer ids.

    Example::

        >>> token_ids_in_use({"input_ids": [[101, 7, 102], [101, 7, 9, 102]]}, special_ids=[0, 100])
        [0, 7, 9, 100, 101, 102]
    """
    used = set(_id_list("input_ids", input_ids))
    used.update(_id_list("special_ids", special_ids))
    return sorted(used)


def _check_keep(keep_token_ids: Any, unk_token_id: Any, vocab_size: int, name: str) -> list[int]:
    keep = _id_list("keep_token_ids", keep_token_ids)
    if not keep:
        raise ValueError(
            "keep_token_ids=[] keeps no token. HINT: compute it with "
            "lit_opt.token_ids_in_use(tokenizer(train_texts), special_ids=tokenizer.all_special_ids)."
        )
    outside = sorted({i for i in keep if not 0 <= i < vocab_size})
    if outside:
        raise ValueError(
            f"keep_token_ids holds ids {outside[:5]} outside module {name!r}'s vocabulary [0, {vocab_size}). "
            "HINT: use ids from the tokenizer that goes with this model."
        )
    if (
        isinstance(unk_token_id, bool)
        or not isinstance(unk_token_id, int)
        or not 0 <= unk_token_id < vocab_size
    ):
        raise ValueError(
            f"unk_token_id={unk_token_id!r} is not a token id of module {name!r} (expected an integer in "
            f"[0, {vocab_size})). HINT: pass tokenizer.unk_token_id."
        )
    return keep


def _check_untied(model: nn.Module, name: str, embedding: nn.Embedding) -> None:
    if parametrize.is_parametrized(embedding):
        raise ValueError(
            f"module {name!r} already carries parametrizations (QAT or pruning). HINT: call "
            "prune_vocabulary on the plain model, before Trainer.fit installs the callbacks."
        )
    if isinstance(embedding, RemappedEmbedding):
        raise ValueError(f"module {name!r} is already a pruned vocabulary ({embedding}).")
    for other, param in model.named_parameters(remove_duplicate=False):
        if param is embedding.weight and other != f"{name}.weight":
            raise ValueError(
                f"module {name!r} shares its weight with {other!r} (tied embeddings, e.g. a language-model "
                "head); pruning its rows would change that layer's outputs. HINT: untie them first, or prune "
                "a model without a tied output layer."
            )


def prune_vocabulary(
    model: nn.Module, keep_token_ids: Any, unk_token_id: int, module: str = "*word_embeddings"
) -> nn.Module:
    """Keep only the embedding rows of ``keep_token_ids`` (plus UNK's and the padding row).

    Each ``nn.Embedding`` whose qualified name matches the fnmatch pattern ``module`` is replaced
    in place by a :class:`~lit_opt.nn.RemappedEmbedding` holding the kept rows, in id order, and a
    ``remap`` from every original id to its row; ids not kept read ``unk_token_id``'s row, so the
    tokenizer needs no change. Call it before ``Trainer.fit``: it changes the model's structure, which is
    fixed once training starts (docs/architecture.md, rule 1).

    Args:
        model: the model (e.g. a Hugging Face ``BertForSequenceClassification`` or a LightningModule
            holding one); modified in place.
        keep_token_ids: ids to keep, e.g. from :func:`token_ids_in_use` (any iterable of ints or tensor).
        unk_token_id: the id whose row dropped ids read (``tokenizer.unk_token_id``); always kept.
        module: fnmatch pattern over ``model.named_modules()`` names selecting the embeddings.

    Returns:
        ``model``.

    Raises:
        ValueError: empty or out-of-range ``keep_token_ids``, an ``unk_token_id`` outside the
            vocabulary, a ``module`` pattern that matches no ``nn.Embedding``, or an embedding
            that is tied to another layer, already parametrized or already pruned.

    Example::

        keep = token_ids_in_use(tokenizer(train_texts), special_ids=tokenizer.all_special_ids)
        prune_vocabulary(model, keep, tokenizer.unk_token_id)
        trainer.fit(LitModule(model), datamodule)   # QATCallback may target "*word_embeddings"
    """
    check_module("model", model, "HINT: pass the model whose embeddings to prune.")
    if not isinstance(module, str):
        raise ValueError(f"module={module!r} must be one fnmatch pattern string, e.g. '*word_embeddings'.")
    selected = select_modules(model, [module], types=(nn.Embedding,), argument="module")
    for name, found in selected.items():
        embedding = cast(nn.Embedding, found)  # selected by type
        vocab_size = embedding.num_embeddings
        keep = _check_keep(keep_token_ids, unk_token_id, vocab_size, name)
        _check_untied(model, name, embedding)
        pad = embedding.padding_idx
        kept = torch.tensor(sorted({*keep, unk_token_id, *([] if pad is None else [pad])}))  # (K,)
        remap = torch.full((vocab_size,), -1, dtype=torch.int32)
        remap[kept] = torch.arange(len(kept), dtype=torch.int32)
        remap[remap < 0] = remap[unk_token_id]
        new = RemappedEmbedding.like(embedding, len(kept), None if pad is None else int(remap[pad]))
        with torch.no_grad():
            new.weight.copy_(embedding.weight[kept.to(embedding.weight.device)])
            new.remap.copy_(remap)
        new.weight.requires_grad_(embedding.weight.requires_grad)
        new.train(embedding.training)
        replace_submodule(model, name, new)
        log.info("prune_vocabulary: %s keeps %d of %d rows", name, len(kept), vocab_size)
    return model

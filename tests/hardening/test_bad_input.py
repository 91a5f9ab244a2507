"""One table over the public constructors and functions: bad input gets a typed error naming the argument.

Each row is ``(call, error type, pattern)``; the pattern names the argument (and usually the value)
so that a user sees what to change. The modules' own test files test the fixes in detail; this table
makes sure no public entry point lets a wrong type or value through to crash deep inside torch.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import lit_opt
import lit_opt.sharing
from lit_opt import (
    DistillationModule,
    ExportCallback,
    IterativePruningCallback,
    LowRankCallback,
    QATCallback,
    WeightSharingCallback,
)
from lit_opt.data import DigitsDataModule, TextClassificationDataModule
from lit_opt.inference import DynamicBatcher, find_batch_size
from lit_opt.models import MLPClassifier
from tests.helpers.models import TinyMLP, tiny_bert

Row = tuple[Callable[[], Any], type[Exception], str]

TABLE: dict[str, Row] = {
    # QATCallback
    "qat weight_bits str": (
        lambda: QATCallback(weight_bits="8"),
        ValueError,
        r"weight_bits='8'.*accepted: 4 or 8",
    ),
    "qat weight_bits 3": (lambda: QATCallback(weight_bits=3), ValueError, r"weight_bits=3"),
    "qat activations": (lambda: QATCallback(activations="dyn"), ValueError, r"activations='dyn'"),
    "qat granularity": (lambda: QATCallback(granularity="channel"), ValueError, r"granularity='channel'"),
    "qat per_group no size": (lambda: QATCallback(granularity="per_group"), ValueError, r"group_size=None"),
    "qat symmetric": (lambda: QATCallback(symmetric="yes"), ValueError, r"symmetric='yes'"),
    "qat targets str": (
        lambda: QATCallback(targets="*"),
        ValueError,
        r"targets='\*'.*HINT: write targets=\['\*'\]",
    ),
    "qat targets int": (
        lambda: QATCallback(targets=[1]),
        ValueError,
        r"targets=\[1\] must hold only strings",
    ),
    "qat start_step": (lambda: QATCallback(start_step=-1), ValueError, r"start_step=-1"),
    "qat start_step float": (lambda: QATCallback(start_step=1.5), ValueError, r"start_step=1.5"),
    # IterativePruningCallback
    "prune sparsity 1": (lambda: IterativePruningCallback(1.0), ValueError, r"target_sparsity=1.0.*\[0, 1\)"),
    "prune sparsity str": (lambda: IterativePruningCallback("0.5"), ValueError, r"target_sparsity='0.5'"),
    "prune sparsity nan": (
        lambda: IterativePruningCallback(float("nan")),
        ValueError,
        r"target_sparsity=nan",
    ),
    "prune every_n_steps": (
        lambda: IterativePruningCallback(every_n_steps=0),
        ValueError,
        r"every_n_steps=0",
    ),
    "prune N:M": (lambda: IterativePruningCallback(structure="2:1"), ValueError, r"structure='2:1'.*'2:4'"),
    "prune scope": (lambda: IterativePruningCallback(scope="all"), ValueError, r"scope='all'"),
    "prune exclude str": (lambda: IterativePruningCallback(exclude="fc1"), ValueError, r"exclude='fc1'"),
    "prune end before start": (
        lambda: IterativePruningCallback(start_step=10, end_step=5),
        ValueError,
        r"end_step=5.*start_step=10",
    ),
    # WeightSharingCallback
    "share n_clusters 1": (
        lambda: WeightSharingCallback(n_clusters=1),
        ValueError,
        r"n_clusters=1 must be an integer from 2 to 256",
    ),
    "share n_clusters 257": (lambda: WeightSharingCallback(n_clusters=257), ValueError, r"n_clusters=257"),
    "share n_clusters str": (lambda: WeightSharingCallback(n_clusters="16"), ValueError, r"n_clusters='16'"),
    "share init": (lambda: WeightSharingCallback(init="random"), ValueError, r"init='random'.*'linear'"),
    "share start_step": (lambda: WeightSharingCallback(start_step=-2), ValueError, r"start_step=-2"),
    "share targets str": (lambda: WeightSharingCallback(targets="*"), ValueError, r"targets='\*'.*HINT"),
    "share targets nothing": (
        lambda: lit_opt.sharing.prepare_sharing(TinyMLP(), lit_opt.sharing.SharingConfig(targets=["fc9"])),
        ValueError,
        r"targets=\['fc9'\] matched no Linear/Conv1d/Conv2d/Embedding(/Conv1D)? module",
    ),
    "share non-weight module": (
        lambda: lit_opt.sharing.prepare_sharing(TinyMLP(), lit_opt.sharing.SharingConfig(targets=["relu"])),
        ValueError,
        r"targets=\['relu'\] matched 1 module\(s\) but no Linear.*ReLU",
    ),
    # LowRankCallback (setup-time rows: a trainer without a sharding strategy, a plain TinyMLP)
    "low rank energy 0": (lambda: LowRankCallback(energy=0), ValueError, r"energy=0 is not accepted"),
    "low rank energy 1.5": (lambda: LowRankCallback(energy=1.5), ValueError, r"energy=1.5.*\(0, 1\]. HINT"),
    "low rank energy str": (lambda: LowRankCallback(energy="0.9"), ValueError, r"energy='0.9'"),
    "low rank rank 0": (lambda: LowRankCallback(rank=0), ValueError, r"rank=0.*integer >= 1"),
    "low rank rank float": (lambda: LowRankCallback(rank=2.5), ValueError, r"rank=2.5"),
    "low rank min_saving 1": (
        lambda: LowRankCallback(min_saving=1),
        ValueError,
        r"min_saving=1.*\[0, 1\). HINT",
    ),
    "low rank at_step": (lambda: LowRankCallback(at_step=-1), ValueError, r"at_step=-1"),
    "low rank targets str": (lambda: LowRankCallback(targets="fc1"), ValueError, r"targets='fc1'.*HINT"),
    "low rank targets nothing": (
        lambda: LowRankCallback(targets=["fc9"]).setup(SimpleNamespace(), TinyMLP(), "fit"),
        ValueError,
        r"targets=\['fc9'\] matched no Linear(/Conv1D)? module",
    ),
    "low rank non-Linear": (
        lambda: LowRankCallback(targets=["relu"]).setup(SimpleNamespace(), TinyMLP(), "fit"),
        ValueError,
        r"targets=\['relu'\] matched 1 module\(s\) but no Linear(/Conv1D)? module; it matched ReLU",
    ),
    "low rank rank too large": (
        lambda: LowRankCallback(rank=5, targets=["fc2"]).setup(SimpleNamespace(), TinyMLP(), "fit"),
        ValueError,
        r"rank=5 exceeds min\(out_features, in_features\) = 4 of layer 'fc2'.*HINT",
    ),
    # DistillationModule
    "distill student None": (
        lambda: DistillationModule(None, TinyMLP()),
        TypeError,
        r"student=None.*nn.Module",
    ),
    "distill teacher str": (
        lambda: DistillationModule(TinyMLP(), "bert"),
        TypeError,
        r"teacher='bert'.*nn.Module",
    ),
    "distill temperature": (
        lambda: DistillationModule(TinyMLP(), TinyMLP(), temperature=0),
        ValueError,
        r"temperature=0",
    ),
    "distill alpha": (lambda: DistillationModule(TinyMLP(), TinyMLP(), alpha=2), ValueError, r"alpha=2"),
    "distill lr": (lambda: DistillationModule(TinyMLP(), TinyMLP(), lr=-1), ValueError, r"lr=-1"),
    "distill weight_decay": (
        lambda: DistillationModule(TinyMLP(), TinyMLP(), weight_decay=-0.1),
        ValueError,
        r"weight_decay=-0.1",
    ),
    # ExportCallback, export, load, restore
    "export callback dtype": (lambda: ExportCallback(dtype="int8"), ValueError, r"dtype='int8'"),
    "export callback dirpath": (lambda: ExportCallback(dirpath=""), ValueError, r"dirpath=''"),
    "export model str": (lambda: lit_opt.export("model", "unused"), TypeError, r"model='model'.*nn.Module"),
    "export dirpath None": (lambda: lit_opt.export(TinyMLP(), None), TypeError, r"dirpath=None"),
    "export quantization key": (
        lambda: lit_opt.export(TinyMLP(), "unused", quantization={"bits": 8}),
        ValueError,
        r"unknown keys \['bits'\]; accepted: \['activations'",
    ),
    "export quantization value": (
        lambda: lit_opt.export(TinyMLP(), "unused", quantization={"weight_bits": 5}),
        ValueError,
        r"weight_bits=5",
    ),
    "export dtype": (lambda: lit_opt.export(TinyMLP(), "unused", dtype="int8"), ValueError, r"dtype='int8'"),
    "load None": (lambda: lit_opt.load(None), TypeError, r"dirpath=None.*a path"),
    "load missing dir": (
        lambda: lit_opt.load("/nonexistent/artifact"),
        FileNotFoundError,
        r"dirpath=.*not a directory",
    ),
    "load kernel": (lambda: lit_opt.load("unused", kernel="fast"), ValueError, r"kernel='fast'"),
    "load device": (lambda: lit_opt.load("unused", device="tpu"), ValueError, r"device='tpu'"),
    "load skeleton str": (lambda: lit_opt.load("unused", model="bert"), TypeError, r"model='bert'"),
    "restore model None": (lambda: lit_opt.restore(None, {}), TypeError, r"model=None"),
    "restore path": (
        lambda: lit_opt.restore(TinyMLP(), "last.ckpt"),
        TypeError,
        r"state_dict is a str.*weights_only",
    ),
    "restore unknown kind": (
        lambda: lit_opt.restore(TinyMLP(), {"fc1.parametrizations.weight.0._extra_state": {"kind": "Foo"}}),
        ValueError,
        r"unknown lit_opt module kind 'Foo'",
    ),
    "restore wrong shapes": (
        lambda: lit_opt.restore(TinyMLP(), {"fc1.weight": torch.zeros(3, 3)}),
        ValueError,
        r"(?s)state_dict does not fit TinyMLP.*fc1.weight.*HINT",
    ),
    # prune_vocabulary, token_ids_in_use
    "vocab keep empty": (
        lambda: lit_opt.prune_vocabulary(tiny_bert(), [], unk_token_id=1),
        ValueError,
        r"keep_token_ids=\[\] keeps no token",
    ),
    "vocab keep out of range": (
        lambda: lit_opt.prune_vocabulary(tiny_bert(), [3, 1000], unk_token_id=1),
        ValueError,
        r"keep_token_ids holds ids \[1000\] outside",
    ),
    "vocab unk out of range": (
        lambda: lit_opt.prune_vocabulary(tiny_bert(), [3], unk_token_id=-1),
        ValueError,
        r"unk_token_id=-1 is not a token id",
    ),
    "vocab module no match": (
        lambda: lit_opt.prune_vocabulary(tiny_bert(), [3], unk_token_id=1, module="*tokens"),
        ValueError,
        r"module=\['\*tokens'\] matched no Embedding module",
    ),
    "vocab module not embedding": (
        lambda: lit_opt.prune_vocabulary(tiny_bert(), [3], unk_token_id=1, module="classifier"),
        ValueError,
        r"module=\['classifier'\] matched 1 module\(s\) but no Embedding module; it matched Linear",
    ),
    "vocab model str": (
        lambda: lit_opt.prune_vocabulary("bert", [3], unk_token_id=1),
        TypeError,
        r"model='bert'.*nn.Module",
    ),
    "vocab ids text": (
        lambda: lit_opt.token_ids_in_use("a fine film"),
        ValueError,
        r"input_ids='a fine film' is not accepted",
    ),
    # data, models, inference
    "mlp hidden": (lambda: MLPClassifier(hidden=[0]), ValueError, r"hidden=\[0\]"),
    "digits batch_size": (lambda: DigitsDataModule(batch_size=0), ValueError, r"batch_size=0"),
    "text batch_size": (lambda: TextClassificationDataModule(batch_size=-1), ValueError, r"batch_size=-1"),
    "text path": (lambda: TextClassificationDataModule(path=5), ValueError, r"path=5"),
    "text max_length": (lambda: TextClassificationDataModule(max_length=0), ValueError, r"max_length=0"),
    "batcher model": (lambda: DynamicBatcher("model"), TypeError, r"model='model'.*nn.Module"),
    "batcher max_wait_ms": (lambda: DynamicBatcher(TinyMLP(), max_wait_ms=0), ValueError, r"max_wait_ms=0"),
    "find_batch_size seq_len": (lambda: find_batch_size(TinyMLP(), seq_len=0), ValueError, r"seq_len=0"),
}


@pytest.mark.parametrize("case", TABLE, ids=str)
def test_bad_input_gets_a_clear_error(case: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # "unused" paths must never be created
    call, error, pattern = TABLE[case]
    with pytest.raises(error, match=pattern) as info:
        call()
    assert type(info.value) is error  # not a subclass raised from somewhere deeper
    assert list(tmp_path.iterdir()) == []

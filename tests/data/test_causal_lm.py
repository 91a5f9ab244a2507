"""CausalLMDataModule: formats, split by text, packing, bucketing, cache, default data, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_opt.data.causal_lm import CausalLMDataModule, check_block_size
from tests.helpers.lm import lm_texts, tiny_lm_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_lm_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def write(path: Path, texts: list[Any], column: str = "text") -> str:
    if path.suffix == ".txt":
        path.write_text("".join(f"{t}\n" for t in texts))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[column, "other"])
            writer.writeheader()
            writer.writerows({column: t, "other": 1} for t in texts)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({column: t}) + "\n" for t in texts))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{column: t} for t in texts]), path)
    return str(path)


def make(tmp_path: Path, path: str | None, tokenizer: str, **kwargs: Any) -> CausalLMDataModule:
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("block_size", 16)
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("val_fraction", 0.1)
    kwargs.setdefault("test_fraction", 0.1)
    dm = CausalLMDataModule(path, tokenizer=tokenizer, **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl", ".parquet"])
def test_each_format_packs_full_blocks(tmp_path: Path, tokenizer: str, suffix: str) -> None:
    dm = make(tmp_path, write(tmp_path / f"texts{suffix}", lm_texts()), tokenizer)
    assert dm.text_counts == {"train": 48, "val": 6, "test": 6}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 16) and bool(batch["attention_mask"].all())
    assert torch.equal(batch["labels"], batch["input_ids"])
    eos = dm.tokenizer().eos_token_id
    stream = [t for ids in dm.splits["train"] for t in ids]
    assert stream.count(eos) >= len(dm.splits["train"]) // 2  # texts end in EOS inside the blocks
    assert dm.tokens("val") == 15 * len(dm.splits["val"])


def test_split_is_by_text_and_fixed_by_seed(tmp_path: Path, tokenizer: str) -> None:
    texts = [f"{i} {t}" for i, t in enumerate(lm_texts())]
    path = write(tmp_path / "t.txt", texts)
    a = make(tmp_path, path, tokenizer, packing=False)
    b = make(tmp_path, path, tokenizer, packing=False)
    c = make(tmp_path, path, tokenizer, packing=False, seed=1)
    assert a.splits == b.splits and a.splits["val"] != c.splits["val"]
    held_out = {tuple(ids) for split in ("val", "test") for ids in a.splits[split]}
    assert not held_out & {tuple(ids) for ids in a.splits["train"]}
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_unpacked_texts_are_bucketed_and_padded_with_ignored_labels(tmp_path: Path, tokenizer: str) -> None:
    dm = make(tmp_path, write(tmp_path / "t.csv", lm_texts(80)), tokenizer, packing=False, block_size=24)
    lengths = [len(ids) for ids in dm.splits["train"]]
    assert max(lengths) == 24 and min(lengths) < 24  # long texts truncated to block_size
    padded = sum(int((b["labels"] == -100).sum()) for b in dm.train_dataloader())
    plain = CausalLMDataModule(
        str(tmp_path / "t.csv"),
        tokenizer=tokenizer,
        cache_dir=str(tmp_path / "cache"),
        block_size=24,
        batch_size=4,
        val_fraction=0.1,
        test_fraction=0.1,
        packing=False,
        bucketing=False,
    )
    plain.setup("fit")
    unbucketed = sum(int((b["labels"] == -100).sum()) for b in plain.train_dataloader())
    assert padded < unbucketed
    batch = next(iter(dm.val_dataloader()))
    assert torch.equal(batch["labels"] == -100, batch["attention_mask"] == 0)


def test_tokenized_once_into_the_cache_and_indexed(tmp_path: Path, tokenizer: str) -> None:
    path = write(tmp_path / "t.jsonl", lm_texts())
    make(tmp_path, path, tokenizer)
    cached = list((tmp_path / "cache" / "tokenized").iterdir())
    dm = make(tmp_path, path, tokenizer, block_size=8, return_index=True)
    assert list((tmp_path / "cache" / "tokenized").iterdir()) == cached
    batch = next(iter(dm.val_dataloader()))
    assert batch["idx"].tolist() == [0, 1, 2, 3]


def test_default_corpus_is_rotten_tomatoes(
    tmp_path: Path, tokenizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_opt.data import causal_lm

    csv_path = Path(write(tmp_path / "rt.csv", lm_texts()))
    monkeypatch.setattr(causal_lm, "rotten_tomatoes_csv", lambda cache_dir: csv_path)
    assert make(tmp_path, None, tokenizer).text_counts["train"] == 48


def test_default_tokenizer_is_smollm2s(
    tmp_path: Path, tokenizer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lit_opt.models.smollm2 as smollm2

    asked = []
    monkeypatch.setattr(
        smollm2, "smollm2_135m_instruct", lambda cache_dir: asked.append(cache_dir) or tokenizer
    )
    dm = CausalLMDataModule(tokenizer=None, cache_dir=str(tmp_path))
    assert dm.tokenizer().vocab_size == 300 and asked == [tmp_path]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "notes.docx"}, r"path='notes.docx' is not accepted; expected a file ending in one of"),
        ({"path": "missing.txt"}, r"path='missing.txt' is not a file"),
        ({"tokenizer": ""}, r"tokenizer='' is not accepted; expected a non-empty string"),
        ({"block_size": 1}, r"block_size=1 is not accepted"),
        ({"block_size": 128, "max_positions": 64}, r"block_size=128 is longer than the 64 positions"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"add up to 1.1"),
        ({"packing": "yes"}, r"packing='yes' is not accepted; expected true or false"),
        ({"max_texts": 2}, r"max_texts=2 is not accepted"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    kwargs.setdefault("tokenizer", "some/tokenizer")
    with pytest.raises(ValueError, match=match):
        CausalLMDataModule(**kwargs)


def test_block_size_against_the_model(tmp_path: Path) -> None:
    check_block_size(64, 64)
    with pytest.raises(ValueError, match=r"block_size=65 is longer than the 64 positions of teacher. HINT"):
        check_block_size(65, 64, "teacher")


@pytest.mark.parametrize(
    ("name", "texts", "kwargs", "match"),
    [
        (
            "t.csv",
            lm_texts(),
            {"text_column": "review"},
            r"text_column='review' is not a column of .*'text', 'other'",
        ),
        ("t.csv", ["", "  ", ""], {}, r"text_column='text' of .* holds no text"),
        ("t.jsonl", [None, 3], {}, r"holds no text"),
        ("t.txt", ["", ""], {}, r"is an empty file|holds no rows|holds no text"),
        (
            "t.txt",
            lm_texts(6),
            {"block_size": 64},
            r"the train split \(4 texts, \d+ tokens\) holds no example of block_size=64",
        ),
    ],
    ids=["missing-column", "no-text", "not-strings", "blank-txt", "too-little-text"],
)
def test_bad_data(
    tmp_path: Path, tokenizer: str, name: str, texts: list[Any], kwargs: dict[str, Any], match: str
) -> None:
    path = write(tmp_path / name, texts)
    with pytest.raises(ValueError, match=match):
        make(tmp_path, path, tokenizer, **kwargs)


def test_loader_before_setup(tokenizer: str) -> None:
    with pytest.raises(RuntimeError, match=r"before setup\(\)"):
        CausalLMDataModule(tokenizer=tokenizer).train_dataloader()

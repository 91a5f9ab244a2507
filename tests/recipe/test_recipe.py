"""``lit-opt recipe`` end to end on a tiny user file, its config handling and its bad-input errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from lit_opt.cli import main
from lit_opt.recipe import load_config
from lit_opt.recipe.report import goals, summary

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "rotten_tomatoes.yaml"
ROW_NAMES = [
    "teacher-fp32",
    "teacher-bf16",
    "student-distilled-fp32",
    "ptq-int8-torch-ao",
    "lit-opt-compressed",
    "teacher-onnx-fp32",
    "teacher-onnx-int8",
    "lit-opt-compressed-onnx",
]
GOOD = ["a moving", "a brilliant", "a warm", "a clever", "an excellent", "a gripping"]
BAD = ["a dull", "a tedious", "a clumsy", "a boring", "an awful", "a lifeless"]
NOUNS = ["film", "story", "cast", "script", "drama", "comedy", "ending", "performance"]


def write_reviews(path: Path, rows: int = 240, labels: tuple[str, ...] = ("neg", "pos")) -> Path:
    """A small ``text,label`` CSV of template reviews, half of each label (a seeded sample)."""
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = labels[i % len(labels)]
            words = GOOD if label == labels[-1] else BAD
            writer.writerow(
                [f"{rng.choice(words)} {rng.choice(NOUNS)}, {rng.choice(words)} {rng.choice(NOUNS)}.", label]
            )
    return path


def tiny(tmp_path: Path, data: Path) -> list[str]:
    """Overrides that make the recipe a smoke run: a 1-layer student, a few steps, short sequences."""
    return [
        f"--data.path={data}",
        f"--data.cache_dir={tmp_path / 'cache'}",
        f"--output_dir={tmp_path / 'run'}",
        "--data.max_length=32",
        "--data.batch_size=16",
        "--teacher.max_steps=4",
        "--student.layers=[0]",
        "--student.max_steps=4",
        "--compress.max_steps=6",
        "--compress.embedding_group_size=64",
        "--latency.seq_len=16",
        "--latency.repeats=2",
        "--latency.warmup=0",
        "--progress=false",
    ]


@pytest.mark.slow
def test_recipe_end_to_end_on_a_user_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_reviews(tmp_path / "reviews.csv")
    main(["recipe", str(CONFIG), *tiny(tmp_path, data)])
    out = tmp_path / "run"
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ROW_NAMES
    for row in report["rows"]:
        for key in ("accuracy", "size_bytes", "params", "latency_ms_b1", "latency_ms_b32", "throughput_b32"):
            assert isinstance(row[key], (int, float)) and row[key] > 0 or key == "accuracy", (
                row["name"],
                key,
            )
        assert 0.0 <= row["accuracy"] <= 1.0
    by = {r["name"]: r for r in report["rows"]}
    assert by["lit-opt-compressed"]["size_bytes"] < by["student-distilled-fp32"]["size_bytes"] / 4
    assert by["lit-opt-compressed"]["params"] < by["student-distilled-fp32"]["params"]
    assert report["data"]["source"] == str(data) and report["data"]["test"] == 24
    assert len(report["goals"]) == 6 + 10 and "goals" in report["goals_summary"]
    assert set(report["fastest"]) == {"b1", "b32"} and report["fastest"]["b1"] in ROW_NAMES
    assert (out / "compressed_onnx" / "model.onnx").is_file()
    assert 0.0 <= by["lit-opt-compressed-onnx"]["top1_agreement_vs_reference"] <= 1.0
    assert set(report["stage_seconds"]) >= {
        "data",
        "teacher",
        "distill",
        "compress",
        "ptq_peer",
        "onnx",
        "evaluate",
        "total",
    }
    for name in ("report.md", "accuracy_vs_size.png", "accuracy_vs_latency.png", "compressed/lit_opt.json"):
        assert (out / name).is_file(), name
    assert "| lit-opt-compressed |" in (out / "report.md").read_text()
    console = capsys.readouterr()
    assert "lit-opt-compressed" in console.out
    assert "LOAD REPORT" not in console.out + console.err and "GPU available" not in console.err  # quiet
    lines = console.out.splitlines() + console.err.splitlines()
    assert len(lines) <= 60, "\n".join(lines)  # issue 19: the main job's console fits on two screens
    assert not list(tmp_path.glob(".run.incomplete-*"))
    shipped = json.loads((out / "compressed" / "lit_opt.json").read_text())["architecture"]["config"]
    assert shipped["id2label"] == {"0": "neg", "1": "pos"} and shipped["_name_or_path"] == ""


def test_config_defaults_file_and_overrides() -> None:
    config = load_config(
        CONFIG, ["--data.path", "mine.csv", "--output_dir=elsewhere", "--student.layers=[1, 3]"]
    )
    assert (config.data.path, config.output_dir, config.student.layers) == ("mine.csv", "elsewhere", [1, 3])
    assert config.teacher.lr == 5.0e-5 and config.latency.threads == 2


def test_exponents_without_a_dot_are_floats() -> None:
    # YAML 1.1 reads 5e-5 as a string; as a float setting it is the number
    config = load_config(CONFIG, ["--compress.lr=5e-5", "--student.temperature=2e0"])
    assert (config.compress.lr, config.student.temperature) == (5e-5, 2.0)
    with pytest.raises(ValueError, match=r"compress.lr='fast' is not accepted; expected float"):
        load_config(CONFIG, ["--compress.lr=fast"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["--data.pth=x.csv"], r"unknown config key 'data.pth'\. Valid keys: .*data\.path"),
        (["--epochs=3"], r"unknown config key 'epochs'"),
        (["--data.max_length=long"], r"data.max_length='long' is not accepted; expected int"),
        (["--compress.weight_bits=2"], r"compress.weight_bits=2 is not accepted"),
        (["--compress.ffn_sparsity=1.5"], r"compress.ffn_sparsity=1.5 is not accepted; expected a fraction"),
        (["--latency.repeats=0"], r"latency.repeats=0 is not accepted"),
        (["--latency.settle_ms=-1"], r"latency.settle_ms=-1.0 is not accepted; expected a pause >= 0"),
        (["--compress.lr_schedule=cosine"], r"compress.lr_schedule='cosine' is not accepted"),
        (["--teacher.warmup=1.5"], r"teacher.warmup=1.5 is not accepted; expected a number in \[0, 1\)"),
        (
            ["--student.lr_schedule=constant", "--student.warmup=0.1"],
            r"student.warmup=0.1 only applies to student.lr_schedule='linear'",
        ),
        (["data.path=x"], r"'data.path=x' is not an override; expected --key=value"),
        (["--output_dir"], r"--output_dir has no value"),
    ],
)
def test_bad_config_is_refused(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(CONFIG, overrides)


def test_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a file"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"holds list; expected a mapping"):
        load_config(listing)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        (
            "review,label\ngood,pos\nbad,neg\n",
            [],
            r"text_column='text' is not a column of .*'review', 'label'",
        ),
        (None, [], r"holds one label \(\['pos'\]\); expected 2 or more"),
        ("", [], r"reviews\.csv' is an empty file"),
    ],
    ids=["missing-column", "single-class", "empty-file"],
)
def test_bad_data_fails_before_any_output(
    tmp_path: Path, content: str | None, extra: list[str], match: str
) -> None:
    data = tmp_path / "reviews.csv"
    if content is None:
        write_reviews(data, rows=40, labels=("pos",))
    else:
        _write(data, content)
    with pytest.raises(ValueError, match=match):
        main(["recipe", str(CONFIG), *tiny(tmp_path, data), *extra])
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob(".run.incomplete-*"))


def test_goals_in_words() -> None:
    base = {"accuracy": 0.8, "size_bytes": 100, "latency_ms_b1": 10.0, "latency_ms_b32": 100.0}
    ours = {"accuracy": 0.79, "size_bytes": 5, "latency_ms_b1": 4.0, "latency_ms_b32": 10.0}
    rows = [
        {"name": "teacher-fp32", **base},
        {"name": "teacher-bf16", **base},
        {"name": "ptq-int8-torch-ao", **base, "accuracy": 0.75},
        {"name": "lit-opt-compressed", **ours},
    ]
    assert [g["met"] for g in goals(rows)] == [True, True, False, True, True, True]
    lines = summary(goals(rows)).splitlines()  # one line per goal, the missed ones with their figure
    assert lines[0] == "lit-opt-compressed met 5 of 6 goals:" and len(lines) == 7
    assert lines[-1] == "- missed: latency >= 5x lower than teacher-fp32 at batch 1 (measured 2.50x)"


def test_help_lists_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    main(["recipe", "--help"])
    assert "usage: lit-opt recipe CONFIG" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["recipe"])
    assert "data.path" in capsys.readouterr().out

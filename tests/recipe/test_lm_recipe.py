"""``lit-opt recipe`` with ``task: causal_lm`` end to end on a tiny random Llama teacher and a tiny text file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from lit_opt.cli import main
from lit_opt.recipe import load_config
from lit_opt.recipe.causal_lm import goals
from tests.helpers.lm import lm_texts, tiny_lm_tokenizer
from tests.helpers.models import tiny_llama
from tests.helpers.trainer import modes_at_training_start

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "recipes" / "smollm2_rotten_tomatoes.yaml"
ROW_NAMES = ["teacher-fp32", "student-distilled-fp32", "ptq-int8-torch-ao", "lit-opt-compressed"]


def teacher_dir(path: Path) -> Path:
    """The tiny 2-layer Llama (GQA 4/2 heads, tied) with the tiny tokenizer's vocabulary, saved with it."""
    tokenizer = tiny_lm_tokenizer(path)
    from transformers import AutoTokenizer

    model = tiny_llama()
    model.resize_token_embeddings(len(AutoTokenizer.from_pretrained(tokenizer)))
    model.save_pretrained(str(path))
    return path


def tiny(tmp_path: Path, data: Path) -> list[str]:
    """Overrides that make the recipe a smoke run: the tiny teacher, 1 of its 2 layers (searched), a few steps."""
    return [
        f"--teacher.path={teacher_dir(tmp_path / 'teacher')}",
        f"--data.path={data}",
        f"--data.cache_dir={tmp_path / 'cache'}",
        f"--output_dir={tmp_path / 'run'}",
        "--data.block_size=16",
        "--data.batch_size=4",
        "--data.val_fraction=0.1",
        "--data.test_fraction=0.1",
        "--data.eval_blocks=4",
        "--student.layers=1",  # chosen by the layer search
        "--student.max_steps=3",
        "--compress.max_steps=4",
        "--compress.mlp_sparsity=0.5",
        "--compress.head_sparsity=0.5",
        "--compress.embedding_group_size=16",
        "--latency.prompt_len=8",
        "--latency.new_tokens=3",
        "--latency.repeats=1",
        "--latency.warmup=0",
        "--latency.samples=2",
        "--latency.sample_prompt_tokens=4",
        "--latency.sample_new_tokens=3",
        "--progress=false",
    ]


@pytest.mark.slow
def test_lm_recipe_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "texts.txt"
    data.write_text("".join(f"{t}\n" for t in lm_texts(120)))
    main(["recipe", str(CONFIG), *tiny(tmp_path, data)])
    out = tmp_path / "run"
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == ROW_NAMES
    for row in report["rows"]:
        for key in ("perplexity", "size_bytes", "params", "prefill_ms_b1", "peak_bytes"):
            assert row[key] > 0, (row["name"], key)
        for key in (
            "decode_tokens_per_s_b1",
            "decode_tokens_per_s_b8",
        ):  # NaN: within a loaded machine's noise
            assert row[key] > 0 or math.isnan(row[key]), (row["name"], key)
        assert len(row["samples"]) == 2
    by = {r["name"]: r for r in report["rows"]}
    assert by["student-distilled-fp32"]["params"] < by["teacher-fp32"]["params"]
    assert re.search(
        r"teacher layers \[[01]\] kept \(1 of 2, chosen by layer search\)", str(by["student-distilled-fp32"])
    )
    assert (
        by["lit-opt-compressed"]["params"] < by["student-distilled-fp32"]["params"]
    )  # rows and heads removed
    assert by["lit-opt-compressed"]["size_bytes"] < by["student-distilled-fp32"]["size_bytes"] / 3
    assert len({r["eval_tokens"] for r in report["rows"]}) == 1  # the same held-out tokens for every row
    assert report["data"]["source"] == str(data) and report["data"]["texts"]["test"] == 12
    assert len(report["goals"]) == 4
    plan = json.loads((out / "compressed" / "lit_opt.json").read_text())["plan"]["structure"]
    assert plan, "pruned rows/heads are physically removed"
    text = (out / "report.md").read_text()
    assert "| lit-opt-compressed |" in text and "## Samples" in text and "**Prompt 2**" in text
    for name in ("perplexity_vs_size.png", "perplexity_vs_decode_speed.png"):
        assert (out / name).is_file()
    captured = capsys.readouterr()
    console = captured.out
    assert "lit-opt-compressed" in console
    # lit_opt's own warning (the tied embeddings QAT compresses together) on one line, no source line echoed
    assert "[lit-opt recipe] UserWarning: QATCallback: 'student.model.embed_tokens' shares" in captured.err
    assert "prepare_quantization(" not in captured.err
    assert re.search(
        r"\[lit-opt recipe\] distill: the layer search keeps teacher layers \[[01]\] \(\d+ s\)", console
    )
    assert not list(tmp_path.glob(".run.incomplete-*"))


def test_config_and_overrides() -> None:
    config = load_config(CONFIG, ["--data.path", "notes.txt", "--data.text_column=body", "--output_dir=o"])
    assert (config.task, config.data.path, config.data.text_column, config.output_dir) == (
        "causal_lm",
        "notes.txt",
        "body",
        "o",
    )
    assert config.student.layers * 3 <= 30  # a third of SmolLM2's layers or fewer, chosen by search
    assert load_config(CONFIG, ["--student.layers=[0, 15, 29]"]).student.layers == [0, 15, 29]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["--data.max_length=64"], r"unknown config key 'data.max_length'\. Valid keys: .*data\.block_size"),
        (["--student.layers=[]"], r"student.layers=\[\] is not accepted; expected distinct layer indices"),
        (["--student.layers=[1, 1]"], r"student.layers=\[1, 1\] is not accepted.*or a number of layers"),
        (["--student.layers=0"], r"student.layers=0 is not accepted"),
        (["--student.layers=two"], r"student.layers='two' is not accepted; expected list\[int\] \| int"),
        (["--student.search_batches=0"], r"student.search_batches=0 is not accepted"),
        (["--latency.batch_sizes=[0]"], r"latency.batch_sizes=\[0\] is not accepted"),
        (["--compress.mlp_sparsity=1.0"], r"compress.mlp_sparsity=1.0 is not accepted; expected a fraction"),
        (["--data.block_size=1"], r"data.block_size=1 is not accepted"),
        (["--task=translation"], r"task='translation' is not accepted; expected one of"),
    ],
)
def test_bad_config_is_refused(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(CONFIG, overrides)


@pytest.mark.parametrize(
    ("content", "extra", "match"),
    [
        ("review\nnice\n", ["--data.text_column=body"], r"text_column='body' is not a column of .*'review'"),
        ("text\n\n \n", [], r"holds no text|holds no rows"),
        (None, ["--data.block_size=65"], r"block_size=65 is longer than the 64 positions of the teacher"),
        (
            None,
            ["--student.layers=[0, 5]"],
            r"student.layers=\[0, 5\] names layers the teacher's 2 do not have",
        ),
        (None, ["--student.layers=3"], r"student.layers=3 asks for more layers than the teacher's 2\. HINT"),
    ],
    ids=[
        "missing-column",
        "no-text",
        "block-beyond-positions",
        "layer-beyond-teacher",
        "more-layers-than-teacher",
    ],
)
def test_bad_input_fails_before_any_output(
    tmp_path: Path, content: str | None, extra: list[str], match: str
) -> None:
    data = tmp_path / "texts.csv"
    data.write_text(content if content is not None else "text\n" + "".join(f"{t}\n" for t in lm_texts(120)))
    with pytest.raises(ValueError, match=match):
        main(["recipe", str(CONFIG), *tiny(tmp_path, data), *extra])
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob(".run.incomplete-*"))


def test_goals_in_words() -> None:
    base = {"perplexity": 10.0, "size_bytes": 1000, "decode_tokens_per_s_b1": 10.0}
    rows = [
        {"name": "teacher-fp32", **base},
        {"name": "ptq-int8-torch-ao", **base, "perplexity": 14.0, "size_bytes": 300},
        {"name": "lit-opt-compressed", "perplexity": 13.0, "size_bytes": 90, "decode_tokens_per_s_b1": 40.0},
    ]
    assert [g["met"] for g in goals(rows)] == [False, True, True, True]


def test_layer_search_sees_the_same_batches_whatever_ran_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from lit_opt.recipe import lm_training

    seen: list[torch.Tensor] = []
    monkeypatch.setattr(
        lm_training,
        "choose_layers",
        lambda model, count, batches, task: seen.append(batches[0]["input_ids"]) or [0],
    )
    data = tmp_path / "texts.txt"
    data.write_text("".join(f"{t}\n" for t in lm_texts(120)))
    config = load_config(CONFIG, tiny(tmp_path, data))
    source = lm_training.teacher_source(config)
    dm, teacher = lm_training.make_data(config, source), lm_training.load_teacher(source)
    lm_training.student_layers(config, dm, teacher)
    torch.rand(7)  # other work in between moves the global random state
    lm_training.student_layers(config, dm, teacher)
    assert torch.equal(seen[0], seen[1])


def test_every_training_stage_starts_in_training_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_opt.recipe import lm_training

    data = tmp_path / "texts.txt"
    data.write_text("".join(f"{t}\n" for t in lm_texts(120)))
    config = load_config(CONFIG, [*tiny(tmp_path, data), "--student.max_steps=1", "--compress.max_steps=1"])
    source = lm_training.teacher_source(config)
    dm, teacher = lm_training.make_data(config, source), lm_training.load_teacher(source)  # eval mode
    run_dir = tmp_path / "run"
    with modes_at_training_start(monkeypatch) as fits:
        distilled = lm_training.distill_student(config, dm, teacher, [1], run_dir)
        distilled.eval()  # as distill_student hands it on; compression must turn dropout back on
        lm_training.compress_student(config, dm, distilled, teacher, run_dir)
    assert len(fits) == 2  # distill, compress
    for in_eval in fits:  # only the frozen teacher is in eval mode, deliberately
        assert in_eval and all(name.startswith("teacher") for name in in_eval), in_eval

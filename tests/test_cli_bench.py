"""``lit-opt bench``: a tiny exported BERT without tokenizer, beside its Hugging Face baseline; errors; help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lit_opt
from lit_opt.cli import LitOptCLI, main
from lit_opt.commands.bench import parse_int_list
from tests.helpers.models import tiny_bert

FAST = ["--repeats", "2", "--warmup", "0", "--no-progress"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("bench")
    model = tiny_bert()
    artifact = lit_opt.export(model, root / "int8", quantization={"weight_bits": 8})
    model.save_pretrained(str(root / "hf"))
    return str(artifact), str(root / "hf")


def test_bench_writes_table_json_and_plot(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    artifact, hf = models
    out = tmp_path / "out"
    args = ["bench", artifact, "--baseline", hf, "--batch-sizes", "1,2", "--seq-lens", "8,16"]
    main([*args, "--output-dir", str(out), *FAST])
    report = json.loads((out / "bench.json").read_text())
    rows = report["rows"]
    assert len(rows) == 8  # 2 models x 2 batch sizes x 2 sequence lengths
    assert {(r["model"], r["batch_size"], r["seq_len"]) for r in rows} == {
        (m, b, s) for m in ("artifact", "baseline") for b in (1, 2) for s in (8, 16)
    }
    for row in rows:
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] * 0.5
        assert row["throughput_seq_s"] == pytest.approx(row["batch_size"] / row["median_ms"] * 1e3)
        assert row["peak_bytes"] > 0 and row["peak_kind"] == "process rss"
        assert (row["speedup"] is not None) == (row["model"] == "artifact")
    sizes = {r["model"]: r["weights_bytes"] for r in rows}
    assert sizes["artifact"] < sizes["baseline"]  # int8 codes vs fp32
    assert report["env"]["loadavg_start"] is not None and report["settings"]["batch_sizes"] == [1, 2]
    assert report["settings"]["device"] == "cpu"
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "median ms" in table and "baseline" in table


def test_bench_without_baseline(models: tuple[str, str], tmp_path: Path) -> None:
    main(["bench", models[0], "--batch-sizes", "3", "--seq-lens", "4", "--output-dir", str(tmp_path), *FAST])
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["model"], r["batch_size"], r["speedup"]) for r in rows] == [("artifact", 3, None)]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--batch-sizes", "0,8"], r"batch_sizes='0,8' is not accepted; expected positive integers"),
        (["--seq-lens", "32,x"], r"seq_lens='32,x' is not accepted"),
        (["--seq-lens", "100"], r"seq_lens='100' exceeds the 64 positions of the artifact model"),
        (["--repeats", "0"], r"repeats=0 is not accepted; expected an integer >= 1"),
        (["--device", "gpu7"], r"device='gpu7' is not a device torch knows"),
    ],
)
def test_bad_options(models: tuple[str, str], tmp_path: Path, extra: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        main(["bench", models[0], "--output-dir", str(tmp_path), *FAST, *extra])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(models: tuple[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"device='cuda' asks for CUDA, which this PyTorch build or machine"):
        main(["bench", models[0], "--device", "cuda", "--output-dir", str(tmp_path), *FAST])


def test_a_gpu_index_beyond_the_machine_is_a_clear_error(
    models: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ValueError, match=r"device='cuda:3' names GPU 3, but this machine has 1. HINT: use cuda:0"
    ):
        main(["bench", models[0], "--device", "cuda:3", "--output-dir", str(tmp_path), *FAST])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_bench_on_cuda(models: tuple[str, str], tmp_path: Path) -> None:
    artifact, hf = models
    args = ["bench", artifact, "--baseline", hf, "--batch-sizes", "2", "--seq-lens", "8", "--device", "cuda"]
    main([*args, "--output-dir", str(tmp_path), *FAST])
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["settings"]["device"] == "cuda" and report["env"]["gpu"]
    assert all(r["median_ms"] > 0 and r["peak_kind"] == "cuda allocator" for r in report["rows"])


def test_paths_that_are_not_artifacts(models: tuple[str, str], tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"artifact='.*hf' is not a lit_opt artifact \(no lit_opt.json in it\)"
    ):
        main(["bench", models[1], *FAST])
    with pytest.raises(
        ValueError, match=r"baseline='.*' is neither a lit_opt artifact .* nor a Hugging Face"
    ):
        main(["bench", models[0], "--baseline", str(tmp_path), *FAST])


def test_parse_int_list_accepts_lists() -> None:
    assert parse_int_list("batch_sizes", [1, 8]) == [1, 8]


def test_help_lists_the_standalone_subcommand(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bench" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "--batch-sizes" in capsys.readouterr().out


def test_litoptcli_refuses_standalone_subcommands() -> None:
    with pytest.raises(ValueError, match=r"'bench' is a standalone subcommand that LitOptCLI does not run"):
        LitOptCLI(args=["bench", "x"])


def test_find_batch_size_prints_the_choice_and_the_curve(
    models: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["bench", models[0], "--find-batch-size", "--latency-budget-ms", "1e6", "--max-batch-size", "4"]
    main([*args, "--seq-lens", "8", "--output-dir", str(tmp_path), *FAST])
    (result,) = json.loads((tmp_path / "bench.json").read_text())["search"]
    # an unreachable budget: every size up to the maximum is tried and the largest is chosen
    assert [t["batch_size"] for t in result["trials"]] == [1, 2, 4]
    assert result["batch_size"] == 4 and result["stopped"] == "reached max_batch_size=4"
    out = capsys.readouterr().out
    assert "artifact, seq 8: batch size 4 (largest within 1000000.0 ms" in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("*")] == [["*", "4"]]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_batch_size_without_a_budget_picks_the_best_throughput(
    models: tuple[str, str], tmp_path: Path
) -> None:
    args = ["bench", models[0], "--baseline", models[1], "--find-batch-size", "--max-batch-size", "2"]
    main([*args, "--seq-lens", "8", "--output-dir", str(tmp_path), *FAST])
    found = json.loads((tmp_path / "bench.json").read_text())["search"]
    assert [r["model"] for r in found] == ["artifact", "baseline"]
    for result in found:
        best = max(result["trials"], key=lambda t: t["throughput"])
        assert result["batch_size"] == best["batch_size"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            ["--find-batch-size", "--latency-budget-ms", "0"],
            r"latency_budget_ms=0.0 is not accepted; expected a number of milliseconds > 0\. HINT",
        ),
        (["--find-batch-size", "--latency-budget-ms", "-5"], r"latency_budget_ms=-5.0 is not accepted"),
        (
            ["--latency-budget-ms", "50"],
            r"latency_budget_ms=50.0 only applies to the batch-size search\. HINT: add --find-batch-size",
        ),
        (
            ["--find-batch-size", "--max-batch-size", "0"],
            r"max_batch_size=0 is not accepted; expected an integer >= 1",
        ),
    ],
)
def test_bad_batch_size_search_options(
    models: tuple[str, str], tmp_path: Path, extra: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        main(["bench", models[0], "--output-dir", str(tmp_path), *FAST, *extra])


def test_bench_runs_an_onnx_export_beside_its_artifact(models: tuple[str, str], tmp_path: Path) -> None:
    onnx_dir = lit_opt.export_onnx(models[0], tmp_path / "onnx")
    args = [
        "bench",
        str(onnx_dir / "model.onnx"),
        "--baseline",
        models[0],
        "--batch-sizes",
        "2",
        "--seq-lens",
        "8",
    ]
    main([*args, "--output-dir", str(tmp_path / "out"), *FAST])
    rows = {r["model"]: r for r in json.loads((tmp_path / "out" / "bench.json").read_text())["rows"]}
    assert (
        rows["artifact"]["speedup"] > 0
        and rows["artifact"]["weights_bytes"] == (onnx_dir / "model.onnx").stat().st_size
    )
    with pytest.raises(
        ValueError, match="is an ONNX graph, which lit-opt bench runs with ONNX Runtime on the CPU only"
    ):
        main(["bench", str(onnx_dir), "--device", "meta", "--output-dir", str(tmp_path), *FAST])

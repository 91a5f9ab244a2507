"""The benchmark suite: every benchmark's ``--quick`` run (tiny random models, synthetic data, no download)
follows the result schema and renders; the committed results are valid and the README shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import NAMES, load
from benchmarks.harness import RESULTS, ROOT, render, validate
from benchmarks.tables import regenerate, regions, stale

#: Quick runs that take more than ~20 s on 2 cores (they still run in CI).
SLOW = {"teacher_cache", "distillation", "embeddings", "compression", "pruning", "qat", "batching"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in NAMES])
def test_quick_run_writes_a_valid_result(name: str, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = load(name).execute(["--quick", "--out", str(out), "--work-dir", str(tmp_path)])
    saved = json.loads(out.read_text())
    validate(saved)
    assert saved["benchmark"] == name and saved["quick"] is True
    assert saved["settings"]["model"] == "tiny"
    assert saved["rows"] and saved["tables"] and all(t["rows"] for t in saved["tables"])
    text = render(result)
    assert all(f"**{t['title']}**" in text for t in saved["tables"])
    assert [t for t in saved["tables"] if t["plot"]] and list(tmp_path.glob(f"{name}-*.png"))


def test_committed_results_follow_the_schema_and_fill_the_readme() -> None:
    names = sorted(p.stem for p in RESULTS.glob("*.json"))
    for name in names:
        assert name in NAMES
        validate(json.loads((RESULTS / f"{name}.json").read_text()))
    readme = (ROOT / "README.md").read_text()
    assert sorted(regions(readme)) == names
    assert stale(readme) == [], "README out of date: run python -m benchmarks.tables"


def test_settings_quick_and_overrides() -> None:
    bench = load("clustering")
    assert bench.parse([]).repeats == 3
    quick = bench.parse(["--quick"])
    assert (quick.model, quick.clusters, quick.repeats, quick.inits) == (
        "tiny",
        [4],
        1,
        ["kmeans++", "linear"],
    )
    assert bench.parse(["--quick", "--repeats", "5", "--clusters", "8", "16"]).clusters == [8, 16]


def test_bad_name_and_bad_result_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"benchmark 'nope' is not one of .*HINT: python -m benchmarks"):
        load("nope")
    with pytest.raises(ValueError, match=r"'date' missing or not .*'tables' missing.*HINT"):
        validate({"benchmark": "x", "schema_version": 1})
    bad = {"title": "t", "columns": ["a", "b"], "rows": [["1"]], "notes": "", "plot": None}
    result = load("clustering").execute(
        ["--quick", "--out", str(tmp_path / "r.json"), "--work-dir", str(tmp_path)]
    )
    with pytest.raises(ValueError, match=r"table 't': every row needs 2 cells"):
        validate({**result, "tables": [bad]})
    with pytest.raises(ValueError, match=r"README region bench:nope has no result file"):
        regenerate("<!-- bench:nope -->\nold\n<!-- /bench:nope -->\n", tmp_path)


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("pruning", ["--steps", "13"], r"steps=13 with epochs=3 is not accepted; expected a multiple.*HINT"),
        (
            "pruning",
            ["--prune-end", "40"],
            r"prune_start=4 and prune_end=40 is not accepted; expected 0 <= start < end < steps=12.*HINT",
        ),
        ("pruning", ["--sparsities", "1.5"], r"sparsities=\[1.5\] is not accepted; expected fractions.*HINT"),
        ("distillation", ["--epochs", "1"], r"epochs=1 is not accepted; expected 2 or more. HINT"),
        (
            "batching",
            ["--max-batch-size", "1"],
            r"max_batch_size=1 is not accepted; expected 2 or more. HINT",
        ),
    ],
)
def test_bad_settings_are_errors(name: str, args: list[str], match: str, tmp_path: Path) -> None:
    if name == "pruning":  # checked before any data or model is made
        from benchmarks.pruning import check

        with pytest.raises(ValueError, match=match):
            check(load(name).parse(["--quick", *args]))
        return
    with pytest.raises(ValueError, match=match):
        load(name).execute(["--quick", "--work-dir", str(tmp_path), "--out", str(tmp_path / "r.json"), *args])

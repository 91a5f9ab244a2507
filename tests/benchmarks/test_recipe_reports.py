"""The README's main-job tables are the committed recipe reports' tables, not copies typed by hand."""

from pathlib import Path

import pytest

from benchmarks.harness import RESULTS, ROOT

REPORTS = [
    # (the committed report, the README section its table belongs to)
    ("recipes/rotten_tomatoes/report.md", "## The main job"),
    ("recipes/smollm2_rotten_tomatoes/evaluate_rerun.md", "## Causal language models"),
]


def first_table(text: str) -> str:
    """The first Markdown table (its consecutive ``|`` lines) of ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize(("report", "section"), REPORTS)
def test_the_readme_shows_the_committed_reports_table(report: str, section: str) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(section)
    end = readme.find("\n## ", start + len(section))
    assert first_table((RESULTS / report).read_text()) in readme[start:end]


def test_the_causal_lm_rerun_kept_the_runs_perplexities_and_sizes() -> None:
    def columns(path: Path) -> list[list[str]]:  # model, perplexity, size, smaller, params
        return [row.split("|")[1:6] for row in first_table(path.read_text()).splitlines()[2:]]

    run = RESULTS / "recipes/smollm2_rotten_tomatoes"
    assert columns(run / "evaluate_rerun.md") == columns(run / "report.md")

"""SIGKILL a compression job at several points, resume from its last checkpoint: same artifact.

The job (``tests/hardening/fault_job.py``) runs in a subprocess. Each kill point is checked against
an uninterrupted run of the same job: the resumed run's artifact holds bit-identical tensors and the
same manifest (CPU, ``deterministic=True``, checkpoints at epoch ends, so the math is
deterministic). A kill during the export leaves no directory that ``load`` accepts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import lit_opt
from tests.hardening.fault_job import POINTS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tests.hardening.fault_job", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _manifest(artifact: Path) -> dict:
    """The manifest without its creation time (everything else must match)."""
    manifest = json.loads((artifact / "lit_opt.json").read_text())
    manifest.pop("created")
    return manifest


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    result = _run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "artifact"


@pytest.mark.parametrize("point", POINTS)
def test_killed_job_resumes_to_the_same_artifact(point: str, uninterrupted: Path, tmp_path: Path) -> None:
    killed = _run(tmp_path, "--kill-at", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    artifact = tmp_path / "artifact"
    assert not artifact.exists()  # killed before (or inside) the export: nothing looks complete
    if point == "export":
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".artifact.tmp-")]
        assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()
        with pytest.raises((ValueError, FileNotFoundError), match="lit_opt.json"):
            lit_opt.load(leftovers[0])

    resumed = _run(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(artifact / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].dtype == got[key].dtype and bool((expected[key] == got[key]).all()), key
    assert _manifest(artifact) == _manifest(uninterrupted)

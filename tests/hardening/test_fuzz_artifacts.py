"""Fuzz the artifact reader and loader past its checksums: only clean errors, no hang, bounded memory.

``tests/export/test_artifact_errors.py`` flips bytes and truncates files (the size and SHA-256 checks
catch those). Here every damaged weights file is re-signed (its size and hash written back into the
manifest), so the safetensors parser and the loader see the damage; and the manifest's JSON tree is
mutated value by value (wrong types, negative and huge numbers, missing keys). Every case must end
in a ``ValueError`` naming the artifact, or load a model; none may raise another type, run longer
than a few seconds, or allocate more than a bounded amount of memory.
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import lit_opt
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from lit_opt.sharing import SharingConfig, cluster_weights, prepare_sharing
from tests.helpers.models import build_net

MANIFEST, WEIGHTS = "lit_opt.json", "model.safetensors"
CASES = 60
MAX_SECONDS_PER_CASE = 10.0
MAX_EXTRA_RSS_MIB = 512
ODD_VALUES: list[Any] = [None, -1, 0, 2**40, 1.5, "", "x", [], {}, [2**40, 2**40], True]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TinyMLP artifact with every encoding: int4 per-group codes, a packed sparse mask, static ranges,
    and a codebook (fc2: shared after pruning)."""
    with torch.random.fork_rng(devices=[]):
        model = build_net("mlp", seed=0)
        groups = prepare_pruning(model, PruningConfig(0.5, targets=["fc2"]))
        update_masks(groups, PruningConfig(0.5, targets=["fc2"]), 0.5, step=0)
        prepare_sharing(model, SharingConfig(n_clusters=8, targets=["fc2"]))
        cluster_weights(model, SharingConfig(n_clusters=8, targets=["fc2"]))
        prepare_quantization(
            model,
            QuantizationConfig(
                weight_bits=4, granularity="per_group", group_size=8, activations="static", targets=["fc1"]
            ),
        )
        model.train()
        with torch.no_grad():
            model(torch.randn(32, 16))
        return lit_opt.export(model.eval(), tmp_path_factory.mktemp("good") / "mlp")


def _resign(art: Path) -> None:
    data = (art / WEIGHTS).read_bytes()
    manifest = json.loads((art / MANIFEST).read_text())
    manifest["files"][WEIGHTS] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (art / MANIFEST).write_text(json.dumps(manifest))


def _damage_weights(art: Path, rng: random.Random) -> str:
    data = bytearray((art / WEIGHTS).read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    kind = rng.choice(["header_len", "header_byte", "data_byte", "truncate", "header_json"])
    if kind == "header_len":
        data[:8] = struct.pack("<Q", rng.choice([0, 1, 2**31, 2**40, 2**63 - 1, len(data) + 1]))
    elif kind == "header_byte":
        data[8 + rng.randrange(header_len)] ^= 1 << rng.randrange(8)
    elif kind == "data_byte":
        data[8 + header_len + rng.randrange(len(data) - 8 - header_len)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    else:  # a well-formed header that lies about a tensor's dtype, shape or offsets
        header = json.loads(data[8 : 8 + header_len])
        key = rng.choice([k for k in header if k != "__metadata__"])
        field = rng.choice(["dtype", "shape", "data_offsets"])
        header[key][field] = rng.choice(["F64", "I64", [2**20, 2**20], [0, 2**40], [-1, 4]])
        raw = json.dumps(header).encode()
        data = bytearray(struct.pack("<Q", len(raw)) + raw + data[8 + header_len :])
    (art / WEIGHTS).write_bytes(bytes(data))
    _resign(art)
    return f"weights:{kind}"


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in [(*prefix, k), *_paths(v, (*prefix, k))]]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in [(*prefix, i), *_paths(v, (*prefix, i))]]
    return []


def _damage_manifest(art: Path, rng: random.Random) -> str:
    manifest = json.loads((art / MANIFEST).read_text())
    for _ in range(rng.randint(1, 2)):
        path = rng.choice([p for p in _paths(manifest) if p[:2] != ("files", WEIGHTS)])
        parent = manifest
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
    (art / MANIFEST).write_text(json.dumps(manifest))
    return "manifest:" + "/".join(map(str, path))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_damage_past_the_checksums_fails_cleanly(good: Path, tmp_path: Path) -> None:
    rng = random.Random(2026)
    outcomes: dict[str, int] = {}
    start_rss = _rss_mib()
    for i in range(CASES):
        art = Path(shutil.copytree(good, tmp_path / f"case{i}"))
        what = _damage_weights(art, rng) if i % 2 else _damage_manifest(art, rng)
        started = time.perf_counter()
        try:
            model = lit_opt.load(art, model=build_net("mlp", seed=9), kernel="reference")
            model(torch.randn(2, 16))
            outcome = "loaded"
        except ValueError as err:
            assert str(art) in str(err) or art.name in str(err), (what, err)
            outcome = "ValueError"
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {i} ({what}) raised {type(err).__name__}: {err}")
        assert time.perf_counter() - started < MAX_SECONDS_PER_CASE, what
        assert _rss_mib() - start_rss < MAX_EXTRA_RSS_MIB, what
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("ValueError", 0) >= CASES // 2, outcomes

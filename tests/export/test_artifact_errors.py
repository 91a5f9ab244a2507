"""Bad artifacts, bad skeletons and interrupted writes: each fails with a clear, typed error.

The rules checked here: a truncated, tampered or foreign file gets a clear error naming the file (see
*Reading* in docs/format.md), ``load`` never modifies the artifact, and an interrupted export never looks
whole (exports are written to a temporary sibling and renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lit_opt
from lit_opt.export.format import FORMAT_VERSION
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from tests.helpers.models import TinyMLP, build_net

MANIFEST, WEIGHTS = "lit_opt.json", "model.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid int4 per_group artifact of TinyMLP with static asymmetric activations."""
    with torch.random.fork_rng(devices=[]):
        model = build_net("mlp", seed=0)
        prepare_quantization(
            model,
            QuantizationConfig(
                weight_bits=4, granularity="per_group", group_size=8, symmetric=False, activations="static"
            ),
        )
        model.train()
        with torch.no_grad():
            model(torch.randn(64, 16))
        model.eval()
        return lit_opt.export(model, tmp_path_factory.mktemp("good") / "mlp")


@pytest.fixture
def art(good: Path, tmp_path: Path) -> Path:
    """A private copy of the good artifact, free to damage."""
    return Path(shutil.copytree(good, tmp_path / "art"))


def hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    edit(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def rewrite_weights(path: Path, edit) -> None:
    """Change the tensors, then record the new file's size and hash so only the intended check fires."""
    tensors = load_file(path / WEIGHTS)
    edit(tensors)
    save_file(tensors, str(path / WEIGHTS))
    data = (path / WEIGHTS).read_bytes()
    edit_manifest(
        path,
        lambda m: m["files"].update(
            {WEIGHTS: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
        ),
    )


def load_mlp(path: Path, **kwargs) -> nn.Module:
    return lit_opt.load(path, model=build_net("mlp", seed=9), kernel="reference", **kwargs)


def test_good_artifact_loads_and_is_not_modified(good: Path) -> None:
    before = hashes(good)
    for kernel in ("reference", "bf16", "auto"):
        lit_opt.load(good, model=build_net("mlp", seed=9), kernel=kernel)
    assert hashes(good) == before


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"dirpath='{re.escape(str(missing))}' is not a directory"):
        load_mlp(missing)


def test_directory_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(tmp_path / 'empty' / MANIFEST))} is missing.*not a lit_opt artifact",
    ):
        load_mlp(tmp_path / "empty")


def test_manifest_not_json(art: Path) -> None:
    (art / MANIFEST).write_text('{"format": "lit_opt", ')
    with pytest.raises(ValueError, match=rf"{MANIFEST} is not valid JSON .*the artifact is corrupt"):
        load_mlp(art)
    (art / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=rf"{MANIFEST} is not valid JSON"):
        load_mlp(art)


@pytest.mark.parametrize("content", [{"format": "onnx"}, ["lit_opt"], {"no": "format"}])
def test_foreign_format(art: Path, content) -> None:
    (art / MANIFEST).write_text(json.dumps(content))
    with pytest.raises(
        ValueError, match=rf"{MANIFEST} has format .*expected 'lit_opt': not a lit_opt artifact"
    ):
        load_mlp(art)


@pytest.mark.parametrize("version", [99, 0, "1"])
def test_wrong_format_version(art: Path, version) -> None:
    edit_manifest(art, lambda m: m.update(format_version=version, lit_opt_version="9.9.9"))
    with pytest.raises(
        ValueError,
        match=rf"{MANIFEST} has format_version {version!r}; this lit_opt reads versions 1 to {FORMAT_VERSION}.*'9.9.9'",
    ):
        load_mlp(art)


def test_missing_weights(art: Path) -> None:
    (art / WEIGHTS).unlink()
    with pytest.raises(ValueError, match=rf"{WEIGHTS} is missing from the artifact"):
        load_mlp(art)


def test_truncated_weights(art: Path) -> None:
    data = (art / WEIGHTS).read_bytes()
    (art / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError,
        match=rf"{WEIGHTS} is {len(data) // 2} bytes but {MANIFEST} records {len(data)}: truncated",
    ):
        load_mlp(art)


def test_flipped_byte_in_weights(art: Path) -> None:
    data = bytearray((art / WEIGHTS).read_bytes())
    data[-5] ^= 0x01  # inside the tensor data, same length
    (art / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(
        ValueError,
        match=rf"{WEIGHTS} does not match the SHA-256 recorded in {MANIFEST}: the file was modified",
    ):
        load_mlp(art)


def test_hashed_but_unreadable_weights(art: Path) -> None:
    (art / WEIGHTS).write_bytes(b"\x00" * 64)
    edit_manifest(
        art,
        lambda m: m["files"].update(
            {WEIGHTS: {"bytes": 64, "sha256": hashlib.sha256(b"\x00" * 64).hexdigest()}}
        ),
    )
    with pytest.raises(ValueError, match=rf"{WEIGHTS} cannot be read as safetensors"):
        load_mlp(art)


def test_manifest_names_tensor_the_file_lacks(art: Path) -> None:
    rewrite_weights(art, lambda t: t.pop("fc2.weight.scale"))
    with pytest.raises(
        ValueError, match=rf"{WEIGHTS} lacks tensors the manifest names, e.g. \['fc2.weight.scale'\]"
    ):
        load_mlp(art)


def test_static_range_missing(art: Path) -> None:
    rewrite_weights(art, lambda t: t.pop("fc1.input_quantizer.scale"))
    with pytest.raises(
        ValueError, match=rf"{WEIGHTS} lacks the static activation range 'fc1.input_quantizer.scale'"
    ):
        load_mlp(art)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m["tensors"]["fc1.bias"].update(encoding="rawish"),
            r"tensor 'fc1.bias' has encoding 'rawish'",
        ),
        (
            lambda m: m["tensors"]["fc1.weight"].update(encoding="int8"),
            r"the int8 entry of tensor 'fc1.weight' is inconsistent",
        ),
        (lambda m: m["tensors"]["fc1.weight"].update(shape=None), r"tensor 'fc1.weight' has shape None"),
        (
            lambda m: m["tensors"]["fc1.weight"].update(granularity="per_tensor"),
            r"'fc1.weight.scale' has shape \[32, 2\], not \[1, 1\]",
        ),
        (
            lambda m: m["tensors"]["fc1.weight"].update(group_size=4),
            r"'fc1.weight.scale' has shape \[32, 2\], not \[32, 4\]",
        ),
        (
            lambda m: m["tensors"]["fc2.bias"].update(shape=[5]),
            r"tensor 'fc2.bias' is \[4\] in .*model.safetensors, not \[5\]",
        ),
        (
            lambda m: m["modules"].update({"fcX": m["modules"].pop("fc1")}),
            r"the int4 entry of tensor 'fc1.weight' is inconsistent",
        ),
        (
            lambda m: m["modules"]["fc1"].update(activations="sometimes"),
            r"module 'fc1' has a malformed activation spec",
        ),
        (lambda m: m.update(tensors=["fc1.weight"]), r"has malformed 'tensors'/'modules' sections"),
        (
            lambda m: m.update(files="model.safetensors"),
            r"model.safetensors is \d+ bytes but lit_opt.json records None",
        ),
    ],
    ids=[
        "encoding",
        "int4-as-int8",
        "shape",
        "granularity",
        "group_size",
        "raw-shape",
        "module",
        "activations",
        "tensors",
        "files",
    ],
)
def test_edited_manifest_is_rejected(art: Path, edit, message: str) -> None:
    """The manifest carries no hash of itself: an edited one must fail, never load the skeleton's weights."""
    edit_manifest(art, edit)
    with pytest.raises(ValueError, match=message) as err:
        load_mlp(art)
    assert str(art) in str(err.value)


def test_skeleton_with_wrong_shapes(good: Path) -> None:
    with pytest.raises(
        ValueError,
        match=rf"{MANIFEST}: tensor 'fc1.(bias|weight)' has shape \[32.*\] but the skeleton's is \[8.*\]\..*HINT",
    ):
        lit_opt.load(good, model=TinyMLP(hidden=8))


def test_skeleton_lacking_a_tensor(good: Path) -> None:
    skeleton = nn.Sequential()
    skeleton.add_module("fc1", nn.Linear(16, 32))  # no fc2
    with pytest.raises(
        ValueError, match=rf"{MANIFEST} holds tensor 'fc2.\w+', which the skeleton \(Sequential\) lacks"
    ):
        lit_opt.load(good, model=skeleton)


def test_skeleton_needing_more_tensors(good: Path) -> None:
    class Bigger(TinyMLP):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)

    with pytest.raises(
        ValueError, match=rf"{MANIFEST} lacks tensors the skeleton needs, e.g. \['head.bias', 'head.weight'\]"
    ):
        lit_opt.load(good, model=Bigger())


def test_skeleton_with_quantizers(good: Path) -> None:
    skeleton = build_net("mlp")
    prepare_quantization(skeleton, QuantizationConfig())
    with pytest.raises(
        ValueError, match=r"model=\.\.\. already carries lit_opt quantizers.*HINT: pass a plain skeleton"
    ):
        lit_opt.load(good, model=skeleton)


def test_no_skeleton_and_no_recipe(good: Path) -> None:
    with pytest.raises(
        ValueError, match=rf"{MANIFEST} records no architecture.*HINT: pass the model skeleton"
    ):
        lit_opt.load(good)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"type": "huggingface", "class": "AutoTokenizer", "config": {}},
            r"names 'AutoTokenizer', which is not a transformers model class",
        ),
        (
            {"type": "import", "target": "os.system", "init_args": {}},
            r"names 'os.system', which is not an nn.Module class",
        ),
        (
            {"type": "import", "target": "no_such_pkg.Model"},
            r"names 'no_such_pkg.Model', which cannot be imported.*HINT",
        ),
        ({"type": "pickle"}, r"has an architecture of unknown type 'pickle'"),
        ("TinyMLP", r"records no architecture"),
    ],
)
def test_architecture_recipe_never_runs_arbitrary_code(art: Path, recipe, message: str) -> None:
    edit_manifest(art, lambda m: m.update(architecture=recipe))
    with pytest.raises(ValueError, match=rf"{MANIFEST} {message}"):
        lit_opt.load(art)


def test_fuzzed_artifacts_fail_cleanly(good: Path, tmp_path: Path) -> None:
    """30 seeded byte flips / truncations of either file: only ValueError (or success), no other type."""
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    for i in range(30):
        art = Path(shutil.copytree(good, tmp_path / f"f{i}"))
        target = art / rng.choice([MANIFEST, MANIFEST, WEIGHTS])
        data = bytearray(target.read_bytes())
        if rng.random() < 0.25:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
        before = hashes(art)
        try:
            load_mlp(art)
            outcome = "loaded"
        except (ValueError, FileNotFoundError) as err:
            assert str(art) in str(err)
            outcome = type(err).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert hashes(art) == before
    assert outcomes.get("ValueError", 0) >= 20, outcomes  # most damage is detected


# --- atomic writes ----------------------------------------------------------------------------


class BrokenTokenizer:
    def save_pretrained(self, directory: str) -> None:
        (Path(directory) / "tokenizer.json").write_text("{")
        raise OSError("disk full")


def test_failed_export_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="disk full"):
        lit_opt.export(build_net("mlp"), tmp_path / "out", tokenizer=BrokenTokenizer())
    assert list(tmp_path.iterdir()) == []  # neither the artifact nor a temporary directory


def test_failed_overwrite_keeps_existing_artifact(good: Path, tmp_path: Path) -> None:
    existing = Path(shutil.copytree(good, tmp_path / "out"))
    before = hashes(existing)
    with pytest.raises(OSError, match="disk full"):
        lit_opt.export(build_net("mlp", seed=3), existing, tokenizer=BrokenTokenizer())
    assert hashes(existing) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    load_mlp(existing)


def test_overwrite_false_refuses_existing(good: Path, tmp_path: Path) -> None:
    existing = Path(shutil.copytree(good, tmp_path / "out"))
    before = hashes(existing)
    with pytest.raises(FileExistsError, match=r"dirpath='.*out' exists. HINT: pass overwrite=True"):
        lit_opt.export(build_net("mlp"), existing, overwrite=False)
    assert hashes(existing) == before


def test_overwrite_replaces_existing(good: Path, tmp_path: Path) -> None:
    existing = Path(shutil.copytree(good, tmp_path / "out"))
    model = build_net("mlp", seed=3)
    lit_opt.export(model, existing, quantization={"weight_bits": 8})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old copy was removed
    assert json.loads((existing / MANIFEST).read_text())["tensors"]["fc1.weight"]["encoding"] == "int8"

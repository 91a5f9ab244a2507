"""The lit-opt CLI, run in-process: fit, validate, every shipped config, optimizer overrides, extra subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

import lit_opt
from lit_opt.cli import LitOptCLI, main
from lit_opt.data import DigitsDataModule
from lit_opt.inference.measure import call_model, synthetic_batch
from lit_opt.models import MLPClassifier
from tests.helpers.configs import StandIns, smoke_config, write_texts, write_tiny_minilm, write_tiny_smollm2
from tests.recipe.test_recipe import write_reviews

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
#: LightningCLI configs; configs/recipes/ holds `lit-opt recipe` configs (tests/recipe runs them).
CONFIGS = sorted(
    p
    for p in [*CONFIGS_DIR.rglob("*.yaml"), *CONFIGS_DIR.rglob("*.yml")]
    if "recipes" not in p.relative_to(CONFIGS_DIR).parts
)
DIGITS_MLP = CONFIGS_DIR / "digits_mlp.yaml"
FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.limit_predict_batches=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs name relative output paths (``outputs/...``); keep them out of the repository."""
    monkeypatch.chdir(tmp_path)


def _config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS_DIR))


def test_configs_are_found() -> None:
    assert DIGITS_MLP in CONFIGS


def test_fit_then_validate_from_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "run"
    main(
        [
            "fit",
            "--config",
            str(DIGITS_MLP),
            *FAST,
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=false",
        ]
    )
    checkpoints = sorted((root / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["epoch=0-step=3.ckpt", "last.ckpt"]
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "lit_opt.models.MLPClassifier"
    assert saved["trainer"]["max_epochs"] == 1

    main(
        [
            "validate",
            "--config",
            str(DIGITS_MLP),
            *FAST,
            "--trainer.logger=false",
            f"--ckpt_path={checkpoints[-1]}",
        ]
    )


def test_validate_reports_accuracy() -> None:
    cli = LitOptCLI(args=["validate", "--config", str(DIGITS_MLP), *FAST, "--trainer.logger=false"])
    assert isinstance(cli.model, MLPClassifier) and isinstance(cli.datamodule, DigitsDataModule)
    assert 0.0 <= cli.trainer.callback_metrics["val_acc"].item() <= 1.0


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    """Tiny MiniLM- and SmolLM2-shaped model directories, small review and text files and a data cache,
    shared by the config runs."""
    root = tmp_path_factory.mktemp("stand_ins")
    return StandIns(
        minilm=write_tiny_minilm(root / "model"),
        reviews=write_reviews(root / "reviews.csv", rows=96),
        cache=root / "cache",
        llama=write_tiny_smollm2(root / "llama"),
        texts=write_texts(root / "texts.txt"),
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_every_config_fits_fast(config: Path, tmp_path: Path, stand_ins: StandIns) -> None:
    # The real configs with a tiny model and file in place of MiniLM and Rotten Tomatoes, and schedules
    # shrunk to the few steps run (so every callback acts); the config's own logger stays on, under tmp_path.
    smoke, overrides = smoke_config(config, tmp_path / "smoke.yaml", stand_ins)
    main(["fit", "--config", str(smoke), *FAST, *overrides, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    assert any(tmp_path.rglob("*.ckpt")) or any(tmp_path.rglob("events.out.tfevents.*"))
    callbacks = yaml.safe_load(config.read_text())["trainer"].get("callbacks") or []
    for callback in callbacks:
        if callback["class_path"] == "lit_opt.ExportCallback":  # the artifact loads and runs
            model = lit_opt.load(tmp_path / callback["init_args"]["dirpath"], kernel="reference")
            vocab = getattr(getattr(model, "config", None), "vocab_size", None)
            if vocab is not None:
                with torch.inference_mode():
                    logits = call_model(model, synthetic_batch(2, 8, vocab)).logits
                causal_lm = getattr(model, "generate", None) is not None and logits.dim() == 3
                assert logits.shape == ((2, 8, vocab) if causal_lm else (2, 2)) and bool(
                    logits.isfinite().all()
                )


def test_optimizer_and_scheduler_from_the_command_line() -> None:
    cli = LitOptCLI(
        args=[
            "--config",
            str(DIGITS_MLP),
            "--optimizer=torch.optim.SGD",
            "--optimizer.lr=0.05",
            "--lr_scheduler=torch.optim.lr_scheduler.StepLR",
            "--lr_scheduler.step_size=2",
        ],
        run=False,
    )
    optimizers, schedulers = cli.model.configure_optimizers()
    assert isinstance(optimizers[0], torch.optim.SGD) and optimizers[0].defaults["lr"] == 0.05
    assert isinstance(schedulers[0], torch.optim.lr_scheduler.StepLR)


def test_default_optimizer_is_the_models_adamw() -> None:
    cli = LitOptCLI(args=["--config", str(DIGITS_MLP)], run=False)
    assert isinstance(cli.model.configure_optimizers(), torch.optim.AdamW)


calls: list[dict[str, Any]] = []


def _hello(
    model: LightningModule, datamodule: LightningDataModule | None, trainer: Trainer, greeting: str = "hello"
) -> None:
    """Say hello to a configured model."""
    calls.append({"model": model, "datamodule": datamodule, "trainer": trainer, "greeting": greeting})


class _HelloCLI(LitOptCLI):
    extra_subcommands = {"hello": _hello}


def test_extra_subcommand_runs_with_the_configured_objects() -> None:
    calls.clear()
    _HelloCLI(args=["hello", "--config", str(DIGITS_MLP), "--greeting=hi", "--trainer.logger=false"])
    (call,) = calls
    assert isinstance(call["model"], MLPClassifier)
    assert isinstance(call["datamodule"], DigitsDataModule)
    assert isinstance(call["trainer"], Trainer) and call["trainer"].max_epochs == 5
    assert call["greeting"] == "hi"


def test_extra_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _HelloCLI(args=["--help"])
    out = capsys.readouterr().out
    assert "hello" in out and "Say hello to a configured model." in out
    assert {"fit", "validate", "test", "predict", "hello"} <= set(_HelloCLI.subcommands())
    assert set(LitOptCLI.subcommands()) >= {"fit", "validate", "test", "predict"}


def test_extra_subcommand_clashing_with_lightning() -> None:
    class Clash(LitOptCLI):
        extra_subcommands = {"fit": _hello}

    with pytest.raises(
        ValueError, match=r"extra subcommand 'fit' clashes with LightningCLI's own subcommands"
    ):
        Clash.subcommands()


def test_extra_subcommand_without_the_injected_parameters() -> None:
    def bad(model: LightningModule, dirpath: str = "out") -> None:
        """Bad."""

    class Bad(LitOptCLI):
        extra_subcommands = {"bad": bad}

    with pytest.raises(
        TypeError, match=r"extra subcommand 'bad' has parameters \['model', 'dirpath'\]; expected"
    ):
        Bad.subcommands()


def test_qat_config_fits_exports_and_the_export_subcommand_rebuilds_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    import lit_opt

    config = CONFIGS_DIR / "digits_qat.yaml"
    root = tmp_path / "qat"
    steps = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=12", "--trainer.limit_val_batches=2"]
    main(
        [
            "fit",
            "--config",
            str(config),
            *FAST[5:],
            *steps,
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=false",
        ]
    )
    artifact = (
        tmp_path / "outputs" / "digits_qat" / "artifact"
    )  # ExportCallback's dirpath, relative to the cwd
    assert (artifact / "lit_opt.json").is_file()
    main(
        [
            "export",
            "--config",
            str(config),
            f"--ckpt_path={root / 'checkpoints' / 'last.ckpt'}",
            f"--dirpath={tmp_path / 'cli'}",
        ]
    )
    x = torch.rand(16, 64)
    from_callback = lit_opt.load(artifact, kernel="reference")(x)
    from_command = lit_opt.load(tmp_path / "cli", kernel="reference")(x)
    assert torch.equal(from_callback, from_command)

"""The main job's console: third-party chatter is hidden unless ``--verbose``, and restored afterwards."""

from __future__ import annotations

import logging
import warnings

import pytest
from transformers.utils import logging as transformers_logging

from lit_opt.recipe.quiet import quiet


class _Lines(logging.Handler):
    """Collects what reaches Lightning's own logger (it does not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lightning_lines(caplog: pytest.LogCaptureFixture):
    import lightning.pytorch  # noqa: F401 (configures its logger)

    caplog.set_level(logging.INFO, logger="lightning.pytorch")  # the suite's conftest sets WARNING
    handler = _Lines()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    yield handler.lines
    logging.getLogger("lightning.pytorch").removeHandler(handler)


def _chatter() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    transformers_logging.get_logger("transformers.modeling_utils").warning("LOAD REPORT")
    warnings.warn_explicit(
        "Found 3 module(s) in eval mode", UserWarning, "fit_loop.py", 1, "lightning.pytorch"
    )


def test_quiet_hides_third_party_logs_and_warnings_then_restores(
    caplog: pytest.LogCaptureFixture, lightning_lines: list[str]
) -> None:
    caplog.set_level(logging.INFO)
    level = logging.getLogger("lightning.pytorch").level
    assert level == logging.INFO
    verbosity = transformers_logging.get_verbosity()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(verbose=False):
            _chatter()
            warnings.warn("lit_opt's own warning stays", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["lit_opt's own warning stays"]
    assert lightning_lines == []
    assert "LOAD REPORT" not in caplog.text
    assert logging.getLogger("lightning.pytorch").level == level
    assert transformers_logging.get_verbosity() == verbosity
    assert transformers_logging.is_progress_bar_enabled()


def test_verbose_shows_everything(caplog: pytest.LogCaptureFixture, lightning_lines: list[str]) -> None:
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(verbose=True):
            _chatter()
    assert lightning_lines == ["GPU available: False"]
    assert "LOAD REPORT" in caplog.text
    assert [str(w.message) for w in seen] == ["Found 3 module(s) in eval mode"]


def test_lit_opts_warnings_print_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from lit_opt.recipe import quiet as quiet_module

    source = str(
        quiet_module.PACKAGE_DIR / "module_types.py"
    )  # where lit_opt's tied-embeddings warning comes from
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet(verbose=False):
            warnings.warn_explicit(
                "QATCallback: 'embed' shares its weight\nwith ['lm_head']",
                UserWarning,
                source,
                225,
                "lit_opt",
            )
            warnings.warn("a user's warning", UserWarning, stacklevel=1)
        warnings.warn_explicit("after the run", UserWarning, source, 225, "lit_opt")
    assert capsys.readouterr().err == (
        "[lit-opt recipe] UserWarning: QATCallback: 'embed' shares its weight with ['lm_head']\n"
    )
    assert [str(w.message) for w in seen] == ["a user's warning", "after the run"]  # shown as Python does


def test_lit_opts_logged_warnings_carry_the_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("lit_opt.inference.generation")
    with quiet(verbose=False):
        log.warning("%s: decode time at batch %d is within noise", "teacher-fp32", 8)
        log.info("not shown")
    assert (
        capsys.readouterr().err
        == "[lit-opt recipe] WARNING: teacher-fp32: decode time at batch 8 is within noise\n"
    )
    assert logging.getLogger("lit_opt").propagate and not logging.getLogger("lit_opt").handlers  # restored

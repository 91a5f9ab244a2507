"""Keep the main job's console to its own lines: third-party chatter off unless ``--verbose``.

Silenced while the recipe runs, and restored afterwards: transformers' and datasets' info logs and
progress bars (weight loading, "LOAD REPORT" tables, dataset caching), Lightning's info lines
("GPU available", tips, "`Trainer.fit` stopped") and its advisory warnings. Lightning's training
progress bars and lit_opt's own stage lines stay; warnings and errors from lit_opt are never hidden, and
lit_opt's warnings print as one line (``[lit-opt recipe] UserWarning: ...``) instead of Python's two, which
echo the source line that raised them; its logged warnings carry the same prefix (``[lit-opt recipe] WARNING: ...``).

Example::

    with quiet(verbose=False):
        run_recipe(config)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

LOGGERS = (
    "lightning.pytorch",
    "lightning.fabric",
    "lightning",
    "transformers",
    "datasets",
    "torch.distributed",
)
# third-party warnings that say nothing about the user's run (checked at each release of the pins)
WARNING_MODULES = r"(lightning|transformers|datasets|torch\.ao)(\..*)?"
#: lit_opt's own source files are under this directory (a warning's filename is the file it is attributed to).
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def one_line_warnings(show: Callable[..., Any]) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing lit_opt's warnings as one line to stderr; others go to ``show``."""

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if PACKAGE_DIR not in Path(filename).resolve().parents:
            show(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())
        print(
            f"[lit-opt recipe] {category.__name__}: {text}",
            file=sys.stderr if file is None else file,
            flush=True,
        )

    return showwarning


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Silence third-party info output and advisory warnings for the duration, unless ``verbose``."""
    if verbose:
        yield
        return
    import datasets
    from transformers.utils import logging as transformers_logging

    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    transformers_verbosity = transformers_logging.get_verbosity()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    datasets_bars = datasets.utils.is_progress_bar_enabled()
    package_log = logging.getLogger("lit_opt")
    package_propagates = package_log.propagate
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("[lit-opt recipe] %(levelname)s: %(message)s"))
    try:
        package_log.addHandler(handler)
        package_log.propagate = False
        for name in LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        datasets.utils.disable_progress_bars()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=WARNING_MODULES)
            warnings.showwarning = one_line_warnings(warnings.showwarning)  # restored by catch_warnings
            yield
    finally:
        package_log.removeHandler(handler)
        package_log.propagate = package_propagates
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        transformers_logging.set_verbosity(transformers_verbosity)
        if transformers_bars:
            transformers_logging.enable_progress_bar()
        if datasets_bars:
            datasets.utils.enable_progress_bars()

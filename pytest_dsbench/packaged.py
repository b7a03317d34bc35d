"""Where the project's data folders are: the copy inside an installed wheel, else a source checkout's.

The wheel maps ``thresholds/`` to ``pytest_dsbench/_data/thresholds`` and ``fixtures/<name>`` to
``pytest_dsbench/_data/<name>`` (pyproject.toml ``force-include``). The packaged copy is looked for first: an
installed package must never pick up a same-named folder that happens to lie beside it in site-packages.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent

DATA_FOLDERS = {
    "thresholds": Path("thresholds"),
    "tiny-r1": Path("fixtures") / "tiny-r1",
    "datasets": Path("fixtures") / "datasets",
}
"""Each data folder's name inside the wheel's ``_data`` and its path in a source checkout."""


def data_dir(name: str) -> Path:
    """The data folder ``name`` (a :data:`DATA_FOLDERS` key): the wheel's copy, else the checkout's (returned
    even when missing, so errors name the path a checkout would have)."""
    packaged = PACKAGE_DIR / "_data" / name
    if packaged.is_dir():
        return packaged
    return CHECKOUT_DIR / DATA_FOLDERS[name]

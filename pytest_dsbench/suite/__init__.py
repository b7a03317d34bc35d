"""The conformance suite, shipped in the package: the test modules (and their conftest) a gate run executes.

Inference teams run the gate from their own CI repository, which holds no copy of these tests, so they live in
the package and pytest finds them in one of two standard ways:

* ``pytest --engine vllm --hw cpu`` in a folder without tests (no path arguments, no ``testpaths`` ini, no test
  file in the folder): the plugin collects this folder instead (:func:`collects_instead`). It is the shortest
  command for the common case, a CI job whose only tests are the gate. Only a run that names its target
  (``--engine`` or ``--base-url``, or their ``DSBENCH_*`` environment or ini twins) is redirected, and only from
  a folder without test files: installing the plugin must never take over a plain ``pytest`` of an unrelated
  project, nor a team's own tests written with the suite's fixtures (``pytest --base-url URL`` beside them).
* ``pytest --pyargs pytest_dsbench.suite ...``: pytest's own convention for tests inside an installed package,
  for running the suite beside test paths of one's own (``pytest --pyargs pytest_dsbench.suite tests/``).

A source checkout collects the same folder through its ``testpaths``. Results are stored and compared by test
id, and pytest names a test by its path from the rootdir (the site-packages path of an installed package, or
just ``test_slo.py`` under ``--pyargs``); :func:`stable_test_id` gives every suite test one id wherever it was collected
from, so runs from a checkout and from an installed package compare.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
"""The folder of the suite's test modules."""

SUITE_ID_PREFIX = "pytest_dsbench/suite/"


def stable_test_id(path: Path, nodeid: str) -> str:
    """``pytest_dsbench/suite/<file>::<test>`` for a test of the suite, else pytest's ``nodeid`` unchanged."""
    try:
        relative = path.resolve().relative_to(SUITE_DIR)
    except ValueError:
        return nodeid
    _, sep, name = nodeid.partition("::")
    return f"{SUITE_ID_PREFIX}{relative.as_posix()}{sep}{name}"


def collects_instead(folder: Path, test_patterns: Sequence[str], skipped_dirs: Sequence[str]) -> bool:
    """True when ``folder`` (the invocation folder) holds no test file: no file matching ``test_patterns``
    (pytest's ``python_files``) below it, outside folders matching ``skipped_dirs`` (``norecursedirs``) and
    virtual environments. Stops at the first test file found."""
    for root, dirs, files in os.walk(folder):
        if any(fnmatch.fnmatch(name, pattern) for name in files for pattern in test_patterns):
            return False
        dirs[:] = [
            d for d in dirs
            if not any(fnmatch.fnmatch(d, pattern) for pattern in skipped_dirs)
            and not (Path(root) / d / "pyvenv.cfg").is_file()
        ]
    return True

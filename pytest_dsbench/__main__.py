"""``python -m pytest_dsbench``: the same command line as ``pytest-dsbench``."""

from __future__ import annotations

from pytest_dsbench.cli import main

raise SystemExit(main())

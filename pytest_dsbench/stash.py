"""Typed keys for what the plugin keeps on ``config.stash``."""

from __future__ import annotations

import pytest

from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.results import RunResults
from pytest_dsbench.session import EngineSession
from pytest_dsbench.thresholds import HardwareProfile

OPTIONS = pytest.StashKey[DsbenchOptions]()
PROFILE = pytest.StashKey[HardwareProfile]()
ENGINE_SESSION = pytest.StashKey[EngineSession]()
RESULTS = pytest.StashKey[RunResults]()

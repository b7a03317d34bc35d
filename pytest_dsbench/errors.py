"""Exceptions with one-line messages that say what is wrong and how to fix it."""

from __future__ import annotations

import pytest


class DsbenchUsageError(pytest.UsageError):  # type: ignore[misc]  # pytest reports subclasses as usage errors
    """A command-line, ini or threshold-file value the suite cannot use (exit code 4, no traceback)."""


class ThresholdsError(DsbenchUsageError):  # type: ignore[misc]
    """A thresholds/<hw>.toml file that does not match the schema."""


class EngineStartError(Exception):
    """The engine process exited or never became healthy while the suite waited for it."""


class EngineDied(Exception):
    """The engine process the suite started exited while tests were still running."""


class InvalidRun(Exception):
    """A load run whose numbers must not be judged (an error, never a pass): the client, not the server, limited
    it, or a cold-cache workload's prompts were served from the prefix cache.

    Raised where tests take their load runs (fixtures), so the test errors; reported as its message alone."""


class MissingExtra(ImportError):
    """An optional heavy dependency is not installed; the message names the extra to install."""

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{module}' package, which is not installed. "
            f"Install it with: pip install 'pytest-dsbench[{extra}]'"
        )
        self.extra = extra
        self.module = module


def require(module: str, extra: str, purpose: str) -> object:
    """Import an optional dependency or raise :class:`MissingExtra` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, module, purpose) from exc

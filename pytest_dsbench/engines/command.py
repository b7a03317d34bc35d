"""The one launch-command builder: an engine's declarative flag table applied to a launch request.

Every adapter describes its command line as data, a tuple of :class:`Flag` rows saying which request or
deployment field becomes which argument(s) and when, e.g. ``tensor_parallel`` -> ``--tensor-parallel-size``
(vLLM) or ``--tp`` (SGLang, LMDeploy). :func:`build_command` renders every table the same way, so the engines
cannot drift in how they treat a value (a parallel size of 1 is never passed, an unset limit never appears),
and a new engine is a table, not code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_dsbench.thresholds import Deployment, HardwareProfile


@dataclass(frozen=True)
class LaunchRequest:
    """Everything an adapter needs to build a launch command."""

    python: str
    model: str
    served_model_name: str
    host: str
    port: int
    hw: HardwareProfile
    extra_args: tuple[str, ...] = ()
    on_cpu: bool = False


VALUE = "{value}"
"""Placeholder in a row's arguments for the field's value (a whole argument only, so JSON stays literal)."""

REQUEST_FIELDS = ("model", "served_model_name", "host", "port")
"""Fields a row may read from the :class:`LaunchRequest`; the others are the
deployment's (``thresholds.Deployment``: ``tensor_parallel``, ``max_model_len``, ``mtp``, ...)."""

When = Literal["always", "above_one", "set"]


@dataclass(frozen=True)
class Flag:
    """One row of a flag table: ``args`` (``VALUE`` replaced by ``field``'s value) when ``when`` holds.

    ``field``: a request or deployment field, or None for arguments every launch passes. ``when``:
    ``always``; ``above_one`` (parallel sizes: 1 is every engine's default and is left out); ``set`` (a
    truthy value: a limit that is configured, a switch that is on). ``gpu_only``: left out when the engine
    runs on a CPU-only host (e.g. vLLM's GPU memory fraction).
    """

    field: str | None
    args: tuple[str, ...]
    when: When = "always"
    gpu_only: bool = False

    def __post_init__(self) -> None:
        known = (*REQUEST_FIELDS, *Deployment.model_fields)
        if self.field is not None and self.field not in known:
            raise ValueError(f"flag {self.args} reads unknown field {self.field!r}; valid fields: {', '.join(known)}")
        if self.field is None and (VALUE in self.args or self.when != "always"):
            raise ValueError(f"flag {self.args} has no field, so it can neither use {VALUE} nor a condition; "
                             "give it the field it depends on")
        if not self.args:
            raise ValueError(f"flag row for {self.field!r} has no arguments")

    def render(self, request: LaunchRequest) -> list[str]:
        """The arguments this row adds to ``request``'s command (empty when its condition does not hold)."""
        if self.gpu_only and request.on_cpu:
            return []
        if self.field is None:
            return list(self.args)
        value = getattr(request, self.field) if self.field in REQUEST_FIELDS else getattr(
            request.hw.deployment, self.field)
        if (self.when == "above_one" and not value > 1) or (self.when == "set" and not value):
            return []
        return [str(value) if arg == VALUE else arg for arg in self.args]


def build_command(request: LaunchRequest, engine: str, entry: Sequence[str], flags: Sequence[Flag]) -> list[str]:
    """``python`` + ``entry`` + every row of ``flags`` in order, then the profile's ``[engines.<engine>] args``,
    the deployment's ``engine_args`` and the request's extra arguments (last, so a user's ``--engine-arg``
    wins over the profile's)."""
    command = [request.python, *entry]
    for flag in flags:
        command += flag.render(request)
    return command + profile_args(request.hw, engine, request.extra_args)


def profile_args(hw: HardwareProfile, engine: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The arguments a launch adds after the adapter's flags: the profile's ``[engines.<engine>] args``, the
    deployment's ``engine_args`` and the user's ``--engine-arg`` values (also what the engine's launch features
    are read from, before it starts)."""
    return list(hw.launch(engine).args) + list(hw.deployment.engine_args) + list(extra_args)

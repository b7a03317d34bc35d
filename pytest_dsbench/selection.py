"""Which collected tests apply to the engine under test: engine-only tests, required features, known upstream
bugs (strict xfails), GPU-only tests, and checks a routing patch would make meaningless."""

from __future__ import annotations

import pytest

from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile


def apply_engine_marks(items: list[pytest.Item], options: DsbenchOptions, hw: HardwareProfile) -> None:
    """Add skip and xfail marks to ``items`` from their ``only_engine``, ``requires``, ``check``, ``gpu``,
    ``accuracy`` and ``fixture_model`` markers. Required features are those of the engine as the suite will
    launch it with ``hw``'s arguments (attach mode: as declared, without launch features)."""
    from pytest_dsbench.engines.adapters import get_adapter
    from pytest_dsbench.engines.command import profile_args
    from pytest_dsbench.engines.registry import unknown_engines, valid_engines
    from pytest_dsbench.eplb import accuracy_skip_reason
    from pytest_dsbench.session import has_gpu

    engine = options.engine
    args = None if options.attach else profile_args(hw, engine, options.engine_args)
    behaviour = get_adapter(engine).behaviour.for_launch(args)
    gpu: bool | None = None
    for item in items:
        only = item.get_closest_marker("only_engine")
        unknown = unknown_engines(only.args) if only else []
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: only_engine names unknown engine(s) {', '.join(unknown)}; valid: {valid_engines()}"
            )
        if only and engine not in only.args:
            reason = f"only for engine(s) {', '.join(only.args)}; this is {engine}"
            item.add_marker(pytest.mark.skip(reason=reason))
        required = item.get_closest_marker("requires")
        if required:
            missing = sorted(set(required.args) - behaviour.features)
            if missing:
                item.add_marker(pytest.mark.skip(
                    reason=f"engine {engine} does not support feature(s): {', '.join(missing)}"))
        check = item.get_closest_marker("check")
        if check and check.args:
            known = behaviour.known_failure(str(check.args[0]))
            if known:
                not_run = "not run: its request kills the server. " if known.kills_server else ""
                item.add_marker(pytest.mark.xfail(strict=True, run=not known.kills_server,
                                                  reason=f"{not_run}{known.reason} ({known.url})"))
        if item.get_closest_marker("gpu"):
            gpu = has_gpu() if gpu is None else gpu
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU; none is visible"))
        if item.get_closest_marker("accuracy") or item.get_closest_marker("fixture_model"):
            patched = accuracy_skip_reason(options.eplb)
            if patched:
                item.add_marker(pytest.mark.skip(reason=patched))

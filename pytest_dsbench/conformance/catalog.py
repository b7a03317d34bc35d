"""The catalogue of API conformance checks: ids, what each asserts, severity, sources, known deviations, and
the fake-engine faults that must make it fail.

Checks register themselves with :func:`check`; the group modules are imported by :func:`all_checks`. The
conformance tests (``pytest_dsbench/suite/test_api_*.py``) parametrize over :func:`params`, and the docs table is
generated from here::

    python -m pytest_dsbench.conformance.catalog > docs/conformance.md
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_dsbench.conformance.expect import CheckFailed, CheckSkipped
from pytest_dsbench.engines.adapters import all_adapters
from pytest_dsbench.engines.registry import unknown_engines, valid_engines

if TYPE_CHECKING:
    from pytest_dsbench.conformance.context import ApiContext

Severity = Literal["MUST", "SHOULD", "EXT"]
CheckFn = Callable[["ApiContext"], None]

GROUPS: dict[str, tuple[str, str]] = {
    "A": ("Discovery, health, metrics and tokenizer endpoints", "discovery"),
    "B": ("Request validation and the error schema", "validation"),
    "HW": ("Hardware-profile request limits", "validation"),
    "C": ("Response schema", "responses"),
    "D": ("Usage accounting", "responses"),
    "E": ("Length control and finish_reason", "length"),
    "F": ("Stop sequences", "stop"),
    "G": ("Streaming (SSE) framing and chunk semantics", "streaming"),
    "H": ("Streaming usage (stream_options)", "streaming"),
    "I": ("n > 1 and batched prompts", "sampling"),
    "J": ("Logprobs", "sampling"),
    "K": ("Sampling controls and determinism", "determinism"),
    "L": ("Structured outputs", "structured"),
    "M": ("Tool calling (DeepSeek tool parser)", "tools"),
    "N": ("Reasoning output (DeepSeek-R1)", "reasoning"),
    "O": ("Prompt construction and the chat template", "template"),
    "P": ("Robustness and concurrency", "robustness"),
}
MODULES = (
    "discovery",
    "validation",
    "responses",
    "length",
    "stop",
    "streaming",
    "sampling",
    "determinism",
    "structured",
    "tools",
    "reasoning",
    "template",
    "robustness",
)
REFERENCE = "reference api_conformance.md"


@dataclass(frozen=True)
class Check:
    """One registered conformance check."""

    id: str
    title: str
    severity: Severity
    faults: tuple[str, ...]
    source: str
    func: CheckFn
    deviations: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    greedy_retries: int = 0
    """Extra attempts when the check compares separate temperature-0 runs: engines are not batch-invariant,
    so other traffic can change a greedy output; a real violation fails every attempt."""

    @property
    def group(self) -> str:
        return self.id.split(".")[0].rstrip("0123456789")

    @property
    def name(self) -> str:
        return self.id.split(".", 1)[1]

    def __str__(self) -> str:
        return self.id


REGISTRY: dict[str, Check] = {}


def check(
    check_id: str,
    title: str,
    *,
    severity: Severity,
    faults: tuple[str, ...],
    source: str,
    deviations: dict[str, str] | None = None,
    requires: tuple[str, ...] = (),
    greedy_retries: int = 0,
) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under ``check_id`` (``"B03.context_overflow_prompt"``)."""

    unknown = unknown_engines(deviations or {})
    if unknown:
        raise ValueError(f"conformance check {check_id!r}: deviations name unknown engine(s) {', '.join(unknown)}; "
                         f"valid engines: {valid_engines()} (pytest_dsbench/engines/registry.py)")

    def register(func: CheckFn) -> CheckFn:
        if check_id in REGISTRY and REGISTRY[check_id].func is not func:
            raise ValueError(f"conformance check id {check_id!r} is registered twice")
        REGISTRY[check_id] = Check(
            check_id,
            title,
            severity,
            tuple(faults),
            source,
            func,
            dict(deviations or {}),
            tuple(requires),
            greedy_retries,
        )
        return func

    return register


def _sort_key(item: Check) -> tuple[int, str]:
    return (list(GROUPS).index(item.group), item.id)


def all_checks() -> list[Check]:
    """Every registered check, in catalogue order (imports the group modules)."""
    for module in MODULES:
        importlib.import_module(f"pytest_dsbench.conformance.{module}")
    return sorted(REGISTRY.values(), key=_sort_key)


def get(check_id: str) -> Check:
    all_checks()
    return REGISTRY[check_id]


def params(*groups: str) -> list[Any]:
    """pytest params for the checks of ``groups``: id, ``check`` marker (known bugs -> strict xfail),
    ``requires`` marker (profile features)."""
    out = []
    for item in all_checks():
        if item.group not in groups:
            continue
        marks: list[Any] = [pytest.mark.check(item.id)]
        if item.requires:
            marks.append(pytest.mark.requires(*item.requires))
        out.append(pytest.param(item.id, marks=marks, id=item.id))
    return out


def run(check_id: str, ctx: ApiContext) -> None:
    """Run one check in a test: a failed expectation fails the test with its one-line message (no traceback),
    a non-applicable check skips it, a transport error fails with what went wrong."""
    import httpx

    item = get(check_id)
    missing = sorted(set(item.requires) - ctx.behaviour.features)
    if missing:
        pytest.skip(f"engine {ctx.target.engine} does not support feature(s): {', '.join(missing)}")
    outcome: str | None = None
    ctx.api.recent.clear()
    try:
        for attempt in range(item.greedy_retries + 1):
            try:
                item.func(ctx)
                break
            except CheckFailed:
                if attempt == item.greedy_retries:
                    raise
                ctx.memo_store.clear()  # fresh temperature-0 runs for the next attempt
    except CheckSkipped as exc:
        pytest.skip(str(exc))
    except CheckFailed as exc:
        again = f" (in all {item.greedy_retries + 1} attempts)" if item.greedy_retries else ""
        outcome = f"{check_id}: {exc}{again}"
    except httpx.HTTPError as exc:
        sent = "; ".join(ctx.api.recent)
        outcome = (
            f"{check_id}: HTTP request failed ({type(exc).__name__}: {exc or 'no detail'}); is the server "
            f"still up?{f' The last requests of the check: {sent}' if sent else ''}"
        )
    _judge_known_failure_of_this_version(check_id, ctx, outcome)
    if outcome is not None:
        pytest.fail(outcome, pytrace=False)


def _judge_known_failure_of_this_version(check_id: str, ctx: ApiContext, outcome: str | None) -> None:
    """A bug of some engine versions only (known once the server answered its version): the failure it
    describes is an xfail; a pass means the bug is gone (fails, as a strict xfail would); another failure fails."""
    known = ctx.behaviour.known_failure(check_id, ctx.target.version)
    if known is None or not known.versions:
        return
    engine = f"{ctx.target.engine} {ctx.target.version}"
    cite = f"{known.reason} ({known.url}; {engine} is {known.versions})"
    if outcome is None:
        pytest.fail(
            f"{check_id} passed, but the engine profile declares a known bug of {engine}: {cite}. The bug is "
            "gone: remove it from the profile",
            pytrace=False,
        )
    if known.match and known.match not in outcome:
        pytest.fail(f"{outcome} (not the known bug of {known.versions}, which shows as {known.match!r})",
                    pytrace=False)
    pytest.xfail(cite)


# -- the generated documentation -----------------------------------------------------------------------------
def _deviating_engines(item: Check) -> str:
    notes = []
    for name, adapter in sorted(all_adapters().items()):
        profile = adapter.behaviour
        known = profile.known_failure(item.id)
        missing = sorted(set(item.requires) - profile.features)
        for limited in profile.known_failures:
            if limited.check_id == item.id and limited.versions:
                notes.append(f"{name} {limited.versions}: known bug, strict xfail ([link]({limited.url}))")
        if known:
            kind = "kills the server, not run" if known.kills_server else "strict xfail"
            notes.append(f"{name}: known bug, {kind} ([link]({known.url}))")
        elif missing:
            flags = [" ".join(f) for feature, f in profile.launch_features if feature in missing]
            if flags and len(flags) == len(missing):
                notes.append(f"{name}: skipped unless launched with {', '.join(flags)}")
            else:
                notes.append(f"{name}: skipped (no {', '.join(missing)})")
        if name in item.deviations:
            notes.append(f"{name}: {item.deviations[name]}")
    return "; ".join(notes) or "none known"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """The checks table for docs/conformance.md."""
    checks = all_checks()
    must = sum(1 for c in checks if c.severity == "MUST")
    lines = [
        "# API conformance checks",
        "",
        "<!-- generated by `python -m pytest_dsbench.conformance.catalog > docs/conformance.md`; "
        "do not edit -->",
        "",
        f"{len(checks)} checks ({must} MUST), marker `api`. Run them with",
        "`pytest -m api --engine vllm --hw cpu` (or `--base-url URL` to attach).",
        "Ids and groups follow the research checklist (`api_conformance.md`); `HW` checks come from the",
        "hardware profile's limits (seed 004). Each check fails with `what: expected X, got Y`; a check that",
        "does not apply to the engine (declared profile) or deployment is skipped with the reason.",
        "Engines known to deviate: a known upstream bug becomes `xfail(strict=True)` with its link",
        "(declared in the engine profile, `pytest_dsbench/engines/<engine>.py`); a legitimate divergence is",
        "asserted as the",
        "profile declares it, and a server that contradicts its profile fails with both named.",
        "Every check is proven to fail against the fake engine with the listed fault(s)",
        "(`tests/selftests/test_conformance_checks.py`).",
        "",
    ]
    for group, (title, _) in GROUPS.items():
        members = [c for c in checks if c.group == group]
        if not members:
            continue
        lines += [
            f"## {group}. {title}",
            "",
            "| check id | severity | what it asserts | engines known to deviate | source | fake faults |",
            "|---|---|---|---|---|---|",
        ]
        for item in members:
            lines.append(
                f"| `{item.id}` | {item.severity} | {_cell(item.title)} | "
                f"{_cell(_deviating_engines(item))} | "
                f"{_cell(item.source)} | {', '.join(f'`{f}`' for f in item.faults)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    """Print the docs table (under ``python -m`` this module is ``__main__``: use the imported catalogue)."""
    from pytest_dsbench.conformance import catalog

    sys.stdout.write(catalog.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

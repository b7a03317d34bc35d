"""False-positive rate of the regression gate: reruns of an unchanged fake engine must not trip it.

Slow (about 21 pytest runs): ``pytest tests/selftests/test_gate_false_positives.py -m slow -s`` prints the
measured rate. Each rerun is compared with the run before it (``--dsbench-compare latest``) under the cpu
profile's limits (``tpot_ms_mean`` and ``output_tok_s``: 25%) and, in the second test, under a tight 5%.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from test_gate_regression import MEASURE

from pytest_dsbench.testing.fake_engine import FakeEngineThread

RERUNS = int(os.environ.get("DSBENCH_FP_RERUNS", "20"))
#: A decode speed of a real deployment (20 ms TPOT, 50 tok/s per user); DSBENCH_FP_ITL_MS overrides it.
ITL_MS = float(os.environ.get("DSBENCH_FP_ITL_MS", "20"))
UNCHANGED = {"ttft_ms": ITL_MS, "itl_ms": ITL_MS}


def _trips(pytester: pytest.Pytester, engine: FakeEngineThread, *extra: str) -> list[int]:
    """Exit codes of RERUNS compared reruns (after one baseline run)."""
    pytester.makepyfile(test_measure=MEASURE)
    base = ("--base-url", engine.base_url, "--dsbench-storage", "history", "-p", "no:cacheprovider")
    pytester.runpytest(*base).assert_outcomes(passed=1)
    codes = []
    for _ in range(RERUNS):
        result = pytester.runpytest(*base, "--dsbench-compare", "latest", *extra)
        codes.append(int(result.ret))
        if result.ret != 0:
            print("\n".join(line for line in result.outlines if "regressed against" in line))
    return codes


@pytest.mark.slow
def test_unchanged_reruns_do_not_trip_the_gate_at_the_profile_limits(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    codes = _trips(pytester, make_fake_engine(**UNCHANGED))
    trips = sum(1 for c in codes if c != 0)
    print(f"\nfalse positives at the cpu profile limits (25%, 99% confidence): {trips}/{len(codes)} reruns")
    assert trips == 0, f"{trips} of {len(codes)} unchanged reruns failed the gate: exit codes {codes}"


@pytest.mark.slow
def test_unchanged_reruns_at_a_tight_limit_stay_rare(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    codes = _trips(
        pytester,
        make_fake_engine(**UNCHANGED),
        "--dsbench-regress",
        "tpot_ms_mean:5",
        "--dsbench-regress",
        "output_tok_s:5",
    )
    trips = sum(1 for c in codes if c != 0)
    print(f"\nfalse positives at 5% limits (99% confidence): {trips}/{len(codes)} reruns")
    assert trips / len(codes) <= 0.1, f"{trips} of {len(codes)} unchanged reruns failed the gate: {codes}"

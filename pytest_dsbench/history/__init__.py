"""Result history and the regression gate.

Every run that records SLO, throughput or accuracy results is stored, with its raw per-request samples and
its provenance, in pytest-benchmark's file format under ``--dsbench-storage`` (default ``.benchmarks``), one
folder per engine and hardware profile (:mod:`.storage`, :mod:`.document`, :mod:`.provenance`).
``--dsbench-storage none`` turns storing off.

Regression gate (inside each test, so the exit code and JUnit see it)::

    pytest --engine vllm --hw va16 --dsbench-compare latest --dsbench-regress tpot_ms_mean:5

``--dsbench-compare`` takes ``latest``, ``latest~N``, a run number, a run id prefix, ``<engine>-<hw>/RUN`` or
a run file. For every result recorded with ``dsbench_gate.record`` the gate looks up the same test, metric and
workload in that run and fails the test when the result is worse (by the metric's direction: TPOT and TTFT up,
throughput and accuracy down) by more than the limit *and* every applicable one-sided statistical test says
so at 99% confidence: on the per-request samples of both runs (Mann-Whitney U, normal approximation with tie
and continuity correction, for means, medians, throughput and accuracy; a bootstrap interval for p75 and
above, max and std; needs 8 samples per run), and, once 5 earlier comparable runs are stored, a t prediction
test against their run-to-run spread (it catches whole-run drift that per-request samples cannot, and judges
results recorded without samples). The limits come from ``--dsbench-regress METRIC:PCT`` (patterns like
``tpot_ms_*:10`` allowed), else from the hardware profile's ``[regress_pct]``; a metric without a limit is
compared and shown, never failed. Runs of another engine or hardware profile are refused before any test runs
(usage error), another model or workload inside the test, unless ``--dsbench-force-compare``.

Why both conditions: the tests alone would flag tiny, real but irrelevant shifts on thousands of samples; the
percentage alone would flag noise on a handful. With independent samples the false-positive rate is at most
1 - confidence (1%); whole runs that drift together break that assumption, which is what the run-to-run test,
and a limit above the machine's run-to-run noise, are for.

The command line ``pytest-dsbench`` (:mod:`pytest_dsbench.cli`) lists, compares (``--fail`` for CI), exports
and plots the history; the end-of-run table and the JSON/HTML reports are in :mod:`pytest_dsbench.report`.
"""

from __future__ import annotations

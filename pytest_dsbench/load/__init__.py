"""The load generator: data sets, arrivals, a lean streaming client, workers, the self-check, the sglang bridge.

Entry points: :func:`pytest_dsbench.load.runner.run_load` (a workload against a server, returns a
:class:`~pytest_dsbench.load.runner.LoadRun`) and, inside the pytest suite,
:func:`pytest_dsbench.load.api.run_workload`. Metric formulas live in :mod:`pytest_dsbench.metrics`.
"""

from __future__ import annotations

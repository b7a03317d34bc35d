"""What the suite's launcher adds to an engine's environment to install the EPLB routing patch.

The patch lives in the engine processes, so it is configured through the environment (``DSBENCH_EPLB_*``, see
:mod:`pytest_dsbench.eplb.runtime`) plus each engine's own switch, which its EPLB hook declares
(``pytest_dsbench/engines/<name>/eplb.py: launch_env``):

* vLLM: the ``vllm.general_plugins`` entry point ``dsbench_eplb`` (loaded in every vLLM process) and
  ``VLLM_MOE_ROUTING_SIMULATION_STRATEGY=dsbench_eplb_<mode>``; ``VLLM_PLUGINS``, if set, is extended.
* SGLang: the ``sglang.srt.plugins`` entry point ``dsbench_eplb``; ``SGLANG_PLUGINS``, if set, is extended.
* LMDeploy: no plugin mechanism; a ``sitecustomize`` shim directory is prepended to ``PYTHONPATH``.

In every case ``pytest-dsbench`` must be installed in the engine's Python environment (``pip install --no-deps
pytest-dsbench`` is enough: the engine side only needs torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pytest_dsbench.engines.adapters import get_adapter
from pytest_dsbench.engines.registry import ENGINE_NAMES
from pytest_dsbench.eplb.counts import clear_counts
from pytest_dsbench.eplb.runtime import ENV_COUNTS, ENV_MODE, ENV_PLACEMENT, ENV_RANKS, RUNTIME_MODES

PLUGIN_NAME = "dsbench_eplb"
"""The entry-point name of the vLLM and SGLang plugins (pyproject.toml)."""


def extend_list_var(env: Mapping[str, str], name: str, item: str) -> dict[str, str]:
    """Append ``item`` to a comma-separated allowlist variable only if the user set one."""
    current = env.get(name)
    if current is None or item in [p.strip() for p in current.split(",")]:
        return {}
    return {name: f"{current},{item}" if current.strip() else item}


def eplb_launch_settings(
    engine: str,
    mode: str,
    simulated_ranks: int | None,
    counts_path: Path,
    *,
    placement: str | None = None,
    base_env: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Env vars and extra CLI args that install the ``mode`` routing patch in ``engine``.

    ``mode``: ``off`` (nothing), ``observe`` (count the model's own routing: the negative control),
    ``reference`` or ``balanced``. ``simulated_ranks``: EP ranks to balance over when the engine runs fewer
    (the embedded single-process vLLM); None = the engine's EP size. Stale counter shards at ``counts_path``
    are removed so the run starts from zero. ``base_env`` (default ``os.environ``) is what the engine would
    otherwise inherit; it is only read to extend plugin allowlists.
    """
    if engine not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINE_NAMES)}")
    if mode not in RUNTIME_MODES:
        raise ValueError(f"unknown EPLB mode {mode!r}; expected one of {', '.join(RUNTIME_MODES)}")
    if mode == "off":
        return {}, []
    if simulated_ranks is not None and simulated_ranks < 1:
        raise ValueError(f"simulated_ranks must be >= 1, got {simulated_ranks}")
    base = os.environ if base_env is None else base_env
    counts_path = Path(counts_path).resolve()
    counts_path.parent.mkdir(parents=True, exist_ok=True)
    clear_counts(counts_path)
    env = {ENV_MODE: mode, ENV_COUNTS: str(counts_path)}
    if simulated_ranks is not None:
        env[ENV_RANKS] = str(simulated_ranks)
    if placement is not None:
        env[ENV_PLACEMENT] = placement
    env.update(get_adapter(engine).eplb_env(mode, base))
    return env, []

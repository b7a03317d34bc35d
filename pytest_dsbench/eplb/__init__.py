"""EPLB patch equivalence: the seed's reference routing transform, a better balanced one, what engines share.

* :mod:`.transforms` — pure-torch ``reference_topk_ids`` / ``balanced_topk_ids``, placements, load statistics.
* :mod:`.runtime` — engine-side config (``DSBENCH_EPLB_*`` env vars), recorder, opaque torch ops.
* each engine's hook (vLLM general plugin, SGLang plugin, LMDeploy patch) — ``pytest_dsbench/engines/<name>/eplb.py``.
* :mod:`.counts` — the routing-counter file, its reader and the balance checks.
* :mod:`.launch` — env vars / args the launcher adds for ``--eplb`` (each engine's switch from its hook).

Heavy imports (torch, engines) happen inside functions, so importing this package is cheap.
"""

from __future__ import annotations

from pytest_dsbench.eplb.transforms import (
    LoadStats,
    Placement,
    balanced_topk_ids,
    expected_rank_counts,
    load_stats,
    make_placement,
    owner_ranks,
    rank_counts,
    reference_topk_ids,
    transform_topk_ids,
)

ACTIVE_PATCH_MODES = ("reference", "balanced")


def accuracy_skip_reason(mode: str | None) -> str | None:
    """Why accuracy tests must not run against an engine whose routing is patched (None when they may)."""
    if mode in ACTIVE_PATCH_MODES:
        return (f"EPLB routing patch '{mode}' is active: expert routing is replaced by a load-balancing "
                "transform, so model outputs are meaningless (rerun with --eplb off for accuracy)")
    return None


__all__ = [
    "ACTIVE_PATCH_MODES",
    "LoadStats",
    "Placement",
    "accuracy_skip_reason",
    "balanced_topk_ids",
    "expected_rank_counts",
    "load_stats",
    "make_placement",
    "owner_ranks",
    "rank_counts",
    "reference_topk_ids",
    "transform_topk_ids",
]

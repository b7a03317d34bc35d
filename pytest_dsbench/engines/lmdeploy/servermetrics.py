"""LMDeploy's /metrics under the suite's server-metric names.

Read from LMDeploy's source (``lmdeploy/metrics/loggers.py``, ``PrometheusStatLogger``): scheduler gauges, the
KV-cache usage and token counters. It exposes no prefix-cache counters and its ``record_specdecode`` writes
nothing, so prefix-cache hits and speculative-decoding acceptance cannot be read from LMDeploy (the run says so
in a note); it has no cache-reset endpoint either, so cold runs salt their prompts.
"""

from __future__ import annotations

from pytest_dsbench.engines.base import ServerMetric

SERVER_METRICS = {
    "requests_running": ServerMetric(("lmdeploy:num_requests_running",), "gauge"),
    "requests_waiting": ServerMetric(("lmdeploy:num_requests_waiting",), "gauge"),
    "kv_cache_usage": ServerMetric(("lmdeploy:gpu_cache_usage_perc",), "gauge", "max"),
    "prompt_tokens": ServerMetric(("lmdeploy:prompt_tokens_total",), "counter"),
    "generation_tokens": ServerMetric(("lmdeploy:generation_tokens_total",), "counter"),
}

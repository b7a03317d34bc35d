"""SGLang's /metrics (served with ``--enable-metrics``) under the suite's server-metric names.

Read from SGLang's source (``python/sglang/srt/metrics/collector.py``: ``SchedulerMetricsCollector`` and
``TokenizerMetricsCollector``). Its prefix-cache hit count is ``cached_tokens_total`` against
``prompt_tokens_total`` (both per request's prompt), its scheduler also sets a ``cache_hit_rate`` gauge; its
speculative decoding reports gauges of the acceptance length and rate (no counters), and a preempted request is
"retracted".
"""

from __future__ import annotations

from pytest_dsbench.engines.base import ServerMetric

SERVER_METRICS = {
    "requests_running": ServerMetric(("sglang:num_running_reqs",), "gauge"),
    "requests_waiting": ServerMetric(("sglang:num_queue_reqs",), "gauge"),
    "kv_cache_usage": ServerMetric(("sglang:token_usage",), "gauge", "max"),
    "preemptions": ServerMetric(("sglang:num_retracted_requests_total",), "counter"),
    "prefix_cache_queries": ServerMetric(("sglang:prompt_tokens_total",), "counter"),
    "prefix_cache_hits": ServerMetric(("sglang:cached_tokens_total",), "counter"),
    "prefix_cache_hit_rate": ServerMetric(("sglang:cache_hit_rate",), "gauge", "mean"),
    "spec_acceptance_length": ServerMetric(("sglang:spec_accept_length",), "gauge", "mean"),
    "spec_acceptance_rate": ServerMetric(("sglang:spec_accept_rate",), "gauge", "mean"),
    "prompt_tokens": ServerMetric(("sglang:prompt_tokens_total",), "counter"),
    "generation_tokens": ServerMetric(("sglang:generation_tokens_total",), "counter"),
}

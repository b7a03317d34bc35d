"""vLLM's /metrics under the suite's server-metric names.

Read from vLLM 0.32's source (``vllm/v1/metrics/loggers.py``, ``vllm/v1/spec_decode/metrics.py``) and its served
page (a real CPU-build page with MTP: tests/selftests/data/vllm-0.32-cpu-mtp.metrics.txt). prometheus_client
writes a counter ``vllm:x`` as the sample ``vllm:x_total``; every sample carries ``engine`` and ``model_name``
labels (one label set per DP engine). Older names follow the current ones (``gpu_cache_usage_perc`` and
``gpu_prefix_cache_*`` before 0.9).
"""

from __future__ import annotations

from pytest_dsbench.engines.base import ServerMetric

SERVER_METRICS = {
    "requests_running": ServerMetric(("vllm:num_requests_running",), "gauge"),
    "requests_waiting": ServerMetric(("vllm:num_requests_waiting",), "gauge"),
    "kv_cache_usage": ServerMetric(("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"), "gauge", "max"),
    "preemptions": ServerMetric(("vllm:num_preemptions_total",), "counter"),
    "prefix_cache_queries": ServerMetric(
        ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"), "counter"),
    "prefix_cache_hits": ServerMetric(("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"), "counter"),
    "spec_drafts": ServerMetric(("vllm:spec_decode_num_drafts_total",), "counter"),
    "spec_draft_tokens": ServerMetric(("vllm:spec_decode_num_draft_tokens_total",), "counter"),
    "spec_accepted_tokens": ServerMetric(("vllm:spec_decode_num_accepted_tokens_total",), "counter"),
    "prompt_tokens": ServerMetric(("vllm:prompt_tokens_total",), "counter"),
    "generation_tokens": ServerMetric(("vllm:generation_tokens_total",), "counter"),
}

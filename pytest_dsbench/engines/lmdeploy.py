"""LMDeploy: ``lmdeploy serve api_server`` (seeds 000 and 001), run as ``python -m lmdeploy``."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter, EngineBehaviour, KnownFailure, LaunchRequest

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning_content",
    reasoning_usage_path="completion_tokens_details.reasoning_tokens",
    reasoning_count_includes_end_tag=False,
    error_envelope="flat",
    validates_model=True,
    validates_prompt_plus_max_tokens=False,
    multi_token_stop=False,
    logprobs_enabled=False,
    stream_options_without_stream_rejected=False,
    role_on_every_delta=True,
    tokenize_api="lmdeploy_encode",
    metrics_prefix="lmdeploy:",
    tool_parser=None,
    min_tokens_param="min_new_tokens",
    routed_experts=True,
    decode_log_format="lmdeploy",
    known_failures=(
        KnownFailure(
            "F02.stop_multi_token",
            "LMDeploy only honours single-token stop words; multi-token ones are logged and ignored",
            "https://github.com/InternLM/lmdeploy/issues/1631",
        ),
    ),
    features=frozenset({"ignore_eos", "metrics", "min_tokens", "n", "reasoning", "tokenize", "top_k"}),
)


class LmdeployAdapter(EngineAdapter):
    """Launches LMDeploy's api_server with the hardware profile's parallelism and limits."""

    name = "lmdeploy"
    display_name = "LMDeploy"
    behaviour = BEHAVIOUR
    extra = "lmdeploy"
    health_path = "/health"

    def version_probe(self) -> list[str]:
        return ["-c", "import lmdeploy; print(lmdeploy.__version__)"]

    def launch_command(self, request: LaunchRequest) -> list[str]:
        dep = request.hw.deployment
        cmd = [
            request.python, "-m", "lmdeploy", "serve", "api_server", request.model,
            "--model-name", request.served_model_name,
            "--server-name", request.host,
            "--server-port", str(request.port),
            "--session-len", str(dep.max_model_len),
            "--reasoning-parser", "default",
        ]
        # no metrics flag: 0.18.0 serves /metrics and logs its stats every 10 s unless --disable-metrics, and has
        # no --enable-metrics (argparse exits: "unrecognized arguments"); for a release that still needs it, pass
        # --engine-arg=--enable-metrics
        if dep.tensor_parallel > 1:
            cmd += ["--tp", str(dep.tensor_parallel)]
        if dep.data_parallel > 1:
            cmd += ["--dp", str(dep.data_parallel)]
        if dep.expert_parallel > 1:
            cmd += ["--ep", str(dep.expert_parallel)]
        if dep.max_batch_size:
            cmd += ["--max-batch-size", str(dep.max_batch_size)]
        if dep.cache_ratio:
            cmd += ["--cache-max-entry-count", str(dep.cache_ratio)]
        if dep.mtp:
            cmd += ["--speculative-algorithm", "deepseek_mtp", "--speculative-num-draft-tokens", "1"]
        return cmd + list(request.hw.launch(self.name).args) + list(dep.engine_args) + list(request.extra_args)

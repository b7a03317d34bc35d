"""SGLang: ``python -m sglang.launch_server`` (seed 003's deployment)."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter, EngineBehaviour, LaunchRequest

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning_content",
    reasoning_usage_path="reasoning_tokens",
    reasoning_count_includes_end_tag=True,
    error_envelope="flat",
    validates_model=False,
    validates_prompt_plus_max_tokens=True,
    multi_token_stop=True,
    logprobs_enabled=True,
    stream_options_without_stream_rejected=False,
    role_on_every_delta=False,
    tokenize_api="sglang",
    metrics_prefix="sglang:",
    tool_parser="deepseekv3",
    # the OpenAI-compatible requests take ``min_tokens`` (0.5.17 entrypoints/openai/protocol.py:
    # CompletionRequest.min_tokens, ChatCompletionRequest.min_tokens, mapped to the sampler's min_new_tokens);
    # ``min_new_tokens`` is the native /generate name, which the OpenAI routes drop silently (pydantic's
    # default extra="ignore"). Was "min_new_tokens", a guess that the fakes (which accept both) never caught.
    min_tokens_param="min_tokens",
    routed_experts=True,
    decode_log_format="sglang",
    features=frozenset({"ignore_eos", "logit_bias", "logprobs", "metrics", "min_tokens", "models_retrieve", "n",
                        "reasoning", "seed", "structured_output", "tokenize", "tools", "top_k"}),
)


class SglangAdapter(EngineAdapter):
    """Launches SGLang with the hardware profile's parallelism and limits."""

    name = "sglang"
    display_name = "SGLang"
    behaviour = BEHAVIOUR
    extra = "sglang"
    health_path = "/health"

    def version_probe(self) -> list[str]:
        return ["-c", "import sglang; print(sglang.__version__)"]

    def launch_command(self, request: LaunchRequest) -> list[str]:
        dep = request.hw.deployment
        cmd = [
            request.python, "-m", "sglang.launch_server",
            "--model-path", request.model,
            "--served-model-name", request.served_model_name,
            "--host", request.host,
            "--port", str(request.port),
            "--context-length", str(dep.max_model_len),
            "--reasoning-parser", "deepseek-r1",
            "--enable-metrics",
            "--enable-cache-report",
        ]
        # the flags' full names (0.4.x through 0.5.17: --tp-size/--dp-size with the --tensor-/--data-parallel-size
        # aliases); "--tp"/"--dp" only worked as argparse abbreviations, which a new "--tp-*" flag breaks
        if dep.tensor_parallel > 1:
            cmd += ["--tp-size", str(dep.tensor_parallel)]
        if dep.pipeline_parallel > 1:
            cmd += ["--pp-size", str(dep.pipeline_parallel)]
        if dep.data_parallel > 1:
            cmd += ["--dp-size", str(dep.data_parallel), "--enable-dp-attention"]
        if dep.expert_parallel > 1:
            cmd += ["--ep-size", str(dep.expert_parallel)]
        if dep.max_batch_size:
            cmd += ["--max-running-requests", str(dep.max_batch_size)]
        if dep.cache_ratio:
            cmd += ["--mem-fraction-static", str(dep.cache_ratio)]
        if dep.mtp:
            cmd += ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", "1",
                    "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "2"]
        return cmd + list(request.hw.launch(self.name).args) + list(dep.engine_args) + list(request.extra_args)

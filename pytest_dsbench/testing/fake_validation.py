"""Request validation of the fake engine, as vLLM validates: what is a 400, a 404, or (with faults) not.

Mixed into :class:`~pytest_dsbench.testing.fake_engine.FakeEngine`; each fault named here is registered in
:mod:`fake_faults`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pytest_dsbench.testing import fake_tokens as tok


def _crash(token_ids: list[Any]) -> None:
    """Die as SGLang 0.5.17 did on an out-of-vocabulary token id: a device assert, no reply, the port closed."""
    print(f"RuntimeError: CUDA error: device-side assert triggered (fake engine, prompt token ids {token_ids})",
          file=sys.stderr, flush=True)
    os._exit(1)


_SAMPLING_RANGES = {
    "temperature": (0.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "repetition_penalty": (1e-9, 100.0),
}
_KNOWN_FIELDS = {
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "echo",
    "ignore_eos",
    "min_tokens",
    "min_new_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "logit_bias",
    "chat_template_kwargs",
    "include_reasoning",
    "skip_special_tokens",
    "stop_token_ids",
    "suffix",
    "best_of",
}
MAX_LOGPROBS = 20


class _Invalid(Exception):
    """A request the fake rejects: status, message, error type and parameter."""

    def __init__(
        self, status: int, message: str, param: str | None = None, err_type: str = "BadRequestError"
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.err_type = status, message, param, err_type


class RequestValidation:
    """Validation methods of the fake engine (needs ``config``, ``max_model_len`` and ``render``)."""

    config: Any

    @property
    def max_model_len(self) -> int:
        raise NotImplementedError

    def render(self, messages: list[dict[str, Any]]) -> str:
        raise NotImplementedError

    def _validate_params(self, body: dict[str, Any], chat: bool) -> None:
        has = self.config.has
        model = body.get("model")
        if model not in (None, "", self.config.model) and not has("accept_unknown_model"):
            status = 400 if has("unknown_model_400") else 404
            raise _Invalid(status, f"The model `{model}` does not exist.", "model", "NotFoundError")
        if has("reject_unknown_fields"):
            extra = sorted(set(body) - _KNOWN_FIELDS)
            if extra:
                raise _Invalid(400, f"unknown field(s) {extra}", extra[0])
        for name in ("max_tokens", "max_completion_tokens"):
            if name in body and body[name] is not None:
                value = body[name]
                if (
                    not isinstance(value, int)
                    or isinstance(value, bool)
                    or (value < 1 and not has("accept_max_tokens_zero"))
                ):
                    raise _Invalid(400, f"{name} must be at least 1, got {value}.", name)
        if not has("accept_invalid_sampling"):
            for name, (low, high) in _SAMPLING_RANGES.items():
                if name in body:
                    value = body[name]
                    if (
                        not isinstance(value, int | float)
                        or isinstance(value, bool)
                        or not low <= value <= high
                    ):
                        raise _Invalid(400, f"{name} must be in [{low}, {high}], got {value!r}.", name)
            top_p = body.get("top_p", 1.0)
            if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
                raise _Invalid(400, f"top_p must be in (0, 1], got {top_p!r}.", "top_p")
            top_k = body.get("top_k", -1)
            if not isinstance(top_k, int) or top_k < -1:
                raise _Invalid(400, f"top_k must be -1 (disable), or at least 1, got {top_k!r}.", "top_k")
            n = body.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise _Invalid(400, f"n must be at least 1, got {n!r}.", "n")
        seed = body.get("seed")
        if (
            seed is not None
            and not has("accept_huge_seed")
            and (not isinstance(seed, int) or not -(2**63) <= seed < 2**63)
        ):
            raise _Invalid(400, f"seed must be a 64-bit integer, got {seed!r}.", "seed")
        self._validate_logprobs(body, chat)
        self._validate_format(body)
        if (
            "stream_options" in body
            and not body.get("stream")
            and not (has("accept_stream_options") or has("stream_options_starts_stream"))
        ):
            raise _Invalid(400, "Stream options can only be defined when `stream=True`.", "stream_options")
        if chat and has("tool_result_rejected") and any(m.get("role") == "tool" for m in body["messages"]):
            raise _Invalid(400, "tool messages are not supported", "messages")
        if chat and has("tools_500") and body.get("tools"):
            raise _Invalid(500, "'NoneType' object has no attribute 'extract_tool_calls'", None, "InternalServerError")

    def _validate_logprobs(self, body: dict[str, Any], chat: bool) -> None:
        limit = 10**9 if self.config.has("accept_too_many_logprobs") else MAX_LOGPROBS
        if chat:
            top = body.get("top_logprobs")
            if top is not None and (not isinstance(top, int) or not 0 <= top <= limit):
                raise _Invalid(
                    400, f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {top!r}.", "top_logprobs"
                )
            if top and not body.get("logprobs"):
                raise _Invalid(
                    400, "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
                )
        else:
            lp = body.get("logprobs")
            if lp is not None and (not isinstance(lp, int) or isinstance(lp, bool) or not 0 <= lp <= limit):
                raise _Invalid(400, f"logprobs must be in [0, {MAX_LOGPROBS}], got {lp!r}.", "logprobs")

    def _validate_format(self, body: dict[str, Any]) -> None:
        fmt = body.get("response_format")
        if fmt is None:
            return
        status = 500 if self.config.has("bad_schema_500") else 400
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise _Invalid(400, f"unsupported response_format {fmt!r}", "response_format")
        if fmt["type"] == "text" and self.config.has("reject_response_format_text"):
            raise _Invalid(400, "response_format text is not supported", "response_format")
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise _Invalid(
                    status,
                    "response_format json_schema needs a 'json_schema.schema' object",
                    "response_format",
                )
            if not isinstance(schema.get("type", "object"), str):
                invalid_status = 500 if self.config.has("invalid_schema_500") else status
                raise _Invalid(invalid_status, f"invalid JSON schema: type {schema['type']!r}", "response_format")

    def _prompts(self, body: dict[str, Any], chat: bool) -> list[tuple[str, str, int]]:
        """(prompt text, question, prompt tokens) per prompt; chat has one."""
        has = self.config.has
        if chat:
            messages = body.get("messages")
            if (
                not isinstance(messages, list)
                or not messages
                or not all(isinstance(m, dict) for m in messages)
            ):
                raise _Invalid(400, "messages must be a non-empty list of objects", "messages")
            for m in messages:
                if m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
                    raise _Invalid(400, f"unknown message role {m.get('role')!r}", "messages")
            text = self.render(messages)
            question = tok.message_text(
                next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            )
            parts = has("content_parts_miscounted") and any(
                isinstance(m.get("content"), list) for m in messages
            )
            return [(text, question, tok.count(text) + (1 if parts else 0))]
        prompt = body.get("prompt")
        items: list[Any]
        token_prompt = isinstance(prompt, list) and bool(prompt) and all(isinstance(p, int) for p in prompt)
        if isinstance(prompt, str) or token_prompt:
            items = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
            items = list(prompt)
        else:
            raise _Invalid(400, "prompt must be a string, a list of strings or a list of token ids", "prompt")
        out = []
        bos = tok.BOS * (2 if has("completion_double_bos") else 1)
        for item in items:
            if isinstance(item, list):
                if has("token_prompt_rejected"):
                    raise _Invalid(400, "token id prompts are not supported", "prompt")
                if not item or not all(isinstance(i, int) and tok.valid_id(i) for i in item):
                    if has("crash_on_bad_token_ids"):
                        _crash(item)
                    status = 500 if has("bad_token_ids_500") else 400
                    raise _Invalid(
                        status, f"prompt token ids out of vocabulary (size {tok.VOCAB_SIZE})", "prompt"
                    )
                text = tok.decode(item)
                out.append((text, text, len(item)))
            else:
                out.append((item, item, tok.count(bos + item)))
        return out

    def _check_length(self, prompt_tokens: int, max_tokens: int | None) -> int | None:
        """Reject over-long prompts; return the output budget left (``None``: no limit beyond max_tokens).

        prompt + max_tokens over the context is clamped to the window (vLLM >= 0.2x, LMDeploy) or, with
        ``clamp_max_tokens=False``, rejected with 400 (OpenAI, SGLang).
        """
        has = self.config.has
        limit = self.max_model_len
        too_long = prompt_tokens > limit if has("context_off_by_one") else prompt_tokens >= limit
        if prompt_tokens >= limit and (has("accept_overlong_prompt") or not too_long):
            return None  # a fault lets this prompt through every length check
        if too_long:
            raise _Invalid(
                400,
                f"This model's maximum context length is {limit} tokens. However, your request "
                f"has {prompt_tokens} input tokens.",
                "input_tokens",
            )
        kept_back = self.config.reserved_context_tokens
        if kept_back and prompt_tokens > limit - 1 - kept_back:  # SGLang's wording (managers/utils.py)
            raise _Invalid(
                400,
                f"Input length ({prompt_tokens} tokens) exceeds the maximum allowed length "
                f"({limit - kept_back} tokens).",
                "input_tokens",
            )
        max_input = self.config.max_input_len
        if max_input is not None and has("max_model_len_larger_than_profile"):
            max_input *= 2
        if max_input is not None and prompt_tokens > max_input and not has("accept_over_max_input_len"):
            raise _Invalid(
                400, f"input length {prompt_tokens} exceeds max-input-len {max_input}.", "input_tokens"
            )
        if max_tokens is None or prompt_tokens + max_tokens <= limit or has("no_length_check"):
            return None
        if self.config.clamp_max_tokens:
            return limit - prompt_tokens
        raise _Invalid(
            400,
            f"You passed {prompt_tokens} input tokens and requested {max_tokens} output "
            f"tokens. However, the model's context length is only {limit} tokens.",
            "input_tokens",
        )

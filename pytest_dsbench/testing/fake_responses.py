"""Response bodies of the fake engine: ids, usage, the R1 reasoning split, chat messages, completions logprobs.

Mixed into :class:`~pytest_dsbench.testing.fake_engine.FakeEngine`; each fault named here is registered in
:mod:`fake_faults`.
"""

from __future__ import annotations

import random
import time
from typing import Any

from pytest_dsbench.testing import fake_tokens as tok
from pytest_dsbench.testing.fake_model import FakeModel, Output


def token_prompt(body: dict[str, Any]) -> bool:
    """True when a completions prompt is given as token ids (one list of ints, or a list of such lists)."""
    prompt = body.get("prompt")
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int | list)


class ResponseBuilding:
    """Response-building methods of the fake engine (needs ``config`` and ``model``)."""

    config: Any
    model: FakeModel

    def response_id(self, prefix: str) -> str:
        return (
            f"{prefix}-fixed"
            if self.config.has("constant_response_id")
            else f"{prefix}-{random.getrandbits(48):x}"
        )

    def usage(self, outs: list[tuple[int, Output, str]], prompt_tokens: int, chat: bool) -> dict[str, Any]:
        completion = sum(o.completion_tokens for _, o, _ in outs)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion + (1 if self.config.has("usage_total_wrong") else 0),
        }
        if chat and not self.config.has("reasoning_tokens_missing"):
            reasoning = (
                0 if self.config.has("reasoning_tokens_zero") else sum(o.reasoning_tokens for _, o, _ in outs)
            )
            if self.config.reasoning_usage_path == "reasoning_tokens":
                usage["reasoning_tokens"] = reasoning
            else:
                usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    def reasoning_key(self) -> str:
        field_name = str(self.config.reasoning_field)
        if self.config.has("reasoning_field_renamed"):
            return "reasoning_content" if field_name == "reasoning" else "reasoning"
        return field_name

    def split_reasoning(self, out: Output, body: dict[str, Any]) -> tuple[str | None, str | None]:
        """(reasoning, content) of a chat output, as the engine's R1 reasoning parser would give them."""
        text = out.text
        if self.config.has("no_reasoning_split"):
            return None, text
        if tok.END_THINK not in text:
            reasoning = text.removeprefix(tok.THINK)
            return reasoning, reasoning if self.config.has("content_copies_reasoning_on_length") else None
        reasoning, _, content = text.partition(tok.END_THINK)
        if self.config.has("think_tag_in_content"):
            content = tok.END_THINK + content
        if body.get("stop") and self.config.has("stop_breaks_reasoning_split"):
            content = "/think>" + content
        if (
            self.config.has("json_in_reasoning")
            and body.get("response_format", {}).get("type", "text") != "text"
        ):
            return reasoning.removeprefix(tok.THINK) + content, None
        return reasoning.removeprefix(tok.THINK), content

    def tools_as_text(self, body: dict[str, Any]) -> bool:
        """The tool calls stay raw DeepSeek text in content (a fault), for this request."""
        forced = body.get("tool_choice") == "required" or isinstance(body.get("tool_choice"), dict)
        return self.config.has("tool_calls_in_content") or bool(
            body.get("stream") and forced and self.config.has("stream_forced_tool_in_content")
        )

    def chat_message(self, out: Output, body: dict[str, Any]) -> dict[str, Any]:
        reasoning, content = self.split_reasoning(out, body)
        message: dict[str, Any] = {"role": "assistant", "content": content, self.reasoning_key(): reasoning}
        if out.tool_calls and not self.tools_as_text(body):
            message["content"] = None
            message["tool_calls"] = out.tool_calls
        return message

    def finish_reason(self, out: Output, body: dict[str, Any]) -> str:
        if out.finish_reason == "tool_calls" and (
            self.config.has("tool_finish_reason_stop") or self.tools_as_text(body)
        ):
            return "stop"
        return out.finish_reason

    def completion_logprobs(self, body: dict[str, Any], out: Output, prompt: str) -> dict[str, Any]:
        """Completions logprobs; with ``echo`` the prompt's tokens come first, the very first one without a
        logprob (nothing precedes it), as vLLM's test_echo_logprob_completion expects."""
        top = int(body.get("logprobs") or 0)
        if not body.get("echo") or self.config.has("echo_logprobs_prompt_missing"):
            return self.model.completion_logprobs(out, top, len(prompt))
        prompt_pieces = ([] if token_prompt(body) else [tok.BOS]) + tok.tokenize(prompt)
        echoed = self.model.completion_logprobs(out, top, len(prompt))
        entries = [self.model.logprob_entry(p, i, top) for i, p in enumerate(prompt_pieces)]
        offsets, position = [], 0
        for piece in prompt_pieces:
            offsets.append(position)
            position += 0 if piece == tok.BOS else len(piece)
        return {
            "tokens": [e["token"] for e in entries] + echoed["tokens"],
            "token_logprobs": [None] + [e["logprob"] for e in entries[1:]] + echoed["token_logprobs"],
            "top_logprobs": [None]
            + [{c["token"]: c["logprob"] for c in e["top_logprobs"]} for e in entries[1:]]
            + echoed["top_logprobs"],
            "text_offset": offsets + echoed["text_offset"],
        }

    def full_response(
        self, body: dict[str, Any], outs: list[tuple[int, Output, str]], prompt_tokens: int, chat: bool
    ) -> dict[str, Any]:
        choices = []
        shift = 1 if self.config.has("choice_index_wrong") else 0
        want_logprobs = body.get("logprobs") or self.config.has("logprobs_always")
        for index, out, prompt in outs:
            choice: dict[str, Any] = {
                "index": index + shift,
                "finish_reason": self.finish_reason(out, body),
                "logprobs": None,
            }
            if chat:
                choice["message"] = self.chat_message(out, body)
                if want_logprobs:
                    top = int(body.get("top_logprobs") or 0)
                    choice["logprobs"] = {"content": self.model.chat_logprobs(out, top)}
            else:
                choice["text"] = (prompt if body.get("echo") else "") + out.text
                if body.get("logprobs") is not None or self.config.has("logprobs_always"):
                    choice["logprobs"] = self.completion_logprobs(body, out, prompt)
            if out.stop_hit is not None:
                choice["stop_reason"] = out.stop_hit
            choices.append(choice)
        reply: dict[str, Any] = {
            "id": self.response_id("chatcmpl" if chat else "cmpl"),
            "object": ("chat.completions" if self.config.has("chat_object_wrong") else "chat.completion")
            if chat
            else ("completion" if self.config.has("completion_object_wrong") else "text_completion"),
            "created": str(int(time.time())) if self.config.has("created_not_int") else int(time.time()),
            "model": self.config.model + ("-other" if self.config.has("wrong_response_model") else ""),
            "choices": choices,
        }
        if not self.config.has("missing_usage"):
            reply["usage"] = self.usage(outs, prompt_tokens, chat)
        return reply

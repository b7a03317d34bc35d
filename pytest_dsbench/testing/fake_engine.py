"""A fake OpenAI-compatible DeepSeek-R1 server (aiohttp) with switchable faults, for self-tests.

Compliant by default: it validates requests, returns OpenAI-shaped bodies, streams SSE correctly, splits
reasoning from content and counts usage exactly (one token per character, see :mod:`fake_tokens`). Each entry
of ``FakeConfig.faults`` breaks one behaviour, so each conformance check can be shown to fail.

Run it standalone (also as a stand-in for an engine's launch command, unknown arguments are ignored)::

    python -m pytest_dsbench.testing.fake_engine --port 8000 --fake-config '{"ttft_ms": 50}'
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from pytest_dsbench.testing import fake_tokens as tok


@dataclass
class FakeConfig:
    """Behaviour knobs of the fake engine."""

    model: str = "fake-r1"
    engine: str = "vllm"
    version: str = "0.0.0-fake"
    max_model_len: int = 4096
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    reasoning_field: str = "reasoning"
    error_envelope: str = "nested"
    reasoning: str = "Let me think step by step."
    answers: dict[str, str] = field(default_factory=dict)
    wrong_fraction: float = 0.0
    faults: list[str] = field(default_factory=list)
    startup_delay_s: float = 0.0
    die_after_requests: int | None = None
    api_key: str | None = None
    decode_log_interval_s: float = 0.0

    def has(self, fault: str) -> bool:
        return fault in self.faults


def _filler(seed_text: str, n_chars: int) -> str:
    words = ("alpha", "beta", "gamma", "delta", "sigma", "omega", "kappa", "theta")
    digest = hashlib.sha256(seed_text.encode()).digest()
    out: list[str] = []
    i = 0
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(words[digest[i % len(digest)] % len(words)])
        i += 1
    return " ".join(out)[:n_chars]


class FakeEngine:
    """The aiohttp application and its state."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.requests_served = 0
        self.running = 0
        self.started = time.monotonic()
        self.app = web.Application(middlewares=[self._auth])
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/v1/models", self.models)
        r.add_get("/version", self.version)
        r.add_get("/metrics", self.metrics)
        r.add_post("/tokenize", self.tokenize)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat)

    # -- plumbing ---------------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.config.api_key
        if key and request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def error(self, status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
        if self.config.has("error_500_instead_of_400") and status == 400:
            status = 500
        body: dict[str, Any]
        if self.config.error_envelope == "flat" or self.config.has("flat_error_body"):
            body = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
        else:
            body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
        return web.json_response(body, status=status)

    def _tick(self) -> None:
        self.requests_served += 1
        limit = self.config.die_after_requests
        if limit is not None and self.requests_served >= limit:
            asyncio.get_running_loop().call_later(0.05, os._exit, 3)

    # -- simple endpoints -------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        ready = time.monotonic() - self.started >= self.config.startup_delay_s
        if self.config.has("never_healthy") or not ready:
            return web.Response(status=503, text="loading")
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        if self.config.has("never_healthy"):
            return web.Response(status=503)
        entry = {"id": self.config.model, "object": "model", "created": 0, "owned_by": self.config.engine,
                 "root": self.config.model, "max_model_len": self.config.max_model_len}
        return web.json_response({"object": "list", "data": [entry]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.config.version})

    async def metrics(self, request: web.Request) -> web.Response:
        prefix = f"{self.config.engine}:"
        text = (f"# TYPE {prefix}num_requests_running gauge\n{prefix}num_requests_running {self.running}\n"
                f"# TYPE {prefix}request_success_total counter\n{prefix}request_success_total "
                f"{self.requests_served}\n")
        return web.Response(text=text, content_type="text/plain")

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = tok.render_chat(body["messages"]) if "messages" in body else str(body.get("prompt", ""))
        ids = tok.token_ids(text)
        return web.json_response({"tokens": ids, "count": len(ids), "max_model_len": self.config.max_model_len})

    # -- generation -------------------------------------------------------------------------------------------
    def _validate(self, body: dict[str, Any], prompt_tokens: int) -> web.Response | None:
        model = body.get("model")
        if model not in (None, "", self.config.model) and not self.config.has("accept_unknown_model"):
            return self.error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return self.error(400, "max_tokens must be at least 1", "BadRequestError", "max_tokens")
        temperature = body.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or temperature < 0 or temperature > 2:
            return self.error(400, "temperature must be in [0, 2]", "BadRequestError", "temperature")
        n = body.get("n", 1)
        if not isinstance(n, int) or n < 1:
            return self.error(400, "n must be at least 1", "BadRequestError", "n")
        if "stream_options" in body and not body.get("stream") and not self.config.has("accept_stream_options"):
            return self.error(400, "stream_options can only be set when stream is true", "BadRequestError",
                              "stream_options")
        limit = self.config.max_model_len
        if prompt_tokens >= limit or (prompt_tokens + max_tokens > limit and not self.config.has("no_length_check")):
            return self.error(
                400, f"You passed {prompt_tokens} input tokens and requested {max_tokens} output tokens. "
                f"However, the model's context length is only {limit} tokens.", "BadRequestError", "input_tokens")
        return None

    def _script(self, question: str, seed_text: str, ignore_eos: bool, max_tokens: int, chat: bool) -> str:
        """The full text the fake 'model' would produce for this prompt (before max_tokens and stop)."""
        if chat:
            answer = self.config.answers.get(question.strip())
            if answer is not None and self.config.wrong_fraction > 0:
                bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10000 / 10000
                if bucket < self.config.wrong_fraction:
                    answer = answer + "0"
            if answer is None:
                answer = _filler(seed_text, 40)
            text = f"{self.config.reasoning}{tok.END_THINK}\n\n{answer}"
            if self.config.has("think_tag_in_content"):
                text = f"{tok.THINK}{text}"
        else:
            text = _filler(seed_text, 60)
        if ignore_eos:
            while tok.count(text) < max_tokens:
                text += " " + _filler(text, 20)
        return text

    @staticmethod
    def _apply_stop(text: str, stop: list[str]) -> tuple[str, bool]:
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        return (text[:cut], True) if cut >= 0 else (text, False)

    def _generate(self, body: dict[str, Any], prompt_text: str, question: str, chat: bool, index: int) -> dict[str, Any]:
        max_tokens = int(body.get("max_tokens", body.get("max_completion_tokens", 16)))
        seed = body.get("seed")
        temperature = float(body.get("temperature", 1.0))
        salt = "" if temperature == 0 or seed is not None else f"{random.random()}"
        seed_text = f"{prompt_text}|{seed}|{index}|{salt}"
        full = self._script(question, seed_text, bool(body.get("ignore_eos")), max_tokens, chat)
        pieces = tok.tokenize(full)
        finish = "stop"
        if len(pieces) > max_tokens:
            pieces, finish = pieces[:max_tokens], "length"
        text = "".join(pieces)
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        if stop:
            reasoning_end = text.find(tok.END_THINK) + len(tok.END_THINK) if chat and tok.END_THINK in text else 0
            head, tail = text[:reasoning_end], text[reasoning_end:]
            tail, hit = self._apply_stop(tail, stop)
            if hit and not self.config.has("stop_string_in_output"):
                text, finish = head + tail, "stop"
            elif hit:
                matched = next(s for s in stop if text[reasoning_end:].startswith(tail + s))
                text, finish = head + tail + matched, "stop"
        completion_tokens = tok.count(text)
        if self.config.has("usage_off_by_one"):
            completion_tokens += 1
        if finish == "length" and self.config.has("finish_reason_stop_on_length"):
            finish = "stop"
        return {"text": text, "finish_reason": finish, "completion_tokens": completion_tokens}

    def _split_reasoning(self, text: str) -> tuple[str | None, str | None]:
        if self.config.has("no_reasoning_split"):
            return None, text
        if tok.END_THINK not in text:
            return text, None
        reasoning, _, content = text.partition(tok.END_THINK)
        if self.config.has("think_tag_in_content"):
            content = tok.END_THINK + content
        return reasoning.removeprefix(tok.THINK), content

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.error(400, "request body is not valid JSON", "BadRequestError")
        if not isinstance(body, dict):
            return self.error(400, "request body must be a JSON object", "BadRequestError")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self.error(400, "messages must be a non-empty list", "BadRequestError", "messages")
            prompt_text = tok.render_chat(messages)
            question = str(next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""))
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return self.error(400, "prompt must be a string", "BadRequestError", "prompt")
            prompt_text, question = prompt, prompt
        prompt_tokens = tok.count(prompt_text) + (1 if self.config.has("double_bos") else 0)
        invalid = self._validate(body, prompt_tokens)
        if invalid is not None:
            return invalid
        self.running += 1
        try:
            outs = [self._generate(body, prompt_text, question, chat, i) for i in range(int(body.get("n", 1)))]
            if body.get("stream"):
                return await self._stream(request, body, outs, prompt_tokens, chat)
            await asyncio.sleep((self.config.ttft_ms + self.config.itl_ms * max(
                o["completion_tokens"] - 1 for o in outs)) / 1000)
            return web.json_response(self._full_response(body, outs, prompt_tokens, chat))
        finally:
            self.running -= 1
            self._tick()

    def _usage(self, outs: list[dict[str, Any]], prompt_tokens: int) -> dict[str, int]:
        completion = sum(o["completion_tokens"] for o in outs)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def _full_response(self, body: dict[str, Any], outs: list[dict[str, Any]], prompt_tokens: int,
                       chat: bool) -> dict[str, Any]:
        choices = []
        for i, out in enumerate(outs):
            if chat:
                reasoning, content = self._split_reasoning(out["text"])
                message: dict[str, Any] = {"role": "assistant", "content": content}
                message[self.config.reasoning_field] = reasoning
                choices.append({"index": i, "message": message, "finish_reason": out["finish_reason"]})
            else:
                choices.append({"index": i, "text": out["text"], "finish_reason": out["finish_reason"]})
        return {"id": f"cmpl-{random.getrandbits(48):x}", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": self.config.model, "choices": choices,
                "usage": self._usage(outs, prompt_tokens)}

    async def _stream(self, request: web.Request, body: dict[str, Any], outs: list[dict[str, Any]],
                      prompt_tokens: int, chat: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        cid = f"chatcmpl-{random.getrandbits(48):x}"
        obj = "chat.completion.chunk" if chat else "text_completion"

        async def send(payload: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            return {"id": cid, "object": obj, "created": int(time.time()), "model": self.config.model,
                    "choices": choices}

        await asyncio.sleep(self.config.ttft_ms / 1000)
        for i, out in enumerate(outs):
            pieces = tok.tokenize(out["text"])
            in_reasoning = chat and tok.END_THINK in out["text"] or (chat and out["text"])
            step = max(1, self.config.tokens_per_chunk)
            for n, start in enumerate(range(0, max(len(pieces), 1), step)):
                if n > 0:
                    await asyncio.sleep(self.config.itl_ms / 1000)
                piece = "".join(pieces[start:start + step])
                if chat:
                    delta: dict[str, Any] = {}
                    if n == 0 and not self.config.has("no_role_in_first_chunk"):
                        delta["role"] = "assistant"
                    if piece == tok.END_THINK and not self.config.has("think_tag_in_content"):
                        in_reasoning = False
                        piece = ""
                    if in_reasoning and not self.config.has("no_reasoning_split"):
                        delta[self.config.reasoning_field] = piece
                    else:
                        delta["content"] = piece
                    choice: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": None}
                else:
                    choice = {"index": i, "text": piece, "finish_reason": None}
                await send(chunk([choice]))
            final = {"index": i, "finish_reason": out["finish_reason"]}
            final["delta" if chat else "text"] = {} if chat else ""
            await send(chunk([final]))
            if self.config.has("duplicate_finish_reason"):
                await send(chunk([final]))
        options = body.get("stream_options") or {}
        if options.get("include_usage") and not self.config.has("no_stream_usage"):
            usage_chunk = chunk([]) | {"usage": self._usage(outs, prompt_tokens)}
            await send(usage_chunk)
            if self.config.has("duplicate_usage_chunk"):
                await send(usage_chunk)
        if not self.config.has("no_done"):
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def build_app(config: FakeConfig) -> web.Application:
    return FakeEngine(config).app


class FakeEngineThread:
    """Run a fake engine on a free loopback port in a background thread (for fast in-process self-tests)."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.engine = FakeEngine(self.config)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(self.engine.app, access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> FakeEngineThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake engine did not start within 10 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def main(argv: list[str] | None = None) -> None:
    """Command line: serve a fake engine; accepts (and ignores) any engine's other launch arguments."""
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--port", "--server-port", type=int, default=8000)
    parser.add_argument("--host", "--server-name", default="127.0.0.1")
    parser.add_argument("--fake-config", default=os.environ.get("DSBENCH_FAKE_CONFIG", "{}"),
                        help="JSON object of FakeConfig fields, or @PATH to a JSON file")
    parser.add_argument("--served-model-name", "--model-name", default=None)
    args, _unknown = parser.parse_known_args(argv)
    raw = args.fake_config
    data = json.loads(open(raw[1:]).read() if raw.startswith("@") else raw)
    config = FakeConfig(**data)
    if args.served_model_name and "model" not in data:
        config.model = args.served_model_name
    print(f"fake engine {json.dumps(asdict(config))} on {args.host}:{args.port}", flush=True)
    if config.startup_delay_s and config.has("exit_during_startup"):
        time.sleep(config.startup_delay_s)
        print("fatal: fake engine failed to load the model", file=sys.stderr, flush=True)
        sys.exit(7)
    web.run_app(build_app(config), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

"""A fake OpenAI-compatible DeepSeek-R1 server (aiohttp) with switchable faults, for self-tests.

Compliant by default: it validates requests like vLLM (400 for bad parameters, 404 for an unknown model, the
context limit before any streaming), returns OpenAI-shaped bodies, streams SSE correctly, splits reasoning
from content and counts usage exactly (one token per character, see :mod:`fake_tokens`). Each name in
``FakeConfig.faults`` (registered in :mod:`fake_faults`) breaks one behaviour, so each conformance check can
be shown to fail. The text it generates comes from :mod:`fake_model`.

Run it standalone (also as a stand-in for an engine's launch command, unknown arguments are ignored)::

    python -m pytest_dsbench.testing.fake_engine --port 8000 --fake-config '{"ttft_ms": 50}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pytest_dsbench.testing import fake_load
from pytest_dsbench.testing import fake_tokens as tok
from pytest_dsbench.testing.fake_faults import FAULTS, unknown
from pytest_dsbench.testing.fake_metrics import FakeServerMetrics
from pytest_dsbench.testing.fake_model import FakeModel, Output, Request, filler
from pytest_dsbench.testing.fake_responses import ResponseBuilding
from pytest_dsbench.testing.fake_stream import stream_response
from pytest_dsbench.testing.fake_validation import RequestValidation, _Invalid


@dataclass
class FakeConfig:
    """Behaviour knobs of the fake engine."""

    model: str = "fake-r1"
    engine: str = "vllm"
    version: str = "0.0.0-fake"
    max_model_len: int = 4096
    max_input_len: int | None = None
    #: Context tokens kept back beyond the reply's first (SGLang 0.5.17 keeps 6): prompts of
    #: ``max_model_len - 1 - reserved_context_tokens`` tokens or more are refused.
    reserved_context_tokens: int = 0
    clamp_max_tokens: bool = True
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens_per_chunk: int = 1
    #: Valid SSE that OpenAI servers do not usually send and clients read: the line end of every SSE line
    #: ("\n", "\r\n" or "\r"), and keep-alive comment blocks, comment lines and ``retry:`` inside events.
    sse_newline: str = "\n"
    sse_extras: bool = False
    #: Characters of tool-call arguments per streamed delta (0: all arguments in one delta, as SGLang sends them).
    tool_args_chunk_chars: int = 5
    reasoning_field: str = "reasoning"
    reasoning_usage_path: str = "completion_tokens_details.reasoning_tokens"
    error_envelope: str = "nested"
    reasoning: str = "Let me think step by step."
    answers: dict[str, str] = field(default_factory=dict)
    wrong_fraction: float = 0.0
    faults: list[str] = field(default_factory=list)
    startup_delay_s: float = 0.0
    die_after_requests: int | None = None
    api_key: str | None = None
    decode_log_interval_s: float = 0.0
    itl_ms_per_running: float = 0.0
    #: server metrics (:mod:`fake_metrics`): /metrics at all, a prefix cache and its reset endpoint, what the
    #: engine reports per request or running request, speculative-decoding draft/accepted tokens per step
    metrics_enabled: bool = True
    prefix_cache: bool = False
    prefix_cache_reset: bool = True
    prefix_cache_reset_ignored: bool = False
    preemptions_per_request: int = 0
    kv_cache_usage_per_running: float = 0.05
    waiting_per_running: float = 0.0
    spec_tokens: int = 0
    spec_accepted: int = 0

    def __post_init__(self) -> None:
        typos = unknown(list(self.faults))
        if typos:
            raise ValueError(
                f"unknown fake-engine fault(s) {typos}; registered faults are in "
                f"pytest_dsbench.testing.fake_faults.FAULTS ({len(FAULTS)} names)"
            )

    def has(self, fault: str) -> bool:
        return fault in self.faults


class FakeEngine(RequestValidation, ResponseBuilding):
    """The aiohttp application and its state."""

    config: FakeConfig

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.model = FakeModel(config)
        self.requests_served = 0
        self.running = 0
        self.streams_started = 0
        self.poisoned = False
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.tokens_streamed = 0
        self.serial_lock = asyncio.Lock()
        self.server_metrics = FakeServerMetrics(ignore_reset=config.prefix_cache_reset_ignored)
        self.started = time.monotonic()
        self.app = web.Application(middlewares=[self._auth])
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/v1/models", self.models)
        r.add_get("/v1/models/{model_id:.+}", self.model_card)
        r.add_get("/version", self.version)
        if config.metrics_enabled:
            r.add_get("/metrics", self.metrics)
        if config.prefix_cache_reset:
            r.add_post("/reset_prefix_cache", self.server_metrics.reset)
        r.add_post("/tokenize", self.tokenize)
        r.add_post("/detokenize", self.detokenize)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/chat/completions", self.chat)
        if config.decode_log_interval_s > 0:
            from pytest_dsbench.testing.fake_decode_log import start_decode_log

            self.app.on_startup.append(start_decode_log(self))

    @property
    def max_model_len(self) -> int:
        doubled = self.config.has("max_model_len_larger_than_profile")
        return self.config.max_model_len * (2 if doubled else 1)

    # -- plumbing --------------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        key = self.config.api_key
        if key and request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def error_body(self, status: int, message: str, err_type: str, param: str | None) -> dict[str, Any]:
        if self.config.has("error_without_message"):
            message = ""
        if self.config.error_envelope == "flat" or self.config.has("flat_error_body"):
            return {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
        return {"error": {"message": message, "type": err_type, "param": param, "code": status}}

    def error(
        self, status: int, message: str, err_type: str = "BadRequestError", param: str | None = None
    ) -> web.Response:
        if 400 <= status < 500:
            self.poisoned = self.poisoned or self.config.has("poison_after_bad_request")
        if self.config.has("error_500_instead_of_400") and status == 400:
            status = 500
        if (
            self.config.has("validation_422")
            and status == 400
            and param not in (None, "input_tokens", "messages")
        ):
            status = 422
        if self.config.has("error_body_not_json"):
            return web.Response(status=status, text=f"Error: {message}", content_type="text/plain")
        return web.json_response(self.error_body(status, message, err_type, param), status=status)

    def _tick(self) -> None:
        self.requests_served += 1
        limit = self.config.die_after_requests
        if limit is not None and self.requests_served >= limit:
            asyncio.get_running_loop().call_later(0.05, os._exit, 3)

    def _die_if_past_the_limit(self) -> None:
        """A fake told to die after N requests answers no request after those N, however fast they come (the
        delayed exit lets the N-th answer reach its client)."""
        limit = self.config.die_after_requests
        if limit is not None and self.requests_served >= limit:
            os._exit(3)

    # -- simple endpoints ------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        ready = time.monotonic() - self.started >= self.config.startup_delay_s
        if self.config.has("never_healthy") or not ready:
            return web.Response(status=503, text="loading")
        if self.config.has("health_bad_status"):
            return web.Response(status=500, text="engine error")
        await fake_load.wait_for_health(self)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        if self.config.has("never_healthy"):
            return web.Response(status=503)
        max_len = self.max_model_len + (1 if self.config.has("models_max_model_len_wrong") else 0)
        entry: dict[str, Any] = {
            "id": self.config.model,
            "object": "model",
            "created": int(self.started),
            "owned_by": self.config.engine,
            "root": self.config.model,
            "max_model_len": max_len,
        }
        listing = "list"
        if self.config.has("models_list_bad_shape"):
            entry.pop("owned_by")
            listing = "models"
        return web.json_response({"object": listing, "data": [entry]})

    async def model_card(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{id}`` as SGLang serves it (vLLM 0.32 and LMDeploy have no such route)."""
        model_id = request.match_info["model_id"]
        known = model_id == self.config.model
        if self.config.has("models_retrieve_not_found"):
            known = False
        elif self.config.has("models_retrieve_any_id"):
            known = True
        if not known:
            return self.error(404, f"The model `{model_id}` does not exist.", "NotFoundError", "model")
        card = {"id": self.config.model, "object": "model", "created": int(self.started)}
        return web.json_response(card | {"owned_by": self.config.engine, "root": self.config.model})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.config.version})

    async def metrics(self, request: web.Request) -> web.Response:
        p = f"{self.config.engine}:"
        lines = [
            f"# TYPE {p}num_requests_running gauge",
            f"{p}num_requests_running {self.running}",
            f"# TYPE {p}request_success_total counter",
            f"{p}request_success_total {self.requests_served}",
        ]
        if not self.config.has("metrics_missing_token_counters"):
            lines += [
                f"# TYPE {p}prompt_tokens_total counter",
                f"{p}prompt_tokens_total {self.prompt_tokens_total}",
                f"# TYPE {p}generation_tokens_total counter",
                f"{p}generation_tokens_total {self.generation_tokens_total}",
            ]
        lines += self.server_metrics.page(self)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The server's chat template (with the template-related faults)."""
        if self.config.has("system_dropped"):
            messages = [m for m in messages if m.get("role") != "system"]
        if self.config.has("multi_turn_drops_history"):
            users = [m for m in messages if m.get("role") == "user"]
            messages = [m for m in messages if m.get("role") == "system"] + users[-1:]
        generation = tok.ASSISTANT if self.config.has("stale_template") else tok.GENERATION_PROMPT
        text = tok.render_chat(
            messages,
            keep_history_reasoning=self.config.has("history_reasoning_replayed"),
            generation_prompt=generation,
        )
        return (tok.BOS + text) if self.config.has("double_bos") else text

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            ids = tok.token_ids(self.render(body["messages"]))
        else:
            add_special = body.get("add_special_tokens", True)
            ids = ([tok.token_id(tok.BOS)] if add_special else []) + tok.token_ids(
                str(body.get("prompt", ""))
            )
        count = len(ids) + (1 if self.config.has("tokenize_count_mismatch") else 0)
        reply: dict[str, Any] = {"tokens": ids, "count": count, "max_model_len": self.max_model_len}
        if body.get("return_token_strs"):
            reply["token_strs"] = [tok.decode([i]) for i in ids]
        return web.json_response(reply)

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": tok.decode([int(i) for i in body.get("tokens", [])])})

    # -- generation ------------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    def _max_tokens(self, body: dict[str, Any], chat: bool, prompt_tokens: int) -> tuple[int, int | None]:
        """(effective max_tokens, the explicit value or None)."""
        explicit = body.get("max_completion_tokens")
        if explicit is None or self.config.has("ignore_max_completion_tokens"):
            explicit = body.get("max_tokens")
        if explicit is not None:
            return int(explicit), int(explicit)
        if chat or self.config.has("completions_default_unbounded"):
            return max(1, self.max_model_len - prompt_tokens), None
        return 16, None

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self._die_if_past_the_limit()
        try:
            raw = await request.read()
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            status = 500 if self.config.has("malformed_body_500") else 400
            return self.error(status, "request body is not valid JSON")
        if not isinstance(body, dict):
            array_500 = isinstance(body, list) and self.config.has("array_body_500")
            status = 500 if self.config.has("malformed_body_500") or array_500 else 400
            return self.error(status, "request body must be a JSON object")
        try:
            self._validate_params(body, chat)
            prompts = self._prompts(body, chat)
            prompt_tokens = sum(p[2] for p in prompts)
            max_tokens, explicit = self._max_tokens(body, chat, max(p[2] for p in prompts))
            for _, _, count in prompts:
                window = self._check_length(count, explicit)
                if window is not None:
                    max_tokens = min(max_tokens, window)
        except _Invalid as bad:
            if body.get("stream") and self.config.has("stream_error_in_band"):
                return await self._in_band_error(request, bad)
            return self.error(bad.status, bad.message, bad.err_type, bad.param)
        if self.poisoned:
            return self.error(500, "engine core died", "InternalServerError")
        if self.config.has("prompt_list_only_first"):
            prompts = prompts[:1]
        if self.config.has("prompt_list_reversed"):
            prompts = prompts[::-1]
        if self.config.has("prompt_list_usage_first_only"):
            prompt_tokens = prompts[0][2]
        n = 1 if self.config.has("n_ignored") else int(body.get("n", 1))
        stop = body.get("stop") or []
        messages = body.get("messages") or []
        temperature = float(body.get("temperature", 1.0))
        if temperature == 0 and self.config.has("zero_temperature_replaced_by_default"):
            temperature = 0.6  # `request.temperature or generation_config["temperature"]`
        outs: list[tuple[int, Output, str]] = []
        for p_index, (text, question, _count) in enumerate(prompts):
            req = Request(
                chat=chat,
                prompt_text=text,
                question=question,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=body.get("seed"),
                stop=[stop] if isinstance(stop, str) else list(stop),
                ignore_eos=bool(body.get("ignore_eos")),
                min_tokens=int(body.get("min_tokens") or body.get("min_new_tokens") or 0),
                body=body,
                messages=messages,
            )
            generated = [self.model.generate(req, j) for j in range(n)]
            if self.config.has("n_choices_identical"):
                generated = [generated[0]] * n
            outs += [(p_index * n + j, out, text) for j, out in enumerate(generated)]
        if self.config.has("usage_prompt_counted_per_choice"):
            prompt_tokens *= n
        self.running += 1
        self.prompt_tokens_total += prompt_tokens
        for text, _question, count in prompts:
            self.server_metrics.admit(self, text, count)
        for _, out, _ in outs:
            self.server_metrics.generated(self, out.completion_tokens)
        self.generation_tokens_total += sum(o.completion_tokens for _, o, _ in outs) - (
            len(outs) if self.config.has("metrics_generation_undercount") else 0
        )
        longest = max(o.completion_tokens for _, o, _ in outs)
        delay_s = fake_load.generation_delay_s(self, explicit, longest)
        try:
            async with fake_load.admission(self, explicit):
                if body.get("stream") or (
                    not body.get("stream")
                    and "stream_options" in body
                    and self.config.has("stream_options_starts_stream")
                ):
                    self.streams_started += 1
                    return await stream_response(
                        self, request, body, outs, prompt_tokens, chat, extra_delay_s=delay_s
                    )
                await asyncio.sleep(
                    (self.config.ttft_ms + self.config.itl_ms * max(0, longest - 1)) / 1000 + delay_s
                )
                return web.json_response(self.full_response(body, outs, prompt_tokens, chat))
        finally:
            self.running -= 1
            self._tick()

    async def _in_band_error(self, request: web.Request, bad: _Invalid) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        payload = {
            "error": {"message": bad.message, "type": bad.err_type, "param": bad.param, "code": bad.status}
        }
        await response.write(f"data: {json.dumps(payload)}\n\ndata: [DONE]\n\n".encode())
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
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr,attr-defined]
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
    parser.add_argument(
        "--fake-config",
        default=os.environ.get("DSBENCH_FAKE_CONFIG", "{}"),
        help="JSON object of FakeConfig fields, or @PATH to a JSON file",
    )
    parser.add_argument("--served-model-name", "--model-name", default=None)
    args, _unknown = parser.parse_known_args(argv)
    raw = args.fake_config
    data = json.loads(Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw)
    config = FakeConfig(**data)
    if args.served_model_name and "model" not in data:
        config.model = args.served_model_name
    print(f"fake engine {json.dumps(asdict(config))} on {args.host}:{args.port}", flush=True)
    if config.startup_delay_s and config.has("exit_during_startup"):
        time.sleep(config.startup_delay_s)
        print("fatal: fake engine failed to load the model", file=sys.stderr, flush=True)
        sys.exit(7)
    web.run_app(build_app(config), host=args.host, port=args.port, print=None, access_log=None)


__all__ = ["FAULTS", "FakeConfig", "FakeEngine", "FakeEngineThread", "build_app", "filler", "main"]


if __name__ == "__main__":
    main()

"""A. Discovery, health, metrics and tokenizer endpoints."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import assert_alive, metric_counters, ok_json, r1_body
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip


@check(
    "A01.models_list_shape",
    "GET /v1/models is an OpenAI model list naming the served model; a "
    "max_model_len, if given, is the configured context",
    severity="MUST",
    faults=("models_list_bad_shape", "models_max_model_len_wrong"),
    source=f"{REFERENCE} A01; SGLang test_model_list",
    deviations={"lmdeploy": "no max_model_len field (allowed)"},
)
def models_list_shape(ctx: ApiContext) -> None:
    body = ok_json(ctx.api.get("/v1/models"), "GET /v1/models")
    expect_eq(body.get("object"), "list", "GET /v1/models 'object'")
    data = body.get("data")
    expect(isinstance(data, list) and len(data) > 0, "GET /v1/models 'data'", desc("a non-empty list"), data)
    assert isinstance(data, list)
    for item in data:
        expect(
            isinstance(item, dict) and isinstance(item.get("id"), str),
            "model entry 'id'",
            desc("a string"),
            item,
        )
        expect_eq(item.get("object"), "model", f"model {item['id']!r} 'object'")
        expect(
            isinstance(item.get("created"), int),
            f"model {item['id']!r} 'created'",
            desc("an integer"),
            item.get("created"),
        )
        expect(
            isinstance(item.get("owned_by"), str),
            f"model {item['id']!r} 'owned_by'",
            desc("a string"),
            item.get("owned_by"),
        )
    ids = [item["id"] for item in data]
    expect(ctx.target.model in ids, "served model in GET /v1/models", ctx.target.model, ids)
    entry = next(item for item in data if item["id"] == ctx.target.model)
    if "max_model_len" in entry:
        configured = ctx.target.hw_max_model_len or ctx.target.max_model_len
        expect_eq(
            entry["max_model_len"],
            configured,
            f"max_model_len of {ctx.target.model!r} (the hw profile's configured context)",
        )


@check(
    "A03.unknown_model_404",
    "A request for a model that is not served answers 404 naming the model, and the server keeps serving",
    severity="MUST",
    faults=("accept_unknown_model", "unknown_model_400"),
    source=f"{REFERENCE} A03; [vllm #3485](https://github.com/vllm-project/vllm/issues/3485)",
    deviations={"sglang": "does not validate the model name (profile validates_model=False): skipped"},
)
def unknown_model_404(ctx: ApiContext) -> None:
    if not ctx.behaviour.validates_model:
        skip(f"engine profile {ctx.target.engine} declares validates_model=False")
    name = "dsbench-no-such-model"
    for path, body in (
        ("/v1/chat/completions", ctx.chat_body(model=name, max_tokens=4)),
        ("/v1/completions", ctx.completion_body(model=name, max_tokens=4)),
    ):
        reply = ctx.api.post(path, body)
        if reply.status != 404:
            fail(f"POST {path} with model {name!r}", desc("HTTP 404"), desc(reply.describe()))
        message = reply.error_message() or ""
        expect(name in message, f"POST {path} 404 message", desc(f"a message naming {name!r}"), message)
    assert_alive(ctx, "after unknown-model requests")


@check(
    "A04.response_model_echo",
    "Responses and every stream chunk name the served model",
    severity="SHOULD",
    faults=("wrong_response_model",),
    source=f"{REFERENCE} A04; vLLM test_serving_chat",
)
def response_model_echo(ctx: ApiContext) -> None:
    from pytest_dsbench.conformance.common import r1_stream

    expect_eq(r1_body(ctx).get("model"), ctx.target.model, "chat response 'model'")
    models = {chunk.get("model") for chunk in r1_stream(ctx).chunks}
    expect_eq(models, {ctx.target.model}, "'model' of the stream chunks")


@check(
    "A05.health_ready",
    "GET /health answers 200 while the server serves completions",
    severity="MUST",
    faults=("health_bad_status",),
    source=f"{REFERENCE} A05",
)
def health_ready(ctx: ApiContext) -> None:
    reply = ctx.api.get("/health")
    expect(reply.status == 200, "GET /health", desc("HTTP 200"), desc(reply.describe()))


@check(
    "A07.metrics_exposed",
    "GET /metrics is Prometheus text with the engine's prompt and generation token counters",
    severity="EXT",
    requires=("metrics",),
    faults=("metrics_missing_token_counters",),
    source=f"{REFERENCE} A07",
)
def metrics_exposed(ctx: ApiContext) -> None:
    reply = ctx.api.get("/metrics")
    expect(reply.status == 200, "GET /metrics", desc("HTTP 200"), desc(reply.describe()))
    counters = metric_counters(ctx)
    prefix = ctx.behaviour.metrics_prefix or ""
    for name in ("prompt_tokens_total", "generation_tokens_total"):
        expect(
            counters[name] is not None,
            "GET /metrics",
            desc(f"a {prefix}{name} counter"),
            desc(f"no {prefix}{name} sample"),
        )


@check(
    "A08.metrics_token_counters_consistent",
    "The metrics' token counters grow by exactly the usage of isolated requests",
    severity="SHOULD",
    requires=("metrics",),
    faults=("metrics_generation_undercount",),
    source=f"{REFERENCE} A08",
)
def metrics_token_counters_consistent(ctx: ApiContext) -> None:
    requests = 3
    for _attempt in range(3):
        before = metric_counters(ctx)
        if None in before.values():
            skip("the engine's /metrics lacks the token or request counters (see A07)")
        prompt_sum = completion_sum = 0
        for i in range(requests):
            body = ok_json(ctx.chat(ctx.tasks[i % len(ctx.tasks)].question, max_tokens=6), "chat completion")
            prompt_sum += body["usage"]["prompt_tokens"]
            completion_sum += body["usage"]["completion_tokens"]
        deadline = time.monotonic() + 2.0
        after = metric_counters(ctx)
        while (
            time.monotonic() < deadline
            and (after["request_success_total"] or 0) - (before["request_success_total"] or 0) < requests
        ):
            time.sleep(0.1)
            after = metric_counters(ctx)
        served = (after["request_success_total"] or 0) - (before["request_success_total"] or 0)
        if served != requests:
            continue  # somebody else's traffic: the deltas would not be ours alone
        generated = (after["generation_tokens_total"] or 0) - (before["generation_tokens_total"] or 0)
        prompted = (after["prompt_tokens_total"] or 0) - (before["prompt_tokens_total"] or 0)
        expect_eq(
            generated,
            completion_sum,
            "growth of the generation-token counter over 3 requests (sum of usage.completion_tokens)",
        )
        expect_eq(
            prompted,
            prompt_sum,
            "growth of the prompt-token counter over 3 requests (sum of usage.prompt_tokens)",
        )
        return
    skip("the server was not idle (other traffic moved the request counter in 3 attempts)")


@check(
    "A09.tokenize_roundtrip",
    "The tokenize endpoint's count equals its token list, detokenize inverts it, "
    "and the ids agree with the local tokenizer",
    severity="EXT",
    requires=("tokenize",),
    faults=("tokenize_count_mismatch",),
    source=f"{REFERENCE} A09",
)
def tokenize_roundtrip(ctx: ApiContext) -> None:
    text = "Hello world, 17 * 23 = 391."
    api = ctx.behaviour.tokenize_api
    if api == "lmdeploy_encode":
        body = ok_json(ctx.api.post("/v1/encode", {"input": text, "add_bos": False}), "POST /v1/encode")
        ids, count = body.get("input_ids"), body.get("length")
    else:
        path = "/v1/tokenize" if api == "sglang" else "/tokenize"
        body = ok_json(
            ctx.api.post(path, {"model": ctx.target.model, "prompt": text, "add_special_tokens": False}),
            f"POST {path}",
        )
        ids, count = body.get("tokens"), body.get("count")
    expect(
        isinstance(ids, list) and all(isinstance(i, int) for i in ids),
        "tokenize ids",
        desc("a list of ints"),
        ids,
    )
    assert isinstance(ids, list)
    expect_eq(count, len(ids), "tokenize 'count' (length of the returned token list)")
    if api in ("vllm", "sglang"):
        path, key = ("/detokenize", "prompt") if api == "vllm" else ("/v1/detokenize", "text")
        back = ok_json(ctx.api.post(path, {"model": ctx.target.model, "tokens": ids}), f"POST {path}")
        expect_eq(back.get(key), text, f"{path} of the tokenized text")
    from pytest_dsbench.conformance.tokens import EngineTokenizer

    if ctx.counter is not None and not isinstance(ctx.counter, EngineTokenizer):
        expect_eq(ids, ctx.counter.text_ids(text, add_bos=False), f"engine token ids vs {ctx.counter.source}")


@check(
    "A02.models_retrieve",
    "GET /v1/models/{served id} answers the served model; an unknown id answers 404",
    severity="SHOULD",
    requires=("models_retrieve",),
    faults=("models_retrieve_any_id", "models_retrieve_not_found"),
    source=f"{REFERENCE} A02; SGLang test_retrieve_model",
    deviations={
        "vllm": "0.32 has no GET /v1/models/{id} route (only /v1/models)",
        "lmdeploy": "no GET /v1/models/{id} route (endpoints/models.py)",
    },
)
def models_retrieve(ctx: ApiContext) -> None:
    served = ctx.target.model
    body = ok_json(ctx.api.get(f"/v1/models/{served}"), f"GET /v1/models/{served}")
    expect_eq(body.get("id"), served, f"GET /v1/models/{served} 'id'")
    expect_eq(body.get("object"), "model", f"GET /v1/models/{served} 'object'")
    unknown = "dsbench-no-such-model"
    reply = ctx.api.get(f"/v1/models/{unknown}")
    expect(reply.status == 404, f"GET /v1/models/{unknown}", desc("HTTP 404"), desc(reply.describe()))


HEALTH_LOAD_STREAMS = 8


@check(
    "A06.health_under_load",
    f"GET /health answers 200 within [slo] health_latency_s_max (default 2 s) "
    f"while {HEALTH_LOAD_STREAMS} streams are generating",
    severity="SHOULD",
    faults=("health_blocks_under_load",),
    source=f"{REFERENCE} A06",
)
def health_under_load(ctx: ApiContext) -> None:
    streams = max(2, min(HEALTH_LOAD_STREAMS, ctx.concurrency))
    limit_s = ctx.health_latency_s_max
    polls: list[str] = []
    bad: list[str] = []
    with ThreadPoolExecutor(max_workers=streams) as pool:
        load = [
            pool.submit(ctx.chat_stream, ctx.tasks[i % len(ctx.tasks)].question, max_tokens=16)
            for i in range(streams)
        ]
        while True:
            started = time.monotonic()
            try:
                reply = ctx.api.get("/health", timeout_s=limit_s)
                outcome = f"HTTP {reply.status} after {time.monotonic() - started:.2f} s"
                if reply.status != 200 or time.monotonic() - started > limit_s:
                    bad.append(outcome)
            except httpx.TimeoutException:
                outcome = f"no answer within {limit_s:g} s"
                bad.append(outcome)
            polls.append(outcome)
            if all(f.done() for f in load):
                break
            time.sleep(0.2)
        failed_load = [s.status for s in (f.result() for f in load) if s.status != 200]
    expect(
        not bad,
        f"GET /health polled {len(polls)} time(s) during {streams} concurrent streams",
        desc(f"HTTP 200 within {limit_s:g} s every time ([slo] health_latency_s_max)"),
        bad[:3],
    )
    expect(not failed_load, f"the {streams} concurrent streams", desc("HTTP 200"), failed_load)

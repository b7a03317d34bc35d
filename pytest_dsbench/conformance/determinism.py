"""K. Sampling controls and determinism: greedy repeatability, seeds, top_k, explicit parameters, penalties,
logit_bias.

Comparisons of separate greedy or seeded runs run on an idle server where the engine's metrics can tell (batch
composition changes greedy outputs, reference section K), or are retried (``greedy_retries``): a real violation
fails every attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import message_of, ok_json, on_idle_server, text_of
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import expect, expect_eq, skip

OPEN_PROMPT = "Once upon a time"
"""A completions prompt with many likely continuations (sampling at temperature 1 varies, the fixture too)."""
REPETITIVE_PROMPT = "the the the the the the the the"
"""A prompt that greedy decoding continues with repeated tokens, which penalties must discourage."""


def _open_greedy(ctx: ApiContext) -> str:
    reply = ctx.memo("open_prompt_greedy", lambda: ctx.completion(OPEN_PROMPT, max_tokens=16))
    return text_of(ok_json(reply, f"completion of {OPEN_PROMPT!r}, temperature 0, max_tokens=16"))


def _generation_defaults(ctx: ApiContext) -> dict[str, Any]:
    """The sampling defaults of the served model's generation_config.json (what an engine applies to omitted
    fields), when its folder is known."""
    if not ctx.target.model_path:
        return {}
    path = Path(ctx.target.model_path) / "generation_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: config[k] for k in ("temperature", "top_p", "top_k") if k in config}


@check(
    "K01.greedy_repeatable",
    "The same temperature-0 request answers identically when repeated on an idle server",
    severity="SHOULD",
    faults=("greedy_nondeterministic",),
    source=f"{REFERENCE} K01; [vllm #11658](https://github.com/vllm-project/vllm/issues/11658)",
)
def greedy_repeatable(ctx: ApiContext) -> None:
    def twice() -> tuple[dict[str, Any], dict[str, Any]]:
        first = message_of(ok_json(ctx.chat(), "chat"), "chat")
        return first, message_of(ok_json(ctx.chat(), "chat (repeat)"), "chat (repeat)")

    first, again = on_idle_server(ctx, 2, twice)
    for key in ("content", ctx.behaviour.reasoning_field):
        expect_eq(again.get(key), first.get(key), f"temperature-0 repeat on an idle server: message.{key}")


@check(
    "K03.temperature0_equals_topk1",
    "top_k=1 at temperature 1 writes exactly the temperature-0 text",
    severity="SHOULD",
    requires=("top_k",),
    greedy_retries=2,
    faults=("top_k_ignored",),
    source=f"{REFERENCE} K03; [vllm #5404](https://github.com/vllm-project/vllm/issues/5404)",
)
def temperature0_equals_topk1(ctx: ApiContext) -> None:
    greedy = _open_greedy(ctx)
    what = f"completion of {OPEN_PROMPT!r}, temperature 1, top_k=1, max_tokens=16"
    body = ok_json(ctx.completion(OPEN_PROMPT, max_tokens=16, temperature=1.0, top_p=1.0, top_k=1), what)
    expect_eq(text_of(body), greedy, f"{what}: text (the temperature-0 text)")


@check(
    "K04.seed_reproducible",
    "Sampling at temperature 1 with the same seed gives the same text twice",
    severity="SHOULD",
    requires=("seed",),
    faults=("seed_ignored",),
    source=f"{REFERENCE} K04",
)
def seed_reproducible(ctx: ApiContext) -> None:
    params = {"temperature": 1.0, "top_p": 1.0, "seed": 1234, "max_tokens": 24}

    def twice() -> tuple[str, str]:
        first = text_of(ok_json(ctx.completion(OPEN_PROMPT, **params), "seeded completion"))
        return first, text_of(ok_json(ctx.completion(OPEN_PROMPT, **params), "seeded completion (repeat)"))

    first, second = on_idle_server(ctx, 2, twice)
    expect_eq(second, first, "seeded completion text (seed=1234, temperature 1) on repeat, idle server")


@check(
    "K05.explicit_params_override_server_defaults",
    "An explicit temperature 0 is honoured over the model's generation_config "
    "defaults (not taken for 'unset'): an open-ended prompt answers identically twice",
    severity="SHOULD",
    greedy_retries=2,
    faults=("zero_temperature_replaced_by_default",),
    source=f"{REFERENCE} K05; vLLM test_serving_chat could_load_correct_generation_config",
)
def explicit_params_override_server_defaults(ctx: ApiContext) -> None:
    defaults = _generation_defaults(ctx)
    what = f"completion of {OPEN_PROMPT!r} with an explicit temperature 0"
    if defaults:
        what += f" (generation_config.json sets {defaults})"

    def twice() -> tuple[str, str]:
        first = text_of(ok_json(ctx.completion(OPEN_PROMPT, max_tokens=16, temperature=0), what))
        return first, text_of(ok_json(ctx.completion(OPEN_PROMPT, max_tokens=16, temperature=0), what))

    first, again = on_idle_server(ctx, 2, twice)
    expect_eq(again, first, f"{what}: text on repeat, idle server")


@check(
    "K06.penalties_accepted",
    "frequency_penalty=1 and presence_penalty=0.5 are accepted and change the "
    "greedy text of a prompt whose greedy continuation repeats tokens",
    severity="SHOULD",
    faults=("penalties_ignored",),
    source=f"{REFERENCE} K06; SGLang test_penalty",
)
def penalties_accepted(ctx: ApiContext) -> None:
    what = f"completion of {REPETITIVE_PROMPT!r}, temperature 0, max_tokens=16"
    reference = text_of(ok_json(ctx.completion(REPETITIVE_PROMPT, max_tokens=16), what))
    if ctx.counter is not None:
        ids = ctx.counter.text_ids(reference, add_bos=False)
        repeats = len(set(ids)) < len(ids)
    else:
        repeats = len(set(reference)) < len(reference)
    if not repeats:
        skip(f"the greedy continuation repeats no token ({reference!r}): penalties cannot change it")
    penalised = ok_json(
        ctx.completion(REPETITIVE_PROMPT, max_tokens=16, frequency_penalty=1.0, presence_penalty=0.5),
        f"{what}, frequency_penalty=1, presence_penalty=0.5",
    )
    expect(
        text_of(penalised) != reference,
        f"{what} with frequency_penalty=1, presence_penalty=0.5: text",
        f"different from the unpenalised {reference!r}",
        text_of(penalised),
    )


@check(
    "K07.logit_bias_ban",
    "logit_bias -100 on the greedy first token makes the first token change",
    severity="SHOULD",
    requires=("logit_bias",),
    faults=("logit_bias_ignored",),
    source=f"{REFERENCE} K07; vLLM test_chat_logit_bias_validation",
    deviations={"lmdeploy": "logit_bias only on the PyTorch engine (not declared)"},
)
def logit_bias_ban(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    first = text_of(ok_json(ctx.completion(max_tokens=1), "completion max_tokens=1"))
    if not first:
        skip("the greedy first token has no text (a special token)")
    ids = counter.text_ids(first, add_bos=False)
    if len(ids) != 1:
        skip(f"the greedy first token's text {first!r} does not encode to one token ({counter.source}: {ids})")
    bias = {str(ids[0]): -100}
    what = f"completion max_tokens=1 with logit_bias {bias}"
    banned = text_of(ok_json(ctx.completion(max_tokens=1, logit_bias=bias), what))
    expect(banned != first, f"{what}: first token", f"anything but the banned {first!r}", banned)

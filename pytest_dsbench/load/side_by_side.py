"""This suite's client and sglang.bench_serving measuring the same engine steps: one wave each, in lock step.

Run one after the other, two clients meet different engine states: on a small host the engine's own speed
drifts by more from one run to the next than the few percent a comparison of two clients must resolve. Run at
the same time they share the engine, but not its queue: measured on the embedded engine (2 cores), with two
requests in flight each and one wave after another, whichever client's request landed first was prefilled
first, finished first and was first again in the next wave, so its mean TTFT stayed 25% below the other's
in every round while TPOT, ITL and throughput agreed within 3%. Offset by half a request instead (one in
flight each), the two clients' requests met different neighbours (the official tool's exit, a prefill of
the other's) and no metric agreed. Neither is a difference in measurement.

So each client sends one wave (all its requests at once, as many as the concurrency) and both waves are
prefilled in the same engine step: every request of either client then has the same first-token step, the
same decode steps and the same last step, and whatever remains between the two clients' TTFT, TPOT, ITL and
throughput is how each measures. Two things make the waves meet:

* The start. The official tool cannot be told when to start, so this suite's client waits for it:
  sglang.bench_serving announces the end of its warmup and starts its measured run a fixed second later
  (:data:`~pytest_dsbench.load.sglang_bridge.MAIN_RUN_DELAY_S`); this suite's workers, warmed up and connected,
  are released for the same instant through a :data:`~pytest_dsbench.load.executors.StartGate`.
* A *hold*: just before that instant, one request of fresh random token ids and ``max_tokens`` 1 makes the
  engine busy with its prefill, so both waves (which land milliseconds apart) queue up and the next step
  schedules them together. Without it an idle engine starts a step for whichever requests arrived first. The
  hold must be alone in its step and both waves must fit the next one (the engine's per-step token budget,
  ``max_num_batched_tokens``, is at least ``max_model_len`` on vLLM): the caller sizes the waves and the hold.

Both clients send the same prompts. The outputs then match too, and with them the number of chunks that carry
text (a tiny model's random tokens often decode to an incomplete character, an event with no text), which
sets how many gaps the ITL mean averages over: with different prompts each round's ITL means differed by up
to 20% for that reason alone. Identical prompts in the same step cannot give either a head start, since both
get their first token at the end of that step.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from pytest_dsbench._http import auth_headers
from pytest_dsbench.load.api import LoadContext, run_workload, workload_config
from pytest_dsbench.load.client import encode_body
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.load.sglang_bridge import MAIN_RUN_MARKER, ReferenceToolError, run_sglang
from pytest_dsbench.load.tokenizer import load_tokenizer

START_WAIT_S = 600.0
"""How long this suite's client waits for the official tool's warmup (its imports alone take tens of seconds
on a small host)."""
HOLD_LEAD_S = 0.1
"""How long before the waves the hold request is sent: it must reach the engine and start its prefill first."""
LOCK_STEP_TOLERANCE = 0.05
LOCK_STEP_MIN_S = 0.005
"""A wave whose first tokens spread over more than this share of its TTFT (and more than 5 ms, the client's own
spread in sending a wave) was split across engine steps."""
HOLD_TIMEOUT_S = 120.0


@dataclass
class SideBySide:
    """A pair of runs whose measured waves started together, and whether the engine took them in one step."""

    ours: LoadRun
    theirs: LoadRun
    start_gap_s: float
    """This suite's measured start minus the official tool's (announced) one."""
    hold_error: str | None = None
    """Why the hold request failed, if it did."""
    hold_left_s: float | None = None
    """How long the hold request was still running after the waves' start (negative: it ended before)."""

    def lock_step_problem(self) -> str | None:
        """Why the waves may not have shared their engine steps, or None when they did.

        Both waves must have started on time, every request of one client's wave must get its first token at
        the same time (see :data:`LOCK_STEP_MIN_S`), and the hold must have been running when the waves were
        sent. Whether the two waves shared a step is not visible from either side: a wave one step late
        is what the comparison itself measures."""
        if self.hold_error:
            return f"the hold request failed ({self.hold_error})"
        if self.start_gap_s > LOCK_STEP_MIN_S:
            return (
                f"this suite's client was ready {self.start_gap_s * 1000:.0f} ms after sglang.bench_serving's "
                "measured run began"
            )
        if self.hold_left_s is not None and self.hold_left_s <= 0:
            return f"the hold request ended {-self.hold_left_s * 1000:.0f} ms before the waves were sent"
        for who, firsts in (
            ("this suite's", [r.start_s + r.ttft_s for r in self.ours.records if r.ttft_s is not None]),
            ("sglang.bench_serving's", [r.ttft_s for r in self.theirs.records if r.ttft_s is not None]),
        ):
            if not firsts:
                return f"{who} wave got no first token"
            spread = max(firsts) - min(firsts)
            if spread > max(LOCK_STEP_TOLERANCE * statistics.median(firsts), LOCK_STEP_MIN_S):
                return f"{who} wave got its first tokens {spread * 1000:.0f} ms apart (more than one engine step)"
        return None


class _Hold:
    """One request of ``prompt_tokens`` fresh random token ids that keeps the engine busy while the waves land.

    Token ids, not text: a random text re-tokenizes to a different length, and one past ``max_model_len`` is
    refused. The client and body are made up front: at send time only the request itself is left to do."""

    def __init__(self, ctx: LoadContext, prompt_tokens: int) -> None:
        import httpx

        vocab = load_tokenizer(str(ctx.tokenizer_spec)).random_vocab()
        rng = random.SystemRandom()  # fresh each time: a cached prefix would make the hold short
        engine = ctx.engine
        body = {
            "model": engine.model,
            "prompt": [rng.choice(vocab) for _ in range(prompt_tokens)],
            "max_tokens": 1,
            "stream": False,
        }
        self._body = encode_body(body)
        self._url = engine.base_url + "/v1/completions"
        self._client = httpx.Client(
            headers={**auth_headers(engine.api_key), "Content-Type": "application/json"}, timeout=HOLD_TIMEOUT_S
        )
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.done_wall: float | None = None

    def send_at(self, wall: float) -> None:
        self._thread = threading.Thread(target=self._send, args=(wall,), name="dsbench-hold", daemon=True)
        self._thread.start()

    def _send(self, wall: float) -> None:
        import httpx

        time.sleep(max(0.0, wall - time.time()))
        try:
            response = self._client.post(self._url, content=self._body)
            self.done_wall = time.time()
            if response.status_code != 200:
                self.error = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> None:
        if self._thread is not None:
            self._thread.join(HOLD_TIMEOUT_S)
        self._client.close()


class _MainRunSignal:
    """The official tool's announced start, handed from its log reader to this suite's start gate."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.start_wall = 0.0
        self.our_start_wall = 0.0

    def announce(self, start_wall: float) -> None:
        self.start_wall = start_wall
        self._event.set()

    def gate(self, theirs: Future[LoadRun], wait_s: float, hold: _Hold | None) -> float:
        """Block until the official tool announces its main run; fail fast if it ends or never does."""
        deadline = time.monotonic() + wait_s
        while not self._event.wait(0.2):
            if theirs.done():
                theirs.result()  # raises the tool's own one-line error, if it failed
                raise ReferenceToolError(
                    f"sglang.bench_serving finished without printing {MAIN_RUN_MARKER!r}: this suite's client "
                    "cannot start with it (a different sglang version?)"
                )
            if time.monotonic() > deadline:
                raise ReferenceToolError(
                    f"sglang.bench_serving did not finish its warmup within {wait_s:g} s (no {MAIN_RUN_MARKER!r})"
                )
        if hold is not None:
            hold.send_at(self.start_wall - HOLD_LEAD_S)
        # ready too late: start now; the gap is the comparison's problem (lock_step_problem), not client lag
        self.our_start_wall = max(self.start_wall, time.time())
        return self.our_start_wall


def run_side_by_side(
    ctx: LoadContext,
    prompts: DatasetSpec,
    *,
    name: str,
    hold_tokens: int | None,
    start_wait_s: float = START_WAIT_S,
) -> SideBySide:
    """One wave of ``prompts`` from each client (this suite's and sglang.bench_serving), started together, with a
    hold request of ``hold_tokens`` tokens before them (None: no hold)."""
    options: dict[str, Any] = {
        "request_rate": float("inf"),
        "max_concurrency": prompts.num_prompts,
        "include_usage": False,
        # the same prompts from both clients and sglang's warm-up: no cache reset or salting for one of them
        "prefix_cache": "warm",
    }
    reference_cfg = workload_config(ctx, prompts, name=name, **options)
    hold = _Hold(ctx, hold_tokens) if hold_tokens else None
    signal = _MainRunSignal()
    with ThreadPoolExecutor(1, thread_name_prefix="dsbench-reference") as pool, contextlib.ExitStack() as stack:
        if hold is not None:
            stack.callback(hold.finish)
        theirs_future = pool.submit(
            run_sglang,
            reference_cfg,
            ctx.tokenizer_spec,
            ctx.results_dir,
            f"{name}-sglang",
            on_main_run=signal.announce,
        )
        ours_run = run_workload(
            ctx,
            prompts,
            name=f"{name}-dsbench",
            start=lambda: signal.gate(theirs_future, start_wait_s, hold),
            **options,
        )
        theirs_run = theirs_future.result()
    return SideBySide(
        ours_run,
        theirs_run,
        signal.our_start_wall - signal.start_wall,
        hold_error=hold.error if hold is not None else None,
        hold_left_s=hold.done_wall - signal.our_start_wall if hold is not None and hold.done_wall else None,
    )


@dataclass
class LockStepRounds:
    """The side-by-side rounds that were in lock step, and why each other one was discarded."""

    pairs: list[SideBySide]
    discarded: list[str]
    attempts: int


def run_lock_step_rounds(
    ctx: LoadContext, prompts: DatasetSpec, *, rounds: int, max_attempts: int, name: str, hold_tokens: int | None
) -> LockStepRounds:
    """Side-by-side rounds (fresh prompts each, the same for both clients) until ``rounds`` of them were in lock
    step or ``max_attempts`` ran; a round that was not (:meth:`SideBySide.lock_step_problem`) is recorded and
    run again."""
    done = LockStepRounds([], [], 0)
    while len(done.pairs) < rounds and done.attempts < max_attempts:
        attempt = done.attempts
        pair = run_side_by_side(
            ctx, replace(prompts, seed=prompts.seed + attempt + 1), name=f"{name}-{attempt}", hold_tokens=hold_tokens
        )
        problem = pair.lock_step_problem()
        if problem:
            done.discarded.append(f"round {attempt}: {problem}")
        else:
            done.pairs.append(pair)
        done.attempts += 1
    return done

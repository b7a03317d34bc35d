"""The fake engine's 'model': what it generates for a request, with each switchable fault applied.

Deterministic at temperature 0 (and with a seed), like a greedy engine; random otherwise. A chat answer is
``reasoning</think>\\n\\nanswer`` as DeepSeek-R1 writes it; tool calls, JSON output, stop strings, length
limits, ``ignore_eos``/``min_tokens`` and logprobs follow the OpenAI semantics unless a fault says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from pytest_dsbench.testing import fake_tokens as tok

_ARITH = re.compile(r"what is (-?\d+) ?(\+|\*|x|times|plus|minus|-) ?(-?\d+)\??", re.IGNORECASE)
_NO_STOP = "\x00"
_NEEDLE = re.compile(r"secret number is (\d+)", re.IGNORECASE)
_CITY = re.compile(r"\bin ([A-Z][a-z]+)")
_MULTIBYTE_WORDS = ("春天", "花开", "世界", "你好", "🌸", "Привет", "мир", "ελληνικά")


def filler(seed_text: str, n_chars: int, words: tuple[str, ...] | None = None) -> str:
    """Deterministic pseudo-text for a seed: words chosen by a hash, cut to ``n_chars``."""
    words = words or ("alpha", "beta", "gamma", "delta", "sigma", "omega", "kappa", "theta")
    digest = hashlib.sha256(seed_text.encode()).digest()
    out: list[str] = []
    i = 0
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(words[digest[i % len(digest)] % len(words)])
        i += 1
    return " ".join(out)[:n_chars]


def arithmetic_answer(question: str) -> str | None:
    """The fake knows arithmetic: 'What is 17 * 23?' -> '391'."""
    match = _ARITH.search(question)
    if not match:
        return None
    a, op, b = int(match.group(1)), match.group(2).lower(), int(match.group(3))
    value = a + b if op in ("+", "plus") else a - b if op in ("-", "minus") else a * b
    return str(value)


def instance_for(schema: Any) -> Any:
    """A small JSON value that validates against a simple JSON schema (what guided decoding would give)."""
    if not isinstance(schema, dict):
        return {}
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties") or {}
        keys = schema.get("required") or list(props)
        return {key: instance_for(props.get(key, {"type": "string"})) for key in keys}
    if kind == "array":
        return [instance_for(schema.get("items", {"type": "string"}))]
    if kind == "integer":
        return 2
    if kind == "number":
        return 2.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "Paris"


def string_matching(pattern: str) -> str:
    """The shortest-first string that fully matches ``pattern`` (literals, classes, groups, alternation and
    repeats: what the conformance checks' constraints use), as guided decoding would produce one."""
    import re._parser as sre_parse  # the regex parser of the standard library
    from re._constants import BRANCH, IN, LITERAL, MAX_REPEAT, MIN_REPEAT, RANGE, SUBPATTERN

    def walk(items: Any) -> str:
        out = []
        for op, arg in items:
            if op == LITERAL:
                out.append(chr(arg))
            elif op == IN:
                kind, value = arg[0]
                out.append(chr(value[0]) if kind == RANGE else chr(value) if kind == LITERAL else "0")
            elif op in (MAX_REPEAT, MIN_REPEAT):
                low, _, body = arg
                out.append(walk(body) * max(1, low))
            elif op == SUBPATTERN:
                out.append(walk(arg[-1]))
            elif op == BRANCH:
                out.append(walk(arg[1][0]))
            else:
                raise ValueError(f"the fake engine cannot generate {op} in {pattern!r}")
        return "".join(out)

    return walk(sre_parse.parse(pattern))


@dataclass
class Output:
    """One generated choice."""

    text: str
    finish_reason: str
    completion_tokens: int
    pieces: list[str]
    reasoning_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    stop_hit: str | None = None


@dataclass
class Request:
    """The parts of a validated request the model needs."""

    chat: bool
    prompt_text: str
    question: str
    max_tokens: int
    temperature: float
    seed: int | None
    stop: list[str]
    ignore_eos: bool
    min_tokens: int
    body: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)


class FakeModel:
    """Produces :class:`Output` for requests; holds the little state some faults need."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.previous_answer: str | None = None

    def has(self, fault: str) -> bool:
        return bool(self.config.has(fault))

    # -- the text the model 'wants' to write ----------------------------------------------------------------
    def answer(self, question: str) -> str:
        answer = self.config.answers.get(question.strip())
        if answer is not None and self.config.wrong_fraction > 0:
            bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10000 / 10000
            if bucket < self.config.wrong_fraction:
                answer = answer + "0"
        needle = _NEEDLE.search(question)
        if answer is None and needle and "what is the secret number" in question.lower():
            answer = needle.group(1)
        if answer is None:
            answer = arithmetic_answer(question)
        if answer is None:
            answer = filler(question, 40)
        if self.has("cross_talk"):
            previous, self.previous_answer = self.previous_answer, answer
            answer = previous if previous is not None else answer
        return str(answer)

    def tool_calls(self, req: Request) -> list[dict[str, Any]]:
        """The calls a DeepSeek model with a tool parser makes: ``auto`` calls a tool the question is about,
        ``required`` any tool, a named choice that tool, ``none`` nothing; one call per city asked about unless
        ``parallel_tool_calls`` is false."""
        tools = req.body.get("tools") or []
        choice = req.body.get("tool_choice", "auto")
        last_role = req.messages[-1].get("role") if req.messages else None
        if not tools or last_role == "tool" or (choice == "none" and not self.has("tool_choice_none_ignored")):
            return []
        named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        if (named and self.has("tool_choice_named_ignored")) or (
            choice == "required" and self.has("tool_choice_required_ignored")
        ):
            named, choice = None, "auto"
        question = req.question.lower()
        relevant = [t for t in tools if any(w in question for w in _tool_words(t))]
        if named:
            chosen = next((t for t in tools if t.get("function", {}).get("name") == named), tools[0])
        elif relevant or choice == "required" or self.has("tool_called_without_need"):
            chosen = (relevant or tools)[0]
        else:
            return []
        function = chosen.get("function", {})
        cities = _CITY.findall(req.question)
        parallel = (req.body.get("parallel_tool_calls") is not False or self.has("parallel_tool_calls_ignored")) and (
            not self.has("parallel_tool_calls_merged")
        )
        prefix = self.config.reasoning if self.has("reasoning_in_tool_arguments") else ""
        calls = []
        for number in range(max(1, len(cities)) if parallel else 1):
            arguments = instance_for(function.get("parameters", {"type": "object"}))
            if cities and isinstance(arguments, dict) and "city" in arguments:
                arguments["city"] = cities[number]
            call_id = "call_0" if self.has("tool_call_id_constant") else f"call_{random.getrandbits(40):x}"
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": function.get("name", "tool"), "arguments": prefix + json.dumps(arguments)},
                }
            )
        return calls

    def script(self, req: Request, index: int) -> tuple[str, list[dict[str, Any]]]:
        """The full text before max_tokens/stop, and the tool calls it encodes (chat only)."""
        top_k = req.body.get("top_k")
        temperature = 0.0 if top_k == 1 and not self.has("top_k_ignored") else req.temperature
        greedy = temperature == 0 or (req.seed is not None and not self.has("seed_ignored"))
        salt = "" if greedy else f"{random.random()}"
        if temperature == 0 and self.has("greedy_nondeterministic"):
            salt = f"{random.random()}"
        penalties = [req.body.get(k) or 0 for k in ("frequency_penalty", "presence_penalty")]
        if any(penalties) and not self.has("penalties_ignored"):
            salt += f"|penalised {penalties}"  # penalised sampling writes other text
        seed_text = f"{req.prompt_text}|{req.seed}|{'' if temperature == 0 else index}|{salt}"
        if not req.chat:
            multibyte = not req.prompt_text.isascii()
            return filler(seed_text, 60 if not multibyte else 30, _MULTIBYTE_WORDS if multibyte else None), []
        calls = self.tool_calls(req)
        reasoning = self.config.reasoning
        if salt:  # sampling varies the text from its first token on
            reasoning = f"{filler(seed_text, 8).capitalize()}. {reasoning}"
        if calls and self.has("tool_block_in_reasoning"):  # no </think> before the block: all of it is reasoning
            return f"{reasoning}{tok.render_tool_calls(calls)}", []
        if calls:
            return f"{reasoning}{tok.END_THINK}\n\n{tok.render_tool_calls(calls)}", calls
        last = req.messages[-1] if req.messages else {}
        structured: str | None = None
        if last.get("role") == "tool":
            answer = f"The weather is {tok.message_text(last.get('content'))}."
        else:
            structured = self.structured_answer(req.body)
            answer = structured or self.answer(req.question)
        if salt:
            answer = f"{answer} {filler(seed_text, 8)}"
        # a grammar takes over right after </think>: no free-text separator before a constrained answer
        separator = "" if structured else "\n\n"
        text = f"{reasoning}{tok.END_THINK}{separator}{answer}"
        if self.has("think_tag_in_content"):
            text = f"{tok.THINK}{text}"
        return text, []

    def structured_answer(self, body: dict[str, Any]) -> str | None:
        constrained = self.constrained_answer(body)
        if constrained is not None:
            return constrained
        fmt = body.get("response_format") or {}
        if self.has("ignore_response_format") or not isinstance(fmt, dict):
            return None
        if fmt.get("type") == "json_object":
            answer = '{"result": 2}'
        elif fmt.get("type") == "json_schema":
            instance = instance_for((fmt.get("json_schema") or {}).get("schema"))
            if self.has("json_schema_violated") and isinstance(instance, dict):
                instance = {key: "maybe" for key in instance}
            answer = json.dumps(instance)
        else:
            return None
        return answer[:-1] if self.has("json_truncated") else answer

    def constrained_answer(self, body: dict[str, Any]) -> str | None:
        """The answer under a regex or choice constraint, in any engine's parameters (vLLM
        ``structured_outputs``, SGLang ``regex``, LMDeploy ``regex_schema``)."""
        if self.has("ignore_constraints"):
            return None
        outputs: dict[str, Any] = body.get("structured_outputs") or {}
        fmt: dict[str, Any] = body.get("response_format") or {}
        if not isinstance(outputs, dict) or not isinstance(fmt, dict):
            return None
        if outputs.get("choice"):
            return str(outputs["choice"][0])
        regex = outputs.get("regex") or body.get("regex") or (
            fmt.get("regex_schema") if fmt.get("type") == "regex_schema" else None
        )
        return string_matching(str(regex)) if regex else None

    # -- length, stop, usage --------------------------------------------------------------------------------
    def generate(self, req: Request, index: int) -> Output:
        if self.has("long_prompt_empty_output") and tok.count(req.prompt_text) >= 0.85 * self.config.max_model_len:
            return Output("", "stop", 0, [])
        full, calls = self.script(req, index)
        if req.ignore_eos and not self.has("ignore_eos_ignored"):
            while tok.count(full) < req.max_tokens:
                full += " " + filler(full, 20)
        if req.min_tokens and not self.has("min_tokens_ignored"):
            while tok.count(full) < req.min_tokens:
                full += " " + filler(full, 10)
        pieces = self.apply_logit_bias(tok.tokenize(full), req.body.get("logit_bias"))
        finish = "tool_calls" if calls else "stop"
        budget = req.max_tokens
        if self.has("max_tokens_excludes_reasoning") and req.chat and tok.END_THINK in pieces:
            budget += pieces.index(tok.END_THINK) + 1
        stop_hit = None
        if req.stop and not self.has("stop_ignored"):
            kept, hit, needed = self.apply_stop(pieces, req.stop)
            if hit is not None and needed <= budget:
                pieces, stop_hit, finish, calls = kept, hit, "stop", []
        if stop_hit is None and len(pieces) > budget:
            pieces, finish, calls = pieces[:budget], "length", []
        if finish == "length" and self.has("empty_output_on_length"):
            pieces = []
        text = "".join(pieces)
        completion_tokens = len(pieces) + (1 if self.has("usage_off_by_one") else 0)
        if self.has("usage_counts_draft_tokens"):
            completion_tokens *= 2  # rejected speculative (MTP) drafts counted as generated
        reasoning_tokens = 0
        if req.chat:
            reasoning_part = text.split(tok.END_THINK)[0]
            reasoning_tokens = tok.count(reasoning_part.removeprefix(tok.THINK))
            if self.config.reasoning_usage_path == "reasoning_tokens" and tok.END_THINK in text:
                reasoning_tokens += 1  # SGLang counts </think> as a reasoning token
            if self.has("reasoning_tokens_exceed_completion"):
                reasoning_tokens = completion_tokens + 5
        finish = self.relabel(finish)
        return Output(text, finish, completion_tokens, pieces, reasoning_tokens, calls, stop_hit)

    def apply_logit_bias(self, pieces: list[str], logit_bias: Any) -> list[str]:
        """A bias of -100 bans a token: the model writes the next character instead."""
        if not isinstance(logit_bias, dict) or self.has("logit_bias_ignored"):
            return pieces
        banned = set()
        for key, value in logit_bias.items():
            try:
                if float(value) <= -100:
                    banned.add(int(key))
            except (TypeError, ValueError):
                continue
        return [chr(ord(p) + 1) if len(p) == 1 and tok.token_id(p) in banned else p for p in pieces]

    def relabel(self, finish: str) -> str:
        if finish == "length" and self.has("finish_reason_stop_on_length"):
            return "stop"
        if finish == "stop" and self.has("finish_reason_length_on_stop"):
            return "length"
        if finish == "stop" and self.has("finish_reason_nonstandard"):
            return "eos"
        return finish

    def apply_stop(self, pieces: list[str], stop: list[str]) -> tuple[list[str], str | None, int]:
        """Cut at the earliest stop string (never inside a special token).

        Returns the kept pieces, the matched string (``None`` when none matched) and how many tokens had to be
        generated to see the match (it only counts when that fits in max_tokens).
        """
        active = [s for s in stop if s]
        if self.has("stop_single_token_only"):
            active = [s for s in active if tok.count(s) == 1]
        if self.has("stop_list_first_only"):
            active = active[:1]
        flat = "".join(_NO_STOP * len(p) if len(p) > 1 and p in tok.SPECIALS else p for p in pieces)
        hits = [(flat.find(s), s) for s in active if s in flat]
        if not hits:
            return pieces, None, 0
        position, matched = min(hits)
        if len(matched) == 1 and self.has("stop_cuts_whole_token"):
            while position > 0 and flat[position - 1].isalnum():
                position -= 1  # LMDeploy stops on any vocab token containing the stop string
        match_end = position + len(matched)
        keep_chars = match_end if self.has("stop_string_in_output") else position
        kept: list[str] = []
        used = 0
        needed = 0
        for piece in pieces:
            if used < match_end:
                needed += 1
            if used < keep_chars:
                kept.append(piece[: keep_chars - used] if used + len(piece) > keep_chars else piece)
            used += len(piece)
        return kept, matched, needed

    # -- logprobs --------------------------------------------------------------------------------------------
    def logprob_entry(self, piece: str, position: int, top: int) -> dict[str, Any]:
        digest = hashlib.sha256(f"{piece}|{position}".encode()).digest()
        value = -round(0.01 + digest[0] / 1000, 4)
        if self.has("logprob_positive"):
            value = -value
        if self.has("logprobs_non_finite") and position == 0:
            value = float("-inf")
        alternatives = [c for c in "etaoinshrdlu" if c != piece][
            : top + (1 if self.has("top_logprobs_wrong_count") else 0)
        ]
        candidates = [{"token": piece, "logprob": value, "bytes": list(piece.encode())}]
        candidates += [
            {"token": c, "logprob": round(value - 1 - i, 4), "bytes": list(c.encode())}
            for i, c in enumerate(alternatives)
        ]
        wanted = top + (1 if self.has("top_logprobs_wrong_count") else 0)
        return {
            "token": piece,
            "logprob": value,
            "bytes": list(piece.encode()),
            "top_logprobs": candidates[:wanted],
        }

    def chat_logprobs(self, out: Output, top: int, start: int = 0) -> list[dict[str, Any]]:
        entries = [self.logprob_entry(p, start + i, top) for i, p in enumerate(out.pieces)]
        if self.has("logprobs_skip_reasoning") and tok.END_THINK in out.pieces:
            entries = entries[out.pieces.index(tok.END_THINK) + 1 :]
        return entries

    def completion_logprobs(self, out: Output, top: int, prompt_chars: int) -> dict[str, Any]:
        entries = [self.logprob_entry(p, i, top) for i, p in enumerate(out.pieces)]
        offsets = []
        position = prompt_chars
        for piece in out.pieces:
            offsets.append(position)
            position += len(piece)
        if self.has("completion_logprobs_misaligned"):
            offsets = offsets[:-1]
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{c["token"]: c["logprob"] for c in e["top_logprobs"]} for e in entries],
            "text_offset": offsets,
        }


def _tool_words(tool: dict[str, Any]) -> list[str]:
    """What a question must mention for ``auto`` to call the tool: 'get_weather' -> ['weather']."""
    name = str(tool.get("function", {}).get("name", ""))
    return [w for w in name.lower().split("_") if w and w not in ("get", "set", "tool")]

"""What every engine adapter provides: a launch command, readiness probes and a behaviour profile.

The behaviour profile records where engines legitimately differ from each other and from the OpenAI API (reference
api_conformance.md section 1), so checks can skip with a reason, assert the declared behaviour, or xfail known
upstream bugs strictly.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

from pytest_dsbench.engines.command import Flag, LaunchRequest, build_command
from pytest_dsbench.engines.registry import ENGINE_NAMES, valid_engines

DecodeLine = tuple[int, float, str]
"""One decode-throughput log line read: (running requests, generation tok/s, which format wrote it)."""


def version_matches(version: str | None, versions: str) -> bool:
    """``version`` is in the PEP 440 specifier set ``versions`` ("" = every version; an unknown or unparsable
    version matches only "")."""
    if not versions:
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(versions).contains(Version(version or ""), prereleases=True)
    except (InvalidVersion, InvalidSpecifier):
        return False


@dataclass(frozen=True)
class KnownFailure:
    """An upstream bug a check is expected to hit on this engine (becomes ``xfail(strict=True)``).

    ``versions`` limits it to the engine versions that have the bug (PEP 440 specifiers, e.g. ``"==0.20.*"``);
    such a failure is judged when the check runs, once the engine's version is known, and only a failure whose
    message contains ``match`` is the known bug: any other failure of the check still fails it.
    ``kills_server``: the check's request crashes the engine, so it is not sent (``xfail(run=False)``): the
    tests after it would otherwise all fail on a dead server."""

    check_id: str
    reason: str
    url: str
    versions: str = ""
    match: str = ""
    kills_server: bool = False

    def __post_init__(self) -> None:
        if self.kills_server and self.versions:
            raise ValueError(f"known failure {self.check_id}: kills_server is decided at collection, before the "
                             f"engine's version is known, so it cannot be limited to versions {self.versions!r}")


@dataclass(frozen=True)
class VersionBehaviour:
    """Where some engine versions behave differently from the profile: the profile fields they change."""

    versions: str
    changes: tuple[tuple[str, Any], ...]
    reason: str


SERVER_METRIC_NAMES = (
    "requests_running", "requests_waiting", "kv_cache_usage", "preemptions", "prefix_cache_queries",
    "prefix_cache_hits", "prefix_cache_hit_rate", "spec_drafts", "spec_draft_tokens", "spec_accepted_tokens",
    "spec_acceptance_rate", "spec_acceptance_length", "prompt_tokens", "generation_tokens",
)
"""The suite's names for what engines expose at /metrics: running and waiting (queued) requests, KV-cache usage
(fraction), preemptions, prefix-cache queried and hit tokens (or a hit-rate gauge), speculative-decoding drafts,
draft tokens and accepted tokens (or acceptance gauges), prompt and generation tokens."""


@dataclass(frozen=True)
class ServerMetric:
    """Where one of the suite's server metrics (:data:`pytest_dsbench.load.server_metrics.SERVER_METRICS`) is
    in an engine's /metrics: the exposed sample names (the first one present is read; later ones are other
    versions' names), whether it is a counter (its increase over a run counts) or a gauge (its level), and how
    samples of several label sets (DP engines, ranks) combine."""

    names: tuple[str, ...]
    kind: Literal["counter", "gauge"]
    combine: Literal["sum", "max", "mean"] = "sum"


_NOT_BY_VERSION = frozenset({"features", "known_failures", "version_behaviours", "launch_features"})
"""Profile fields read at collection, before the engine's version is known: a version cannot change them."""


@dataclass(frozen=True)
class EngineBehaviour:
    """Declared behaviour of one engine's OpenAI-compatible server."""

    reasoning_field: Literal["reasoning", "reasoning_content"]
    reasoning_usage_path: Literal["completion_tokens_details.reasoning_tokens", "reasoning_tokens"]
    reasoning_count_includes_end_tag: bool
    error_envelope: Literal["nested", "flat"]
    validates_model: bool
    validates_prompt_plus_max_tokens: bool
    multi_token_stop: bool
    stream_options_without_stream_rejected: bool
    role_on_every_delta: bool
    tokenize_api: Literal["vllm", "sglang", "lmdeploy_encode"] | None
    metrics_prefix: str | None
    tool_parser: str | None
    min_tokens_param: Literal["min_tokens", "min_new_tokens"] | None
    routed_experts: bool
    decode_log_format: str
    """The registered engine whose decode-throughput log lines this server writes (its ``logformat`` module)."""
    known_failures: tuple[KnownFailure, ...] = ()
    features: frozenset[str] = field(default_factory=frozenset)
    version_behaviours: tuple[VersionBehaviour, ...] = ()
    #: How a request constrains the output to a regex or a choice: vLLM's ``structured_outputs``, SGLang's
    #: top-level ``regex``, LMDeploy's ``response_format`` ``regex_schema``; None: not supported.
    constraint_params: Literal["structured_outputs", "top_level_regex", "regex_schema"] | None = None
    #: Completion logprobs carry real ``text_offset`` values (SGLang sends -1: "not supported yet").
    text_offsets: bool = True
    #: ``echo=true`` on /v1/completions puts the prompt before the text (LMDeploy 0.18 accepts and ignores it).
    echo_honoured: bool = True
    #: Context tokens the server keeps back beyond the one a reply needs: the longest prompt it serves with
    #: ``max_tokens=1`` is ``max_model_len - 1 - context_reserved_tokens`` (SGLang 0.5.17: 6, its scheduler's
    #: ``max_req_input_len = context_len - 1 - 5``).
    context_reserved_tokens: int = 0
    #: finish_reason when the eos is the last token max_tokens allows: ``stop`` (OpenAI, vLLM); SGLang 0.5.17
    #: checks the length first (managers/schedule_batch.py Req.update_finish_state) and answers ``length``.
    eos_at_max_tokens_reason: Literal["stop", "length"] = "stop"
    #: The chat template sees the server's re-serialisation of ``tools``, not the request's JSON (SGLang 0.5.17:
    #: pydantic ``Tool.model_dump()``, keys reordered, ``strict: false`` added, and an empty system message
    #: inserted), so a prompt differs from vLLM's byte for byte: legal, but the fixture model, trained on the
    #: request's own JSON, cannot answer it.
    tool_prompt_reserialised: bool = False
    #: The suite's server-metric names -> where the engine's /metrics has them (the engine package's
    #: ``servermetrics`` module); empty: nothing is read.
    server_metrics: Mapping[str, ServerMetric] = field(default_factory=dict)
    #: ``POST`` path that empties the engine's prefix cache between load runs (vLLM ``/reset_prefix_cache``,
    #: SGLang ``/flush_cache``); None: the engine has none, and cold runs salt their prompts instead.
    prefix_cache_reset_path: str | None = None
    #: Features a server has only when it is launched with these flags (``(feature, (flag, ...))``): vLLM parses
    #: DeepSeek tool calls only with ``--enable-auto-tool-choice --tool-call-parser``. The suite knows the flags
    #: of an engine it launches; an attached server is taken not to have them.
    launch_features: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: The flag that names the tool parser (its value becomes ``tool_parser`` of a launched engine).
    tool_parser_flag: str | None = None

    def __post_init__(self) -> None:
        unknown_metrics = sorted(set(self.server_metrics) - set(SERVER_METRIC_NAMES))
        if unknown_metrics:
            raise ValueError(f"server_metrics names {', '.join(unknown_metrics)}, not server metrics of the suite; "
                             f"valid names: {', '.join(SERVER_METRIC_NAMES)}")
        if self.decode_log_format not in ENGINE_NAMES:
            raise ValueError(f"decode_log_format {self.decode_log_format!r} is not a registered engine; valid "
                             f"values: {valid_engines()} (pytest_dsbench/engines/registry.py)")
        fields = {f.name for f in dataclasses.fields(self)} - _NOT_BY_VERSION
        for behaviour in self.version_behaviours:
            unknown = sorted({name for name, _ in behaviour.changes} - fields)
            if unknown:
                raise ValueError(f"version behaviour {behaviour.versions!r} changes {', '.join(unknown)}, which a "
                                 f"version cannot change (valid: {', '.join(sorted(fields))})")

    def known_failure(self, check_id: str, version: str | None = None) -> KnownFailure | None:
        """The upstream bug ``check_id`` is expected to hit on this engine: with no ``version``, only bugs of
        every version (what collection can know); with one, the bugs of that version too."""
        for kf in self.known_failures:
            if kf.check_id == check_id and (not kf.versions or version_matches(version, kf.versions)):
                return kf
        return None

    def for_launch(self, args: Sequence[str] | None) -> EngineBehaviour:
        """This profile for a server launched with ``args`` (None: attached, flags unknown): plus each launch
        feature whose flags are all given, and the tool parser the flags name."""
        if args is None:
            return self
        arguments = list(args)
        added = {feature for feature, flags in self.launch_features if all(flag in arguments for flag in flags)}
        parser = self.tool_parser
        if self.tool_parser_flag in arguments and arguments.index(self.tool_parser_flag) + 1 < len(arguments):
            parser = arguments[arguments.index(self.tool_parser_flag) + 1]
        if not added - self.features and parser == self.tool_parser:
            return self
        return replace(self, features=self.features | added, tool_parser=parser)

    def for_version(self, version: str | None) -> EngineBehaviour:
        """This profile as ``version`` of the engine behaves (unknown versions: the profile as declared)."""
        changes: dict[str, Any] = {}
        for behaviour in self.version_behaviours:
            if version_matches(version, behaviour.versions):
                changes.update(behaviour.changes)
        return replace(self, **changes) if changes else self


class EngineAdapter:
    """Base class of the vLLM, SGLang and LMDeploy adapters.

    An adapter is mostly data: ``entry`` (what follows the interpreter on the command line) and ``flags`` (the
    declarative flag table that :func:`pytest_dsbench.engines.command.build_command` renders)."""

    name: str = ""
    display_name: str = ""
    behaviour: EngineBehaviour
    extra: str = ""
    health_path = "/health"
    #: Its CPU build serves the embedded fixture model, so it launches without ``--model``.
    serves_embedded_model = False
    entry: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()
    #: Environment the suite's launch always gives this engine (the profile's and the user's win over it).
    launch_env: ClassVar[Mapping[str, str]] = {}

    def launch_command(self, request: LaunchRequest) -> list[str]:
        """The full command that starts this engine's OpenAI-compatible server."""
        return build_command(request, self.name, self.entry, self.flags)

    def version_probe(self) -> list[str]:
        """Python code run with the engine's interpreter to print its version (start mode)."""
        return ["-c", f"import importlib.metadata as m; print(m.version({self.distribution()!r}))"]

    def distribution(self) -> str:
        return self.name

    def eplb_env(self, mode: str, base_env: Mapping[str, str]) -> dict[str, str]:
        """The engine's own switch for the EPLB routing patch (its plugin allowlist, strategy or shim): what
        :func:`pytest_dsbench.eplb.launch.eplb_launch_settings` adds to the ``DSBENCH_EPLB_*`` variables.
        It is ``launch_env`` of the engine package's ``eplb`` module, imported only when a patch is asked for."""
        launch_env: Callable[[str, Mapping[str, str]], dict[str, str]] = self._module("eplb").launch_env
        return launch_env(mode, base_env)

    def parse_decode_line(self, line: str) -> DecodeLine | None:
        """One of this engine's decode-throughput log lines read (None for any other line): ``parse_decode_line``
        of the engine package's ``logformat`` module."""
        parse: Callable[[str], DecodeLine | None] = self._module("logformat").parse_decode_line
        return parse(line)

    def _module(self, name: str) -> ModuleType:
        """A module of this engine's package (``pytest_dsbench.engines.<name>.<module>``), imported on use."""
        return importlib.import_module(f"pytest_dsbench.engines.{self.name}.{name}")


@dataclass
class EngineInfo:
    """The engine under test as the fixtures and reports see it."""

    name: str
    version: str
    base_url: str
    model: str
    model_path: str | None
    tokenizer_path: str | None
    max_model_len: int | None
    behaviour: EngineBehaviour
    mode: Literal["start", "attach"]
    log_paths: tuple[Path, ...] = ()
    launch_command: tuple[str, ...] = ()
    api_key: str | None = None
    eplb_mode: str = "off"
    eplb_counts_path: Path | None = None
    eplb_ranks: int | None = None

    def identity(self) -> dict[str, object]:
        """Identity recorded in the report header and every stored result (never the API key)."""
        return {
            "engine": self.name,
            "engine_version": self.version,
            "model": self.model,
            "model_path": self.model_path,
            "max_model_len": self.max_model_len,
            "mode": self.mode,
            "base_url": self.base_url,
            "eplb": self.eplb_mode,
        }

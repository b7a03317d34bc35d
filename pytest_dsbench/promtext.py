"""The suite's own parser of the Prometheus text exposition format (version 0.0.4), what engines serve at /metrics.

Why its own: the engines' /metrics is read during every load run (:mod:`pytest_dsbench.load.server_metrics`),
and the suite must neither depend on ``prometheus_client`` nor misread a sample because a label value holds a
comma or an escaped quote. The format's rules (prometheus.io/docs/instrumenting/exposition_formats):

* lines end in ``\\n``; empty lines and leading/trailing blanks are ignored; tokens are separated by blanks or
  tabs;
* ``# HELP name text`` (text escapes ``\\\\`` and ``\\n``) and ``# TYPE name type`` (counter, gauge,
  histogram, summary, untyped); any other line starting with ``#`` is a comment. One TYPE line per name, before
  the name's first sample (two TYPE lines for one name, or a TYPE after its samples, is an error);
* a sample is ``name[{label="value",...}] value [timestamp]``: label values escape ``\\\\``, ``\\"`` and
  ``\\n``; a trailing comma inside the braces is allowed; the value is a float, ``NaN``, ``+Inf`` or ``-Inf``;
  the timestamp an integer (ms since the epoch). A label name may not repeat within one sample;
* a histogram ``x`` has samples ``x_bucket{le="..."}`` (``le="+Inf"`` included), ``x_sum`` and ``x_count``; a
  summary ``x{quantile="..."}``, ``x_sum`` and ``x_count``. Samples are grouped under the family whose TYPE line
  names them (``prometheus_client`` writes a counter's TYPE under its ``_total`` name).

OpenMetrics' ``# EOF`` is read as a comment (tolerated: it is what an OpenMetrics server ends with). Anything
else that breaks these rules raises :class:`PromParseError` naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

METRIC_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
_VALUE_WORDS = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}


class PromParseError(ValueError):
    """Text that is not valid Prometheus exposition format; the message names the line and what is wrong."""


@dataclass(frozen=True)
class Sample:
    """One sample line: its name, labels, value and optional timestamp (ms)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass
class Family:
    """A metric family: its TYPE (``untyped`` without a TYPE line), HELP text and samples."""

    name: str
    type: str = "untyped"
    help: str = ""
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Exposition:
    """A parsed /metrics page: families by name, in page order."""

    families: dict[str, Family] = field(default_factory=dict)

    def samples(self, name: str) -> list[Sample]:
        """Every sample called exactly ``name`` (any labels), whichever family it belongs to."""
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def value(self, name: str, how: str = "sum") -> float | None:
        """The samples called ``name`` combined over their label sets (``sum``, ``max`` or ``mean``; NaN
        samples left out), or None when the page has none."""
        values = [s.value for s in self.samples(name) if not math.isnan(s.value)]
        if not values:
            return None
        if how == "max":
            return max(values)
        if how == "mean":
            return sum(values) / len(values)
        return sum(values)


def _unescape(text: str, allowed: str, line_no: int) -> str:
    """Undo ``\\\\``, ``\\n`` and (label values) ``\\"`` escapes; any other escape is kept as written (the
    format's readers do the same)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in allowed:
            nxt = text[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        if c == "\\" and i + 1 == len(text):
            raise PromParseError(f"line {line_no}: text ends in a lone backslash")
        out.append(c)
        i += 1
    return "".join(out)


def _float(token: str, line_no: int) -> float:
    word = _VALUE_WORDS.get(token.lower())
    if word is not None:
        return word
    try:
        return float(token)
    except ValueError:
        raise PromParseError(f"line {line_no}: {token!r} is not a sample value (a float, NaN, +Inf or -Inf)") from None


def _labels(text: str, start: int, line_no: int) -> tuple[dict[str, str], int]:
    """Labels from ``text[start]`` (just after ``{``) to the closing ``}``; returns them and the index after it."""
    labels: dict[str, str] = {}
    i = start
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        match = _LABEL.match(text, i)
        if match is None:
            raise PromParseError(f"line {line_no}: expected a label name or '}}' at column {i + 1}")
        name = match.group()
        i = match.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            raise PromParseError(f"line {line_no}: expected '=' after label {name!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != '"':
            raise PromParseError(f"line {line_no}: the value of label {name!r} must be quoted")
        i += 1
        begin = i
        while i < n and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= n:
            raise PromParseError(f"line {line_no}: the value of label {name!r} has no closing quote")
        if name in labels:
            raise PromParseError(f"line {line_no}: label {name!r} appears twice")
        labels[name] = _unescape(text[begin:i], '\\"n', line_no)
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ",":
            i += 1
        elif i < n and text[i] != "}":
            raise PromParseError(f"line {line_no}: expected ',' or '}}' after label {name!r}")


def parse_sample(line: str, line_no: int = 1) -> Sample:
    """One sample line (no comment)."""
    match = _NAME.match(line)
    if match is None:
        raise PromParseError(f"line {line_no}: {line[:40]!r} does not start with a metric name")
    name = match.group()
    i = match.end()
    labels: dict[str, str] = {}
    rest = line[i:]
    if rest.lstrip(" \t").startswith("{"):
        i += len(rest) - len(rest.lstrip(" \t")) + 1
        labels, i = _labels(line, i, line_no)
    elif rest and rest[0] not in " \t":
        raise PromParseError(f"line {line_no}: unexpected {rest[0]!r} after metric name {name!r}")
    tokens = line[i:].split()
    if not 1 <= len(tokens) <= 2:
        raise PromParseError(f"line {line_no}: expected a value and an optional timestamp after {name!r}, got "
                             f"{len(tokens)} token(s)")
    timestamp: int | None = None
    if len(tokens) == 2:
        try:
            timestamp = int(tokens[1])
        except ValueError:
            raise PromParseError(f"line {line_no}: timestamp {tokens[1]!r} is not an integer") from None
    return Sample(name, labels, _float(tokens[0], line_no), timestamp)


def _family_of(name: str, families: dict[str, Family]) -> Family:
    """The family a sample called ``name`` belongs to: its own, or a histogram's/summary's for a suffixed name."""
    if name in families:
        return families[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in families and suffix in _SUFFIXES.get(families[base].type, ()):
            return families[base]
    family = families[name] = Family(name)
    return family


def parse(text: str) -> Exposition:
    """Parse a whole /metrics page (see the module docstring for the rules applied)."""
    page = Exposition()
    families = page.families
    typed: set[str] = set()
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].lstrip(" \t").split(None, 2)
            if len(parts) < 2 or parts[0] not in ("HELP", "TYPE"):
                continue  # a comment
            keyword, name = parts[0], parts[1]
            if _NAME.fullmatch(name) is None:
                raise PromParseError(f"line {line_no}: {name!r} is not a metric name")
            family = families.setdefault(name, Family(name))
            if keyword == "HELP":
                family.help = _unescape(parts[2] if len(parts) > 2 else "", "\\n", line_no)
                continue
            kind = parts[2].strip().lower() if len(parts) > 2 else ""
            if kind not in METRIC_TYPES:
                raise PromParseError(f"line {line_no}: unknown TYPE {kind!r} for {name!r}; valid: "
                                     f"{', '.join(METRIC_TYPES)}")
            if name in typed:
                raise PromParseError(f"line {line_no}: a second TYPE line for {name!r}")
            if family.samples:
                raise PromParseError(f"line {line_no}: TYPE of {name!r} after its samples")
            typed.add(name)
            family.type = kind
            continue
        sample = parse_sample(line, line_no)
        family = _family_of(sample.name, families)
        if family.type == "histogram" and sample.name.endswith("_bucket") and "le" not in sample.labels:
            raise PromParseError(f"line {line_no}: histogram bucket {sample.name!r} has no 'le' label")
        family.samples.append(sample)
    return page

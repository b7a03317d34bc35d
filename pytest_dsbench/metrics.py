"""Every metric the suite reports, defined once: name, unit, direction and definition.

Names carry their unit (``tpot_ms_mean``, ``output_tok_s``). The direction tells SLO and regression gates which
way is worse. Formulas follow sglang.bench_serving (reference bench_tools.md section (c)) so numbers match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower_is_better", "higher_is_better"]


@dataclass(frozen=True)
class Metric:
    """A metric's definition."""

    name: str
    unit: str
    direction: Direction
    definition: str

    def worse(self, new: float, old: float) -> bool:
        """True when ``new`` is worse than ``old`` in this metric's direction."""
        return new > old if self.direction == "lower_is_better" else new < old

    def change_pct(self, new: float, old: float) -> float:
        """Signed change in percent where positive always means worse."""
        if old == 0:
            return 0.0 if new == 0 else float("inf")
        raw = (new - old) / abs(old) * 100.0
        return raw if self.direction == "lower_is_better" else -raw


def _lat(name: str, definition: str) -> list[Metric]:
    return [Metric(f"{name}_ms_{stat}", "ms", "lower_is_better", f"{stat} of {definition}")
            for stat in ("mean", "median", "p90", "p95", "p99", "max", "std")]


_DEFINITIONS: list[Metric] = [
    *_lat("ttft", "time from sending the request to the first streamed token (first non-empty chunk)"),
    *_lat("tpot", "per request (e2e - ttft) / (output_tokens - 1), requests with more than one output token"),
    *_lat("itl", "gaps between consecutive streamed chunks, over all requests"),
    *_lat("e2e", "request latency from send to the last chunk"),
    Metric("output_tok_s", "tok/s", "higher_is_better", "sum of output tokens / benchmark duration"),
    Metric("input_tok_s", "tok/s", "higher_is_better", "sum of input tokens / benchmark duration"),
    Metric("total_tok_s", "tok/s", "higher_is_better", "(input + output tokens) / benchmark duration"),
    Metric("request_throughput_req_s", "req/s", "higher_is_better", "completed requests / duration"),
    Metric("qpm", "req/min", "higher_is_better", "completed requests per minute"),
    Metric("accuracy", "fraction", "higher_is_better", "fraction of samples scored correct"),
    Metric("error_rate", "fraction", "lower_is_better", "failed requests / all requests"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _DEFINITIONS}


def get(name: str) -> Metric:
    """The definition of ``name``; unknown names raise a KeyError listing close matches."""
    try:
        return METRICS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(METRICS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown metric {name!r}.{hint}") from None

"""The engine's own view of a load run: its Prometheus /metrics, scraped before warm-up and through the run.

Why: a client-side figure is only trustworthy when the server agrees about what happened during it. Queue
depth, running requests, KV-cache usage and preemptions tell whether a run measured the engine or its
admission limits; prefix-cache hits tell whether the prompts were really prefilled (vLLM issue 52884: up to
86 % inflation from repeated seeded runs); the speculative-decoding counters give MTP's acceptance (seed 004's
tp32-mtp deployment).

:class:`ServerMetricsProbe` scrapes once before the warm-up (the baseline), marks the start of the measured run
(:meth:`~ServerMetricsProbe.mark_measured_start`), samples every :data:`SAMPLE_INTERVAL_S` on a background
thread (each scrape with a timeout) and scrapes once more at the end. The engine's names come from its
behaviour's ``server_metrics`` map (``pytest_dsbench/engines/<name>/servermetrics.py``); a page is parsed by
:mod:`pytest_dsbench.promtext`. An engine without /metrics (or an attach-mode server that hides it) gives a
report with ``available = False`` and a note, never a failure.

The summary covers the measured run only (from the measured start to the end): counters as increases, gauges as
peak and mean, and the derived figures the suite declares in :mod:`pytest_dsbench.metrics`:
``preemptions``, ``requests_running_peak``, ``requests_waiting_peak``, ``kv_cache_usage_peak``,
``prefix_cache_hit_fraction`` (hit / queried prompt tokens), ``spec_decode_acceptance_rate`` (accepted / draft
tokens) and ``spec_decode_acceptance_length`` (1 + accepted tokens / drafts, vLLM's mean acceptance length);
engines that only have gauges for the last two (SGLang) give their mean.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dsbench import promtext
from pytest_dsbench._http import auth_headers, join

if TYPE_CHECKING:
    from pytest_dsbench.engines.base import ServerMetric

SAMPLE_INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 5.0

RUN_METRICS = (
    "preemptions",
    "requests_running_peak",
    "requests_waiting_peak",
    "kv_cache_usage_peak",
    "prefix_cache_hit_fraction",
    "spec_decode_acceptance_rate",
    "spec_decode_acceptance_length",
)
"""The declared metrics (:mod:`pytest_dsbench.metrics`) a report's summary can give, in report order."""


@dataclass(frozen=True)
class Snapshot:
    """One scrape: seconds since the probe started, and the server metrics it found (suite names)."""

    t_s: float
    values: dict[str, float]


def read_values(page: promtext.Exposition, names: Mapping[str, ServerMetric]) -> dict[str, float]:
    """The server metrics of ``names`` a page has (the first exposed name of each, combined over label sets)."""
    values: dict[str, float] = {}
    for metric, where in names.items():
        for source in where.names:
            value = page.value(source, where.combine)
            if value is not None:
                values[metric] = value
                break
    return values


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


@dataclass
class ServerMetricsReport:
    """What the engine's /metrics said about one run: the series, where the measured run starts, and a note."""

    available: bool
    series: list[Snapshot] = field(default_factory=list)
    measured_from: int = 0
    """Index in ``series`` of the snapshot taken when the measured run started (after warm-up)."""
    kinds: dict[str, str] = field(default_factory=dict)
    """Suite name -> ``counter`` / ``gauge`` for the metrics the engine maps."""
    note: str = ""
    failed_scrapes: int = 0
    cache_control: str = ""
    """How a cold run kept the prefix cache cold: ``reset``, ``salted`` or ``warm`` (the workload asked for it)."""

    @property
    def window(self) -> list[Snapshot]:
        return self.series[self.measured_from:]

    def increase(self, name: str) -> float | None:
        """A counter's increase over the measured run (None when the engine does not expose it)."""
        points = [s.values[name] for s in self.window if name in s.values]
        if len(points) < 2:
            return None
        return max(0.0, points[-1] - points[0])  # a counter that went down was reset: count from zero

    def gauge(self, name: str) -> list[float]:
        """A gauge's values through the measured run."""
        return [s.values[name] for s in self.window if name in s.values]

    def interval_ratios(self, num: str, den: str, offset: float = 0.0) -> list[float]:
        """``offset + d(num) / d(den)`` per scrape interval where ``den`` grew (per-interval samples)."""
        out: list[float] = []
        points = [s for s in self.window if num in s.values and den in s.values]
        for a, b in itertools.pairwise(points):
            d_den = b.values[den] - a.values[den]
            if d_den > 0:
                out.append(offset + (b.values[num] - a.values[num]) / d_den)
        return out

    def summary(self) -> dict[str, float]:
        """The declared run metrics the engine's counters and gauges give (see the module docstring)."""
        out: dict[str, float] = {}
        preempted = self.increase("preemptions")
        if preempted is not None:
            out["preemptions"] = preempted
        for gauge, metric in (("requests_running", "requests_running_peak"),
                              ("requests_waiting", "requests_waiting_peak"),
                              ("kv_cache_usage", "kv_cache_usage_peak")):
            values = self.gauge(gauge)
            if values:
                out[metric] = max(values)
        hits = _ratio(self.increase("prefix_cache_hits"), self.increase("prefix_cache_queries"))
        rate = self.gauge("prefix_cache_hit_rate")
        if hits is not None:
            out["prefix_cache_hit_fraction"] = hits
        elif rate:
            out["prefix_cache_hit_fraction"] = max(rate)
        accepted = self.increase("spec_accepted_tokens")
        acceptance = _ratio(accepted, self.increase("spec_draft_tokens"))
        per_draft = _ratio(accepted, self.increase("spec_drafts"))
        for metric, counted, gauge, offset in (
            ("spec_decode_acceptance_rate", acceptance, "spec_acceptance_rate", 0.0),
            ("spec_decode_acceptance_length", per_draft, "spec_acceptance_length", 1.0),
        ):
            values = [v for v in self.gauge(gauge) if v > 0]
            if counted is not None:
                out[metric] = offset + counted
            elif values:
                out[metric] = sum(values) / len(values)
        return out

    def samples(self, metric: str) -> list[float]:
        """Per-interval samples behind a summary metric (the regression gate's test runs on them)."""
        if metric == "spec_decode_acceptance_rate":
            return self.interval_ratios("spec_accepted_tokens", "spec_draft_tokens") or self.gauge(
                "spec_acceptance_rate")
        if metric == "spec_decode_acceptance_length":
            return self.interval_ratios("spec_accepted_tokens", "spec_drafts", 1.0) or self.gauge(
                "spec_acceptance_length")
        if metric == "prefix_cache_hit_fraction":
            return self.interval_ratios("prefix_cache_hits", "prefix_cache_queries") or self.gauge(
                "prefix_cache_hit_rate")
        gauge = metric.removesuffix("_peak")
        return self.gauge(gauge) if gauge != metric else []

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, stored with the run (history, report, the raw records' folder)."""
        start = self.series[self.measured_from].t_s if self.series else 0.0
        return {
            "available": self.available,
            "note": self.note,
            "cache_control": self.cache_control,
            "failed_scrapes": self.failed_scrapes,
            "interval_s": SAMPLE_INTERVAL_S,
            "kinds": self.kinds,
            "summary": self.summary(),
            "increases": {name: v for name, kind in self.kinds.items() if kind == "counter"
                          for v in [self.increase(name)] if v is not None},
            "series": [{"t_s": round(s.t_s - start, 3), **s.values} for s in self.window],
        }


class ServerMetricsProbe:
    """Scrapes an engine's /metrics before warm-up, at the measured start, every interval and at the end."""

    def __init__(
        self,
        base_url: str,
        names: Mapping[str, ServerMetric],
        *,
        api_key: str | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
        timeout_s: float = SCRAPE_TIMEOUT_S,
    ) -> None:
        self.url = join(base_url, "/metrics")
        self.names = names
        self.headers = auth_headers(api_key)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.report = ServerMetricsReport(available=False, kinds={k: v.kind for k, v in names.items()})
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self) -> Snapshot | None:
        """One scrape (None when the page could not be read; the first failure's reason becomes the note)."""
        import httpx

        try:
            reply = httpx.get(self.url, headers=self.headers, timeout=self.timeout_s)
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}")
            values = read_values(promtext.parse(reply.text), self.names)
        except (httpx.HTTPError, RuntimeError, promtext.PromParseError) as exc:
            with self._lock:
                self.report.failed_scrapes += 1
                if not self.report.note:
                    self.report.note = f"GET {self.url}: {type(exc).__name__}: {str(exc)[:200]}"
            return None
        snapshot = Snapshot(time.monotonic() - self._t0, values)
        with self._lock:
            self.report.series.append(snapshot)
        return snapshot

    def start(self) -> ServerMetricsProbe:
        """The baseline scrape (before warm-up); the background sampler runs only when it succeeded."""
        if not self.names:
            self.report.note = "the engine's behaviour maps no server metrics"
            return self
        if self.scrape() is None:
            self.report.note = f"no server metrics ({self.report.note}); the run is judged on client figures only"
            return self
        self.report.available = True
        self._thread = threading.Thread(target=self._sample, name="dsbench-server-metrics", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scrape()

    def mark_measured_start(self) -> None:
        """Scrape now and count the measured run from this snapshot."""
        if not self.report.available:
            return
        snapshot = self.scrape()
        with self._lock:
            series = self.report.series
            self.report.measured_from = next(
                (i for i, s in enumerate(series) if s is snapshot), max(0, len(series) - 1))

    def finish(self) -> ServerMetricsReport:
        """Stop the sampler, scrape once more and return the report."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + self.interval_s)
        if self.report.available:
            self.scrape()
        return self.report

"""Decode throughput per running batch size, from the client's own token timeline (seed 003 ali decode).

A request *decodes* from its first streamed text chunk (the prefill's token) to its last one. Over a run the
number of requests decoding, B(t), is a step function of those instants; the time where exactly B requests
decoded is that batch size's *decode time*, and every chunk arriving in it (after its request's first) is a token
emitted at batch size B (a chunk's tokens are its request's output tokens spread evenly over its chunks, as
:func:`pytest_dsbench.measures.window_output_tok_s` does: under MTP one chunk may carry several).

Decode tok/s at B = tokens emitted at B / decode time at B. For its interval the decode time at B, laid end to
end, is cut into slices of :data:`SLICE_S`; each slice's tok/s is one sample, and the figure seed 003 reports is
their median. This needs nothing from the engine: the engine's own log lines become a cross-check
(:mod:`pytest_dsbench.methods.ali`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pytest_dsbench.measures import RecordLike, output_len

SLICE_S = 0.1
"""Narrowest slice of decode time at one batch size that gives a sample."""
STEPS_PER_SLICE = 16
"""Decode steps a slice spans at least: a slice's token count is quantised by whole steps (B tokens each), so
with 16 steps its tok/s is within about 6 % of the rate and the median of slices within about 3 %; a CPU step of
85 ms makes the slices 1.4 s wide, a GPU step of 20 ms 0.32 s."""


@dataclass
class BatchDecode:
    """What the timeline says about one running batch size."""

    batch_size: int
    decode_s: float = 0.0
    tokens: float = 0.0
    slice_tok_s: list[float] = field(default_factory=list)
    slice_s: float = 0.0
    """Width of the slices behind ``slice_tok_s``."""

    @property
    def tok_s(self) -> float:
        """Tokens emitted at this batch size / the time spent at it."""
        return self.tokens / self.decode_s if self.decode_s > 0 else 0.0


def _steps(records: Sequence[RecordLike]) -> list[tuple[float, int]]:
    """(time, +1/-1) where a request starts or stops decoding, stops before starts at the same instant."""
    steps: list[tuple[float, int]] = []
    for r in records:
        if r.success and len(r.chunk_s) > 1:
            steps += [(r.chunk_s[0], +1), (r.chunk_s[-1], -1)]
    return sorted(steps)


def _tokens(records: Sequence[RecordLike]) -> list[tuple[float, float]]:
    """(arrival time, tokens) of every decode chunk (each request's chunks after its first), sorted by time."""
    out: list[tuple[float, float]] = []
    for r in records:
        if r.success and len(r.chunk_s) > 1:
            per_chunk = output_len(r) / len(r.chunk_s)
            out += [(t, per_chunk) for t in r.chunk_s[1:]]
    return sorted(out)


def decode_by_batch_size(runs: Iterable[Sequence[RecordLike]], slice_s: float = SLICE_S) -> dict[int, BatchDecode]:
    """Per running batch size B: decode time, tokens emitted and per-slice tok/s, pooled over ``runs`` (each a
    run's records; times are comparable only within one run)."""
    import numpy as np

    by_size: dict[int, BatchDecode] = {}
    arrivals: dict[int, list[tuple[float, float]]] = {}  # per B: (time on B's clock, tokens)
    for records in runs:
        steps = _steps(records)
        tokens = _tokens(records)
        if not steps:
            continue
        running, k = 0, 0
        for (t0, delta), (t1, _) in zip(steps, [*steps[1:], (steps[-1][0], 0)], strict=True):
            running += delta
            if running <= 0 or t1 <= t0:
                continue  # idle, or several requests starting/stopping at one instant
            start = k  # the tokens arriving in (t0, t1]: a request's last chunk belongs to the segment it ends
            while k < len(tokens) and tokens[k][0] <= t1:
                k += 1
            entry = by_size.setdefault(running, BatchDecode(running))
            times = np.fromiter((t for t, _ in tokens[start:k]), dtype=float, count=k - start)
            weights = np.fromiter((w for _, w in tokens[start:k]), dtype=float, count=k - start)
            clock = entry.decode_s + np.clip(times - t0, 0.0, None)  # this size's own clock, segments end to end
            entry.decode_s += t1 - t0
            entry.tokens += float(weights.sum())
            arrivals.setdefault(running, []).extend(zip(clock.tolist(), weights.tolist(), strict=True))
    for size, entry in by_size.items():
        step_s = entry.decode_s * size / entry.tokens if entry.tokens > 0 else 0.0  # B tokens per decode step
        wide = max(slice_s, STEPS_PER_SLICE * step_s)
        count = max(1, int(entry.decode_s / wide + 1e-9))  # decoded for less than a slice: one short slice
        width = entry.decode_s / count  # equal slices covering the whole decode time at this size
        sums = np.zeros(count)
        for t, w in arrivals.get(size, []):
            sums[min(count - 1, int(t // width))] += w
        entry.slice_tok_s = (sums / width).tolist()
        entry.slice_s = width
    return dict(sorted(by_size.items()))


__all__ = ["SLICE_S", "STEPS_PER_SLICE", "BatchDecode", "decode_by_batch_size"]

"""Percentiles and per-expert statistics of streamed samples, and the absolute thresholds."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from .stream import Sample


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation, as numpy's default (what vllm bench serve reports)."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Stats:
    requests: int
    errors: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tbt_p50_s: float | None
    tbt_p95_s: float | None
    decode_tps: float | None     # median over requests
    e2e_p50_s: float | None
    prompt_tokens: int
    output_tokens: int


def summarize(samples: Sequence[Sample]) -> Stats:
    ok = [s for s in samples if s.error is None and s.ttft_s is not None]
    ttfts = [s.ttft_s for s in ok if s.ttft_s is not None]
    itls = [x for s in ok for x in s.itls_s]
    tps = [s.decode_tps for s in ok if s.decode_tps]
    return Stats(
        requests=len(samples), errors=len(samples) - len(ok),
        ttft_p50_s=percentile(ttfts, 50), ttft_p95_s=percentile(ttfts, 95),
        tbt_p50_s=percentile(itls, 50), tbt_p95_s=percentile(itls, 95),
        decode_tps=statistics.median(tps) if tps else None,
        e2e_p50_s=percentile([s.e2e_s for s in ok], 50),
        prompt_tokens=sum(s.prompt_tokens for s in ok), output_tokens=sum(s.output_tokens for s in ok),
    )


def check_thresholds(expert: str, st: Stats, thr: Mapping[str, float]) -> list[str]:
    """One line per missed budget, naming the expert and the figure."""
    misses = []
    if st.errors:
        misses.append(f"{expert}: {st.errors} of {st.requests} requests failed")
    for key, val, op in (("ttft_p50_s", st.ttft_p50_s, "max"), ("ttft_p95_s", st.ttft_p95_s, "max"),
                         ("tbt_p95_s", st.tbt_p95_s, "max"), ("decode_tps_min", st.decode_tps, "min")):
        if key not in thr:
            continue
        limit = float(thr[key])
        if val is None:
            misses.append(f"{expert}: {key} could not be measured (limit {limit:g})")
        elif op == "max" and val > limit:
            misses.append(f"{expert}: {key.replace('_s', '')} {val:.3f} s > budget {limit:g} s")
        elif op == "min" and val < limit:
            misses.append(f"{expert}: decode {val:.1f} tokens/s < floor {limit:g}")
    return misses

"""The regression gate of a rollout: a host's smoke report against its baseline.

A host fails when an expert's TTFT p50 or TBT p95 is worse than the baseline's by
more than a share (default 25 %), or when a coherence probe that passed in the
baseline fails now. A host without a baseline passes, and its report becomes the
baseline. The inventory's thresholds still apply as absolute limits (stats.check_thresholds);
this gate is relative. Pure: reading and writing the baseline file is the CLI's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_MAX_WORSE = 0.25
# The figures compared, and what "worse" means for each: higher.
GATED = (("ttft_p50_s", "TTFT p50"), ("tbt_p95_s", "TBT p95"))
# A figure fails only when it is also worse by more than this many seconds: on a
# small model a 70 ms TTFT that becomes 90 ms is +29 %, and within what one
# scheduler hiccup adds; the floors are a judgement, not a measured spread.
MIN_WORSE_S = {"ttft_p50_s": 0.05, "tbt_p95_s": 0.01}


@dataclass
class GateResult:
    passed: bool
    set_baseline: bool                      # no baseline yet: this report becomes it
    lines: list[str] = field(default_factory=list)


MAX_WORSE_MAX = 10.0


def check_max_worse(max_worse: float) -> float:
    """The share itself: above 0 and at most 10 (0.25 is 25 %)."""
    if not 0 < max_worse <= MAX_WORSE_MAX:
        raise ValueError(f"max_worse: a share above 0 and at most 10 (0.25 is 25 %), got {max_worse}")
    return max_worse


def compare(report: Mapping[str, Any], baseline: Mapping[str, Any] | None,
            max_worse: float = DEFAULT_MAX_WORSE) -> GateResult:
    check_max_worse(max_worse)
    if baseline is None:
        return GateResult(True, True, ["GATE no baseline yet: this report becomes the baseline"])
    base = {e["expert_id"]: e for e in baseline.get("experts", [])}
    lines: list[str] = []
    ok_lines: list[str] = []
    failed = False
    for e in report.get("experts", []):
        eid = e["expert_id"]
        b = base.get(eid)
        if b is None:
            lines.append(f"GATE {eid}: no baseline for this expert; reset the baseline to include it")
            continue
        for key, label in GATED:
            now, then = e.get(key), b.get(key)
            if now is None or then is None or then <= 0:
                continue  # a folded host reports no figures; answers are still gated below
            worse = now / then - 1
            if worse > max_worse and now - then > MIN_WORSE_S[key]:
                failed = True
                lines.append(f"GATE FAIL {eid}: {label} {now * 1000:.0f} ms against baseline "
                             f"{then * 1000:.0f} ms (+{worse:.0%}, limit +{max_worse:.0%} and "
                             f"+{MIN_WORSE_S[key] * 1000:.0f} ms)")
            else:   # the decision shows both values when it passes too (after any FAIL line)
                ok_lines.append(f"GATE ok {eid}: {label} {now * 1000:.0f} ms against baseline "
                                f"{then * 1000:.0f} ms ({worse:+.0%})")
        for name, p in (e.get("probes") or {}).items():
            if not p.get("ok") and (b.get("probes") or {}).get(name, {}).get("ok"):
                failed = True
                lines.append(f"GATE FAIL {eid}: coherence probe '{name}' passed in the baseline and fails now "
                             f"({p.get('why')})")
    lines += ok_lines
    if not failed:
        lines.append(f"GATE pass: no expert worse than its baseline by more than {max_worse:.0%}")
    return GateResult(not failed, False, lines)

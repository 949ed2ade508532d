#!/usr/bin/python3
"""The admission gate of lazy experts: max_loaded_experts, enforced at run time.

The plan checks memory for the most experts that may run together: every
preloaded expert plus the largest lazy ones that fit in max_loaded_experts.
That only holds if no more than max_loaded_experts ever run. A lazy expert
starts on demand (its socket's first connection), so each lazy expert unit runs
this first, as a privileged ExecStartPre= (it may stop another unit):

    llmhost-admit --config /etc/llmhost/admission.json --expert ID

- room left (fewer than max_loaded_experts experts active or starting): admit;
- full: stop the least recently used *idle lazy* expert (no request in flight
  at the front door; the longest since its last request), then admit. Its
  socket keeps listening, so it loads again on its next request;
- full and nothing idle to stop: refuse (exit 1). The unit does not start, the
  front door answers that request with an OpenAI-style 503 saying why, and no
  expert is started that the memory plan did not count on: nothing is left for
  the kernel's OOM killer to choose.

Preloaded experts are never stopped. Decisions are serialised with a lock, and a
starting expert counts as loaded, so two lazy experts requested at once cannot
both take the last place. Stdlib only: shipped to the host with the probe.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

LOCK = "/run/llmhost-admit.lock"
LOADED_STATES = ("active", "activating", "reloading", "deactivating")


def unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}.service"


def proxy_unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}-proxy.service"


@dataclass(frozen=True)
class Usage:
    in_flight: int             # requests at the front door now
    idle_s: float              # seconds since its last request began (large when never)


@dataclass(frozen=True)
class Decision:
    admit: bool
    evict: str | None
    why: str


def decide(me: str, experts: Sequence[Mapping[str, Any]], max_loaded: int, states: Mapping[str, str],
           usage: Mapping[str, Usage]) -> Decision:
    """Pure: admit `me`, evict whom, or refuse, from unit states and front door usage."""
    loaded = [e for e in experts if e["expert_id"] != me and states.get(e["expert_id"]) in LOADED_STATES]
    if len(loaded) < max_loaded:
        return Decision(True, None, f"{len(loaded)} of {max_loaded} loaded: room for {me}")
    idle = [e["expert_id"] for e in loaded
            if not e.get("preload", True) and states.get(e["expert_id"]) == "active"
            and usage.get(e["expert_id"], Usage(0, 1e9)).in_flight == 0]
    if not idle:
        return Decision(False, None, (
            f"{len(loaded)} of max_loaded_experts {max_loaded} experts are loaded "
            f"({', '.join(e['expert_id'] for e in loaded)}) and no lazy one is idle; retry when one is"))
    lru = max(idle, key=lambda x: (usage.get(x, Usage(0, 1e9)).idle_s, x))
    return Decision(True, lru, f"{len(loaded)} of {max_loaded} loaded: stopping idle {lru} "
                               f"(last request {usage.get(lru, Usage(0, 1e9)).idle_s:.0f} s ago) for {me}")


_METRIC = re.compile(r'^(haproxy_backend_(?:current_sessions|last_session_seconds))\{[^}]*proxy="be_([^"]+)"[^}]*\}\s+(\S+)')


def parse_haproxy_metrics(text: str) -> dict[str, Usage]:
    """Per expert from HAProxy's Prometheus endpoint: sessions now, seconds since the last."""
    cur: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            (cur if m.group(1).endswith("current_sessions") else last)[m.group(2)] = float(m.group(3))
    # HAProxy reports -1 for "never"
    return {b: Usage(int(cur.get(b, 0)), 1e9 if last.get(b, -1) < 0 else last[b]) for b in set(cur) | set(last)}


def frontdoor_usage(url: str, timeout: float = 2.0) -> dict[str, Usage]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return parse_haproxy_metrics(r.read().decode("utf-8", "replace"))
    except OSError:
        # No front door numbers (it is down, so nothing is in flight through it): lazy
        # experts count as idle; stopping one is safe, it reloads on its next request.
        return {}


def unit_states(expert_ids: Sequence[str], run: Callable[..., Any] = subprocess.run) -> dict[str, str]:
    r = run(["systemctl", "show", "--property=ActiveState", "--value", *[unit(e) for e in expert_ids]],
            capture_output=True, text=True, check=False)
    values = r.stdout.split()  # one value per unit, in order (blank lines between units)
    return dict(zip(expert_ids, values))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llmhost-admit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="/etc/llmhost/admission.json")
    ap.add_argument("--expert", required=True)
    ap.add_argument("--frontdoor-metrics", default="http://127.0.0.1:8405/metrics")
    args = ap.parse_args(argv)
    try:
        cfg = json.loads(Path(args.config).read_text())
        experts = cfg["experts"]
        max_loaded = int(cfg["lazy_loading"]["max_loaded_experts"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{args.config}: cannot read the experts config ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ids = [e["expert_id"] for e in experts]
        d = decide(args.expert, experts, max_loaded, unit_states(ids), frontdoor_usage(args.frontdoor_metrics))
        print(("admitted: " if d.admit else "refused: ") + d.why, flush=True)
        if d.evict:
            r = subprocess.run(["systemctl", "stop", proxy_unit(d.evict), unit(d.evict)],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                print(f"refused: could not stop {d.evict}: {r.stderr.strip()}", flush=True)
                return 1
    return 0 if d.admit else 1


if __name__ == "__main__":
    sys.exit(main())

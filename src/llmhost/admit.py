#!/usr/bin/python3
"""The admission gate of lazy experts: max_loaded_experts, enforced at run time.

The plan checks memory for the most experts that may run together: every
preloaded expert plus the largest lazy ones that fit in max_loaded_experts.
That only holds if no more than max_loaded_experts ever run. A lazy expert
starts on demand: its socket's first connection starts its proxy service, and
that service runs this twice.

`llmhost-admit gate --expert ID` (ExecStartPre=+, privileged), under a lock:
- room left (fewer than max_loaded_experts experts active or starting): start
  the expert's model unit and wait through its readiness gate;
- full: stop the least recently used *idle lazy* expert (no request in flight at
  the front door; the longest since its last request), then start this one. The
  stopped one's socket keeps listening, so it loads again on its next request;
- full and nothing idle to stop: refuse. The model is not started, and the
  reason is left for the front step.
Preloaded experts are never stopped. The lock is held until the model is up, so
two lazy experts requested at once load one after the other, and the second
sees the first as busy.

`llmhost-admit front --expert ID --backend PORT --idle S` (the proxy's ExecStart):
when the model answers on PORT, become systemd-socket-proxyd (same PID, same
socket); when it does not (refused, or it failed to load), answer each waiting
connection with an HTTP 503 whose JSON says why, and exit. Answering matters: a
socket whose service ends with connections still queued is triggered again at
once, and systemd gives up on it after a few rounds.

Stdlib only: shipped to the host as one script.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

LOCK = "/run/llmhost-admit.lock"
REASONS = "/run/llmhost-admit"      # <expert>.reason: why its last start was refused
PROXYD = "/lib/systemd/systemd-socket-proxyd"
LOADED_STATES = ("active", "activating", "reloading", "deactivating")


def unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}.service"


def proxy_unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}-proxy.service"


@dataclass(frozen=True)
class Usage:
    in_flight: int             # requests at the front door now
    idle_s: float              # seconds since its last request began (large when never)


UNSEEN = Usage(0, 1e9)   # no front door numbers for it: nothing in flight, no recent request


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
            and usage.get(e["expert_id"], UNSEEN).in_flight == 0]
    if not idle:
        return Decision(False, None, (
            f"{len(loaded)} of max_loaded_experts {max_loaded} experts are loaded "
            f"({', '.join(e['expert_id'] for e in loaded)}) and no lazy one is idle; retry when one is"))
    lru = max(idle, key=lambda x: (usage.get(x, UNSEEN).idle_s, x))
    return Decision(True, lru, f"{len(loaded)} of {max_loaded} loaded: stopping idle {lru} "
                               f"(last request {usage.get(lru, UNSEEN).idle_s:.0f} s ago) for {me}")


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


def reason_file(expert_id: str) -> str:
    return os.path.join(REASONS, f"{expert_id}.reason")


def write_reason(expert_id: str, why: str) -> None:
    os.makedirs(REASONS, mode=0o755, exist_ok=True)
    with open(reason_file(expert_id), "w") as f:
        f.write(why)
    os.chmod(reason_file(expert_id), 0o644)


def gate(cfg: Mapping[str, Any], me: str, metrics_url: str) -> int:
    experts = cfg["experts"]
    max_loaded = int(cfg["lazy_loading"]["max_loaded_experts"])
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ids = [e["expert_id"] for e in experts]
        d = decide(me, experts, max_loaded, unit_states(ids), frontdoor_usage(metrics_url))
        print(("admitted: " if d.admit else "refused: ") + d.why, flush=True)
        if not d.admit:
            write_reason(me, f"expert {me} was not loaded: {d.why}")
            return 0  # the front step answers the waiting requests with the reason
        if d.evict:
            subprocess.run(["systemctl", "stop", proxy_unit(d.evict), unit(d.evict)], check=False)
        try:
            os.unlink(reason_file(me))
        except FileNotFoundError:
            pass
        r = subprocess.run(["systemctl", "start", unit(me)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(f"{unit(me)} did not start: {r.stderr.strip()}", flush=True)
            write_reason(me, f"expert {me} failed to load (journalctl -u {unit(me)} on the host)")
    return 0


def refusal(why: str) -> bytes:
    body = json.dumps({"error": {"message": why, "type": "server_error", "code": "expert_not_loaded"}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 30\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def answer_waiting(listener: socket.socket, response: bytes, quiet_s: float = 0.5, limit_s: float = 10.0) -> int:
    """Accept every queued connection, read its request head, answer, close. Returns how many."""
    n = 0
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        ready, _, _ = select.select([listener], [], [], quiet_s)
        if not ready:
            break
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                conn.sendall(response)
            except OSError:
                pass
        n += 1
    return n


def listening_on(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def front(me: str, backend_port: int, idle_s: int) -> int:
    if listening_on(backend_port):
        os.execv(PROXYD, [PROXYD, f"--exit-idle-time={idle_s}s", f"127.0.0.1:{backend_port}"])
    try:
        why = open(reason_file(me)).read().strip()
    except OSError:
        why = f"expert {me} is not loaded (journalctl -u {unit(me)} on the host)"
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        print(f"refused: {why} (no socket passed: nothing to answer)", file=sys.stderr)
        return 0
    listener = socket.socket(fileno=3)
    n = answer_waiting(listener, refusal(why))
    print(f"answered {n} waiting request(s) with 503: {why}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llmhost-admit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="admit (evicting the LRU idle lazy expert) or refuse; start the model")
    g.add_argument("--config", default="/etc/llmhost/admission.json")
    g.add_argument("--expert", required=True)
    g.add_argument("--frontdoor-metrics", default="http://127.0.0.1:8405/metrics")
    f = sub.add_parser("front", help="become the socket proxy, or answer the waiting requests with the refusal")
    f.add_argument("--expert", required=True)
    f.add_argument("--backend", type=int, required=True, help="the model's loopback port")
    f.add_argument("--idle", type=int, required=True, help="proxy exits after this many idle seconds")
    args = ap.parse_args(argv)
    if args.cmd == "front":
        return front(args.expert, args.backend, args.idle)
    try:
        cfg = json.loads(Path(args.config).read_text())
        if not isinstance(cfg["experts"], list):
            raise TypeError("'experts' is not a list")
        int(cfg["lazy_loading"]["max_loaded_experts"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{args.config}: cannot read the admission config ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    return gate(cfg, args.expert, args.frontdoor_metrics)


if __name__ == "__main__":
    sys.exit(main())

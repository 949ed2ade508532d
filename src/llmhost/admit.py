#!/usr/bin/python3
"""The admission gate of lazy experts, and the front step that holds their clients.

The plan sets a memory budget (memory_threshold x the host's memory) and each
expert's planned memory (weights + KV cache + server overhead). A lazy expert
starts on demand: its socket's first connection starts its proxy service, which
runs this twice.

`llmhost-admit gate --expert ID` (ExecStartPre=+, privileged), under a lock (waited
for LOCK_WAIT_S at most: past it the start is refused, `expert_admission_busy`),
from the planned memory of the experts loaded or starting and the front door's usage
(each expert backend's sessions, from HAProxy's runtime API at --admin-socket):
- it fits (their memory plus its own within the budget, and fewer than
  max_loaded_experts loaded, an optional extra cap): start the expert's model unit;
- it does not: stop idle lazy experts (no request in flight at the front door),
  the cheapest to reload first (`evict_cost`, by default its planned weights: a
  slow-loading expert goes last), the longest idle first among equals, until it
  fits; never a preloaded expert, never a `pinned` one. The stopped ones' sockets
  keep listening, so each loads again on its next request;
- nothing idle frees enough: refuse, naming what is loaded and what it weighs. The
  reason is left for the front step.
A lazy expert whose usage is unknown (the runtime API unreachable, or the expert
missing from its answer) counts as busy: never stopped. When only stopping such an
expert would have made room, the refusal says so (`expert_usage_unknown`).
The gate does not wait for the model to load: the model's unit is "activating"
(counted, and never stopped) before the lock is released.

`llmhost-admit front --expert ID --backend PORT --idle S ...` (the proxy's
ExecStart, unprivileged) accepts the waiting clients at once and holds them while
the model loads: a streamed request gets its response head and an SSE comment
line every few seconds (so that a client with a 30 s idle timeout keeps waiting),
a plain one waits silently within the start budget; past --max-waiting held
requests, a new one gets 503 with Retry-After. When the model answers /health,
the held requests are relayed to it by a forked child and this process becomes
systemd-socket-proxyd (same PID, same socket) for every later connection. When
the start was refused or failed, every waiting client gets an OpenAI-style 503
that says why. Answering matters: a socket whose service ends with connections
still queued is triggered again at once, and systemd gives up on it after a few
rounds.

`llmhost-admit decide --expert ID [--loaded A,B --busy A --budget-gib N]`: what the
gate would do now (or in the situation given), changing nothing.

`llmhost-admit drain --expert ID` / `ready --expert ID` (root, the deploy of a changed
preloaded expert): through HAProxy's runtime API (--admin-socket), put the expert's
server in maintenance and wait until its sessions end (bounded by --timeout), or put
it back in service. No front door, or no such server in it: nothing to do, said.

Stdlib only: shipped to the host as one script.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

LOCK = "/run/llmhost-admit.lock"
# A start's decision waits this long at most for another's (then expert_admission_busy):
# within the front door's default server timeout, the start budget + 120 s, which also
# covers the gate's own waits below (60 + 10 s).
LOCK_WAIT_S = 45.0
DEACTIVATING_WAIT_S = 60.0          # the gate waits this long for a model still stopping
SETTLE_S = 10.0                     # and this long for a start to count as loaded
ADMIN_SOCKET = "/run/haproxy/admin.sock"
REASONS = "/run/llmhost-admit"      # <expert>.reason: why its last start was refused or failed
PROXYD = "/lib/systemd/systemd-socket-proxyd"
LOADED_STATES = ("active", "activating", "reloading", "deactivating")
KEEPALIVE_S = 5.0                   # an SSE comment to each held stream this often
HEAD_LIMIT = 65536
BODY_LIMIT = 8 * 1024 * 1024        # a held request larger than this is relayed as bytes, unparsed


def unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}.service"


def proxy_unit(expert_id: str) -> str:
    return f"llmhost-expert-{expert_id}-proxy.service"


@dataclass(frozen=True)
class Usage:
    in_flight: int             # requests at the front door now
    idle_s: float              # seconds since its last request began (large when never)
    known: bool = True         # False: no front door numbers for it (counted as busy)


UNKNOWN = Usage(0, 0.0, known=False)   # not in the front door's numbers: never taken for idle

# The refusals' codes (the 503's error code and the reason of llmhost_lazy_refused_requests_total)
NO_ROOM = "expert_not_loaded"
USAGE_UNKNOWN = "expert_usage_unknown"
ADMISSION_BUSY = "expert_admission_busy"


@dataclass(frozen=True)
class Decision:
    admit: bool
    evict: tuple[str, ...]
    why: str
    code: str = ""             # a refusal's code: NO_ROOM or USAGE_UNKNOWN


def _gib(e: Mapping[str, Any]) -> float:
    return float(e.get("memory_gib") or 0.0)


def _cost(e: Mapping[str, Any]) -> float:
    c = e.get("evict_cost")
    return float(c) if c is not None else _gib(e)


def _weighs(e: Mapping[str, Any], note: str = "") -> str:
    return f"{e['expert_id']} {_gib(e):.1f} GiB" + (f" ({note})" if note else "")


def decide(me: str, experts: Sequence[Mapping[str, Any]], states: Mapping[str, str],
           usage: Mapping[str, Usage], budget_gib: float | None = None,
           max_loaded: int | None = None, usage_problem: str = "") -> Decision:
    """Pure: admit `me` (stopping whom), or refuse, from planned memory, unit states
    and front door usage. budget_gib None: no memory budget (count only). An expert
    without usage (not in `usage`, or not known) counts as busy; usage_problem says
    why the front door's numbers are missing, for the refusal."""
    by_id = {e["expert_id"]: e for e in experts}
    mine = _gib(by_id.get(me, {}))
    budget = float("inf") if budget_gib is None else float(budget_gib)
    cap = len(experts) if max_loaded is None else int(max_loaded)
    loaded = [e for e in experts if e["expert_id"] != me and states.get(e["expert_id"]) in LOADED_STATES]
    used = sum(_gib(e) for e in loaded)

    def use(e: Mapping[str, Any]) -> Usage:
        return usage.get(e["expert_id"], UNKNOWN)

    def fits(mem: float, n: int) -> bool:
        return mem + mine <= budget + 1e-9 and n < cap

    def situation(mem: float, n: int) -> str:
        s = f"{mem + mine:.1f} of {budget:.1f} GiB" if budget_gib is not None else ""
        c = f"{n + 1} of max_loaded_experts {cap}" if max_loaded is not None and n >= cap else ""
        return ", ".join(x for x in (s, c) if x)

    if fits(used, len(loaded)):
        return Decision(True, (), f"room for {me}: " + (situation(used, len(loaded)) or f"{len(loaded)} loaded"))

    def stoppable(e: Mapping[str, Any]) -> bool:
        return not e.get("preload", True) and not e.get("pinned") and states.get(e["expert_id"]) == "active"

    def idle(e: Mapping[str, Any]) -> bool:
        return stoppable(e) and use(e).known and use(e).in_flight == 0

    def pick(eligible: Callable[[Mapping[str, Any]], bool]) -> tuple[list[Mapping[str, Any]], float, int]:
        candidates = sorted((e for e in loaded if eligible(e)),
                            key=lambda e: (_cost(e), -use(e).idle_s, e["expert_id"]))
        evict: list[Mapping[str, Any]] = []
        mem, n = used, len(loaded)
        for e in candidates:
            if fits(mem, n):
                break
            evict.append(e)
            mem, n = mem - _gib(e), n - 1
        return evict, mem, n

    evict, mem, n = pick(idle)
    if fits(mem, n):
        names = ", ".join(f"{_weighs(e)}, last request {use(e).idle_s:.0f} s ago, "
                          f"evict cost {_cost(e):g}" for e in evict)
        return Decision(True, tuple(e["expert_id"] for e in evict),
                        f"stopping idle {names} for {me}: {situation(mem, n)}")

    def note(e: Mapping[str, Any]) -> str:
        eid = e["expert_id"]
        if e.get("preload", True):
            return "preloaded"
        if e.get("pinned"):
            return "pinned"
        if states.get(eid) != "active":
            return "starting"
        if not use(e).known:
            return "usage unknown"
        return "busy" if use(e).in_flight else "idle"

    listing = ", ".join(_weighs(e, note(e)) for e in loaded) or "none"
    limit = (f"needs {mine:.1f} GiB and the budget is {budget:.1f} GiB with {used:.1f} GiB planned for the loaded "
             f"experts" if budget_gib is not None and used + mine > budget else
             f"max_loaded_experts {cap} are loaded")
    unknown = [e["expert_id"] for e in loaded if stoppable(e) and not use(e).known]
    # would taking the unknown ones for idle have made room? Then the unknown usage is why.
    if unknown and fits(*pick(lambda e: stoppable(e) and (not use(e).known or use(e).in_flight == 0))[1:]):
        why = usage_problem or "not in the front door's runtime API answer"
        return Decision(False, (), f"expert {me} {limit} ({listing}); the front door's usage of "
                                   f"{', '.join(unknown)} is unknown ({why}), so none is stopped: it may be "
                                   "serving; retry later", USAGE_UNKNOWN)
    return Decision(False, (), f"expert {me} {limit} ({listing}), and stopping every idle lazy one would not make "
                               "room; retry when one is idle", NO_ROOM)


def stat_rows(text: str) -> list[dict[str, str]]:
    """The rows of the runtime API's `show stat` (CSV under a "# pxname,svname,..." header)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    head = lines[0][2:].split(",")
    return [dict(zip(head, line.split(","))) for line in lines[1:] if line]


def parse_show_stat(text: str) -> dict[str, Usage]:
    """Per expert, from its backend's row (be_<id>/BACKEND): sessions now (scur) and
    seconds since the last one (lastsess; -1, never). A row without whole numbers is
    left out: unknown, so busy."""
    out: dict[str, Usage] = {}
    for row in stat_rows(text):
        px = row.get("pxname", "")
        if row.get("svname") != "BACKEND" or not px.startswith("be_"):
            continue
        try:
            cur, last = int(row.get("scur", "")), int(row.get("lastsess") or -1)
        except ValueError:
            continue
        out[px[3:]] = Usage(cur, 1e9 if last < 0 else float(last))
    return out


def frontdoor_usage(socket_path: str, admin: "Admin | None" = None) -> tuple[dict[str, Usage], str]:
    """(usage per expert, why it is missing), from HAProxy's runtime API on its unix socket
    (root's, local: no address to configure, no HTTP under load). Unreachable or no
    backend rows: no usage at all, and the problem named; the gate then stops no lazy
    expert (any may be serving)."""
    try:
        text = (admin or _admin(socket_path))("show stat")
    except OSError as e:
        return {}, f"the front door's runtime API at {socket_path} did not answer ({e.strerror or e})"
    usage = parse_show_stat(text)
    if not usage:
        return {}, f"the front door's runtime API at {socket_path} listed no expert backend"
    return usage, ""


def unit_states(expert_ids: Sequence[str], run: Callable[..., Any] = subprocess.run) -> dict[str, str]:
    r = run(["systemctl", "show", "--property=ActiveState", "--value", *[unit(e) for e in expert_ids]],
            capture_output=True, text=True, check=False)
    values = r.stdout.split()  # one value per unit, in order (blank lines between units)
    return dict(zip(expert_ids, values))


def reason_file(expert_id: str) -> str:
    return os.path.join(REASONS, f"{expert_id}.reason")


def reasons_dir() -> str:
    """/run/llmhost-admit, made by root and readable by the proxy's dynamic user and the
    probe whatever the umask of the unit that makes it (the lazy proxy's is 0077, and
    systemd applies it to its privileged steps too: a 0700 directory hid every refusal
    from the held clients, who then waited out their timeout)."""
    os.makedirs(REASONS, exist_ok=True)
    os.chmod(REASONS, 0o755)
    return REASONS


def write_reason(expert_id: str, why: str, code: str = "expert_not_loaded") -> None:
    """The reason file: the error code on the first line (expert_not_loaded: no room;
    expert_load_failed: the model did not start), the message after it."""
    reasons_dir()
    with open(reason_file(expert_id), "w") as f:
        f.write(f"{code}\n{why}")
    os.chmod(reason_file(expert_id), 0o644)


def clear_reason(expert_id: str) -> None:
    try:
        os.unlink(reason_file(expert_id))
    except FileNotFoundError:
        pass


def read_reason(expert_id: str) -> tuple[str, str] | None:
    """(code, message) of the last refused or failed start, or None."""
    try:
        text = Path(reason_file(expert_id)).read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    code, _, why = text.partition("\n")
    return (code, why) if why else ("expert_not_loaded", code)


def budget_of(cfg: Mapping[str, Any]) -> tuple[float | None, int | None]:
    lazy = cfg.get("lazy_loading") or {}
    b = lazy.get("memory_budget_gib")
    m = lazy.get("max_loaded_experts")
    return (float(b) if b is not None else None), (int(m) if m is not None else None)


def wait_states(me: str, leave: Sequence[str], within_s: float,
                states: Callable[[Sequence[str]], Mapping[str, str]] | None = None) -> str:
    """Poll the unit's ActiveState until it is not one of `leave`, or time is up; the last state."""
    states = states or unit_states
    end = time.monotonic() + within_s
    state = states([me]).get(me, "")
    while state in leave and time.monotonic() < end:
        time.sleep(0.1)
        state = states([me]).get(me, "")
    return state


def take_lock(f: Any, within_s: float, poll_s: float = 0.1) -> float | None:
    """flock(f) exclusively within `within_s` seconds: the seconds waited, or None when
    another holder kept it all that time."""
    t0 = time.monotonic()
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return time.monotonic() - t0
        except BlockingIOError:
            if time.monotonic() - t0 >= within_s:
                return None
            time.sleep(poll_s)


def gate(cfg: Mapping[str, Any], me: str, admin_socket: str = "", settle_s: float = SETTLE_S,
         lock_wait_s: float = LOCK_WAIT_S, lock_path: str = LOCK,
         usage: Callable[[str], tuple[dict[str, Usage], str]] | None = None,
         states: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
         run: Callable[..., Any] = subprocess.run) -> int:
    experts = cfg["experts"]
    budget, cap = budget_of(cfg)
    usage = usage or frontdoor_usage
    states = states or unit_states
    with open(lock_path, "w") as lock:
        if take_lock(lock, lock_wait_s) is None:
            why = (f"expert {me} was not started: the admission gate waited {lock_wait_s:.0f} s for another "
                   f"expert's start decision ({lock_path} held); retry shortly")
            print("refused: " + why, flush=True)
            write_reason(me, why, ADMISSION_BUSY)
            return 0  # the front step answers the waiting requests with the reason
        ids = [e["expert_id"] for e in experts]
        # a model still stopping (its proxy idled out) must be gone before this start,
        # or the front would find the old server answering and relay to it
        wait_states(me, ("deactivating",), DEACTIVATING_WAIT_S, states)
        used, problem = usage(admin_socket or ADMIN_SOCKET)
        if problem:
            print(f"usage unknown: {problem}; no lazy expert is taken for idle", flush=True)
        d = decide(me, experts, states(ids), used, budget, cap, problem)
        print(("admitted: " if d.admit else "refused: ") + d.why, flush=True)
        if not d.admit:
            write_reason(me, d.why, d.code or NO_ROOM)
            return 0  # the front step answers the waiting requests with the reason
        if d.evict:
            run(["systemctl", "stop", *[u for e in d.evict for u in (proxy_unit(e), unit(e))]], check=False)
        clear_reason(me)
        r = run(["systemctl", "start", "--no-block", unit(me)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(f"{unit(me)} did not start: {r.stderr.strip()}", flush=True)
            write_reason(me, f"expert {me} failed to load (journalctl -u {unit(me)} on the host)",
                         "expert_load_failed")
            return 0
        # Hold the lock until the unit counts as loaded, so the next gate sees it. A start
        # that systemd refuses later (start limit, a missing standby) never runs the unit's
        # ExecStopPost: say so here, or the waiting clients would wait the whole budget.
        state = wait_states(me, ("inactive",), settle_s, states)
        if state not in LOADED_STATES:
            print(f"{unit(me)} did not start: it is {state or 'unknown'}", flush=True)
            write_reason(me, f"expert {me} failed to load: its unit is {state or 'unknown'} "
                             f"(journalctl -u {unit(me)} on the host)", "expert_load_failed")
    return 0


def failed(me: str) -> int:
    """The model unit's ExecStopPost (privileged): a start that failed leaves its reason
    for the front step, which is waiting on the model's /health."""
    result = os.environ.get("SERVICE_RESULT", "success")
    if result != "success":
        write_reason(me, f"expert {me} failed to load ({result}, exit {os.environ.get('EXIT_STATUS', '?')}; "
                         f"journalctl -u {unit(me)} on the host)", "expert_load_failed")
    return 0


def error_body(why: str, code: str = "expert_not_loaded") -> bytes:
    return json.dumps({"error": {"message": why, "type": "server_error", "code": code}}).encode()


def refusal(why: str, code: str = "expert_not_loaded", retry_after_s: int = 30) -> bytes:
    body = error_body(why, code)
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: "
            + str(retry_after_s).encode() + b"\r\nConnection: close\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


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
            answer_one(conn, response)
        n += 1
    return n


def answer_one(conn: socket.socket, response: bytes, already: bytes = b"") -> None:
    conn.settimeout(2.0)
    try:
        head = already
        while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        conn.sendall(response)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def healthy(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Held:
    """A client accepted while its expert loads."""
    sock: socket.socket
    since: float
    buf: bytes = b""
    complete: bool = False           # the whole request is in buf (or as much as will be parsed)
    stream: bool = False             # it asked for a streamed answer: it gets SSE comments
    head_sent: bool = False
    last_sent: float = 0.0


def parse_request(buf: bytes) -> tuple[bool, bool]:
    """(complete, stream) of the bytes read so far of one HTTP/1.1 request."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return len(buf) >= HEAD_LIMIT, False
    head = buf[:end].decode("latin-1").lower()
    m = re.search(r"^content-length:\s*(\d+)\s*$", head, re.M)
    if "transfer-encoding:" in head or (m and int(m.group(1)) > BODY_LIMIT):
        return True, False              # relayed as bytes, without looking at the body
    length = int(m.group(1)) if m else 0
    body = buf[end + 4:]
    if len(body) < length:
        return False, False
    try:
        stream = bool(json.loads(body[:length] or b"{}").get("stream")) if length else False
    except (ValueError, AttributeError):
        stream = False
    return True, stream


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n")


@dataclass
class Counters:
    held: int = 0                     # requests held while their expert loaded
    hold_s: float = 0.0               # their summed wait
    refused: dict[str, int] = field(default_factory=dict)   # reason -> count

    def refuse(self, reason: str, n: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + n


def metrics_text(me: str, c: Counters, waiting: int, loads: int, load_s: float) -> str:
    lab = me.replace("\\", "\\\\").replace('"', '\\"')
    out = ["# HELP llmhost_lazy_waiting_requests Requests held now while the lazy expert loads.",
           "# TYPE llmhost_lazy_waiting_requests gauge",
           f'llmhost_lazy_waiting_requests{{expert="{lab}"}} {waiting}',
           "# HELP llmhost_lazy_held_requests_total Requests held while the lazy expert loaded.",
           "# TYPE llmhost_lazy_held_requests_total counter",
           f'llmhost_lazy_held_requests_total{{expert="{lab}"}} {c.held}',
           "# HELP llmhost_lazy_hold_seconds_total Seconds those requests waited, summed.",
           "# TYPE llmhost_lazy_hold_seconds_total counter",
           f'llmhost_lazy_hold_seconds_total{{expert="{lab}"}} {c.hold_s:.3f}',
           "# HELP llmhost_lazy_refused_requests_total Held or queued requests answered 503, by reason.",
           "# TYPE llmhost_lazy_refused_requests_total counter"]
    out += [f'llmhost_lazy_refused_requests_total{{expert="{lab}",reason="{r}"}} {n}' for r, n in sorted(c.refused.items())]
    out += ["# HELP llmhost_lazy_loads_total Loads of the lazy expert that a request waited for.",
            "# TYPE llmhost_lazy_loads_total counter",
            f'llmhost_lazy_loads_total{{expert="{lab}"}} {loads}',
            "# HELP llmhost_lazy_load_seconds_total Seconds from the first held request to the expert's /health, summed.",
            "# TYPE llmhost_lazy_load_seconds_total counter",
            f'llmhost_lazy_load_seconds_total{{expert="{lab}"}} {load_s:.3f}']
    return "\n".join(out) + "\n"


_PREV = re.compile(r'^(llmhost_lazy_\w+)\{expert="[^"]*"(?:,reason="([^"]*)")?\}\s+(\S+)$')


def read_counters(path: str | None) -> tuple[Counters, int, float]:
    """The counters a previous run left (they survive the proxy's restarts, not a reboot)."""
    c, loads, load_s = Counters(), 0, 0.0
    if not path:
        return c, loads, load_s
    try:
        text = Path(path).read_text()
    except OSError:
        return c, loads, load_s
    for line in text.splitlines():
        m = _PREV.match(line)
        if not m:
            continue
        name, reason, v = m.group(1), m.group(2), float(m.group(3))
        if name == "llmhost_lazy_held_requests_total":
            c.held = int(v)
        elif name == "llmhost_lazy_hold_seconds_total":
            c.hold_s = v
        elif name == "llmhost_lazy_refused_requests_total" and reason:
            c.refused[reason] = int(v)
        elif name == "llmhost_lazy_loads_total":
            loads = int(v)
        elif name == "llmhost_lazy_load_seconds_total":
            load_s = v
    return c, loads, load_s


def write_metrics(path: str | None, text: str) -> None:
    if not path:
        return
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        print(f"{path}: cannot write the wait metrics ({e.strerror})", file=sys.stderr, flush=True)


def sse_error(why: str, code: str) -> bytes:
    return b"data: " + error_body(why, code) + b"\n\ndata: [DONE]\n\n"


def hold(listener: socket.socket, me: str, backend_port: int, timeout_s: float, max_waiting: int,
         counters: Counters, keepalive_s: float = KEEPALIVE_S,
         ready: Callable[[], bool] | None = None, reason: Callable[[], tuple[str, str] | None] | None = None,
         on_change: Callable[[int], None] | None = None) -> tuple[str, list[Held], str, str]:
    """Accept and hold clients until the model is ready, refused or failed, or the
    budget runs out. Single-threaded (it forks next). Returns (outcome, held, code, why)
    with outcome "ready" or "refused"; on "refused" every held client is answered."""
    ready = ready or (lambda: healthy(backend_port))
    reason = reason or (lambda: read_reason(me))
    held: list[Held] = []
    t0 = time.monotonic()
    next_check = t0
    listener.setblocking(False)
    sel = selectors.DefaultSelector()     # epoll: no limit at 1024 descriptors
    sel.register(listener, selectors.EVENT_READ)
    outcome, code, why = "", "expert_not_loaded", ""
    while not outcome:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.5
            r = reason()
            if r:
                outcome, (code, why) = "refused", r
                break
            if ready():
                outcome = "ready"
                break
            if now - t0 > timeout_s:
                outcome, code, why = "refused", "expert_load_failed", (
                    f"expert {me} did not load within {timeout_s:.0f} s (journalctl -u {unit(me)} on the host)")
                break
        # every held socket stays watched: a complete request's client may still leave
        # (EOF: dropped, its slot freed) or send more (kept, relayed as it came)
        for h in held:
            if h.sock not in sel.get_map():
                sel.register(h.sock, selectors.EVENT_READ, h)
        for key, _ in sel.select(0.25):
            s = key.fileobj
            if s is listener:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:      # out of file descriptors, say: the others keep waiting
                    print(f"expert {me}: cannot accept a waiting client ({e.strerror})", file=sys.stderr, flush=True)
                    time.sleep(0.1)
                    continue
                if len(held) >= max_waiting:
                    answer_one(conn, refusal(f"expert {me} is loading and {len(held)} requests already wait for "
                                             "it; retry shortly", code="expert_loading", retry_after_s=10))
                    conn.close()
                    counters.refuse("queue_full")
                    continue
                conn.setblocking(False)
                held.append(Held(conn, time.monotonic()))
                if on_change:
                    on_change(len(held))
                continue
            h = key.data
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:                 # the client gave up
                held.remove(h)
                sel.unregister(s)
                s.close()
                counters.refuse("client_gone")
                if on_change:
                    on_change(len(held))
                continue
            h.buf += chunk
            if not h.complete:
                h.complete, h.stream = parse_request(h.buf)
        now = time.monotonic()
        for h in list(held):
            if not (h.complete and h.stream) or now - h.last_sent < keepalive_s:
                continue
            try:
                if not h.head_sent:
                    h.sock.sendall(SSE_HEAD)
                    h.head_sent = True
                h.sock.sendall(f": loading expert {me}, {now - h.since:.0f} s\n\n".encode())
                h.last_sent = now
            except OSError:
                held.remove(h)
                sel.unregister(h.sock)
                h.sock.close()
                counters.refuse("client_gone")
    sel.close()
    if outcome == "refused":
        for h in held:
            h.sock.setblocking(True)
            try:
                if h.head_sent:
                    h.sock.sendall(sse_error(why, code))
                else:
                    answer_one(h.sock, refusal(why, code), already=h.buf)
            except OSError:
                pass
            h.sock.close()
        counters.refuse(code, len(held))
        return outcome, [], code, why
    for h in held:
        counters.held += 1
        counters.hold_s += time.monotonic() - h.since
    return outcome, held, code, why


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Both directions until both are done (a half-close is passed on), with no
    inactivity limit: a long non-streamed completion sends nothing until it ends."""
    open_ = {a: b, b: a}
    try:
        while open_:
            readable, _, _ = select.select(list(open_), [], [])
            for s in readable:
                data = s.recv(65536)
                other = open_[s]
                if not data:
                    del open_[s]
                    try:
                        other.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    if s is b:          # the expert is done: nothing more for the client
                        return
                    continue
                other.sendall(data)
    except OSError:
        return


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    """The final response head (a 100 Continue, or any 1xx, skipped) and the bytes after it."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the expert closed before answering")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        parts = head.split(b" ", 2)
        if not (len(parts) > 1 and parts[1].startswith(b"1") and len(parts[1]) == 3):
            return head, buf


def _body(s: socket.socket, head: bytes, rest: bytes):
    """The response body's bytes as they come: chunked, by length, or to the close."""
    h = head.decode("latin-1").lower()
    if re.search(r"^transfer-encoding:.*chunked", h, re.M):
        buf = rest
        while True:
            while b"\r\n" not in buf:
                more = s.recv(65536)
                if not more:
                    return
                buf += more
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            while len(buf) < size + 2:
                more = s.recv(65536)
                if not more:
                    yield buf[:size]
                    return
                buf += more
            yield buf[:size]
            buf = buf[size + 2:]
    m = re.search(r"^content-length:\s*(\d+)", h, re.M)
    left = int(m.group(1)) if m else None
    if rest:
        yield rest
        if left is not None:
            left -= len(rest)
    while left is None or left > 0:
        more = s.recv(65536)
        if not more:
            return
        if left is not None:
            left -= len(more)
        yield more


def relay(h: Held, backend_port: int, me: str) -> None:
    """One held request to the loaded model: bytes both ways; a stream whose head was
    already sent gets the model's events without the model's own head."""
    try:
        with socket.create_connection(("127.0.0.1", backend_port), timeout=30) as b:
            b.settimeout(None)
            h.sock.setblocking(True)
            b.sendall(h.buf)
            if not h.head_sent:
                _pipe(h.sock, b)
                return
            head, rest = _read_head(b)
            status = head.split(b" ", 2)[1] if b" " in head else b"502"
            body = b"".join(_body(b, head, rest)) if status != b"200" else None
            if body is not None:       # an error answer, after our 200 head: as an SSE error event
                try:
                    err = json.loads(body)
                except ValueError:
                    err = {"error": {"message": body.decode("utf-8", "replace")[:500], "code": int(status)}}
                h.sock.sendall(b"data: " + json.dumps(err).encode() + b"\n\ndata: [DONE]\n\n")
                return
            for piece in _body(b, head, rest):
                h.sock.sendall(piece)
    except OSError as e:
        try:
            if h.head_sent:
                h.sock.sendall(sse_error(f"expert {me}: {e}", "expert_relay_failed"))
        except OSError:
            pass
    finally:
        try:
            h.sock.close()
        except OSError:
            pass


def relay_all(held: Sequence[Held], backend_port: int, me: str) -> None:
    threads = [threading.Thread(target=relay, args=(h, backend_port, me), daemon=True) for h in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def kept_metrics(expert_id: str) -> str:
    """Where the wait figures are kept between proxy runs (root's directory, world-readable;
    the probe copies them to node exporter)."""
    return os.path.join(REASONS, f"{expert_id}.prom")


def keep_metrics(me: str, live: str) -> int:
    """The proxy's ExecStopPost (privileged): keep its last figures, nothing waiting now."""
    counters, loads, load_s = read_counters(live)
    if not Path(live).exists():
        return 0
    reasons_dir()
    write_metrics(kept_metrics(me), metrics_text(me, counters, 0, loads, load_s))
    return 0


def _more_descriptors() -> None:
    try:
        import resource  # noqa: PLC0415
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def front(me: str, backend_port: int, idle_s: int, timeout_s: float = 900, max_waiting: int = 64,
          metrics: str | None = None, via_port: int | None = None) -> int:
    proxyd = [PROXYD, f"--exit-idle-time={idle_s}s", f"127.0.0.1:{backend_port}"]
    if healthy(backend_port):      # already loaded (a restart of the proxy alone)
        os.execv(PROXYD, proxyd)
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        print(f"expert {me}: no socket passed (run by its socket unit)", file=sys.stderr)
        return 0
    _more_descriptors()
    listener = socket.socket(fileno=3)
    counters, loads, load_s = read_counters(kept_metrics(me) if metrics else None)
    t0 = time.monotonic()
    write_metrics(metrics, metrics_text(me, counters, 0, loads, load_s))
    outcome, held, code, why = hold(listener, me, backend_port, timeout_s, max_waiting, counters,
                                    on_change=lambda n: write_metrics(metrics, metrics_text(me, counters, n, loads,
                                                                                            load_s)))
    if outcome == "ready":
        loads, load_s = loads + 1, load_s + time.monotonic() - t0
    write_metrics(metrics, metrics_text(me, counters, 0, loads, load_s))
    if outcome == "refused":
        listener.setblocking(True)
        n = answer_waiting(listener, refusal(why, code))
        counters.refuse(code, n)
        write_metrics(metrics, metrics_text(me, counters, 0, loads, load_s))
        print(f"answered the waiting requests with 503: {why}", flush=True)
        return 0
    print(f"expert {me} ready after {time.monotonic() - t0:.1f} s; relaying {len(held)} held request(s)"
          f" ({sum(1 for h in held if h.head_sent)} streamed with keep-alive comments); then the socket proxy",
          flush=True)
    if held:
        # A grandchild relays what was held, through the socket (via_port) when given, so
        # that the proxy counts those connections: its idle timer starts only once they end.
        # The child exits at once, so the proxy (which reaps nothing) is left no zombie.
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                try:
                    listener.close()
                    relay_all(held, via_port or backend_port, me)
                finally:
                    os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
    for h in held:
        h.sock.close()
    listener.setblocking(True)
    os.execv(PROXYD, proxyd)
    return 0  # not reached


def admin_command(cmd: str, socket_path: str = ADMIN_SOCKET, timeout: float = 5.0) -> str:
    """One command to HAProxy's runtime API (one per connection) and its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode("utf-8", "replace")


def server_stat(text: str, backend: str, server: str) -> dict[str, str] | None:
    """The row of `show stat` for backend/server."""
    return next((r for r in stat_rows(text) if r.get("pxname") == backend and r.get("svname") == server), None)


Admin = Callable[[str], str]


def _admin(socket_path: str) -> Admin:
    return lambda cmd: admin_command(cmd, socket_path)


def drain(me: str, admin: Admin, timeout_s: float, poll_s: float = 0.5,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Put expert `me`'s server (be_<id>/<id>) in maintenance at the front door and wait,
    at most timeout_s, until its sessions end. New requests then wait in the front door's
    hold (llmhost-hold.lua) instead of reaching a restarting server. Returns what was done:
    drained (the server is in maintenance now), restore (put it back in service after:
    false when it already was in maintenance), sessions_left, waited_s, msg."""
    backend, server = f"be_{me}", me
    try:
        row = server_stat(admin("show stat"), backend, server)
    except OSError as e:
        return {"drained": False, "restore": False, "sessions_left": 0, "waited_s": 0.0,
                "msg": f"expert {me}: the front door's runtime API did not answer ({e.strerror or e}): nothing to drain"}
    if row is None:
        return {"drained": False, "restore": False, "sessions_left": 0, "waited_s": 0.0,
                "msg": f"expert {me}: the front door has no server {backend}/{server} yet: nothing to drain"}
    was = row.get("status", "")
    answer = admin(f"set server {backend}/{server} state maint").strip()
    if answer:
        raise RuntimeError(f"expert {me}: the front door refused to put {backend}/{server} in maintenance: {answer}")
    if not was.startswith("MAINT"):
        # ready --if-drained puts back only what a drain took out (an operator's maintenance stays)
        Path(drained_marker(me)).write_text(f"{was}\n")
    t0 = clock()
    left = int(row.get("scur") or 0)
    while True:
        row = server_stat(admin("show stat"), backend, server) or {}
        left = int(row.get("scur") or 0)
        if left == 0 or clock() - t0 >= timeout_s:
            break
        sleep(poll_s)
    waited = clock() - t0
    msg = (f"expert {me}: {backend}/{server} in maintenance at the front door (new requests wait); "
           + (f"its sessions ended in {waited:.1f} s" if left == 0 else
              f"{left} session(s) still open after {timeout_s:.0f} s: the restart cuts them"))
    return {"drained": True, "restore": not was.startswith("MAINT"), "sessions_left": left,
            "waited_s": round(waited, 1), "msg": msg}


def drained_marker(expert_id: str) -> str:
    """Left by drain when it took the server out of service; ready --if-drained reads it."""
    return os.path.join(reasons_dir(), f"{expert_id}.drained")


def ready(me: str, admin: Admin, if_drained: bool = False) -> dict[str, Any]:
    """Put expert `me`'s server back in service at the front door. if_drained: only when a
    drain took it out (the deploy's always step: whatever happened in between, a server a
    drain took out goes back, and one an operator had put in maintenance stays there)."""
    backend, server = f"be_{me}", me
    marker = Path(drained_marker(me))
    if if_drained and not marker.exists():
        return {"ready": False, "msg": f"expert {me}: not taken out by a drain: left as it is"}
    try:
        row = server_stat(admin("show stat"), backend, server)
    except OSError as e:
        return {"ready": False, "msg": f"expert {me}: the front door's runtime API did not answer "
                                       f"({e.strerror or e}): nothing to put back"}
    if row is None:
        return {"ready": False, "msg": f"expert {me}: the front door has no server {backend}/{server}: nothing to put back"}
    answer = admin(f"set server {backend}/{server} state ready").strip()
    if answer:
        raise RuntimeError(f"expert {me}: the front door refused to put {backend}/{server} back in service: {answer}")
    marker.unlink(missing_ok=True)
    row = server_stat(admin("show stat"), backend, server) or {}
    return {"ready": True, "status": row.get("status", ""),
            "msg": f"expert {me}: {backend}/{server} back in service at the front door ({row.get('status', '?')})"}


def _read_cfg(path: str) -> dict[str, Any]:
    cfg = json.loads(Path(path).read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("experts"), list):
        raise TypeError("'experts' is not a list")
    budget_of(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llmhost-admit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="admit (stopping idle lazy experts by cost) or refuse; start the model")
    g.add_argument("--config", default="/etc/llmhost/admission.json")
    g.add_argument("--expert", required=True)
    g.add_argument("--admin-socket", default=ADMIN_SOCKET, help="HAProxy's runtime API socket (the usage)")
    d = sub.add_parser("decide", help="what the gate would do now, or in the situation given; changes nothing")
    d.add_argument("--config", default="/etc/llmhost/admission.json")
    d.add_argument("--expert", required=True)
    d.add_argument("--admin-socket", default=ADMIN_SOCKET, help="HAProxy's runtime API socket (as for gate)")
    d.add_argument("--loaded", help="comma-separated experts taken as loaded (default: the units' states)")
    d.add_argument("--busy", default="", help="comma-separated experts taken as serving a request")
    d.add_argument("--pinned", default="", help="comma-separated experts taken as pinned")
    d.add_argument("--budget-gib", type=float, help="a memory budget instead of the plan's")
    f = sub.add_parser("front", help="hold the waiting clients while the model loads, then become the socket proxy")
    f.add_argument("--expert", required=True)
    f.add_argument("--backend", type=int, required=True, help="the model's loopback port")
    f.add_argument("--idle", type=int, required=True, help="proxy exits after this many idle seconds")
    f.add_argument("--timeout", type=float, default=900, help="seconds the held clients wait for the load at most")
    f.add_argument("--max-waiting", type=int, default=64, help="held requests at most; more get 503 + Retry-After")
    f.add_argument("--metrics", help="a .prom file for the wait figures (kept by keep-metrics when it stops)")
    f.add_argument("--port", type=int, help="the expert's own port (its socket): held requests are relayed "
                                            "through it, so the proxy counts them")
    k = sub.add_parser("keep-metrics", help="(the proxy's ExecStopPost) keep the wait figures across proxy runs")
    k.add_argument("--expert", required=True)
    k.add_argument("--metrics", required=True)
    s = sub.add_parser("failed", help="(the model unit's ExecStopPost) leave the reason of a failed start")
    s.add_argument("--expert", required=True)
    for name, what in (("drain", "put a preloaded expert's server in maintenance at the front door and wait "
                                 "for its sessions to end (before its restart); prints JSON"),
                       ("ready", "put it back in service at the front door (after the restart); prints JSON")):
        x = sub.add_parser(name, help=what)
        x.add_argument("--expert", required=True)
        x.add_argument("--admin-socket", default=ADMIN_SOCKET, help="HAProxy's runtime API socket")
        if name == "drain":
            x.add_argument("--timeout", type=float, default=120, help="seconds to wait for the sessions at most")
        else:
            x.add_argument("--if-drained", action="store_true", help="only if a drain took it out of service")
    args = ap.parse_args(argv)
    if args.cmd in ("drain", "ready"):
        try:
            out = (drain(args.expert, _admin(args.admin_socket), args.timeout) if args.cmd == "drain"
                   else ready(args.expert, _admin(args.admin_socket), args.if_drained))
        except (RuntimeError, OSError) as e:
            why = str(e) if isinstance(e, RuntimeError) else f"expert {args.expert}: the front door's runtime API failed ({e})"
            print(why, file=sys.stderr)
            print(json.dumps({"drained" if args.cmd == "drain" else "ready": False, "msg": why}))
            return 1
        print(json.dumps(out))
        return 0
    if args.cmd == "front":
        return front(args.expert, args.backend, args.idle, args.timeout, args.max_waiting, args.metrics, args.port)
    if args.cmd == "keep-metrics":
        return keep_metrics(args.expert, args.metrics)
    if args.cmd == "failed":
        return failed(args.expert)
    try:
        cfg = _read_cfg(args.config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{args.config}: cannot read the admission config ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    if args.cmd == "gate":
        return gate(cfg, args.expert, args.admin_socket)
    ids = [e["expert_id"] for e in cfg["experts"]]
    unknown = [x for x in [args.expert] + (args.loaded or "").split(",") + args.busy.split(",")
               + args.pinned.split(",") if x and x not in ids]
    if unknown:
        print(f"no such expert: {', '.join(unknown)} (experts: {', '.join(ids)})", file=sys.stderr)
        return 2
    problem = ""
    if args.loaded is None:
        states = unit_states(ids)
        usage, problem = frontdoor_usage(args.admin_socket)
        if problem:
            print(f"usage unknown: {problem}", file=sys.stderr)
    else:
        on = set(args.loaded.split(",")) | {e["expert_id"] for e in cfg["experts"] if e.get("preload", True)}
        states = {i: ("active" if i in on else "inactive") for i in ids}
        busy = {i for i in args.busy.split(",") if i}
        usage = {i: (Usage(1, 0) if i in busy else Usage(0, 1e9)) for i in ids}
    budget, cap = budget_of(cfg)
    if args.budget_gib is not None:
        budget = args.budget_gib
    pinned = {x for x in args.pinned.split(",") if x}
    experts = [{**e, "pinned": True} if e["expert_id"] in pinned else e for e in cfg["experts"]]
    dec = decide(args.expert, experts, states, usage, budget, cap, problem)
    print(("admit" if dec.admit else "refuse") + (f", stop {', '.join(dec.evict)}" if dec.evict else "")
          + f": {dec.why}")
    return 0 if dec.admit else 1


if __name__ == "__main__":
    sys.exit(main())

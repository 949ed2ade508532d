"""The roles' own inputs, checked for meaning before any change (the preflight stage).

Ansible's argument specs check a role variable's type; they do not know that a
listen address lands in a daemon's command line, that an interval becomes a
systemd time span, or that an address other than loopback publishes something
without authentication. Each role's `tasks/validate.yml` hands its variables to
`problems(role, values)`, which answers one line per problem naming the variable.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

from . import addresses
from .experts import host_path_problem
from .gate import MAX_WORSE_MAX
from .smoke import RANGES as SMOKE_RANGES

Check = Callable[[str, Any, Mapping[str, Any]], "str | None"]

# A systemd time span ("15min", "1h 30s", "90"), and Prometheus's durations ("15s", "15d").
SYSTEMD_SPAN_RE = re.compile(r"^\s*(\d+(\.\d+)?\s*(us|ms|s|sec|seconds?|m|min|minutes?|h|hr|hours?|d|days?|w|weeks?)?"
                             r"\s*)+$")
PROM_DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EXPOSURE_NOTE_MIN = 10


def _host_port(value: Any) -> tuple[str, int] | None:
    if not isinstance(value, str) or not value or value != value.strip() or any(c in value for c in " \"'\\$`;"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if not addresses.is_bind(host):
        return None
    return addresses.bare(host), int(port)


def listen(note_var: str) -> Check:
    """host:port of an unauthenticated endpoint: loopback, or a note saying what guards it."""
    def check(name: str, value: Any, values: Mapping[str, Any]) -> str | None:
        hp = _host_port(value)
        if hp is None:
            return f"{name}: an address and port such as 127.0.0.1:9090, got {value!r:.80}"
        note = values.get(note_var) or ""
        if addresses.loopback(hp[0]) is not True and (not isinstance(note, str) or len(note.strip()) < EXPOSURE_NOTE_MIN):
            return (f"{name}: {value} publishes an endpoint that has no authentication; keep 127.0.0.1, or say in "
                    f"{note_var} which firewall rule or network limits who reaches it")
        return None
    return check


def systemd_span(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
    if not isinstance(value, str) or not SYSTEMD_SPAN_RE.match(value) or not any(ch.isdigit() for ch in value):
        return f"{name}: a systemd time span such as 15min or 1h, got {value!r:.80}"
    return None


def prom_duration(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
    if not isinstance(value, str) or not PROM_DURATION_RE.match(value):
        return f"{name}: a Prometheus duration such as 15s, 5m or 15d, got {value!r:.80}"
    return None


def _number(value: Any) -> Any:
    """An inventory number that YAML or a template left as a string ("5", "0.25")."""
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            try:
                return float(value.strip())
            except ValueError:
                return value
    return value


def whole(lo: int, hi: int) -> Check:
    def check(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"{name}: a whole number {lo}..{hi}, got {value!r:.80}"
        return None
    return check


def share(lo: float, hi: float) -> Check:
    def check(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
        value = _number(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not lo < value <= hi:
            return f"{name}: a number above {lo:g} and at most {hi:g}, got {value!r:.80}"
        return None
    return check


def pattern(rx: re.Pattern[str], what: str) -> Check:
    def check(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
        if not isinstance(value, str) or not rx.match(value):
            return f"{name}: {what}, got {value!r:.80}"
        return None
    return check


def abs_path(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
    if value in (None, ""):
        return None
    why = host_path_problem(value, trees=(), exact=("/",)) if isinstance(value, str) else "a path"
    return f"{name}: {why}, got {value!r:.80}" if why else None


def note(name: str, value: Any, _: Mapping[str, Any]) -> str | None:
    """A free-text reason (read by the checks that need one): a single-line string."""
    if value is None or (isinstance(value, str) and "\n" not in value):
        return None
    return f"{name}: a single line of text, got {value!r:.80}"


def body_fits(name: str, value: Any, values: Mapping[str, Any]) -> str | None:
    """The largest body routed must fit in one buffer less the rewrite reserve: the front
    door reads the whole body to find "model"."""
    v, buf, rw = (_number(values.get(k)) for k in (name, "frontdoor_bufsize", "frontdoor_maxrewrite"))
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (v, buf, rw)):
        return f"{name}, frontdoor_bufsize, frontdoor_maxrewrite: whole numbers of bytes, got {v!r}, {buf!r}, {rw!r}"
    if not 1 <= v < buf - rw:
        return f"{name}: 1..{buf - rw - 1} (below frontdoor_bufsize {buf} less frontdoor_maxrewrite {rw}), got {v}"
    return None


RULES: dict[str, dict[str, Check]] = {
    "frontdoor": {
        "frontdoor_bufsize": whole(16384, 1 << 26),
        "frontdoor_maxrewrite": whole(1024, 1 << 20),
        "frontdoor_max_body": body_fits,
        "frontdoor_max_n": whole(1, 128),
        "frontdoor_max_json_depth": whole(2, 1000),
        "frontdoor_per_source_maxconn": whole(0, 1_000_000),
        "frontdoor_maxconn": whole(1, 1_000_000),
        "frontdoor_timeout_request_s": whole(1, 3600),
        "frontdoor_timeout_client_s": whole(1, 86400),
        "frontdoor_timeout_queue_s": whole(1, 86400),
        "frontdoor_hold_s": whole(0, 3600),
        "frontdoor_client_share": share(0, 1),
    },
    "monitoring": {
        "monitoring_listen": listen("monitoring_exposure_note"),
        "monitoring_node_exporter_listen": listen("monitoring_exposure_note"),
        "monitoring_scrape_interval": prom_duration,
        "monitoring_evaluation_interval": prom_duration,
        "monitoring_retention": prom_duration,
        "monitoring_probe_interval": systemd_span,
        "monitoring_probe_stale_after_s": whole(60, 30 * 86400),
        "monitoring_probe_timeout_s": whole(10, 86400),
        "monitoring_error_ratio": share(0, 1),
        "monitoring_memory_available_ratio": share(0, 1),
        "monitoring_route_fallback_ratio": share(0, 1),
        "monitoring_textfile_dir": abs_path,
        "monitoring_exposure_note": note,
    },
    "smoke_test": {
        "smoke_test_repeat": whole(*SMOKE_RANGES["repeat"]),
        "smoke_test_warmup": whole(*SMOKE_RANGES["warmup"]),
        "smoke_test_concurrency": whole(*SMOKE_RANGES["concurrency"]),
        "smoke_test_max_tokens": whole(*SMOKE_RANGES["max_tokens"]),
        "smoke_test_gate_max_worse": share(0, MAX_WORSE_MAX),
    },
    "vllm_experts": {
        "vllm_experts_user": pattern(USER_RE, "a system user name (lower case, at most 31)"),
        "vllm_experts_state_subdir": pattern(NAME_RE, "one directory name under /var/lib (no '/' or '..')"),
        "vllm_experts_restart_sec": whole(1, 3600),
        "vllm_experts_start_limit_burst": whole(1, 100),
    },
}


def names(role: str) -> list[str]:
    """The variables a role's validate task hands over (every one its rules read)."""
    if role not in RULES:
        raise ValueError(f"llmhost.inputs: no rules for role {role!r} (known: {', '.join(RULES)})")
    return list(RULES[role])


def problems(role: str, values: Mapping[str, Any]) -> list[str]:
    """One line per problem in the role's inputs; a variable its rules read but `values`
    lacks is a problem too (a rule is never skipped silently)."""
    out = []
    for name, check in RULES[role].items() if role in RULES else ():
        if name not in values:
            out.append(f"{name}: not handed to the check (llmhost.inputs.names({role!r}))")
            continue
        why = check(name, values[name], values)
        if why:
            out.append(why)
    return out if role in RULES else [f"llmhost.inputs: no rules for role {role!r}"]

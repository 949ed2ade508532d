"""What the HAProxy front door needs from the plan: names, backends, limits, the model list.

Pure functions; the frontdoor role renders haproxy.cfg with them (filters
llmhost.toolkit.frontdoor_*), and tests check both these and the real
`haproxy -c` on the rendered file.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from . import addresses


# Where the front door's metrics port serves usage per API key and expert (llmhost-usage.lua).
USAGE_METRICS_PATH = "/llmhost/usage-metrics"


def backend(expert_id: str) -> str:
    return "be_" + re.sub(r"[^A-Za-z0-9_.-]", "_", expert_id)


def max_num_seqs(expert: Mapping[str, Any], default: int = 8) -> int:
    argv = list(expert.get("argv", []))
    if "--max-num-seqs" in argv:
        return int(argv[argv.index("--max-num-seqs") + 1])
    return default


def default_expert(plan: Mapping[str, Any]) -> str:
    """Where "auto" and a missing model go: the plan's default expert (it also serves "auto")."""
    return str(plan["default_expert"])


# A preloaded expert is health-checked every 2 s and taken out after two failures;
# a lazy one never (a check would start its model).
HEALTH_CHECK = "check inter 2s fall 2 rise 1"
# The routing embedder is checked faster: the front door's Lua skips it (and sends
# "auto" to the default expert) as soon as it is marked down, instead of paying
# HAProxy's httpclient connect retries (about 3 s) on each request.
EMBEDDER_CHECK = "check inter 500ms fall 1 rise 2"


# The requests an expert's runner cannot serve: (HAProxy condition, what the 400 says).
WRONG_ENDPOINT = {
    "pooling": ("unless { path /v1/embeddings }",
                "serves an embedding model (runner: pooling): send it to /v1/embeddings"),
    "generate": ("if { path /v1/embeddings }",
                 "serves a generative model (runner: generate): /v1/embeddings needs a pooling expert"),
}


def fair_cap(maxconn: int, client_share: float, lazy: bool = False) -> int:
    """Slots of an expert one client may hold at once: the share of its maxconn, rounded
    down, at least 1. 0 (no cap) for a share of 1 or more, for an expert with one slot (it
    cannot be shared), and for a lazy expert (its own proxy holds clients through a cold
    start, longer than the door's wait for a slot would last)."""
    if client_share >= 1 or maxconn < 2 or lazy:
        return 0
    return max(1, int(maxconn * client_share))


def routes(plan: Mapping[str, Any], maxconn_overrides: Mapping[str, Any] | None = None,
           maxqueue_overrides: Mapping[str, Any] | None = None, client_share: float = 1.0) -> list[dict[str, Any]]:
    """One entry per expert, final: backend, server port, names, concurrency cap
    (max_num_seqs unless overridden), queue (4x the cap unless overridden), the
    server's health-check options ("" for a lazy expert), its runner (generate or
    pooling), the endpoint rule its backend answers 400 for (wrong_endpoint: the ACL
    condition and the message), and whether requests wait for it while a deploy restarts
    it (hold: a preloaded expert; a lazy one's own proxy holds its clients), and how many
    of its slots one client may hold at once (fair_cap, 0: no cap; frontdoor_client_share)."""
    ids = {e["expert_id"] for e in plan["experts"]}
    for what, over in (("frontdoor_maxconn_overrides", maxconn_overrides), ("frontdoor_maxqueue_overrides",
                                                                          maxqueue_overrides)):
        for k, v in (over or {}).items():
            if k not in ids:
                raise ValueError(f"{what}: {k!r} is not an expert ({', '.join(sorted(ids))})")
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{what}.{k}: a whole number >= 1, got {v!r}")
    out = []
    embedder = (plan.get("routing") or {}).get("embedder")
    for e in plan["experts"]:
        cap = int((maxconn_overrides or {}).get(e["expert_id"], max_num_seqs(e)))
        queue = int((maxqueue_overrides or {}).get(e["expert_id"], cap * 4))
        lazy = not e.get("preload", True)
        out.append({
            "expert_id": e["expert_id"], "backend": backend(e["expert_id"]), "port": e["port"],
            "names": list(e.get("names") or [e["expert_id"]]), "maxconn": cap, "maxqueue": queue, "lazy": lazy,
            "runner": e.get("runner") or "generate",
            "wrong_endpoint": WRONG_ENDPOINT[e.get("runner") or "generate"],
            "hold": not lazy, "fair_cap": fair_cap(cap, client_share, lazy),
            "server_options": f"maxconn {cap} maxqueue {queue}" + (
                "" if lazy else f" {EMBEDDER_CHECK if e['expert_id'] == embedder else HEALTH_CHECK}"),
        })
    return out


def model_map(plan: Mapping[str, Any]) -> str:
    """HAProxy map file: one `name backend` line per expert id and alias."""
    lines = []
    seen: dict[str, str] = {}
    default = plan.get("default_expert")
    for r in routes(plan):
        for n in r["names"]:
            if n == "auto" and default and r["expert_id"] != default:
                continue  # routed by meaning: every target serves "auto", the map's "auto" is the default

            if n in seen and seen[n] != r["backend"]:
                raise ValueError(f"model name {n!r} names two experts")
            seen[n] = r["backend"]
            lines.append(f"{n} {r['backend']}")
    return "\n".join(lines) + "\n"


def models_list(plan: Mapping[str, Any], created: int = 0) -> dict[str, Any]:
    """GET /v1/models in the OpenAI list format."""
    return {"object": "list", "data": [
        {"id": e["expert_id"], "object": "model", "created": created, "owned_by": "llmhost",
         "root": e["expert_id"], "parent": None,  # a name, never the host's model path
         "llmhost": {"domain": e.get("domain"), "aliases": [n for n in e.get("names", []) if n != e["expert_id"]],
                     "lazy": not e.get("preload", True), "runner": e.get("runner", "generate")}}
        for e in plan["experts"]]}


# What a key may hold: it travels as `Authorization: Bearer <key>`, one header, one
# token of printable ASCII (no space, no comma), as the front door checks.
KEY_CHARS = re.compile(r"[!-~]+")


def key_problem(key: Any) -> str | None:
    """Why a front-door key could never be sent as one Bearer token (None when it can): not
    a string, empty, or holding a space, a comma or a character outside printable ASCII."""
    if not isinstance(key, str):
        return "is not a string"
    if not key:
        return "is empty"
    if not KEY_CHARS.fullmatch(key) or "," in key:
        return ("holds a space, a comma or a character outside printable ASCII; a client could never send it "
                "as one Bearer token")
    return None


def is_loopback(bind: str) -> bool:
    """Does a HAProxy bind address keep the port on this host? ("*", "0.0.0.0", "::", any
    routable address and a host name do not.)"""
    return addresses.loopback(bind) is True


def exposure_problems(bind: str, port: int, api_keys: Iterable[str] | None, allow_anonymous: bool,
                      tls_cert: str | None = None, role: str = "frontdoor") -> list[str]:
    """Why this front door must not be deployed as configured ([] when it may).

    Closed by default: a port reachable from the network needs API keys, unless the
    inventory says frontdoor_allow_anonymous: true on purpose."""
    problems = []
    keys = [k for k in (api_keys or []) if str(k).strip()]
    if len(keys) != len(list(api_keys or [])):
        problems.append("llmhost_api_keys: an empty key")
    if not is_loopback(bind) and not keys and not allow_anonymous:
        problems.append(
            f"{role}_bind: {bind!r} opens port {port} to the network with no API key; set llmhost_api_keys "
            f"(from ansible-vault, docs/frontdoor.md), or bind 127.0.0.1, or set {role}_allow_anonymous: true "
            "to serve anyone on purpose")
    if tls_cert is not None and not str(tls_cert).startswith("/"):
        problems.append(f"{role}_tls_cert: must be an absolute path on the host (a PEM with certificate and key), "
                        f"got {tls_cert!r}")
    return problems


def port_problems(plan: Mapping[str, Any], port: int, metrics_port: int, timeout_server_s: int) -> list[str]:
    """The front door's own ports must be no expert's, and its server timeout must
    outlast the plan's start budget (a lazy expert's cold start happens inside it)."""
    used: dict[int, str] = {}
    for e in plan.get("experts", []):
        used[int(e["port"])] = f"expert '{e['expert_id']}'"
        if e.get("backend_port") and e["backend_port"] != e["port"]:
            used[int(e["backend_port"])] = f"expert '{e['expert_id']}' (lazy backend)"
    out = [f"frontdoor_{name}: {p} is also used by {used[p]}"
           for name, p in (("port", port), ("metrics_port", metrics_port)) if p in used]
    if port == metrics_port:
        out.append(f"frontdoor_metrics_port: {metrics_port} is the front door's own port")
    budget = int(plan.get("start_budget_s") or 0)
    if timeout_server_s <= budget:
        out.append(f"frontdoor_timeout_server_s: {timeout_server_s} s does not outlast the start budget "
                   f"({budget} s, llmhost_start_budget_s): a lazy expert's cold start would end in a 504")
    return out


def haproxy_capabilities(ports: Iterable[Any]) -> str:
    """haproxy.service's CapabilityBoundingSet: the master (root) keeps only what it needs
    to drop its workers to the haproxy user, plus CAP_NET_BIND_SERVICE when a port it binds
    is below 1024 (443 with TLS); the workers keep nothing either way."""
    caps = ["CAP_SETUID", "CAP_SETGID"]
    if any(int(p) < 1024 for p in ports):
        caps.append("CAP_NET_BIND_SERVICE")
    return " ".join(caps)

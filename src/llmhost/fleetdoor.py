"""One door for several hosts (role fleetdoor): which host serves which model.

Each host of the fleet has its own front door (role frontdoor) on its plan's
`frontdoor_port`. The fleet door is one more HAProxy in front of those doors: it reads
a request's `model`, sends it to the hosts whose plan has that expert (least
connections), health-checks each host's door for that expert (`GET /health/<expert>`,
which the host door answers 200 while the expert has a usable server, else 503), and
retries a request that found a host gone on another one. Requests for `auto`, a missing
or an unknown model go to every host (each host's door routes or refuses them itself).

Pure functions over the hosts' plans, called by the role's filters and unit-tested.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from . import apikeys
from .frontdoor import backend

# an inventory host's address as HAProxy's `server` line takes it: an IPv4/IPv6 address
# or a DNS name (no spaces, no port)
ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}")


class FleetError(ValueError):
    """The fleet cannot be served by one door; .problems has one line per reason."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def server_name(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", host)


def fleet(members: Sequence[Mapping[str, Any]], timeout_server_s: int | None = None) -> dict[str, Any]:
    """members: [{name, address, plan}] (the inventory hosts of the fleet, each with the
    plan its llmhost_plan role made) -> {"backends": [{backend, expert_id, servers}],
    "any": [servers], "map": "<name> <backend>\\n..."}; a server is {name, address, port}.

    Refused (FleetError): no host; a host without an address or a plan; a model name that
    is a different expert on two hosts (the door could not say which one answers), or that
    one host serving the expert does not answer to (it would answer 404); a server timeout
    (timeout_server_s) that a host's cold start outlasts."""
    problems: list[str] = []
    if not members:
        raise FleetError(["fleetdoor_hosts: no host (the fleet door needs the llm_hosts it fronts)"])
    by_expert: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, tuple[str, str]] = {}  # model name -> (expert id, first host naming it)
    every: list[dict[str, Any]] = []
    for m in members:
        host = str(m.get("name"))
        address = m.get("address")
        plan = m.get("plan")
        if not isinstance(address, str) or not ADDRESS_RE.fullmatch(address):
            problems.append(f"fleetdoor_hosts: host {host!r} has no usable address (ansible_host), got {address!r:.80}")
            continue
        if not isinstance(plan, Mapping) or "experts" not in plan:
            problems.append(f"fleetdoor_hosts: host {host!r} has no plan (run the fleet door play with its llm_hosts)")
            continue
        server = {"name": server_name(host), "address": address, "port": int(plan["shared"]["frontdoor_port"])}
        every.append(server)
        for e in plan["experts"]:
            by_expert.setdefault(e["expert_id"], []).append(server)
            for n in [e["expert_id"], *(e.get("names") or [])]:
                if n == "auto":
                    continue  # each host's door routes auto itself
                seen = names.setdefault(n, (e["expert_id"], host))
                if seen[0] != e["expert_id"]:
                    problems.append(f"fleetdoor_hosts: model name {n!r} is expert {seen[0]!r} on {seen[1]} and "
                                    f"{e['expert_id']!r} on {host}: rename one (aliases) so a name means one expert")
    # every host serving an expert must answer to every name the fleet uses for it
    served: dict[str, set[str]] = {}
    for m in members:
        for e in ((m.get("plan") or {}).get("experts") or []):
            for n in [e["expert_id"], *(e.get("names") or [])]:
                served.setdefault(f"{m.get('name')}\t{e['expert_id']}", set()).add(n)
    for n, (x, first) in names.items():
        lacking = sorted(k.split("\t")[0] for k, ns in served.items() if k.endswith(f"\t{x}") and n not in ns)
        if lacking:
            problems.append(f"fleetdoor_hosts: model name {n!r} of expert {x!r} (on {first}) is not a name of it on "
                            f"{', '.join(lacking)}: give every host the same aliases for an expert")
    budgets = [int((m.get("plan") or {}).get("start_budget_s") or 0) for m in members]
    if timeout_server_s is not None and budgets and int(timeout_server_s) <= max(budgets) + 60:
        problems.append(f"fleetdoor_timeout_server_s: {timeout_server_s} s does not outlast a host's cold start "
                        f"(start budget {max(budgets)} s, plus 60): a lazy expert's first request would end in a 504")
    if problems:
        raise FleetError(problems)
    backends = [{"backend": backend(x), "expert_id": x, "servers": servers} for x, servers in by_expert.items()]
    lines = "".join(f"{n} {backend(x)}\n" for n, (x, _) in sorted(names.items()))
    return {"backends": backends, "any": every, "map": lines}


def fleet_problems(members: Sequence[Mapping[str, Any]], timeout_server_s: int | None = None) -> list[str]:
    """fleet()'s refusals as a list ([] when the fleet can be served): for the role's assert."""
    try:
        fleet(members, timeout_server_s)
    except FleetError as e:
        return e.problems
    return []


def _every_expert(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One plan-like mapping with the experts of every host: a key's `models` name them."""
    seen: dict[str, Mapping[str, Any]] = {}
    for m in members:
        for e in (m.get("plan") or {}).get("experts", []):
            seen.setdefault(e["expert_id"], e)
    return {"experts": list(seen.values())}


def key_problems(members: Sequence[Mapping[str, Any]], raw: Any) -> list[str]:
    """The keys' problems (llmhost.apikeys), their models checked against every host's experts."""
    return apikeys.key_problems(raw, _every_expert(members))


def key_map(members: Sequence[Mapping[str, Any]], raw: Any) -> str:
    """The fleet door's keys map (`<sha256> <id>`): it refuses an unknown key itself; each host's
    door applies the key's models and limits."""
    return apikeys.key_files(raw, _every_expert(members))["llmhost-keys.map"]

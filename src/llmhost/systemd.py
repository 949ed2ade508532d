"""Render argv and environment safely for systemd unit files."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from . import addresses
from .experts import CONTROL_RE, RESERVED_SUFFIXES, owned_env

_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_arg(arg: object) -> str:
    """One word of ExecStart=: specifiers (%) and variables ($) escaped, quoted when needed.

    Control characters become C escapes (\\n, \\x01), which systemd decodes inside
    quotes: a value can never start a new line of the unit. (The schema refuses
    them anyway; this is the second line of defence.)"""
    s = str(arg).replace("%", "%%").replace("$", "$$")
    if s and _PLAIN.match(s):
        return s
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    s = CONTROL_RE.sub(lambda m: {"\n": "\\n", "\t": "\\t"}.get(m.group(), f"\\x{ord(m.group()):02x}"), s)
    return '"' + s + '"'


def exec_line(argv: Iterable[object]) -> str:
    return " ".join(quote_arg(a) for a in argv)


def env_file(env: Mapping[str, object]) -> str:
    """Lines for EnvironmentFile=, sorted, values double-quoted."""
    lines = []
    for k in sorted(env):
        if not _ENV_NAME.match(k):
            raise ValueError(f"not an environment variable name: {k!r}")
        v = str(env[k]).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{k}="{v}"')
    return "\n".join(lines) + ("\n" if lines else "")


def preload_env(found: Iterable[str], *, tcmalloc: bool, iomp: bool, arch: str) -> dict[str, str]:
    """LD_PRELOAD for an expert unit from the libraries found on the host.

    tcmalloc when the profile wants it; Intel's libiomp5 (shipped in the x86 torch
    wheel) only on x86_64 and only when asked: on aarch64 torch uses GNU OpenMP.
    Empty when nothing applies, so the unit carries no LD_PRELOAD at all.
    """
    if not tcmalloc:
        return {}
    libs = [p for p in found if "tcmalloc" in p or (iomp and arch == "x86_64" and "iomp" in p)]
    return {"LD_PRELOAD": ":".join(libs)} if libs else {}


# What systemd's ProtectHome= hides from a service (systemd.exec(5)).
HOME_PREFIXES = ("/home/", "/root/", "/run/user/")


def home_sandbox(model_path: str) -> tuple[str, list[str]]:
    """(ProtectHome= value, BindReadOnlyPaths= list) for an expert's model folder.

    ProtectHome=yes hides /home, /root and /run/user, so a model kept in a user's
    home (production keeps them in /home/elect/models) would be invisible to the
    expert and fail its readiness gate. Such an expert gets ProtectHome=tmpfs: the
    homes become an empty tmpfs, and only the model folder is bound into it,
    read-only. Nothing else of the home is visible, and the home's own 0700 mode
    need not be opened: the bind mount bypasses the parent directories. The model
    folder's own files must still be readable by others (the install stage checks).
    """
    path = model_path.rstrip("/") + "/"
    if path.startswith(HOME_PREFIXES):
        return "tmpfs", [model_path.rstrip("/")]
    return "yes", []


UNIT_PREFIX = "llmhost-expert-"


def expert_of_unit(name: str) -> str | None:
    """The expert id a unit file belongs to: llmhost-expert-<id>.service, or its lazy
    proxy llmhost-expert-<id>-proxy.{service,socket} or standby llmhost-expert-<id>-standby.service.
    Ids never end in -proxy or -standby (the schema refuses it), so the name is never ambiguous."""
    if not name.startswith(UNIT_PREFIX):
        return None
    stem, dot, kind = name[len(UNIT_PREFIX):].rpartition(".")
    if not dot or not stem or kind not in ("service", "socket"):
        return None
    for suffix in RESERVED_SUFFIXES:
        if stem.endswith(suffix):
            return stem[:-len(suffix)] or None
    return stem if kind == "service" else None


def stale_experts(unit_names: Iterable[str], planned_ids: Iterable[str]) -> list[str]:
    """Ids that have unit files on the host but are not in the plan, sorted."""
    planned = set(planned_ids)
    return sorted({i for i in (expert_of_unit(n) for n in unit_names) if i and i not in planned})


def port_holders(previous: Any, stale_ids: Iterable[str], plan: Mapping[str, Any]) -> list[str]:
    """Stale experts (about to be pruned) that listen on a port the plan gives to a
    listed expert, as recorded in the host's previous experts.json. They are stopped
    (not removed) before the deploy, so a renamed expert can bind its port, and
    started again if the deploy fails."""
    wanted = {int(p) for e in plan.get("experts", []) for p in (e.get("port"), e.get("backend_port")) if p}
    stale = set(stale_ids)
    old = previous.get("experts", []) if isinstance(previous, Mapping) else []
    out = set()
    for e in old if isinstance(old, list) else []:
        if isinstance(e, Mapping) and e.get("expert_id") in stale:
            ports = {e.get("port"), e.get("backend_port")}
            if any(isinstance(p, int) and p in wanted for p in ports):
                out.add(str(e["expert_id"]))
    return sorted(out)


def expert_env(plan_env: Mapping[str, Any], extra_env: Mapping[str, Any] | None, preload: Mapping[str, Any] | None,
               expert_id: str = "?") -> str:
    """The env file of an expert: the plan's env, the role's extra env, the preloads.

    The extra env adds variables; it may not change one the plan decided (such as
    VLLM_CPU_OMP_THREADS_BIND, which must equal the unit's CPUAffinity)."""
    owned = sorted(k for k in (extra_env or {}) if owned_env(str(k)) and k not in plan_env)
    if owned:
        raise ValueError(f"vllm_experts_extra_env: {', '.join(owned)} is set by the toolkit (the unit or the "
                         "start); no setting may change it")
    clash = sorted(set(extra_env or {}) & set(plan_env))
    if clash:
        raise ValueError(f"vllm_experts_extra_env: {', '.join(clash)} is decided by the plan for expert "
                         f"'{expert_id}'; set it in the expert's 'env' instead")
    return env_file({**plan_env, **(extra_env or {}), **(preload or {})})


# Written into every expert unit: no usage reports, no hub access at run time, no
# AOT artefact (it does not reload on CPU in vLLM 0.32).
FIXED_ENV = {"VLLM_USE_AOT_COMPILE": "0", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
             "TRANSFORMERS_OFFLINE": "1"}
READY_MARGIN_S = 30      # the readiness gate gives up this long before systemd does
PROXY_MARGIN_S = 60      # the lazy proxy waits for the gate this much longer than a start
CLIENT_MARGIN_S = 90     # the deploy's request through a lazy socket waits this much longer


def expert_unit(expert_id: str, start_timeout_s: Any, restart_sec: Any, start_limit_burst: Any,
                state_subdir: str) -> dict[str, Any]:
    """Every number and fixed setting of an expert's units, decided here, printed by the templates."""
    start, restart, burst = int(start_timeout_s), int(restart_sec), int(start_limit_burst)
    state = f"/var/lib/{state_subdir}/{expert_id}"
    env = {"HOME": state, "VLLM_CACHE_ROOT": f"{state}/vllm", "TORCHINDUCTOR_CACHE_DIR": f"{state}/inductor",
           "TMPDIR": f"/run/llmhost-{expert_id}", **FIXED_ENV}
    return {
        "timeout_start_s": start, "ready_timeout_s": start - READY_MARGIN_S,
        "proxy_timeout_start_s": start + PROXY_MARGIN_S, "client_timeout_s": start + CLIENT_MARGIN_S,
        "restart_sec": restart, "start_limit_burst": burst, "start_limit_interval_s": burst * (start + restart),
        "environment": [f"{k}={quote_arg(v)}" for k, v in env.items()],
    }


UNIT_DIR = "/etc/systemd/system"


def unit_names(expert_id: str, unit_dir: str = UNIT_DIR) -> dict[str, Any]:
    """The names and paths of an expert's units: the model's service, and a lazy
    expert's socket and the proxy that socket starts."""
    base = f"llmhost-expert-{expert_id}"
    names = {"service": f"{base}.service", "socket": f"{base}-proxy.socket", "proxy": f"{base}-proxy.service",
             "standby": f"{base}-standby.service"}
    return {**names, **{f"{k}_path": f"{unit_dir}/{v}" for k, v in names.items()},
            # stop order of a new version: the socket first, so nothing starts the model again
            "all": [names["socket"], names["proxy"], names["service"], names["standby"]],
            # a lazy expert's extra files, by their kind
            "lazy_paths": {"proxy.socket": f"{unit_dir}/{names['socket']}",
                           "proxy.service": f"{unit_dir}/{names['proxy']}",
                           "standby.service": f"{unit_dir}/{names['standby']}"},
            # the standby's control socket, in its RuntimeDirectory (launch.py)
            "standby_socket": f"/run/llmhost-{expert_id}/standby.sock"}


def restore_spec(expert_id: str, file_results: Iterable[Mapping[str, Any]],
                 aside_results: Iterable[Mapping[str, Any]] | None = None,
                 unit_dir: str = UNIT_DIR) -> dict[str, Any]:
    """What puts an expert back to its previous version, from the deploy's own results.

    file_results: the template tasks' results for the env file, the unit, and a lazy
    expert's socket and proxy (a result with `backup_file` had a previous version);
    aside_results: the copies of a formerly lazy expert's socket and proxy kept aside
    when it became preloaded (`item` is proxy.socket or proxy.service).
    Used by the start-failure rescue and by the revert after a failed verify stage."""
    names = unit_names(expert_id, unit_dir)
    # a result without dest is check mode's (it would change; nothing was written)
    changed = [r for r in file_results if r.get("changed") and r.get("dest")]
    copies = [{"src": r["backup_file"], "dest": r["dest"]} for r in changed if r.get("backup_file")]
    copies += [{"src": a["dest"], "dest": names["lazy_paths"][a["item"]]}
               for a in aside_results or [] if a.get("dest")]
    return {"expert_id": expert_id, "units": names, "copies": copies,
            "remove": [r["dest"] for r in changed if not r.get("backup_file")],
            "had_previous": bool(copies)}


def previous_unit(stat_results: Iterable[Mapping[str, Any]], units: Mapping[str, str]) -> dict[str, str]:
    """After the files are restored: which unit is the previous version, from a stat of
    the socket's and the service's paths. A socket means it was lazy (loaded on demand)."""
    exists = {r.get("item"): bool(r.get("stat", {}).get("exists")) for r in stat_results}
    if exists.get(units["socket_path"]):
        return {"unit": units["socket"], "kind": "socket, loaded on demand"}
    if exists.get(units["service_path"]):
        return {"unit": units["service"], "kind": "service"}
    return {"unit": "", "kind": ""}


def ip_allow(listen: Iterable[str] = (), connect: Iterable[str] = ()) -> dict[str, str]:
    """IPAddressDeny=/IPAddressAllow= of a service that listens on `listen` and connects to
    `connect` (host:port, [v6]:port, or URLs).

    Loopback only: deny any, allow localhost, plus each address beyond loopback it connects
    to. A service that listens beyond loopback (a wildcard, another address) serves the
    network, and a host name cannot be allowed by address: both get no list ({"deny": "",
    "allow": ""}), since a list would cut its own clients or targets. systemd enforces these
    lists with cgroup v2 BPF only; a cgroup v1 host accepts them and enforces nothing."""
    if any(addresses.loopback(addresses.host_of(a)) is not True for a in listen):
        return {"deny": "", "allow": ""}
    extra = []
    for a in connect:
        host = addresses.bare(addresses.host_of(a))
        if host in ("", "*") or host in ("0.0.0.0", "::"):     # a wildcard bind, reached on loopback
            continue
        where = addresses.loopback(host)
        if where is None:
            return {"deny": "", "allow": ""}
        if not where and host not in extra:
            extra.append(host)
    return {"deny": "any", "allow": " ".join(["localhost", *extra])}

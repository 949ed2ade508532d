"""The host plan: disjoint cores and a memory budget for co-located experts.

Pure functions over validated experts and host facts; reading the controller's
files is `model_files`, printing a plan is `plan_text`. `build_plan` ties schema,
capabilities and translation together; the Ansible filter `llmhost.toolkit.plan`
and `llmhost plan` both call it, so the CLI shows exactly what a run would do.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from .experts import (AUTO_NAME, CONTROL_RE, PROFILE_TABLE, QUANTIZATIONS, TOOLKIT_PORTS, ConfigError, Expert,
                      LazyLoading, assign_ports, host_path_problem, parse_experts)
from .model_files import reference_for
from . import addresses
from .frontdoor import USAGE_METRICS_PATH
from .inputs import EXPOSURE_NOTE_MIN
from . import dtype as dtype_mod
from . import perf
from . import routing as routing_mod
from .plan_text import memory_table
from .systemd import home_sandbox
from .secret_names import REDACTED, is_secret_name
from .translate import Translation, translate

GIB = 1024**3
# Resident memory of one vLLM 0.32 CPU server beyond weights and KV cache
# (Python, torch, oneDNN scratch, compile workers): about 3 GB measured.
DEFAULT_OVERHEAD_GIB = 3.0
# The same for a pooling (embedding) server: all-MiniLM-L6-v2 on vLLM 0.32 measured
# about 2.1 GB resident over its three processes (API server 0.68, engine 0.62,
# worker 0.84 GB).
POOLING_OVERHEAD_GIB = 2.0
# Seconds an expert may take from start to ready (vLLM load, compile warm-up and the
# readiness gate). One budget drives systemd's TimeoutStartSec, the lazy proxy's
# wait, HAProxy's server timeout and the stuck-start alert, so a cold start
# outlasts none of them. 900 s: an AVX2-only 2-core host took about 4 minutes.
DEFAULT_START_BUDGET_S = 900
START_BUDGET_RANGE = (60, 7200)
# Resident memory of a lazy expert's standby: vLLM's OpenAI server imported, nothing
# loaded, one thread (measured 0.6 GiB RSS for vLLM 0.32 on x86; counted with margin).
STANDBY_GIB = 0.75
# An expert's hard memory cap (MemoryMax=) over its planned share (MemoryHigh=).
MEMORY_MAX_HEADROOM = 1.25


@dataclass(frozen=True)
class Shared:
    """Inputs more than one role needs. Declared once, in the llmhost_plan role's
    argument_specs (inventory names llmhost_<field>); the roles read them from the
    plan's "shared" section, never from each other."""

    vllm_version: str = "0.32.0"      # the one pin of the vLLM release (capabilities-vllm-<v>.json ships with it)
    venv: str = "/opt/vllm/venv"
    config_dir: str = "/etc/llmhost"
    frontdoor_port: int = 8082
    frontdoor_metrics_bind: str = "127.0.0.1"
    frontdoor_metrics_port: int = 8405
    # HAProxy's metrics have no authentication: an address other than loopback needs the
    # reason it is safe (the firewall rule or network that limits who reaches it).
    frontdoor_metrics_exposure_note: str = ""


# Ports the host needs for itself: a front door or metrics port there would take it.
HOST_PORTS = {22: "ssh"}
# Trees a toolkit directory must not be (it is created and re-owned by the deploy).
SHARED_DIR_DENY = ("/", "/etc", "/opt", "/usr", "/usr/local", "/var", "/var/lib", "/srv", "/home", "/root",
                   "/run", "/boot", "/bin", "/sbin", "/lib", "/lib64")


def _dir_problem(name: str, v: str) -> str | None:
    why = host_path_problem(v, trees=("/tmp", "/var/tmp", "/dev", "/proc", "/sys", "/run"), exact=SHARED_DIR_DENY)
    if why and why.startswith("must not be"):
        return (f"llmhost_{name}: {v!r} is a system or shared directory; the deploy creates and re-owns this "
                "directory, so give one of its own (such as /etc/llmhost or /opt/vllm/venv)")
    return f"llmhost_{name}: {why}, got {v!r}" if why else None


def parse_shared(raw: Mapping[str, Any] | None) -> Shared:
    """The shared inputs, typed; ConfigError naming the inventory variable otherwise."""
    raw = {k: v for k, v in (raw or {}).items() if v not in (None, "")}
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name, default in asdict(Shared()).items():
        v = raw.get(name, default)
        if isinstance(default, int):
            try:
                v = int(str(v), 10)
            except ValueError:
                problems.append(f"llmhost_{name}: expected a port number, got {v!r}")
                continue
            if not 1 <= v <= 65535:
                problems.append(f"llmhost_{name}: must be 1..65535, got {v}")
        else:
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                problems.append(f"llmhost_{name}: expected a string, got {v!r:.80}")
                continue
            v = str(v)
            if CONTROL_RE.search(v):
                problems.append(f"llmhost_{name}: control characters are not allowed")
            elif name in ("venv", "config_dir"):
                why = _dir_problem(name, v)
                if why:
                    problems.append(why)
            elif name == "frontdoor_metrics_bind" and not addresses.is_bind(v):
                problems.append(f"llmhost_{name}: an IP address, '*' or localhost, got {v!r:.80}")
            elif name == "vllm_version" and not re.match(r"^[0-9]+\.[0-9]+\.[0-9]+([.+a-z0-9]*)$", v):
                problems.append(f"llmhost_{name}: a release such as 0.32.0, got {v!r:.80}")
        out[name] = v
    unknown = sorted(set(raw) - set(asdict(Shared())))
    problems += [f"llmhost_plan_shared: unknown key {k!r}" for k in unknown]
    if problems:
        raise ConfigError(problems)
    shared = Shared(**out)
    if shared.frontdoor_port == shared.frontdoor_metrics_port:
        raise ConfigError([f"llmhost_frontdoor_metrics_port: {shared.frontdoor_metrics_port} is the front door's port"])
    taken = {**HOST_PORTS, **{p: w for p, w in TOOLKIT_PORTS.items() if w not in ("the front door",
                                                                                 "HAProxy's metrics endpoint")}}
    for name in ("frontdoor_port", "frontdoor_metrics_port"):
        port = getattr(shared, name)
        if port in taken:
            problems.append(f"llmhost_{name}: {port} is {taken[port]}'s port on the host")
    if shared.venv == shared.config_dir:
        problems.append(f"llmhost_venv: the same directory as llmhost_config_dir ({shared.venv})")
    if (addresses.loopback(shared.frontdoor_metrics_bind) is not True
            and len(shared.frontdoor_metrics_exposure_note.strip()) < EXPOSURE_NOTE_MIN):
        problems.append(f"llmhost_frontdoor_metrics_bind: {shared.frontdoor_metrics_bind} publishes HAProxy's "
                        "metrics, which have no authentication; keep 127.0.0.1 (Prometheus on the host scrapes "
                        "it), or say in llmhost_frontdoor_metrics_exposure_note which firewall rule limits who "
                        "reaches it")
    if problems:
        raise ConfigError(problems)
    return shared


def toolkit_ports(shared: Shared) -> dict[int, str]:
    """Every port the toolkit itself listens on, with this inventory's front door ports."""
    return {**TOOLKIT_PORTS, shared.frontdoor_port: "the front door",
            shared.frontdoor_metrics_port: "HAProxy's metrics endpoint"}


@dataclass(frozen=True)
class Host:
    cpus: tuple[int, ...]          # usable CPU ids, in order
    memory_bytes: int
    arch: str = "x86_64"
    isa: Mapping[str, bool] = field(default_factory=dict)
    model: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


# A lazily loaded expert's vLLM listens here (port + offset); systemd's socket
# holds the expert's own port and starts the model on the first connection.
LAZY_BACKEND_OFFSET = 10000


@dataclass
class ExpertPlan:
    expert_id: str
    port: int
    backend_port: int
    cores: list[int]
    cpu_list: str
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    preload: bool
    names: list[str]
    translation: Translation
    expert: Expert
    reference: str | None = None
    reference_why: str = ""
    shape: perf.Shape | None = None
    predicted: perf.Prediction | None = None
    quantization: str | None = None      # what is served (the expert's request, or None: the float model)
    quantization_reason: str = ""
    model_source: str | None = None      # the folder copied to the host (the float one on a fallback)

    @property
    def memory_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def evict_cost(self) -> float:
        """The admission gate stops the lazy experts with the lowest first: the expert's
        own, else its planned weights in GiB (what a reload reads)."""
        return self.expert.evict_cost if self.expert.evict_cost is not None else round(self.weights_gib, 2)

    @property
    def pinned(self) -> bool:
        return self.expert.pinned


@dataclass
class Plan:
    experts: list[ExpertPlan]
    reserved: list[int]
    budget_gib: float
    loaded_at_once_gib: float
    memory_gib: float
    lazy: LazyLoading
    warnings: list[str] = field(default_factory=list)
    default_expert: str = ""
    folded: dict[str, Any] | None = None   # set when planned for more CPUs than this host has
    start_budget_s: int = DEFAULT_START_BUDGET_S
    shared: Shared = Shared()
    routing: dict[str, Any] | None = None
    host_profile: perf.HostProfile | None = None

    def to_dict(self) -> dict[str, Any]:
        out = []
        for e in self.experts:
            x = e.expert
            out.append({
                "expert_id": e.expert_id, "port": e.port, "backend_port": e.backend_port,
                "domain": x.domain, "priority": x.priority, "profile": x.profile, "model": x.model,
                "model_source": e.model_source, "runner": x.runner, "route_examples": list(x.route_examples),
                "thresholds": {k: v for k, v in asdict(x.thresholds).items() if v is not None},
                "preload_tcmalloc": PROFILE_TABLE[x.profile].preload_tcmalloc,
                "cores": e.cores, "cpu_list": e.cpu_list,
                "weights_gib": round(e.weights_gib, 2), "kv_cache_gib": e.kv_cache_gib,
                "overhead_gib": e.overhead_gib, "memory_gib": round(e.memory_gib, 2),
                # MemoryHigh at the plan's share: the kernel reclaims and throttles above it;
                # MemoryMax a quarter higher: only a runaway expert is killed, and only it.
                "memory_high_bytes": int(e.memory_gib * GIB),
                "memory_max_bytes": int(e.memory_gib * MEMORY_MAX_HEADROOM * GIB),
                "preload": e.preload, "pinned": e.pinned, "evict_cost": e.evict_cost,
                "standby_gib": own_standby(e, self.lazy),
                "names": e.names, "argv": e.translation.argv,
                "dtype": e.translation.dtype.dtype if e.translation.dtype else None,
                "dtype_reason": e.translation.dtype.reason if e.translation.dtype else None,
                "compile": e.translation.compile.mode if e.translation.compile else None,
                "compile_reason": e.translation.compile.reason if e.translation.compile else None,
                "reference": e.reference, "reference_why": e.reference_why,
                **dict(zip(("protect_home", "bind_read_only"), home_sandbox(x.model))),
                "reference_on_host": f"{self.shared.config_dir}/references/{e.expert_id}.json" if e.reference else None,
                "env": e.translation.env, "report": [str(x) for x in e.translation.report],
                "quantization": e.quantization, "quantization_requested": x.quantization,
                "quantization_reason": e.quantization_reason, "accept_miss": x.accept_miss,
                "shape": asdict(e.shape) if e.shape else None,
                "predicted": e.predicted.to_dict() if e.predicted else None,
            })
        return {"experts": out, "reserved_cores": self.reserved, "budget_gib": round(self.budget_gib, 2),
                "standby_gib": round(standby_gib(self.experts, self.lazy), 2),
                "loaded_at_once_gib": round(self.loaded_at_once_gib, 2),
                "memory_gib": round(self.memory_gib, 2), "lazy_loading": asdict(self.lazy),
                "default_expert": self.default_expert, "folded": self.folded,
                "start_budget_s": self.start_budget_s, "shared": asdict(self.shared), "routing": self.routing,
                "usage_metrics_path": USAGE_METRICS_PATH,
                "host_profile": self.host_profile.to_dict() if self.host_profile else None,
                "warnings": self.warnings}


def cpu_list(cores: Sequence[int]) -> str:
    """[0,1,2,5,6] -> "0-2,5-6" (the syntax of CPUAffinity and VLLM_CPU_OMP_THREADS_BIND)."""
    parts: list[str] = []
    cs = sorted(cores)
    i = 0
    while i < len(cs):
        j = i
        while j + 1 < len(cs) and cs[j + 1] == cs[j] + 1:
            j += 1
        parts.append(str(cs[i]) if i == j else f"{cs[i]}-{cs[j]}")
        i = j + 1
    return ",".join(parts)


def split_cores(experts: Sequence[Expert], cpus: Sequence[int], reserved: int) -> tuple[dict[str, list[int]], list[int]]:
    """Disjoint, contiguous core ranges, one per expert.

    The OS and front door keep the first `reserved` CPUs. Explicit `cores` are
    honoured; the rest is shared by priority (largest remainder), at least one each.
    """
    if reserved < 0 or reserved >= len(cpus):
        raise ConfigError([f"host field 'reserved_cores': {reserved} leaves no CPU of {len(cpus)} for experts"])
    pool = list(cpus)[reserved:]
    # cores: 0 (pooling experts only): no CPUs of its own; it runs on the reserved
    # ones beside the front door it serves, or on all CPUs when none are reserved.
    on_reserved = [e for e in experts if e.cores == 0]
    experts = [e for e in experts if e.cores != 0]
    fixed = {e.expert_id: e.cores for e in experts if e.cores}
    flexible = [e for e in experts if not e.cores]
    need = sum(fixed.values()) + len(flexible)
    if need > len(pool):
        raise ConfigError([
            f"expert '{e.expert_id}' field 'cores': the plan needs {need} CPUs "
            f"({sum(fixed.values())} explicit + 1 per other expert) but {len(pool)} are free "
            f"after reserving {reserved}" for e in experts if e.cores] or [
            f"expert '{experts[-1].expert_id}' field 'cores': {len(experts)} experts need one CPU each, "
            f"{len(pool)} are free after reserving {reserved}"])
    counts = dict(fixed)
    spare = len(pool) - sum(fixed.values())
    if flexible:
        weights = [max(e.priority, 1) for e in flexible]
        total = sum(weights)
        extra = spare - len(flexible)  # one each first, the rest by weight
        shares = [extra * w / total for w in weights]
        base = [int(s) for s in shares]
        left = extra - sum(base)
        order = sorted(range(len(flexible)), key=lambda i: (-(shares[i] - base[i]), -weights[i], i))
        for i in order[:left]:
            base[i] += 1
        for e, b in zip(flexible, base):
            counts[e.expert_id] = 1 + b
    out: dict[str, list[int]] = {}
    pos = 0
    for e in experts:  # declaration order: stable ranges when one expert changes
        n = counts[e.expert_id]
        out[e.expert_id] = pool[pos:pos + n]
        pos += n
    for e in on_reserved:
        out[e.expert_id] = list(cpus)[:reserved] or list(cpus)
    return out, list(cpus)[:reserved]


def fold_cores(planned: Sequence[int], host_cpus: Sequence[int]) -> list[int]:
    """Planned CPU i runs on host CPU i mod n: the same shape, on fewer cores."""
    return sorted({host_cpus[c % len(host_cpus)] for c in planned})


def served_names(experts: Sequence[Expert]) -> dict[str, list[str]]:
    """expert_id and its explicit aliases. No implicit names: a change to one
    expert must never rename (and so restart) another."""
    return {e.expert_id: [e.expert_id, *e.aliases] for e in experts}


def default_reserved(ncpus: int) -> int:
    """CPUs kept for the OS and the front door: none on small hosts, 2 from 8 CPUs up."""
    return 0 if ncpus < 8 else 2


def build_plan(
    raw_experts: Any,
    raw_lazy: Any,
    caps: Mapping[str, Any],
    host: Host,
    *,
    reserved_cores: int = 0,
    weights_bytes: Mapping[str, int] | None = None,
    overhead_gib: float = DEFAULT_OVERHEAD_GIB,
    strict: bool = False,
    default_expert: str | None = None,
    expect_cpus: int | None = None,
    start_budget_s: Any = DEFAULT_START_BUDGET_S,
    shared: Shared | None = None,
    reference_lookup: Callable[[Expert], tuple[str | None, str]] = reference_for,
    routing: Any = None,
    host_profile: Any = None,
    measured_profile: Any = None,
    checkpoints: Mapping[str, tuple[perf.Shape | None, str | None]] | None = None,
    float_sources: Mapping[str, tuple[str, int | None]] | None = None,
    core_split: str = "priority",
) -> Plan:
    """Everything a deploy needs, or ConfigError listing every problem.

    Pure over its arguments: what the controller's files say (weight sizes, the
    reference answers) comes in as `weights_bytes` and `reference_lookup`, both
    read by `llmhost.model_files`. `host_profile` is the inventory's (llmhost_host_profile),
    `measured_profile` the one the install stage measured on this host: the measured one
    wins, except on a folded plan, whose performance is the inventory host's."""
    experts, lazy = parse_experts(raw_experts, raw_lazy)
    route = routing_mod.parse_routing(routing)
    shared = shared or Shared()
    problems: list[str] = []
    lo, hi = START_BUDGET_RANGE
    if isinstance(start_budget_s, bool) or not isinstance(start_budget_s, int) or not lo <= start_budget_s <= hi:
        raise ConfigError([f"llmhost_start_budget_s: whole seconds in {lo}..{hi}, got {start_budget_s!r}"])
    warnings: list[str] = []
    ids = [e.expert_id for e in experts]
    if default_expert and default_expert not in ids:
        raise ConfigError([f"llmhost_default_expert: {default_expert!r} is not an expert ({', '.join(ids)})"])
    if default_expert and next(e for e in experts if e.expert_id == default_expert).pooling:
        raise ConfigError([f"llmhost_default_expert: {default_expert!r} is a pooling (embedding) expert; the "
                           "default answers chat, so it must be a generate expert"])
    generate = [e for e in experts if not e.pooling]
    if experts and not generate:
        raise ConfigError(["llmhost_experts: every expert is a pooling (embedding) expert; at least one must "
                           "generate (runner: generate, the default)"])
    if not default_expert:
        general = [e for e in generate if e.domain == "general"] or generate
        default_expert = sorted(general, key=lambda e: (-e.priority, ids.index(e.expert_id)))[0].expert_id
    caps = {**caps, "cpu": {**caps.get("cpu", {}), "arch": host.arch, "isa": dict(host.isa), "model": host.model}}
    ports = assign_ports(experts, avoid=toolkit_ports(shared))
    folded: dict[str, Any] | None = None
    is_folded = bool(expect_cpus and expect_cpus > len(host.cpus))
    profile = choose_profile(host_profile, measured_profile, is_folded, host.model)
    quant_ok = perf.quant_support(caps, host.arch, host.isa)
    if core_split not in CORE_SPLITS:
        raise ConfigError([f"llmhost_core_split: one of {', '.join(CORE_SPLITS)}, got {core_split!r}"])
    if core_split == "budget":
        if profile is None:
            warnings.append("llmhost_core_split: budget needs a host profile (llmhost_host_profile, or the one the "
                            "install stage measures on the first deploy): split by priority this time")
            core_split = "priority"
    if core_split == "budget" and profile is not None:
        sized = {e.expert_id: sizing(e, host, quant_ok, weights_bytes, checkpoints, float_sources) for e in experts}
        experts, notes = budget_cores(experts, sized, profile, (expect_cpus if is_folded else len(host.cpus)) or 0,
                                      reserved_cores)
        warnings += notes
    if is_folded and expect_cpus:
        # A staging host smaller than the one the inventory describes: plan the real
        # split on the expected CPUs, then fold each planned CPU onto this host's.
        planned, reserved_planned = split_cores(experts, tuple(range(expect_cpus)), reserved_cores)
        counts = {k: len(v) for k, v in planned.items()}
        pool = expect_cpus - len(reserved_planned)
        cores = {k: fold_cores(v, host.cpus) for k, v in planned.items()}
        reserved = fold_cores(reserved_planned, host.cpus)
        folded = {"expected_cpus": expect_cpus, "host_cpus": len(host.cpus),
                  "planned_cpu_lists": {k: cpu_list(v) for k, v in planned.items()}}
        warnings.append(f"FOLDED: the core split is planned for the {expect_cpus} CPUs the inventory expects and "
                        f"folded onto this host's {len(host.cpus)}; experts share cores here, so latency and "
                        "throughput figures from this host are not performance figures and are not reported")
    else:
        cores, reserved = split_cores(experts, host.cpus, reserved_cores)
        counts = {k: len(v) for k, v in cores.items()}
        pool = len(host.cpus) - len(reserved)
    names = served_names(experts)
    for e in experts:
        if e.expert_id != default_expert and AUTO_NAME in names[e.expert_id]:
            field_ = "expert_id" if e.expert_id == AUTO_NAME else "aliases"
            problems.append(f"expert '{e.expert_id}' field '{field_}': '{AUTO_NAME}' is the front door's name for "
                            f"the default expert ('{default_expert}'); only that expert may carry it")
    # "auto" (the old router's choice) is served by the default expert itself, so
    # vLLM accepts it when the front door sends such a request there.
    if not any(AUTO_NAME in n for n in names.values()):
        names[default_expert] = [*names[default_expert], AUTO_NAME]
    by_priority = sorted(experts, key=lambda e: (-e.priority, experts.index(e)))
    preload_ids = {e.expert_id for e in (by_priority[:lazy.warmup_pool_size] if lazy.enabled else experts)}
    route_problems, route_warnings = routing_mod.problems(route, experts, default_expert, preload_ids)
    problems += route_problems
    warnings += route_warnings
    if route is not None:
        # Routed by meaning, an "auto" request may reach any expert with examples,
        # which must then accept the name (vLLM answers with its first name).
        for e in experts:
            if e.route_examples and AUTO_NAME not in names[e.expert_id]:
                names[e.expert_id] = [*names[e.expert_id], AUTO_NAME]
    plans: list[ExpertPlan] = []
    for e in experts:
        wb = (weights_bytes or {}).get(e.expert_id)
        if wb is not None:
            w_gib = wb / GIB
        elif e.weights_gib is not None:
            w_gib = e.weights_gib
        else:
            problems.append(f"expert '{e.expert_id}' field 'weights_gib': model size unknown "
                            f"({e.model} not readable here); set weights_gib")
            continue
        if not float(e.kv_cache_gib).is_integer():
            problems.append(f"expert '{e.expert_id}' field 'kv_cache_gib': VLLM_CPU_KVCACHE_SPACE takes whole GiB, "
                            f"got {e.kv_cache_gib}")
        bind = cpu_list(cores[e.expert_id]) if PROFILE_TABLE[e.profile].bind_threads else None
        preload = e.expert_id in preload_ids
        backend = ports[e.expert_id] if preload else ports[e.expert_id] + LAZY_BACKEND_OFFSET
        t = translate(e, caps, port=backend, cores=bind, preload=preload)
        t.argv[t.argv.index("--served-model-name") + 1:t.argv.index("--served-model-name") + 2] = names[e.expert_id]
        problems += t.errors(strict)
        warnings += t.warnings
        ref, ref_why = reference_lookup(e)
        if e.reference and ref is None:
            problems.append(f"expert '{e.expert_id}' field 'reference': {ref_why}")
        q = served_quantization(e, host, quant_ok, float_sources)
        served_q, q_reason, source, fallback_bytes = q.served, q.reason, q.source, q.source_bytes
        problems += q.problems
        warnings += q.warnings
        stored = (checkpoints or {}).get(e.expert_id, (None, "?"))[1]
        if stored != "?" and stored != e.quantization and not e.pooling \
                and (stored in QUANTIZATIONS or e.quantization):   # awq, gptq, ...: engine.quantization's
            problems.append(f"expert '{e.expert_id}' field 'quantization': "
                            + (f"the checkpoint is {stored}; declare quantization: {stored}" if not e.quantization
                               else f"declares {e.quantization} but the checkpoint is {stored or 'not quantized'}"))
        sized = sizing(e, host, quant_ok, weights_bytes, checkpoints, float_sources)   # as the core split saw it
        shape = sized[0] if sized else None
        if source != e.model_source and fallback_bytes:
            w_gib = fallback_bytes / GIB   # the float model is what the host holds
        predicted = None
        if shape and profile:
            dtype = t.dtype.dtype if t.dtype else "bfloat16"
            n = counts[e.expert_id] if bind else len(host.cpus if not is_folded else range(expect_cpus or 0))
            predicted = perf.predict(shape, profile, cores=n, dtype=dtype, quantization=served_q)
            served = [q for q, why in quant_ok.items() if not why and not perf.quant_native(q, host.isa)]
            judge(e, predicted, shape, profile, dtype, served, pool, problems, warnings)
        plans.append(ExpertPlan(
            expert_id=e.expert_id, port=ports[e.expert_id], backend_port=backend, cores=cores[e.expert_id],
            cpu_list=cpu_list(cores[e.expert_id]) if bind else cpu_list(host.cpus),
            weights_gib=w_gib, kv_cache_gib=e.kv_cache_gib,
            overhead_gib=min(overhead_gib, POOLING_OVERHEAD_GIB) if e.pooling else overhead_gib,
            preload=preload, names=names[e.expert_id], translation=t, expert=e,
            reference=ref, reference_why=ref_why, shape=shape, predicted=predicted,
            quantization=served_q, quantization_reason=q_reason, model_source=source))
    problems += port_problems(plans, toolkit_ports(shared))
    budget = lazy.memory_threshold * host.memory_gib
    mems = sorted((p.memory_gib for p in plans), reverse=True)
    at_once = loaded_at_once(plans, lazy)
    never_stopped = [p for p in plans if p.preload or (lazy.enabled and p.pinned)]
    if lazy.enabled and plans and any(not p.preload for p in plans) \
            and lazy.max_loaded_experts <= len(never_stopped) and any(p not in never_stopped for p in plans):
        problems.append(
            f"lazy_loading field 'max_loaded_experts': {lazy.max_loaded_experts} leaves no room for a lazy expert "
            f"next to the {len(never_stopped)} preloaded or pinned ones (they are never stopped to make room); "
            "raise it, or lower warmup_pool_size, or pin fewer")
    plan = Plan(plans, reserved, budget, at_once, sum(mems), lazy, warnings, default_expert, folded, start_budget_s,
                shared, host_profile=profile)
    if route is not None and not route_problems:
        emb_bytes = (weights_bytes or {}).get(route.embedder)
        plan.routing = routing_mod.section(route, plan.to_dict()["experts"], default_expert, emb_bytes)
    problems += memory_problems(plans, lazy, budget, host.memory_gib, plan)
    if problems:
        raise ConfigError(problems)
    return plan


CORE_SPLITS = ("priority", "budget")


@dataclass
class Served:
    """How an expert's quantization is served on this host: as asked, or its float source."""

    served: str | None
    reason: str = ""
    source: str | None = None
    source_bytes: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def served_quantization(e: Expert, host: Host, quant_ok: Mapping[str, str],
                        float_sources: Mapping[str, tuple[str, int | None]] | None) -> Served:
    """The format served: the requested one where the pinned vLLM serves it on this CPU at
    full precision; the float model it was made from where int8 dot products are missing
    (and known); else a problem naming the field (allow_emulated_dtype forces it)."""
    q = e.quantization
    out = Served(q, source=e.model_source)
    if not q:
        return out
    if quant_ok.get(q):
        out.problems.append(f"expert '{e.expert_id}' field 'quantization': {q} is not served on this "
                            f"host ({' '.join(filter(None, (host.arch, host.model)))}): {quant_ok[q]}; "
                            f"served here: {', '.join(k for k, why in quant_ok.items() if not why) or 'none'}")
        return out
    slow = perf.quant_native(q, host.isa)
    if not slow:
        out.reason = f"{q} (int8 dot products)" if q in perf.INT8_ACTIVATIONS else q
        return out
    fallback, fallback_bytes = (float_sources or {}).get(e.expert_id) or (None, None)
    if e.allow_emulated_dtype:
        out.reason = f"{q}, forced (allow_emulated_dtype) although {slow}"
        out.warnings.append(f"expert '{e.expert_id}': {out.reason}")
    elif fallback:
        out.served, out.source, out.source_bytes = None, fallback, fallback_bytes
        out.reason = f"float model {fallback} ({q} requested, but {slow})"
    else:
        out.problems.append(f"expert '{e.expert_id}' field 'quantization': {q} on this CPU: {slow}; serve the "
                            "float model, or set allow_emulated_dtype: true to serve it anyway")
    return out


def sizing(e: Expert, host: Host, quant_ok: Mapping[str, str], weights_bytes: Mapping[str, int] | None,
           checkpoints: Mapping[str, Any] | None,
           float_sources: Mapping[str, tuple[str, int | None]] | None) -> tuple[perf.Shape, str, str | None] | None:
    """(shape, dtype, served quantization) of a generate expert for the core split; None
    when unknown (the main loop reports why)."""
    if e.pooling:
        return None
    wb = (weights_bytes or {}).get(e.expert_id)
    w = wb if wb is not None else (e.weights_gib * GIB if e.weights_gib is not None else None)
    read_shape = ((checkpoints or {}).get(e.expert_id) or (None, None))[0]
    if read_shape is None and w is None:
        return None
    shape = read_shape or perf.shape_from_bytes(float(w or 0), e.quantization)
    choice, _ = dtype_mod.choose(e.effective_engine().get("dtype", "auto"), host.arch, host.isa,
                                 allow_emulated=e.allow_emulated_dtype)
    return shape, choice.dtype if choice else "bfloat16", served_quantization(e, host, quant_ok, float_sources).served


def budget_cores(experts: Sequence[Expert], sized: Mapping[str, Any], profile: perf.HostProfile, ncpus: int,
                 reserved: int) -> tuple[list[Expert], list[str]]:
    """llmhost_core_split: budget. Experts without explicit cores get the fewest that
    meet their thresholds by the performance model, the rest by bandwidth demand."""
    flexible = [e for e in experts if e.cores is None and sized.get(e.expert_id)
                and PROFILE_TABLE[e.profile].bind_threads]   # a legacy expert runs on every CPU anyway
    fixed = sum(e.cores or 0 for e in experts) + sum(1 for e in experts if e.cores is None and e not in flexible)
    pool = ncpus - reserved - fixed
    if not flexible or pool < len(flexible):
        return list(experts), []   # split_cores reports a pool too small
    needs: dict[str, int | None] = {}
    demand: dict[str, float] = {}
    for e in flexible:
        shape, dtype, q = sized[e.expert_id]
        thr = {k: v for k, v in asdict(e.thresholds).items() if v is not None}
        needs[e.expert_id] = perf.fewest_cores(shape, profile, thr, dtype=dtype, quantization=q,
                                               max_cores=pool - len(flexible) + 1)
        demand[e.expert_id] = perf.bytes_per_token(shape, dtype, q) * (thr.get("decode_tps_min") or 1.0)
    order = [e.expert_id for e in sorted(flexible, key=lambda e: (-e.priority, experts.index(e)))]
    counts, notes = perf.budget_split(needs, demand, order, pool)
    split = ", ".join(f"{i} {counts[i]}" for i in order)
    notes = [f"llmhost_core_split budget: {split} cores (fewest that meet each expert's thresholds, the rest by "
             "bandwidth demand)", *[f"llmhost_core_split budget: {n}" for n in notes]]
    return [replace(e, cores=counts[e.expert_id]) if e.expert_id in counts else e for e in experts], notes


def choose_profile(inventory: Any, measured: Any, folded: bool, cpu_model: str = "") -> perf.HostProfile | None:
    """The host profile a plan predicts with: the one measured on this host, else the
    inventory's; on a folded plan (a small host rehearsing a big one) the inventory's.
    A measured profile of another CPU model (a VM moved to another machine type) is not
    this host's: the install stage measures it again."""
    inv = perf.parse_profile(inventory)
    try:
        got = perf.parse_profile(measured, "the host's measured profile")
    except ConfigError:
        got = None  # a damaged cache file is measured again by the install stage
    if got and cpu_model and got.cpu and not got.cpu.startswith("Arm part") and got.cpu != cpu_model:
        got = None
    return inv if folded else (got or inv)


def judge(e: Expert, pred: perf.Prediction, shape: perf.Shape, profile: perf.HostProfile, dtype: str,
          served: Sequence[str], pool: int, problems: list[str], warnings: list[str]) -> None:
    """A prediction against the expert's thresholds: out of reach fails the plan unless
    the expert accepts the miss (accept_miss); within the model's error, a warning."""
    thr = {k: v for k, v in asdict(e.thresholds).items() if v is not None}
    misses = perf.fits(pred, thr)
    kind = "an assumed" if profile.assumed else "a measured"
    if misses:
        lever = perf.levers(shape, profile, thr, dtype=dtype, quantizations=served, max_cores=pool)
        what = (f"expert '{e.expert_id}' field 'thresholds': out of reach on this host by {kind} profile: "
                f"{'; '.join(misses)} ({pred.basis}); {lever}")
        if e.accept_miss:
            warnings.append(f"{what}. Accepted (accept_miss): {e.accept_miss}")
        else:
            problems.append(f"{what}; or set accept_miss with the reason")
        return
    close = [k for k, v in (("decode_tps_min", pred.decode_tps < thr.get("decode_tps_min", 0) * (1 + perf.MARGIN)),
                            ("ttft_p50_s", pred.ttft_s > thr.get("ttft_p50_s", math.inf) * (1 - perf.MARGIN))) if v]
    if close:
        warnings.append(f"expert '{e.expert_id}': predicted decode {pred.decode_tps:.1f} tokens/s, TTFT "
                        f"{pred.ttft_s:.2f} s: within {perf.MARGIN:.0%} of {', '.join(close)} (the model's error)")


def port_problems(plans: Sequence[ExpertPlan], toolkit: Mapping[int, str] = TOOLKIT_PORTS) -> list[str]:
    """Every port an expert listens on (its own, and a lazy one's backend) is free:
    no other expert's, none of the toolkit's, and a real TCP port."""
    owner: dict[int, str] = {}
    out: list[str] = []
    for p in plans:
        if p.port in toolkit:
            out.append(f"expert '{p.expert_id}' field 'port': {p.port} is {toolkit[p.port]}'s port")
        owner.setdefault(p.port, f"expert '{p.expert_id}'")
    for p in plans:
        if p.backend_port == p.port:
            continue
        what = (f"expert '{p.expert_id}' field 'port': a lazy expert's model listens on port + "
                f"{LAZY_BACKEND_OFFSET} = {p.backend_port}")
        if p.backend_port > 65535:
            out.append(f"{what}, beyond 65535; use a port below {65536 - LAZY_BACKEND_OFFSET}")
        elif p.backend_port in toolkit:
            out.append(f"{what}, which is {toolkit[p.backend_port]}'s port")
        elif p.backend_port in owner:
            out.append(f"{what}, which is also used by {owner[p.backend_port]}")
        else:
            owner[p.backend_port] = f"expert '{p.expert_id}' (lazy backend)"
    return out




def redact_env(experts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The plan's experts with secret-looking env values (HF_TOKEN, *_KEY, ...) replaced:
    for files others may read (experts.json) and for reports. The values live only in
    the per-expert env files, 0640 to the service group."""
    out = []
    for e in experts:
        env = {k: (REDACTED if is_secret_name(k) else v) for k, v in (e.get("env") or {}).items()}
        out.append({**e, "env": env})
    return out


def memory_problems(plans: Sequence[ExpertPlan], lazy: LazyLoading, budget: float, host_gib: float,
                    plan: Plan) -> list[str]:
    """What can never fit. Preloaded experts (and loaded pinned ones) are never stopped,
    so they must fit together; each other lazy expert must fit beside them, because
    the admission gate loads it only within the budget, stopping idle lazy experts
    to make room (admit.py). Without lazy loading every expert runs at once."""
    if not plans:
        return []
    fixed = [p for p in plans if p.preload or (lazy.enabled and p.pinned)]
    fixed_gib = sum(p.memory_gib for p in fixed) + sum(own_standby(p, lazy) for p in plans if p not in fixed)
    of = f"memory_threshold {lazy.memory_threshold:g} x {host_gib:.1f} GiB = {budget:.1f} GiB"
    if fixed_gib > budget:
        what = "the preloaded and pinned experts" if lazy.enabled else "the experts (all loaded: lazy loading is off)"
        return [f"memory: {what} need {fixed_gib:.1f} GiB together, more than {of}\n" + memory_table(plan)]
    # a loaded lazy expert's server is forked from its standby: its plan includes the standby
    out = [f"expert '{p.expert_id}' memory: it plans {p.memory_gib:.1f} GiB and the experts never stopped to "
           f"make room (preloaded or pinned, and the lazy ones' standbys) {fixed_gib - own_standby(p, lazy):.1f} GiB, "
           f"more than {of} together: it could never load"
           for p in plans if p not in fixed and fixed_gib - own_standby(p, lazy) + p.memory_gib > budget]
    return out + ([memory_table(plan)] if out else [])


def own_standby(p: ExpertPlan, lazy: LazyLoading) -> float:
    """What a lazy expert keeps resident while not loaded: its standby (vLLM imported, no
    model). Loaded, its server is forked from the standby, so its plan includes it."""
    return STANDBY_GIB if lazy.enabled and lazy.standby and not p.preload else 0.0


def standby_gib(plans: Sequence[ExpertPlan], lazy: LazyLoading) -> float:
    """The lazy experts' standbys, resident all the time."""
    return sum(own_standby(p, lazy) for p in plans)


def loaded_at_once(plans: Sequence[ExpertPlan], lazy: LazyLoading) -> float:
    """Memory of the most that can run together: every preloaded expert (never stopped)
    plus the largest lazy ones that fit in the rest of max_loaded_experts, and the
    standbys of the other lazy ones."""
    if not lazy.enabled:
        return sum(p.memory_gib for p in plans)
    pre = [p.memory_gib for p in plans if p.preload]
    lazies = sorted((p for p in plans if not p.preload), key=lambda p: p.memory_gib, reverse=True)
    top = lazies[:max(0, lazy.max_loaded_experts - len(pre))]
    return sum(pre) + sum(p.memory_gib for p in top) + sum(own_standby(p, lazy) for p in lazies[len(top):])


def alert_budgets(plan: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per expert, the TTFT and TBT p95 budgets the alerts use: the expert's own
    thresholds, else the monitoring defaults."""
    out = []
    for e in plan["experts"]:
        if e.get("runner") == "pooling":
            continue  # an embedding model makes no tokens: no TTFT or TBT to budget
        thr = {**dict(defaults), **(e.get("thresholds") or {})}
        out.append({"expert_id": e["expert_id"], "ttft_p95_s": float(thr["ttft_p95_s"]),
                    "tbt_p95_s": float(thr["tbt_p95_s"])})
    return out


def effective_config(plan: Mapping[str, Any]) -> dict[str, Any]:
    """/etc/llmhost/experts.json: what people, the smoke test and the probe timer read
    (secret-looking env values redacted)."""
    return {"managed_by": "llmhost", "experts": redact_env(plan["experts"]), "lazy_loading": plan["lazy_loading"],
            "budget_gib": plan["budget_gib"], "reserved_cores": plan["reserved_cores"],
            "folded": plan.get("folded")}

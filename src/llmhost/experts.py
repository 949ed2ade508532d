"""The experts list: schema, validation and profiles.

An inventory carries `llmhost_experts` (a list of experts) and
`llmhost_lazy_loading`. `parse_experts` checks every field and returns typed
objects, or raises ConfigError whose lines each name the expert and the field.
Nothing on a host is touched before this passes (playbooks/preflight.yml).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# Names (docs/experts.md "Names"). An expert id is also a systemd unit name part, a
# file name and an HAProxy backend: lower-case letters, digits, '.', '_' and '-',
# starting with a letter or digit, at most 63 characters, not ending in "-proxy"
# (a lazy expert's proxy unit is llmhost-expert-<id>-proxy). An alias is a model
# name clients send: the same characters plus upper case, '/', ':' and '+', at
# most 128, starting with a letter or digit (so never '#', a comment in a map file).
# "auto" is the front door's name for the default expert: only that expert may carry it.
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")
RESERVED_SUFFIXES = ("-proxy", "-standby")   # a lazy expert's other units
AUTO_NAME = "auto"
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Control characters (newline included) would let a value start a new line in a
# unit, an env file or a map file: refused in every string field.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Ports the toolkit itself uses with its default settings (the plan adds this
# inventory's front door ports and checks every expert port against them).
TOOLKIT_PORTS = {8082: "the front door", 8405: "HAProxy's metrics endpoint", 9090: "Prometheus",
                 9100: "node exporter"}
# Environment the toolkit owns (one list, docs/experts.md "What the toolkit owns"): the
# plan's per-expert values, what every unit fixes (llmhost.systemd.FIXED_ENV) and what
# the start itself needs. No expert's `env` and no `vllm_experts_extra_env` may set them.
OWNED_ENV = frozenset({
    "VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "THP_MEM_ALLOC_ENABLE",   # planned per expert
    "VLLM_USE_AOT_COMPILE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK",                   # fixed in every unit
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",                                        # never the hub at run time
    "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PATH",             # what the start loads
    "HOME", "TMPDIR", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR",                  # the unit's private dirs
    "VLLM_HOST_IP", "VLLM_PORT", "VLLM_API_KEY", "VLLM_WORKER_MULTIPROC_METHOD",     # where and how it serves
})
OWNED_ENV_PREFIXES = ("LLMHOST_",)


def owned_env(name: str) -> bool:
    return name in OWNED_ENV or name.startswith(OWNED_ENV_PREFIXES)


PRIORITY_MAX = 1000
PROFILES = ("low_latency", "throughput", "legacy")
# generate: a chat/completions model; pooling: an embedding model (vLLM --runner pooling),
# such as the sentence-transformer the front door routes "auto" with.
RUNNERS = ("generate", "pooling")
# torch.compile or --enforce-eager, per expert (llmhost/compile_mode.py decides auto)
COMPILE_MODES = ("auto", "eager", "full")
# Quantized checkpoints the CPU backend can serve (llmhost/perf.py says which on which CPU)
QUANTIZATIONS = ("w8a8", "w4a16", "w4a8")
# A domain names a group of experts in reports, metrics labels and routing: a short label.
DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
# A path on the host that becomes part of a unit's BindReadOnlyPaths= (':' separates its
# fields, spaces its entries, '%' starts a systemd specifier) and of vLLM's argv.
HOST_PATH_RE = re.compile(r"^/[A-Za-z0-9._+@=/-]*$")
# Trees no expert's model may be (they belong to the system, or are rewritten at boot).
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/tmp", "/var/tmp", "/dev/shm")
# Sizes and counts beyond any host this toolkit plans (the largest C4A has 72 vCPUs and
# 576 GB): bounds that keep arithmetic finite and messages readable.
GIB_MAX = 65536
CORES_MAX = 1024
THRESHOLD_MAX = 1e6
AUTO_UNLOAD_MAX_S = 30 * 86400   # systemd takes far more, but a lazy expert idle a month is preloaded
ROUTE_EXAMPLES_MAX = 50
ROUTE_EXAMPLE_CHARS = 2000
DEFAULT_PORT_BASE = 8101


class ConfigError(ValueError):
    """A config that cannot work. `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Thresholds:
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    tbt_p95_s: float | None = None
    decode_tps_min: float | None = None


@dataclass(frozen=True)
class Profile:
    """Defaults an expert's own keys override, and how it runs on the host."""

    name: str
    engine: Mapping[str, Any]
    bind_threads: bool          # own disjoint cores + VLLM_CPU_OMP_THREADS_BIND
    preload_tcmalloc: bool


# Why these values (measured on this project's CPU hosts, docs/experts.md):
# - 4096 batched tokens: a long prompt is prefilled in bounded steps, so a running
#   stream's next token waits at most one step (the legacy 32768 stalls it);
# - prefix caching: a shared system prompt is prefilled once (about 3.5x on TTFT);
# - a small max_num_seqs: on a few cores, more parallel sequences only slow each one.
PROFILE_TABLE: dict[str, Profile] = {
    "low_latency": Profile(
        "low_latency",
        {"max_num_seqs": 8, "max_num_batched_tokens": 4096, "enable_prefix_caching": True},
        bind_threads=True, preload_tcmalloc=True),
    "throughput": Profile(
        "throughput",
        {"max_num_seqs": 32, "max_num_batched_tokens": 8192, "enable_prefix_caching": True},
        bind_threads=True, preload_tcmalloc=True),
    # The old server's behaviour: only the expert's own keys, every expert on every core.
    "legacy": Profile("legacy", {}, bind_threads=False, preload_tcmalloc=False),
}


@dataclass(frozen=True)
class LazyLoading:
    enabled: bool = False
    warmup_pool_size: int = 0
    max_loaded_experts: int = 0
    memory_threshold: float = 0.85
    auto_unload_after_s: int | None = None
    max_waiting: int = 64
    standby: bool = True


@dataclass(frozen=True)
class Expert:
    expert_id: str
    model: str
    domain: str
    priority: int
    profile: str = "low_latency"
    port: int | None = None
    model_source: str | None = None
    aliases: tuple[str, ...] = ()
    engine: Mapping[str, Any] = field(default_factory=dict)
    kv_cache_gib: float = 4.0
    cores: int | None = None
    weights_gib: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()
    allow_emulated_dtype: bool = False
    reference: str | None = None
    runner: str = "generate"
    route_examples: tuple[str, ...] = ()
    compile: str = "auto"
    quantization: str | None = None
    accept_miss: str | None = None
    pinned: bool = False
    evict_cost: float | None = None

    @property
    def pooling(self) -> bool:
        return self.runner == "pooling"

    def effective_engine(self) -> dict[str, Any]:
        """Profile defaults, overridden by the expert's own engine keys. A pooling
        expert skips the profile's prefix caching: vLLM 0.32 cannot start an
        encoder-only model with it ("HybridKVCacheCoordinator requires at least one
        cacheable group", measured with all-MiniLM-L6-v2)."""
        base = dict(PROFILE_TABLE[self.profile].engine)
        if self.pooling:
            base.pop("enable_prefix_caching", None)
        return {**base, **self.engine}


# field -> (accepted python types, description for messages)
_NUM = (int, float)
EXPERT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "expert_id": ((str,), "string"),
    "model": ((str,), "absolute path on the host"),
    "domain": ((str,), "string"),
    "priority": ((int,), "integer"),
    "profile": ((str,), "one of " + ", ".join(PROFILES)),
    "port": ((int,), "integer port"),
    "model_source": ((str,), "path on the controller"),
    "aliases": ((list,), "list of names"),
    "engine": ((dict,), "mapping of vLLM engine settings"),
    "kv_cache_gib": (_NUM, "number of GiB"),
    "cores": ((int,), "integer"),
    "weights_gib": (_NUM, "number of GiB"),
    "env": ((dict,), "mapping of environment variables"),
    "thresholds": ((dict,), "mapping"),
    "allow_emulated_dtype": ((bool,), "true or false"),
    "reference": ((str,), "path on the controller to a reference answers file"),
    "runner": ((str,), "one of " + ", ".join(RUNNERS)),
    "route_examples": ((list,), "list of example prompts"),
    "compile": ((str,), "one of " + ", ".join(COMPILE_MODES)),
    "quantization": ((str,), "one of " + ", ".join(QUANTIZATIONS)),
    "accept_miss": ((str,), "the reason this expert may plan to miss its thresholds"),
    "pinned": ((bool,), "true or false (a lazy expert, once loaded, is never stopped to make room)"),
    "evict_cost": (_NUM, "a number >= 0: lazy experts with the lowest are stopped first to make room"),
}
REQUIRED = ("expert_id", "model", "domain", "priority")
THRESHOLD_FIELDS = ("ttft_p50_s", "ttft_p95_s", "tbt_p95_s", "decode_tps_min")
LAZY_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "enabled": ((bool,), "true or false"),
    "warmup_pool_size": ((int,), "integer"),
    "max_loaded_experts": ((int,), "integer"),
    "memory_threshold": (_NUM, "number between 0 and 1"),
    "auto_unload_after_s": ((int,), "integer seconds or null"),
    "max_waiting": ((int,), "integer: requests held per lazy expert while it loads; more get 503"),
    "standby": ((bool,), "true or false: each lazy expert keeps a standby with vLLM imported"),
}


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python; a YAML `yes` must not pass as a priority.
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False  # .nan, .inf: no setting means that
    return isinstance(value, types)


def _label(raw: Any, index: int) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get("expert_id"), str) and raw["expert_id"] \
            and not CONTROL_RE.search(raw["expert_id"]):
        return f"expert '{raw['expert_id']}'"
    return f"expert #{index + 1}"


def host_path_problem(path: str, trees: Sequence[str] = SYSTEM_TREES,
                      exact: Sequence[str] = ("/",)) -> str | None:
    """Why an absolute path on the host cannot be used in a unit and an argv (None when it
    can): its characters, no '.', '..' or '//' parts, not one of `exact` nor under `trees`."""
    if not path.startswith("/"):
        return "must be an absolute path on the host"
    if not HOST_PATH_RE.match(path):
        return ("use letters, digits and . _ + @ = - / only (':' splits a unit's bind entry, a space ends "
                "it, '%' is a systemd specifier)")
    parts = path.split("/")
    if ".." in parts or "." in parts or "//" in path:
        return "'.', '..' and '//' are not allowed: give the path itself"
    norm = path.rstrip("/") or "/"
    if norm in exact or any(norm == t or norm.startswith(t + "/") for t in trees):
        return f"must not be {' or '.join(exact)} or under {', '.join(trees)}"
    return None


def parse_lazy(raw: Any, n_experts: int) -> LazyLoading:
    if raw is None:
        return LazyLoading(warmup_pool_size=n_experts, max_loaded_experts=n_experts)
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"lazy_loading: must be a mapping, got {type(raw).__name__}"])
    for k, v in raw.items():
        if k not in LAZY_FIELDS:
            problems.append(f"lazy_loading field '{k}': unknown key (known: {', '.join(LAZY_FIELDS)})")
        elif v is None and k == "auto_unload_after_s":
            continue
        elif not _typed(v, LAZY_FIELDS[k][0]):
            problems.append(f"lazy_loading field '{k}': expected {LAZY_FIELDS[k][1]}, got {v!r}")
    if problems:
        raise ConfigError(problems)
    lazy = LazyLoading(
        enabled=raw.get("enabled", False),
        warmup_pool_size=raw.get("warmup_pool_size", n_experts),
        max_loaded_experts=raw.get("max_loaded_experts", n_experts),
        memory_threshold=float(raw.get("memory_threshold", 0.85)),
        auto_unload_after_s=raw.get("auto_unload_after_s"),
        max_waiting=raw.get("max_waiting", 64),
        standby=raw.get("standby", True),
    )
    if not 0 < lazy.memory_threshold <= 1:
        problems.append(f"lazy_loading field 'memory_threshold': must be in (0, 1], got {lazy.memory_threshold}")
    if lazy.warmup_pool_size < 0 or lazy.warmup_pool_size > n_experts:
        problems.append(f"lazy_loading field 'warmup_pool_size': must be 0..{n_experts}, got {lazy.warmup_pool_size}")
    if lazy.max_loaded_experts < 1 or lazy.max_loaded_experts > n_experts:
        problems.append(f"lazy_loading field 'max_loaded_experts': must be 1..{n_experts}, got {lazy.max_loaded_experts}")
    if not 1 <= lazy.max_waiting <= 10000:
        problems.append(f"lazy_loading field 'max_waiting': must be 1..10000, got {lazy.max_waiting}")
    if lazy.enabled and lazy.warmup_pool_size > lazy.max_loaded_experts:
        problems.append("lazy_loading field 'warmup_pool_size': larger than max_loaded_experts")
    if lazy.enabled and (lazy.auto_unload_after_s is None or lazy.auto_unload_after_s < 1):
        problems.append("lazy_loading field 'auto_unload_after_s': a positive number of seconds is needed when enabled")
    elif lazy.auto_unload_after_s is not None and not 1 <= lazy.auto_unload_after_s <= AUTO_UNLOAD_MAX_S:
        problems.append(f"lazy_loading field 'auto_unload_after_s': 1..{AUTO_UNLOAD_MAX_S} seconds (30 days), "
                        f"got {lazy.auto_unload_after_s}")
    if problems:
        raise ConfigError(problems)
    return lazy


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string in a value (keys included), with its dotted path."""
    if isinstance(value, str):
        return [(path, value)]
    out: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}"
            if isinstance(k, str):
                out.append((sub, k))
            out += _strings(v, sub)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out += _strings(v, path)
    return out


def control_chars(raw: Mapping[str, Any], who: str) -> list[str]:
    """One problem per string field that holds a control character (newline included)."""
    out = []
    for k, v in raw.items():
        if k not in EXPERT_FIELDS:
            continue
        for path, text in _strings(v, str(k)):
            if CONTROL_RE.search(text):
                out.append(f"{who} field '{path}': control characters (such as a newline) are not allowed, "
                           f"got {text!r}")
    return out


def parse_expert(raw: Any, index: int) -> tuple[Expert | None, list[str]]:
    who = _label(raw, index)
    if not isinstance(raw, Mapping):
        return None, [f"{who}: must be a mapping, got {type(raw).__name__}"]
    problems: list[str] = []
    for k in raw:
        if k not in EXPERT_FIELDS:
            hint = " (engine settings go under 'engine:')" if isinstance(k, str) and "_" in k else ""
            problems.append(f"{who} field '{k}': unknown key{hint}")
    for k in REQUIRED:
        if k not in raw or raw[k] in (None, ""):
            problems.append(f"{who} field '{k}': required")
    for k, v in raw.items():
        if k in EXPERT_FIELDS and v is not None and not _typed(v, EXPERT_FIELDS[k][0]):
            problems.append(f"{who} field '{k}': expected {EXPERT_FIELDS[k][1]}, got {v!r}")
    if problems:
        return None, problems

    eid = raw["expert_id"]
    problems += control_chars(raw, who)
    if problems:
        return None, problems
    if not ID_RE.match(eid):
        problems.append(f"{who} field 'expert_id': use lower-case letters, digits, '.', '_' or '-', starting "
                        f"with a letter or digit, at most 63 (got {eid!r})")
    elif eid.endswith(RESERVED_SUFFIXES):
        problems.append(f"{who} field 'expert_id': must not end in '-proxy' or '-standby' (the names of a lazy "
                        f"expert's proxy and standby units), got {eid!r}")
    if not 0 <= raw["priority"] <= PRIORITY_MAX:
        problems.append(f"{who} field 'priority': must be 0..{PRIORITY_MAX}, got {raw['priority']}")
    why = host_path_problem(raw["model"])
    if why:
        problems.append(f"{who} field 'model': {why}, got {raw['model']!r}")
    if not DOMAIN_RE.match(raw["domain"]):
        problems.append(f"{who} field 'domain': a short label (letters, digits, space, '.', '_' or '-', at most "
                        f"64), got {raw['domain']!r:.80}")
    profile = raw.get("profile", "low_latency")
    if profile not in PROFILES:
        problems.append(f"{who} field 'profile': must be one of {', '.join(PROFILES)}, got {profile!r}")
    port = raw.get("port")
    if port is not None and not 1024 <= port <= 65535:
        problems.append(f"{who} field 'port': must be 1024..65535, got {port}")
    kv = raw.get("kv_cache_gib", 4)
    if not 0 < kv <= GIB_MAX:
        problems.append(f"{who} field 'kv_cache_gib': must be > 0 and at most {GIB_MAX}, got {kv}")
    w = raw.get("weights_gib")
    if w is not None and not 0 < w <= GIB_MAX:
        problems.append(f"{who} field 'weights_gib': must be > 0 and at most {GIB_MAX}, got {w}")
    runner = raw.get("runner") or "generate"
    if runner not in RUNNERS:
        problems.append(f"{who} field 'runner': must be one of {', '.join(RUNNERS)}, got {runner!r}")
    cores = raw.get("cores")
    if cores is not None and cores < (0 if runner == "pooling" else 1):
        problems.append(f"{who} field 'cores': must be >= 1 (0 only for a pooling expert, which then runs on "
                        f"the reserved CPUs), got {cores}")
    elif cores is not None and cores > CORES_MAX:
        problems.append(f"{who} field 'cores': at most {CORES_MAX}, got {cores}")
    compile_mode = raw.get("compile") or "auto"
    if compile_mode not in COMPILE_MODES:
        problems.append(f"{who} field 'compile': must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
    quant = raw.get("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        problems.append(f"{who} field 'quantization': must be one of {', '.join(QUANTIZATIONS)} (or absent), "
                        f"got {quant!r}")
    if quant and runner == "pooling":
        problems.append(f"{who} field 'quantization': quantized checkpoints are for generate experts")
    accept = raw.get("accept_miss")
    if accept is not None and len(accept.strip()) < 10:
        problems.append(f"{who} field 'accept_miss': give the reason in words (at least 10 characters), "
                        f"got {accept!r}")
    cost = raw.get("evict_cost")
    if cost is not None and not 0 <= cost <= 1e6:
        problems.append(f"{who} field 'evict_cost': a number from 0 to 1000000 (by default its planned weights "
                        f"in GiB), got {cost!r}")
    examples = raw.get("route_examples") or []
    if examples and runner == "pooling":
        problems.append(f"{who} field 'route_examples': a pooling expert is never a route target")
    if len(examples) > ROUTE_EXAMPLES_MAX:
        problems.append(f"{who} field 'route_examples': at most {ROUTE_EXAMPLES_MAX}, got {len(examples)}")
    for x in examples:
        if not isinstance(x, str) or not x.strip() or len(x) > ROUTE_EXAMPLE_CHARS:
            problems.append(f"{who} field 'route_examples': each is a non-empty prompt of at most "
                            f"{ROUTE_EXAMPLE_CHARS} characters, got {x!r:.80}")
            break
    if runner == "pooling" and raw.get("thresholds"):
        problems.append(f"{who} field 'thresholds': a pooling expert makes no tokens; latency budgets apply to "
                        "generate experts")
    if runner == "pooling" and raw.get("reference"):
        problems.append(f"{who} field 'reference': reference answers are for generate experts")
    aliases = raw.get("aliases") or []
    for a in aliases:
        if not isinstance(a, str) or not ALIAS_RE.match(a):
            problems.append(f"{who} field 'aliases': each alias is a model name of letters, digits, '.', '_', "
                            f"'-', '/', ':' or '+', starting with a letter or digit, got {a!r}")
    env = raw.get("env") or {}
    for k, v in env.items():
        if not isinstance(k, str) or not ENV_RE.match(k):
            problems.append(f"{who} field 'env.{k}': not an environment variable name")
        elif owned_env(k):
            problems.append(f"{who} field 'env.{k}': set by the toolkit (the plan, the unit or the start); "
                            "no expert may change it")
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool):
            problems.append(f"{who} field 'env.{k}': value must be a string or number, got {v!r}")
    engine = raw.get("engine") or {}
    for k in engine:
        if not isinstance(k, str) or not re.match(r"^[a-z][a-z0-9_]*$", k):
            problems.append(f"{who} field 'engine.{k}': use vLLM's setting names in snake_case")
    thr = raw.get("thresholds") or {}
    for k, v in thr.items():
        if k not in THRESHOLD_FIELDS:
            problems.append(f"{who} field 'thresholds.{k}': unknown key (known: {', '.join(THRESHOLD_FIELDS)})")
        elif not _typed(v, _NUM) or not 0 < v <= THRESHOLD_MAX:
            problems.append(f"{who} field 'thresholds.{k}': expected a positive number (at most {THRESHOLD_MAX:g}), "
                            f"got {v!r}")
    if problems:
        return None, problems
    return Expert(
        expert_id=eid, model=raw["model"], domain=raw["domain"], priority=raw["priority"],
        profile=profile, port=port, model_source=raw.get("model_source"),
        aliases=tuple(aliases), engine=dict(engine), kv_cache_gib=float(kv), cores=cores,
        weights_gib=None if raw.get("weights_gib") is None else float(raw["weights_gib"]),
        env={k: str(v) for k, v in env.items()},
        thresholds=Thresholds(**{k: float(v) for k, v in thr.items()}),
        allow_emulated_dtype=bool(raw.get("allow_emulated_dtype", False)),
        reference=raw.get("reference") or None,
        runner=runner, route_examples=tuple(x.strip() for x in examples), compile=compile_mode,
        quantization=quant or None, accept_miss=(accept or "").strip() or None,
        pinned=bool(raw.get("pinned", False)),
        evict_cost=None if cost is None else float(cost),
    ), []


def assign_ports(experts: Sequence[Expert], base: int = DEFAULT_PORT_BASE,
                 avoid: Iterable[int] = TOOLKIT_PORTS) -> dict[str, int]:
    """Explicit ports stay; the others get base, base+1, ... in list order, skipping used
    ones and the toolkit's own (`avoid`)."""
    avoid = set(avoid)
    used = {e.port for e in experts if e.port is not None}
    out: dict[str, int] = {}
    nxt = base
    for e in experts:
        if e.port is not None:
            out[e.expert_id] = e.port
            continue
        while nxt in used or nxt in avoid:
            nxt += 1
        out[e.expert_id] = nxt
        used.add(nxt)
    return out


def parse_experts(raw_experts: Any, raw_lazy: Any = None) -> tuple[list[Expert], LazyLoading]:
    """Validate the whole list; every problem is reported at once."""
    if not isinstance(raw_experts, list) or not raw_experts:
        raise ConfigError(["llmhost_experts: must be a non-empty list of experts"])
    problems: list[str] = []
    experts: list[Expert] = []
    for i, raw in enumerate(raw_experts):
        e, p = parse_expert(raw, i)
        problems += p
        if e:
            experts.append(e)
    seen_ids: dict[str, int] = {}
    seen_ports: dict[int, str] = {}
    names: dict[str, str] = {}
    for e in experts:
        if e.expert_id in seen_ids:
            problems.append(f"expert '{e.expert_id}' field 'expert_id': duplicate id")
        seen_ids[e.expert_id] = 1
        if e.port is not None:
            if e.port in seen_ports:
                problems.append(f"expert '{e.expert_id}' field 'port': {e.port} is also used by expert '{seen_ports[e.port]}'")
            seen_ports[e.port] = e.expert_id
        for a in e.aliases:
            if a in names and names[a] != e.expert_id:
                problems.append(f"expert '{e.expert_id}' field 'aliases': '{a}' also names expert '{names[a]}'")
            names[a] = e.expert_id
    for e in experts:
        if e.expert_id in names and names[e.expert_id] != e.expert_id:
            problems.append(f"expert '{names[e.expert_id]}' field 'aliases': '{e.expert_id}' is another expert's id")
    try:
        lazy = parse_lazy(raw_lazy, len(raw_experts))
    except ConfigError as ce:
        problems += ce.problems
        lazy = LazyLoading()
    if problems:
        raise ConfigError(problems)
    return experts, lazy

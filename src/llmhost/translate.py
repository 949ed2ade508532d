"""Translate an expert's settings into vLLM argv and environment, with a verdict per key.

Input keys are either current vLLM setting names (an inventory's `engine:`) or the
keys of a legacy config*.json. Each gets one report line:

    applied | translated (why) | dropped: removed in vLLM <ver> | dropped: not a vLLM
    setting | dropped: GPU only | rejected (why, and the fix)

The verdicts come from the installed vLLM's capabilities (its own argparse and
envs.py, see capabilities.py), plus the few rules below that no parser states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import compile_mode as compile_mod
from . import dtype as dtype_mod
from .experts import PROFILE_TABLE, Expert
from .perf import quant_support
from .secret_names import is_secret_name

# Flags that existed in older vLLM and are gone. They are dropped (or errors in
# strict mode) only when the installed vLLM indeed lacks them.
REMOVED_FLAGS = {
    "use_v2_block_manager": "the V1 engine has one block manager",
    "num_scheduler_steps": "multi-step scheduling was removed with the V0 engine",
    "max_context_len_to_capture": "CUDA-graph capture setting, replaced by max_seq_len_to_capture then removed",
    "swap_space": "CPU swap space for the V0 GPU engine",
    "device": "the platform is detected; --device is gone",
}
# Keys of the old server that never were vLLM settings.
NOT_VLLM = {
    "enable_neon", "use_captured_graph", "neon_optimizations", "enable_flash_attention",
    "flash_attention_config", "use_cases", "description", "max_num_cached_tokens",
}
# vLLM flags that only mean something on a GPU.
GPU_ONLY = {
    "gpu_memory_utilization": "the CPU KV cache is sized by VLLM_CPU_KVCACHE_SPACE (kv_cache_gib)",
    "cpu_offload_gb": "offloads GPU weights to host RAM; on a CPU the weights already are in RAM",
}
# Legacy keys that map onto the schema rather than onto a flag.
SCHEMA_KEYS = {
    "expert_id": "expert_id", "model_path": "model", "domain": "domain", "priority": "priority",
}
# Keys the toolkit owns: set from the schema and the plan, never from engine settings
# (one list, docs/experts.md "What the toolkit owns"): where the expert listens and what it
# serves (the front door and the health checks count on 127.0.0.1:<port>, plain HTTP,
# the id as model name, one API server in front of one engine).
OWNED_FLAGS = {
    "model", "host", "port", "served_model_name", "runner",
    "uds", "headless", "api_server_count", "root_path",
    "ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs", "enable_ssl_refresh",
    "data_parallel_size", "data_parallel_address", "data_parallel_rpc_port", "data_parallel_start_rank",
    "data_parallel_size_local",
}
# Engine settings that carry a secret: vLLM would take it from argv, which `ps`, the unit
# file, experts.json and the journal show. Any name llmhost.secret_names counts as one.
SECRET_FLAGS_HELP = {
    "api_key": "the front door's keys guard the experts (llmhost_api_keys, in the vault)",
    "hf_token": "weights are never loaded from a hub at run time; if a tokenizer needs it, set env HF_TOKEN "
                "(its env file is 0640)",
}
AWQ_GPTQ = {"awq", "awq_marlin", "gptq", "gptq_marlin", "gptq_marlin_24"}
FP8_KV = {"fp8", "fp8_e4m3", "fp8_e5m2"}
GEMMA3_MARKERS = ("gemma-3", "gemma3", "gemma_3")
# Counts and sizes that must be at least 1 (vLLM's parser takes any int; these
# make no sense below 1, and max_num_seqs 0 would become HAProxy's "maxconn 0",
# which means no limit at all).
POSITIVE_INTS = {
    "max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size", "tensor_parallel_size",
    "pipeline_parallel_size", "data_parallel_size", "max_num_partial_prefills", "max_long_partial_prefills",
    "long_prefill_token_threshold", "max_logprobs", "max_parallel_loading_workers",
}
# Upper bounds the toolkit sets: max_num_seqs is also the front door's per-expert
# connection cap; far beyond what a CPU host batches usefully.
INT_MAX = {"max_num_seqs": 1024, "max_num_batched_tokens": 1 << 20, "max_model_len": 1 << 22}


def value_problem(key: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """Why a value does not fit its flag's kind and range (None when it does).

    The kind comes from the capabilities probe (the flag's own parser); a
    capabilities file from before kinds were probed leaves only the range rules."""
    kind = spec.get("kind")
    if kind in ("bool_optional", "store_true", "store_false"):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    many = spec.get("nargs") in ("+", "*")
    if isinstance(value, (list, tuple)):
        if not many:
            return f"takes one value, got a list {list(value)!r:.80}"
        if not value:
            return "an empty list; leave the setting out instead"
        bad = [v for v in value if isinstance(v, (list, tuple, dict)) or v is None]
        if bad:
            return f"each item is one value, got {bad[0]!r:.60}"
        items = list(value)
    else:
        items = [value]
    dashed = [v for v in items if isinstance(v, str) and v.startswith("-")]
    if dashed:
        return f"a value may not start with '-' (it would read as another flag), got {dashed[0]!r:.60}"
    if isinstance(value, (list, tuple)):
        return None
    vtype = spec.get("type")
    if isinstance(value, bool) and vtype in ("int", "float"):
        return f"expected a number, got {value!r}"
    if vtype == "int" and not isinstance(value, int):
        return f"expected an integer, got {value!r}"
    if vtype == "float" and not isinstance(value, (int, float)):
        return f"expected a number, got {value!r}"
    if isinstance(value, float) and value != value:
        return "expected a number, got nan"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key in POSITIVE_INTS and value < 1:
            return f"must be >= 1, got {value}"
        if key in INT_MAX and value > INT_MAX[key]:
            return f"must be <= {INT_MAX[key]}, got {value}"
    elif key in POSITIVE_INTS and vtype is None:
        return f"expected an integer, got {value!r}"
    return None


@dataclass
class Line:
    key: str
    verdict: str          # applied | translated | dropped | rejected
    detail: str = ""

    def __str__(self) -> str:
        if self.verdict == "applied":
            return f"{self.key}: applied" + (f" ({self.detail})" if self.detail else "")
        if self.verdict == "translated":
            return f"{self.key}: translated ({self.detail})"
        if self.verdict == "dropped":
            return f"{self.key}: dropped: {self.detail}"
        return f"{self.key}: rejected ({self.detail})"


@dataclass
class Translation:
    expert_id: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    report: list[Line] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dtype: dtype_mod.DtypeChoice | None = None
    compile: compile_mod.CompileChoice | None = None

    @property
    def rejected(self) -> list[Line]:
        return [line for line in self.report if line.verdict == "rejected"]

    @property
    def dropped(self) -> list[Line]:
        return [line for line in self.report if line.verdict == "dropped"]

    def errors(self, strict: bool = False) -> list[str]:
        bad = self.rejected + (self.dropped if strict else [])
        return [f"expert '{self.expert_id}' field '{line.key}': {line}" for line in bad]


def classify(key: str, value: Any, caps: Mapping[str, Any]) -> Line | None:
    """The verdict for one key that is not a plain applicable flag, or None."""
    flags = caps["flags"]
    ver = caps.get("vllm_version", "?")
    if key in NOT_VLLM:
        return Line(key, "dropped", "not a vLLM setting")
    if key in GPU_ONLY:
        return Line(key, "dropped", f"GPU only ({GPU_ONLY[key]})")
    if key in REMOVED_FLAGS and key not in flags:
        return Line(key, "dropped", f"removed in vLLM {ver} ({REMOVED_FLAGS[key]})")
    if key not in flags:
        return Line(key, "dropped", f"not a vLLM setting (vLLM {ver} has no --{key.replace('_', '-')})")
    return None


def _is_gemma3(expert: Expert) -> bool:
    name = (expert.model + " " + expert.expert_id).lower()
    return any(m in name for m in GEMMA3_MARKERS)


def flag_argv(key: str, value: Any, spec: Mapping[str, Any]) -> list[str]:
    opt = spec["option"]
    kind = spec["kind"]
    if kind == "bool_optional":
        return [opt] if value else ["--no-" + opt[2:]]
    if kind == "store_true":
        return [opt] if value else []
    if kind == "store_false":
        return [] if value else [opt]
    if isinstance(value, bool):
        return [opt, "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [opt, *[str(v) for v in value]]
    if isinstance(value, (dict,)):
        import json  # noqa: PLC0415

        return [opt, json.dumps(value, separators=(",", ":"))]
    return [opt, str(value)]


def translate(
    expert: Expert,
    caps: Mapping[str, Any],
    *,
    port: int,
    cores: str | None = None,
    legacy_keys: Mapping[str, Any] | None = None,
    preload: bool = True,
) -> Translation:
    """argv + env for one expert on one host. `cores` is the planned CPU list ("0-7");
    `preload`: started at boot (False: a lazy expert, started by its first request)."""
    t = Translation(expert.expert_id)
    cpu = caps.get("cpu", {})
    isa = cpu.get("isa", {})
    arch = cpu.get("arch", "x86_64")
    flags = caps["flags"]
    rules = caps.get("cpu_rules", {})
    profile = PROFILE_TABLE[expert.profile]

    settings = dict(expert.effective_engine())
    sources = {k: ("profile " + expert.profile if k not in expert.engine else "") for k in settings}
    for k, v in (legacy_keys or {}).items():
        settings.setdefault(k, v)

    # Schema-level keys from a legacy file are reported, not passed as flags.
    for k in list(settings):
        if k in SCHEMA_KEYS:
            t.report.append(Line(k, "translated", f"becomes the expert's '{SCHEMA_KEYS[k]}'"))
            settings.pop(k)
        elif k in OWNED_FLAGS:
            t.report.append(Line(k, "rejected", "set by the toolkit from expert_id, model and the plan; "
                                  "remove it from engine"))
            settings.pop(k)
        elif k in SECRET_FLAGS_HELP or (is_secret_name(k) and not isinstance(settings[k], bool)):
            t.report.append(Line(k, "rejected", "a secret in vLLM's arguments shows in ps, the unit file and "
                                 "experts.json; " + SECRET_FLAGS_HELP.get(k, "give it through env (the env "
                                                                            "file is 0640)")))
            settings.pop(k)

    if expert.pooling and settings.get("enable_prefix_caching"):
        t.report.append(Line("enable_prefix_caching", "rejected",
                             "a pooling expert cannot start with prefix caching in vLLM 0.32 (an encoder-only "
                             "model has no cacheable KV group); remove it"))
        settings.pop("enable_prefix_caching")
    quant = settings.get("quantization")
    kv_dtype = str(settings.get("kv_cache_dtype", "auto") or "auto")
    refused16 = rules.get("float16_refused_models") or ["gemma3"]
    choice, why = dtype_mod.choose(
        settings.pop("dtype", "auto"), arch, isa, cpu_name=str(cpu.get("model") or ""), pooling=expert.pooling,
        fp16_refused="Gemma 3" if _is_gemma3(expert) and any("gemma3" in m for m in refused16) else "",
        allow_emulated=expert.allow_emulated_dtype)
    if choice is None:
        t.report.append(Line("dtype", "rejected", str(why)))
    else:
        t.dtype = choice
        if choice.emulated:
            t.warnings.append(f"expert '{expert.expert_id}' field 'dtype': {choice}: answers may differ from "
                              "the reference and prefill is slow; the smoke test's reference probe will tell")
    if isinstance(quant, str) and quant.lower() in AWQ_GPTQ and arch == "aarch64":
        t.report.append(Line("quantization", "rejected",
                             f"{quant} has no Arm CPU kernels in vLLM (documented for x86 only); on aarch64 use "
                             "an INT4 W4A8 model for the KleidiAI path (VLLM_CPU_INT4_W4A8) or bf16 weights"))
        settings.pop("quantization")
    if kv_dtype in FP8_KV and rules.get("fp8_kv_needs_x86_avx512_or_amx") and not (
            isa.get("avx512") or isa.get("amx")):
        t.report.append(Line("kv_cache_dtype", "rejected",
                             f"vLLM {caps.get('vllm_version')} supports an fp8 KV cache on CPU only on x86 with "
                             f"AVX-512 or AMX, not on {cpu.get('model') or arch}; use kv_cache_dtype: auto"))
        settings.pop("kv_cache_dtype")
    elif kv_dtype in FP8_KV:
        refuses = rules.get("fp8_kv_refuses", [])
        clash = []
        if "prefix_caching" in refuses and settings.get("enable_prefix_caching", True):
            clash.append("prefix caching (on by default)")
        if "chunked_prefill" in refuses and settings.get("enable_chunked_prefill", True):
            clash.append("chunked prefill")
        if clash:
            t.report.append(Line("kv_cache_dtype", "rejected",
                                 f"vLLM {caps.get('vllm_version')} on CPU refuses an fp8 KV cache with "
                                 f"{' and '.join(clash)}; use kv_cache_dtype: auto, or set "
                                 "enable_prefix_caching: false and enable_chunked_prefill: false"))
            settings.pop("kv_cache_dtype")

    eager = settings.pop("enforce_eager", None)
    comp, comp_why = compile_mod.choose(expert.compile, pooling=expert.pooling, preload=preload,
                                        enforce_eager=eager, isa=isa)
    if comp is None:
        t.report.append(Line("enforce_eager" if eager is not None and not isinstance(eager, bool) else "compile",
                             "rejected", comp_why))
    t.compile = comp

    argv = ["--model", expert.model, "--served-model-name", expert.expert_id,
            "--host", "127.0.0.1", "--port", str(port)]
    if expert.pooling:
        argv += ["--runner", "pooling"]
    if comp is not None:
        if comp.eager:
            argv += ["--enforce-eager"]
        t.report.append(Line("compile", "applied", str(comp)))
        if eager is not None:
            t.report.append(Line("enforce_eager", "applied", f"as compile: {comp.mode}"))
    if t.dtype:
        # Always explicit: vLLM's own "auto" follows config.json (bf16), not the CPU.
        argv += ["--dtype", t.dtype.dtype]
        t.report.append(Line("dtype", "applied", f"{t.dtype.dtype}, {t.dtype.reason}"))
    # Sorted: the same settings always give the same argv, whatever order a YAML or
    # JSON loader kept, so an unchanged expert never sees a changed unit.
    for k, v in sorted(settings.items()):
        line = classify(k, v, caps)
        if line:
            t.report.append(line)
            continue
        if v is None:
            t.report.append(Line(k, "applied", "null: vLLM's default"))
            continue
        spec = flags[k]
        bad = value_problem(k, v, spec)
        if bad:
            t.report.append(Line(k, "rejected", bad))
            continue
        if spec.get("choices") and not isinstance(v, bool) and str(v) not in spec["choices"]:
            t.report.append(Line(k, "rejected", f"{v!r} is not one of {', '.join(spec['choices'])}"))
            continue
        argv += flag_argv(k, v, spec)
        t.report.append(Line(k, "applied", sources.get(k, "")))

    env: dict[str, str] = {"VLLM_CPU_KVCACHE_SPACE": _gib(expert.kv_cache_gib)}
    if profile.bind_threads and cores:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
    else:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind" if not profile.bind_threads else "auto"
    if arch == "aarch64":
        # PyTorch on Arm: huge pages for its allocations (AWS Graviton guide), with THP madvise.
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    env.update(expert.env)
    unknown_cpu = [k for k in expert.env if k.startswith("VLLM_CPU_") and k not in caps.get("cpu_env_vars", [])]
    for k in unknown_cpu:
        t.report.append(Line(f"env.{k}", "rejected", f"vLLM {caps.get('vllm_version')} has no {k}; "
                             f"known: {', '.join(caps.get('cpu_env_vars', []))}"))
        env.pop(k)
    t.argv = argv
    t.env = env
    return t


def _gib(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def live_caps_problems(live: Mapping[str, Any], experts: Any) -> list[str]:
    """Where the installed vLLM would not take what the plan decided.

    The plan is made before the install, from the capabilities file shipped for the
    pinned version; the install stage runs this over the capabilities probe: every option in
    an expert's argv must exist with the same kind (and the value among its choices),
    and every VLLM_CPU_* variable must be known."""
    by_option = {spec["option"]: spec for spec in (live.get("flags") or {}).values()}
    for spec in list(by_option.values()):
        if spec.get("kind") == "bool_optional":
            by_option["--no-" + spec["option"][2:]] = spec
    cpu_env = set(live.get("cpu_env_vars") or [])
    out: list[str] = []
    for e in experts or []:
        argv = list(e.get("argv") or [])
        for i, tok in enumerate(argv):
            if not str(tok).startswith("--"):
                continue
            spec = by_option.get(tok)
            if spec is None:
                out.append(f"expert '{e['expert_id']}': the installed vLLM {live.get('vllm_version')} has no {tok}")
                continue
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if spec.get("choices") and nxt is not None and not str(nxt).startswith("--") \
                    and str(nxt) not in spec["choices"]:
                out.append(f"expert '{e['expert_id']}': the installed vLLM does not accept {tok} {nxt}")
        for k in e.get("env") or {}:
            if k.startswith("VLLM_CPU_") and k not in cpu_env:
                out.append(f"expert '{e['expert_id']}': the installed vLLM does not know {k}")
        q = e.get("quantization")
        cpu = live.get("cpu") or {}
        if q and isinstance((live.get("cpu_rules") or {}).get("cpu_ops"), list):
            why = quant_support(live, cpu.get("arch", ""), cpu.get("isa") or {}).get(q, f"unknown format {q}")
            if why:
                out.append(f"expert '{e['expert_id']}': {q} cannot be served here: {why}")
    return out

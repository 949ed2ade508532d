"""What the installed vLLM and the host CPU can do.

This file is also a standalone script (stdlib only, plus vllm when probing): the
install role runs it on the target with the vLLM venv's python and caches its
JSON output as a fact. The project keeps the output for vLLM 0.32.0 in
data/capabilities-vllm-0.32.0.json so `llmhost plan` works offline.

    python capabilities.py            -> JSON on stdout (needs vllm importable)
    python capabilities.py --cpu-only -> JSON of the CPU part only
    python capabilities.py --cache F  -> the vLLM part from F when nothing it depends
                                         on changed (importing vLLM takes ~11 s)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
from typing import Any

# Arm CPU part numbers (MIDR bits 15:4) of implementer 0x41 that matter here.
ARM_PARTS = {
    "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2", "0xd8e": "Neoverse-N3", "0xd84": "Neoverse-V3",
}


# Compiled ops whose presence decides what the host can serve quantized (llmhost.perf).
CPU_OPS = ("onednn_scaled_mm", "cpu_gemm_wna16", "int4_scaled_mm_cpu")

BEGIN = "--- llmhost capabilities begin ---"
END = "--- llmhost capabilities end ---"


def parse_cpuinfo(text: str, machine: str) -> dict[str, Any]:
    """ISA facts from /proc/cpuinfo text. Pure: unit-tested with real fixtures."""
    flags: set[str] = set()
    model = ""
    part = implementer = ""
    ncpu = 0
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, val = (s.strip() for s in line.partition(":"))
        key = key.lower()
        if key == "processor":
            ncpu += 1
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
        elif key == "model name" and not model:
            model = val
        elif key == "cpu part" and not part:
            part = val.lower()
        elif key == "cpu implementer" and not implementer:
            implementer = val.lower()
    arm = machine in ("aarch64", "arm64")
    if arm and not model:
        model = ARM_PARTS.get(part, f"Arm part {part}") if implementer == "0x41" else f"implementer {implementer} part {part}"
    if arm:
        isa = {
            "neon": "asimd" in flags,
            "bf16": "bf16" in flags,
            "fp16": "asimdhp" in flags or "fphp" in flags,
            "i8mm": "i8mm" in flags,
            "sve": "sve" in flags,
            "sve2": "sve2" in flags,
            "avx512": False,
            # int8 dot products (SDOT/UDOT, SMMLA): what int8 matmuls need to run at full precision and speed
            "int8_dot": "asimddp" in flags or "i8mm" in flags,
        }
    else:
        isa = {
            "neon": False,
            "bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
            "fp16": "avx512_fp16" in flags,
            # the flags themselves, so a choice can say which one it rests on
            "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
            "avx512_fp16": "avx512_fp16" in flags,
            "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "amx": "amx_tile" in flags,
            # VNNI or AMX int8: without them oneDNN's int8 matmul keeps 7 bits of each weight
            # (AVX2's 16-bit accumulation would overflow) and decodes slower than float32
            "int8_dot": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
            "i8mm": False,
            "sve": False,
            "sve2": False,
        }
    return {"arch": "aarch64" if arm else machine, "model": model, "cpuinfo_cpus": ncpu, "isa": isa}


def _flag_kind(action: argparse.Action) -> str:
    if isinstance(action, argparse.BooleanOptionalAction):
        return "bool_optional"
    if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001 - argparse has no public type
        return "store_true"
    if isinstance(action, argparse._StoreFalseAction):  # noqa: SLF001
        return "store_false"
    return "value"


def _value_type(action: argparse.Action) -> str | None:
    """What a value flag's parser turns its text into: int, float, str, or other.

    Found by calling the flag's own `type` on sample texts, since vLLM wraps int
    in helpers (human_readable_int, optional_type(int)) whose names say little."""
    t = action.type
    if t is None:
        return "str" if _flag_kind(action) == "value" else None
    results = []
    for sample in ("8", "1.5", "x"):
        try:
            results.append(type(t(sample)).__name__)
        except Exception:  # noqa: BLE001 - a parser that refuses the sample
            results.append(None)
    if results[0] == "int" and results[1] is None:
        return "int"
    if results[0] in ("float", "int") and results[1] == "float":
        return "float"
    if results == ["str", "str", "str"]:
        return "str"
    return "other"


def probe_vllm() -> dict[str, Any]:
    """Read vLLM's own argument parser and envs.py. Needs vllm importable."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import vllm  # noqa: PLC0415
    import vllm.envs as envs  # noqa: PLC0415
    try:  # 0.32 moved the server's parser; older releases keep it under openai/
        from vllm.entrypoints.launchers.cli_args import make_arg_parser  # noqa: PLC0415
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # type: ignore[no-redef]  # noqa: PLC0415

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415
    except ImportError:  # older layouts
        from vllm.utils import FlexibleArgumentParser  # type: ignore[no-redef]  # noqa: PLC0415
    parser = make_arg_parser(FlexibleArgumentParser())
    flags: dict[str, Any] = {}
    for a in parser._actions:  # noqa: SLF001
        if not a.option_strings or a.dest == "help":
            continue
        longs = [o for o in a.option_strings if o.startswith("--") and not o.startswith("--no-")]
        own = "--" + a.dest.replace("_", "-")
        option = own if own in a.option_strings else (max(longs, key=len) if longs else a.option_strings[0])
        choices = None
        if a.choices is not None:
            choices = sorted(str(c) for c in a.choices)
        flags[a.dest] = {"option": option, "kind": _flag_kind(a), "choices": choices, "type": _value_type(a),
                         "nargs": a.nargs if isinstance(a.nargs, (int, str, type(None))) else str(a.nargs)}
    names = sorted(envs.environment_variables)
    return {
        "vllm_version": vllm.__version__,
        "flags": dict(sorted(flags.items())),
        "env_vars": names,
        "cpu_env_vars": [n for n in names if n.startswith("VLLM_CPU_")],
        "cpu_rules": probe_cpu_rules(),
    }


def fp8_kv_rules(source: str) -> dict[str, Any]:
    """Rules about an fp8 KV cache stated in vLLM's CPU source text (its error messages)."""
    refuses: list[str] = []
    needs_x86 = False
    for literal in re.findall(r'"([^"\n]{10,})"', source):
        low = literal.lower()
        if "fp8" not in low:
            continue
        if "prefix" in low and "cach" in low:
            refuses.append("prefix_caching")
        if "chunked" in low and "prefill" in low:
            refuses.append("chunked_prefill")
        if "avx-512" in low or "avx512" in low or "amx" in low:
            needs_x86 = True
    return {"fp8_kv_refuses": sorted(set(refuses)), "fp8_kv_needs_x86_avx512_or_amx": needs_x86}


def probe_cpu_rules() -> dict[str, Any]:
    """Rules vLLM's CPU platform enforces, found in its source rather than assumed."""
    rules: dict[str, Any] = {"fp8_kv_refuses": [], "fp8_kv_needs_x86_avx512_or_amx": False,
                             "float16_refused_models": []}
    texts = []
    for mod in ("vllm.platforms.cpu", "vllm.v1.attention.backends.cpu_attn"):
        try:
            import importlib.util  # noqa: PLC0415

            spec = importlib.util.find_spec(mod)
            if spec and spec.origin:
                with open(spec.origin) as f:
                    texts.append(f.read())
        except Exception:  # noqa: BLE001 - a probe reports, never fails the install
            pass
    rules.update(fp8_kv_rules("\n".join(texts)))
    try:  # the quantized-matmul kernels of the library vLLM loads on this CPU (llmhost.perf.QUANT_OPS)
        import torch  # noqa: PLC0415
        from vllm.platforms import current_platform  # noqa: PLC0415

        current_platform.import_kernels()
        ops = [op for op in CPU_OPS if hasattr(torch.ops._C, op)]  # noqa: SLF001
        if platform.machine() in ("aarch64", "arm64") and hasattr(torch.ops.aten, "_dyn_quant_matmul_4bit"):
            ops.append("_dyn_quant_matmul_4bit (aarch64)")  # int4 weights through KleidiAI (vLLM's w4a8 on Arm)
        rules["cpu_ops"] = sorted(ops)
    except Exception:  # noqa: BLE001
        pass
    try:
        import vllm.config.model as model_cfg  # noqa: PLC0415

        rules["float16_refused_models"] = sorted(getattr(model_cfg, "_FLOAT16_NOT_SUPPORTED_MODELS", {}))
    except Exception:  # noqa: BLE001
        pass
    return rules


def probe_cpu() -> dict[str, Any]:
    with open("/proc/cpuinfo") as f:
        info = parse_cpuinfo(f.read(), platform.machine())
    info["cpu_ids"] = sorted(os.sched_getaffinity(0))
    info["cpus"] = len(info["cpu_ids"])
    try:  # what sysfs says is online (equals the affinity on a real host)
        with open("/sys/devices/system/cpu/online") as f:
            online: list[int] = []
            for part in f.read().strip().split(","):
                a, _, b = part.partition("-")
                online += range(int(a), int(b or a) + 1)
        info["online_cpu_ids"] = online
    except (OSError, ValueError):
        info["online_cpu_ids"] = info["cpu_ids"]
    info["cpus_online"] = os.cpu_count() or info["cpus"]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    return info


def installed_vllm_version() -> str | None:
    """The version of the vLLM distribution in this Python (without importing vLLM)."""
    import importlib.metadata as md  # noqa: PLC0415

    for name in ("vllm-cpu", "vllm"):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def cache_key(cpu: dict[str, Any], versions: dict[str, str | None], script: bytes) -> str:
    """What the vLLM part depends on: the installed vLLM and torch, this Python, the
    probe's own code, and the CPU (a VM moved to another machine type probes again)."""
    basis = {"versions": versions, "script": hashlib.sha256(script).hexdigest(),
             "cpu": {k: cpu.get(k) for k in ("arch", "model", "flags")}}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def cached_vllm_probe(cache: str, key: str, probe: Any = None) -> tuple[dict[str, Any], bool]:
    """(the vLLM part, whether it came from the cache). A missing, unreadable or stale
    cache means a fresh probe, written back (atomically) for the next run."""
    try:
        with open(cache) as f:
            saved = json.load(f)
        if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("vllm"), dict):
            return saved["vllm"], True
    except (OSError, ValueError):
        pass
    fresh = (probe or probe_vllm)()
    try:
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"key": key, "vllm": fresh}, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache that cannot be written costs the next run time, nothing else
    return fresh, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--installed-version", action="store_true",
                    help="print the installed vLLM's version (vllm-cpu or vllm), exit 3 when there is none")
    ap.add_argument("--cache", metavar="FILE", help="reuse the vLLM part from FILE while its key holds")
    args = ap.parse_args(argv)
    if args.installed_version:
        version = installed_vllm_version()
        if version is None:
            return 3
        print(version)
        return 0
    out: dict[str, Any] = {"cpu": probe_cpu()}
    if not args.cpu_only and args.cache:
        import importlib.metadata as md  # noqa: PLC0415

        def version(name: str) -> str | None:
            try:
                return md.version(name)
            except md.PackageNotFoundError:
                return None

        with open(__file__, "rb") as f:
            key = cache_key(out["cpu"], {"vllm": installed_vllm_version(), "torch": version("torch"),
                                         "python": os.path.realpath(sys.executable)}, f.read())
        part, hit = cached_vllm_probe(args.cache, key)
        out.update(part)
        out["cached"] = hit
    elif not args.cpu_only:
        out.update(probe_vllm())
    # Markers: over ssh with a pty, vLLM's import-time messages on stderr can land in
    # the same stream; from_output() takes the JSON between them.
    print(BEGIN)
    print(json.dumps(out, indent=1, sort_keys=True))
    print(END)
    return 0


def from_output(text: str, begin: str = BEGIN, end: str = END, what: str = "capabilities") -> dict[str, Any]:
    """The JSON a probe run (this one, or hostprofile.py with its markers) printed between
    its markers."""
    try:
        body = text.split(begin, 1)[1].split(end, 1)[0]
    except IndexError:
        raise ValueError(f"no {what} in the probe's output: {text[-500:]!r}") from None
    return json.loads(body)


if __name__ == "__main__":
    sys.exit(main())

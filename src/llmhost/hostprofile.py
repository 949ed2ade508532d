"""Measure a host profile: memory read bandwidth with 1, 2, 4, ... of the host's cores,
and matmul throughput of one core per dtype (the performance model's inputs,
llmhost/perf.py).

A standalone script too (stdlib plus torch): the install stage runs it on the host
with the vLLM venv's python and keeps the result; `llmhost profile --measure` runs it
here.

    python hostprofile.py [--cache FILE] [--quick]

--cache FILE: reuse FILE while the CPU, the kernel, torch and this script are the
same (keyed like the capabilities probe), else measure and write it back.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any

BEGIN = "--- llmhost host profile begin ---"
END = "--- llmhost host profile end ---"
MM_SHAPE = (256, 2048, 2048)   # M (prompt tokens), K, N: a prefill-sized matmul


def core_counts(ncpu: int) -> list[int]:
    """1, 2, 4, ... and the host's count (the points the bandwidth curve is read at)."""
    out, n = [], 1
    while n < ncpu:
        out.append(n)
        n *= 2
    return out + [ncpu]


def best_seconds(fn: Any, runs: int, budget_s: float = 3.0) -> float:
    """Best of `runs` timed calls after a warm-up; fewer when they overrun `budget_s`
    (bf16 without native instructions takes seconds per call)."""
    t_start = time.perf_counter()
    fn()  # warm-up: page faults, thread pool start
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s:
            break
    return best


def read_gbps(torch: Any, cpus: list[int], n: int, nbytes: int, runs: int) -> float:
    os.sched_setaffinity(0, cpus[:n])
    torch.set_num_threads(n)
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    s = best_seconds(lambda: x.sum(), runs)
    del x
    return nbytes / s / 1e9


def matmul_gflops(torch: Any, dtype: str, runs: int) -> float | None:
    m, k, n = MM_SHAPE
    torch.set_num_threads(1)
    if dtype == "int8":
        fn = int8_matmul(torch, m, k, n)
        if fn is None:
            return None
    else:
        fn = float_matmul(torch, getattr(torch, dtype), m, k, n)
    return 2 * m * k * n / best_seconds(fn, runs) / 1e9


def vllm_ops() -> Any:
    """vLLM's compiled CPU ops, loaded as a served expert loads them; None without vLLM."""
    try:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from vllm import _custom_ops as ops  # noqa: PLC0415
        from vllm.platforms import current_platform  # noqa: PLC0415

        current_platform.import_kernels()
        return ops
    except Exception:  # noqa: BLE001 - no vLLM in this python
        return None


def float_matmul(torch: Any, dtype: Any, m: int, k: int, n: int) -> Any:
    """A float linear layer as vLLM runs it (its oneDNN handler, layers.utils.
    dispatch_cpu_unquantized_gemm), else torch's matmul."""
    x = torch.randn(m, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    ops = vllm_ops()
    if ops is not None:
        try:
            handler = ops.create_onednn_mm(w.t(), 32)
            ops.onednn_mm(handler, x, None)
            return lambda: ops.onednn_mm(handler, x, None)
        except Exception:  # noqa: BLE001 - a build without oneDNN: torch's path
            pass
    wt = w.t()
    return lambda: x @ wt


def int8_matmul(torch: Any, m: int, k: int, n: int) -> Any:
    """vLLM's own W8A8 path (oneDNN: dynamic per-token int8 activations, per-channel
    int8 weights) where vLLM is importable, as its served experts run it; else torch's
    int8 matmul; None when neither runs here."""
    x = torch.randn(m, k)
    try:
        ops = vllm_ops()
        w = torch.randint(-64, 64, (n, k), dtype=torch.int8).t()  # [K, N], as vLLM lays it out
        handler = ops.create_onednn_scaled_mm(w, torch.full((n, 1), 0.01), torch.float32, True, False, 32)

        def fn() -> Any:
            xq, xs, xzp = ops.onednn_scaled_int8_quant(x, None, None, True)
            out = torch.empty((m, n), dtype=torch.float32)
            ops.onednn_scaled_mm(handler, xq, out, xs, xzp, None, None)
            return out

        fn()
        return fn
    except Exception:  # noqa: BLE001 - no vLLM here, or no oneDNN int8 in its build
        pass
    a = torch.randint(-64, 64, (m, k), dtype=torch.int8)
    b = torch.randint(-64, 64, (k, n), dtype=torch.int8)
    try:
        torch._int_mm(a, b)  # noqa: SLF001
    except (RuntimeError, AttributeError):
        return None
    return lambda: torch._int_mm(a, b)  # noqa: SLF001


def cpu_model() -> tuple[str, str]:
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "model name" and not model:
                    model = v.strip()
                elif k == "cpu part" and not model:
                    model = f"Arm part {v.strip()}"   # the plan names Arm parts itself: not compared
                elif k in ("flags", "features") and not flags:
                    flags = v.strip()
    except OSError:
        pass
    return model, flags


def cache_key(torch_version: str, cpus: list[int]) -> str:
    model, flags = cpu_model()
    with open(__file__, "rb") as f:
        script = hashlib.sha256(f.read()).hexdigest()
    basis = [model, flags, platform.release(), torch_version, cpus, script]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()


def measure(quick: bool = False) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    cpus = sorted(os.sched_getaffinity(0))
    runs = 3 if quick else 7
    with open("/proc/meminfo") as f:
        mem = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    nbytes = min(2**30, mem // 16)  # far beyond any last-level cache, a small share of RAM
    try:
        bw = {n: round(read_gbps(torch, cpus, n, nbytes, runs), 2) for n in core_counts(len(cpus))}
        os.sched_setaffinity(0, cpus[:1])
        mm = {d: matmul_gflops(torch, d, 3 if quick else 5) for d in ("float32", "bfloat16", "int8")}
    finally:
        os.sched_setaffinity(0, cpus)
    model, _ = cpu_model()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {"read_gbps": bw, "matmul_gflops": {d: round(v, 1) for d, v in mm.items() if v},
            "assumed": False, "cpu": model,
            "source": f"measured by llmhost's hostprofile.py on {platform.node()} ({model}, {len(cpus)} CPUs, "
                      f"torch {torch.__version__}) at {when}",
            "key": cache_key(torch.__version__, cpus)}


def cached(path: str, quick: bool) -> tuple[dict[str, Any], bool]:
    import torch  # noqa: PLC0415

    key = cache_key(torch.__version__, sorted(os.sched_getaffinity(0)))
    try:
        with open(path) as f:
            saved = json.load(f)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved, True
    except (OSError, ValueError):
        pass
    fresh = measure(quick)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(fresh, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        pass
    return fresh, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", metavar="FILE")
    ap.add_argument("--quick", action="store_true", help="fewer runs per point")
    args = ap.parse_args(argv)
    try:
        if args.cache:
            out, hit = cached(args.cache, args.quick)
        else:
            out, hit = measure(args.quick), False
    except ImportError:
        print("hostprofile: torch is not importable by this python (run it with the vLLM venv's)", file=sys.stderr)
        return 2
    print(BEGIN)
    print(json.dumps({**out, "cached": hit}, indent=1))
    print(END)
    return 0


def from_output(text: str) -> dict[str, Any]:
    """The profile a run printed between its markers (the reader is the capabilities probe's)."""
    from .capabilities import from_output as between_markers  # noqa: PLC0415 - controller side only

    return between_markers(text, BEGIN, END, "host profile")


if __name__ == "__main__":
    sys.exit(main())

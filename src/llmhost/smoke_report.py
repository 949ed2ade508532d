"""How a smoke run is shown: the terminal table, the JSON report, the chart, progress lines."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any, Callable, Mapping, Sequence

from .smoke import ExpertResult


TABLE_HEADER = ("expert", "TTFT p50 ms", "TTFT p95 ms", "TBT p50 ms", "TBT p95 ms", "decode tok/s",
                "E2E p50 s", "req", "err", "probes", "reference", "verdict")


def table_rows(results: Sequence[ExpertResult], figures: bool = True) -> list[tuple[str, ...]]:
    """The report's cells as text, one row per expert (the terminal table and the HTML
    page both print these). `figures=False` (a folded staging host): no timings."""
    def f(v: float | None, scale: float = 1000, fmt: str = "{:.0f}") -> str:
        return "-" if v is None or not figures else fmt.format(v * scale)

    rows = []
    for r in results:
        s = r.stats
        probes = "".join("+" if p["ok"] else "x" for p in r.probes.values())
        rows.append((r.expert_id, f(s.ttft_p50_s), f(s.ttft_p95_s), f(s.tbt_p50_s), f(s.tbt_p95_s),
                     f(s.decode_tps, 1, "{:.1f}"), f(s.e2e_p50_s, 1, "{:.2f}"), str(s.requests), str(s.errors),
                     probes, reference_cell(r.reference), "PASS" if not r.misses else "FAIL"))
    return rows


def table(results: Sequence[ExpertResult], figures: bool = True) -> str:
    rows = [TABLE_HEADER, *table_rows(results, figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def reference_cell(rep: Mapping[str, Any]) -> str:
    if rep["status"] == "skipped":
        return "skipped"
    rs = [r for r in rep.get("results", []) if r.get("compared_words", 1)]
    ok = sum(1 for r in rs if r["ok"])
    return f"{ok}/{len(rs)} " + ("ok" if rep["status"] == "passed" else "DIFF")


TIMING_FIELDS = ("ttft_p50_s", "ttft_p95_s", "tbt_p50_s", "tbt_p95_s", "decode_tps", "e2e_p50_s")


def report(results: Sequence[ExpertResult], meta: Mapping[str, Any], figures: bool = True) -> dict[str, Any]:
    """The JSON report. `figures=False` (a folded staging host) leaves every timing out."""
    def stats(r: ExpertResult) -> dict[str, Any]:
        d = asdict(r.stats)
        return d if figures else {k: v for k, v in d.items() if k not in TIMING_FIELDS}

    return {**meta, "passed": all(not r.misses for r in results),
            "definitions": "as vllm bench serve: TTFT to first content chunk; TBT/ITL between chunks; "
                           "decode tokens/s = (output tokens - 1) / (last chunk - first chunk)",
            **({} if figures else {"figures": "not reported: a folded host (cores shared), answers only"}),
            "experts": [{"expert_id": r.expert_id, **stats(r), "probes": r.probes,
                         "reference": r.reference, "numerics": r.numerics, "misses": r.misses} for r in results]}


def chart(results: Sequence[ExpertResult], path: str) -> None:
    with open(path, "wb") as f:
        f.write(chart_png(results))


def chart_png(results: Sequence[ExpertResult]) -> bytes:
    """TTFT and TBT, p50 and p95, per expert, as PNG bytes."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [r.expert_id for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (label, p50, p95) in zip(axes, (("TTFT (ms)", "ttft_p50_s", "ttft_p95_s"),
                                            ("TBT (ms)", "tbt_p50_s", "tbt_p95_s"))):
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [(getattr(r.stats, p50) or 0) * 1000 for r in results], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [(getattr(r.stats, p95) or 0) * 1000 for r in results], 0.4, label="p95")
        ax.set_xticks(list(xs), names)
        ax.set_title(label)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def progress_printer(stream=sys.stderr) -> Callable[[str], None]:
    tty = stream.isatty()

    def show(msg: str) -> None:
        if tty:
            stream.write("\r\x1b[K" + msg)
        else:
            stream.write(msg + "\n")
        stream.flush()

    return show


PERF_HEADER = ("expert", "cores", "decode predicted", "decode measured", "error", "TTFT predicted ms",
               "TTFT p50 ms", "error")


def performance(results: Sequence[ExpertResult], experts: Sequence[Mapping[str, Any]],
                profile: Any = None) -> dict[str, Any]:
    """Predicted (llmhost.perf, by the host's measured profile when given, else the plan's
    prediction) against measured decode tokens/s and TTFT p50, per expert, with the
    prediction error as measured/predicted - 1."""
    from . import perf  # noqa: PLC0415

    from .experts import ConfigError  # noqa: PLC0415

    try:
        prof = perf.parse_profile(profile, "host profile") if profile else None
    except ConfigError as e:  # a damaged file costs the comparison, never the smoke test
        return {"profile": f"host profile unusable ({'; '.join(e.problems)[:200]})", "assumed": None, "experts": []}
    by_id = {e["expert_id"]: e for e in experts}
    rows = []
    for r in results:
        e = by_id.get(r.expert_id) or {}
        pred = e.get("predicted")
        if prof and e.get("shape"):
            n = cpu_count(e.get("cpu_list")) or len(e.get("cores") or []) or 1
            pred = perf.predict(perf.Shape(**e["shape"]), prof, cores=n, dtype=e.get("dtype") or "bfloat16",
                                quantization=e.get("quantization")).to_dict()
        if not pred:
            continue

        def err(measured: float | None, predicted: float) -> float | None:
            return None if measured is None or not predicted else round(measured / predicted - 1, 3)

        rows.append({"expert_id": r.expert_id, "cores": pred["cores"], "dtype": pred["dtype"],
                     "quantization": pred["quantization"],
                     "decode_tps_predicted": round(pred["decode_tps"], 2), "decode_tps_measured": r.stats.decode_tps,
                     "decode_error": err(r.stats.decode_tps, pred["decode_tps"]),
                     "ttft_s_predicted": round(pred["ttft_s"], 4), "ttft_p50_s_measured": r.stats.ttft_p50_s,
                     "ttft_error": err(r.stats.ttft_p50_s, pred["ttft_s"]), "basis": pred["basis"]})
    source = prof.source if prof else "the plan's prediction"
    return {"profile": source, "assumed": bool(prof.assumed) if prof else None, "experts": rows}


def cpu_count(cpu_list: Any) -> int:
    """CPUs in a list such as "0-2,5" (0 when unreadable)."""
    n = 0
    for part in str(cpu_list or "").split(","):
        a, _, b = part.partition("-")
        if a.strip().isdigit() and (not b or b.strip().isdigit()):
            n += int(b or a) - int(a) + 1
    return n


def performance_rows(perf_section: Mapping[str, Any]) -> list[tuple[str, ...]]:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:+.0%}"

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    return [(x["expert_id"], str(x["cores"]), num(x["decode_tps_predicted"], "{:.1f}"),
             num(x["decode_tps_measured"], "{:.1f}"), pct(x["decode_error"]),
             num(x["ttft_s_predicted"] * 1000, "{:.0f}"),
             num(None if x["ttft_p50_s_measured"] is None else x["ttft_p50_s_measured"] * 1000, "{:.0f}"),
             pct(x["ttft_error"])) for x in perf_section["experts"]]


def performance_table(perf_section: Mapping[str, Any]) -> str:
    rows = [PERF_HEADER, *performance_rows(perf_section)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    head = f"predicted (performance model, {perf_section['profile']}) against measured:"
    return head + "\n" + "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                                             enumerate(zip(row, widths))) for row in rows)


def numerics_line(results: Sequence[ExpertResult]) -> str:
    """One line: each expert's passage perplexities and what they were judged against."""
    parts = []
    for r in results:
        n = r.numerics or {}
        ppl = n.get("perplexity") or {}
        vals = ", ".join(f"{k} {v:.1f}" for k, v in ppl.items()) or "not measured"
        parts.append(f"{r.expert_id}: {vals} ({'; '.join(n.get('against') or [])}"
                     f"{', MISS' if n.get('misses') else ''})")
    return "perplexity: " + "; ".join(parts)

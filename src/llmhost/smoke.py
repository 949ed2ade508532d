"""Latency smoke test of one expert: warm-up, measured streams, coherence and
reference probes, thresholds. The parts: `stream` (client and timings, as `vllm bench
serve` defines them), `stats` (percentiles), `coherence` (probes), `smoke_report`
(table, JSON, chart)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import numerics
from .coherence import coherence_probes, reference_file, reference_misses, reference_probes
from .stats import Stats, check_thresholds, summarize
from .stream import stream_chat, stream_pool

# What a smoke run may ask for (llmhost smoke's options and the smoke_test role's inputs).
RANGES = {"repeat": (1, 10000), "warmup": (0, 1000), "concurrency": (1, 1024), "max_tokens": (1, 1 << 20)}


SHARED_SYSTEM_PROMPT = (
    "You are a careful assistant for an operations team that runs several language models on one "
    "CPU server. Answer briefly and exactly. " * 12
)


@dataclass
class ExpertResult:
    expert_id: str
    stats: Stats
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    # status: passed | failed | skipped (never silently passed), with why and per-prompt results
    reference: dict[str, Any] = field(default_factory=lambda: {"status": "skipped", "why": "not run"})
    # perplexity of the fixed passages (llmhost.numerics), its fingerprint and misses
    numerics: dict[str, Any] = field(default_factory=dict)


QUESTIONS = ("Name three primary colours.", "Explain what a CPU cache is in one sentence.",
             "Give one tip for writing clear emails.", "What does HTTP stand for?")


def measured_prompt(i: int, label: str | None = None) -> str:
    """The user message of measured request i. A distinct opening per request: only
    the (optional) shared system prompt is a cacheable prefix. `label` replaces the
    number, so another client can send the same shape without sharing our text."""
    return f"Request {i if label is None else label}. {QUESTIONS[i % len(QUESTIONS)]}"


def run_expert(base_url: str, expert: Mapping[str, Any], *, repeat: int, warmup: int, concurrency: int,
               max_tokens: int, shared_prefix: bool, api_key: str | None,
               progress: Callable[[str], None] = lambda s: None,
               numerics_baseline: Mapping[str, Any] | None = None) -> ExpertResult:
    eid = expert["expert_id"]
    system = [{"role": "system", "content": SHARED_SYSTEM_PROMPT}] if shared_prefix else []

    def msgs(i: int) -> list[dict[str, str]]:
        return system + [{"role": "user", "content": measured_prompt(i)}]

    for i in range(warmup):
        progress(f"{eid}: warm-up {i + 1}/{warmup}")
        # its own text: a warm-up must not leave a measured prompt in the prefix cache
        stream_chat(base_url, eid, system + [{"role": "user", "content": f"Warm-up {i}. Say OK."}], 8, api_key)
    total = repeat * concurrency
    samples = stream_pool(base_url, [(eid, msgs(i)) for i in range(total)], max_tokens, api_key,
                          workers=concurrency, progress=lambda n: progress(f"{eid}: {n}/{total} requests"))
    st = summarize(samples)
    res = ExpertResult(eid, st)
    for s in samples:
        if s.error:
            res.misses.append(f"{eid}: request failed: {s.error}")
            break
    res.probes = coherence_probes(base_url, eid, api_key, progress)
    for name, p in res.probes.items():
        if not p["ok"]:
            res.misses.append(f"{eid}: coherence probe '{name}' failed ({p['why']}): {p['answer'][:120]!r}")
    path, why_none = reference_file(expert)
    res.reference = reference_probes(base_url, eid, path, why_none, api_key, progress)
    res.misses += reference_misses(eid, res.reference)
    progress(f"{eid}: perplexity of {len(numerics.PASSAGES)} passages")
    res.numerics = numerics_check(base_url, expert, api_key, numerics_baseline, res.reference.get("perplexity"))
    res.misses += [f"{eid}: {m}" for m in res.numerics["misses"]]
    res.misses += [m for m in check_thresholds(eid, st, expert.get("thresholds") or {})
                   if not m.endswith("requests failed") or not res.misses]
    return res


def numerics_check(base_url: str, expert: Mapping[str, Any], api_key: str | None,
                   baseline: Mapping[str, Any] | None, reference: Mapping[str, float] | None,
                   measure: Callable[..., dict[str, float]] = numerics.measure) -> dict[str, Any]:
    """The expert's perplexities judged absolutely, against its float32 reference (when its
    reference file carries one) and against the host's baseline entry (llmhost.numerics)."""
    fp = numerics.fingerprint(expert)
    try:
        ppl = measure(base_url, expert["expert_id"], api_key)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as e:
        return {"perplexity": {}, "fingerprint": fp, "misses": [f"perplexity not measured: {type(e).__name__}: {e}"]}
    misses = numerics.judge(ppl, baseline=baseline, fp=fp, reference=reference)
    return {"perplexity": ppl, "fingerprint": fp, "misses": misses,
            "against": [w for w, on in (("the float32 reference", bool(reference)),
                                        ("the host's baseline", bool(baseline))) if on] or ["absolute bound only"]}


def updated_baseline(previous: Mapping[str, Any], results: list[ExpertResult]) -> dict[str, Any]:
    """The host's numerics baseline after a passing run: an expert's entry is recorded the
    first time and again when its model, dtype or quantization changed; otherwise kept."""
    out = {k: v for k, v in previous.items()}
    for r in results:
        n = r.numerics
        if not n.get("perplexity") or n.get("misses"):
            continue
        old = out.get(r.expert_id)
        if not isinstance(old, Mapping) or old.get("fingerprint") != n["fingerprint"]:
            out[r.expert_id] = {"fingerprint": n["fingerprint"], "perplexity": n["perplexity"]}
    return out

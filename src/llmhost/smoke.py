"""Latency smoke test: TTFT, TBT, decode tokens/s, coherence, thresholds.

Definitions follow `vllm bench serve`:
- TTFT: from sending the request to the first streamed chunk carrying content;
- ITL / TBT (time between tokens): the gaps between successive content chunks;
- decode tokens/s: (output tokens - 1) / (time of last chunk - time of first chunk),
  the rate after the first token (vLLM's TPOT is its inverse);
- E2E: from sending to the end of the stream.
Token counts are the server's own usage figures (stream_options.include_usage).

The arithmetic (`measure`) is pure and unit-tested on scripted event lists; the
client (`stream_chat`) is plain urllib against the front door.
"""

from __future__ import annotations

import ast
import json
import re
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import reference as ref_mod

SHARED_SYSTEM_PROMPT = (
    "You are a careful assistant for an operations team that runs several language models on one "
    "CPU server. Answer briefly and exactly. " * 12
)


@dataclass
class Sample:
    """One streamed request."""

    ttft_s: float | None
    itls_s: list[float]
    e2e_s: float
    output_tokens: int
    prompt_tokens: int
    text: str
    error: str | None = None

    @property
    def decode_tps(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        decode_time = sum(self.itls_s)
        return (self.output_tokens - 1) / decode_time if decode_time > 0 else None


def measure(events: Iterable[tuple[float, str, Mapping[str, Any] | None]], start: float) -> Sample:
    """events: (monotonic time, content delta, usage or None) in arrival order."""
    first: float | None = None
    last: float | None = None
    itls: list[float] = []
    text: list[str] = []
    usage: Mapping[str, Any] = {}
    end = start
    for t, delta, u in events:
        end = t
        if u:
            usage = u
        if not delta:
            continue
        if first is None:
            first = t
        else:
            assert last is not None
            itls.append(t - last)
        last = t
        text.append(delta)
    out_tokens = int(usage.get("completion_tokens", 0)) if usage else 0
    if not out_tokens and text:
        out_tokens = len(itls) + 1  # no usage: one token per chunk, vLLM's default
    return Sample(
        ttft_s=None if first is None else first - start,
        itls_s=itls,
        e2e_s=end - start,
        output_tokens=out_tokens,
        prompt_tokens=int(usage.get("prompt_tokens", 0)) if usage else 0,
        text="".join(text),
    )


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear interpolation, as numpy's default (what vllm bench serve reports)."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Stats:
    requests: int
    errors: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tbt_p50_s: float | None
    tbt_p95_s: float | None
    decode_tps: float | None     # median over requests
    e2e_p50_s: float | None
    prompt_tokens: int
    output_tokens: int


def summarize(samples: Sequence[Sample]) -> Stats:
    ok = [s for s in samples if s.error is None and s.ttft_s is not None]
    ttfts = [s.ttft_s for s in ok if s.ttft_s is not None]
    itls = [x for s in ok for x in s.itls_s]
    tps = [s.decode_tps for s in ok if s.decode_tps]
    return Stats(
        requests=len(samples), errors=len(samples) - len(ok),
        ttft_p50_s=percentile(ttfts, 50), ttft_p95_s=percentile(ttfts, 95),
        tbt_p50_s=percentile(itls, 50), tbt_p95_s=percentile(itls, 95),
        decode_tps=statistics.median(tps) if tps else None,
        e2e_p50_s=percentile([s.e2e_s for s in ok], 50),
        prompt_tokens=sum(s.prompt_tokens for s in ok), output_tokens=sum(s.output_tokens for s in ok),
    )


def check_thresholds(expert: str, st: Stats, thr: Mapping[str, float]) -> list[str]:
    """One line per missed budget, naming the expert and the figure."""
    misses = []
    if st.errors:
        misses.append(f"{expert}: {st.errors} of {st.requests} requests failed")
    for key, val, op in (("ttft_p50_s", st.ttft_p50_s, "max"), ("ttft_p95_s", st.ttft_p95_s, "max"),
                         ("tbt_p95_s", st.tbt_p95_s, "max"), ("decode_tps_min", st.decode_tps, "min")):
        if key not in thr:
            continue
        limit = float(thr[key])
        if val is None:
            misses.append(f"{expert}: {key} could not be measured (limit {limit:g})")
        elif op == "max" and val > limit:
            misses.append(f"{expert}: {key.replace('_s', '')} {val:.3f} s > budget {limit:g} s")
        elif op == "min" and val < limit:
            misses.append(f"{expert}: decode {val:.1f} tokens/s < floor {limit:g}")
    return misses


# --- coherence ------------------------------------------------------------------

@dataclass
class Probe:
    name: str
    prompt: str
    check: Callable[[str], bool]
    max_tokens: int = 48


def _has_parsable_python(text: str) -> bool:
    m = re.search(r"```(?:python)?\s*\n(.*?)```", text, re.S)
    code = m.group(1) if m else text
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.FunctionDef) for n in ast.walk(tree))


PROBES: list[Probe] = [
    Probe("capital", "What is the capital of France? Answer in one word.", lambda a: "paris" in a.lower()),
    Probe("sum", "What is 2 + 3? Answer with the number only.", lambda a: re.search(r"\b5\b|five", a.lower()) is not None),
    Probe("code", "Write a Python function named add that returns the sum of a and b. Reply with only the code.",
          _has_parsable_python, max_tokens=96),
]


def garbage(text: str) -> str | None:
    """Why an answer looks broken, or None: empty, replacement characters, loops."""
    if not text.strip():
        return "empty output"
    if "\ufffd" in text:
        return "replacement characters (broken decoding)"
    words = text.split()
    for n in (1, 2, 3, 4):
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if len(grams) >= 8:
            top = max(grams.count(g) for g in set(grams))
            if top * n >= 0.6 * len(words) and top >= 4:
                return f"a {n}-word sequence repeats {top} times"
    if len(text) >= 40 and len(set(text)) <= 3:
        return "the same few characters over and over"
    return None


# --- client -----------------------------------------------------------------------

def _post(url: str, body: Mapping[str, Any], api_key: str | None, timeout: float):
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    return urllib.request.urlopen(req, timeout=timeout)


def sse_events(lines: Iterable[bytes], clock: Callable[[], float] = time.monotonic
               ) -> Iterator[tuple[float, str, Mapping[str, Any] | None]]:
    for raw in lines:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        t = clock()
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"].get("message", str(chunk["error"])))
        delta = ""
        for ch in chunk.get("choices") or []:
            delta += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
        yield t, delta, chunk.get("usage")


def stream_chat(base_url: str, model: str, messages: list[dict[str, str]], max_tokens: int,
                api_key: str | None = None, timeout: float = 300, fixed_length: bool = False) -> Sample:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if fixed_length:
        body["min_tokens"] = max_tokens  # vLLM extension: fixed output length
        body["ignore_eos"] = True
    start = time.monotonic()
    try:
        with _post(base_url.rstrip("/") + "/v1/chat/completions", body, api_key, timeout) as r:
            return measure(sse_events(r), start)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        return Sample(None, [], time.monotonic() - start, 0, 0, "", f"HTTP {e.code}: {detail}")
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
        return Sample(None, [], time.monotonic() - start, 0, 0, "", f"{type(e).__name__}: {e}")


@dataclass
class ExpertResult:
    expert_id: str
    stats: Stats
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    # status: passed | failed | skipped (never silently passed), with why and per-prompt results
    reference: dict[str, Any] = field(default_factory=lambda: {"status": "skipped", "why": "not run"})


def reference_file(expert: Mapping[str, Any]) -> tuple[str | None, str]:
    """The reference file this process can read for an expert, or (None, why not)."""
    import os  # noqa: PLC0415

    paths = [p for p in (expert.get("reference"), expert.get("reference_on_host")) if p]
    if not paths:
        return None, expert.get("reference_why") or "no reference file for this model (see docs/smoke.md)"
    for p in paths:
        if os.path.isfile(p):
            return p, ""
    return None, f"reference file not found here: {', '.join(paths)}"


def coherence_probes(base_url: str, model: str, api_key: str | None,
                     progress: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, Any]]:
    """The easy probes: shape and plausibility of three short answers."""
    out = {}
    for p in PROBES:
        progress(f"{model}: probe {p.name}")
        s = stream_chat(base_url, model, [{"role": "user", "content": p.prompt}], p.max_tokens, api_key)
        why = s.error or garbage(s.text) or (None if p.check(s.text) else "wrong answer")
        out[p.name] = {"ok": why is None, "answer": s.text, "why": why}
    return out


def reference_probes(base_url: str, model: str, path: str | None, why_none: str, api_key: str | None,
                     progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Greedy answers compared with the reference file's first words."""
    if path is None:
        return {"status": "skipped", "why": why_none}
    try:
        data = ref_mod.load(path)
    except ref_mod.ReferenceError as e:
        return {"status": "failed", "why": str(e), "file": path, "results": []}
    results = []
    for item in data["prompts"]:
        progress(f"{model}: reference {item['name']}")
        s = stream_chat(base_url, model, item["messages"], int(data.get("max_tokens", ref_mod.MAX_TOKENS)), api_key)
        if s.error:
            v = ref_mod.Verdict(item["name"], False, item["answer"], "", f"request failed: {s.error}")
        else:
            v = ref_mod.compare(item["name"], item["answer"], s.text,
                                int(data.get("compare_words", ref_mod.COMPARE_WORDS)), item.get("decisive_words"))
        results.append(asdict(v))
    failed = [r for r in results if not r["ok"]]
    compared = [r for r in results if r["compared_words"]]
    status = "failed" if failed else ("passed" if compared else "skipped")
    why = (f"{len(failed)} of {len(results)} answers differ from the reference" if failed else
           None if compared else "no prompt of the reference file has a decisive start to compare")
    return {"status": status, "file": path, "model": data.get("model"),
            "made_with": data.get("made_with"), "results": results, "why": why}


def reference_misses(expert_id: str, rep: Mapping[str, Any]) -> list[str]:
    """One line per divergent answer, quoting both texts."""
    if rep["status"] != "failed":
        return []
    if not rep.get("results"):
        return [f"{expert_id}: reference probe failed: {rep['why']}"]
    return [f"{expert_id}: reference probe '{r['name']}' {r['why']}: expected {r['expected'][:80]!r}, "
            f"got {r['answer'][:80]!r}" for r in rep["results"] if not r["ok"]]


QUESTIONS = ("Name three primary colours.", "Explain what a CPU cache is in one sentence.",
             "Give one tip for writing clear emails.", "What does HTTP stand for?")


def measured_prompt(i: int, label: str | None = None) -> str:
    """The user message of measured request i. A distinct opening per request: only
    the (optional) shared system prompt is a cacheable prefix. `label` replaces the
    number, so another client can send the same shape without sharing our text."""
    return f"Request {i if label is None else label}. {QUESTIONS[i % len(QUESTIONS)]}"


def stream_pool(base_url: str, jobs: Sequence[tuple[str, list[dict[str, str]]]], max_tokens: int,
                api_key: str | None, *, workers: int,
                progress: Callable[[int], None] = lambda n: None) -> list[Sample]:
    """The one worker pool: stream every (model, messages) job, `workers` at a time,
    fixed output length; samples in the order the jobs were given."""
    done = 0
    lock = threading.Lock()

    def one(job: tuple[str, list[dict[str, str]]]) -> Sample:
        nonlocal done
        s = stream_chat(base_url, job[0], job[1], max_tokens, api_key, fixed_length=True)
        with lock:
            done += 1
            progress(done)
        return s

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, jobs))


def run_expert(base_url: str, expert: Mapping[str, Any], *, repeat: int, warmup: int, concurrency: int,
               max_tokens: int, shared_prefix: bool, api_key: str | None,
               progress: Callable[[str], None] = lambda s: None) -> ExpertResult:
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
    res.misses += [m for m in check_thresholds(eid, st, expert.get("thresholds") or {})
                   if not m.endswith("requests failed") or not res.misses]
    return res


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
                         "reference": r.reference, "misses": r.misses} for r in results]}


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

"""Answers watched on the host, not only at deploy: the probe timer's job.

The old server's garbling came and went, so a systemd timer (role monitoring)
runs this every 15 minutes on each LLM host:

    python3 -m llmhost.probe --config /etc/llmhost/experts.json \
        --textfile /var/lib/prometheus/node-exporter/llmhost_probe.prom

For every expert that is loaded it sends the coherence probes and the reference
prompts (temperature 0) straight to the expert's own vLLM port on loopback, and
writes the verdicts for node exporter's textfile collector:

    llmhost_probe_ok{expert, probe}          1 right, 0 wrong (probe: capital, sum, code, reference_<name>,
                                             perplexity: llmhost.numerics against the host's baseline)
    llmhost_probe_perplexity{expert, passage}  the passage's perplexity (numerics-baseline.json beside
                                             the config holds the deploy's values)
    llmhost_probe_loaded{expert}             1 probed, 0 a lazy expert that is not loaded (not woken)
    llmhost_probe_reference_available{expert}  0 when the expert has no reference answers
    llmhost_probe_last_run_timestamp_seconds   when this run finished (a stale value alerts)
    llmhost_probe_duration_seconds

A lazy expert is never woken: vLLM listens on its backend port only while it is
loaded, and that is the port probed; the socket that starts it is not touched.

Stdlib only (with coherence.py, stream.py, reference.py and numerics.py): the monitoring role ships these
files to the host, where llmhost itself is not installed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import numerics
from .coherence import coherence_probes, reference_file, reference_misses, reference_probes


@dataclass
class ExpertProbe:
    expert_id: str
    loaded: bool
    probes: dict[str, bool] = field(default_factory=dict)
    reference_available: bool = False
    notes: list[str] = field(default_factory=list)
    perplexity: dict[str, float] = field(default_factory=dict)


def listening(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Is something accepting connections there? (A plain connect: it starts nothing.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_expert(expert: Mapping[str, Any], *, is_listening: Callable[[int], bool] = listening,
                 coherence: Callable[..., dict[str, dict[str, Any]]] = coherence_probes,
                 references: Callable[..., dict[str, Any]] = reference_probes,
                 measure: Callable[..., dict[str, float]] = numerics.measure,
                 baseline: Mapping[str, Any] | None = None) -> ExpertProbe:
    eid = str(expert["expert_id"])
    port = int(expert.get("backend_port") or expert["port"])
    if not is_listening(port):
        why = "lazy and not loaded: not woken" if not expert.get("preload", True) else "not listening"
        return ExpertProbe(eid, False, notes=[f"{eid}: {why} (port {port})"])
    url = f"http://127.0.0.1:{port}"
    res = ExpertProbe(eid, True)
    for name, p in coherence(url, eid, None).items():
        res.probes[name] = bool(p["ok"])
        if not p["ok"]:
            res.notes.append(f"{eid}: probe {name} failed ({p['why']}): {p['answer'][:80]!r}")
    path, why = reference_file(expert)
    rep = references(url, eid, path, why, None)
    res.reference_available = rep["status"] != "skipped"
    if rep["status"] == "skipped":
        res.notes.append(f"{eid}: reference probe skipped: {rep['why']}")
    for r in rep.get("results", []):
        if r.get("compared_words", 1):  # a near-tie reference is no check: not a probe
            res.probes[f"reference_{r['name']}"] = bool(r["ok"])
    if rep["status"] == "failed" and not rep.get("results"):
        res.probes["reference_file"] = False
    res.notes += reference_misses(eid, rep)
    try:
        res.perplexity = measure(url, eid, None)
    except (OSError, ValueError, KeyError, TypeError, ArithmeticError) as e:
        # not a verdict: an expert that stopped answering is ExpertDown's, a timeout is no drift
        res.notes.append(f"{eid}: perplexity not measured: {type(e).__name__}: {e}")
        return res
    misses = numerics.judge(res.perplexity, baseline=baseline, fp=numerics.fingerprint(expert),
                            reference=rep.get("perplexity"))
    res.probes["perplexity"] = not misses
    res.notes += [f"{eid}: {m}" for m in misses]
    return res


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(results: Sequence[ExpertProbe], finished: float, duration_s: float) -> str:
    """Prometheus text exposition format, as node exporter's textfile collector reads it."""
    out = ["# HELP llmhost_probe_ok 1 when the expert's answer to the probe was right, 0 when not.",
           "# TYPE llmhost_probe_ok gauge"]
    for r in results:
        for name, ok in sorted(r.probes.items()):
            out.append(f'llmhost_probe_ok{{expert="{_label(r.expert_id)}",probe="{_label(name)}"}} {int(ok)}')
    out += ["# HELP llmhost_probe_loaded 1 when the expert was loaded and probed; a lazy one is never woken.",
            "# TYPE llmhost_probe_loaded gauge"]
    out += [f'llmhost_probe_loaded{{expert="{_label(r.expert_id)}"}} {int(r.loaded)}' for r in results]
    out += ["# HELP llmhost_probe_reference_available 0 when a loaded expert has no reference answers.",
            "# TYPE llmhost_probe_reference_available gauge"]
    out += [f'llmhost_probe_reference_available{{expert="{_label(r.expert_id)}"}} {int(r.reference_available)}'
            for r in results if r.loaded]
    out += ["# HELP llmhost_probe_perplexity Perplexity of a fixed passage (llmhost.numerics) by the expert.",
            "# TYPE llmhost_probe_perplexity gauge"]
    out += [f'llmhost_probe_perplexity{{expert="{_label(r.expert_id)}",passage="{_label(k)}"}} {v:g}'
            for r in results for k, v in sorted(r.perplexity.items())]
    out += ["# HELP llmhost_probe_last_run_timestamp_seconds When the last probe run finished.",
            "# TYPE llmhost_probe_last_run_timestamp_seconds gauge",
            f"llmhost_probe_last_run_timestamp_seconds {finished:.3f}",
            "# HELP llmhost_probe_duration_seconds How long the last probe run took.",
            "# TYPE llmhost_probe_duration_seconds gauge",
            f"llmhost_probe_duration_seconds {duration_s:.3f}"]
    return "\n".join(out) + "\n"


def merge_prom(texts: Sequence[str]) -> str:
    """Several Prometheus text files as one: each family's HELP and TYPE once, its samples
    together (node exporter refuses a file that repeats them)."""
    fams: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split()[2]
                h = heads.setdefault(name, [])
                if not any(x.split()[1] == line.split()[1] for x in h):
                    h.append(line)
                fams.setdefault(name, [])
            elif line and not line.startswith("#"):
                fams.setdefault(re.split(r"[{\s]", line, maxsplit=1)[0], []).append(line)
    out: list[str] = []
    for name, samples in fams.items():
        out += heads.get(name, []) + samples
    return "\n".join(out) + ("\n" if out else "")


def included(pattern: str | None) -> str:
    """The lazy proxies' wait figures (/run/llmhost-admit/*.prom), merged."""
    if not pattern:
        return ""
    texts = []
    for path in sorted(glob.glob(pattern)):
        try:
            texts.append(Path(path).read_text())
        except OSError:
            continue
    return merge_prom(texts)


def write_atomic(path: str, text: str) -> None:
    """node exporter must never read half a file: write beside it, then rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m llmhost.probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="/etc/llmhost/experts.json")
    ap.add_argument("--textfile", required=True, help="the .prom file node exporter reads")
    ap.add_argument("--include", help="a glob of .prom files to copy in (the lazy proxies' wait figures)")
    args = ap.parse_args(argv)
    try:
        cfg = json.loads(Path(args.config).read_text())
        experts = cfg["experts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"{args.config}: cannot read the experts config ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    base_path = Path(args.config).with_name("numerics-baseline.json")
    try:
        baseline = json.loads(base_path.read_text()) if base_path.exists() else {}
    except (OSError, ValueError):
        print(f"{base_path}: unreadable; perplexity judged without the baseline", file=sys.stderr)
        baseline = {}
    baseline = baseline if isinstance(baseline, dict) else {}
    t0 = time.monotonic()
    results = [probe_expert(e, baseline=baseline.get(e["expert_id"])) for e in experts
               if e.get("runner", "generate") != "pooling"]
    for r in results:
        for n in r.notes:
            print(n)
        if r.loaded:
            bad = [k for k, ok in r.probes.items() if not ok]
            print(f"{r.expert_id}: {len(r.probes) - len(bad)}/{len(r.probes)} probes right"
                  + (f"; wrong: {', '.join(bad)}" if bad else ""))
    try:
        write_atomic(args.textfile, render(results, time.time(), time.monotonic() - t0) + included(args.include))
    except OSError as e:
        print(f"{args.textfile}: cannot write ({e.strerror})", file=sys.stderr)
        return 2
    # A wrong answer is reported through the metric (and its alert), not a failed unit.
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""TTFT added by the front door: the same streamed request, direct to the expert
and through HAProxy on :8082, interleaved, on the host itself (stdlib only).

    scripts/bench_frontdoor.py --remote root@HOST [-i KEY] --expert general --port 8101 [-n 60] [--key sk-...]

--remote runs this file on HOST over ssh (the experts listen on loopback only).
Prints p50 and p99 TTFT of each path and the difference. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request


def ttft(url: str, model: str, key: str | None) -> float:
    body = json.dumps({"model": model, "max_tokens": 2, "temperature": 0, "stream": True,
                       "messages": [{"role": "user", "content": "Say OK."}]}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=120) as r:
        for line in r:
            if line.startswith(b"data:") and b'"content":"' in line:
                t = time.perf_counter() - t0
                for _ in r:  # drain the stream
                    pass
                return t
    raise RuntimeError("no content chunk")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remote")
    ap.add_argument("-i", dest="identity")
    ap.add_argument("--expert", default="general")
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--key")
    a = ap.parse_args()
    if a.remote:
        ssh = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        if a.identity:
            ssh += ["-i", a.identity]
        args = ["--expert", a.expert, "--port", str(a.port), "-n", str(a.n)] + (["--key", a.key] if a.key else [])
        with open(__file__, "rb") as f:
            return subprocess.run(ssh + [a.remote, "python3", "-", *args], stdin=f).returncode
    direct = f"http://127.0.0.1:{a.port}/v1/chat/completions"
    front = "http://127.0.0.1:8082/v1/chat/completions"
    for _ in range(5):  # warm both paths
        ttft(direct, a.expert, None)
        ttft(front, a.expert, a.key)
    d, f = [], []
    for _ in range(a.n):
        d.append(ttft(direct, a.expert, None))
        f.append(ttft(front, a.expert, a.key))
    ms = lambda x: f"{x * 1000:7.2f} ms"  # noqa: E731
    print(f"{a.n} requests each, interleaved, expert {a.expert}")
    print(f"direct      p50 {ms(pct(d, 50))}  p99 {ms(pct(d, 99))}")
    print(f"front door  p50 {ms(pct(f, 50))}  p99 {ms(pct(f, 99))}")
    print(f"added       p50 {ms(pct(f, 50) - pct(d, 50))}  p99 {ms(pct(f, 99) - pct(d, 99))}")
    diffs = [y - x for x, y in zip(d, f)]
    print(f"paired difference p50 {ms(pct(diffs, 50))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

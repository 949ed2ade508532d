"""model "auto" routed by meaning through the real front door: the embedding expert
(all-MiniLM-L6-v2 on vLLM's pooling runner), HAProxy's Lua, the centroids the deploy
wrote. Accuracy on the labelled set, the fallback when the embedder stops mid-run."""

import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import KEY

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
PROMPTS = [json.loads(x) for x in (PROJECT / "tests/data/route_prompts.jsonl").read_text().splitlines() if x.strip()]
FIRST = json.loads((PROJECT / "tests/data/route_accuracy.json").read_text())


def chat(base_url, text, model="auto", max_tokens=1, stream=False):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0,
            **({"model": model} if model is not None else {}), **({"stream": True} if stream else {})}
    req = urllib.request.Request(base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        if stream:
            for line in r:
                if line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
                    return time.perf_counter() - t0, r.headers.get("x-llmhost-expert")
            return None, r.headers.get("x-llmhost-expert")
        return json.load(r), r.headers.get("x-llmhost-expert")


def route_metrics(host):
    text = host.check_output("curl -s 127.0.0.1:8405/llmhost/route-metrics")
    return {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def test_the_centroids_on_the_host_are_the_plans(host):
    cents = json.loads(host.file("/etc/haproxy/llmhost-centroids.json").content_string)
    assert [c["expert_id"] for c in cents["centroids"]] == ["general", "coder"]
    assert len(cents["centroids"][0]["vector"]) == 384   # all-MiniLM-L6-v2
    assert route_metrics(host)["llmhost_route_loaded"] == 1


def test_auto_reaches_the_right_expert_for_a_coding_and_a_general_prompt(host, base_url):
    since = host.check_output("date +%s")
    out, who = chat(base_url, "Write a Python function that returns the factorial of n.", max_tokens=8)
    assert (out["model"], who) == ("coder", "coder"), (out, who)
    out, who = chat(base_url, "What is the capital of France? Answer in one word.", max_tokens=8)
    assert (out["model"], who) == ("general", "general") and "Paris" in out["choices"][0]["message"]["content"]
    out, who = chat(base_url, "Fix this bug: my JavaScript loop never ends.", model=None)  # no model at all
    assert (out["model"], who) == ("coder", "coder"), (out, who)
    out, who = chat(base_url, "Write a Python function.", model="general")  # a named model is obeyed
    assert (out["model"], who) == ("general", "general")
    deadline = time.monotonic() + 20
    while True:
        log = host.run(f"journalctl -t haproxy --since @{since} --no-pager -o cat").stdout
        if "expert=coder route=embedding" in log or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "expert=coder route=embedding" in log and "expert=general route=embedding" in log, log[-2000:]


@pytest.mark.full
def test_accuracy_on_the_labelled_set_stays_at_the_first_measured_figure(base_url):
    by_kind: dict[str, list[int]] = {}
    misses = []
    for p in PROMPTS:
        _, who = chat(base_url, p["prompt"])
        hit = who == p["expert"]
        by_kind.setdefault(p["kind"], [0, 0])
        by_kind[p["kind"]][0] += hit
        by_kind[p["kind"]][1] += 1
        if not hit:
            misses.append(f"{p['kind']}: {p['prompt']!r} -> {who} (labelled {p['expert']})")
    correct = sum(v[0] for v in by_kind.values())
    acc = correct / len(PROMPTS)
    print(f"\nrouting accuracy through the front door: {correct}/{len(PROMPTS)} = {acc:.3f} "
          f"(first measured {FIRST['accuracy']}); by kind: {by_kind}")
    for m in misses:
        print("  miss", m)
    assert len(PROMPTS) >= 60
    assert acc >= FIRST["accuracy"] - FIRST["margin"], misses


def test_added_ttft_of_auto_is_printed(base_url):
    """Figures only (targets live in `make bench`): streamed TTFT of auto against the same
    prompt named, alternating, for a general prompt (both reach expert general)."""
    text = "Name a colour of the rainbow."
    named, auto = [], []
    chat(base_url, text, model="general", max_tokens=2, stream=True)
    for _ in range(8):
        named.append(chat(base_url, text, model="general", max_tokens=2, stream=True)[0])
        t, who = chat(base_url, text, max_tokens=2, stream=True)
        assert who == "general"
        auto.append(t)
    p = lambda xs, q: sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    print(f"\nTTFT named p50 {statistics.median(named) * 1000:.1f} ms, auto p50 {statistics.median(auto) * 1000:.1f} ms; "
          f"added p50 {(statistics.median(auto) - statistics.median(named)) * 1000:.1f} ms, "
          f"p95 {(p(auto, .95) - p(named, .95)) * 1000:.1f} ms (shared 2-core host)")


@pytest.mark.full
def test_stopping_the_embedder_mid_run_fails_no_request(host, base_url):
    before = route_metrics(host)
    results: list = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                out, who = chat(base_url, "Write a Python function that adds two numbers.", max_tokens=2)
                results.append(("ok", who))
            except (urllib.error.URLError, OSError) as e:
                results.append(("failed", repr(e)))

    t = threading.Thread(target=client)
    t.start()
    try:
        while len(results) < 3:
            time.sleep(0.2)
        host.run("systemctl stop llmhost-expert-router")
        n = len(results)
        while len(results) < n + 15:
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(60)
        host.run("systemctl start --no-block llmhost-expert-router")
    failed = [r for r in results if r[0] != "ok"]
    whos = [r[1] for r in results]
    after = route_metrics(host)
    fell = {k: after[k] - before.get(k, 0) for k in after if k.startswith("llmhost_route_fallback_total")}
    print(f"\n{len(results)} auto requests while the embedder stopped: {len(failed)} failed; "
          f"answered by {sorted(set(whos))}; fallbacks {fell}")
    assert not failed, failed
    assert whos[0] == "coder" and whos[-1] == "general"   # routed, then the default expert
    assert fell['llmhost_route_fallback_total{reason="down"}'] >= 1


@pytest.mark.full
def test_routing_comes_back_when_the_embedder_is_up_again(host, base_url):
    deadline = time.monotonic() + 900
    while not host.service("llmhost-expert-router").is_running or \
            host.run("systemctl is-active llmhost-expert-router").stdout.strip() != "active":
        assert time.monotonic() < deadline, "the embedder did not come back"
        time.sleep(2)
    while True:   # the front door's health check takes it back within a second or so
        _, who = chat(base_url, "Write a Python function that adds two numbers.")
        if who == "coder" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert who == "coder"

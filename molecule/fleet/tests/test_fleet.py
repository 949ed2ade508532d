"""A rollout across two hosts, gated host by host (issue: fleet rollout).

The converge was the first rollout, a change from nothing to serving: fleet-a, then
fleet-b, each ending with its smoke test, whose report became the host's baseline.
These tests run in file order on the same two hosts; each later rollout is a
`site.yml` run as an operator makes it for an expert change (`--tags
experts,frontdoor,verify`, default batches: fleet-a is the canary, then fleet-b):

1. the first rollout went canary first: fleet-a had passed its smoke test (its
   baseline written) before fleet-b's expert unit was written;
2. a change that vLLM accepts but that makes fleet-a slow (no prefix caching, and
   prefill in chunks of 16 tokens: the smoke test's ~300-token prompts take about
   20 engine steps before their first token) fails fleet-a's regression gate,
   naming the figure and both values; site.yml reverts fleet-a's expert to its
   previous unit, which serves again, and the rollout stops there: fleet-b runs no
   task, its files are unchanged, and it answers every request a client made
   through its front door during the run;
3. the fix (the intended change without the slow settings: a smaller context
   window) goes through fleet-a, then fleet-b, each restarted and passing its gate
   against its baseline.

A change vLLM refuses outright (the expert never starts) is rolled back by the
experts stage itself; the site scenario proves that path
(test_broken_model_rolls_back_while_the_other_expert_serves).

Each run prints its time per batch and the gate's decision with both values.
"""

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import testinfra

from llmhost import runner

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOSTS = ("fleet-a", "fleet-b")
KEY = "sk-llmhost-test-key"
QUESTION = "What is the capital of France? Answer in one word."
ROLLOUT_PLAY = "Roll out host by host, each batch gated by its smoke test"
SMOKE_TASK = "Stream through the front door"
# what a rollout of the general expert writes on a host
WATCHED = ("/etc/systemd/system/llmhost-expert-general.service", "/etc/llmhost/experts/general.env",
           "/etc/llmhost/experts.json", "/etc/haproxy/haproxy.cfg")
BASE_LEN, GOOD_LEN = 2048, 1024   # the converge's context window (molecule.yml), the fix's


def expert(max_model_len: int, **engine) -> dict:
    """The scenario's expert (molecule.yml) with another context window (and engine keys)."""
    return {"expert_id": "general", "model": "/srv/models/SmolLM2-135M-Instruct",
            "model_source": "/var/cache/llmhost/models/SmolLM2-135M-Instruct", "domain": "general",
            "priority": 5, "kv_cache_gib": 1, "cores": 1, "compile": "eager",
            "engine": {"max_model_len": max_model_len, **engine},
            "thresholds": {"ttft_p50_s": 2.0, "ttft_p95_s": 5.0, "tbt_p95_s": 0.25, "decode_tps_min": 5}}


def rollout(max_model_len: int, **engine) -> runner.PlaybookRun:
    """site.yml over both hosts, as the runbook says for an expert change."""
    extra = {"llmhost_experts": [expert(max_model_len, **engine)],
             # the scenario's reports and baselines (as converge.yml sets them)
             "smoke_test_report_dir": str(PROJECT / "reports" / "molecule")}
    return runner.run_playbook(["site.yml"], INVENTORY, args=["--tags", "experts,frontdoor,verify",
                                                            "-e", json.dumps(extra)],
                               envvars=runner.molecule_envvars(), timeout=3600)


@pytest.fixture(scope="module")
def hosts():
    return {h: testinfra.get_host(f"ansible://{h}", ansible_inventory=INVENTORY) for h in HOSTS}


def files(host) -> dict[str, str]:
    return {p: host.file(p).sha256sum for p in WATCHED}


def ask(host, timeout=60) -> str | None:
    """One question through the host's front door, as a client asks it."""
    addr = host.ansible.get_variables()["ansible_host"]
    req = urllib.request.Request(f"http://{addr}:8082/v1/chat/completions",
                                 data=json.dumps({"model": "general", "temperature": 0, "max_tokens": 16,
                                                  "messages": [{"role": "user", "content": QUESTION}]}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)["choices"][0]["message"]["content"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError):
        return None


def rollout_events(run: runner.PlaybookRun, host: str) -> list[dict]:
    """The task events of one host in the rollout play (not the preflight)."""
    return [e for e in run.events if e.get("event", "").startswith("runner_on_")
            and (e.get("event_data") or {}).get("play") == ROLLOUT_PLAY
            and (e.get("event_data") or {}).get("host") == host]


def batch_span(run: runner.PlaybookRun, host: str) -> tuple[datetime, datetime] | None:
    """When the host's batch started its first task and finished its last one."""
    ev = rollout_events(run, host)
    if not ev:
        return None
    times = [datetime.fromisoformat(e["created"]) for e in ev]
    return min(times), max(times)


def gate_lines(run: runner.PlaybookRun, host: str) -> list[str]:
    for e in rollout_events(run, host):
        data = e["event_data"]
        if e["event"] in ("runner_on_ok", "runner_on_failed") and data.get("task", "").startswith(SMOKE_TASK):
            return [ln for ln in (data.get("res") or {}).get("stdout_lines", []) if ln.startswith("GATE")]
    return []


def report(title: str, run: runner.PlaybookRun) -> dict[str, tuple[datetime, datetime] | None]:
    """Print the run's figures (they land in reports/molecule-fleet.log) and return the spans."""
    spans = {h: batch_span(run, h) for h in HOSTS}
    print(f"\n{title}: rc {run.rc}, {run.seconds:.0f} s in all, changed {run.changed}")
    for h, span in spans.items():
        took = f"{(span[1] - span[0]).total_seconds():.0f} s" if span else "not run"
        print(f"  batch {h}: {took}")
        for line in gate_lines(run, h):
            print(f"    {h}: {line}")
    return spans


def test_the_first_rollout_went_canary_first(hosts):
    for h in HOSTS:
        assert "Paris" in (ask(hosts[h]) or ""), h
    baseline = {h: PROJECT / "reports" / "molecule" / h / "baseline.json" for h in HOSTS}
    assert all(b.exists() for b in baseline.values()), "the converge set no baseline"
    # both hosts share this machine's clock: fleet-a's gate passed before fleet-b changed
    b_unit_written = float(hosts["fleet-b"].check_output(f"stat -c %Y {WATCHED[0]}"))
    assert baseline["fleet-a"].stat().st_mtime < b_unit_written, "fleet-b was deployed before fleet-a's gate"
    # each expert on a CPU of its own (fleet-b reserves CPU 0, molecule.yml)
    cpus = {h: [ln for ln in hosts[h].file(WATCHED[0]).content_string.splitlines()
                if ln.startswith("CPUAffinity=")] for h in HOSTS}
    assert cpus == {"fleet-a": ["CPUAffinity=0"], "fleet-b": ["CPUAffinity=1"]}, cpus


def test_a_change_that_makes_the_canary_slow_fails_its_gate_and_is_reverted(hosts):
    before = {h: files(hosts[h]) for h in HOSTS}
    answers: list[str | None] = []
    stop = threading.Event()

    def keep_asking():   # a client of fleet-b during the whole rollout
        while not stop.is_set():
            answers.append(ask(hosts["fleet-b"]))
            time.sleep(0.5)

    t = threading.Thread(target=keep_asking)
    t.start()
    try:
        run = rollout(BASE_LEN, max_num_batched_tokens=16, enable_prefix_caching=False)
    finally:
        stop.set()
        t.join()
    spans = report("slow change (no prefix caching, max_num_batched_tokens 16: prefill in chunks of 16)", run)
    out = " ".join(run.stdout.split())
    assert run.rc != 0
    lines = gate_lines(run, "fleet-a")
    assert any(re.match(r"GATE FAIL general: TTFT p50 \d+ ms against baseline \d+ ms \(\+\d+%", ln)
               for ln in lines), lines
    # site.yml's revert: the previous unit back and serving, the previous effective config back
    assert "fleet-a failed its verify stage: " in out and "GATE FAIL general: TTFT p50" in out, out[-4000:]
    assert re.search(r"Reverted general: restored [^;]*llmhost-expert-general\.service[^;]*; "
                     r"the previous version \(service\) is active", out), out[-4000:]
    assert files(hosts["fleet-a"]) == before["fleet-a"]
    assert "--max-num-batched-tokens 16" not in hosts["fleet-a"].file(WATCHED[0]).content_string
    assert hosts["fleet-a"].service("llmhost-expert-general").is_running
    assert "Paris" in (ask(hosts["fleet-a"]) or "")
    # fleet-b: the rollout stopped before its batch; nothing of it changed, and it served throughout
    assert spans["fleet-b"] is None, rollout_events(run, "fleet-b")[:3]
    assert files(hosts["fleet-b"]) == before["fleet-b"]
    failed = [a for a in answers if not a or "Paris" not in a]
    print(f"  fleet-b during the run: {len(answers)} requests, {len(failed)} failed")
    assert len(answers) >= 10 and not failed, answers


def test_the_fix_goes_through_both_hosts_canary_first(hosts):
    before = {h: files(hosts[h]) for h in HOSTS}
    run = rollout(GOOD_LEN)
    spans = report(f"the fix: max_model_len {BASE_LEN} -> {GOOD_LEN}, no slow settings", run)
    assert run.rc == 0, run.stdout[-4000:]
    for h in HOSTS:
        after = files(hosts[h])
        assert after[WATCHED[0]] != before[h][WATCHED[0]], f"{h}: the unit did not change"
        assert f"--max-model-len {GOOD_LEN}" in hosts[h].file(WATCHED[0]).content_string, h
        assert run.changed.get(h, 0) > 0, run.changed
        lines = gate_lines(run, h)
        assert any(ln.startswith("GATE pass") for ln in lines), (h, lines)
        assert any(ln.startswith("GATE ok general: TTFT p50") for ln in lines), (h, lines)
        assert "Paris" in (ask(hosts[h]) or ""), h
    # the canary's batch ended before the next batch began
    assert spans["fleet-a"][1] <= spans["fleet-b"][0], spans

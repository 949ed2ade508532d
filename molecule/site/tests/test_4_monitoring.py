"""Prometheus on the host scrapes every expert, the front door and node exporter."""

import json
import time


def query(host, q):
    out = host.check_output(f"curl -s --get --data-urlencode {json.dumps('query=' + q)} http://127.0.0.1:9090/api/v1/query")
    return json.loads(out)["data"]["result"]


def test_all_targets_up(host):
    deadline = time.monotonic() + 120
    while True:
        targets = json.loads(host.check_output("curl -s http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"].get("expert", "")): t["health"] for t in targets}
        if all(h == "up" for h in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert health == {("vllm", "general"): "up", ("vllm", "coder"): "up", ("frontdoor", ""): "up",
                      ("node", ""): "up", ("prometheus", ""): "up"}, health


def test_ttft_histograms_are_there_for_each_expert(host):
    deadline = time.monotonic() + 90
    while True:
        res = query(host, 'sum by (expert) (vllm:time_to_first_token_seconds_count)')
        got = {r["metric"]["expert"]: float(r["value"][1]) for r in res}
        if (set(got) == {"general", "coder"} and all(v > 0 for v in got.values())) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert set(got) == {"general", "coder"} and all(v > 0 for v in got.values()), got
    assert query(host, "vllm:inter_token_latency_seconds_bucket")


def test_rules_loaded_and_only_loopback(host):
    rules = json.loads(host.check_output("curl -s http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"ExpertTTFTHigh", "ExpertTBTHigh", "ExpertDown", "llmhost:ttft_seconds:p95_5m"} <= names
    assert host.socket("tcp://127.0.0.1:9090").is_listening and not host.socket("tcp://0.0.0.0:9090").is_listening
    assert host.socket("tcp://127.0.0.1:9100").is_listening

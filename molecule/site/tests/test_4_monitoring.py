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
    assert health == {("vllm", "general"): "up", ("vllm", "coder"): "up", ("vllm", "router"): "up",
                      ("frontdoor", ""): "up", ("frontdoor_routing", ""): "up", ("usage_per_key", ""): "up",
                      ("node", ""): "up", ("prometheus", ""): "up"}, health


def test_ttft_histograms_are_there_for_each_expert(host):
    deadline = time.monotonic() + 90
    while True:
        # the router (a pooling expert) makes no tokens: its histograms stay empty
        res = query(host, 'sum by (expert) (vllm:time_to_first_token_seconds_count{expert!="router"})')
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


def test_node_exporter_sees_the_expert_units_for_the_unit_alerts(host):
    text = host.check_output("curl -s http://127.0.0.1:9100/metrics")
    for eid in ("general", "coder"):
        line = f'node_systemd_unit_state{{name="llmhost-expert-{eid}.service",state="active",type="exec"}} 1'
        assert line in text, [ln for ln in text.splitlines() if "node_systemd_unit_state" in ln][:10]
    assert 'node_systemd_unit_state{name="ssh.service"' not in text  # only the toolkit's units


def run_probe(host):
    """One run of the answer probe timer's service, now; its textfile's samples."""
    host.run("systemctl start llmhost-probe.service")  # oneshot: returns when the run is over
    text = host.file("/var/lib/prometheus/node-exporter/llmhost_probe.prom").content_string
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_probe_timer_checks_every_expert_against_its_reference(host):
    assert host.service("llmhost-probe.timer").is_enabled and host.service("llmhost-probe.timer").is_running
    m = run_probe(host)
    print("probe samples:", json.dumps(m, indent=1))
    assert host.service("llmhost-probe.service").systemd_properties["Result"] == "success"
    for e in ("general", "coder"):
        assert m[f'llmhost_probe_loaded{{expert="{e}"}}'] == 1
        assert m[f'llmhost_probe_reference_available{{expert="{e}"}}'] == 1
        mine = {k: v for k, v in m.items() if k.startswith(f'llmhost_probe_ok{{expert="{e}"')}
        # 3 easy + 4 reference + the numerics check against the deploy's baseline
        assert len(mine) == 3 + 4 + 1 and all(v == 1 for v in mine.values()), mine
        assert 0 < m[f'llmhost_probe_perplexity{{expert="{e}",passage="spanish"}}'] < 1000
    assert time.time() - m["llmhost_probe_last_run_timestamp_seconds"] < 300
    # node exporter serves them, and the alert rules are loaded
    exported = host.check_output("curl -s http://127.0.0.1:9100/metrics")
    assert 'llmhost_probe_ok{expert="general",probe="reference_japan"} 1' in exported
    rules = json.loads(host.check_output("curl -s http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    assert {"ExpertAnswerWrong", "ExpertNumericsDrift", "ExpertProbeStale"} <= {r["name"] for g in rules
                                                                                for r in g["rules"]}

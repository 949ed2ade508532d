"""Render the Prometheus files from a plan, then promtool check and promtool test rules."""

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from llmhost.cli import saved_capabilities
from llmhost.plan import GIB, Host, build_plan

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def render(tmp_path):
    experts = [
        {"expert_id": "general", "model": "/m/a", "domain": "general", "priority": 5, "weights_gib": 0.3,
         "kv_cache_gib": 1, "thresholds": {"ttft_p95_s": 0.5, "tbt_p95_s": 0.05}},
        {"expert_id": "coder", "model": "/m/b", "domain": "coding", "priority": 3, "weights_gib": 0.3,
         "kv_cache_gib": 1, "route_examples": ["Write a Python function"]},
        {"expert_id": "router", "runner": "pooling", "model": "/m/e", "domain": "routing", "priority": 9,
         "weights_gib": 0.1, "kv_cache_gib": 1, "cores": 0},
    ]
    p = build_plan(experts, None, saved_capabilities(), Host((0, 1), 24 * GIB, "x86_64", {"bf16": True}),
                   routing={"embedder": "router"})
    out = tmp_path / "prom"
    out.mkdir()
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"monitoring_plan": p.to_dict(), "__monitoring_config_dir": str(out),
                              "ansible_python_interpreter": sys.executable}))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-monitoring.yml",
                        "-e", f"@{ev}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-4000:]
    return out


def test_rules_and_config_pass_promtool_and_every_alert_is_tested(tmp_path):
    out = render(tmp_path)
    shutil.copy(ROOT / "tests/monitoring/alerts_test.yml", out)
    r = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = yaml.safe_load((out / "llmhost-rules.yml").read_text())
    alerts = {rule["alert"] for g in rules["groups"] for rule in g["rules"] if "alert" in rule}
    tests = yaml.safe_load((ROOT / "tests/monitoring/alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for tc in tests for t in tc.get("alert_rule_test", []) if t.get("exp_alerts")}
    quiet = {t["alertname"] for tc in tests for t in tc.get("alert_rule_test", []) if not t.get("exp_alerts")}
    assert alerts == fired == quiet, (alerts, fired, quiet)
    cfg = yaml.safe_load((out / "prometheus.yml").read_text())
    vllm = [j for j in cfg["scrape_configs"] if j["job_name"] == "vllm"][0]
    assert [s["labels"]["expert"] for s in vllm["static_configs"]] == ["general", "coder", "router"]
    (route,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "frontdoor_routing"]
    assert route["metrics_path"] == "/llmhost/route-metrics"


def test_every_alert_has_a_runbook_page(tmp_path):
    out = render(tmp_path)
    rules = yaml.safe_load((out / "llmhost-rules.yml").read_text())
    for g in rules["groups"]:
        for rule in g["rules"]:
            if "alert" in rule:
                page = rule["annotations"]["runbook_url"].rsplit("/", 1)[1]
                assert (ROOT / "docs/runbooks" / page).exists(), f"{rule['alert']}: docs/runbooks/{page} missing"


def test_grafana_dashboard_is_importable_and_uses_known_series(tmp_path):
    dash = json.loads((ROOT / "docs/grafana/llmhost-experts.json").read_text())
    assert dash["uid"] and dash["panels"] and dash["__inputs"][0]["pluginId"] == "prometheus"
    out = render(tmp_path)
    rules = yaml.safe_load((out / "llmhost-rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    titles = " ".join(p["title"] for p in dash["panels"])
    for word in ("TTFT", "TBT", "tokens/s", "Queue", "Memory"):
        assert word in titles
    for p in dash["panels"]:
        for t in p["targets"]:
            names = set(re.findall(r"[a-z_]+:[a-z_:0-9]+", t["expr"]))
            assert names <= recorded | {"vllm:num_requests_waiting", "vllm:num_requests_running"}, names

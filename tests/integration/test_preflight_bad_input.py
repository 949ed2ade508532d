"""The preflight play refuses bad input before any change, naming the expert and the field.

A sample of tests/unit/test_bad_input.py's table, through the real
`ansible-playbook playbooks/preflight.yml` against the controller itself (local
connection; the preflight only reads). Each run must fail in the plan task, with
nothing changed and no traceback (counted from ansible-runner's events).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost import runner

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GOOD = [
    {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 2, "weights_gib": 1.0,
     "kv_cache_gib": 1},
    {"expert_id": "coder", "model": "/srv/models/b", "domain": "code", "priority": 1, "weights_gib": 1.0,
     "kv_cache_gib": 1},
]
CASES = [
    ("unit injection in domain", {"domain": "general\n[Service]\nExecStartPre=+/bin/touch /tmp/pwned"},
     "expert 'coder' field 'domain'"),
    ("id ending in -proxy", {"expert_id": "api-proxy"}, "expert 'api-proxy' field 'expert_id'"),
    ("port of Prometheus", {"port": 9090}, "expert 'coder' field 'port'"),
    ("max_num_seqs 0", {"engine": {"max_num_seqs": 0}}, "expert 'coder' field 'max_num_seqs'"),
    ("max_num_seqs a word", {"engine": {"max_num_seqs": "many"}}, "expert 'coder' field 'max_num_seqs'"),
    ("negative weights", {"weights_gib": -50}, "expert 'coder' field 'weights_gib'"),
    ("unknown quantization", {"quantization": "int3"}, "expert 'coder' field 'quantization'"),
    ("accept_miss without a reason", {"accept_miss": "ok"}, "expert 'coder' field 'accept_miss'"),
    ("a list smuggling --host", {"engine": {"tokenizer": ["x.org", "--host", "0.0.0.0"]}},
     "expert 'coder' field 'tokenizer'"),
    ("env the toolkit owns", {"env": {"HF_HUB_OFFLINE": "0"}}, "expert 'coder' field 'env.HF_HUB_OFFLINE'"),
    ("a secret in argv", {"engine": {"api_key": "sk-live-0123456789"}}, "expert 'coder' field 'api_key'"),
    ("model path with a colon", {"model": "/srv/models/a:/etc"}, "expert 'coder' field 'model'"),
]
# Inventory variables beside the experts (tests/unit/test_hostile_inputs.py has the whole table).
VARIABLE_CASES = [
    ("host description without memory", {"llmhost_host_expect": {"cpus": 32}}, "llmhost_host_expect field 'memory_gib'"),
    ("cpus as words", {"llmhost_host_expect": {"cpus": "32 cores", "memory_gib": 64}},
     "llmhost_host_expect field 'cpus'"),
    ("metrics on every address", {"llmhost_frontdoor_metrics_bind": "0.0.0.0"}, "llmhost_frontdoor_metrics_bind"),
    ("config dir /tmp", {"llmhost_config_dir": "/tmp"}, "llmhost_config_dir"),
    ("front door on ssh", {"llmhost_frontdoor_port": 22}, "llmhost_frontdoor_port"),
    ("Prometheus on every address", {"monitoring_listen": "0.0.0.0:9090"}, "monitoring_listen"),
    ("a probe interval in words", {"monitoring_probe_interval": "every hour"}, "monitoring_probe_interval"),
    ("no smoke requests", {"smoke_test_repeat": 0}, "smoke_test_repeat"),
    ("a state dir outside /var/lib", {"vllm_experts_state_subdir": "../etc"}, "vllm_experts_state_subdir"),
    ("api keys as one string", {"llmhost_api_keys": "sk-live-one"}, "llmhost_api_keys: a list of keys"),
    ("a named key with an unknown priority", {"llmhost_api_keys": [{"id": "team-a", "key": "sk-live-abc",
                                                                   "priority": "urgent"}]},
     "llmhost_api_keys[1] (id team-a) field 'priority'"),
]


def run_preflight(tmp_path: Path, experts: list[dict], **extra) -> runner.PlaybookRun:
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        f"llm_hosts:\n  hosts:\n    probe-host:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    (inv / "group_vars/all.json").write_text(json.dumps({
        "llmhost_experts": experts, "frontdoor_bind": "127.0.0.1",
        "llmhost_host_expect": {"cpus": 8, "memory_gib": 64}, **extra}))
    return runner.run_playbook(["playbooks/preflight.yml"], inv, private_dir=tmp_path / "runner",
                               envvars={"ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path / "facts")})


def test_the_good_config_passes(tmp_path):
    r = run_preflight(tmp_path, GOOD)
    assert r.rc == 0, r.stdout[-3000:]
    assert r.ok.get("probe-host", 0) > 0 and r.changed == {} and r.failed == {}, (r.ok, r.changed, r.failed)


@pytest.mark.parametrize("case,change,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_the_preflight_before_any_change(tmp_path, case, change, expect):
    experts = [dict(GOOD[0]), {**GOOD[1], **change}]
    r = run_preflight(tmp_path, experts)
    out = " ".join(r.stdout.split())
    assert r.rc != 0, f"{case}: the preflight passed"
    assert expect in out, out[-3000:]
    assert "Traceback" not in out
    # from the events: the plan task failed, and nothing changed before it
    assert r.changed == {} and r.failed == {"probe-host": 1}, (r.changed, r.failed)
    failed = [e["event_data"]["task"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert len(failed) == 1 and "plan" in failed[0].lower(), failed


@pytest.mark.parametrize("case,variables,expect", VARIABLE_CASES, ids=[c[0] for c in VARIABLE_CASES])
def test_bad_variables_fail_in_the_preflight_before_any_change(tmp_path, case, variables, expect):
    r = run_preflight(tmp_path, GOOD, **variables)
    out = " ".join(r.stdout.split())
    assert r.rc != 0, f"{case}: the preflight passed"
    assert expect in out, out[-3000:]
    assert "Traceback" not in out and "KeyError" not in out and "ValueError" not in out
    assert "sk-live" not in out  # a key is never echoed
    assert r.changed == {} and r.failed == {"probe-host": 1}, (r.changed, r.failed)


def test_llmhost_deploy_says_the_stage_and_the_refusal(tmp_path):
    """`llmhost deploy`: a line per play, the failing task's reason in one line, counts."""
    experts = [dict(GOOD[0]), {**GOOD[1], "port": 9090}]
    run_preflight(tmp_path, experts)   # writes the inventory
    r = subprocess.run([str(BIN / "llmhost"), "deploy", "-i", str(tmp_path / "inv"), "--playbook",
                        "playbooks/preflight.yml", "--", "--check"], capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts")))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"llmhost deploy: playbooks/preflight.yml on {tmp_path / 'inv'} --check"
    assert any(l.startswith("  FAILED probe-host: ") and "expert 'coder' field 'port'" in l for l in lines), lines
    assert "probe-host: changed 0, failed 1" in lines and lines[-1].startswith("FAILED in ")
    assert "Traceback" not in r.stdout + r.stderr


def test_a_threshold_out_of_reach_fails_the_preflight_and_accept_miss_lets_it_through(tmp_path):
    """The performance model in the preflight: with the inventory's host profile, an expert
    whose decode threshold no core count reaches stops the play before any change, naming
    the expert, the figures and the levers; the same expert with accept_miss passes."""
    profile = {"assumed": True, "source": "a test's figures", "read_gbps": {1: 10, 8: 40},
               "matmul_gflops": {"float32": 50, "bfloat16": 100, "int8": 200}}
    slow = [dict(GOOD[0]), {**GOOD[1], "weights_gib": 8.0, "thresholds": {"decode_tps_min": 25}}]
    r = run_preflight(tmp_path / "miss", slow, llmhost_host_profile=profile)
    out = " ".join(r.stdout.split())
    assert r.rc != 0 and "expert 'coder' field 'thresholds': out of reach" in out, out[-3000:]
    assert "decode_tps_min 25" in out and "accept_miss" in out and "Traceback" not in out
    assert r.changed == {} and r.failed == {"probe-host": 1}, (r.changed, r.failed)
    slow[1]["accept_miss"] = "a test: this host is known to be too small for it"
    r = run_preflight(tmp_path / "accepted", slow, llmhost_host_profile=profile)
    assert r.rc == 0, r.stdout[-3000:]
    assert "Accepted (accept_miss)" in " ".join(r.stdout.split())

"""The preflight play refuses bad input before any change, naming the expert and the field.

A sample of tests/unit/test_bad_input.py's table, through the real
`ansible-playbook playbooks/preflight.yml` against the controller itself (local
connection; the preflight only reads). Each run must fail in the plan task, with
changed=0 in the recap and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
]


def run_preflight(tmp_path: Path, experts: list[dict], **extra) -> subprocess.CompletedProcess:
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        f"llm_hosts:\n  hosts:\n    probe-host:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    (inv / "group_vars/all.json").write_text(json.dumps({
        "llmhost_experts": experts, "frontdoor_bind": "127.0.0.1",
        "llmhost_host_expect": {"cpus": 8, "memory_gib": 64}, **extra}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), "playbooks/preflight.yml"], cwd=ROOT,
                          capture_output=True, text=True, check=False, env=env)


def recap_changed(out: str) -> int:
    m = re.search(r"probe-host\s*:\s*ok=\d+\s+changed=(\d+)", out)
    assert m, out[-2000:]
    return int(m.group(1))


def test_the_good_config_passes(tmp_path):
    r = run_preflight(tmp_path, GOOD)
    assert r.returncode == 0, r.stdout[-3000:]
    assert recap_changed(r.stdout) == 0


@pytest.mark.parametrize("case,change,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_the_preflight_before_any_change(tmp_path, case, change, expect):
    experts = [dict(GOOD[0]), {**GOOD[1], **change}]
    r = run_preflight(tmp_path, experts)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0, f"{case}: the preflight passed"
    assert expect in out, out[-3000:]
    assert "Traceback" not in out
    assert recap_changed(r.stdout) == 0

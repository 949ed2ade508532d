"""Render haproxy.cfg from a real plan and validate it with the real `haproxy -c`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.cli import saved_capabilities
from llmhost.plan import GIB, Host, build_plan

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                                reason="haproxy is installed by scripts/bootstrap")


def plan_dict(lazy=None, default=None):
    experts = [
        {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 5,
         "weights_gib": 0.3, "kv_cache_gib": 1, "aliases": ["SmolLM2-135M-Instruct"]},
        {"expert_id": "coder", "model": "/srv/models/b", "domain": "coding", "priority": 3,
         "weights_gib": 0.3, "kv_cache_gib": 1},
    ]
    p = build_plan(experts, lazy, saved_capabilities(), Host((0, 1), 24 * GIB, "x86_64", {"bf16": True}),
                   default_expert=default)
    d = p.to_dict()
    d["memory_budget_bytes"] = int(p.budget_gib * GIB)
    return d


def render(tmp_path, **extra):
    out = tmp_path / "haproxy"
    ev = {"frontdoor_plan": plan_dict(extra.pop("lazy", None), extra.pop("default", None)), "__frontdoor_dir": str(out),
          "__frontdoor_errors_dir": str(out / "errors"), "ansible_python_interpreter": sys.executable, **extra}
    evf = tmp_path / "ev.json"
    evf.write_text(json.dumps(ev))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-frontdoor.yml",
                        "-e", f"@{evf}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return out


def haproxy_check(cfg):
    return subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)


def test_rendered_config_is_valid_and_routes_every_name(tmp_path):
    out = render(tmp_path)
    r = haproxy_check(out / "haproxy.cfg")
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = (out / "haproxy.cfg").read_text()
    assert cfg.startswith("#")
    assert "bind *:8082" in cfg and "bind 127.0.0.1:8405" in cfg
    assert "server general 127.0.0.1:8101 maxconn 8 maxqueue 32 check" in cfg
    assert "str(general)" in cfg  # the default expert: the top general one
    assert (out / "llmhost-models.map").read_text() == (
        "general be_general\nSmolLM2-135M-Instruct be_general\nauto be_general\ncoder be_coder\n")
    models = json.loads((out / "llmhost-models.json").read_text())
    assert [m["id"] for m in models["data"]] == ["general", "coder"]
    err = (out / "errors/503.http").read_text()
    assert err.startswith("HTTP/1.0 503") and json.loads(err.split("\n\n", 1)[1])["error"]["code"] == "expert_busy"
    assert not (out / "llmhost-keys.lst").exists()


def test_keys_and_lazy_variant_is_valid(tmp_path):
    lazy = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "auto_unload_after_s": 60}
    out = render(tmp_path, frontdoor_api_keys=["sk-test-1"], lazy=lazy, default="coder")
    r = haproxy_check(out / "haproxy.cfg")
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = (out / "haproxy.cfg").read_text()
    assert "llmhost-keys.lst" in cfg and "sk-test-1" not in cfg
    assert "sk-test-1" not in (out / "llmhost-keys.lst").read_text()
    assert "server coder 127.0.0.1:8102 maxconn 8 maxqueue 32\n" in cfg  # lazy: no check
    assert "str(coder)" in cfg


def test_a_broken_config_is_refused(tmp_path):
    out = render(tmp_path)
    bad = out / "bad.cfg"
    bad.write_text((out / "haproxy.cfg").read_text().replace("use_backend ", "use_backendd "))
    assert haproxy_check(bad).returncode != 0


def test_tls_bind_with_a_real_certificate_passes_haproxy(tmp_path):
    pem = tmp_path / "door.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=models-europe", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    pem.write_text((tmp_path / "c.pem").read_text() + (tmp_path / "k.pem").read_text())
    out = render(tmp_path, frontdoor_api_keys=["sk-test-1"], frontdoor_tls_cert=str(pem))
    cfg = (out / "haproxy.cfg").read_text()
    assert f"bind *:8082 ssl crt {pem}" in cfg
    r = haproxy_check(out / "haproxy.cfg")
    assert r.returncode == 0, r.stdout + r.stderr


def validate(tmp_path, **ev):
    evf = tmp_path / "ev.json"
    evf.write_text(json.dumps({"ansible_python_interpreter": sys.executable, "frontdoor_plan": plan_dict(), **ev}))
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/validate-frontdoor.yml",
                           "-e", f"@{evf}"], cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))


def test_the_preflight_refuses_an_open_door_in_one_line(tmp_path):
    r = validate(tmp_path)  # the role's defaults: bind "*", no keys
    assert r.returncode != 0
    out = " ".join(r.stdout.split())
    assert "frontdoor_bind: '*' opens port 8082 to the network with no API key" in out, out[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    assert validate(tmp_path, frontdoor_api_keys=["sk-1"]).returncode == 0
    assert validate(tmp_path, frontdoor_bind="127.0.0.1").returncode == 0
    assert validate(tmp_path, frontdoor_allow_anonymous=True).returncode == 0


def test_access_log_per_source_limit_and_one_start_budget(tmp_path):
    out = render(tmp_path, frontdoor_per_source_maxconn=4)
    r = haproxy_check(out / "haproxy.cfg")
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = (out / "haproxy.cfg").read_text()
    assert "log /dev/log local0 info" in cfg and "model=%[var(txn.model)]" in cfg
    assert "track-sc0 src" in cfg and "sc_conn_cur(0) gt 4" in cfg
    # the plan's start budget (900 s) + 120: HAProxy outlasts systemd's start timeout
    assert "timeout server 1020s" in cfg
    (tmp_path / "q").mkdir()
    quiet = render(tmp_path / "q", frontdoor_access_log=False)
    qcfg = (quiet / "haproxy.cfg").read_text()
    assert "local0 notice" in qcfg and "track-sc0" not in qcfg


def test_front_door_ports_and_timeout_checked_against_the_plan():
    from llmhost.frontdoor import port_problems

    plan = plan_dict()
    assert port_problems(plan, 8082, 8405, 1020) == []
    bad = port_problems(plan, 8101, 8102, 600)
    assert any("frontdoor_port: 8101 is also used by expert 'general'" in b for b in bad)
    assert any("frontdoor_metrics_port: 8102 is also used by expert 'coder'" in b for b in bad)
    assert any("frontdoor_timeout_server_s: 600 s does not outlast the start budget (900 s" in b for b in bad)

"""The expert unit template, rendered by Ansible for a generate, a pooling and a lazy expert."""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_routing import plan as routed_plan  # noqa: E402  (general, coder and the pooling router)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


LAZY = {"enabled": True, "warmup_pool_size": 2, "max_loaded_experts": 3, "auto_unload_after_s": 60}


def render(tmp_path):
    plan = routed_plan(lazy=LAZY).to_dict()
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"plan": plan, "out": str(tmp_path), "ansible_python_interpreter": sys.executable}))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-units.yml",
                        "-e", f"@{ev}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-3000:]
    return plan


def test_a_pooling_expert_gets_the_embedding_readiness_gate(tmp_path):
    render(tmp_path)
    post = {e: [ln for ln in (tmp_path / f"{e}.service").read_text().splitlines() if ln.startswith("ExecStartPost=")]
            for e in ("general", "router")}
    assert post["router"][0].endswith(" --pooling") and "--pooling" not in post["general"][0]
    assert "--runner pooling" in (tmp_path / "router.service").read_text()


def lines(path, key):
    return [ln.split("=", 1)[1] for ln in path.read_text().splitlines() if ln.startswith(key + "=")]


def test_a_lazy_expert_is_a_handle_on_a_standby_that_holds_the_sandbox_cpus_and_memory(tmp_path):
    plan = render(tmp_path)
    lazy = [e for e in plan["experts"] if not e["preload"]]
    assert lazy, "the routed plan has a lazy expert"
    e = lazy[0]["expert_id"]
    handle, standby = tmp_path / f"{e}.service", tmp_path / f"{e}-standby.service"
    sock = f"/run/llmhost-{e}/standby.sock"
    assert lines(handle, "ExecStart") == [f"/opt/vllm/venv/bin/python /usr/local/libexec/llmhost/vllm-start --handle {sock}"]
    assert lines(handle, "Requires") == [f"llmhost-expert-{e}-standby.service"]
    assert lines(standby, "OOMPolicy") == ["continue"]
    assert lines(handle, "ExecStartPost") and lines(handle, "ExecStopPost")      # readiness gate; failure reason
    assert not lines(handle, "CPUAffinity") and not lines(handle, "RuntimeDirectory")
    start = lines(standby, "ExecStart")[0]
    assert start.startswith(f"/opt/vllm/venv/bin/python /usr/local/libexec/llmhost/vllm-start --standby {sock} -- ")
    assert " ".join(lazy[0]["argv"]) in start
    assert lines(standby, "CPUAffinity") and lines(standby, "MemoryMax") == [str(lazy[0]["memory_max_bytes"])]
    assert lines(standby, "RuntimeDirectory") == [f"llmhost-{e}"] and lines(standby, "Restart") == ["always"]
    assert not lines(standby, "ExecStartPost") and lines(standby, "User") == ["llmhost"]
    # the same hardening as a server unit
    server = tmp_path / "general.service"
    for key in ("ProtectSystem", "PrivateUsers", "SystemCallFilter", "IPAddressDeny", "CapabilityBoundingSet"):
        assert lines(standby, key) == lines(server, key) == lines(handle, key), key

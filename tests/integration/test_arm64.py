"""The aarch64 path on an arm64 systemd host under qemu-user with a Neoverse-V2 CPU view.

Not proven here (and not claimed): a vLLM server answering on aarch64. That needs
torch+cpu from the PyTorch CPU index, which this machine cannot reach."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmhost import runner

ROOT = Path(__file__).resolve().parents[2]
NAME = "arm-a"
# install.yml alone plans the host first (the plan names the venv, the version and the models)
LOCAL_EXPERTS = ("-e", "@inventories/local/group_vars/llm_hosts/experts.yml", "-e", "llmhost_reserved_cores=0")
pytestmark = [pytest.mark.testhost, pytest.mark.full]


@pytest.fixture(scope="module")
def arm_host(tmp_path_factory):
    t0 = time.monotonic()
    inv = tmp_path_factory.mktemp("arm") / "inventory.yml"
    up = subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "up", NAME, "--arch", "arm64",
                         "--inventory", str(inv)], capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stderr[-3000:]
    st = json.loads(up.stdout)[0]
    print(f"arm64 host up in {time.monotonic() - t0:.0f} s (rootfs cached)")
    yield st, inv
    subprocess.run([sys.executable, str(ROOT / "scripts/testhost.py"), "down", NAME], check=False)


def ssh(st, cmd):
    return subprocess.run(["ssh", "-i", st["identity_file"], "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                           f"root@{st['address']}", cmd], capture_output=True, text=True, check=False)


def playbook(inv, pb, *args, timeout=1800) -> runner.PlaybookRun:
    return runner.run_playbook([pb], inv, args=args, timeout=timeout)


def test_boots_running_as_aarch64_neoverse_v2(arm_host):
    st, _ = arm_host
    assert st["system_state"] == "running", st
    assert ssh(st, "systemctl --failed --no-legend").stdout.strip() == ""
    assert ssh(st, "uname -m").stdout.strip() == "aarch64"
    lscpu = ssh(st, "lscpu").stdout
    assert "Neoverse-V2" in lscpu, lscpu
    # sysfs shows the 32 vCPUs of a C4A-standard-32 (the process affinity is this machine's)
    assert ssh(st, "cat /sys/devices/system/cpu/online").stdout.strip() == "0-31"
    assert ssh(st, "cat /sys/devices/system/cpu/cpu0/regs/identification/midr_el1").stdout.strip().endswith("410fd4f1")


def test_install_stops_clearly_without_a_cpu_torch_source(arm_host):
    st, inv = arm_host
    # what this machine can reach: PyPI only (no PyTorch CPU index, no aarch64 wheelhouse)
    r = playbook(inv, "playbooks/install.yml", "-e", json.dumps({
        "vllm_install_source": "pypi", "vllm_install_find_links": ["/opt/wheels"],
        "vllm_install_extra_index_urls": ["https://pypi.org/simple"]}), *LOCAL_EXPERTS)
    out = " ".join(r.stdout.split())
    assert r.rc != 0
    assert "no source of torch 2.13.0+cpu for aarch64" in out and "CUDA build" in out, r.stdout[-3000:]
    # and nothing was downloaded: no venv, no torch anywhere
    assert ssh(st, "test -e /opt/vllm/venv").returncode != 0
    assert ssh(st, "find / -xdev -name 'torch-*aarch64*.whl' 2>/dev/null | head -1").stdout.strip() == ""


def test_production_pip_command_for_aarch64(arm_host):
    _, inv = arm_host
    r = playbook(inv, "playbooks/install.yml", "-e", json.dumps({
        "vllm_install_source": "official", "vllm_install_find_links": [],
        "vllm_install_extra_index_urls": ["https://download.pytorch.org/whl/cpu"]}), *LOCAL_EXPERTS)
    out = " ".join(r.stdout.split())
    assert ("/opt/vllm/venv/bin/python -m pip install --extra-index-url=https://download.pytorch.org/whl/cpu "
            "torch==2.13.0+cpu https://github.com/vllm-project/vllm/releases/download/v0.32.0/"
            "vllm-0.32.0+cpu-cp38-abi3-manylinux_2_28_aarch64.whl") in out, r.stdout[-3000:]
    assert r.rc != 0 and "index https://download.pytorch.org/whl/cpu (unreachable)" in out


def test_plan_on_the_arm_host(arm_host, tmp_path):
    _, inv = arm_host
    out = tmp_path / "plan.json"
    r = playbook(inv, "tests/render/dump-plan.yml", "-e", f"dump_plan_to={out}", "-e",
                 "@inventories/local/group_vars/llm_hosts/experts.yml", "-e", "llmhost_reserved_cores=0")
    assert r.rc == 0, r.stdout[-3000:]
    plan = json.loads(out.read_text())
    binds = [e["env"]["VLLM_CPU_OMP_THREADS_BIND"] for e in plan["experts"]]
    assert binds == ["0", "1", "0-1"]   # the router (cores: 0) beside both
    for e in plan["experts"]:
        # the pooling router stays float32: the same vectors, so the same routes, on every CPU
        want = "float32" if e["runner"] == "pooling" else "bfloat16"
        assert e["argv"][e["argv"].index("--dtype") + 1] == want
        assert e["env"]["THP_MEM_ALLOC_ENABLE"] == "1"
    assert plan["warnings"] == []  # native bf16 on Neoverse V2: no emulation warning
    bad = dict(yaml.safe_load((ROOT / "inventories/local/group_vars/llm_hosts/experts.yml").read_text()))
    bad["llmhost_experts"][1]["engine"] = {"quantization": "awq"}
    ev = tmp_path / "bad.json"
    ev.write_text(json.dumps(bad))
    r = playbook(inv, "tests/render/dump-plan.yml", "-e", f"dump_plan_to={out}", "-e", f"@{ev}")
    assert r.rc != 0 and "KleidiAI" in r.stdout and "expert 'coder' field 'quantization'" in r.stdout


def test_site_check_mode_renders_everything_for_aarch64(arm_host, tmp_path):
    """The production experts, the small model in their place, on the emulated 32-CPU view."""
    _, inv = arm_host
    prod = yaml.safe_load((ROOT / "inventories/production/group_vars/llm_hosts/experts.yml").read_text())
    for e in prod["llmhost_experts"]:
        e["weights_gib"] = 0.3   # the small model: 4 preloaded + 1 lazy fit in this host's 24 GiB
        e["kv_cache_gib"] = 1
        e["model_source"] = "/var/cache/llmhost/models/SmolLM2-135M-Instruct"
    ev = tmp_path / "prod.json"
    ev.write_text(json.dumps({**prod, "llmhost_plan_cpu_source": "online", "smoke_test_fail_on_miss": False,
                              "llmhost_api_keys": ["sk-llmhost-arm-test"]}))
    # install is skipped: its refusal without a CPU torch source is the test above.
    # ansible-runner's events say how often each task ran.
    r = runner.run_playbook(["site.yml"], inv, args=["--check", "--diff", "--skip-tags", "verify,install",
                                                     "-e", f"@{ev}"], private_dir=tmp_path / "runner", timeout=1800)
    out = r.stdout
    assert r.rc == 0, out[-5000:]
    probes = r.ran("Probe the host CPU and memory")
    assert probes == 1, f"the plan's probe ran {probes} times in one site.yml run"
    assert r.changed.get(NAME, 0) > 0 and not r.failed
    assert "--dtype bfloat16" in out and "THP_MEM_ALLOC_ENABLE" in out
    assert "VLLM_CPU_OMP_THREADS_BIND" in out and "bind *:8082" in out
    assert "llmhost-expert-gemma-3" in out and "llmhost:ttft_seconds:p95_5m" in out

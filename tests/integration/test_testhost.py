"""The nspawn harness: boots real systemd hosts and leaves nothing behind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, str(ROOT / "scripts/testhost.py")]
pytestmark = pytest.mark.testhost


def harness(*args, check=True):
    return subprocess.run(HARNESS + list(args), capture_output=True, text=True, check=check)


def ssh(host, cmd):
    return subprocess.run(
        ["ssh", "-i", host["identity_file"], "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         f"root@{host['address']}", cmd], capture_output=True, text=True, check=False)


def leftovers(names):
    mounts = Path("/proc/self/mounts").read_text()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found = []
    for n in names:
        found += [l for l in mounts.splitlines() if f"/llmhost-testhosts/{n}/" in l]
        found += [l for l in links.splitlines() if f"ve-{n}@" in l or f"ve-{n}:" in l]
        found += [l for l in procs.splitlines() if f"-M {n} " in l or f"/llmhost-testhosts/{n}/" in l]
    return found


def test_two_hosts_boot_talk_and_vanish(tmp_path):
    names = ["th-a", "th-b"]
    inv = tmp_path / "inventory.yml"
    up = harness("up", *names, "--inventory", str(inv))
    try:
        hosts = json.loads(up.stdout)
        assert [h["instance"] for h in hosts] == names
        for h in hosts:
            assert h["system_state"] in ("running", "degraded")
            assert ssh(h, "systemctl is-system-running").stdout.strip() in ("running", "degraded")
            # fixed /30, no default route, /etc/hosts names the peer and the controller
            assert f"{h['address']}/30" in ssh(h, "ip -o -4 addr show host0").stdout
            assert ssh(h, "ip route show default").stdout.strip() == ""
            etc_hosts = ssh(h, "cat /etc/hosts").stdout
            other = [x for x in hosts if x is not h][0]
            assert f"{other['address']}\t{other['instance']}" in etc_hosts
            assert "\tcontroller" in etc_hosts
            # the machine's torch wheel directory is there, read-only
            r = ssh(h, "ls /opt/wheels && touch /opt/wheels/x")
            assert "torch-2.13.0+cpu" in r.stdout and r.returncode != 0
            # /sys/devices is read-only: a test host cannot retune this machine
            assert ssh(h, "touch /sys/devices/x").returncode != 0
        # hosts reach each other over the controller's routing? no: only the controller
        assert ssh(hosts[0], f"getent hosts {hosts[1]['instance']}").returncode == 0
        # apt and pip go out through the per-host proxy
        r = ssh(hosts[0], "apt-get -q update >/dev/null && apt-get -s install -q jq | tail -1")
        assert r.returncode == 0, r.stderr
        r = ssh(hosts[0], "python3 -m pip --version || true; cat /etc/pip.conf")
        assert "proxy = http://" in r.stdout
        # `up --inventory`: an inventory Ansible reaches both hosts with
        r = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inv), "llm_hosts", "-m",
                            "ansible.builtin.ping", "-o"], capture_output=True, text=True, check=False, cwd=ROOT)
        assert r.returncode == 0 and r.stdout.count("SUCCESS") == 2, r.stdout + r.stderr
    finally:
        harness("down", *names)
    assert leftovers(names) == []


def test_failed_boot_tears_down_what_it_made():
    # The second name is invalid: up must fail and remove the first host too.
    r = harness("up", "th-ok", "Bad_Name!", check=False)
    assert r.returncode != 0
    assert "bad host name" in r.stderr
    assert leftovers(["th-ok"]) == []
    assert "th-ok" not in harness("status").stdout

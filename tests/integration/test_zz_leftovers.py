"""Runs last: no test left a host, a mount, a veth or a process behind."""

import subprocess
from pathlib import Path


def test_no_harness_leftovers():
    run_dir = Path("/run/llmhost-testhosts")
    assert not run_dir.exists() or not any(run_dir.iterdir()), list(run_dir.iterdir())
    mounts = [l for l in Path("/proc/self/mounts").read_text().splitlines() if "llmhost-testhosts" in l]
    assert mounts == []
    links = [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
             if " ve-" in l]
    assert links == []
    procs = [l for l in subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True).stdout.splitlines()
             if ("systemd-nspawn" in l or "tinyproxy" in l) and not l.startswith("Z")]
    assert procs == []

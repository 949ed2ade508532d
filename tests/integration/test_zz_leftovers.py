"""Runs last: no test left a host, a mount, a veth or a process behind.

A host booted with `testhost.py up --keep` (make local's models-local) is the
user's, not the suite's: the suite neither uses nor removes it, so its folder,
mount, veth and processes are not leftovers. Everything else is.
"""

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.testhost

RUN_DIR = Path("/run/llmhost-testhosts")


def kept_hosts() -> dict[str, dict]:
    out = {}
    for d in RUN_DIR.iterdir() if RUN_DIR.exists() else []:
        f = d / "state.json"
        if f.exists():
            st = json.loads(f.read_text())
            if st.get("keep"):
                out[d.name] = st
    return out


def test_no_harness_leftovers():
    kept = kept_hosts()
    left = [p for p in RUN_DIR.iterdir() if p.name not in kept] if RUN_DIR.exists() else []
    assert left == []
    mounts = [l for l in Path("/proc/self/mounts").read_text().splitlines()
              if "llmhost-testhosts" in l and not any(f"llmhost-testhosts/{n}/" in l for n in kept)]
    assert mounts == []
    kept_veths = {st.get("veth", f"ve-{n}") for n, st in kept.items()}
    links = [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
             if " ve-" in l and not any(f" {v}@" in l or f" {v}:" in l for v in kept_veths)]
    assert links == []
    kept_pids = {str(st.get(k)) for st in kept.values() for k in ("nspawn_pid", "proxy_pid")}
    procs = [l for l in subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True,
                                       text=True).stdout.splitlines()
             if ("systemd-nspawn" in l or "tinyproxy" in l) and l.split()[1][0] != "Z"
             and l.split()[0] not in kept_pids]
    assert procs == []

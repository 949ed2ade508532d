"""Settings and small helpers every part of the test-host harness uses."""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("LLMHOST_CACHE", "/var/cache/llmhost"))
RUN_DIR = Path(os.environ.get("LLMHOST_TESTHOST_RUN", "/run/llmhost-testhosts"))

SUITE = "bookworm"
MIRROR = os.environ.get("LLMHOST_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# What a managed host needs before Ansible can manage it; roles install the rest.
ROOTFS_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-apt", "openssh-server",
    "iproute2", "ca-certificates", "sudo",
]
NET_PREFIX = "10.231"  # 10.231.<i//64>.<(i%64)*4 + 1|2>/30, i = host index

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
WHEEL_DIR = Path(os.environ.get("LLMHOST_WHEEL_DIR", "/opt/wheels"))

# With LLMHOST_TESTHOST_VENV_CACHE=DIR (scripts/test sets a fresh DIR per run and
# removes it after), every host of this machine's architecture gets DIR bound at the
# plan's default venv path: the first host of a test run installs vLLM into it, later
# hosts find it installed, as a second run on one host would. Unset: each host has its own.
VENV_CACHE = os.environ.get("LLMHOST_TESTHOST_VENV_CACHE", "")
GUEST_VENV = "/opt/vllm/venv"

PROXY_PORT = 8888
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

FILES = Path(__file__).resolve().parents[1] / "testhost_files"   # what the hosts get, as files


def fill(rel: str, **values: object) -> str:
    """A file of testhost_files/ with its $placeholders filled."""
    return string.Template((FILES / rel).read_text()).substitute({k: str(v) for k, v in values.items()})


def lay(tree: str, dest: Path, **values: object) -> list[str]:
    """Copy testhost_files/TREE under dest, placeholders filled; the paths laid."""
    out = []
    for src in sorted(p for p in (FILES / tree).rglob("*") if p.is_file()):
        rel = src.relative_to(FILES / tree)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(fill(str(src.relative_to(FILES)), **values))
        out.append(str(rel))
    return out


def machine_name(name: str) -> str:
    """nspawn's machine name, which names the veth (ve-NAME must fit IFNAMSIZ, 15):
    the host name itself up to 12 characters, else a short stable stand-in. The
    container's hostname stays the full name (--hostname)."""
    if len(name) <= 12:
        return name
    import hashlib  # noqa: PLC0415

    return f"{name[:7]}-{hashlib.sha1(name.encode()).hexdigest()[:4]}"


def log(msg: str) -> None:
    print(f"[testhost] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

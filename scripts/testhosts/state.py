"""Each host's record under RUN_DIR (every resource as soon as it exists), and process checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import RUN_DIR


def host_dir(name: str) -> Path:
    return RUN_DIR / name


def read_state(name: str) -> dict:
    f = host_dir(name) / "state.json"
    return json.loads(f.read_text()) if f.exists() else {"name": name}


def write_state(st: dict) -> None:
    d = host_dir(st["name"])
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(st, indent=2))
    tmp.replace(d / "state.json")


def live_hosts() -> list[str]:
    if not RUN_DIR.exists():
        return []
    return sorted(p.name for p in RUN_DIR.iterdir() if (p / "state.json").exists())


def free_index() -> int:
    """Index 0 is kept for models-local (inventories/local); tests take 1 and up."""
    used = {read_state(n).get("index") for n in live_hosts()}
    for i in range(1, 4096):
        if i not in used:
            return i
    raise SystemExit("no free test-host index")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def kept(name: str) -> bool:
    """Booted with `up --keep` (make local's models-local): `down --all` leaves it alone."""
    return bool(read_state(name).get("keep"))

"""Shared pytest setup: the repo root and the harness on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "collections/ansible_collections/llmhost/toolkit/plugins/modules"))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))


# Nothing left behind: after the last test of each module (its module fixtures torn
# down too), no process this pytest started is still running and this process
# listens on no port it did not listen on before. A leftover fails that test's
# teardown, naming what was left, and is stopped. (Test hosts are checked by
# tests/integration/test_zz_leftovers.py: they are not children of pytest.)
def _own_listeners() -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def _live_children() -> list:
    import psutil

    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


_BASELINE: dict[str, set] = {}


def pytest_sessionstart(session):
    _BASELINE["listen"] = _own_listeners()
    _BASELINE["children"] = {c.pid for c in _live_children()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    if nextitem is not None and nextitem.module is item.module:
        return result
    import psutil

    left = []
    for c in _live_children():
        if c.pid in _BASELINE["children"]:
            continue
        try:
            left.append(f"pid {c.pid} {' '.join(c.cmdline())[:160]}")
            c.kill()
        except psutil.NoSuchProcess:
            continue
    ports = sorted(_own_listeners() - _BASELINE["listen"])
    if left or ports:
        raise AssertionError(f"{item.module.__name__} left behind: processes {left or 'none'} (stopped now); "
                             f"listening {ports or 'none'}")
    return result

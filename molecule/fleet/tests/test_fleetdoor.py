"""One door for both hosts (role fleetdoor on fleet-a, port 8090; issue: the front door as
teams expect it). Runs after test_fleet.py, on the same two deployed hosts.

A steady client (one request after another) asks through the fleet door while fleet-b's
front door stops: only a request in flight at that instant may fail, every later one is
answered by fleet-a; fleet-b's door is started again at the end."""

import json
import threading
import time
import urllib.error
import urllib.request

import sys
from pathlib import Path

import pytest
import testinfra

from test_fleet import HOSTS, INVENTORY, KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from rawhttp import haproxy_cli  # noqa: E402


@pytest.fixture(scope="module")
def hosts():
    return {h: testinfra.get_host(f"ansible://{h}", ansible_inventory=INVENTORY) for h in HOSTS}


def ask(addr, timeout=60):
    """(status, the host door's expert header) of one request through the fleet door."""
    req = urllib.request.Request(f"http://{addr}:8090/v1/chat/completions",
                                 data=json.dumps({"model": "general", "max_tokens": 1,
                                                  "messages": [{"role": "user", "content": "Say OK."}]}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("x-llmhost-expert")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def status(host):
    """`backend,server,status` lines of the fleet door's servers."""
    out = haproxy_cli(host, "/run/llmhost-fleetdoor/admin.sock", "show stat")
    return "\n".join(",".join(ln.split(",")[i] for i in (0, 1, 17)) for ln in out.splitlines() if ln.count(",") > 17)


# Measured 2026-12-07: the fleet door deployed and started in its sandbox on fleet-a and
# answered through fleet-a, but saw fleet-b DOWN from the start: each test host sits on its
# own /30 veth to this machine (scripts/testhost.py) and cannot reach another test host.
# Strict: once the test hosts can reach one another, this must pass and the mark must go.
@pytest.mark.xfail(strict=True, reason="test hosts cannot reach one another (separate /30 veths, scripts/testhost.py)")
def test_the_fleet_door_serves_through_a_host_stopping(hosts):
    a, b = hosts["fleet-a"], hosts["fleet-b"]
    addr = a.ansible.get_variables()["ansible_host"]
    assert a.service("llmhost-fleetdoor").is_running and a.socket("tcp://0.0.0.0:8090").is_listening
    assert ask(addr) == (200, "general")
    stats = status(a)
    assert "be_general,fleet-a,UP" in stats and "be_general,fleet-b,UP" in stats, stats
    answers = []

    def client(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            answers.append((time.monotonic(), *ask(addr)))

    t = threading.Thread(target=client, args=(40,))
    t.start()
    time.sleep(10)
    stopped = time.monotonic()
    try:
        b.run("systemctl stop haproxy")
        t.join()
        stats = status(a)
    finally:
        b.run("systemctl start haproxy")
    failed = [x for x in answers if x[1] != 200]
    after = [x for x in answers if x[0] > stopped]
    print(f"fleet door: {len(answers)} requests, {len(after)} after fleet-b's door stopped, {len(failed)} failed")
    assert len(failed) <= 1, failed
    assert len(after) >= 5 and "be_general,fleet-b,DOWN" in stats, stats

"""One door for several hosts (llmhost.fleetdoor, role fleetdoor): which host serves which
model, the rendered config checked by the real `haproxy -c`, and the real HAProxy in front
of two real host doors (rendered by the frontdoor role, with stand-in experts): by model,
spread over both, and a host stopped mid-run while a steady client goes on."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmhost import fleetdoor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "molecule" / "shared"))
from rawhttp import parse  # noqa: E402
from doorharness import BIN, KEY, ROOT, expert, free_port, haproxy_check, post, raw, start_door  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def plan(port, *experts):
    return {"shared": {"frontdoor_port": port}, "experts": [
        {"expert_id": e, "names": [e, *aliases]} for e, *aliases in experts]}


def test_each_expert_goes_to_the_hosts_that_serve_it():
    f = fleetdoor.fleet([{"name": "h1", "address": "10.0.0.1", "plan": plan(8082, ("general", "SmolLM2"), ("coder",))},
                         {"name": "h2", "address": "10.0.0.2", "plan": plan(8082, ("general", "SmolLM2", "auto"))}])
    by = {b["expert_id"]: [s["name"] for s in b["servers"]] for b in f["backends"]}
    assert by == {"general": ["h1", "h2"], "coder": ["h1"]}
    assert f["map"] == "SmolLM2 be_general\ncoder be_coder\ngeneral be_general\n"  # auto: any host routes it
    assert [s["address"] for s in f["any"]] == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("members,expected", [
    ([], "fleetdoor_hosts: no host"),
    ([{"name": "h1", "address": "10.0.0.1 x", "plan": plan(8082, ("general",))}], "host 'h1' has no usable address"),
    ([{"name": "h1", "address": "10.0.0.1", "plan": None}], "host 'h1' has no plan"),
    ([{"name": "h1", "address": "10.0.0.1", "plan": plan(8082, ("general", "chat"))},
      {"name": "h2", "address": "10.0.0.2", "plan": plan(8082, ("coder", "chat"))}],
     "model name 'chat' is expert 'general' on h1 and 'coder' on h2"),
    ([{"name": "h1", "address": "10.0.0.1", "plan": plan(8082, ("general", "SmolLM2"))},
      {"name": "h2", "address": "10.0.0.2", "plan": plan(8082, ("general",))}],
     "model name 'SmolLM2' of expert 'general' (on h1) is not a name of it on h2"),
    ([{"name": "h1", "address": "10.0.0.1", "plan": {**plan(8082, ("general",)), "start_budget_s": 1500}}],
     "fleetdoor_timeout_server_s: 1200 s does not outlast a host's cold start (start budget 1500 s"),
])
def test_a_fleet_one_door_cannot_serve_is_refused(members, expected):
    problems = fleetdoor.fleet_problems(members, 1200)
    assert any(expected in p for p in problems), problems


def render(tmp, members, **extra):
    out = tmp / "fleet"
    ev = {"__fleetdoor_members": members, "__fleetdoor_dir": str(out), "ansible_python_interpreter": sys.executable,
          "fleetdoor_api_keys": [KEY], **extra}
    (tmp / "ev.json").write_text(json.dumps(ev))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-fleetdoor.yml",
                        "-e", f"@{tmp / 'ev.json'}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-3000:]
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Host a (general, coder) and host b (general), each its own front door; the fleet door
    in front of both."""
    tmp = tmp_path_factory.mktemp("fleet")
    hosts = {}
    for label, ids in (("a", ("general", "coder")), ("b", ("general",))):
        ports = {k: free_port() for k in ("door", "metrics", *ids)}
        experts = [expert(i, ports[i], priority=5 - n) for n, i in enumerate(ids)]
        d = tmp / label
        d.mkdir()
        hosts[label] = start_door(d, ports, experts, ids, lambda port: parse(raw(port, post(
            '{"model": "general"}'))[0])[0] == 200, label=f"{label}:", frontdoor_api_keys=[KEY])
    members = [{"name": f"host-{k}", "address": "127.0.0.1", "plan": v[0]["plan"]} for k, v in hosts.items()]
    port = free_port()
    out = render(tmp, members, fleetdoor_port=port, fleetdoor_bind="127.0.0.1", fleetdoor_check_interval_s=1)
    cfg = (out / "haproxy.cfg").read_text().replace("/run/llmhost-fleetdoor/admin.sock", str(tmp / "fleet.sock")) \
        .replace("log /dev/log", "log stdout")
    (out / "haproxy.cfg").write_text(cfg)
    assert haproxy_check(out / "haproxy.cfg").returncode == 0
    log = tmp / "fleet.log"
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(out / "haproxy.cfg")], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    for _ in range(100):  # up, and both hosts' doors checked healthy for general
        try:
            seen = {ask(port)[1] for _ in range(4)}
            if seen == {"a:general", "b:general"}:
                break
        except OSError:
            pass
        time.sleep(0.2)
    yield {"port": port, "hosts": hosts, "log": log, "cfg": cfg}
    proc.terminate()
    proc.wait(5)
    for info, stop in hosts.values():
        stop()


def ask(port, model="general", key=KEY):
    """(status, the expert that answered as "<host>:<expert>" or the error code)."""
    got, _, body = parse(raw(port, post(json.dumps({"model": model}), auth=f"Authorization: Bearer {key}\r\n"))[0])
    doc = json.loads(body) if body else {}
    return got, doc.get("model") or (doc.get("error") or {}).get("code")


def test_the_rendered_fleet_door_routes_each_expert_to_its_hosts(fleet):
    cfg = fleet["cfg"]
    assert "backend be_coder" in cfg and cfg.count("option httpchk GET /health/general") == 1
    assert "retry-on conn-failure empty-response 503" in cfg and "set-header x-llmhost-no-hold 1" in cfg
    assert "maxconn 48 check" in cfg  # below each host door's per-address limit


def test_by_model_to_the_hosts_that_serve_it_and_spread_over_them(fleet):
    assert {ask(fleet["port"], "coder") for _ in range(4)} == {(200, "a:coder")}
    assert {ask(fleet["port"])[1] for _ in range(6)} == {"a:general", "b:general"}
    assert ask(fleet["port"], key="sk-nobody") == (401, "invalid_api_key")


def test_an_expert_a_deploy_restarts_on_one_host_is_served_by_the_other_at_once(fleet):
    """Host b's general in maintenance (what a deploy's drain does): its door would hold a
    request up to frontdoor_hold_s; the fleet door's request says not to, gets the 503 at once
    and is sent to host a, before the health check has even noticed."""
    import socket

    def admin(command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(fleet["hosts"]["b"][0]["dir"].parent / "admin.sock"))
            s.sendall(command.encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            return s.makefile("rb").read().decode()

    admin("disable server be_general/general")
    try:
        t0 = time.monotonic()
        answers = [ask(fleet["port"]) for _ in range(6)]
        took = time.monotonic() - t0
    finally:
        admin("enable server be_general/general")
    assert answers == [(200, "a:general")] * 6 and took < 10, (answers, took)


def test_a_host_stopped_mid_run_its_clients_go_to_the_other(fleet):
    """A steady client (one request after another) through the fleet door; host b (its door
    and experts) stops in the middle. Only a request in flight at that instant may fail;
    every later one is answered by host a."""
    answers = []

    def client():
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            answers.append((time.monotonic(), *ask(fleet["port"])))
            time.sleep(0.05)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(3)
    stopped = time.monotonic()
    fleet["hosts"]["b"][1]()  # host b gone: its HAProxy and its experts
    t.join()
    failed = [a for a in answers if a[1] != 200]
    assert len(failed) <= 1, failed
    before = {a[2] for a in answers if a[0] < stopped - 0.5}
    after = {a[2] for a in answers if a[0] > stopped + 0.5 and a[1] == 200}
    assert before == {"a:general", "b:general"} and after == {"a:general"}, (before, after)
    assert len([a for a in answers if a[0] > stopped]) >= 10

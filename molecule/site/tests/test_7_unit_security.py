"""The sandboxes on the deployed host (docs/hardening.md): every unit the toolkit installs
or configures scores at most 2.0 in `systemd-analyze security`, and the sandboxed
services still do their work (the front door reloads and answers, node exporter's
collectors succeed, Prometheus is ready, the answer probe's last run succeeded)."""

import json
import re
import urllib.request

from rawhttp import haproxy_cli

LIMIT = 2.0
# Debian's units the toolkit sandboxes by drop-ins; its own units are found by name
CONFIGURED = ["haproxy.service", "prometheus.service", "prometheus-node-exporter.service"]
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d)")
CAP_SETGID, CAP_SETUID = 6, 7


def toolkit_units(host):
    out = host.check_output("systemctl list-unit-files --no-legend --plain --type=service 'llmhost-*'")
    return sorted({ln.split()[0] for ln in out.splitlines() if ln.strip()} | set(CONFIGURED))


def test_every_toolkit_unit_scores_at_most_2_0(host):
    units = toolkit_units(host)
    assert {"llmhost-probe.service", "llmhost-expert-general.service"} <= set(units), units
    out = host.check_output("systemd-analyze security --no-pager " + " ".join(units))
    scores = {m.group(1): float(m.group(2)) for m in EXPOSURE.finditer(out)}
    print("systemd-analyze security:", json.dumps(scores, sort_keys=True))
    assert set(scores) == set(units), out[-3000:]
    assert {u: s for u, s in scores.items() if s > LIMIT} == {}, f"exposure above {LIMIT}"
    # the drop-ins are loaded (not just present): Debian's units alone score 9.6 and 9.2
    for unit in CONFIGURED:
        dropins = host.check_output(f"systemctl show -p DropInPaths --value {unit}")
        assert f"/etc/systemd/system/{unit}.d/llmhost-hardening.conf" in dropins, (unit, dropins)


def test_haproxy_master_keeps_two_capabilities_and_its_workers_none(host):
    pid = host.check_output("systemctl show -p MainPID --value haproxy.service").strip()
    assert pid not in ("", "0")
    status = host.check_output(f"cat /proc/{pid}/status")
    caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.M)}
    assert caps["CapBnd"] == (1 << CAP_SETGID) | (1 << CAP_SETUID), caps
    workers = host.check_output(f"ps -o user=,pid= --ppid {pid}").split("\n")
    users = {w.split()[0] for w in workers if w.strip()}
    assert users == {"haproxy"}, workers
    for w in workers:
        if w.strip():
            wstatus = host.check_output(f"cat /proc/{w.split()[1]}/status")
            assert re.search(r"^CapEff:\s+0+$", wstatus, re.M), wstatus


def test_the_front_door_reloads_in_its_sandbox_and_answers(host, base_url, client):
    host.check_output("systemctl reload haproxy.service")
    assert host.service("haproxy").is_running
    # its pid file and master CLI moved into /run/haproxy, the one directory it may write;
    # the stats socket (the gate's and the deploy's runtime API) answers where it was
    pid = host.check_output("systemctl show -p MainPID --value haproxy.service").strip()
    assert host.file("/run/haproxy/haproxy.pid").content_string.strip() == pid
    assert "master" in haproxy_cli(host, "/run/haproxy/master.sock", "show proc")
    assert "Name: HAProxy" in haproxy_cli(host, "/run/haproxy/admin.sock", "show info")
    with urllib.request.urlopen(base_url + "/health", timeout=30) as r:
        assert r.status == 200 and json.load(r) == {"status": "ok"}
    assert "general" in [m.id for m in client.models.list().data]
    r = client.chat.completions.create(model="general", temperature=0, max_tokens=8,
                                       messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.choices[0].message.content


def test_node_exporter_collectors_succeed_in_their_sandbox(host):
    text = host.check_output("curl -s http://127.0.0.1:9100/metrics")
    ok = dict(re.findall(r'^node_scrape_collector_success\{collector="(\w+)"\} (\d)$', text, re.M))
    # procfs and sysfs, mounts, netlink, D-Bus to systemd, the probe's textfile
    for c in ("cpu", "meminfo", "filesystem", "diskstats", "netdev", "systemd", "textfile", "pressure"):
        assert ok.get(c) == "1", (c, ok)
    # the textfile collector reports success even when a file cannot be read: only this says it
    assert re.search(r"^node_textfile_scrape_error 0$", text, re.M), re.findall(r"^node_textfile.*$", text, re.M)


def test_prometheus_is_ready_and_the_probe_ran_in_their_sandboxes(host):
    assert "Ready" in host.check_output("curl -s http://127.0.0.1:9090/-/ready")
    # what the sandboxed services serve one another (an unloaded lazy expert's target is down by design)
    up = json.loads(host.check_output("curl -s http://127.0.0.1:9090/api/v1/query?query=up"))["data"]["result"]
    jobs = {r["metric"]["job"]: r["value"][1] for r in up if r["metric"]["job"] != "vllm"}
    assert jobs == {"prometheus": "1", "node": "1", "frontdoor": "1", "frontdoor_routing": "1", "usage_per_key": "1"}, up
    # the probe timer's service (test_4 runs it): its last run, or one now if it never ran
    show = dict(ln.split("=", 1) for ln in host.check_output(
        "systemctl show -p Result -p ExecMainStatus -p ExecMainStartTimestampMonotonic llmhost-probe.service").splitlines())
    if show["ExecMainStartTimestampMonotonic"] == "0":
        host.run("systemctl start llmhost-probe.service")
        show = dict(ln.split("=", 1) for ln in host.check_output(
            "systemctl show -p Result -p ExecMainStatus llmhost-probe.service").splitlines())
    assert show["Result"] == "success" and show["ExecMainStatus"] == "0", show
    # and what it wrote reaches node exporter through its sandboxed textfile directory
    assert "llmhost_probe_ok{" in host.check_output("curl -s http://127.0.0.1:9100/metrics")

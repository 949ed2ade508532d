"""The expert unit template, rendered by Ansible for a generate, a pooling and a lazy expert; and every
unit and drop-in the toolkit installs, scored by systemd-analyze security (docs/hardening.md)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_routing import plan as routed_plan  # noqa: E402  (general, coder and the pooling router)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


LAZY = {"enabled": True, "warmup_pool_size": 2, "max_loaded_experts": 3, "auto_unload_after_s": 60}


def play(playbook: str, plan: dict, out: Path, ev: Path) -> None:
    """Run a render playbook of tests/render on the controller with this plan, into `out`."""
    ev.write_text(json.dumps({"plan": plan, "out": str(out), "ansible_python_interpreter": sys.executable}))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", f"tests/render/{playbook}",
                        "-e", f"@{ev}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-3000:]


def render(tmp_path):
    plan = routed_plan(lazy=LAZY).to_dict()
    play("render-units.yml", plan, tmp_path, tmp_path / "ev.json")
    return plan


def test_a_pooling_expert_gets_the_embedding_readiness_gate(tmp_path):
    render(tmp_path)
    post = {e: [ln for ln in (tmp_path / f"{e}.service").read_text().splitlines() if ln.startswith("ExecStartPost=")]
            for e in ("general", "router")}
    assert post["router"][0].endswith(" --pooling") and "--pooling" not in post["general"][0]
    assert "--runner pooling" in (tmp_path / "router.service").read_text()


def lines(path, key):
    return [ln.split("=", 1)[1] for ln in path.read_text().splitlines() if ln.startswith(key + "=")]


def test_a_lazy_expert_is_a_handle_on_a_standby_that_holds_the_sandbox_cpus_and_memory(tmp_path):
    plan = render(tmp_path)
    lazy = [e for e in plan["experts"] if not e["preload"]]
    assert lazy, "the routed plan has a lazy expert"
    e = lazy[0]["expert_id"]
    handle, standby = tmp_path / f"{e}.service", tmp_path / f"{e}-standby.service"
    sock = f"/run/llmhost-{e}/standby.sock"
    assert lines(handle, "ExecStart") == [f"/opt/vllm/venv/bin/python /usr/local/libexec/llmhost/vllm-start --handle {sock}"]
    assert lines(handle, "Requires") == [f"llmhost-expert-{e}-standby.service"]
    assert lines(standby, "OOMPolicy") == ["continue"]
    assert lines(handle, "ExecStartPost") and lines(handle, "ExecStopPost")      # readiness gate; failure reason
    assert not lines(handle, "CPUAffinity") and not lines(handle, "RuntimeDirectory")
    start = lines(standby, "ExecStart")[0]
    assert start.startswith(f"/opt/vllm/venv/bin/python /usr/local/libexec/llmhost/vllm-start --standby {sock} -- ")
    assert " ".join(lazy[0]["argv"]) in start
    assert lines(standby, "CPUAffinity") and lines(standby, "MemoryMax") == [str(lazy[0]["memory_max_bytes"])]
    assert lines(standby, "RuntimeDirectory") == [f"llmhost-{e}"] and lines(standby, "Restart") == ["always"]
    assert not lines(standby, "ExecStartPost") and lines(standby, "User") == ["llmhost"]
    # the same hardening as a server unit
    server = tmp_path / "general.service"
    for key in ("ProtectSystem", "PrivateUsers", "SystemCallFilter", "IPAddressDeny", "CapabilityBoundingSet"):
        assert lines(standby, key) == lines(server, key) == lines(handle, key), key


# systemd-analyze security's overall figure, in tenths (what --threshold compares)
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+)\.(\d)")
LIMIT = 20
DROP_INS = ("haproxy", "prometheus", "prometheus-node-exporter")
# Debian's units as its packages ship them; node exporter's is not on the controller: its
# [Service] section, less the comments
DEBIAN_UNITS = ["haproxy.service", "prometheus.service"]
NODE_EXPORTER = ("[Service]\nRestart=on-failure\nUser=prometheus\nEnvironmentFile=/etc/default/prometheus-node-exporter\n"
                 "ExecStart=/usr/bin/prometheus-node-exporter $ARGS\nExecReload=/bin/kill -HUP $MAINPID\n")
# the same services bare: only who runs them and what (a drop-in must not rely on the package's own settings)
BARE = {"haproxy.service": "[Service]\nExecStart=/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg\n",
        "prometheus.service": "[Service]\nUser=prometheus\nExecStart=/usr/bin/prometheus\n",
        "prometheus-node-exporter.service": "[Service]\nUser=prometheus\nExecStart=/usr/bin/prometheus-node-exporter\n"}


def exposure(root, units):
    """{unit: exposure in tenths} from systemd-analyze security --offline over a root directory."""
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", *units],
                       capture_output=True, text=True, check=False)
    found = {m.group(1): int(m.group(2)) * 10 + int(m.group(3)) for m in EXPOSURE.finditer(r.stdout)}
    assert set(found) == set(units), r.stdout[-3000:] + r.stderr[-3000:]
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every unit and drop-in the toolkit installs, rendered once, as /etc/systemd/system holds them."""
    tmp = tmp_path_factory.mktemp("units")
    plan = render(tmp)
    out = tmp / "out"
    play("render-hardening.yml", plan, out, tmp / "ev-hardening.json")
    units = out / "etc/systemd/system"
    for e in plan["experts"]:
        shutil.copy(tmp / f"{e['expert_id']}.service", units / f"llmhost-expert-{e['expert_id']}.service")
        if not e["preload"]:
            shutil.copy(tmp / f"{e['expert_id']}-standby.service",
                        units / f"llmhost-expert-{e['expert_id']}-standby.service")
    return units


def root_with(rendered, tmp_path, bare=False):
    """A root directory for systemd-analyze: the rendered units, and under them Debian's
    units (or bare ones) for the drop-ins to apply to. Returns it and every service's name."""
    root = tmp_path / "root"
    shutil.copytree(rendered, root / "etc/systemd/system")
    vendor = root / "usr/lib/systemd/system"
    vendor.mkdir(parents=True)
    for name, text in BARE.items():
        packaged = Path("/lib/systemd/system") / name
        if bare:
            (vendor / name).write_text(text)
        elif name in DEBIAN_UNITS:
            assert packaged.exists(), f"{packaged}: scripts/bootstrap installs haproxy and prometheus"
            shutil.copy(packaged, vendor / name)
        else:
            (vendor / name).write_text(NODE_EXPORTER)
    return root, sorted(p.name for p in rendered.glob("*.service")) + sorted(BARE)


def test_every_toolkit_unit_scores_at_most_2_0_in_systemd_analyze_security(rendered, tmp_path):
    root, units = root_with(rendered, tmp_path)
    assert {"llmhost-probe.service", "haproxy.service", "prometheus-node-exporter.service",
            "llmhost-fleetdoor.service"} <= set(units)
    assert any(u.endswith("-proxy.service") for u in units) and any(u.endswith("-standby.service") for u in units)
    scores = exposure(root, units)
    assert {u: s for u, s in scores.items() if s > LIMIT} == {}, scores
    # the drop-ins are what does it: without them Debian's units score far above
    for d in DROP_INS:
        shutil.rmtree(root / f"etc/systemd/system/{d}.service.d")
    before = exposure(root, [f"{d}.service" for d in DROP_INS])
    assert before["haproxy.service"] >= 90 and before["prometheus-node-exporter.service"] >= 90, before
    assert before["prometheus.service"] > LIMIT, before


def test_the_drop_ins_alone_hold_the_limit_over_a_bare_unit(rendered, tmp_path):
    root, _ = root_with(rendered, tmp_path, bare=True)
    scores = exposure(root, sorted(BARE))
    assert {u: s for u, s in scores.items() if s > LIMIT} == {}, scores


def test_haproxy_runs_in_its_sandbox_only_with_the_roles_config(rendered):
    drop = rendered / "haproxy.service.d/llmhost-hardening.conf"
    # the master keeps what switching to `user haproxy` needs; it writes only /run/haproxy
    assert lines(drop, "CapabilityBoundingSet") == ["CAP_SETUID CAP_SETGID"]
    assert lines(drop, "ReadWritePaths") == ["/run/haproxy"] and lines(drop, "ProtectSystem") == ["strict"]
    assert lines(drop, "Environment") == ['"PIDFILE=/run/haproxy/haproxy.pid" "EXTRAOPTS=-S /run/haproxy/master.sock"']
    # no chroot (CAP_SYS_CHROOT is not kept) and the stats socket inside the writable directory
    cfg = (ROOT / "roles/frontdoor/templates/haproxy.cfg.j2").read_text()
    assert not re.search(r"^\s*chroot\b", cfg, re.M)
    assert re.search(r"^\s*stats socket /run/haproxy/", cfg, re.M)


def test_monitoring_on_loopback_gets_an_ip_allow_list(rendered):
    prom = rendered / "prometheus.service.d/llmhost-hardening.conf"
    node = rendered / "prometheus-node-exporter.service.d/llmhost-hardening.conf"
    for f in (prom, node):
        assert lines(f, "IPAddressDeny") == ["any"] and lines(f, "IPAddressAllow") == ["localhost"], f
    assert "AF_NETLINK" in lines(node, "RestrictAddressFamilies")[0]      # the netdev collector

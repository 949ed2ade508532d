"""Testinfra checks of the os_tuning role on a booted nspawn host.

Runs after converge and idempotence; the check-mode and absent tests come last
and in this order (pytest keeps file order)."""

import json
import os
from llmhost import runner

SYSCTL = "/etc/sysctl.d/60-llmhost-tuning.conf"
TMPFILES = "/etc/tmpfiles.d/60-llmhost-tuning.conf"
UDEV = "/etc/udev/rules.d/60-llmhost-io-scheduler.rules"
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]


def playbook(*args) -> runner.PlaybookRun:
    return runner.run_playbook(["playbooks/tune.yml"], os.environ["MOLECULE_INVENTORY_FILE"], args=args,
                               envvars=runner.molecule_envvars())


def test_system_is_up(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_sysctl_file_holds_merged_values_and_override(host):
    f = host.file(SYSCTL)
    assert f.exists and f.mode == 0o644
    lines = {l.split("=")[0].strip(): l.split("=")[1].strip()
             for l in f.content_string.splitlines() if "=" in l and not l.startswith("#")}
    assert lines["net.core.somaxconn"] == "65535"          # seed default
    assert lines["net.ipv4.tcp_max_syn_backlog"] == "8192"  # override wins
    assert lines["net.ipv4.tcp_fin_timeout"] == "20"        # override adds
    assert lines["vm.swappiness"] == "10"
    assert lines["vm.dirty_ratio"] == "10" and lines["vm.dirty_background_ratio"] == "3"
    assert f.content_string.count("net.core.somaxconn") == 1  # no duplicates, ever


def test_namespaced_values_are_live(host):
    assert host.file("/proc/sys/net/core/somaxconn").content_string.strip() == "65535"
    assert host.file("/proc/sys/net/ipv4/tcp_max_syn_backlog").content_string.strip() == "8192"
    assert host.file("/proc/sys/net/ipv4/tcp_fin_timeout").content_string.strip() == "20"


def test_boot_files_written(host):
    tmp = host.file(TMPFILES).content_string
    assert "w- /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise" in tmp
    rules = host.file(UDEV).content_string
    assert 'KERNEL=="nvme[0-9]*n[0-9]*", ATTR{queue/scheduler}="none"' in rules
    assert 'KERNEL=="vd[a-z]*", ATTR{queue/scheduler}="mq-deadline"' in rules
    # the files parse: tmpfiles accepts ours without error in this container
    assert host.run(f"systemd-tmpfiles --create {TMPFILES}").rc == 0


def test_tcmalloc_installed(host):
    assert host.package("libtcmalloc-minimal4").is_installed


def test_udev_installed(host):
    # without udev the rule is never read at boot (the minbase rootfs has none);
    # the QEMU VM test proves the rule applies at boot
    assert host.package("udev").is_installed
    # and udev's own systemd unit stays inactive in a container (read-only /sys), not failed
    assert host.run("systemctl is-failed --quiet systemd-udevd.service").rc != 0


def test_check_mode_reports_change_and_touches_nothing(host):
    before = host.file(SYSCTL).sha256sum
    r = playbook("--check", "--diff", "-e",
                 json.dumps({"os_tuning_sysctl_overrides": {"net.ipv4.tcp_max_syn_backlog": 4096}}))
    assert r.rc == 0, r.stdout
    assert "+net.ipv4.tcp_max_syn_backlog = 4096" in r.stdout  # the diff shows the plan
    assert sum(r.changed.values()) > 0, r.changed  # counted from the events
    assert host.file(SYSCTL).sha256sum == before
    assert host.file("/proc/sys/net/ipv4/tcp_max_syn_backlog").content_string.strip() == "8192"


def test_absent_removes_every_file(host):
    r = playbook("-e", "os_tuning_state=absent")
    assert r.rc == 0, r.stdout
    for path in (SYSCTL, TMPFILES, UDEV):
        assert not host.file(path).exists, path

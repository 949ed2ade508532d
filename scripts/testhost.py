#!/usr/bin/env python3
"""Boot and tear down systemd test hosts with systemd-nspawn (stdlib only).

Each host is a real systemd (PID 1 in its own namespaces) booted from an overlay
on a cached debootstrap rootfs, reachable over ssh on a veth pair with a fixed
/30. A per-host tinyproxy on the host side of the veth gives apt and pip their
way out; the host CA bundle and the machine's torch wheel directory are bound
read-only.

    testhost.py up NAME [NAME ...] [--json FILE] [--inventory FILE]
                                                  boot hosts, print their ssh facts
    testhost.py down NAME [NAME ...] | --all      stop, unmount, remove
    testhost.py status                            list live hosts
    testhost.py rootfs                            build the cached rootfs only

Every resource is recorded under RUN_DIR/NAME as soon as it exists, so `down`
(also called on failure and on SIGINT/SIGTERM during `up`) removes exactly what
was made: processes by PID, the overlay by unmount, the veth by name.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from testhosts.common import GUEST_VENV, HOST_CA, NAME_RE, VENV_CACHE, WHEEL_DIR, CACHE, arch, log, machine_name, run, wait_for
from testhosts.cpuview import neoverse_v2_files
from testhosts.network import addresses, inventory_for, ssh_base, start_proxy, write_host_files
from testhosts.rootfs import build_rootfs, ssh_key
from testhosts.state import (children, comm, free_index, host_dir, is_mounted, kept, live_hosts, pid_alive,
                             read_state, write_state)

# ssh_base, ssh_key, build_rootfs and inventory_for are also this module's API
# (scripts/bench_profiles.py, scripts/vm_reboot_test.py import testhost).
__all__ = ["build_rootfs", "inventory_for", "main", "ssh_base", "ssh_key"]


def up_one(name: str, deb_arch: str, peers: dict[str, str], index: int, keep: bool = False) -> dict:
    if not NAME_RE.match(name):
        raise SystemExit(f"bad host name {name!r}: lower-case letters, digits and '-', at most 31 characters")
    if (host_dir(name) / "state.json").exists():
        raise SystemExit(f"host {name} exists; run: testhost.py down {name}")
    rootfs = build_rootfs(deb_arch)
    key = ssh_key()
    d = host_dir(name)
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    host_ip, guest_ip = addresses(index)
    st = {"name": name, "index": index, "arch": deb_arch, "address": guest_ip,
          "host_address": host_ip, "user": "root", "port": 22, "identity_file": str(key),
          "veth": f"ve-{machine_name(name)}", "dir": str(d), "keep": keep}
    write_state(st)
    write_host_files(d / "upper", name, index, Path(str(key) + ".pub").read_text(), peers)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={rootfs},upperdir={d / 'upper'},workdir={d / 'work'}", str(d / "merged")])
    st["mounted"] = str(d / "merged")
    write_state(st)
    cmd = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(d / "merged"),
           "-M", machine_name(name), f"--hostname={name}", "--network-veth", "--resolv-conf=off", "--timezone=off",
           "--link-journal=no", "-b", "--console=read-only",
           f"--bind-ro={HOST_CA}:/etc/llmhost-test/host-ca.pem"]
    # nspawn leaves parts of /sys/devices writable; a test host must never retune
    # this machine's disks (a live I/O-scheduler write would reach them without this bind).
    cmd.append("--bind-ro=/sys/devices")
    if WHEEL_DIR.is_dir():
        cmd.append(f"--bind-ro={WHEEL_DIR}")
    if deb_arch == "arm64" and arch() != "arm64":
        # Under qemu-user /proc/cpuinfo and /sys/devices/system/cpu are this machine's x86
        # ones; show what models-europe has: a 32-vCPU Neoverse V2 (MIDR 0x410fd4f1).
        cpu_tree, cpuinfo = neoverse_v2_files()
        cmd += [f"--bind-ro={cpu_tree}:/etc/llmhost-test/cpu", f"--bind-ro={cpuinfo}:/etc/llmhost-test/cpuinfo"]
    cmd += [f"--bind-ro={p}" for p in extra_binds()]
    # A shared pip cache: the vLLM CPU wheel and its dependencies download once per machine.
    pip_cache = CACHE / "pip-cache"
    pip_cache.mkdir(parents=True, exist_ok=True)
    cmd.append(f"--bind={pip_cache}:/root/.cache/pip")
    if VENV_CACHE and deb_arch == arch():
        Path(VENV_CACHE).mkdir(parents=True, exist_ok=True)
        Path(VENV_CACHE).chmod(0o755)   # mktemp -d makes it 0700; the experts' user reads the venv
        cmd.append(f"--bind={VENV_CACHE}:{GUEST_VENV}")
        st["venv_cache"] = VENV_CACHE
        write_state(st)
    logf = open(d / "console.log", "w")
    p = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    st["nspawn_pid"] = p.pid
    write_state(st)

    def leader() -> int | None:
        if p.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {p.returncode}; see {d / 'console.log'}")
        for c in children(p.pid):
            if comm(c) == "systemd":
                return c
        return None

    st["leader_pid"] = wait_for(leader, 30, f"{name}: container systemd")
    write_state(st)
    veth = st["veth"]
    wait_for(lambda: Path(f"/sys/class/net/{veth}").exists(), 15, f"{name}: {veth}")
    run(["ip", "addr", "replace", f"{host_ip}/30", "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    start_proxy(st, host_ip, guest_ip)

    def ssh_ok() -> bool:
        if p.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {p.returncode}; see {d / 'console.log'}")
        r = run(ssh_base(st) + ["true"], check=False, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        return r.returncode == 0

    wait_for(ssh_ok, int(os.environ.get("LLMHOST_SSH_WAIT", 90 if deb_arch == arch() else 300)), f"{name}: ssh on {guest_ip}", interval=0.5)
    state = run(ssh_base(st) + ["timeout 120 systemctl is-system-running --wait"], check=False,
                capture_output=True).stdout.strip()
    st["system_state"] = state
    write_state(st)
    return st


def extra_binds() -> list[str]:
    raw = os.environ.get("LLMHOST_TESTHOST_BIND_RO", "")
    return [b for b in raw.split(",") if b]


def down_one(name: str) -> None:
    st = read_state(name)
    d = host_dir(name)
    leader = st.get("leader_pid")
    nspawn = st.get("nspawn_pid")
    # A clean poweroff first (SIGRTMIN+4 to the container's systemd), then force.
    if pid_alive(leader) and comm(leader) == "systemd":
        try:
            os.kill(leader, signal.SIGRTMIN + 4)
        except ProcessLookupError:
            pass
        try:
            wait_for(lambda: not pid_alive(nspawn) and not pid_alive(leader), 10, "poweroff")
        except TimeoutError:
            pass
    for pid in (leader, nspawn):
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid in (leader, nspawn):
        if pid:
            try:
                wait_for(lambda: not pid_alive(pid), 10, f"pid {pid} to exit")
            except TimeoutError:
                log(f"warning: pid {pid} of {name} did not exit")
    # nspawn is our child only within `up`; reap if we can.
    proxy = st.get("proxy_pid")
    if pid_alive(proxy) and comm(proxy) == "tinyproxy":
        os.kill(proxy, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(proxy), 5, "tinyproxy")
        except TimeoutError:
            os.kill(proxy, signal.SIGKILL)
    merged = str(d / "merged")
    for _ in range(5):
        if not is_mounted(merged):
            break
        run(["umount", merged], check=False, stderr=subprocess.DEVNULL)
        if is_mounted(merged):
            time.sleep(0.5)
            run(["umount", "-l", merged], check=False, stderr=subprocess.DEVNULL)
    veth = st.get("veth", f"ve-{name}")
    if Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth], check=False)
    if is_mounted(merged):
        raise SystemExit(f"could not unmount {merged}")
    shutil.rmtree(d, ignore_errors=True)
    log(f"{name}: down")


def cmd_up(args) -> int:
    deb_arch = args.arch or arch()
    made: list[str] = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out = []
    try:
        build_rootfs(deb_arch)
        first = args.index if args.index is not None else free_index()
        peers = {n: addresses(first + i)[1] for i, n in enumerate(args.names)}
        for i, name in enumerate(args.names):
            t0 = time.monotonic()
            made.append(name)
            st = up_one(name, deb_arch, peers, first + i, keep=args.keep)
            log(f"{name}: {st['address']} is {st['system_state']} after {time.monotonic() - t0:.1f} s")
            out.append({"instance": name, "address": st["address"], "user": "root",
                        "port": 22, "identity_file": st["identity_file"],
                        "system_state": st["system_state"], "arch": deb_arch})
    except BaseException as e:  # noqa: BLE001 - any failure or interrupt tears down
        if os.environ.get("LLMHOST_TESTHOST_KEEP_FAILED"):
            log(f"up failed ({type(e).__name__}: {e}); kept for debugging: {made}")
            return 1
        log(f"up failed ({type(e).__name__}: {e}); tearing down {made}")
        for name in made:
            console = host_dir(name) / "console.log"
            if console.exists():
                tail = [l for l in console.read_text(errors="replace").splitlines() if l.strip()][-int(os.environ.get("LLMHOST_CONSOLE_LINES", "15")):]
                log(f"{name} console (last lines):\n  " + "\n  ".join(tail))
            try:
                down_one(name)
            except BaseException as e2:  # noqa: BLE001
                log(f"teardown of {name}: {e2}")
        return 1
    text = json.dumps(out, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    if args.inventory:
        Path(args.inventory).write_text(json.dumps(inventory_for(out, args.group), indent=2) + "\n")
    print(text)
    return 0


def cmd_down(args) -> int:
    if args.all:
        names = [n for n in live_hosts() if args.kept_too or not kept(n)]
        for n in sorted(set(live_hosts()) - set(names)):
            log(f"{n}: kept (booted with --keep); `down {n}` or `down --all --kept-too` removes it")
    else:
        names = args.names
    rc = 0
    for n in names:
        try:
            down_one(n)
        except BaseException as e:  # noqa: BLE001
            log(f"{n}: teardown failed: {e}")
            rc = 1
    return rc


def cmd_status(_args) -> int:
    for n in live_hosts():
        st = read_state(n)
        alive = pid_alive(st.get("leader_pid"))
        print(f"{n}\t{st.get('address')}\t{'running' if alive else 'dead'}" + ("\tkept" if st.get("keep") else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    if os.geteuid() != 0:
        raise SystemExit("testhost.py must run as root (nspawn, mounts, veth)")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("names", nargs="+")
    u.add_argument("--arch", help="Debian architecture (default: this machine's)")
    u.add_argument("--json", help="also write the instance list here")
    u.add_argument("--inventory", help="also write an Ansible inventory of the hosts here")
    u.add_argument("--group", default="llm_hosts", help="the inventory group (default: llm_hosts)")
    u.add_argument("--keep", action="store_true", help="a long-lived host (make local): "
                   "`down --all`, as the test suite runs it, leaves it alone")
    u.add_argument("--index", type=int, help="fixed address index of the first host "
                   "(0 is 10.231.0.2, the local inventory's models-local)")
    dn = sub.add_parser("down")
    dn.add_argument("names", nargs="*")
    dn.add_argument("--all", action="store_true", help="every host except those booted with --keep")
    dn.add_argument("--kept-too", action="store_true", help="with --all: also the kept ones")
    sub.add_parser("status")
    r = sub.add_parser("rootfs")
    r.add_argument("--arch")
    args = ap.parse_args(argv)
    if args.cmd == "up":
        return cmd_up(args)
    if args.cmd == "down":
        return cmd_down(args)
    if args.cmd == "status":
        return cmd_status(args)
    build_rootfs(args.arch or arch())
    return 0


if __name__ == "__main__":
    sys.exit(main())


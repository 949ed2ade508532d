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
import fcntl
import json
import os
import re
import shutil
import signal
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
FILES = Path(__file__).resolve().parent / "testhost_files"   # what the hosts get, as files


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


def rootfs_dir(deb_arch: str) -> Path:
    return CACHE / "rootfs" / f"{SUITE}-{deb_arch}"


def ssh_key() -> Path:
    key = CACHE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmhost-testhost", "-f", str(key)])
    return key


def build_rootfs(deb_arch: str | None = None) -> Path:
    """debootstrap once, then prepare the parts that are the same for every host."""
    deb_arch = deb_arch or arch()
    dest = rootfs_dir(deb_arch)
    if (dest / ".ready").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one debootstrap at a time per rootfs
        if (dest / ".ready").exists():
            return dest
        return _debootstrap(deb_arch, dest)


def ensure_binfmt(deb_arch: str) -> None:
    """Foreign architectures run under qemu-user-static through binfmt_misc (F flag:
    the interpreter is opened at registration, so it works inside containers)."""
    if deb_arch == arch():
        return
    qarch = {"arm64": "aarch64"}.get(deb_arch, deb_arch)
    bm = Path("/proc/sys/fs/binfmt_misc")
    if not (bm / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(bm)])
    entry = bm / f"qemu-{qarch}"
    if entry.exists():
        if "flags: " in entry.read_text() and "F" not in entry.read_text().split("flags: ", 1)[1].split()[0]:
            raise SystemExit(f"{entry} is registered without the F flag; unregister it (echo -1 > {entry})")
        return
    conf = Path(f"/usr/lib/binfmt.d/qemu-{qarch}.conf")
    if not conf.exists():
        raise SystemExit(f"{conf} missing: install qemu-user-static (scripts/bootstrap does)")
    (bm / "register").write_text(conf.read_text().strip())
    log(f"registered qemu-{qarch} in binfmt_misc")


def _debootstrap(deb_arch: str, dest: Path) -> Path:
    ensure_binfmt(deb_arch)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} {deb_arch} -> {dest} (about 60 s, once)")
    t0 = time.monotonic()
    run(["debootstrap", "--variant=minbase", f"--arch={deb_arch}",
         "--include=" + ",".join(ROOTFS_PACKAGES), SUITE, str(tmp), MIRROR],
        stdout=subprocess.DEVNULL)
    # Network: host0 gets its address from a per-host file written at boot time.
    for unit in ("systemd-networkd.service", "ssh.service"):
        run(["systemctl", f"--root={tmp}", "enable", unit], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    # Nothing in a test host needs these; they only slow the boot or wait on a network.
    for unit in ("systemd-networkd-wait-online.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"):
        run(["systemctl", f"--root={tmp}", "mask", unit], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    lay("rootfs", tmp, mirror=MIRROR, suite=SUITE)
    (tmp / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    if deb_arch != arch():
        # qemu-user refuses a clone flag that systemd's credential loading uses
        # (243/CREDENTIALS); an empty LoadCredential= lets these units start.
        for unit in ("systemd-sysctl.service", "systemd-sysusers.service", "systemd-tmpfiles-setup.service",
                     "systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-setup-dev-early.service"):
            d = tmp / "etc/systemd/system" / f"{unit}.d"
            d.mkdir(parents=True, exist_ok=True)
            (d / "llmhost-qemu-user.conf").write_text(fill("qemu-user-credentials.conf"))
        # systemd-networkd cannot start under qemu-user ("Could not setup manager: Protocol
        # not supported": a netlink family qemu does not translate); iproute2 works
        # (llmhost-net.service). nspawn mounts /proc and its read-only /sys after its
        # binds, so the emulated CPU's cpuinfo and sysfs tree are bound at plain paths
        # and laid over /proc/cpuinfo and /sys/devices/system/cpu early in the boot
        # (llmhost-cpuinfo.service).
        run(["systemctl", f"--root={tmp}", "mask", "systemd-networkd.service", "systemd-networkd.socket"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for rel in lay("foreign", tmp):
            run(["systemctl", f"--root={tmp}", "enable", Path(rel).name], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    (tmp / ".ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    log(f"rootfs ready in {time.monotonic() - t0:.0f} s")
    return dest


def addresses(index: int) -> tuple[str, str]:
    base = (index % 64) * 4
    third = index // 64
    return f"{NET_PREFIX}.{third}.{base + 1}", f"{NET_PREFIX}.{third}.{base + 2}"


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


def write_host_files(upper: Path, name: str, index: int, pubkey: str, peers: dict[str, str]) -> None:
    """Per-host files go into the overlay's upper dir before boot."""
    host_ip, guest_ip = addresses(index)
    # pip inside the host: through the proxy, trusting the machine's CA (outbound TLS is
    # re-signed here), with the machine's wheel directory as find-links for torch.
    lay("host", upper, guest_ip=guest_ip, proxy=f"http://{host_ip}:{PROXY_PORT}", wheel_dir=WHEEL_DIR)
    (upper / "etc/hostname").write_text(name + "\n")
    hosts = ["127.0.0.1\tlocalhost\n", f"127.0.1.1\t{name}\n", "::1\tlocalhost ip6-localhost\n",
             f"{host_ip}\tcontroller\n"]
    hosts += [f"{ip}\t{peer}\n" for peer, ip in sorted(peers.items()) if peer != name]
    (upper / "etc/hosts").write_text("".join(hosts))
    (upper / "root/.ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    (upper / "root/.ssh/authorized_keys").write_text(pubkey)
    os.chmod(upper / "root/.ssh/authorized_keys", 0o600)


def start_proxy(st: dict, host_ip: str, guest_ip: str) -> None:
    d = host_dir(st["name"])
    conf = d / "tinyproxy.conf"
    conf.write_text(fill("tinyproxy.conf", port=PROXY_PORT, host_ip=host_ip, guest_ip=guest_ip))
    logf = open(d / "tinyproxy.log", "w")
    p = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=logf, stderr=logf,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    st["proxy_pid"] = p.pid
    write_state(st)


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def ssh_base(st: dict) -> list[str]:
    return ["ssh", "-i", st["identity_file"], "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=3", "-o", "BatchMode=yes", f"root@{st['address']}"]


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


# The /proc/cpuinfo of a C4A-standard-32 that llmhost ships (the plan's unit tests use it too).
NEOVERSE_V2_CPUINFO = Path(__file__).resolve().parent.parent / "src/llmhost/data/cpuinfo-neoverse-v2.txt"


def neoverse_v2_files(ncpu: int = 32) -> tuple[Path, Path]:
    """A sysfs CPU tree of a C4A-standard-32 (no SMT), made once, and the shipped cpuinfo."""
    base = CACHE / "neoverse-v2"
    tree, info = base / "cpu", base / "cpuinfo"
    if (base / ".ready").exists():
        return tree, info
    shutil.rmtree(base, ignore_errors=True)
    tree.mkdir(parents=True)
    span = f"0-{ncpu - 1}"
    for name, val in (("online", span), ("possible", span), ("present", span), ("offline", ""),
                      ("kernel_max", "511"), ("isolated", "")):
        (tree / name).write_text(val + "\n")
    for i in range(ncpu):
        c = tree / f"cpu{i}"
        (c / "regs/identification").mkdir(parents=True)
        (c / "topology").mkdir()
        (c / "online").write_text("1\n")
        (c / "regs/identification/midr_el1").write_text("0x00000000410fd4f1\n")
        (c / "regs/identification/revidr_el1").write_text("0x0000000000000000\n")
        for k, v in (("core_id", str(i)), ("physical_package_id", "0"), ("cluster_id", "0"), ("die_id", "0"),
                     ("thread_siblings_list", str(i)), ("core_siblings_list", span), ("cluster_cpus_list", span),
                     ("package_cpus_list", span), ("core_cpus_list", str(i))):
            (c / "topology" / k).write_text(v + "\n")
    shutil.copyfile(NEOVERSE_V2_CPUINFO, info)
    (base / ".ready").write_text("\n")
    return tree, info


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


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


def inventory_for(instances: list[dict], group: str = "llm_hosts", **host_vars: object) -> dict:
    """An Ansible inventory (JSON is YAML) of booted hosts: `up`'s instance list, or
    any host reached with the harness key (the QEMU VM of scripts/vm_reboot_test.py)."""
    hosts = {i["instance"]: {"ansible_host": i["address"], "ansible_port": i.get("port", 22),
                             "ansible_user": i.get("user", "root"),
                             "ansible_ssh_private_key_file": i.get("identity_file", str(ssh_key())),
                             "ansible_ssh_common_args": SSH_ARGS, **host_vars} for i in instances}
    return {"all": {"children": {group: {"hosts": hosts}}}}


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


def kept(name: str) -> bool:
    """Booted with `up --keep` (make local's models-local): `down --all` leaves it alone."""
    return bool(read_state(name).get("keep"))


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

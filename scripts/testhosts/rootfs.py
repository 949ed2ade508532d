"""The cached debootstrap rootfs of the test hosts, the harness ssh key, and binfmt for foreign architectures."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from pathlib import Path

from .common import CACHE, MIRROR, ROOTFS_PACKAGES, SUITE, arch, fill, lay, log, run


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

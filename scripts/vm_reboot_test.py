#!/usr/bin/env python3
"""Prove the os_tuning role's settings on a real kernel and across a reboot.

A container cannot apply vm.* sysctls, THP or the I/O scheduler, so this boots a
QEMU VM (TCG: KVM hangs on this machine) from the same cached debootstrap rootfs
with this machine's Debian kernel, converges playbooks/tune.yml on it over ssh
(QEMU user networking, forwarded to 127.0.0.1 only), reboots it, and checks that
vm.swappiness, the THP mode and the I/O scheduler hold their values. The rootfs is
debootstrap minbase, without udev: the role itself installs it (apt reaches the
Debian mirror through QEMU's user-mode NAT), as it must on any image that lacks it.

    scripts/vm_reboot_test.py            prints figures; exit 0 when every value held

Everything it makes lives in a temporary directory and the VM is killed on exit.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmhost import runner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import testhost  # noqa: E402

# virtio-blk defaults to "none": mq-deadline shows the udev rule at work.
WANT = {"swappiness": "10", "thp": "madvise", "sched": "mq-deadline"}


def log(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


def kernel() -> tuple[str, str, str]:
    vmlinuz = sorted(glob.glob("/boot/vmlinuz-*"))
    if not vmlinuz:
        raise SystemExit("no /boot/vmlinuz-*: scripts/bootstrap installs linux-image-amd64")
    k = vmlinuz[-1]
    ver = k.split("vmlinuz-", 1)[1]
    initrd = f"/boot/initrd.img-{ver}"
    if not Path(initrd).exists() or not Path(f"/lib/modules/{ver}").is_dir():
        raise SystemExit(f"kernel {ver}: initrd or modules missing")
    return k, initrd, ver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_image(work: Path, ver: str) -> Path:
    rootfs = testhost.build_rootfs("amd64")
    tree = work / "tree"
    log("copying the rootfs and kernel modules into an ext4 image")
    subprocess.run(["cp", "-a", f"{rootfs}/.", str(tree)], check=True)
    subprocess.run(["mkdir", "-p", str(tree / "lib/modules")], check=True)
    subprocess.run(["cp", "-a", f"/lib/modules/{ver}", str(tree / "lib/modules/")], check=True)
    key = testhost.ssh_key()
    (tree / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    shutil.copy(str(key) + ".pub", tree / "root/.ssh/authorized_keys")
    (tree / "etc/hostname").write_text("vm-tune\n")
    (tree / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 vm-tune\n")
    # QEMU's user-mode network answers DNS on 10.0.2.3 (apt needs it to install udev)
    (tree / "etc/resolv.conf").unlink(missing_ok=True)
    (tree / "etc/resolv.conf").write_text("nameserver 10.0.2.3\n")
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    (tree / "etc/systemd/network/10-wired.network").write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n")
    img = work / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(img), "3G"], check=True)
    shutil.rmtree(tree)
    return img


class VM:
    def __init__(self, img: Path, kern: str, initrd: str, work: Path):
        self.img, self.kern, self.initrd, self.work = img, kern, initrd, work
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def boot(self) -> float:
        t0 = time.monotonic()
        log_f = open(self.work / "console.log", "ab")
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2", "-nographic",
             "-no-reboot", "-drive", f"file={self.img},if=virtio,format=raw",
             "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22", "-device", "virtio-net-pci,netdev=n0",
             "-kernel", self.kern, "-initrd", self.initrd,
             "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0"],
            stdout=log_f, stderr=log_f, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited {self.proc.returncode}; see {self.work / 'console.log'}")
            if self.ssh("true", check=False, timeout=10).returncode == 0:
                return time.monotonic() - t0
            time.sleep(2)
        raise TimeoutError("the VM did not answer ssh within 300 s")

    def ssh(self, cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-p", str(self.port), "-i", str(testhost.ssh_key()), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
             "-o", "BatchMode=yes", "root@127.0.0.1", cmd],
            capture_output=True, text=True, check=check, timeout=timeout)

    def reboot(self) -> float:
        # -no-reboot: a guest reboot ends qemu; boot it again from the same disk.
        self.ssh("systemctl reboot", check=False, timeout=20)
        assert self.proc is not None
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.boot()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def values(vm: VM) -> dict[str, str]:
    out = vm.ssh("cat /proc/sys/vm/swappiness; cat /sys/kernel/mm/transparent_hugepage/enabled; "
                 "cat /sys/block/vda/queue/scheduler").stdout.splitlines()
    sel = lambda s: s.split("[", 1)[1].split("]", 1)[0] if "[" in s else s.strip()  # noqa: E731
    return {"swappiness": out[0].strip(), "thp": sel(out[1]), "sched": sel(out[2])}


def converge(vm: VM, work: Path):
    """playbooks/tune.yml on the VM through ansible-runner: its events give the
    changed and failed counts and each task's time."""
    inv = work / "inventory.yml"
    inv.write_text(json.dumps(testhost.inventory_for([{"instance": "vm-tune", "address": "127.0.0.1",
                                                       "port": vm.port}])))
    extra = {"os_tuning_io_schedulers": [{"kernel": "vd[a-z]*", "scheduler": WANT["sched"]}]}
    return runner.run_playbook(["playbooks/tune.yml"], inv, extravars=extra, private_dir=work / "runner")


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    t_all = time.monotonic()
    kern, initrd, ver = kernel()
    work = Path(tempfile.mkdtemp(prefix="llmhost-vm-"))
    vm = None
    try:
        img = build_image(work, ver)
        vm = VM(img, kern, initrd, work)
        t = vm.boot()
        before = values(vm)
        log(f"booted in {t:.0f} s; kernel defaults: {before}")
        r = converge(vm, work)
        if r.rc != 0:
            print(r.stdout[-4000:])
            return 1
        log(f"converged: changed {sum(r.changed.values())}, failed {sum(r.failed.values())}; "
            "slowest: " + ", ".join(f"{t} {s:.1f} s" for t, _h, s in r.task_times()[:3]))
        live = values(vm)
        log(f"after converge: {live}")
        t = vm.reboot()
        after = values(vm)
        log(f"rebooted in {t:.0f} s; after reboot: {after}")
        ok = live == WANT and after == WANT and all(before[k] != WANT[k] for k in WANT)
        print(json.dumps({"kernel": ver, "before": before, "after_converge": live, "after_reboot": after,
                          "wanted": WANT, "held": ok, "seconds": round(time.monotonic() - t_all)}))
        return 0 if ok else 1
    finally:
        if vm:
            vm.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

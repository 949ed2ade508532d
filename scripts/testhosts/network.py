"""Addresses, per-host files, the apt/pip proxy, ssh, and an Ansible inventory of the hosts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .common import NET_PREFIX, PROXY_PORT, WHEEL_DIR, fill, lay
from .rootfs import ssh_key
from .state import host_dir, write_state


def addresses(index: int) -> tuple[str, str]:
    base = (index % 64) * 4
    third = index // 64
    return f"{NET_PREFIX}.{third}.{base + 1}", f"{NET_PREFIX}.{third}.{base + 2}"


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


def ssh_base(st: dict) -> list[str]:
    return ["ssh", "-i", st["identity_file"], "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=3", "-o", "BatchMode=yes", f"root@{st['address']}"]


SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


def inventory_for(instances: list[dict], group: str = "llm_hosts", **host_vars: object) -> dict:
    """An Ansible inventory (JSON is YAML) of booted hosts: `up`'s instance list, or
    any host reached with the harness key (the QEMU VM of scripts/vm_reboot_test.py)."""
    hosts = {i["instance"]: {"ansible_host": i["address"], "ansible_port": i.get("port", 22),
                             "ansible_user": i.get("user", "root"),
                             "ansible_ssh_private_key_file": i.get("identity_file", str(ssh_key())),
                             "ansible_ssh_common_args": SSH_ARGS, **host_vars} for i in instances}
    return {"all": {"children": {group: {"hosts": hosts}}}}

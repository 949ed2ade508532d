"""Where a plan's Host comes from, in one place: the CPU probe on the host (the preflight
stage), the inventory's description (`llmhost_host_expect`), this machine,
or a saved /proc/cpuinfo."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from .capabilities import parse_cpuinfo
from .plan import GIB, Host


def from_probe(cpu: Mapping[str, Any], cpu_source: str = "affinity") -> Host:
    """The host as capabilities.py --cpu-only saw it: "affinity" (the CPUs this process
    may run on; right on real hosts) or "online" (what sysfs lists)."""
    cpu = cpu.get("cpu", cpu)
    key = "online_cpu_ids" if cpu_source == "online" else "cpu_ids"
    cpus = cpu.get(key) or cpu.get("cpu_ids") or list(range(int(cpu["cpus"])))
    return Host(tuple(int(c) for c in cpus), int(cpu["memory_bytes"]), cpu.get("arch", "x86_64"),
                cpu.get("isa", {}), cpu.get("model", ""))


def cpu_profile(name: str) -> dict[str, Any]:
    """A saved /proc/cpuinfo of a known CPU (llmhost/data/cpuinfo-NAME.txt), parsed."""
    try:
        text = resources.files("llmhost").joinpath("data", f"cpuinfo-{name}.txt").read_text()
    except FileNotFoundError:
        raise SystemExit(f"llmhost_host_expect.cpu: no saved cpuinfo for {name!r}") from None
    return parse_cpuinfo(text, "aarch64" if "neoverse" in name else "x86_64")


def from_vars(hv: dict[str, Any]) -> tuple[Host, str]:
    """The host as the inventory describes it (offline), or else this machine."""
    exp = hv.get("llmhost_host_expect")
    if exp:
        info = cpu_profile(exp["cpu"]) if exp.get("cpu") else {"arch": exp.get("arch", "x86_64"), "isa": {}}
        return Host(tuple(range(int(exp["cpus"]))), int(float(exp["memory_gib"]) * GIB),
                    exp.get("arch", info["arch"]), info.get("isa", {}), info.get("model", "")), \
            "from llmhost_host_expect"
    import psutil  # noqa: PLC0415

    with open("/proc/cpuinfo") as f:
        info = parse_cpuinfo(f.read(), os.uname().machine)
    return Host(tuple(sorted(os.sched_getaffinity(0))), psutil.virtual_memory().total, info["arch"],
                info["isa"], info["model"]), "no llmhost_host_expect: this machine's CPUs and memory"


def with_cpuinfo(host: Host, path: str) -> tuple[Host, str]:
    """The same host with the CPU of a saved /proc/cpuinfo (ISA, model, arch)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"--cpuinfo {path}: cannot read it ({e.__class__.__name__})") from None
    arch = "aarch64" if "CPU implementer" in text else "x86_64"
    info = parse_cpuinfo(text, arch)
    if not info["cpuinfo_cpus"]:
        raise SystemExit(f"--cpuinfo {path}: no 'processor' entries; not a /proc/cpuinfo")
    return Host(host.cpus, host.memory_bytes, info["arch"], info["isa"], info["model"]), f"CPU from {path}"



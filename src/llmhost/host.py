"""Where a plan's Host comes from, in one place: the CPU probe on the host (the preflight
stage), the inventory's description (`llmhost_host_expect`), this machine,
or a saved /proc/cpuinfo."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from .capabilities import parse_cpuinfo
from .experts import ConfigError
from .plan import GIB, Host

EXPECT_FIELDS = ("cpus", "memory_gib", "arch", "cpu")
EXPECT_CPUS_MAX = 1024          # beyond any single host this toolkit plans
EXPECT_MEMORY_GIB = (1, 65536)
ARCHES = ("x86_64", "aarch64")


def saved_cpus() -> list[str]:
    """Names of the saved /proc/cpuinfo files (llmhost/data/cpuinfo-NAME.txt)."""
    return sorted(p.name[len("cpuinfo-"):-len(".txt")] for p in resources.files("llmhost").joinpath("data").iterdir()
                  if p.name.startswith("cpuinfo-") and p.name.endswith(".txt"))


def parse_expect(raw: Any) -> dict[str, Any]:
    """`llmhost_host_expect` checked: {} when unset, else cpus (1..1024), memory_gib
    (1..65536), arch and cpu (a saved cpuinfo name). ConfigError naming the field."""
    if raw in (None, "", {}):
        return {}
    where = "llmhost_host_expect"
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{where}: must be a mapping of {', '.join(EXPECT_FIELDS)}, got {type(raw).__name__}"])
    problems = [f"{where} field '{k}': unknown key (known: {', '.join(EXPECT_FIELDS)})" for k in raw
                if k not in EXPECT_FIELDS]
    cpus, mem = raw.get("cpus"), raw.get("memory_gib")
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= EXPECT_CPUS_MAX:
        problems.append(f"{where} field 'cpus': a whole number of CPUs 1..{EXPECT_CPUS_MAX}, got {cpus!r}")
    lo, hi = EXPECT_MEMORY_GIB
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not lo <= mem <= hi:
        problems.append(f"{where} field 'memory_gib': a number of GiB {lo}..{hi}, got {mem!r}")
    arch = raw.get("arch")
    if arch is not None and arch not in ARCHES:
        problems.append(f"{where} field 'arch': one of {', '.join(ARCHES)}, got {arch!r}")
    cpu = raw.get("cpu")
    if cpu is not None and cpu not in saved_cpus():
        problems.append(f"{where} field 'cpu': one of the saved CPUs ({', '.join(saved_cpus())}), got {cpu!r}")
    if problems:
        raise ConfigError(problems)
    return dict(raw)


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
    exp = parse_expect(hv.get("llmhost_host_expect"))
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



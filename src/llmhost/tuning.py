"""OS tuning: turn the role's variables into live kernel writes, and explain the result.

Pure functions; the os_tuning role calls them through the `llmhost` filter plugin and
hands their output to the kernel_values module, which runs on the host.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"

REASONS: dict[str, str] = {
    "missing": "this kernel has no such setting",
    "read-only": "read-only here (a container's /sys or a non-namespaced sysctl); "
    "the persistent file applies it at boot on a VM or bare metal",
    "denied": "the kernel refused the write (not namespaced in a container)",
    "unsupported": "value not offered by this kernel",
    "mismatch": "written, but the kernel reports another value",
}
OK_STATUSES = frozenset({"already", "applied", "would apply"})


def sysctl_path(key: str) -> str:
    """net.core.somaxconn -> /proc/sys/net/core/somaxconn"""
    if not key or key.startswith(".") or ".." in key or "/" in key:
        raise ValueError(f"not a sysctl key: {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def sysctl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return " ".join(str(value).split())


def merge_sysctl(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, str]:
    """The user's keys win; the result is sorted so the file is stable."""
    merged = {**defaults, **overrides}
    return {k: sysctl_value(merged[k]) for k in sorted(merged)}


def sysctl_items(values: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "path": sysctl_path(k), "value": sysctl_value(v)} for k, v in values.items()]


def sysfs_items(
    thp_enabled: bool,
    thp_mode: str,
    thp_defrag: str,
    governor_enabled: bool,
    governor: str,
    cpufreq_present: bool,
) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    if thp_enabled:
        items.append({"name": "thp enabled", "path": f"{THP_DIR}/enabled", "value": thp_mode})
        items.append({"name": "thp defrag", "path": f"{THP_DIR}/defrag", "value": thp_defrag})
    if governor_enabled and cpufreq_present:
        items.append({"name": "cpu governor", "path": GOVERNOR_GLOB, "value": governor})
    return items


def iosched_items(rules: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """udev KERNEL globs are fnmatch globs, so the same glob finds /sys/block entries."""
    return [
        {"name": f"io scheduler {r['kernel']}", "path": f"/sys/block/{r['kernel']}/queue/scheduler",
         "value": r["scheduler"]}
        for r in rules
    ]


def explain(report: Iterable[Mapping[str, Any]], governor_enabled: bool, cpufreq_present: bool) -> list[str]:
    """One line per setting that is not live, with the reason; a short all-clear otherwise."""
    lines = []
    if governor_enabled and not cpufreq_present:
        lines.append("cpu governor: skipped, /sys/devices/system/cpu/cpufreq is absent "
                     "(common on cloud VMs: the hypervisor owns frequency)")
    for r in report:
        status = r.get("status", "")
        if status in OK_STATUSES:
            continue
        if status == "missing" and str(r.get("path", "")).startswith("/sys/block/"):
            continue  # no device of that class on this host: nothing to do
        lines.append(f"{r.get('name', r.get('path'))}: {status}, {REASONS.get(status, status)}")
    return lines or ["every setting is live"]

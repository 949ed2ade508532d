"""What an emulated arm64 host shows as its CPU: a C4A-standard-32 (Neoverse V2)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .common import CACHE

# The /proc/cpuinfo of a C4A-standard-32 that llmhost ships (the plan's unit tests use it too).
NEOVERSE_V2_CPUINFO = Path(__file__).resolve().parents[2] / "src/llmhost/data/cpuinfo-neoverse-v2.txt"


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

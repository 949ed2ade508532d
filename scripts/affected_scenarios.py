#!/usr/bin/env python3
"""The scenarios a change touches, to run before submitting (`make scenario S=NAME` each).

    scripts/affected_scenarios.py                 files changed against origin/main (or HEAD), committed or not
    scripts/affected_scenarios.py --base REF      against REF
    scripts/affected_scenarios.py PATH...         for these paths
    scripts/affected_scenarios.py --list          every scenario name

`make check` covers every change; this names the slow scenarios on top. The
table below is also what docs/testing.md shows as "which paths each scenario covers".
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys

# What any deploying scenario runs: the play, its roles, the Python behind them, the harness.
_DEPLOY = ["site.yml", "playbooks/*", "ansible.cfg", "src/llmhost/*", "collections/*",
           "scripts/testhost.py", "scripts/testhosts/*", "scripts/testhost_files/*", "molecule/shared/*", "requirements-dev.txt",
           "pyproject.toml", "scripts/bootstrap", "scripts/build-model", "scripts/build_model.py"]
_ROLES_ALL = ["roles/*"]

SCENARIOS: dict[str, list[str]] = {
    # the main job: every role, two generating experts and the embedder, the disruptive paths
    "site": _DEPLOY + _ROLES_ALL + ["molecule/site/*", "inventories/local/*"],
    # inventories/production linked unchanged: every role, the production inventory
    "production": _DEPLOY + _ROLES_ALL + ["molecule/production/*", "inventories/production/*"],
    # two hosts, canary batches, the revert on a failed gate
    "fleet": _DEPLOY + ["roles/llmhost_plan/*", "roles/vllm_install/*", "roles/vllm_experts/*",
                        "roles/frontdoor/*", "roles/smoke_test/*", "molecule/fleet/*"],
    "os_tuning": ["roles/os_tuning/*", "playbooks/tune.yml", "src/llmhost/tuning.py",
                  "collections/*", "molecule/os_tuning/*", "molecule/shared/*",
                  "scripts/testhost.py", "scripts/testhosts/*", "scripts/testhost_files/*"],
    # check mode of site.yml and the install refusal on an arm64 host under qemu-user
    "arm64": _DEPLOY + _ROLES_ALL + ["tests/integration/test_arm64.py"],
    # os_tuning in a QEMU VM, values proven after a reboot
    "vm_reboot": ["roles/os_tuning/*", "playbooks/tune.yml", "src/llmhost/tuning.py", "collections/*",
                  "scripts/vm_reboot_test.py", "tests/integration/test_vm_reboot.py"],
}
# In `make test` (the others run in `make test-all`).
IN_MAKE_TEST = ("site", "production")


def affected(paths: list[str]) -> list[str]:
    return [name for name, globs in SCENARIOS.items()
            if any(fnmatch.fnmatch(p, g) for p in paths for g in globs)]


def changed_files(base: str | None) -> list[str]:
    def git(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *a], capture_output=True, text=True, check=False)

    if base is None:
        base = "origin/main" if git("rev-parse", "--verify", "-q", "origin/main").returncode == 0 else "HEAD"
    r = git("diff", "--name-only", base)
    if r.returncode != 0:
        sys.exit(f"affected-scenarios: git diff {base} failed: {r.stderr.strip()}")
    untracked = git("ls-files", "--others", "--exclude-standard").stdout.split()
    return sorted(set(r.stdout.split()) | set(untracked))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--base")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        print("\n".join(SCENARIOS))
        return 0
    paths = a.paths or changed_files(a.base)
    names = affected(paths)
    if not names:
        print("no scenario touched: make check is enough")
    for n in names:
        where = "make test" if n in IN_MAKE_TEST else "make test-all"
        print(f"{n:<10} make scenario S={n}   (also in {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

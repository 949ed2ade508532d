"""The test tiers and the map of which scenario a change touches (scripts/affected_scenarios.py)."""

import fnmatch
import subprocess
import sys
from pathlib import Path

import affected_scenarios as aff

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_has_paths_and_every_molecule_scenario_is_named():
    molecule = {p.parent.name for p in ROOT.glob("molecule/*/molecule.yml")}
    assert molecule <= set(aff.SCENARIOS), "a new Molecule scenario needs its paths in affected_scenarios.py"
    assert set(aff.IN_MAKE_TEST) <= molecule
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "scripts").iterdir()]  # new files not yet added
    for name, globs in aff.SCENARIOS.items():
        stale = [g for g in globs if not any(fnmatch.fnmatch(f, g) for f in files)]
        assert stale == [], f"{name}: no file matches {stale}"


def test_a_change_names_the_scenarios_it_touches():
    assert aff.affected(["docs/testing.md", "tests/unit/test_plan.py"]) == []
    assert set(aff.affected(["roles/os_tuning/tasks/sysctl.yml"])) == {"site", "production", "os_tuning", "arm64",
                                                                       "vm_reboot"}
    assert set(aff.affected(["roles/vllm_experts/tasks/main.yml"])) == {"site", "production", "fleet", "arm64"}
    assert aff.affected(["inventories/production/host_vars/models-europe.yml"]) == ["production"]
    assert aff.affected(["molecule/fleet/tests/test_fleet.py"]) == ["fleet"]


def test_unknown_scenario_is_refused_in_one_line():
    r = subprocess.run([str(ROOT / "scripts/test"), "scenario", "nope"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stdout.strip().count("\n") == 0 and "unknown scenario 'nope'" in r.stdout, r.stdout


def test_the_list_is_the_table():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/affected_scenarios.py"), "--list"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == list(aff.SCENARIOS)

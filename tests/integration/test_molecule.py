"""Each Molecule scenario end to end: create -> converge -> idempotence -> verify -> destroy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from affected_scenarios import IN_MAKE_TEST  # scripts/: site and production (full tests deselected)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [pytest.param(name, marks=[pytest.mark.model] if name in IN_MAKE_TEST else [pytest.mark.full])
             for name in sorted(p.parent.name for p in ROOT.glob("molecule/*/molecule.yml"))]
pytestmark = pytest.mark.testhost


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    # Kept after the run (reports/ is not versioned): the tests print their figures
    # (bench agreement, lazy start time, exposure score) into it.
    (ROOT / "reports").mkdir(exist_ok=True)
    log = ROOT / "reports" / f"molecule-{scenario}.log"
    with open(log, "w") as f:
        r = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env,
                           stdout=f, stderr=subprocess.STDOUT, check=False)
    text = log.read_text()
    assert r.returncode == 0, f"molecule test -s {scenario} failed; tail of log:\n{text[-8000:]}"
    # The fleet scenario has no idempotence step: its last test is the re-run with
    # nothing to change, gated on both hosts (molecule/fleet/tests/test_fleet.py).
    sequence = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())["scenario"]["test_sequence"]
    if "idempotence" in sequence:
        assert "idempotence: Executed: Successful" in text
    assert "verify: Executed: Successful" in text

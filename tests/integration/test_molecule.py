"""Each Molecule scenario end to end: create -> converge -> idempotence -> verify -> destroy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in ROOT.glob("molecule/*/molecule.yml"))
pytestmark = pytest.mark.testhost


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    log = tmp_path / f"molecule-{scenario}.log"
    with open(log, "w") as f:
        r = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env,
                           stdout=f, stderr=subprocess.STDOUT, check=False)
    text = log.read_text()
    assert r.returncode == 0, f"molecule test -s {scenario} failed; tail of log:\n{text[-8000:]}"
    assert "idempotence: Executed: Successful" in text

"""The expert unit template, rendered by Ansible for a generate and a pooling expert."""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_routing import plan as routed_plan  # noqa: E402  (general, coder and the pooling router)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_a_pooling_expert_gets_the_embedding_readiness_gate(tmp_path):
    plan = routed_plan().to_dict()
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"plan": plan, "out": str(tmp_path), "ansible_python_interpreter": sys.executable}))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-units.yml",
                        "-e", f"@{ev}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-3000:]
    post = {e: [ln for ln in (tmp_path / f"{e}.service").read_text().splitlines() if ln.startswith("ExecStartPost=")]
            for e in ("general", "router")}
    assert post["router"][0].endswith(" --pooling") and "--pooling" not in post["general"][0]
    assert "--runner pooling" in (tmp_path / "router.service").read_text()

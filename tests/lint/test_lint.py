"""yamllint and ansible-lint (production profile) over the whole repository."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_yamllint():
    r = run([str(BIN / "yamllint"), "-s", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_ansible_lint_production_profile():
    r = run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]


def test_templates_start_with_ansible_managed():
    bad = [str(p.relative_to(ROOT)) for p in ROOT.glob("roles/*/templates/**/*.j2")
           if not p.read_text().startswith("{{ ansible_managed | comment")]
    assert not bad, f"templates must start with {{{{ ansible_managed | comment }}}}: {bad}"


def test_role_readmes_are_generated_from_their_argument_specs():
    r = run([sys.executable, "scripts/role_docs.py", "--check"])
    assert r.returncode == 0, r.stdout + r.stderr
    for readme in sorted((ROOT / "roles").glob("*/README.md")):
        text = readme.read_text()
        assert "## Exports" in text and "TODO" not in text, f"{readme}: write its Exports section"

"""Every tag the docs advertise selects tasks of its own: `--list-tasks --tags X`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "roles").glob("*/README.md")),
        *sorted((ROOT / "playbooks").glob("*.yml")), ROOT / "site.yml"]


def advertised_tags() -> list[str]:
    tags: set[str] = set()
    for f in DOCS:
        text = f.read_text()
        for m in re.finditer(r"--tags[ =]([\w,-]+)", text):
            tags.update(t for t in m.group(1).split(",") if t)
        for m in re.finditer(r"^(?:#\s*)?.*\bTags: (.+)$", text, re.M):
            tags.update(re.findall(r"`?\b([a-z][a-z_]+)\b`?(?=[,.`\s(]|$)", m.group(1).split("(all)")[0] + " "
                                   + m.group(1).split("(all)")[-1]))
    return sorted(tags - {"all", "always"})


def listed(tag: str) -> list[tuple[str, set[str]]]:
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventories/local", "site.yml", "--list-tasks",
                        "--tags", tag], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = []
    for line in r.stdout.splitlines():
        m = re.match(r"^\s{6}(.+?)\tTAGS: \[(.*)\]$", line)
        if m:
            out.append((m.group(1), {t.strip() for t in m.group(2).split(",")}))
    return out


def test_the_docs_advertise_the_stage_and_os_tuning_tags():
    tags = advertised_tags()
    assert {"tune", "sysctl", "governor", "iosched", "thp", "tcmalloc", "experts", "frontdoor", "monitoring",
            "install", "verify", "preflight"} <= set(tags), tags


@pytest.mark.parametrize("tag", advertised_tags())
def test_each_advertised_tag_selects_tasks_of_its_own(tag):
    tasks = listed(tag)
    own = [name for name, tags in tasks if tag in tags and "Validating arguments" not in name]
    assert own, f"--tags {tag} selects no task of its own: {tasks}"

"""Every runbook command that names a playbook, a tag or an llmhost subcommand exists."""

import re
from pathlib import Path

import yaml

from llmhost import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs/runbooks").glob("*.md"))


def known_tags():
    tags = set()
    for f in list(ROOT.glob("playbooks/*.yml")) + list(ROOT.glob("roles/*/tasks/*.yml")):
        def walk(node):
            if isinstance(node, dict):
                t = node.get("tags")
                if isinstance(t, str):
                    tags.add(t)
                elif isinstance(t, list):
                    tags.update(t)
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(yaml.safe_load(f.read_text()))
    return tags


def subcommands():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main(["--help"])
    return set(re.findall(r"\{([a-z,-]+)\}", out.getvalue())[0].split(","))


def test_there_are_runbooks_for_daily_tasks():
    names = {p.stem for p in PAGES}
    assert {"add-remove-expert", "change-profile", "migrate-legacy", "read-smoke-report", "rollback"} <= names


def test_runbook_commands_exist():
    tags, subs = known_tags(), subcommands()
    problems = []
    for page in PAGES:
        text = page.read_text()
        for pb in re.findall(r"(playbooks/[a-z_-]+\.yml|site\.yml)", text):
            if not (ROOT / pb).exists():
                problems.append(f"{page.name}: {pb} does not exist")
        for group in re.findall(r"--tags ([a-z_,]+)", text):
            for tag in group.split(","):
                if tag not in tags:
                    problems.append(f"{page.name}: tag {tag} does not exist")
        for sub in re.findall(r"\bllmhost ([a-z][a-z-]+)", text):
            if sub not in subs:
                problems.append(f"{page.name}: llmhost {sub} does not exist")
        for link in re.findall(r"\]\(([a-z-]+\.md)\)", text):
            if not (page.parent / link).exists():
                problems.append(f"{page.name}: link {link} is broken")
    assert not problems, problems
    assert subs >= {"plan", "import-legacy", "smoke"}

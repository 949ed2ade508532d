"""Tags proven by running, not by listing: every tag the docs advertise, run alone
as `ansible-playbook site.yml --check --tags TAG` against the deployed host, ends
with exit 0 and no failed task (`--tags thp` once failed on a fact that only
`--tags governor` made). The static half, every fact made under each tag that
reads it, is tests/lint/test_tags.py; that file's list of advertised tags is the
one run here.

Marked `full` (`make test-all`): about a minute per tag on a shared 2-core machine
(verify runs the smoke test for real; see docs/testing.md for the measured total)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from llmhost import runner

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def lint_tags():
    spec = importlib.util.spec_from_file_location("lint_test_tags", PROJECT / "tests/lint/test_tags.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


LINT = lint_tags()
TAGS = LINT.advertised_tags()
# per tag, the names (up to any template) of the site's tasks that carry it
CARRY = {tag: {t.name.split("{{")[0].strip() for t in LINT.Walk(PROJECT).playbook(PROJECT / "site.yml")
               if tag in t.tags} for tag in TAGS}


def test_the_os_tuning_and_stage_tags_are_all_run():
    assert {"tune", "sysctl", "governor", "iosched", "thp", "tcmalloc", "install", "experts", "frontdoor",
            "monitoring", "verify", "preflight"} <= set(TAGS), TAGS


@pytest.mark.full
@pytest.mark.parametrize("tag", TAGS)
def test_each_advertised_tag_runs_alone_in_check_mode(tag):
    r = runner.run_playbook(["site.yml"], os.environ["MOLECULE_INVENTORY_FILE"], args=["--check", "--tags", tag],
                            envvars=runner.molecule_envvars())
    assert r.rc == 0 and not any(r.failed.values()), f"--tags {tag}: exit {r.rc}\n{r.stdout[-3000:]}"
    # the tag's own tasks were reached (run or skipped by their conditions), not only the always ones
    reached = {str(e["event_data"].get("task", "")).split("{{")[0].strip() for e in r.events
               if e.get("event") in ("runner_on_ok", "runner_on_skipped")}
    own = {name for name in reached if any(name.startswith(c) for c in CARRY[tag] if c)}
    assert own, f"--tags {tag} reached none of its own tasks ({sorted(CARRY[tag])[:5]} ...)"
    print(f"--tags {tag}: {r.seconds:.0f} s, {len(own)} of its own tasks reached")

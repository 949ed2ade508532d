"""Every tag the docs advertise selects tasks of its own: `--list-tasks --tags X`;
and every fact a task reads (a `register` or `set_fact` of another task) is made
by a task that runs whenever the reader runs: it carries each of the reader's tags,
or `always`. The live proof, each advertised tag run in check mode on a deployed
host, is molecule/site/tests/test_0_tags.py."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

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


# --- static: facts are made by tasks of all the reader's tags ---------------------------------

INCLUDE_TASKS = ("include_tasks", "ansible.builtin.include_tasks")
IMPORT_TASKS = ("import_tasks", "ansible.builtin.import_tasks")
INCLUDE_ROLE = ("include_role", "ansible.builtin.include_role")
IMPORT_ROLE = ("import_role", "ansible.builtin.import_role")
IMPORT_PLAYBOOK = ("import_playbook", "ansible.builtin.import_playbook")
SET_FACT = ("set_fact", "ansible.builtin.set_fact")


@dataclass
class Task:
    where: str
    name: str
    tags: frozenset[str]
    body: dict[str, Any]
    order: int
    scope: frozenset[str]     # names set by `vars:` or a loop_var of the task or an enclosing include
    role: str | None
    produces: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if isinstance(self.body.get("register"), str):
            self.produces.add(self.body["register"])
        for k in SET_FACT:
            if isinstance(self.body.get(k), dict):
                self.produces |= {n for n in self.body[k] if n != "cacheable"}


def _tags(d: dict[str, Any]) -> set[str]:
    t = d.get("tags") or []
    return {t} if isinstance(t, str) else set(t)


def _scope(d: dict[str, Any]) -> set[str]:
    names = set((d.get("vars") or {}).keys())
    names.add((d.get("loop_control") or {}).get("loop_var", "item"))
    return names


class Walk:
    """Every task a playbook can run, in order, with the tags it runs under (Ansible's
    rules: a static import passes its tags down, a dynamic include_tasks/include_role
    only its `apply` tags; block tags pass down)."""

    def __init__(self, root: Path):
        self.root = root
        self.tasks: list[Task] = []

    def playbook(self, pb: Path) -> list[Task]:
        for play in yaml.safe_load(pb.read_text()) or []:
            imp = next((k for k in play if k in IMPORT_PLAYBOOK), None)
            if imp:
                self.playbook(pb.parent / play[imp])
                continue
            ptags = frozenset(_tags(play))
            pscope = frozenset((play.get("vars") or {}).keys())
            self.task_list(play.get("pre_tasks"), ptags, pscope, pb, None, frozenset())
            for r in play.get("roles") or []:
                r = {"role": r} if isinstance(r, str) else r
                self.role(r.get("role") or r.get("name"), "main", ptags | _tags(r),
                          pscope | set((r.get("vars") or {}).keys()), frozenset())
            for sect in ("tasks", "post_tasks"):
                self.task_list(play.get(sect), ptags, pscope, pb, None, frozenset())
        return self.tasks

    def role(self, name: str, tasks_from: str, tags: frozenset[str], scope: frozenset[str],
             stack: frozenset[Path]) -> None:
        f = self.root / "roles" / name / "tasks" / (tasks_from if tasks_from.endswith(".yml") else f"{tasks_from}.yml")
        if f not in stack:
            self.task_list(yaml.safe_load(f.read_text()), tags, scope, f, name, stack | {f})

    def task_list(self, items: Any, tags: frozenset[str], scope: frozenset[str], path: Path, role: str | None,
                  stack: frozenset[Path]) -> None:
        for d in items or []:
            if not isinstance(d, dict):
                continue
            own, own_scope = tags | _tags(d), scope | _scope(d)
            if "block" in d:
                for sect in ("block", "rescue", "always"):
                    self.task_list(d.get(sect), own, own_scope, path, role, stack)
                continue
            self.tasks.append(Task(str(path.relative_to(self.root)), str(d.get("name", "?")), own, d,
                                   len(self.tasks), own_scope, role))
            mod = next((k for k in d if k in INCLUDE_TASKS + IMPORT_TASKS + INCLUDE_ROLE + IMPORT_ROLE), None)
            if mod is None:
                continue
            arg = d[mod] if isinstance(d[mod], dict) else {"file": d[mod]}
            inner = own if mod in IMPORT_TASKS + IMPORT_ROLE else tags | _tags(arg.get("apply") or {})
            if mod in INCLUDE_TASKS + IMPORT_TASKS:
                target = path.parent / arg["file"]
                if target not in stack:
                    self.task_list(yaml.safe_load(target.read_text()), inner, own_scope, target, role,
                                   stack | {target})
                continue
            names = [arg["name"]]
            if "{{" in arg["name"]:   # include_role over a literal loop of role names
                var = (d.get("loop_control") or {}).get("loop_var", "item")
                loop = d.get("loop") if isinstance(d.get("loop"), list) else []
                names = [re.sub(r"\{\{\s*" + re.escape(var) + r"\s*\}\}", str(n), arg["name"]) for n in loop]
            for n in names:
                self.role(n, str(arg.get("tasks_from", "main")), inner, own_scope, stack)


def role_vars(root: Path, role: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in ("defaults/main.yml", "vars/main.yml"):
        p = root / "roles" / str(role) / f
        if role and p.exists():
            out.update(yaml.safe_load(p.read_text()) or {})
    return out


def reads(root: Path, t: Task) -> str:
    """What a task reads: its own text (name included: it is templated) and, through
    them, the text of the role's variables it names (lazily templated, so what they
    name is read when the task runs)."""
    text = yaml.safe_dump({k: v for k, v in t.body.items() if k not in ("register", "tags")}, width=100_000)
    rv = role_vars(root, t.role)
    todo, seen = [text], set()
    while todo:
        cur = todo.pop()
        for name, val in rv.items():
            if name not in seen and re.search(rf"\b{re.escape(name)}\b", cur):
                seen.add(name)
                more = yaml.safe_dump({name: val}, width=100_000)
                text += "\n" + more
                todo.append(more)
    return text


def guarded(text: str, v: str) -> bool:
    """Every read of v has a default, or the task asks whether v is defined."""
    if re.search(rf"\b{re.escape(v)}\b(\.\w+|\[[^\]]*\])*\s+is\s+(not\s+)?defined", text):
        return True
    return all(re.match(rf"{re.escape(v)}(\.\w+|\[[^\]]*\])*\s*\|\s*(default|d)\b", text[m.start():])
               for m in re.finditer(rf"\b{re.escape(v)}\b", text))


def fact_tag_gaps(root: Path, playbook: Path) -> list[str]:
    """One line per (task, tag, fact) where `--tags TAG` runs a task that reads a fact
    no earlier task made under that tag (nor an `always` one)."""
    tasks = Walk(root).playbook(playbook)
    made: dict[str, list[Task]] = {}
    for t in tasks:
        for v in t.produces:
            made.setdefault(v, []).append(t)
    gaps = []
    for c in tasks:
        if not c.tags:
            continue
        text = reads(root, c)
        for v, producers in made.items():
            if v in c.produces or v in c.scope or not re.search(rf"\b{re.escape(v)}\b", text) or guarded(text, v):
                continue
            earlier = [p for p in producers if p.order < c.order]
            for tag in sorted({"always"} if "always" in c.tags else c.tags):
                if not any(tag in p.tags or "always" in p.tags for p in earlier):
                    made_by = "; ".join(f"'{p.name}' {sorted(p.tags)}" for p in producers)
                    gaps.append(f"{c.where}: '{c.name}' runs with --tags {tag} and reads {v}, "
                                f"made only by {made_by}")
    return gaps


PLAYBOOKS = ["site.yml", *sorted(f"playbooks/{p.name}" for p in (ROOT / "playbooks").glob("*.yml"))]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_fact_a_task_reads_is_made_under_each_of_its_tags(playbook):
    assert fact_tag_gaps(ROOT, ROOT / playbook) == []


def test_the_walk_sees_the_roles_and_their_facts():
    tasks = Walk(ROOT).playbook(ROOT / "site.yml")
    by_name = {t.name: t for t in tasks}
    assert {"governor", "thp", "tune"} <= by_name["Look for cpufreq"].tags
    assert "__os_tuning_cpufreq" in by_name["Look for cpufreq"].produces
    assert {"preflight", "always"} <= next(t for t in tasks if "llmhost_plan_host" in t.produces).tags
    assert any(t.where == "roles/vllm_experts/tasks/restore.yml" and "verify" in t.tags for t in tasks)


def test_the_check_finds_a_fact_made_under_fewer_tags(tmp_path):
    (tmp_path / "roles/r/tasks").mkdir(parents=True)
    (tmp_path / "roles/r/vars").mkdir()
    (tmp_path / "roles/r/vars/main.yml").write_text("__r_derived: \"{{ __r_probe.stat.exists }}\"\n")
    (tmp_path / "roles/r/tasks/main.yml").write_text("""
- name: Probe
  tags: [a]
  ansible.builtin.stat: {path: /x}
  register: __r_probe
- name: Uses it under a and b
  tags: [a, b]
  ansible.builtin.debug: {msg: "{{ __r_probe.stat.exists }}"}
- name: Uses it through a role variable under c
  tags: [c]
  ansible.builtin.debug: {msg: "{{ __r_derived }}"}
- name: Reads it with a default under d
  tags: [d]
  ansible.builtin.debug: {msg: "{{ __r_probe.stat | default({}) }}"}
- name: Asks first under e
  tags: [e]
  when: __r_probe is defined and __r_probe.stat.exists
  ansible.builtin.debug: {msg: ok}
- name: Runs always
  tags: [always]
  ansible.builtin.debug: {msg: "{{ __r_probe.stat.exists }}"}
""")
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [{role: r, tags: [stage]}]\n")
    gaps = fact_tag_gaps(tmp_path, tmp_path / "site.yml")
    assert [(g.split("'")[1], g.split("--tags ")[1].split()[0]) for g in gaps] == [
        ("Uses it under a and b", "b"), ("Uses it through a role variable under c", "c"), ("Runs always", "always")]

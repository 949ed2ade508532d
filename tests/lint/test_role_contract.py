"""The contract between roles: each reads its own variables, the plan, and the shared
inputs declared once in the llmhost_plan role; never another role's variables.

A role's variables start with its name (`frontdoor_port`), private ones with
`__<role>_`. The plan reaches a role as `<role>_plan: "{{ llmhost_plan_host }}"`.
Shared inputs are `llmhost_*` names declared in roles/llmhost_plan/meta/argument_specs.yml
(or resolved into the plan's "shared" section).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta/argument_specs.yml").exists())
# Names that look like variables but are not: HAProxy ACLs, metric names in rules and templates.
NOT_VARIABLES = re.compile(r"^llmhost_(key_ok|routed|probe|probe_\w+|plan|route|route_\w+_total|route_embed_seconds)$|^frontdoor_(errors|responses|routing)$")
COMMENT = re.compile(r"^[ \t]*#[^\n]*|\{#.*?#\}", re.M | re.S)
MAPPING_KEY = re.compile(r"^[ \t]+[a-z_]+:", re.M)   # keys of a mapping value, e.g. the plan's shared fields
PLAN_FACT = "llmhost_plan_host"


def shared_inputs() -> set[str]:
    spec = yaml.safe_load((ROOT / "roles/llmhost_plan/meta/argument_specs.yml").read_text())
    opts = spec["argument_specs"]["main"]["options"]
    names = {k for k in opts if not k.startswith("llmhost_plan_")}
    for k in opts["llmhost_plan_shared"]["options"]:
        names.add(f"llmhost_{k}")
    # the plan role's own inputs come from these inventory names
    text = (ROOT / "roles/llmhost_plan/defaults/main.yml").read_text()
    names |= set(re.findall(r"\b(llmhost_(?!plan_)\w+)\s*\|", text))
    return names


def reads(role: str) -> list[tuple[str, str]]:
    """(file, name) for every variable-like name of another role or an undeclared llmhost_ name."""
    out = []
    others = [r for r in ROLES if r != role]
    shared = shared_inputs()
    for f in sorted((ROOT / "roles" / role).rglob("*")):
        if not f.is_file() or "meta" in f.parts or f.suffix not in (".yml", ".j2") or f.name == "README.md":
            continue
        text = MAPPING_KEY.sub(" ", COMMENT.sub(" ", f.read_text()))
        for name in sorted(set(re.findall(r"(?<![\w.$-])_{0,2}[a-z][a-z0-9_]*", text))):
            bare = name.lstrip("_")
            if NOT_VARIABLES.match(bare) or bare == PLAN_FACT:
                continue
            if any(bare.startswith(o + "_") and not bare.startswith(role + "_") for o in others):
                out.append((str(f.relative_to(ROOT)), name))
            elif bare.startswith("llmhost_") and role != "llmhost_plan" and bare not in shared:
                out.append((str(f.relative_to(ROOT)), name))
    return out


def test_no_role_reads_another_roles_variables():
    found = {r: reads(r) for r in ROLES}
    bad = {r: v for r, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1)


def test_the_plan_reaches_each_role_through_one_variable():
    for role in ROLES:
        if role in ("llmhost_plan", "os_tuning"):
            continue
        if role == "fleetdoor":
            # it fronts other hosts: their plans, read from their hostvars by one filter
            # (llmhost.toolkit.fleet_members), never its own host's
            assert "llmhost.toolkit.fleet_members(hostvars)" in (ROOT / "roles/fleetdoor/vars/main.yml").read_text()
            assert not [f for f in (ROOT / "roles/fleetdoor").rglob("*.yml") if PLAN_FACT in f.read_text()]
            continue
        defaults = (ROOT / "roles" / role / "defaults/main.yml").read_text()
        assert f'{role}_plan: "{{{{ {PLAN_FACT} }}}}"' in defaults, role
        elsewhere = [f for f in (ROOT / "roles" / role).rglob("*.yml") if PLAN_FACT in f.read_text()
                     and f.parts[-2:] != ("defaults", "main.yml") and "meta" not in f.parts]
        assert not elsewhere, elsewhere


def test_no_role_default_names_another_roles_prefix():
    for role in ROLES:
        text = MAPPING_KEY.sub(" ", COMMENT.sub(" ", (ROOT / "roles" / role / "defaults/main.yml").read_text()))
        for other in ROLES:
            if other != role and not (role == "llmhost_plan" and other == "llmhost_plan"):
                hits = [m for m in re.findall(rf"(?<![\w.])_{{0,2}}{other}_\w+", text)
                        if m.lstrip("_") != PLAN_FACT and not m.lstrip("_").startswith(role + "_")]
                assert not hits, f"roles/{role}/defaults/main.yml reads {hits}"


EXPORTS = {"llmhost_plan_host", "os_tuning_report", "vllm_install_capabilities"}


def test_private_names_carry_the_double_underscore_prefix():
    """Registered results, set_fact names and vars/main.yml keys are private (`__<role>_*`),
    except the few a role exports (its README's Exports section names them)."""
    bad = []
    for role in ROLES:
        base = ROOT / "roles" / role
        vars_file = base / "vars/main.yml"
        keys = list((yaml.safe_load(vars_file.read_text()) or {}).keys()) if vars_file.exists() else []
        for f in sorted((base / "tasks").glob("*.yml")):
            for task in _tasks(yaml.safe_load(f.read_text()) or []):
                if "register" in task:
                    keys.append(task["register"])
                fact = task.get("ansible.builtin.set_fact")
                if isinstance(fact, dict):
                    keys += [k for k in fact if k != "cacheable"]
        for k in keys:
            if k not in EXPORTS and not k.startswith(f"__{role}_"):
                bad.append(f"roles/{role}: {k}")
    assert not bad, bad


def _tasks(items):
    for t in items:
        if not isinstance(t, dict):
            continue
        yield t
        for key in ("block", "rescue", "always"):
            yield from _tasks(t.get(key) or [])

"""Thin Jinja filters over the llmhost package (the logic and its tests live there)."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from llmhost import tuning
from llmhost.experts import ConfigError
from llmhost import apikeys, capabilities, fleetdoor, frontdoor, inputs, install, routing, systemd, translate
from llmhost import host as host_mod
from llmhost import staging as staging_mod
from llmhost.cli import saved_capabilities
from llmhost import hostprofile
from llmhost.model_files import find_results_bytes, float_sources, local_shapes
from llmhost.plan import (DEFAULT_START_BUDGET_S, GIB, alert_budgets, build_plan, default_reserved, effective_config,
                          parse_shared)
from llmhost.plan_text import summary


def torch_source(arch: str, torch_spec: str, find_results: list, uri_results: list) -> dict:
    """Adapter: Ansible find/uri loop results -> llmhost.install.torch_source."""
    links = {r["item"]: [f["path"].rsplit("/", 1)[-1] for f in r.get("files", [])]
             for r in find_results or [] if not r.get("skipped")}
    idx = {r["item"]: (r.get("content") if r.get("status") == 200 else None)
           for r in uri_results or [] if not r.get("skipped")}
    return install.torch_source(arch, torch_spec, links, idx)


def probe_script(_: Any = None) -> str:
    """Path of the capabilities probe, shipped to hosts by ansible.builtin.script."""
    return capabilities.__file__


def frontdoor_exposure(bind: str, port: Any, api_keys: Any, allow_anonymous: Any, tls_cert: Any = None,
                       role: str = "frontdoor") -> list:
    """Adapter: the frontdoor (or fleetdoor) role's variables -> llmhost.frontdoor.exposure_problems."""
    return frontdoor.exposure_problems(str(bind), int(port), list(api_keys or []), bool(allow_anonymous),
                                       tls_cert or None, role)


def staged(experts: Any, staging: Any = None) -> Any:
    """Adapter: llmhost.staging.apply, a bad override fails the task with every problem."""
    try:
        return staging_mod.apply(experts, staging)
    except ConfigError as e:
        raise AnsibleFilterError("the staging overrides cannot work:\n  " + "\n  ".join(e.problems)) from None


def admit_script(_: Any = None) -> str:
    """The lazy experts' admission gate (stdlib only), shipped to hosts as a script."""
    from llmhost import admit  # noqa: PLC0415

    return admit.__file__


def launch_script(_: Any = None) -> str:
    """The experts' start (vLLM's server with its processes forked), shipped as a script."""
    from llmhost import launch  # noqa: PLC0415

    return launch.__file__


def admission(plan: dict) -> dict:
    """What the admission gate needs: ids, preload, pinned, planned memory, evict cost,
    the memory budget and max_loaded_experts (no paths, no argv). The lazy experts'
    standbys are resident all the time: the gate's budget is what they leave, and a
    lazy expert weighs what its server adds to its standby."""
    return {"managed_by": "llmhost",
            "experts": [{"expert_id": e["expert_id"], "preload": e["preload"], "pinned": e.get("pinned"),
                         "memory_gib": round(e["memory_gib"] - e.get("standby_gib", 0), 2),
                         "evict_cost": e.get("evict_cost")} for e in plan["experts"]],
            "lazy_loading": {"max_loaded_experts": plan["lazy_loading"]["max_loaded_experts"],
                             "memory_budget_gib": round(plan["budget_gib"] - plan.get("standby_gib", 0), 2)}}


def probe_files(_: Any = None) -> list:
    """The stdlib-only modules the host's probe timer runs (python3 -m llmhost.probe)."""
    import os  # noqa: PLC0415

    import llmhost  # noqa: PLC0415

    d = os.path.dirname(llmhost.__file__)
    return [os.path.join(d, f) for f in ("__init__.py", "probe.py", "coherence.py", "stream.py", "reference.py", "numerics.py")]


def route_centroids(section: dict, response: Any) -> dict:
    """Adapter: the embedder's JSON answer -> the centroids file (a one-line error otherwise)."""
    try:
        return routing.centroids_file(section, response if isinstance(response, dict) else {})
    except (ValueError, KeyError, TypeError) as e:
        raise AnsibleFilterError(f"route centroids: {e}") from None


def route_centroids_stale(section: dict, slurp_result: Any) -> bool:
    """Adapter: an Ansible slurp of the host's centroids file -> does it need recomputing?"""
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415

    try:
        have = json.loads(base64.b64decode((slurp_result or {}).get("content") or ""))
    except ValueError:
        return True
    return not isinstance(have, dict) or have.get("inputs_sha256") != section.get("inputs_sha256")


def preload_env(stat_results: list, tcmalloc: bool, iomp: bool, arch: str) -> dict:
    """Adapter: an Ansible stat loop -> llmhost.systemd.preload_env."""
    found = [r["item"] for r in stat_results or [] if r.get("stat", {}).get("exists")]
    return systemd.preload_env(found, tcmalloc=bool(tcmalloc), iomp=bool(iomp), arch=str(arch))


# The plan filter's named arguments (roles/llmhost_plan/tasks/main.yml passes each by
# name), checked like a module's: a wrong name or type fails the task in one line.
PLAN_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "lazy_loading": {"type": "raw"},                      # llmhost_lazy_loading; None: every expert preloaded
    "capabilities": {"type": "dict", "required": True},  # the vLLM build's flags and env (probe or saved file)
    "cpu": {"type": "dict", "required": True},           # the host's CPU and memory (capabilities.py --cpu-only)
    "reserved_cores": {"type": "raw"},                    # None: the default for the host size
    "weights_bytes": {"type": "dict", "default": {}},     # expert_id -> bytes of its weights on the host
    "strict": {"type": "bool", "default": False},
    "default_expert": {"type": "str"},
    "cpu_source": {"type": "str", "default": "affinity", "choices": ["affinity", "online"]},
    "host_expect": {"type": "raw"},                       # llmhost_host_expect: plan for its cpus
    "start_budget_s": {"type": "raw", "default": DEFAULT_START_BUDGET_S},
    "shared": {"type": "dict"},                           # llmhost_plan_shared
    "routing": {"type": "raw"},                           # llmhost_routing
    "host_profile": {"type": "raw"},                      # llmhost_host_profile (recorded or assumed)
    "measured_profile": {"type": "raw"},                  # an Ansible slurp of the host's measured profile
    "core_split": {"type": "str", "default": "priority"},  # llmhost_core_split: priority or budget
}


def plan(experts: Any, **kwargs: Any) -> dict:
    """The host plan as a dict; a config that cannot work fails the task with every problem.

    Adapter only: checks its named arguments (PLAN_ARGUMENT_SPEC), then llmhost.plan.build_plan."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: PLC0415

    checked = ArgumentSpecValidator(PLAN_ARGUMENT_SPEC).validate(kwargs)
    if checked.error_messages:
        raise AnsibleFilterError("llmhost.toolkit.plan: " + "; ".join(checked.error_messages))
    a = checked.validated_parameters
    host = host_mod.from_probe(a["cpu"], a["cpu_source"])
    try:
        expect = host_mod.parse_expect(a["host_expect"]).get("cpus")
    except ConfigError as e:
        raise AnsibleFilterError("the experts config cannot work:\n  " + "\n  ".join(e.problems)) from None
    reserved_cores = a["reserved_cores"]
    if reserved_cores is None or reserved_cores == "":
        reserved_cores = default_reserved(max(len(host.cpus), expect or 0))
    try:
        reserved = int(str(reserved_cores), 10)
        budget = int(str(a["start_budget_s"]), 10)
    except ValueError:
        raise AnsibleFilterError("the experts config cannot work:\n  llmhost_reserved_cores and llmhost_start_budget_s "
                                 f"are whole numbers, got {reserved_cores!r} and {a['start_budget_s']!r}") from None
    try:
        p = build_plan(experts, a["lazy_loading"], a["capabilities"], host, reserved_cores=reserved,
                       weights_bytes=a["weights_bytes"] or {}, strict=a["strict"],
                       default_expert=a["default_expert"] or None, expect_cpus=expect, start_budget_s=budget,
                       shared=parse_shared(a["shared"]), routing=a["routing"] or None,
                       host_profile=a["host_profile"] or None, measured_profile=slurped_json(a["measured_profile"]),
                       checkpoints=local_shapes(experts), float_sources=float_sources(experts),
                       core_split=a["core_split"] or "priority")
    except ConfigError as e:
        raise AnsibleFilterError("the experts config cannot work:\n  " + "\n  ".join(e.problems)) from None
    out = p.to_dict()
    out["memory_budget_bytes"] = int(p.budget_gib * GIB)
    return out


def slurped_json(result: Any) -> Any:
    """An Ansible slurp result -> its JSON, or None (no file, not JSON)."""
    import base64  # noqa: PLC0415
    import json  # noqa: PLC0415

    if not isinstance(result, dict) or not result.get("content"):
        return None
    try:
        return json.loads(base64.b64decode(result["content"]))
    except ValueError:
        return None


def shared_value(shared: Any, name: str) -> Any:
    """One resolved shared input (llmhost_plan_shared, defaults applied): for tasks that
    run before the plan exists."""
    try:
        return getattr(parse_shared(shared), name)
    except ConfigError as e:
        raise AnsibleFilterError("; ".join(e.problems)) from None


def host_profile_script(_: Any = None) -> str:
    """The host-profile measurement (stdlib + torch), shipped by ansible.builtin.script."""
    return hostprofile.__file__


def role_input_names(role: str) -> list[str]:
    """The variables a role's validate task reads and hands to role_input_problems."""
    try:
        return inputs.names(role)
    except ValueError as e:
        raise AnsibleFilterError(str(e)) from None


def fleet_members(names: Any, hostvars: Any) -> list:
    """Adapter: inventory host names -> [{name, address, plan}] from their hostvars (the
    address is ansible_host, else the name; the plan is llmhost_plan_host, None if absent)."""
    out = []
    for h in names or []:
        hv = hostvars[h]
        out.append({"name": str(h), "address": hv.get("ansible_host", str(h)), "plan": hv.get("llmhost_plan_host")})
    return out


def role_input_problems(values: Any, role: str) -> list[str]:
    """A role's inputs checked for meaning (llmhost.inputs): one line per problem."""
    if not isinstance(values, dict):
        raise AnsibleFilterError("llmhost.toolkit.role_input_problems: a mapping of the role's variables")
    return inputs.problems(role, values)


class FilterModule:
    def filters(self):
        return {
            "merge_sysctl": tuning.merge_sysctl,
            "sysctl_items": tuning.sysctl_items,
            "sysfs_items": tuning.sysfs_items,
            "iosched_items": tuning.iosched_items,
            "tuning_explain": tuning.explain,
            "plan": plan,
            "role_input_problems": role_input_problems,
            "role_input_names": role_input_names,
            "haproxy_capabilities": frontdoor.haproxy_capabilities,
            "torch_source": torch_source,
            "frontdoor_routes": frontdoor.routes,
            "frontdoor_map": frontdoor.model_map,
            "frontdoor_models": frontdoor.models_list,
            "frontdoor_default": frontdoor.default_expert,
            "frontdoor_key_files": apikeys.key_files,
            "fleet_members": fleet_members,
            "fleetdoor": fleetdoor.fleet,
            "fleetdoor_problems": fleetdoor.fleet_problems,
            "fleetdoor_key_problems": fleetdoor.key_problems,
            "fleetdoor_key_map": fleetdoor.key_map,
            "frontdoor_key_problems": apikeys.key_problems,
            "frontdoor_key_notes": apikeys.key_notes,
            "frontdoor_smoke_key": apikeys.smoke_key,
            "frontdoor_exposure": frontdoor_exposure,
            "frontdoor_port_problems": frontdoor.port_problems,
            "systemd_exec": systemd.exec_line,
            "stale_experts": systemd.stale_experts,
            "alert_budgets": alert_budgets,
            "effective_config": effective_config,
            "expert_env": systemd.expert_env,
            "expert_unit": systemd.expert_unit,
            "expert_unit_names": systemd.unit_names,
            "expert_restore": systemd.restore_spec,
            "expert_previous_unit": systemd.previous_unit,
            "live_caps_problems": translate.live_caps_problems,
            "port_holders": systemd.port_holders,
            "unit_ip_allow": systemd.ip_allow,
            "preload_env": preload_env,
            "plan_summary": summary,
            "weights_bytes": find_results_bytes,
            "saved_capabilities": saved_capabilities,
            "probe_script": probe_script,
            "probe_files": probe_files,
            "admit_script": admit_script,
            "launch_script": launch_script,
            "admission": admission,
            "staged": staged,
            "probe_output": capabilities.from_output,
            "host_profile_script": host_profile_script,
            "host_profile_output": hostprofile.from_output,
            "shared_value": shared_value,
            "route_lua_config": routing.lua_config,
            "route_embed_request": routing.embed_request,
            "route_centroids": route_centroids,
            "route_centroids_stale": route_centroids_stale,
        }

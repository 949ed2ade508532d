"""The plan's shape is the contract between the roles: pinned here.

A field added, removed or retyped fails this test; change it together with the
roles that read it and roles/*/README.md."""

from __future__ import annotations

from llmhost.cli import saved_capabilities
from llmhost.plan import GIB, Host, build_plan

TOP = {
    "experts": list, "reserved_cores": list, "budget_gib": float, "standby_gib": float, "loaded_at_once_gib": float, "memory_gib": float,
    "lazy_loading": dict, "default_expert": str, "folded": type(None), "start_budget_s": int, "shared": dict,
    "warnings": list, "routing": type(None), "host_profile": type(None), "usage_metrics_path": str,
}
SHARED = {"vllm_version": str, "venv": str, "config_dir": str, "frontdoor_port": int,
          "frontdoor_metrics_bind": str, "frontdoor_metrics_port": int, "frontdoor_metrics_exposure_note": str}
EXPERT = {
    "expert_id": str, "port": int, "backend_port": int, "domain": str, "priority": int, "profile": str,
    "model": str, "model_source": type(None), "thresholds": dict, "preload_tcmalloc": bool, "cores": list,
    "cpu_list": str, "weights_gib": float, "kv_cache_gib": float, "overhead_gib": float, "memory_gib": float,
    "memory_high_bytes": int, "memory_max_bytes": int, "preload": bool, "pinned": bool, "evict_cost": float, "standby_gib": float, "names": list, "argv": list,
    "dtype": str, "dtype_reason": str, "compile": str, "compile_reason": str, "reference": type(None), "reference_why": str, "protect_home": str,
    "bind_read_only": list, "reference_on_host": type(None), "env": dict, "report": list, "runner": str,
    "route_examples": list, "quantization": type(None), "quantization_requested": type(None),
    "quantization_reason": str, "accept_miss": type(None), "shape": dict,
    "predicted": type(None),
}
# With llmhost_routing: the front door's Lua and the centroid task read this section.
ROUTING = {"embedder": str, "embedder_port": int, "embedder_model": str, "timeout_ms": int, "default_expert": str,
           "domains": list, "max_text_bytes": int, "centroids_file": str, "config_file": str, "inputs_sha256": str,
           "metrics_path": str}


def test_the_plan_has_exactly_the_pinned_fields_and_types():
    experts = [{"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 1,
                "weights_gib": 1.0, "kv_cache_gib": 1}]
    d = build_plan(experts, None, saved_capabilities(), Host((0, 1), 24 * GIB, "x86_64", {"bf16": True})).to_dict()
    assert {k: type(v) for k, v in d.items()} == TOP
    assert {k: type(v) for k, v in d["shared"].items()} == SHARED
    assert {k: type(v) for k, v in d["experts"][0].items()} == EXPERT


def test_the_routing_section_has_exactly_the_pinned_fields():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_routing import plan as routed_plan  # general, coder and the pooling router

    d = routed_plan().to_dict()
    assert {k: type(v) for k, v in d["routing"].items()} == ROUTING

"""Decisions that used to live in Jinja, now typed functions the templates only print."""

from __future__ import annotations

import pytest

from llmhost.cli import saved_capabilities
from llmhost.frontdoor import HEALTH_CHECK, routes
from llmhost.plan import GIB, REDACTED, Host, alert_budgets, build_plan, effective_config
from llmhost.systemd import expert_env, expert_unit
from llmhost.translate import live_caps_problems

CAPS = saved_capabilities()


def plan(lazy=None):
    ex = [{"expert_id": "general", "model": "/m/a", "domain": "general", "priority": 2, "weights_gib": 1.0,
           "kv_cache_gib": 1, "thresholds": {"ttft_p95_s": 0.5}, "env": {"HF_TOKEN": "hf_secret"}},
          {"expert_id": "coder", "model": "/m/b", "domain": "code", "priority": 1, "weights_gib": 1.0,
           "kv_cache_gib": 1}]
    return build_plan(ex, lazy, CAPS, Host((0, 1), 24 * GIB, "x86_64", {"bf16": True})).to_dict()


def test_routes_apply_overrides_and_leave_lazy_experts_unchecked():
    lazy = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "auto_unload_after_s": 60}
    r = {x["expert_id"]: x for x in routes(plan(lazy), {"coder": 2}, {})}
    assert r["general"]["server_options"] == f"maxconn 8 maxqueue 32 {HEALTH_CHECK}"
    assert r["coder"]["server_options"] == "maxconn 2 maxqueue 8"
    with pytest.raises(ValueError, match="frontdoor_maxconn_overrides: 'nope' is not an expert"):
        routes(plan(), {"nope": 2})
    with pytest.raises(ValueError, match="frontdoor_maxqueue_overrides.coder: a whole number >= 1"):
        routes(plan(), {}, {"coder": 0})


def test_alert_budgets_take_the_experts_own_thresholds_first():
    b = {x["expert_id"]: x for x in alert_budgets(plan(), {"ttft_p95_s": 0.6, "tbt_p95_s": 0.06})}
    assert b["general"] == {"expert_id": "general", "ttft_p95_s": 0.5, "tbt_p95_s": 0.06}
    assert b["coder"]["ttft_p95_s"] == 0.6


def test_extra_env_cannot_change_what_the_plan_decided():
    env = plan()["experts"][0]["env"]
    text = expert_env(env, {"HF_HOME": "/srv/hf"}, {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}, "general")
    assert 'HF_HOME="/srv/hf"' in text and 'VLLM_CPU_OMP_THREADS_BIND="0"' in text and "LD_PRELOAD" in text
    with pytest.raises(ValueError, match="VLLM_CPU_OMP_THREADS_BIND is decided by the plan for expert 'general'"):
        expert_env(env, {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, {}, "general")


def test_unit_numbers_follow_the_start_budget():
    u = expert_unit("general", "900", 5, 5, "llmhost")
    assert (u["timeout_start_s"], u["ready_timeout_s"], u["proxy_timeout_start_s"]) == (900, 870, 960)
    assert u["start_limit_interval_s"] == 5 * 905 and "HOME=/var/lib/llmhost/general" in u["environment"]
    assert "HF_HUB_OFFLINE=1" in u["environment"]


def test_experts_json_is_the_plan_with_secrets_redacted():
    cfg = effective_config(plan())
    assert cfg["managed_by"] == "llmhost" and cfg["experts"][0]["env"]["HF_TOKEN"] == REDACTED
    assert "hf_secret" not in str(cfg)


def test_the_installed_vllm_is_checked_against_what_the_plan_decided():
    p = plan()
    assert live_caps_problems(CAPS, p["experts"]) == []
    live = {**CAPS, "flags": {k: v for k, v in CAPS["flags"].items() if k != "max_num_seqs"}}
    assert any("has no --max-num-seqs" in x for x in live_caps_problems(live, p["experts"]))
    assert any("VLLM_CPU_KVCACHE_SPACE" in x for x in live_caps_problems({**CAPS, "cpu_env_vars": []}, p["experts"]))


def test_the_plan_filter_takes_named_arguments_checked_like_a_modules():
    import importlib.util
    from pathlib import Path

    from ansible.errors import AnsibleFilterError

    path = Path(__file__).resolve().parents[2] / "collections/ansible_collections/llmhost/toolkit/plugins/filter/llmhost.py"
    spec = importlib.util.spec_from_file_location("llmhost_filter_plugin", path)
    f = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(f)
    cpu = {"cpus": 2, "cpu_ids": [0, 1], "memory_bytes": 24 * GIB, "arch": "x86_64", "isa": {"bf16": True}}
    ex = [{"expert_id": "general", "model": "/srv/m", "domain": "general", "priority": 5, "kv_cache_gib": 1,
           "cores": 1, "weights_gib": 0.3, "engine": {"max_model_len": 1024}}]
    out = f.plan(ex, capabilities=CAPS, cpu=cpu, reserved_cores=0)
    assert [e["expert_id"] for e in out["experts"]] == ["general"] and out["memory_budget_bytes"] > 0
    with pytest.raises(AnsibleFilterError, match=r"^llmhost.toolkit.plan: .*reserved_core"):
        f.plan(ex, capabilities=CAPS, cpu=cpu, reserved_core=0)
    with pytest.raises(AnsibleFilterError, match=r"^llmhost.toolkit.plan: .*cpu_source"):
        f.plan(ex, capabilities=CAPS, cpu=cpu, cpu_source="sysfs")

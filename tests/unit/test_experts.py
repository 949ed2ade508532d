"""Schema validation: every bad input fails with a message naming the expert and the field."""

import copy

import pytest

from llmhost.experts import ConfigError, assign_ports, parse_experts

GOOD = [
    {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 5},
    {"expert_id": "coder", "model": "/srv/models/b", "domain": "coding", "priority": 3,
     "engine": {"dtype": "bfloat16"}, "kv_cache_gib": 2, "port": 8200},
]


def bad(mutate):
    experts = copy.deepcopy(GOOD)
    lazy = None
    out = mutate(experts)
    if out is not None:
        experts, lazy = out
    with pytest.raises(ConfigError) as e:
        parse_experts(experts, lazy)
    return str(e.value)


def test_good_config_parses_with_defaults():
    experts, lazy = parse_experts(copy.deepcopy(GOOD))
    assert [e.expert_id for e in experts] == ["general", "coder"]
    assert experts[0].profile == "low_latency" and experts[0].kv_cache_gib == 4
    assert experts[1].effective_engine()["dtype"] == "bfloat16"
    assert experts[1].effective_engine()["max_num_batched_tokens"] == 4096  # profile default
    assert lazy.enabled is False and lazy.max_loaded_experts == 2


@pytest.mark.parametrize("mutate, expert, field", [
    (lambda x: x[0].update(priority="high"), "general", "priority"),
    (lambda x: x[0].update(priority=True), "general", "priority"),
    (lambda x: x[1].update(expert_id="general"), "general", "expert_id"),
    (lambda x: x[0].update(port=8200), "general", "port"),
    (lambda x: x[0].update(max_num_seqs=8), "general", "max_num_seqs"),
    (lambda x: x[0].pop("model") and None, "general", "model"),
    (lambda x: x[0].update(model="models/a"), "general", "model"),
    (lambda x: x[0].update(profile="fastest"), "general", "profile"),
    (lambda x: x[1].update(port=80), "coder", "port"),
    (lambda x: x[1].update(kv_cache_gib=0), "coder", "kv_cache_gib"),
    (lambda x: x[1].update(cores=0), "coder", "cores"),
    (lambda x: x[1].update(engine={"Max-Num-Seqs": 4}), "coder", "engine.Max-Num-Seqs"),
    (lambda x: x[1].update(thresholds={"ttft_p50": 0.3}), "coder", "thresholds.ttft_p50"),
    (lambda x: x[1].update(thresholds={"ttft_p50_s": -1}), "coder", "thresholds.ttft_p50_s"),
    (lambda x: x[1].update(env={"lower": "1"}), "coder", "env.lower"),
    (lambda x: x[1].update(aliases=["general"]), "coder", "aliases"),
    (lambda x: x[1].update(expert_id="Coder One"), "Coder One", "expert_id"),
    (lambda x: x[1].update(engine=["dtype"]), "coder", "engine"),
])
def test_bad_expert_names_expert_and_field(mutate, expert, field):
    msg = bad(mutate)
    assert f"expert '{expert}'" in msg and f"field '{field}'" in msg, msg


@pytest.mark.parametrize("lazy, field", [
    ({"enabled": "yes"}, "enabled"),
    ({"enabled": True, "warmup_pool_size": 3}, "warmup_pool_size"),
    ({"memory_threshold": 1.5}, "memory_threshold"),
    ({"enabled": True, "auto_unload_after_s": None}, "auto_unload_after_s"),
    ({"unload_now": True}, "unload_now"),
])
def test_bad_lazy_loading_names_field(lazy, field):
    msg = bad(lambda x: (x, lazy))
    assert f"lazy_loading field '{field}'" in msg, msg


def test_every_problem_reported_at_once():
    msg = bad(lambda x: (x[0].update(priority="x"), x[1].update(port=80)) and None)
    assert "expert 'general' field 'priority'" in msg and "expert 'coder' field 'port'" in msg


def test_not_a_list():
    with pytest.raises(ConfigError, match="non-empty list"):
        parse_experts({"general": {}})


def test_ports_explicit_kept_others_in_order():
    experts, _ = parse_experts(copy.deepcopy(GOOD) + [
        {"expert_id": "third", "model": "/m/c", "domain": "x", "priority": 1}])
    assert assign_ports(experts) == {"general": 8101, "coder": 8200, "third": 8102}

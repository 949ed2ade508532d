"""compile: auto | eager | full per expert, decided in the plan and shown by it."""

import pytest

from llmhost import compile_mode, plan_text
from llmhost.cli import saved_capabilities
from llmhost.experts import ConfigError
from llmhost.plan import GIB, Host, build_plan

HOST = Host((0, 1, 2, 3), 24 * GIB, "x86_64", {"avx512_bf16": True})


def expert(eid, prio, **kw):
    return {"expert_id": eid, "model": f"/srv/models/{eid}", "domain": eid, "priority": prio, "weights_gib": 0.3,
            "kv_cache_gib": 1, "cores": 1, **kw}


def plan(experts, lazy=None, host=HOST):
    return build_plan(experts, lazy, saved_capabilities(), host).to_dict()


def by_id(p):
    return {e["expert_id"]: e for e in p["experts"]}


def test_auto_compiles_preloaded_experts_and_starts_lazy_and_pooling_ones_eager():
    experts = [expert("general", 5), expert("coder", 3),
               {**expert("router", 9, runner="pooling"), "cores": 0}]
    p = by_id(plan(experts, lazy={"enabled": True, "warmup_pool_size": 2, "max_loaded_experts": 3,
                                         "auto_unload_after_s": 60}))
    # router (9) and general (5) are the warm-up pool; coder is lazy
    assert p["general"]["preload"] and not p["coder"]["preload"]
    assert p["general"]["compile"] == "full" and "--enforce-eager" not in p["general"]["argv"]
    assert p["coder"]["compile"] == "eager" and "--enforce-eager" in p["coder"]["argv"]
    assert "lazy" in p["coder"]["compile_reason"]
    assert p["router"]["compile"] == "eager" and "--enforce-eager" in p["router"]["argv"]


@pytest.mark.parametrize("mode,eager", [("eager", True), ("full", False)])
def test_an_explicit_mode_is_kept_whatever_the_expert(mode, eager):
    p = by_id(plan([expert("general", 5, compile=mode)],
                   lazy={"enabled": True, "warmup_pool_size": 0, "max_loaded_experts": 1,
                         "auto_unload_after_s": 60}))
    assert p["general"]["compile"] == mode and p["general"]["compile_reason"] == "explicit"
    assert ("--enforce-eager" in p["general"]["argv"]) is eager
    assert p["general"]["argv"].count("--enforce-eager") <= 1


def test_engine_enforce_eager_still_works_and_is_passed_once():
    p = by_id(plan([expert("general", 5, engine={"enforce_eager": True})]))
    assert p["general"]["compile"] == "eager" and p["general"]["argv"].count("--enforce-eager") == 1
    p = by_id(plan([expert("general", 5, engine={"enforce_eager": False})]))
    assert p["general"]["compile"] == "full" and "--enforce-eager" not in p["general"]["argv"]


@pytest.mark.parametrize("raw,field,words", [
    (expert("coder", 3, compile="fast"), "compile", "must be one of auto, eager, full"),
    (expert("coder", 3, compile="full", engine={"enforce_eager": True}), "compile", "contradicts"),
    (expert("coder", 3, engine={"enforce_eager": "yes"}), "enforce_eager", "true or false"),
])
def test_a_bad_or_contradictory_mode_names_the_expert_and_field(raw, field, words):
    with pytest.raises(ConfigError) as e:
        plan([expert("general", 5), raw])
    text = "\n".join(e.value.problems)
    assert f"expert 'coder' field '{field}'" in text and words in text, text


def test_the_plan_says_which_mode_and_why():
    lines = plan_text.summary(plan([expert("general", 5)]))
    assert any(line.strip().startswith("compile full (auto: preloaded") for line in lines), lines


def test_auto_starts_eager_on_an_amx_cpu_where_compiling_measured_no_faster():
    amx = Host((0, 1, 2, 3), 24 * GIB, "x86_64", {"avx512_bf16": True, "amx_bf16": True})
    p = by_id(plan([expert("general", 5)], host=amx))
    assert p["general"]["compile"] == "eager" and "--enforce-eager" in p["general"]["argv"]
    assert "amx_bf16" in p["general"]["compile_reason"]
    # an explicit choice still wins
    assert by_id(plan([expert("general", 5, compile="full")], host=amx))["general"]["compile"] == "full"
    # AVX2 only, and Arm with bf16: compiled (AVX2 measured about 1.5x faster decode)
    for host in (Host((0, 1), 24 * GIB, "x86_64", {"avx2": True}), Host((0, 1), 24 * GIB, "aarch64", {"bf16": True})):
        assert by_id(plan([expert("general", 5)], host=host))["general"]["compile"] == "full"


def test_choose_is_a_plain_function():
    assert compile_mode.choose(None, pooling=False, preload=True)[0].mode == "full"
    assert compile_mode.choose("auto", pooling=False, preload=False)[0].mode == "eager"
    choice, why = compile_mode.choose("eager", pooling=False, preload=True, enforce_eager=False)
    assert choice is None and "contradicts" in why


def test_llmhost_plan_prints_each_experts_mode(capsys):
    from pathlib import Path

    from llmhost.cli import main

    root = Path(__file__).resolve().parents[2]
    assert main(["plan", "-i", str(root / "inventories/production")]) == 0
    out = capsys.readouterr().out
    # three preloaded chat experts compiled; gemma-3 and aya-expanse lazy and the router eager
    assert out.count("\n  compile full (auto: preloaded") == 3, out
    assert out.count("\n  compile eager (auto: lazy expert") == 2, out
    assert out.count("\n  compile eager (auto: pooling expert") == 1, out

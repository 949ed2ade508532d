"""Core and memory plan, and the CLI on the real inventories and legacy files."""

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from llmhost.capabilities import parse_cpuinfo
from llmhost.cli import main, saved_capabilities
from llmhost.experts import ConfigError, parse_experts
from llmhost.plan import GIB, Host, build_plan, cpu_list, split_cores

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests/fixtures"
CAPS = saved_capabilities()
NV2 = parse_cpuinfo(resources.files("llmhost").joinpath("data/cpuinfo-neoverse-v2.txt").read_text(), "aarch64")


def experts(*prios, **extra):
    return [{"expert_id": f"e{i}", "model": f"/m/{i}", "domain": "general", "priority": p,
             "weights_gib": 1.0, "kv_cache_gib": 1, **extra} for i, p in enumerate(prios)]


def test_cpu_list_is_compact():
    assert cpu_list([0, 1, 2, 5, 6, 9]) == "0-2,5-6,9"


def test_split_is_disjoint_covers_pool_and_follows_priority():
    ex, _ = parse_experts(experts(5, 4, 3, 2, 2))
    cores, reserved = split_cores(ex, list(range(32)), 2)
    assert reserved == [0, 1]
    allc = [c for cs in cores.values() for c in cs]
    assert sorted(allc) == list(range(2, 32)) and len(allc) == len(set(allc))
    sizes = [len(cores[f"e{i}"]) for i in range(5)]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) >= 1


def test_explicit_cores_and_too_many_experts():
    ex, _ = parse_experts(experts(1, 1))
    with pytest.raises(ConfigError, match="need one CPU each"):
        split_cores(ex, [0], 0)
    ex, _ = parse_experts(experts(1, 1, cores=2))
    with pytest.raises(ConfigError, match="field 'cores'"):
        split_cores(ex, [0, 1, 2], 0)


def test_memory_that_does_not_fit_fails_with_a_table():
    host = Host(tuple(range(4)), 8 * GIB, "x86_64", {"bf16": True})
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1, 1), None, CAPS, host)
    assert "expert" in str(e.value) and "budget" in str(e.value) and "e0" in str(e.value)


def test_lazy_loading_counts_preloaded_plus_the_largest_lazy_ones():
    ex = experts(3, 2, 1)      # 5 GiB each (1 weights + 1 KV + 3 overhead), e2 14 GiB
    ex[2]["weights_gib"] = 10.0
    host = Host(tuple(range(4)), 40 * GIB, "x86_64", {"bf16": True})
    lazy = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "memory_threshold": 0.9,
            "auto_unload_after_s": 60}
    p = build_plan(ex, lazy, CAPS, host)
    assert [e.preload for e in p.experts] == [True, False, False]
    # e0 (never stopped) + the largest lazy (its standby included) + the other lazy expert's standby
    assert p.loaded_at_once_gib == pytest.approx(5.0 + 14.0 + 0.75)


def test_preloaded_small_experts_are_counted_even_when_lazy_ones_are_larger():
    ex = experts(3, 2, 1)
    ex[1]["weights_gib"] = ex[2]["weights_gib"] = 10.0
    host = Host(tuple(range(4)), 40 * GIB, "x86_64", {"bf16": True})
    lazy = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "memory_threshold": 0.9,
            "auto_unload_after_s": 60}
    # the old rule (the two largest of all: 28 GiB) forgot that e0 stays loaded: 5 + 14 (+ a standby) is right
    assert build_plan(ex, lazy, CAPS, host).loaded_at_once_gib == pytest.approx(19.0 + 0.75)


def test_no_room_for_a_lazy_expert_is_a_config_error():
    lazy = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 1, "memory_threshold": 0.9,
            "auto_unload_after_s": 60}
    with pytest.raises(ConfigError, match="field 'max_loaded_experts': 1 leaves no room"):
        build_plan(experts(3, 2), lazy, CAPS, Host((0, 1), 40 * GIB, "x86_64", {"bf16": True}))


LAZY_MEM = {"enabled": True, "warmup_pool_size": 1, "memory_threshold": 0.9, "auto_unload_after_s": 60}


def test_lazy_experts_that_do_not_fit_together_plan_when_each_fits_beside_the_preloaded():
    ex = experts(3, 2, 1)       # 5 GiB each; budget 0.9 x 14 = 12.6: e0 + a standby + one lazy fits
    p = build_plan(ex, LAZY_MEM, CAPS, Host(tuple(range(4)), 14 * GIB, "x86_64", {"bf16": True}))
    assert p.loaded_at_once_gib == pytest.approx(15.0) and p.budget_gib == pytest.approx(12.6)
    d = p.to_dict()
    assert d["standby_gib"] == 1.5
    import importlib.util  # noqa: PLC0415
    spec = importlib.util.spec_from_file_location(
        "llmhost_filter_plugin_plan", ROOT / "collections/ansible_collections/llmhost/toolkit/plugins/filter/llmhost.py")
    f = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(f)
    gate = f.admission(d)    # the standbys are not the gate's to give; a lazy expert weighs what it adds to its own
    assert gate["lazy_loading"]["memory_budget_gib"] == pytest.approx(11.1)
    assert {e["expert_id"]: e["memory_gib"] for e in gate["experts"]} == {"e0": 5.0, "e1": 4.25, "e2": 4.25}
    d = {e["expert_id"]: e for e in p.to_dict()["experts"]}
    assert (d["e1"]["pinned"], d["e1"]["evict_cost"]) == (False, 1.0)    # cost: its weights by default


def test_a_lazy_expert_that_can_never_fit_names_itself():
    ex = experts(3, 2, 1)
    ex[2]["weights_gib"] = 10.0               # 14 GiB: beside e0's 5 it is over 12.6
    with pytest.raises(ConfigError, match=r"expert 'e2' memory: it plans 14.0 GiB and the experts never stopped "
                                          r"to make room \(preloaded or pinned, and the lazy ones' standbys\) 5.8 GiB"):
        build_plan(ex, LAZY_MEM, CAPS, Host(tuple(range(4)), 14 * GIB, "x86_64", {"bf16": True}))


def test_a_pinned_lazy_expert_counts_as_never_stopped():
    ex = experts(3, 2, 1)
    ex[1]["pinned"] = True          # e0 + e1 = 10 of 12.6: e2 (5, its standby included) can never load beside them
    with pytest.raises(ConfigError, match=r"expert 'e2' memory: .* 10.0 GiB, more than"):
        build_plan(ex, LAZY_MEM, CAPS, Host(tuple(range(4)), 14 * GIB, "x86_64", {"bf16": True}))


@pytest.mark.parametrize("field,value,msg", [
    ("pinned", "yes", "field 'pinned': expected true or false"),
    ("evict_cost", -1, "field 'evict_cost': a number from 0 to 1000000"),
    ("evict_cost", "high", "field 'evict_cost': expected a number >= 0"),
])
def test_bad_pinned_or_evict_cost_names_the_expert_and_field(field, value, msg):
    ex = experts(3, 2)
    ex[1][field] = value
    with pytest.raises(ConfigError, match=f"expert 'e1' {msg}"):
        build_plan(ex, LAZY_MEM, CAPS, Host(tuple(range(4)), 40 * GIB, "x86_64", {"bf16": True}))


def test_production_admits_by_memory_and_everything_fits_at_once():
    from llmhost.cli import main as cli_main  # noqa: PLC0415
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["plan", "-i", str(ROOT / "inventories/production"), "--json"]) == 0
    plan = json.loads(out.getvalue())
    # quantized (w4a8, qwen w8a8) all six fit: 32.7 preloaded + 25.5 gemma-3 + 12.6 aya, the standbys
    # inside the lazy experts' plans (bf16, one lazy: 113.3)
    assert plan["loaded_at_once_gib"] == pytest.approx(70.8, abs=0.05) and plan["budget_gib"] == pytest.approx(115.2)
    lazy = {e["expert_id"]: (e["pinned"], e["evict_cost"]) for e in plan["experts"] if not e["preload"]}
    assert lazy == {"gemma-3": (False, 16.5), "aya-expanse": (False, 5.6)}   # gemma-3, slower to load, goes last
    assert plan["routing"]["embedder"] == "router" and [e["cpu_list"] for e in plan["experts"]
                                                        if e["expert_id"] == "router"] == ["0-1"]  # the reserved CPUs


def test_memory_caps_per_expert_from_the_plan():
    e = build_plan(experts(1), None, CAPS, Host((0, 1), 40 * GIB, "x86_64", {"bf16": True})).to_dict()["experts"][0]
    assert e["memory_high_bytes"] == int(5.0 * GIB) and e["memory_max_bytes"] == int(5.0 * 1.25 * GIB)


def test_a_model_in_a_home_is_bound_read_only_and_others_keep_protect_home():
    ex = experts(2, 1)
    ex[0]["model"] = "/home/elect/models/phi-4-mini"
    d = build_plan(ex, None, CAPS, Host((0, 1), 40 * GIB, "x86_64", {"bf16": True})).to_dict()["experts"]
    assert (d[0]["protect_home"], d[0]["bind_read_only"]) == ("tmpfs", ["/home/elect/models/phi-4-mini"])
    assert (d[1]["protect_home"], d[1]["bind_read_only"]) == ("yes", [])


def test_neoverse_v2_fixtures():
    assert NV2["arch"] == "aarch64" and NV2["model"] == "Neoverse-V2" and NV2["cpuinfo_cpus"] == 32
    assert NV2["isa"]["bf16"] and NV2["isa"]["fp16"] and NV2["isa"]["sve2"] and NV2["isa"]["i8mm"]
    x86 = parse_cpuinfo((FIX / "cpuinfo-x86-zen4-2cpu.txt").read_text(), "x86_64")
    assert x86["isa"]["avx512"] and not x86["isa"]["fp16"] and x86["cpuinfo_cpus"] == 2


def test_local_plan_on_arm_picks_bf16_binds_disjoint_and_sets_arm_env():
    import yaml

    raw = yaml.safe_load((ROOT / "inventories/local/group_vars/llm_hosts/experts.yml").read_text())
    for e in raw["llmhost_experts"]:
        e["weights_gib"] = 0.3
    host = Host((0, 1), 24 * GIB, "aarch64", NV2["isa"], NV2["model"])
    p = build_plan(raw["llmhost_experts"], raw["llmhost_lazy_loading"], CAPS, host, routing=raw["llmhost_routing"])
    binds = [e.translation.env["VLLM_CPU_OMP_THREADS_BIND"] for e in p.experts]
    assert binds == ["0", "1", "0-1"]   # the router (cores: 0) runs beside both
    for e in p.experts:
        # the pooling router stays float32 on every CPU: the same vectors, the same routes
        want = "float32" if e.expert_id == "router" else "bfloat16"
        assert e.translation.argv[e.translation.argv.index("--dtype") + 1] == want
        assert e.translation.env["THP_MEM_ALLOC_ENABLE"] == "1"
    assert p.warnings == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "llmhost.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)


def test_import_legacy_then_plan_32_vcpu_128_gb(tmp_path):
    r = run_cli("import-legacy", str(FIX / "config.five_models_optimized_with_aya.json"))
    assert r.returncode == 0, r.stderr
    assert "phi4_fast.use_v2_block_manager: dropped: removed in vLLM 0.32.0" in r.stderr
    inv = tmp_path / "inv"
    (inv / "group_vars/llm_hosts").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  children:\n    llm_hosts:\n      hosts:\n        big:\n")
    (inv / "group_vars/llm_hosts/experts.yml").write_text(
        r.stdout + "llmhost_host_expect: {cpus: 32, memory_gib: 128, arch: aarch64, cpu: neoverse-v2}\n")
    # all five preloaded, as the acceptance asks
    text = (inv / "group_vars/llm_hosts/experts.yml").read_text().replace("enabled: true", "enabled: false")
    (inv / "group_vars/llm_hosts/experts.yml").write_text(text)
    r = run_cli("plan", "-i", str(inv), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    chat = [e for e in plan["experts"] if e["runner"] == "generate"]
    cores = [set(e["cores"]) for e in chat]
    assert len(cores) == 5 and all(cores)
    assert sum(len(c) for c in cores) == len(set().union(*cores)) == 30  # disjoint, 2 reserved
    assert all(e["preload"] for e in plan["experts"])
    assert all(e["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" for e in chat)  # legacy profile
    # the old embedding_model: the router, on the 2 reserved CPUs, and use_cases as route examples
    (router,) = [e for e in plan["experts"] if e["runner"] == "pooling"]
    assert router["cores"] == [0, 1] and plan["routing"]["embedder"] == "router"
    assert [d["examples"][0] for d in plan["routing"]["domains"]][:2] == ["preguntas simples",
                                                                         "explicaciones técnicas"]
    r = run_cli("plan", "-i", str(inv))
    assert "at once" in r.stdout and "budget" in r.stdout


def test_import_legacy_exits_nonzero_on_rejection():
    r = run_cli("import-legacy", str(FIX / "config.low_latency.json"))
    assert r.returncode == 1 and "1 rejected" in r.stderr and "llmhost_experts:" in r.stdout


def test_plan_of_the_shipped_inventories():
    r = run_cli("plan", "-i", "inventories/production", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["loaded_at_once_gib"] <= plan["budget_gib"]
    gemma = [e for e in plan["experts"] if e["expert_id"] == "gemma-3"][0]
    assert "bfloat16" in gemma["argv"] and not gemma["preload"]
    r = run_cli("plan", "-i", "inventories/local")
    assert r.returncode == 0, r.stderr


def test_plan_fails_on_bad_inventory(tmp_path, capsys):
    inv = tmp_path / "inv"
    (inv / "group_vars/llm_hosts").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  children:\n    llm_hosts:\n      hosts:\n        h:\n")
    (inv / "group_vars/llm_hosts/e.yml").write_text(
        "llmhost_experts:\n  - {expert_id: a, model: /m/a, domain: g, priority: 1, weights_gib: 1,"
        " engine: {dtype: float16}, profile: legacy}\n"
        "  - {expert_id: gemma3-it, model: /m/gemma-3-4b, domain: g, priority: 1, weights_gib: 1,"
        " engine: {dtype: float16}}\n")
    assert main(["plan", "-i", str(inv)]) == 1
    err = capsys.readouterr().err
    assert "expert 'gemma3-it' field 'dtype'" in err


def test_default_expert_serves_auto():
    host = Host((0, 1), 24 * GIB, "x86_64", {"bf16": True})
    p = build_plan(experts(1, 5), None, CAPS, host)
    assert p.default_expert == "e1" and "auto" in p.experts[1].names and "auto" not in p.experts[0].names
    argv = p.experts[1].translation.argv
    assert argv[argv.index("--served-model-name"):][:3] == ["--served-model-name", "e1", "auto"]
    p = build_plan(experts(1, 5), None, CAPS, host, default_expert="e0")
    assert p.default_expert == "e0"
    with pytest.raises(ConfigError, match="llmhost_default_expert"):
        build_plan(experts(1, 5), None, CAPS, host, default_expert="nope")


def test_a_smaller_host_gets_the_expected_split_folded_and_says_so():
    ex = experts(5, 4, 3, 2, 2)
    host = Host((0, 1), 40 * GIB, "x86_64", {"bf16": True})
    p = build_plan(ex, None, CAPS, host, reserved_cores=2, expect_cpus=32)
    d = p.to_dict()
    assert d["folded"]["expected_cpus"] == 32 and d["folded"]["host_cpus"] == 2
    planned = d["folded"]["planned_cpu_lists"]
    assert planned["e0"].startswith("2-")                       # the production split, reserve kept
    assert all(set(e["cores"]) <= {0, 1} for e in d["experts"])  # ... run on this host's CPUs
    assert any(w.startswith("FOLDED:") and "not reported" in w for w in p.warnings)
    from llmhost.plan_text import summary  # noqa: PLC0415
    assert summary(d)[0].startswith("FOLDED: planned for 32 CPUs, running on 2")


def test_no_fold_when_the_host_is_as_large_as_expected():
    p = build_plan(experts(1, 1), None, CAPS, Host((0, 1, 2, 3), 40 * GIB, "x86_64", {"bf16": True}),
                   expect_cpus=4)
    assert p.folded is None and not any("FOLDED" in w for w in p.warnings)

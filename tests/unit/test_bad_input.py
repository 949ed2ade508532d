"""Bad input: every case fails with one line per problem, naming the expert and the field.

Three paths see the same schema: `llmhost plan` (an inventory), `llmhost
import-legacy` (an old config.json) and the preflight play
(tests/integration/test_preflight_bad_input.py runs a sample of these through
ansible-playbook). No case may end in a traceback, and none may pass.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhost.cli import main, saved_capabilities
from llmhost.experts import ConfigError
from llmhost.legacy import Imported, import_legacy
from llmhost.plan import GIB, Host, build_plan
from llmhost.systemd import exec_line

CAPS = saved_capabilities()
HOST = Host(tuple(range(8)), 64 * GIB, "x86_64", {"bf16": True, "avx512_bf16": True})


def good() -> list[dict[str, Any]]:
    return [
        {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 2, "weights_gib": 1.0,
         "kv_cache_gib": 1},
        {"expert_id": "coder", "model": "/srv/models/b", "domain": "code", "priority": 1, "weights_gib": 1.0,
         "kv_cache_gib": 1, "aliases": ["org/coder-7b"]},
    ]


def _set(i: int, **kv: Any) -> Callable[[list[dict[str, Any]]], None]:
    def f(ex: list[dict[str, Any]]) -> None:
        ex[i].update(kv)
    return f


def _engine(i: int, **kv: Any) -> Callable[[list[dict[str, Any]]], None]:
    def f(ex: list[dict[str, Any]]) -> None:
        ex[i].setdefault("engine", {}).update(kv)
    return f


def _env(i: int, **kv: Any) -> Callable[[list[dict[str, Any]]], None]:
    def f(ex: list[dict[str, Any]]) -> None:
        ex[i].setdefault("env", {}).update(kv)
    return f


def _drop(i: int, key: str) -> Callable[[list[dict[str, Any]]], None]:
    def f(ex: list[dict[str, Any]]) -> None:
        ex[i].pop(key)
    return f


def _dup(ex: list[dict[str, Any]]) -> None:
    ex.append(copy.deepcopy(ex[1]) | {"aliases": []})


LAZY = {"enabled": True, "warmup_pool_size": 1, "max_loaded_experts": 2, "auto_unload_after_s": 60}

# (case, mutation, lazy_loading, expected expert label, expected field)
PLAN_CASES: list[tuple[str, Callable[[list[dict[str, Any]]], None], Any, str, str]] = [
    ("duplicate id", _dup, None, "expert 'coder'", "expert_id"),
    ("id with a path", _set(1, expert_id="../etc"), None, "expert '../etc'", "expert_id"),
    ("id with a space", _set(1, expert_id="a b"), None, "expert 'a b'", "expert_id"),
    ("id with a shell char", _set(1, expert_id="x;rm -rf"), None, "expert 'x;rm -rf'", "expert_id"),
    ("empty id", _set(1, expert_id=""), None, "expert #2", "expert_id"),
    ("upper-case id", _set(1, expert_id="Coder"), None, "expert 'Coder'", "expert_id"),
    ("id ending in -proxy", _set(1, expert_id="api-proxy"), None, "expert 'api-proxy'", "expert_id"),
    ("id ending in -standby", _set(1, expert_id="api-standby"), None, "expert 'api-standby'", "expert_id"),
    ("id auto, not the default", _set(1, expert_id="auto"), None, "expert 'auto'", "expert_id"),
    ("alias auto, not the default", _set(1, aliases=["auto"]), None, "expert 'coder'", "aliases"),
    ("alias starting with #", _set(1, aliases=["#x"]), None, "expert 'coder'", "aliases"),
    ("alias with a space", _set(1, aliases=["a b"]), None, "expert 'coder'", "aliases"),
    ("alias naming another expert", _set(1, aliases=["general"]), None, "expert 'coder'", "aliases"),
    ("newline in domain (unit injection)",
     _set(1, domain="general\n[Service]\nExecStartPre=+/bin/touch /tmp/pwned"), None, "expert 'coder'", "domain"),
    ("newline in model", _set(1, model="/srv/m\nExecStartPre=+/bin/sh"), None, "expert 'coder'", "model"),
    ("newline in an engine value", _engine(1, tokenizer_mode="auto\nUser=root"), None, "expert 'coder'",
     "engine.tokenizer_mode"),
    ("newline in an env value", _env(1, HF_HOME="/x\nUser=root"), None, "expert 'coder'", "env.HF_HOME"),
    ("missing model", _drop(1, "model"), None, "expert 'coder'", "model"),
    ("relative model", _set(1, model="models/b"), None, "expert 'coder'", "model"),
    ("priority a string", _set(1, priority="high"), None, "expert 'coder'", "priority"),
    ("priority a bool", _set(1, priority=True), None, "expert 'coder'", "priority"),
    ("priority huge", _set(1, priority=10**9), None, "expert 'coder'", "priority"),
    ("port Prometheus", _set(1, port=9090), None, "expert 'coder'", "port"),
    ("port HAProxy metrics", _set(1, port=8405), None, "expert 'coder'", "port"),
    ("port node exporter", _set(1, port=9100), None, "expert 'coder'", "port"),
    ("port the front door", _set(1, port=8082), None, "expert 'coder'", "port"),
    ("port below 1024", _set(1, port=80), None, "expert 'coder'", "port"),
    ("ports shared", lambda ex: (ex[0].update(port=8101), ex[1].update(port=8101)), None, "expert 'coder'", "port"),
    ("lazy backend beyond 65535", _set(1, port=60000), LAZY, "expert 'coder'", "port"),
    ("lazy backend on another expert", lambda ex: (ex[0].update(port=18102), ex[1].update(port=8102)), LAZY,
     "expert 'coder'", "port"),
    ("max_num_seqs 0", _engine(1, max_num_seqs=0), None, "expert 'coder'", "max_num_seqs"),
    ("max_num_seqs 1e9", _engine(1, max_num_seqs=10**9), None, "expert 'coder'", "max_num_seqs"),
    ("max_num_seqs a string", _engine(1, max_num_seqs="many"), None, "expert 'coder'", "max_num_seqs"),
    ("max_model_len negative", _engine(1, max_model_len=-4096), None, "expert 'coder'", "max_model_len"),
    ("max_model_len a float", _engine(1, max_model_len=4096.5), None, "expert 'coder'", "max_model_len"),
    ("a boolean flag given a string", _engine(1, enforce_eager="yes"), None, "expert 'coder'", "enforce_eager"),
    ("a choice out of range", _engine(1, kv_cache_dtype="int3"), None, "expert 'coder'", "kv_cache_dtype"),
    ("a flag the toolkit owns", _engine(1, port=1), None, "expert 'coder'", "port"),
    ("weights negative", _set(1, weights_gib=-50.0), None, "expert 'coder'", "weights_gib"),
    ("weights nan", _set(1, weights_gib=math.nan), None, "expert 'coder'", "weights_gib"),
    ("kv cache zero", _set(1, kv_cache_gib=0), None, "expert 'coder'", "kv_cache_gib"),
    ("kv cache infinite", _set(1, kv_cache_gib=math.inf), None, "expert 'coder'", "kv_cache_gib"),
    ("kv cache not whole GiB", _set(1, kv_cache_gib=1.5), None, "expert 'coder'", "kv_cache_gib"),
    ("unknown profile", _set(1, profile="fastest"), None, "expert 'coder'", "profile"),
    ("unknown key", _set(1, max_num_seqs=8), None, "expert 'coder'", "max_num_seqs"),
    ("cores zero", _set(1, cores=0), None, "expert 'coder'", "cores"),
    ("env name lower case", _env(1, hf_token="x"), None, "expert 'coder'", "env.hf_token"),
    ("unknown VLLM_CPU_ variable", _env(1, VLLM_CPU_TURBO="1"), None, "expert 'coder'", "env.VLLM_CPU_TURBO"),
    ("threshold negative", _set(1, thresholds={"ttft_p50_s": -1}), None, "expert 'coder'", "thresholds.ttft_p50_s"),
    ("emulated dtype without consent", _engine(1, dtype="float16"), None, "expert 'coder'", "dtype"),
    ("lazy threshold above 1", lambda ex: None, {**LAZY, "memory_threshold": 1.5}, "lazy_loading",
     "memory_threshold"),
]


@pytest.mark.parametrize("case,mutate,lazy,who,field", PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_plan_refuses_naming_expert_and_field(case, mutate, lazy, who, field):
    ex = good()
    mutate(ex)
    with pytest.raises(ConfigError) as e:
        build_plan(ex, lazy, CAPS, HOST)
    named = [p for p in e.value.problems if who in p and f"field '{field}'" in p]
    assert named, f"{case}: no problem names {who} and field '{field}': {e.value.problems}"


def test_the_table_is_big_enough_and_the_good_config_passes():
    assert len(PLAN_CASES) >= 40
    assert build_plan(good(), None, CAPS, HOST).experts
    assert build_plan(good(), LAZY, CAPS, HOST).experts


def test_auto_is_allowed_on_the_default_expert():
    ex = good()
    ex[0]["aliases"] = ["auto"]
    plan = build_plan(ex, None, CAPS, HOST)
    assert plan.default_expert == "general" and "auto" in plan.experts[0].names


def test_quote_arg_keeps_every_value_on_its_line():
    line = exec_line(["--x", "a\n[Service]\nExecStartPre=+/bin/true", "b\x01\r"])
    assert "\n" not in line and "\r" not in line and "\\n[Service]\\nExecStartPre" in line


# --- the CLI: one line, no traceback, exit 1 -------------------------------------------------


def _inventory(tmp: Path, body: str) -> Path:
    (tmp / "inv/group_vars").mkdir(parents=True, exist_ok=True)
    (tmp / "inv/hosts.yml").write_text("llm_hosts:\n  hosts:\n    h1: {ansible_connection: local}\n")
    (tmp / "inv/group_vars/all.yml").write_text(body)
    return tmp / "inv"


GOOD_INV = """llmhost_host_expect: {cpus: 4, memory_gib: 16}
llmhost_experts:
  - {expert_id: g, model: /m, domain: general, priority: 1, weights_gib: 1}
"""
PLAN_CLI_CASES = [
    ("invalid YAML", "llmhost_experts: [\n  - {a: 1\n", [], "YAML"),
    ("reserved_cores a word", "llmhost_reserved_cores: abc\n" + GOOD_INV, [], "llmhost_reserved_cores"),
    ("missing --caps file", GOOD_INV, ["--caps", "/nonexistent/caps.json"], "--caps"),
    ("--caps not JSON", GOOD_INV, ["--caps", "/etc/hostname"], "--caps"),
    ("injected domain", GOOD_INV.replace("domain: general", 'domain: "general\\n[Service]\\nUser=root"'), [],
     "expert 'g' field 'domain'"),
    ("no experts", "llmhost_host_expect: {cpus: 4, memory_gib: 16}\n", [], "llmhost_experts"),
]


@pytest.mark.parametrize("case,body,extra,expect", PLAN_CLI_CASES, ids=[c[0] for c in PLAN_CLI_CASES])
def test_plan_cli_says_one_line_and_exits_1(tmp_path, capsys, case, body, extra, expect):
    inv = _inventory(tmp_path, body)
    refused(main(["plan", "-i", str(inv), *extra]), capsys, expect)


def refused(rc: int, capsys, expect: str) -> str:
    """The CLI exited 1 with the expected words and no traceback; its stderr."""
    err = capsys.readouterr().err
    assert rc == 1, f"exit {rc}: {err}"
    assert "Traceback" not in err and expect in err, err
    return err


LEGACY_CASES = [
    ("top-level array", "[]", "JSON object"),
    ("top-level string", '"config"', "JSON object"),
    ("top-level null", "null", "JSON object"),
    ("experts a dict", '{"experts": {"a": {}}}', "field 'experts'"),
    ("experts missing", '{"performance_tuning": {}}', "field 'experts'"),
    ("lazy_loading a list", '{"experts": [{"expert_id": "a", "model_path": "/m"}], "lazy_loading": []}',
     "field 'lazy_loading'"),
    ("expert not an object", '{"experts": [1]}', "expert #1"),
    ("priority a word", '{"experts": [{"expert_id": "a", "model_path": "/m", "priority": "high"}]}',
     "expert 'a' field 'priority'"),
    ("priority 1e400", '{"experts": [{"expert_id": "a", "model_path": "/m", "priority": 1e400}]}',
     "expert 'a' field 'priority'"),
    ("duplicate id", '{"experts": [{"expert_id": "a", "model_path": "/m"}, {"expert_id": "a", "model_path": "/n"}]}',
     "expert 'a' field 'expert_id'"),
    ("ids that collide once spaced", '{"experts": [{"expert_id": "a b", "model_path": "/m"}, '
     '{"expert_id": "a-b", "model_path": "/n"}]}', "expert 'a-b' field 'expert_id'"),
    ("id ../etc", '{"experts": [{"expert_id": "../etc", "model_path": "/m"}]}', "expert '../etc' field 'expert_id'"),
    ("id with ;", '{"experts": [{"expert_id": "x;rm -rf", "model_path": "/m"}]}', "field 'expert_id'"),
    ("empty id", '{"experts": [{"expert_id": "", "model_path": "/m"}]}', "field 'expert_id'"),
    ("id missing", '{"experts": [{"model_path": "/m"}]}', "expert #1 field 'expert_id'"),
    ("model_path missing", '{"experts": [{"expert_id": "a"}]}', "expert 'a' field 'model_path'"),
    ("max_num_seqs a word", '{"experts": [{"expert_id": "a", "model_path": "/m", "max_num_seqs": "many"}]}',
     "expert 'a' field 'max_num_seqs'"),
    ("max_model_len negative", '{"experts": [{"expert_id": "a", "model_path": "/m", "max_model_len": -1}]}',
     "expert 'a' field 'max_model_len'"),
    ("newline in domain", '{"experts": [{"expert_id": "a", "model_path": "/m", "domain": "x\\n[Service]"}]}',
     "expert 'a' field 'domain'"),
]


@pytest.mark.parametrize("case,text,expect", LEGACY_CASES, ids=[c[0] for c in LEGACY_CASES])
def test_import_legacy_refuses_with_one_line_each(tmp_path, capsys, case, text, expect):
    f = tmp_path / "config.json"
    f.write_text(text)
    refused(main(["import-legacy", str(f)]), capsys, expect)


@pytest.mark.parametrize("case", ["binary", "directory", "deep nesting", "missing"])
def test_import_legacy_files_that_are_not_configs(tmp_path, capsys, case):
    f = tmp_path / "config.json"
    if case == "binary":
        f.write_bytes(bytes(range(256)) * 4)
    elif case == "directory":
        f.mkdir()
    elif case == "deep nesting":
        f.write_text("[" * 100_000 + "]" * 100_000)
    err = refused(main(["import-legacy", str(f)]), capsys, str(f))
    assert len(err.strip().splitlines()) == 1, err


# --- property: no JSON value makes the importer raise ----------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=24)
KEYS = st.sampled_from(["expert_id", "model_path", "domain", "priority", "max_num_seqs", "max_model_len", "dtype",
                        "enable_prefix_caching", "kv_cache_dtype", "quantization", "swap_space", "description"])
EXPERT = st.dictionaries(KEYS, JSON, max_size=8)
CONFIG = st.fixed_dictionaries({}, optional={
    "experts": st.lists(EXPERT, max_size=4) | JSON,
    "performance_tuning": st.dictionaries(KEYS, JSON, max_size=4) | JSON,
    "lazy_loading": st.dictionaries(st.sampled_from(["enabled", "warmup_pool_size", "max_loaded_experts",
                                                     "memory_threshold", "auto_unload_after_s"]), JSON) | JSON,
    "server_config": JSON, "notes": JSON,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, CONFIG))
def test_no_json_value_makes_import_legacy_raise(data):
    try:
        res = import_legacy(data, CAPS)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    assert isinstance(res, Imported)
    json.dumps(res.inventory(), allow_nan=True)  # the output is data, whatever came in
    if not res.rejected:  # accepted: then the plan's schema accepts it too
        build_plan([{**e, "weights_gib": 1.0, "kv_cache_gib": 1} for e in res.experts],
                   res.lazy_loading or None, CAPS, Host(tuple(range(64)), 4096 * GIB, "aarch64", {"bf16": True}))

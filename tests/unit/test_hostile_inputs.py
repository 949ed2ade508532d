"""Hostile inputs, round two (issue 30): what a careless operator or a careful attacker
puts in an inventory. Every case must be refused by the plan with a line naming the
expert (or the inventory variable) and the field, by `llmhost plan` with exit 1 and no
traceback, with nothing written; a secret's value never appears in the refusal.

Classes: shapes and ranges, flags and env the toolkit owns, secrets, paths, ports and
binds, the host description. tests/integration/test_preflight_bad_input.py runs a sample
through the preflight play itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmhost.cli import main, saved_capabilities
from llmhost.experts import OWNED_ENV, ConfigError
from llmhost.host import parse_expect
from llmhost.plan import GIB, Host, build_plan, parse_shared
from llmhost.secret_names import is_secret_name
from llmhost.systemd import FIXED_ENV
from llmhost.translate import OWNED_FLAGS, flag_argv, value_problem

CAPS = saved_capabilities()
HOST = Host(tuple(range(8)), 64 * GIB, "x86_64", {"bf16": True, "avx512_bf16": True})
EXPECT = {"cpus": 8, "memory_gib": 64}


def good() -> list[dict[str, Any]]:
    return [
        {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 2, "weights_gib": 1.0,
         "kv_cache_gib": 1},
        {"expert_id": "coder", "model": "/srv/models/b", "domain": "code", "priority": 1, "weights_gib": 1.0,
         "kv_cache_gib": 1},
    ]


# (case id, change to expert 'coder' (a dict merged in; "engine"/"env" merged one level down),
#  the text the refusal must hold, a secret that must not appear)
EXPERT_CASES: list[tuple[str, dict[str, Any], str, str | None]] = [
    # shapes and ranges
    ("cores as words", {"cores": "32 cores"}, "expert 'coder' field 'cores'", None),
    ("cores beyond any host", {"cores": 10**12}, "expert 'coder' field 'cores'", None),
    ("kv cache 1e308 GiB", {"kv_cache_gib": 1e308}, "expert 'coder' field 'kv_cache_gib'", None),
    ("weights 1e300 GiB", {"weights_gib": 1e300}, "expert 'coder' field 'weights_gib'", None),
    ("priority 10**30", {"priority": 10**30}, "expert 'coder' field 'priority'", None),
    ("port 10**11", {"port": 10**11}, "expert 'coder' field 'port'", None),
    ("aliases a string", {"aliases": "org/coder"}, "expert 'coder' field 'aliases'", None),
    ("env a list", {"env": ["A=1"]}, "expert 'coder' field 'env'", None),
    ("engine a string", {"engine": "max_num_seqs=4"}, "expert 'coder' field 'engine'", None),
    ("threshold 1e308", {"thresholds": {"ttft_p50_s": 1e308}}, "expert 'coder' field 'thresholds.ttft_p50_s'", None),
    ("evict_cost 1e300", {"evict_cost": 1e300}, "expert 'coder' field 'evict_cost'", None),
    ("domain of 5000 characters", {"domain": "x" * 5000}, "expert 'coder' field 'domain'", None),
    ("domain with a line separator", {"domain": "code\u2028x"}, "expert 'coder' field 'domain'", None),
    ("domain with markup", {"domain": "<script>"}, "expert 'coder' field 'domain'", None),
    ("route_examples a string", {"route_examples": "write code"}, "expert 'coder' field 'route_examples'", None),
    ("model a number", {"model": 12}, "expert 'coder' field 'model'", None),
    # flags the toolkit owns
    ("engine host", {"engine": {"host": "0.0.0.0"}}, "expert 'coder' field 'host'", None),
    ("engine port", {"engine": {"port": 9999}}, "expert 'coder' field 'port'", None),
    ("a list smuggling --host", {"engine": {"tokenizer": ["x.org", "--host", "0.0.0.0"]}},
     "expert 'coder' field 'tokenizer'", None),
    ("a value that reads as a flag", {"engine": {"chat_template": "--host=0.0.0.0"}},
     "expert 'coder' field 'chat_template'", None),
    ("a list item that reads as a flag", {"engine": {"lora_modules": ["a=/srv/l", "--port", "1"]}},
     "expert 'coder' field 'lora_modules'", None),
    ("an empty list", {"engine": {"lora_modules": []}}, "expert 'coder' field 'lora_modules'", None),
    ("a nested list", {"engine": {"lora_modules": [["a"]]}}, "expert 'coder' field 'lora_modules'", None),
    ("engine uds", {"engine": {"uds": "/run/x.sock"}}, "expert 'coder' field 'uds'", None),
    ("engine headless", {"engine": {"headless": True}}, "expert 'coder' field 'headless'", None),
    ("engine api_server_count", {"engine": {"api_server_count": 4}}, "expert 'coder' field 'api_server_count'", None),
    ("engine ssl_keyfile", {"engine": {"ssl_keyfile": "/srv/k.pem"}}, "expert 'coder' field 'ssl_keyfile'", None),
    ("engine root_path", {"engine": {"root_path": "/x"}}, "expert 'coder' field 'root_path'", None),
    ("env KV cache", {"env": {"VLLM_CPU_KVCACHE_SPACE": "100"}}, "expert 'coder' field 'env.VLLM_CPU_KVCACHE_SPACE'",
     None),
    ("env thread binding", {"env": {"VLLM_CPU_OMP_THREADS_BIND": "0-31"}},
     "expert 'coder' field 'env.VLLM_CPU_OMP_THREADS_BIND'", None),
    ("env hub online", {"env": {"HF_HUB_OFFLINE": "0"}}, "expert 'coder' field 'env.HF_HUB_OFFLINE'", None),
    ("env LD_PRELOAD", {"env": {"LD_PRELOAD": "/tmp/x.so"}}, "expert 'coder' field 'env.LD_PRELOAD'", None),
    ("env the start method", {"env": {"LLMHOST_VLLM_START": "spawn"}}, "expert 'coder' field 'env.LLMHOST_VLLM_START'",
     None),
    ("env PYTHONPATH", {"env": {"PYTHONPATH": "/tmp"}}, "expert 'coder' field 'env.PYTHONPATH'", None),
    # secrets
    ("engine api_key", {"engine": {"api_key": "sk-live-0123456789"}}, "expert 'coder' field 'api_key'",
     "sk-live-0123456789"),
    ("engine api_key as a list", {"engine": {"api_key": ["sk-live-0123456789"]}}, "expert 'coder' field 'api_key'",
     "sk-live-0123456789"),
    ("engine hf_token", {"engine": {"hf_token": "hf_abcdefghijklmnop"}}, "expert 'coder' field 'hf_token'",
     "hf_abcdefghijklmnop"),
    # paths
    ("model with ..", {"model": "/srv/models/../../etc"}, "expert 'coder' field 'model'", None),
    ("model with a colon", {"model": "/srv/models/a:/etc"}, "expert 'coder' field 'model'", None),
    ("model with a space", {"model": "/srv/my models/a"}, "expert 'coder' field 'model'", None),
    ("model with a specifier", {"model": "/srv/%h/m"}, "expert 'coder' field 'model'", None),
    ("model /", {"model": "/"}, "expert 'coder' field 'model'", None),
    ("model in /etc", {"model": "/etc/ssl"}, "expert 'coder' field 'model'", None),
    ("model in /tmp", {"model": "/tmp/m"}, "expert 'coder' field 'model'", None),
    ("model in /proc", {"model": "/proc/self/root"}, "expert 'coder' field 'model'", None),
    ("model with //", {"model": "/srv//models/b"}, "expert 'coder' field 'model'", None),
]

LAZY_CASES: list[tuple[str, Any, str]] = [
    ("auto unload beyond systemd", {"enabled": True, "auto_unload_after_s": 10**12},
     "lazy_loading field 'auto_unload_after_s'"),
    ("lazy loading a string", "yes", "lazy_loading: must be a mapping"),
    ("max_waiting a float", {"enabled": True, "auto_unload_after_s": 60, "max_waiting": 1.5},
     "lazy_loading field 'max_waiting'"),
]

# (case id, inventory variables llmhost_<name>, the text the refusal must hold)
SHARED_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("config dir /tmp", {"config_dir": "/tmp"}, "llmhost_config_dir"),
    ("config dir with ..", {"config_dir": "/etc/llmhost/../../tmp"}, "llmhost_config_dir"),
    ("config dir /etc", {"config_dir": "/etc"}, "llmhost_config_dir"),
    ("config dir relative", {"config_dir": "etc/llmhost"}, "llmhost_config_dir"),
    ("config dir a list", {"config_dir": ["/etc/llmhost"]}, "llmhost_config_dir"),
    ("venv /usr", {"venv": "/usr"}, "llmhost_venv"),
    ("venv in /var/tmp", {"venv": "/var/tmp/venv"}, "llmhost_venv"),
    ("venv is the config dir", {"venv": "/opt/llmhost", "config_dir": "/opt/llmhost"}, "llmhost_venv"),
    ("front door on ssh", {"frontdoor_port": 22}, "llmhost_frontdoor_port"),
    ("front door on Prometheus", {"frontdoor_port": 9090}, "llmhost_frontdoor_port"),
    ("metrics on node exporter", {"frontdoor_metrics_port": 9100}, "llmhost_frontdoor_metrics_port"),
    ("metrics on the front door", {"frontdoor_metrics_port": 8082}, "llmhost_frontdoor_metrics_port"),
    ("front door port a word", {"frontdoor_port": "http"}, "llmhost_frontdoor_port"),
    ("metrics on every address", {"frontdoor_metrics_bind": "0.0.0.0"}, "llmhost_frontdoor_metrics_bind"),
    ("metrics on *", {"frontdoor_metrics_bind": "*"}, "llmhost_frontdoor_metrics_bind"),
    ("metrics bind a host name", {"frontdoor_metrics_bind": "metrics.example.org"}, "llmhost_frontdoor_metrics_bind"),
    ("metrics note too short", {"frontdoor_metrics_bind": "10.0.0.5", "frontdoor_metrics_exposure_note": "ok"},
     "llmhost_frontdoor_metrics_bind"),
    ("vllm version a path", {"vllm_version": "../../x"}, "llmhost_vllm_version"),
]

EXPECT_CASES: list[tuple[str, Any, str]] = [
    ("host without memory_gib", {"cpus": 32}, "llmhost_host_expect field 'memory_gib'"),
    ("cpus as words", {"cpus": "32 cores", "memory_gib": 128}, "llmhost_host_expect field 'cpus'"),
    ("cpus beyond any host", {"cpus": 10**9, "memory_gib": 128}, "llmhost_host_expect field 'cpus'"),
    ("memory 1e300", {"cpus": 32, "memory_gib": 1e300}, "llmhost_host_expect field 'memory_gib'"),
    ("an unknown CPU", {"cpus": 32, "memory_gib": 128, "cpu": "epyc-9999"}, "llmhost_host_expect field 'cpu'"),
    ("an unknown arch", {"cpus": 32, "memory_gib": 128, "arch": "sparc"}, "llmhost_host_expect field 'arch'"),
    ("a string", "32", "llmhost_host_expect: must be a mapping"),
    ("an unknown key", {"cpus": 32, "memory_gib": 128, "gpus": 1}, "llmhost_host_expect field 'gpus'"),
]


# (case id, role, its variables, the variable the refusal names)
ROLE_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("Prometheus on every address", "monitoring", {"monitoring_listen": "0.0.0.0:9090"}, "monitoring_listen"),
    ("node exporter on every address", "monitoring", {"monitoring_node_exporter_listen": "[::]:9100"},
     "monitoring_node_exporter_listen"),
    ("a listen address injecting a flag", "monitoring", {"monitoring_listen": "127.0.0.1:9090 --web.enable-admin-api"},
     "monitoring_listen"),
    ("a listen address by name", "monitoring", {"monitoring_listen": "prom.example.org:9090"}, "monitoring_listen"),
    ("a scrape interval in words", "monitoring", {"monitoring_scrape_interval": "often"}, "monitoring_scrape_interval"),
    ("a retention with a newline", "monitoring", {"monitoring_retention": "15d\n--x"}, "monitoring_retention"),
    ("a probe interval in words", "monitoring", {"monitoring_probe_interval": "every hour"}, "monitoring_probe_interval"),
    ("an error ratio of 5", "monitoring", {"monitoring_error_ratio": 5}, "monitoring_error_ratio"),
    ("a textfile dir with ..", "monitoring", {"monitoring_textfile_dir": "/var/lib/../../etc"}, "monitoring_textfile_dir"),
    ("no smoke requests", "smoke_test", {"smoke_test_repeat": 0}, "smoke_test_repeat"),
    ("a million streams", "smoke_test", {"smoke_test_concurrency": 10**6}, "smoke_test_concurrency"),
    ("a user with a space", "vllm_experts", {"vllm_experts_user": "llm user"}, "vllm_experts_user"),
    ("a state dir outside /var/lib", "vllm_experts", {"vllm_experts_state_subdir": "../etc"}, "vllm_experts_state_subdir"),
    ("restart every 0 s", "vllm_experts", {"vllm_experts_restart_sec": 0}, "vllm_experts_restart_sec"),
    ("a max-worse the smoke command refuses", "smoke_test", {"smoke_test_gate_max_worse": 50},
     "smoke_test_gate_max_worse"),
    ("n cap of 0", "frontdoor", {"frontdoor_max_n": 0}, "frontdoor_max_n"),
    ("a JSON depth cjson refuses", "frontdoor", {"frontdoor_max_json_depth": 0}, "frontdoor_max_json_depth"),
    ("a body larger than the buffer", "frontdoor", {"frontdoor_max_body": 262144}, "frontdoor_max_body"),
    ("a negative per-source limit", "frontdoor", {"frontdoor_per_source_maxconn": -1}, "frontdoor_per_source_maxconn"),
    ("a hold of a day", "frontdoor", {"frontdoor_hold_s": 86400}, "frontdoor_hold_s"),
]


def changed(change: dict[str, Any]) -> list[dict[str, Any]]:
    ex = good()
    for k, v in change.items():
        if k in ("engine", "env") and isinstance(v, dict):
            ex[1].setdefault(k, {}).update(v)
        else:
            ex[1][k] = v
    return ex


def refusal(fn: Any) -> list[str]:
    try:
        fn()
    except ConfigError as e:
        return e.problems
    raise AssertionError("accepted")


def write_inventory(root: Path, variables: dict[str, Any]) -> Path:
    inv = root / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text("llm_hosts:\n  hosts:\n    h1:\n      ansible_connection: local\n")
    (inv / "group_vars" / "all.json").write_text(json.dumps(variables))
    return inv


def cli_refuses(tmp_path: Path, capsys: Any, variables: dict[str, Any], expect: str, secret: str | None = None) -> None:
    """`llmhost plan` on an inventory with these variables: exit 1, the field named, no
    traceback, no exception's name for a message, nothing written beside the inventory."""
    inv = write_inventory(tmp_path, {"llmhost_host_expect": EXPECT, **variables})
    before = sorted(p for p in tmp_path.rglob("*"))
    rc = main(["plan", "-i", str(inv)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 1, text[-2000:]
    assert expect in text, text[-2000:]
    assert "Traceback" not in text
    for name in ("KeyError", "ValueError", "TypeError", "OverflowError", "MemoryError", "AttributeError"):
        assert name not in text, text[-2000:]
    if secret:
        assert secret not in text
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case,change,expect,secret", EXPERT_CASES, ids=[c[0] for c in EXPERT_CASES])
def test_a_hostile_expert_is_refused_naming_the_expert_and_the_field(tmp_path, capsys, case, change, expect, secret):
    problems = refusal(lambda: build_plan(changed(change), None, CAPS, HOST))
    assert any(expect in p for p in problems), (case, problems)
    assert all(p.startswith(("expert '", "llmhost_", "lazy_loading")) for p in problems), problems
    if secret:
        assert not any(secret in p for p in problems), problems
    cli_refuses(tmp_path, capsys, {"llmhost_experts": changed(change)}, expect, secret)


@pytest.mark.parametrize("case,lazy,expect", LAZY_CASES, ids=[c[0] for c in LAZY_CASES])
def test_hostile_lazy_loading_is_refused(tmp_path, capsys, case, lazy, expect):
    problems = refusal(lambda: build_plan(good(), lazy, CAPS, HOST))
    assert any(expect in p for p in problems), (case, problems)
    cli_refuses(tmp_path, capsys, {"llmhost_experts": good(), "llmhost_lazy_loading": lazy}, expect)


@pytest.mark.parametrize("case,shared,expect", SHARED_CASES, ids=[c[0] for c in SHARED_CASES])
def test_hostile_shared_inputs_are_refused_naming_the_variable(tmp_path, capsys, case, shared, expect):
    problems = refusal(lambda: parse_shared(shared))
    assert any(p.startswith(expect) for p in problems), (case, problems)
    cli_refuses(tmp_path, capsys, {"llmhost_experts": good(), **{f"llmhost_{k}": v for k, v in shared.items()}},
                expect)


@pytest.mark.parametrize("case,expect_raw,expect", EXPECT_CASES, ids=[c[0] for c in EXPECT_CASES])
def test_a_hostile_host_description_is_refused_naming_the_field(tmp_path, capsys, case, expect_raw, expect):
    problems = refusal(lambda: parse_expect(expect_raw))
    assert any(expect in p for p in problems), (case, problems)
    cli_refuses(tmp_path, capsys, {"llmhost_experts": good(), "llmhost_host_expect": expect_raw}, expect)


def test_the_good_inputs_still_plan(tmp_path, capsys):
    """The controls: the same tables' good neighbours pass (the refusals above are not of everything)."""
    build_plan(good(), None, CAPS, HOST)
    ok = changed({"engine": {"lora_modules": ["a=/srv/l"], "tokenizer": "/srv/models/tok",
                             "allow_credentials": False}, "env": {"HF_TOKEN": "hf_x", "OMP_DISPLAY_ENV": "false"},
                  "model": "/srv/models/org+name@v1/b_c-d.e"})
    build_plan(ok, None, CAPS, HOST)
    parse_shared({"frontdoor_metrics_bind": "10.0.0.5",
                  "frontdoor_metrics_exposure_note": "nftables: only 10.0.0.0/24 reaches 8405"})
    parse_shared({"frontdoor_port": 443, "config_dir": "/opt/llmhost/etc", "venv": "/opt/llmhost/venv"})
    assert parse_expect({"cpus": 32, "memory_gib": 128, "cpu": "neoverse-v2", "arch": "aarch64"})["cpus"] == 32
    inv = write_inventory(tmp_path, {"llmhost_experts": ok, "llmhost_host_expect": EXPECT})
    assert main(["plan", "-i", str(inv)]) == 0, capsys.readouterr().err


def test_the_owned_lists_cover_what_the_units_fix():
    """One list of owned env names: everything a unit fixes is in it, and a list value
    never becomes several argv tokens for a single-value flag."""
    assert set(FIXED_ENV) <= OWNED_ENV
    assert {"model", "host", "port", "served_model_name", "uds", "headless"} <= OWNED_FLAGS
    single = CAPS["flags"]["tokenizer"]
    assert value_problem("tokenizer", ["a", "b"], single) is not None
    many = CAPS["flags"]["lora_modules"]
    assert value_problem("lora_modules", ["a=/x", "b=/y"], many) is None
    assert flag_argv("lora_modules", ["a=/x", "b=/y"], many) == ["--lora-modules", "a=/x", "b=/y"]


@pytest.mark.parametrize("name,secret", [
    ("HF_TOKEN", True), ("OPENAI_API_KEY", True), ("DB_PASSWORD", True), ("KEY", True), ("DB_PASS", True),
    ("X_APIKEY", True), ("BASIC_AUTH", True), ("SSH_PASSPHRASE", True), ("HFTOKEN", True), ("CLIENT_SECRET_ID", True),
    ("api_key", True), ("hf_token", True),
    ("VLLM_CPU_KVCACHE_SPACE", False), ("MAX_TOKENS", False), ("KEYBOARD", False), ("AUTHOR", False),
    ("max_num_batched_tokens", False), ("long_prefill_token_threshold", False), ("TOKENIZERS_PARALLELISM", False),
])
def test_one_list_says_what_a_secret_is(name, secret):
    assert is_secret_name(name) is secret


def test_secret_env_values_are_redacted_from_the_effective_config():
    from llmhost.plan import REDACTED, effective_config

    ex = changed({"env": {"DB_PASS": "p4ss-word-1", "X_APIKEY": "k-123456", "BASIC_AUTH": "u:p"}})
    cfg = json.dumps(effective_config(build_plan(ex, None, CAPS, HOST).to_dict()))
    assert "p4ss-word-1" not in cfg and "k-123456" not in cfg and "u:p" not in cfg
    assert cfg.count(REDACTED) == 3


def role_defaults(role: str) -> dict[str, Any]:
    """The role's shipped defaults for every variable its rules read."""
    import yaml

    from llmhost.inputs import names

    defaults = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles" / role / "defaults" / "main.yml").read_text())
    return {n: defaults[n] for n in names(role)}


@pytest.mark.parametrize("case,role,values,expect", ROLE_CASES, ids=[c[0] for c in ROLE_CASES])
def test_a_roles_hostile_input_is_refused_naming_the_variable(case, role, values, expect):
    from llmhost.inputs import problems

    out = problems(role, {**role_defaults(role), **values})
    assert len(out) == 1 and out[0].startswith(expect + ":"), (case, out)


@pytest.mark.parametrize("role", ["frontdoor", "monitoring", "smoke_test", "vllm_experts"])
def test_the_roles_shipped_defaults_pass_and_no_rule_is_skipped(role):
    from llmhost.inputs import names, problems

    assert problems(role, role_defaults(role)) == []
    missing = dict(role_defaults(role))
    missing.pop(names(role)[-1])
    assert problems(role, missing) == [f"{names(role)[-1]}: not handed to the check (llmhost.inputs.names({role!r}))"]


def test_the_roles_good_inputs_and_an_exposure_note_pass():
    from llmhost.inputs import problems

    assert problems("monitoring", {**role_defaults("monitoring"), "monitoring_probe_interval": "1h 30min",
                                   "monitoring_error_ratio": "0.05"}) == []
    assert problems("monitoring", {**role_defaults("monitoring"), "monitoring_listen": "10.0.0.5:9090",
                                   "monitoring_exposure_note": "nftables: only 10.0.0.0/24 reaches 9090"}) == []
    assert problems("smoke_test", {**role_defaults("smoke_test"), "smoke_test_repeat": "5"}) == []


def test_the_tables_hold_at_least_sixty_cases():
    n = len(EXPERT_CASES) + len(LAZY_CASES) + len(SHARED_CASES) + len(EXPECT_CASES) + len(ROLE_CASES)
    assert n >= 60, n
    assert len({c[0] for c in EXPERT_CASES + LAZY_CASES + SHARED_CASES + EXPECT_CASES + ROLE_CASES}) == n


@pytest.mark.parametrize("name", ["HF_HUB_OFFLINE", "LD_PRELOAD", "LLMHOST_VLLM_START", "PYTHONPATH"])
def test_the_roles_extra_env_cannot_set_what_the_toolkit_owns(name):
    from llmhost.systemd import expert_env

    with pytest.raises(ValueError, match=f"vllm_experts_extra_env: {name} is set by the toolkit"):
        expert_env({"VLLM_CPU_KVCACHE_SPACE": "1"}, {name: "x"}, None, "coder")
    assert 'OMP_DISPLAY_ENV="false"' in expert_env({"VLLM_CPU_KVCACHE_SPACE": "1"}, {"OMP_DISPLAY_ENV": "false"}, None)

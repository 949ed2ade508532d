"""Pruning, rollback helpers, secrets and the key file: the pure parts of the failure paths."""

from __future__ import annotations

import os

import pytest

from llmhost.cli import main
from llmhost.plan import REDACTED, redact_env
from llmhost.systemd import expert_of_unit, port_holders, stale_experts


@pytest.mark.parametrize("name,expert", [
    ("llmhost-expert-api.service", "api"),
    ("llmhost-expert-api-proxy.service", "api"),
    ("llmhost-expert-api-proxy.socket", "api"),
    ("llmhost-expert-api-standby.service", "api"),
    ("llmhost-expert--standby.service", None),
    ("llmhost-expert-api.socket", None),          # not a file the toolkit writes
    ("llmhost-expert-.service", None),
    ("llmhost-expert--proxy.service", None),
    ("llmhost-experts.slice", None),
    ("other.service", None),
])
def test_unit_names_map_to_their_expert(name, expert):
    assert expert_of_unit(name) == expert


def test_a_lazy_experts_proxy_is_never_read_as_another_expert():
    units = ["llmhost-expert-api.service", "llmhost-expert-api-proxy.service", "llmhost-expert-api-proxy.socket",
             "llmhost-expert-old.service", "llmhost-expert-gone-proxy.socket"]
    assert stale_experts(units, ["api"]) == ["gone", "old"]
    assert stale_experts(units, ["api", "old", "gone"]) == []


def test_only_leaving_experts_on_a_wanted_port_are_stopped_first():
    previous = {"experts": [{"expert_id": "old", "port": 8101, "backend_port": 8101},
                            {"expert_id": "lazy-old", "port": 8103, "backend_port": 18103},
                            {"expert_id": "elsewhere", "port": 8200, "backend_port": 8200}]}
    plan = {"experts": [{"expert_id": "new", "port": 8101, "backend_port": 8101},
                        {"expert_id": "b", "port": 8102, "backend_port": 18103}]}
    assert port_holders(previous, ["old", "lazy-old", "elsewhere"], plan) == ["lazy-old", "old"]
    assert port_holders(previous, [], plan) == []
    assert port_holders("not json", ["old"], plan) == []


def test_secret_env_values_never_reach_experts_json():
    out = redact_env([{"expert_id": "a", "env": {"HF_TOKEN": "hf_x", "OPENAI_API_KEY": "k", "VLLM_CPU_KVCACHE_SPACE": "4",
                                                 "DB_PASSWORD": "p", "KEY": "k2"}}])
    env = out[0]["env"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert {env[k] for k in ("HF_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "KEY")} == {REDACTED}


def test_smoke_reads_its_key_only_from_a_private_file(tmp_path, capsys):
    f = tmp_path / "key"
    f.write_text("sk-1\n")
    os.chmod(f, 0o644)
    rc = main(["smoke", "--config", str(tmp_path / "none.json"), "--api-key-file", str(f)])
    err = capsys.readouterr().err
    assert rc == 1 and "no such file" in err  # the config is read first: no request was made
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"experts": []}')
    rc = main(["smoke", "--config", str(cfg), "--api-key-file", str(f), "--url", "http://127.0.0.1:9"])
    assert rc == 1 and "chmod 600" in capsys.readouterr().err

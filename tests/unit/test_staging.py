"""Staging overrides change scale only; the rehearsal's overlay uses nothing else."""

from pathlib import Path

import pytest
import yaml

from llmhost.experts import ConfigError
from llmhost.staging import STAGING_KEYS, apply

ROOT = Path(__file__).resolve().parents[2]
EXPERTS = [{"expert_id": "a", "model": "/home/x/a", "domain": "general", "priority": 2,
            "engine": {"max_model_len": 16384}},
           {"expert_id": "b", "model": "/home/x/b", "domain": "coding", "priority": 1}]


def test_star_and_per_expert_overrides_apply_without_touching_the_input():
    out = apply(EXPERTS, {"experts": {"*": {"weights_gib": 0.3, "compile": "eager"},
                                      "a": {"max_model_len": 8192}}})
    assert out[0]["engine"] == {"max_model_len": 8192} and out[0]["weights_gib"] == 0.3
    assert out[0]["compile"] == "eager" and out[1]["compile"] == "eager" and out[1]["model"] == "/home/x/b"
    assert "engine" not in out[1]
    assert EXPERTS[0]["engine"] == {"max_model_len": 16384}


def test_anything_but_a_scale_key_is_refused_naming_expert_and_field():
    with pytest.raises(ConfigError) as e:
        apply(EXPERTS, {"experts": {"a": {"profile": "legacy"}, "zz": {"weights_gib": 1}}})
    assert "llmhost_staging expert 'a' field 'profile': not a scale key" in str(e.value)
    assert "llmhost_staging expert 'zz': no such expert" in str(e.value)
    with pytest.raises(ConfigError):
        apply(EXPERTS, {"experts": {}, "frontdoor_bind": "*"})


def test_the_rehearsal_overlay_changes_only_declared_scale_keys():
    overlay = yaml.safe_load((ROOT / "molecule/production/vars/overlay.yml").read_text())
    # scale (llmhost_staging, the expected host) and where the software comes from
    allowed_top = {"llmhost_staging", "llmhost_host_expect", "vllm_install_source",
                   "vllm_install_extra_index_urls", "vllm_install_find_links"}
    assert set(overlay) <= allowed_top, set(overlay) - allowed_top
    for eid, keys in overlay["llmhost_staging"]["experts"].items():
        assert set(keys) <= set(STAGING_KEYS), (eid, set(keys) - set(STAGING_KEYS))
    assert set(overlay.get("llmhost_host_expect", {})) <= {"cpus", "memory_gib"}
    prod = yaml.safe_load((ROOT / "inventories/production/group_vars/llm_hosts/experts.yml").read_text())
    apply(prod["llmhost_experts"], overlay["llmhost_staging"])  # every id it names exists in production

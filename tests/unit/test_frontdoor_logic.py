import hashlib

import pytest

from llmhost import frontdoor

PLAN = {"default_expert": "general", "experts": [
    {"expert_id": "coder", "domain": "coding", "priority": 9, "port": 8102, "names": ["coder"],
     "argv": ["--max-num-seqs", "4"], "preload": True, "model": "/m/a"},
    {"expert_id": "general", "domain": "general", "priority": 5, "port": 8101,
     "names": ["general", "SmolLM2"], "argv": [], "preload": False, "model": "/m/b"},
]}


def test_default_comes_from_the_plan():
    assert frontdoor.default_expert(PLAN) == "general"


def test_routes_map_and_list():
    r = frontdoor.routes(PLAN)
    assert r[0]["maxconn"] == 4 and r[0]["maxqueue"] == 16 and r[1]["maxconn"] == 8 and r[1]["lazy"]
    assert frontdoor.model_map(PLAN) == "coder be_coder\ngeneral be_general\nSmolLM2 be_general\n"
    lst = frontdoor.models_list(PLAN)
    assert [m["id"] for m in lst["data"]] == ["coder", "general"] and lst["object"] == "list"
    assert lst["data"][1]["llmhost"]["aliases"] == ["SmolLM2"]


def test_alias_clash_and_key_hashes():
    bad = {"experts": [dict(PLAN["experts"][0], names=["x"]), dict(PLAN["experts"][1], names=["x"])]}
    with pytest.raises(ValueError, match="names two experts"):
        frontdoor.model_map(bad)
    assert frontdoor.key_hashes(["sk-1"]) == [hashlib.sha256(b"sk-1").hexdigest()]
    with pytest.raises(ValueError):
        frontdoor.key_hashes([" "])

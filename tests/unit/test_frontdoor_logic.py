import json

import pytest

from llmhost import apikeys, frontdoor

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


def test_alias_clash():
    bad = {"experts": [dict(PLAN["experts"][0], names=["x"]), dict(PLAN["experts"][1], names=["x"])]}
    with pytest.raises(ValueError, match="names two experts"):
        frontdoor.model_map(bad)


def test_closed_by_default_a_network_bind_needs_keys_or_an_explicit_anonymous():
    from llmhost.frontdoor import exposure_problems, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("*") and not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    (p,) = exposure_problems("*", 8082, [], False)
    assert p.startswith("frontdoor_bind: '*' opens port 8082 to the network with no API key")
    assert exposure_problems("*", 8082, ["sk-1"], False) == []
    assert exposure_problems("*", 8082, [], True) == []
    assert exposure_problems("127.0.0.1", 8082, [], False) == []
    assert exposure_problems("*", 8082, ["sk-1", " "], False) == ["llmhost_api_keys: an empty key"]
    assert "absolute path" in exposure_problems("*", 8082, ["k"], False, "cert.pem")[0]


def test_model_list_shows_names_not_host_paths():
    from llmhost.frontdoor import models_list

    plan = {"experts": [{"expert_id": "phi-4-mini", "model": "/home/elect/models/phi-4-mini",
                         "names": ["phi-4-mini", "phi4_fast"], "preload": True}]}
    text = json.dumps(models_list(plan))
    assert "/home" not in text and "phi4_fast" in text


@pytest.mark.parametrize("keys,expected", [
    ("sk-abc", "a list of keys (- sk-... or - {id: ..., key: ...}), not a single str"),
    (["sk-a b"], "[1]: the key holds a space, a comma or a character outside printable ASCII"),
    (["sk-1", "sk-a,b"], "[2]: the key holds a space, a comma"),
    (["sk-clé"], "[1]: the key holds a space, a comma or a character outside printable ASCII"),
    (["sk-\x01"], "[1]: the key holds"),
    ([123], "[1]: the key is not a string"),
])
def test_a_key_no_client_could_send_as_one_bearer_token_is_refused(keys, expected):
    with pytest.raises(ValueError) as e:
        apikeys.parse_keys(keys, PLAN)
    assert expected in str(e.value) and str(e.value).startswith("llmhost_api_keys")


def test_each_route_says_its_runner():
    plan = {"experts": [dict(PLAN["experts"][0]), dict(PLAN["experts"][1], runner="pooling")]}
    routes = frontdoor.routes(plan)
    assert [r["runner"] for r in routes] == ["generate", "pooling"]
    assert [r["wrong_endpoint"][0] for r in routes] == ["if { path /v1/embeddings }", "unless { path /v1/embeddings }"]
    lazy = {"experts": [dict(PLAN["experts"][0], preload=False)]}
    assert [r["hold"] for r in routes] == [True, False] and frontdoor.routes(lazy)[0]["hold"] is False   # general is lazy


@pytest.mark.parametrize("ports,caps", [
    ((8082, 8405), "CAP_SETUID CAP_SETGID"),
    ((443, 8405), "CAP_SETUID CAP_SETGID CAP_NET_BIND_SERVICE"),
    (("8082", "80"), "CAP_SETUID CAP_SETGID CAP_NET_BIND_SERVICE"),
])
def test_haproxy_keeps_the_bind_capability_only_for_a_port_below_1024(ports, caps):
    from llmhost.frontdoor import haproxy_capabilities
    assert haproxy_capabilities(ports) == caps


@pytest.mark.parametrize("maxconn,share,lazy,cap", [
    (8, 0.75, False, 6), (4, 0.5, False, 2), (2, 0.75, False, 1), (3, 0.1, False, 1),
    (8, 1.0, False, 0),   # off
    (1, 0.75, False, 0),  # one slot cannot be shared
    (8, 0.75, True, 0),   # a lazy expert's proxy holds its clients through a cold start
])
def test_a_clients_share_of_an_experts_slots(maxconn, share, lazy, cap):
    assert frontdoor.fair_cap(maxconn, share, lazy) == cap

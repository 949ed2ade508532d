"""Named API keys (llmhost.apikeys): the checks name the entry, its id and the field, never
echo a key; the map files the front door reads hold only hashes and ids."""

import hashlib
import json

import pytest

from llmhost import apikeys

PLAN = {"experts": [{"expert_id": "general", "names": ["general", "SmolLM2"]},
                    {"expert_id": "coder", "names": ["coder"]}, {"expert_id": "router", "names": ["router"]}]}
SECRET = "sk-S3CRET-value"


def h(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_bare_and_named_keys_become_maps_of_hashes():
    files = apikeys.key_files([SECRET, {"id": "team-a", "sha256": h("sk-a").upper(), "models": ["SmolLM2"],
                                        "requests_per_min": 7, "max_parallel": 2, "priority": "high"}], PLAN)
    assert files["llmhost-keys.map"] == f"{h(SECRET)} key-1\n{h('sk-a')} team-a\n"
    assert files["llmhost-key-models.map"] == "key-1/general 1\nkey-1/coder 1\nkey-1/router 1\nteam-a/general 1\n"
    assert files["llmhost-key-limits.map"] == "key-1 0:0:0:60\nteam-a 7:2:-1:60\n"
    assert SECRET not in "".join(files.values())
    lists = {k: [m["id"] for m in json.loads(v)["data"]] for k, v in json.loads(files["llmhost-key-models.json"]).items()}
    assert lists == {"key-1": ["general", "coder", "router"], "team-a": ["general"]}


@pytest.mark.parametrize("raw,field", [
    ("sk-abc", "llmhost_api_keys: a list of keys"),
    ({"id": "x"}, "llmhost_api_keys: a list of keys"),
    (["sk-a b"], "llmhost_api_keys[1]: the key holds a space"),
    ([{"key": "sk-1"}], "llmhost_api_keys[1] field 'id'"),
    ([{"id": "-bad", "key": "sk-1"}], "llmhost_api_keys[1] field 'id'"),
    ([{"id": "a" * 65, "key": "sk-1"}], "llmhost_api_keys[1] field 'id'"),
    ([{"id": "t\nx", "key": "sk-1"}], "llmhost_api_keys[1] field 'id'"),
    ([{"id": "t"}], "llmhost_api_keys[1] (id t): give exactly one of 'key'"),
    ([{"id": "t", "key": "sk-1", "sha256": h("sk-1")}], "(id t): give exactly one of 'key'"),
    ([{"id": "t", "key": SECRET + " x"}], "(id t) field 'key': holds a space"),
    ([{"id": "t", "key": 12}], "(id t) field 'key': is not a string"),
    ([{"id": "t", "sha256": "abc"}], "(id t) field 'sha256': 64 hex digits"),
    ([{"id": "t", "key": "sk-1", "models": "general"}], "(id t) field 'models': a non-empty list"),
    ([{"id": "t", "key": "sk-1", "models": []}], "(id t) field 'models': a non-empty list"),
    ([{"id": "t", "key": "sk-1", "requests_per_min": 0}], "(id t) field 'requests_per_min': a whole number 1.."),
    ([{"id": "t", "key": "sk-1", "requests_per_min": "60"}], "(id t) field 'requests_per_min'"),
    ([{"id": "t", "key": "sk-1", "requests_per_min": 10 ** 9}], "(id t) field 'requests_per_min'"),
    ([{"id": "t", "key": "sk-1", "max_parallel": True}], "(id t) field 'max_parallel'"),
    ([{"id": "t", "key": "sk-1", "max_parallel": -1}], "(id t) field 'max_parallel'"),
    ([{"id": "t", "key": "sk-1", "priority": "urgent"}], "(id t) field 'priority': one of high, normal, low"),
    ([{"id": "t", "key": "sk-1", "rate": 5}], "(id t): unknown field(s) (a name, not shown"),
    ([{"id": "t", "key": "sk-1", "requests_per_minute": 5}], "unknown field(s) requests_per_minute (did you mean "
                                                             "requests_per_min?)"),
    ([{"id": "t", "key": "sk-1"}, {"id": "t", "key": "sk-2"}], "llmhost_api_keys: id 't' is used twice"),
    ([{"id": "t", "key": "sk-dup"}, {"id": "u", "sha256": h("sk-dup")}], "ids 't' and 'u' have the same key"),
    (["sk-1", "sk-1"], "ids 'key-1' and 'key-2' have the same key"),
])
def test_a_key_list_that_cannot_work_is_refused_naming_entry_and_field(raw, field):
    if isinstance(raw, list):
        raw = [dict(e, key=SECRET + e["key"]) if isinstance(e, dict) and isinstance(e.get("key"), str)
               and "sk-1" in e["key"] else e for e in raw]
    with pytest.raises(apikeys.KeysError) as e:
        apikeys.parse_keys(raw, PLAN)
    text = str(e.value)
    assert field in text, text
    assert SECRET not in text and "Traceback" not in text
    assert apikeys.key_problems(raw, PLAN) == e.value.problems


def test_no_keys_is_no_key():
    assert apikeys.parse_keys(None, PLAN) == [] and apikeys.parse_keys([], PLAN) == []


@pytest.mark.parametrize("entry", [
    {"id": "t", "sha256": SECRET},                       # the key put where its hash goes
    {"id": SECRET + " x", "key": "sk-other"},            # ... where its id goes (not a valid id)
    {"id": "t", "key": "sk-other", SECRET: 1},           # ... as a field name (`- sk-...: x`)
    {"id": "t", SECRET.lower().replace("-", "_"): 1},    # ... one that looks like a name
])
def test_a_key_pasted_into_the_wrong_field_is_never_echoed(entry):
    problems = apikeys.key_problems([entry], PLAN)
    assert problems and not any(SECRET.lower().replace("-", "_") in p.lower() or SECRET in p for p in problems), \
        problems


def test_auto_is_no_model_a_key_is_given():
    plan = {"experts": [{"expert_id": "general", "names": ["general", "auto"]},
                        {"expert_id": "coder", "names": ["coder", "auto"]}]}
    (p,) = apikeys.key_problems([{"id": "t", "key": "sk-1", "models": ["auto"]}], plan)
    assert "(id t) field 'models': 'auto' is routed by meaning" in p


def test_the_smoke_test_sends_a_clear_key_that_may_call_every_expert():
    keys = [{"id": "hashed", "sha256": h("sk-h")}, {"id": "narrow", "key": "sk-n", "models": ["coder"]},
            {"id": "rated", "key": "sk-r", "requests_per_min": 5}, {"id": "ops", "key": "sk-ops"}]
    assert apikeys.smoke_key(keys, PLAN) == "sk-ops"
    assert apikeys.smoke_key(["sk-plain"], PLAN) == "sk-plain"
    assert apikeys.smoke_key(keys[:3], PLAN) == "" and apikeys.smoke_key([], PLAN) == ""
    two = [{"id": "one-at-a-time", "key": "sk-1", "max_parallel": 1}, {"id": "ops", "key": "sk-ops"}]
    assert apikeys.smoke_key(two, PLAN, 1) == "sk-1" and apikeys.smoke_key(two, PLAN, 2) == "sk-ops"


def test_a_model_this_host_does_not_serve_grants_nothing_here_and_is_said():
    """One key list serves a fleet whose hosts serve different experts: not an error."""
    raw = [{"id": "t", "key": "sk-1", "models": ["gpt-4", "coder"]}]
    assert apikeys.key_problems(raw, PLAN) == []
    assert apikeys.key_notes(raw, PLAN) == ["llmhost_api_keys[1] (id t) field 'models': gpt-4 is no expert's id or "
                                            "name on this host (experts: general, coder, router): granted nothing here"]
    assert apikeys.key_files(raw, PLAN)["llmhost-key-models.map"] == "t/coder 1\n"

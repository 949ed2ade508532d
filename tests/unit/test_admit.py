"""The lazy experts' admission gate: at most max_loaded_experts, LRU idle eviction, refusal."""

from llmhost.admit import Decision, Usage, decide, parse_haproxy_metrics, unit_states

EXPERTS = [{"expert_id": "phi", "preload": True}, {"expert_id": "mistral", "preload": True},
           {"expert_id": "qwen", "preload": True}, {"expert_id": "gemma", "preload": False},
           {"expert_id": "aya", "preload": False}]
PRELOADED_UP = {"phi": "active", "mistral": "active", "qwen": "active"}


def test_room_left_admits_without_stopping_anything():
    d = decide("gemma", EXPERTS, 4, {**PRELOADED_UP, "gemma": "activating", "aya": "inactive"}, {})
    assert d == Decision(True, None, "3 of 4 loaded: room for gemma")


def test_full_stops_the_idle_lazy_expert_never_a_preloaded_one():
    states = {**PRELOADED_UP, "gemma": "active", "aya": "activating"}
    usage = {"phi": Usage(0, 9999), "gemma": Usage(0, 42)}   # phi idler, but preloaded
    d = decide("aya", EXPERTS, 4, states, usage)
    assert d.admit and d.evict == "gemma" and "last request 42 s ago" in d.why


def test_least_recently_used_of_several_idle_lazy_experts():
    experts = EXPERTS + [{"expert_id": "x", "preload": False}]
    states = {**PRELOADED_UP, "gemma": "active", "aya": "active"}
    d = decide("x", experts, 5, states, {"gemma": Usage(0, 30), "aya": Usage(0, 300)})
    assert d.evict == "aya"


def test_full_and_busy_refuses_with_the_reason():
    states = {**PRELOADED_UP, "gemma": "active"}
    d = decide("aya", EXPERTS, 4, states, {"gemma": Usage(2, 0)})
    assert not d.admit and d.evict is None
    assert "4 of max_loaded_experts 4 experts are loaded (phi, mistral, qwen, gemma)" in d.why


def test_a_starting_lazy_expert_holds_its_place():
    # gemma is still loading (activating): it is not idle, and it counts
    d = decide("aya", EXPERTS, 4, {**PRELOADED_UP, "gemma": "activating"}, {"gemma": Usage(0, 1e9)})
    assert not d.admit


def test_without_front_door_numbers_a_loaded_lazy_expert_counts_as_idle():
    # the front door is down, so nothing is in flight through it; a lazy expert reloads on demand
    d = decide("aya", EXPERTS, 4, {**PRELOADED_UP, "gemma": "active"}, {})
    assert d.admit and d.evict == "gemma"


def test_parse_haproxy_metrics():
    text = """# HELP haproxy_backend_current_sessions ...
haproxy_backend_current_sessions{proxy="be_gemma"} 1
haproxy_backend_current_sessions{proxy="be_aya"} 0
haproxy_backend_last_session_seconds{proxy="be_gemma"} 3
haproxy_backend_last_session_seconds{proxy="be_aya"} -1
haproxy_frontend_current_sessions{proxy="openai"} 1
"""
    assert parse_haproxy_metrics(text) == {"gemma": Usage(1, 3.0), "aya": Usage(0, 1e9)}


def test_unit_states_reads_systemctl_show_values_in_order():
    class R:
        stdout = "active\n\ninactive\n\nactivating\n"

    got = unit_states(["a", "b", "c"], run=lambda *a, **k: R())
    assert got == {"a": "active", "b": "inactive", "c": "activating"}

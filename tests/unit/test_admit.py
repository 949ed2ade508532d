"""The lazy experts' admission gate (memory budget, pinned experts, eviction by cost,
max_loaded_experts as an extra cap) and the front step that holds waiting clients."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmhost.admit import (Counters, Decision, Usage, decide, hold, main, metrics_text, parse_haproxy_metrics,
                           parse_request, read_counters, relay_all, unit_states)

# planned GiB: the preloaded 10 + 8 + 6, a slow 25 GiB lazy one and two cheaper ones
EXPERTS = [{"expert_id": "phi", "preload": True, "memory_gib": 10},
           {"expert_id": "mistral", "preload": True, "memory_gib": 8},
           {"expert_id": "qwen", "preload": True, "memory_gib": 6},
           {"expert_id": "gemma", "preload": False, "memory_gib": 25, "evict_cost": 16.5},
           {"expert_id": "aya", "preload": False, "memory_gib": 12, "evict_cost": 5.6},
           {"expert_id": "tiny", "preload": False, "memory_gib": 4, "evict_cost": 1}]
UP = {"phi": "active", "mistral": "active", "qwen": "active"}


def with_(eid, **kw):
    return [{**e, **kw} if e["expert_id"] == eid else e for e in EXPERTS]


def test_fits_in_the_budget_admits_without_stopping_anything():
    d = decide("gemma", EXPERTS, {**UP, "aya": "active"}, {}, budget_gib=70)
    assert d == Decision(True, (), "room for gemma: 61.0 of 70.0 GiB")


def test_memory_not_count_decides():
    # three lazy experts loaded together where the memory allows it
    d = decide("tiny", EXPERTS, {**UP, "gemma": "active", "aya": "active"}, {}, budget_gib=70)
    assert d.admit and d.evict == ()


def test_short_of_memory_stops_the_cheapest_idle_lazy_expert_never_a_preloaded_one():
    states = {**UP, "gemma": "active", "aya": "active"}
    usage = {"phi": Usage(0, 9999), "gemma": Usage(0, 9999), "aya": Usage(0, 5)}
    d = decide("tiny", EXPERTS, states, usage, budget_gib=62)
    # gemma is the longest idle, but aya is cheaper to reload: the costlier expert goes last
    assert d.admit and d.evict == ("aya",)
    assert "aya 12.0 GiB, last request 5 s ago, evict cost 5.6" in d.why


def test_stops_as_many_as_needed_cheapest_first():
    states = {**UP, "gemma": "active", "aya": "active", "tiny": "active"}
    d = decide("aya", with_("aya", memory_gib=30), states, {}, budget_gib=60)
    assert d.evict == ("tiny", "gemma")


def test_equal_costs_stop_the_longest_idle_first():
    experts = with_("gemma", evict_cost=5.6)
    d = decide("tiny", experts, {**UP, "gemma": "active", "aya": "active"},
               {"gemma": Usage(0, 300), "aya": Usage(0, 30)}, budget_gib=62)
    assert d.evict == ("gemma",)


def test_a_pinned_expert_is_never_stopped_and_the_refusal_names_what_is_loaded():
    experts = with_("gemma", pinned=True)
    d = decide("aya", experts, {**UP, "gemma": "active"}, {"gemma": Usage(0, 9999)}, budget_gib=60)
    assert not d.admit and d.evict == ()
    assert ("expert aya needs 12.0 GiB and the budget is 60.0 GiB with 49.0 GiB planned for the loaded experts "
            "(phi 10.0 GiB (preloaded), mistral 8.0 GiB (preloaded), qwen 6.0 GiB (preloaded), "
            "gemma 25.0 GiB (pinned))") in d.why


def test_busy_and_starting_lazy_experts_are_not_stopped():
    states = {**UP, "gemma": "active", "aya": "activating"}
    d = decide("tiny", EXPERTS, states, {"gemma": Usage(2, 0)}, budget_gib=62)
    assert not d.admit and "gemma 25.0 GiB (busy)" in d.why and "aya 12.0 GiB (starting)" in d.why


def test_max_loaded_experts_stays_an_extra_cap():
    states = {**UP, "gemma": "active"}
    d = decide("tiny", EXPERTS, states, {"gemma": Usage(0, 10)}, budget_gib=1000, max_loaded=4)
    assert d.admit and d.evict == ("gemma",) and "5 of max_loaded_experts 4" not in d.why
    d = decide("tiny", EXPERTS, states, {"gemma": Usage(1, 0)}, budget_gib=1000, max_loaded=4)
    assert not d.admit and "max_loaded_experts 4 are loaded" in d.why


def test_an_old_config_without_memory_is_count_only():
    experts = [{k: v for k, v in e.items() if k not in ("memory_gib", "evict_cost")} for e in EXPERTS]
    d = decide("aya", experts, {**UP, "gemma": "active"}, {}, budget_gib=None, max_loaded=4)
    assert d.admit and d.evict == ("gemma",)


def test_without_front_door_numbers_a_loaded_lazy_expert_counts_as_idle():
    d = decide("aya", EXPERTS, {**UP, "gemma": "active"}, {}, budget_gib=50)
    assert d.admit and d.evict == ("gemma",)


def test_decide_command_what_if(tmp_path, capsys):
    cfg = tmp_path / "admission.json"
    cfg.write_text(json.dumps({"experts": with_("gemma", pinned=True),
                               "lazy_loading": {"max_loaded_experts": 6, "memory_budget_gib": 60}}))
    assert main(["decide", "--config", str(cfg), "--expert", "aya", "--loaded", "gemma"]) == 1
    assert "refuse: expert aya needs 12.0 GiB" in capsys.readouterr().out
    assert main(["decide", "--config", str(cfg), "--expert", "tiny", "--loaded", "aya",
                 "--budget-gib", "39"]) == 0
    assert capsys.readouterr().out.startswith("admit, stop aya: ")
    assert main(["decide", "--config", str(cfg), "--expert", "tiny", "--loaded", "aya", "--pinned", "aya",
                 "--budget-gib", "39"]) == 1
    assert "aya 12.0 GiB (pinned)" in capsys.readouterr().out
    assert main(["decide", "--config", str(cfg), "--expert", "nope"]) == 2
    assert "no such expert: nope" in capsys.readouterr().err


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


@pytest.mark.parametrize("raw,expect", [
    (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"stream\": true}", (True, True)),
    (b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"stream\": tr", (False, False)),
    (b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", (True, False)),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", (True, False)),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n", (True, False)),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n[1,2]", (True, False)),
    (b"POST / HTTP/1.1\r\nHost:", (False, False)),
])
def test_parse_request(raw, expect):
    assert parse_request(raw) == expect


def test_the_reason_file_carries_the_code(tmp_path, monkeypatch):
    monkeypatch.setattr("llmhost.admit.REASONS", str(tmp_path))
    from llmhost.admit import failed, read_reason, write_reason  # noqa: PLC0415
    assert read_reason("aya") is None
    write_reason("aya", "expert aya needs 12.0 GiB")
    assert read_reason("aya") == ("expert_not_loaded", "expert aya needs 12.0 GiB")
    monkeypatch.setenv("SERVICE_RESULT", "exit-code")
    monkeypatch.setenv("EXIT_STATUS", "1")
    failed("aya")
    code, why = read_reason("aya")
    assert code == "expert_load_failed" and why.startswith("expert aya failed to load (exit-code, exit 1;")


def test_counters_survive_a_restart(tmp_path):
    c = Counters(held=3, hold_s=12.5, refused={"queue_full": 2})
    path = tmp_path / "wait.prom"
    path.write_text(metrics_text("gemma", c, 1, 4, 80.0))
    got, loads, load_s = read_counters(str(path))
    assert (got, loads, load_s) == (c, 4, 80.0)


# --- the front step, against a stand-in model on loopback --------------------------------

class Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("model") == "bad":
            out = json.dumps({"error": {"message": "no such model", "code": 404}}).encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for ev in (b'data: {"choices":[{"delta":{"content":"Paris"}}]}\n\n', b"data: [DONE]\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps({"choices": [{"message": {"content": "Paris"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def model():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


def request(port, body, idle_timeout_s):
    """A client that gives up after idle_timeout_s without a byte, as many do at 30 s."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(idle_timeout_s)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    return s


def read_all(s):
    out = b""
    while True:
        chunk = s.recv(65536)     # socket.timeout here: the client's idle timeout ran out
        if not chunk:
            return out
        out += chunk
        if out.endswith(b"data: [DONE]\n\n") or (b"\r\n\r\n" in out and b"Content-Length" in out
                                                 and out.split(b"\r\n\r\n", 1)[1].endswith(b"}")):
            return out


def run_front(listener, model_port, ready_after_s, reason=lambda: None, max_waiting=2):
    counters = Counters()
    result = {}
    t0 = time.monotonic()

    def go():
        outcome, held, _, why = hold(listener, "gemma", model_port, timeout_s=30, max_waiting=max_waiting,
                                  counters=counters, keepalive_s=0.2,
                                  ready=lambda: time.monotonic() - t0 > ready_after_s, reason=reason)
        result.update(outcome=outcome, why=why, held=len(held))
        relay_all(held, model_port, "gemma")

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, counters, result


def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def test_a_streamed_client_with_a_short_idle_timeout_is_held_across_the_load(model):
    lst = listener()
    port = lst.getsockname()[1]
    t, counters, result = run_front(lst, model, ready_after_s=2.0)
    streamed = request(port, {"model": "gemma", "stream": True, "messages": []}, idle_timeout_s=1.0)
    plain = request(port, {"model": "gemma", "messages": []}, idle_timeout_s=10.0)
    time.sleep(0.5)
    full = request(port, {"model": "gemma", "messages": []}, idle_timeout_s=5.0)
    refused = read_all(full).decode()
    got = read_all(streamed).decode()
    plain_got = read_all(plain).decode()
    for c in (streamed, plain, full):
        c.close()
    t.join(10)
    assert not t.is_alive()
    # the third request found two waiting (max_waiting 2): 503 at once, with Retry-After
    assert refused.startswith("HTTP/1.1 503") and "Retry-After: 10" in refused and "expert_loading" in refused
    # the stream had its head and comments every 0.2 s, so its 1 s idle timeout never ran out
    assert got.startswith("HTTP/1.1 200 OK") and "text/event-stream" in got
    assert got.count(": loading expert gemma") >= 5
    assert got.endswith('data: {"choices":[{"delta":{"content":"Paris"}}]}\n\ndata: [DONE]\n\n')
    # the plain one waited silently and got the model's own answer
    assert plain_got.startswith("HTTP/1.1 200") and "Paris" in plain_got
    assert result == {"outcome": "ready", "why": "", "held": 2}
    assert counters.held == 2 and counters.refused == {"queue_full": 1} and counters.hold_s > 2.0


def test_a_refused_or_failed_load_answers_every_held_client_with_why(model):
    lst = listener()
    port = lst.getsockname()[1]
    t0 = time.monotonic()
    why = "expert gemma needs 25.0 GiB and the budget is 60.0 GiB"
    t, counters, result = run_front(lst, model, ready_after_s=99,
                                    reason=lambda: ("expert_not_loaded", why) if time.monotonic() - t0 > 1.0 else None)
    streamed = request(port, {"model": "gemma", "stream": True, "messages": []}, idle_timeout_s=1.0)
    plain = request(port, {"model": "gemma", "messages": []}, idle_timeout_s=5.0)
    got, plain_got = read_all(streamed).decode(), read_all(plain).decode()
    for c in (streamed, plain):
        c.close()
    t.join(10)
    assert not t.is_alive()
    assert got.startswith("HTTP/1.1 200") and '"code": "expert_not_loaded"' in got and why in got
    assert plain_got.startswith("HTTP/1.1 503") and "Retry-After: 30" in plain_got and why in plain_got
    assert result["outcome"] == "refused" and counters.refused == {"expert_not_loaded": 2}


def test_a_model_error_after_the_stream_head_becomes_an_sse_error_event(model):
    lst = listener()
    port = lst.getsockname()[1]
    t, _, _ = run_front(lst, model, ready_after_s=0.5)
    s = request(port, {"model": "bad", "stream": True, "messages": []}, idle_timeout_s=2.0)
    got = read_all(s).decode()
    s.close()
    t.join(10)
    assert not t.is_alive()
    assert 'data: {"error": {"message": "no such model", "code": 404}}' in got and got.endswith("data: [DONE]\n\n")

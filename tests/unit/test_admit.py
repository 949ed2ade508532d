"""The lazy experts' admission gate (memory budget, pinned experts, eviction by cost,
max_loaded_experts as an extra cap) and the front step that holds waiting clients."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmhost.admit import (Counters, Decision, Usage, _admin, decide, hold, main, metrics_text, parse_show_stat,
                           parse_request, read_counters, relay_all, unit_states)

# planned GiB: the preloaded 10 + 8 + 6, a slow 25 GiB lazy one and two cheaper ones
EXPERTS = [{"expert_id": "phi", "preload": True, "memory_gib": 10},
           {"expert_id": "mistral", "preload": True, "memory_gib": 8},
           {"expert_id": "qwen", "preload": True, "memory_gib": 6},
           {"expert_id": "gemma", "preload": False, "memory_gib": 25, "evict_cost": 16.5},
           {"expert_id": "aya", "preload": False, "memory_gib": 12, "evict_cost": 5.6},
           {"expert_id": "tiny", "preload": False, "memory_gib": 4, "evict_cost": 1}]
UP = {"phi": "active", "mistral": "active", "qwen": "active"}
# the front door's numbers: every expert idle a long while (usage known)
IDLE = {e["expert_id"]: Usage(0, 9999) for e in EXPERTS}


@pytest.fixture(autouse=True)
def reasons_in_tmp(tmp_path, monkeypatch):
    """Reason files, kept wait figures and drain markers under tmp_path, never /run."""
    monkeypatch.setattr("llmhost.admit.REASONS", str(tmp_path / "llmhost-admit"))


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
    d = decide("aya", with_("aya", memory_gib=30), states, IDLE, budget_gib=60)
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
    d = decide("aya", experts, {**UP, "gemma": "active"}, IDLE, budget_gib=None, max_loaded=4)
    assert d.admit and d.evict == ("gemma",)


def test_with_front_door_numbers_an_idle_loaded_lazy_expert_is_stopped():
    d = decide("aya", EXPERTS, {**UP, "gemma": "active"}, IDLE, budget_gib=50)
    assert d.admit and d.evict == ("gemma",) and d.code == ""


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


SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,lastsess
openai,FRONTEND,,,1,3,2000,9,OPEN,
be_gemma,gemma,0,0,1,1,8,4,no check,3
be_gemma,BACKEND,0,0,1,1,8,4,UP,3
be_aya,BACKEND,0,0,0,0,8,0,UP,-1
route_embed,BACKEND,0,0,0,0,8,0,UP,-1
"""


def test_parse_show_stat():
    assert parse_show_stat(SHOW_STAT) == {"gemma": Usage(1, 3.0), "aya": Usage(0, 1e9)}


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


# --- unknown usage never evicts; the runtime API socket; the bounded lock ----------------

LAZY_UP = {**UP, "gemma": "active"}
NEEDS_GEMMA_GONE = 50     # aya (12) fits only once gemma (25) is stopped: 24 + 25 + 12 > 50


@pytest.mark.parametrize("case,usage,problem,admit,evict,code,says", [
    ("idle, known", {"gemma": Usage(0, 300)}, "", True, ("gemma",), "",
     "stopping idle gemma 25.0 GiB, last request 300 s ago"),
    ("busy, known", {"gemma": Usage(2, 0)}, "", False, (), "expert_not_loaded", "gemma 25.0 GiB (busy)"),
    ("runtime API unreachable", {}, "the front door's runtime API at /run/x.sock did not answer (refused)",
     False, (), "expert_usage_unknown", "usage of gemma is unknown (the front door's runtime API at "
                                         "/run/x.sock did not answer (refused)), so none is stopped"),
    ("no expert backend listed", {}, "the front door's runtime API at /run/x.sock listed no expert backend",
     False, (), "expert_usage_unknown", "listed no expert backend"),
    ("expert missing from them", {"aya": Usage(0, 5)}, "", False, (), "expert_usage_unknown",
     "usage of gemma is unknown (not in the front door's runtime API answer)"),
    ("explicitly unknown", {"gemma": Usage(0, 9999, known=False)}, "", False, (), "expert_usage_unknown",
     "gemma 25.0 GiB (usage unknown)"),
])
def test_unknown_usage_never_evicts_and_the_refusal_says_why(case, usage, problem, admit, evict, code, says):
    d = decide("aya", EXPERTS, LAZY_UP, usage, budget_gib=NEEDS_GEMMA_GONE, usage_problem=problem)
    assert (d.admit, d.evict, d.code) == (admit, evict, code), (case, d)
    assert says in d.why, (case, d.why)


def test_unknown_usage_is_not_the_reason_when_stopping_it_would_not_help():
    # even with gemma stopped, aya (12) does not fit in 30 GiB beside the preloaded 24: plain no room
    d = decide("aya", EXPERTS, LAZY_UP, {}, budget_gib=30, usage_problem="down")
    assert not d.admit and d.code == "expert_not_loaded" and "gemma 25.0 GiB (usage unknown)" in d.why


def test_a_known_idle_expert_is_stopped_beside_an_unknown_one():
    # gemma's usage unknown (kept), tiny idle and enough: tiny goes
    d = decide("aya", EXPERTS, {**LAZY_UP, "tiny": "active"}, {"tiny": Usage(0, 60)}, budget_gib=61)
    assert d.admit and d.evict == ("tiny",)


HEAD = "# pxname,svname,scur,lastsess\n"


@pytest.mark.parametrize("case,text,expect", [
    ("numbers", HEAD + "be_gemma,BACKEND,2,0\n", {"gemma": Usage(2, 0.0)}),
    ("not a number", HEAD + "be_gemma,BACKEND,abc,0\n", {}),
    ("no sessions column", "# pxname,svname,lastsess\nbe_gemma,BACKEND,3\n", {}),
    ("only a server row", HEAD + "be_gemma,gemma,0,3\n", {}),
    ("no header", "be_gemma,BACKEND,0,3\n", {}),
    ("an error line", "Unknown command. Please enter one of the following commands only :\n", {}),
])
def test_parse_show_stat_leaves_out_what_it_cannot_read(case, text, expect):
    assert parse_show_stat(text) == expect, case


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def runtime_api(tmp_path):
    """A stand-in for HAProxy's runtime API on a unix socket: answer(cmd) -> text, one command
    per connection; yields (start, path) where start(answer) serves."""
    path = str(tmp_path / "admin.sock")
    stop = threading.Event()
    threads = []

    def start(answer):
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(8)
        srv.settimeout(0.2)

        def serve():
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                except OSError:
                    continue
                with c:
                    c.sendall(answer(c.recv(4096).decode().strip()).encode())
            srv.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)

    yield start, path
    stop.set()
    for t in threads:
        t.join(2)


@pytest.mark.parametrize("case,answer,known,says", [
    ("answers", SHOW_STAT, {"gemma", "aya"}, ""),
    ("no expert backend", HEAD + "openai,FRONTEND,1,\n", set(), "listed no expert backend"),
    ("nobody listens", None, set(), "did not answer"),
])
def test_frontdoor_usage_names_the_socket_and_the_problem(runtime_api, case, answer, known, says):
    from llmhost.admit import frontdoor_usage  # noqa: PLC0415
    start, path = runtime_api
    if answer is not None:
        start(lambda cmd: answer if cmd == "show stat" else "Unknown command.\n")
    usage, problem = frontdoor_usage(path)
    assert set(usage) == known, case
    assert (says in problem and path in problem) if says else problem == "", (case, problem)


def test_the_reasons_directory_stays_readable_whatever_the_umask(tmp_path, monkeypatch):
    """The lazy proxy's UMask=0077 also applies to its privileged gate: the directory it makes
    must still let the proxy's dynamic user read a refusal (else held clients wait it out)."""
    import os  # noqa: PLC0415
    import stat  # noqa: PLC0415

    from llmhost.admit import read_reason, write_reason  # noqa: PLC0415
    monkeypatch.setattr("llmhost.admit.REASONS", str(tmp_path / "reasons"))
    old = os.umask(0o077)
    try:
        write_reason("aya", "no room", "expert_not_loaded")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "reasons").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "reasons" / "aya.reason").st_mode) == 0o644
    assert read_reason("aya") == ("expert_not_loaded", "no room")


@pytest.fixture
def gate_env(tmp_path, monkeypatch):
    """The gate with its reason files in tmp_path, stand-in unit states and systemctl."""
    monkeypatch.setattr("llmhost.admit.REASONS", str(tmp_path / "reasons"))
    calls = []

    class R:
        returncode, stderr = 0, ""

    def run(argv, **kw):
        calls.append(argv)
        return R()

    started = set()

    def states(ids):
        return {i: ("active" if i in LAZY_UP or i in started else "inactive") for i in ids}

    def run_and_start(argv, **kw):
        if argv[:3] == ["systemctl", "start", "--no-block"]:
            started.add(argv[3].removeprefix("llmhost-expert-").removesuffix(".service"))
        return run(argv, **kw)

    cfg = {"experts": EXPERTS, "lazy_loading": {"memory_budget_gib": NEEDS_GEMMA_GONE}}
    return cfg, calls, states, run_and_start, tmp_path / "llmhost-admit.lock"


@pytest.mark.parametrize("case,usage,stopped,code,says", [
    ("front door down", ({}, "the front door's runtime API at U did not answer (refused)"), False,
     "expert_usage_unknown", "so none is stopped"),
    ("gemma missing from the runtime API's answer", ({"tiny": Usage(0, 1)}, ""), False, "expert_usage_unknown",
     "usage of gemma is unknown (not in the front door's runtime API answer)"),
    ("gemma busy", ({"gemma": Usage(1, 0)}, ""), False, "expert_not_loaded", "gemma 25.0 GiB (busy)"),
    ("gemma idle", ({"gemma": Usage(0, 120)}, ""), True, None, None),
])
def test_the_gate_stops_only_what_it_knows_is_idle(gate_env, capsys, case, usage, stopped, code, says):
    from llmhost.admit import gate, read_reason  # noqa: PLC0415
    cfg, calls, states, run, lock = gate_env
    assert gate(cfg, "aya", "U", settle_s=0.5, lock_path=str(lock), usage=lambda url: usage, states=states,
                run=run) == 0
    stops = [c for c in calls if c[:2] == ["systemctl", "stop"]]
    assert bool(stops) == stopped, (case, calls)
    reason = read_reason("aya")
    if code:
        assert reason[0] == code and says in reason[1], (case, reason)
        assert not any(c[:2] == ["systemctl", "start"] for c in calls), case
        assert says in capsys.readouterr().out
    else:
        assert reason is None and stops[0][2:] == ["llmhost-expert-gemma-proxy.service", "llmhost-expert-gemma.service"]


def test_the_gate_reads_the_socket_it_is_given(gate_env):
    from llmhost.admit import gate  # noqa: PLC0415
    cfg, _, states, run, lock = gate_env
    asked = []
    gate(cfg, "tiny", "/run/haproxy/other.sock", settle_s=0.5, lock_path=str(lock),
         usage=lambda path: (asked.append(path), ({}, "down"))[1], states=states, run=run)
    assert asked == ["/run/haproxy/other.sock"]


@pytest.mark.parametrize("held_s,wait_s,refused", [(0.0, 1.0, False), (0.6, 2.0, False), (5.0, 0.5, True)])
def test_the_gate_waits_for_its_lock_within_its_bound(gate_env, held_s, wait_s, refused):
    import fcntl  # noqa: PLC0415

    from llmhost.admit import gate, read_reason  # noqa: PLC0415
    cfg, calls, states, run, lock = gate_env
    other = open(lock, "w")
    fcntl.flock(other, fcntl.LOCK_EX)
    releaser = threading.Timer(held_s, lambda: fcntl.flock(other, fcntl.LOCK_UN)) if held_s else None
    if releaser:
        releaser.start()
    else:
        fcntl.flock(other, fcntl.LOCK_UN)
    t0 = time.monotonic()
    gate(cfg, "tiny", "U", settle_s=0.5, lock_path=str(lock), lock_wait_s=wait_s,
         usage=lambda url: ({"gemma": Usage(0, 1)}, ""), states=states, run=run)
    took = time.monotonic() - t0
    if releaser:
        releaser.cancel()
    other.close()
    started = any(c[:2] == ["systemctl", "start"] for c in calls)
    if refused:
        code, why = read_reason("tiny")
        assert code == "expert_admission_busy" and "waited 0 s for another expert's start decision" in why, why
        assert not started and took < 2.0
    else:
        assert started and read_reason("tiny") is None


@pytest.mark.parametrize("code", ["expert_usage_unknown", "expert_admission_busy"])
def test_the_front_answers_and_counts_the_new_refusals(model, code):
    lst = listener()
    port = lst.getsockname()[1]
    why = f"why of {code}"
    t0 = time.monotonic()
    t, counters, result = run_front(lst, model, ready_after_s=99,
                                    reason=lambda: (code, why) if time.monotonic() - t0 > 1.0 else None)
    plain = request(port, {"model": "gemma", "messages": []}, idle_timeout_s=5.0)
    got = read_all(plain).decode()
    plain.close()
    t.join(10)
    lst.close()
    assert got.startswith("HTTP/1.1 503") and f'"code": "{code}"' in got and why in got
    assert result["outcome"] == "refused" and counters.refused == {code: 1}
    assert f'llmhost_lazy_refused_requests_total{{expert="gemma",reason="{code}"}} 1' in metrics_text(
        "gemma", counters, 0, 0, 0.0)


def test_decide_command_reads_the_given_socket_and_says_unknown(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "admission.json"
    cfg.write_text(json.dumps({"experts": EXPERTS, "lazy_loading": {"memory_budget_gib": NEEDS_GEMMA_GONE}}))
    monkeypatch.setattr("llmhost.admit.unit_states", lambda ids: {i: LAZY_UP.get(i, "inactive") for i in ids})
    path = str(tmp_path / "nobody.sock")
    assert main(["decide", "--config", str(cfg), "--expert", "aya", "--admin-socket", path]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("refuse: ") and "usage of gemma is unknown" in out and path in err


# --- draining a preloaded expert at the front door (HAProxy's runtime API) ---------------

STAT_HEAD = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status"


class FakeHAProxy:
    """The runtime API's answers for one backend be_general/general: sessions that end
    after a few polls."""

    def __init__(self, sessions=(2, 1, 0), status="UP", refuse=""):
        self.sessions, self.status, self.refuse, self.cmds = list(sessions), status, refuse, []

    def __call__(self, cmd):
        self.cmds.append(cmd)
        if cmd.startswith("set server be_general/general state "):
            if self.refuse:
                return self.refuse + "\n"
            self.status = {"maint": "MAINT", "ready": "UP"}[cmd.rsplit(" ", 1)[1]]
            return "\n"
        if cmd == "show stat":
            scur = self.sessions.pop(0) if len(self.sessions) > 1 else self.sessions[0]
            return (f"{STAT_HEAD}\nopenai,FRONTEND,,,0,1,2000,5,OPEN\n"
                    f"be_general,general,0,0,{scur},3,,9,{self.status}\nbe_general,BACKEND,0,0,{scur},3,,9,UP\n")
        return "Unknown command\n"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


@pytest.mark.parametrize("case,fake,timeout,drained,restore,left,says", [
    ("sessions end", FakeHAProxy((2, 2, 1, 0)), 120, True, True, 0, "its sessions ended in 1.0 s"),
    ("idle already", FakeHAProxy((0,)), 120, True, True, 0, "its sessions ended in 0.0 s"),
    ("a long stream outlasts the bound", FakeHAProxy((3,)), 2, True, True, 3,
     "3 session(s) still open after 2 s: the restart cuts them"),
    ("already in maintenance by hand", FakeHAProxy((0,), status="MAINT"), 120, True, False, 0, "sessions ended"),
])
def test_drain_waits_for_the_sessions_within_its_bound(case, fake, timeout, drained, restore, left, says):
    from llmhost.admit import drain  # noqa: PLC0415
    clock = Clock()
    out = drain("general", fake, timeout, poll_s=0.5, clock=clock, sleep=clock.sleep)
    assert (out["drained"], out["restore"], out["sessions_left"]) == (drained, restore, left), (case, out)
    assert says in out["msg"], (case, out["msg"])
    assert "set server be_general/general state maint" in fake.cmds and fake.status == "MAINT"
    assert clock.t <= timeout + 0.5


@pytest.mark.parametrize("case,admin,says", [
    ("a new expert, not in the front door yet",
     lambda cmd: f"{STAT_HEAD}\nbe_coder,coder,0,0,0,0,,1,UP\n", "has no server be_general/general yet"),
    ("no HAProxy on the host", lambda cmd: (_ for _ in ()).throw(FileNotFoundError(2, "No such file or directory")),
     "did not answer (No such file or directory): nothing to drain"),
])
def test_drain_with_nothing_to_drain_changes_nothing(case, admin, says):
    from llmhost.admit import drain, ready  # noqa: PLC0415
    out = drain("general", admin, 120)
    assert not out["drained"] and not out["restore"] and says in out["msg"], (case, out)
    assert not ready("general", admin)["ready"]


def test_drain_and_ready_fail_in_one_line_when_haproxy_refuses():
    from llmhost.admit import drain, ready  # noqa: PLC0415
    with pytest.raises(RuntimeError, match="refused to put be_general/general in maintenance: No such server"):
        drain("general", FakeHAProxy(refuse="No such server."), 10)
    with pytest.raises(RuntimeError, match="refused to put be_general/general back in service"):
        ready("general", FakeHAProxy(refuse="Permission denied."))


def test_ready_puts_the_server_back():
    from llmhost.admit import ready  # noqa: PLC0415
    fake = FakeHAProxy((0,), status="MAINT")
    out = ready("general", fake)
    assert out == {"ready": True, "status": "UP",
                   "msg": "expert general: be_general/general back in service at the front door (UP)"}
    assert fake.cmds[-2] == "set server be_general/general state ready"


def test_drain_and_ready_commands_over_a_real_unix_socket(runtime_api, capsys):
    """The CLI against a stand-in runtime API socket: one command per connection."""
    fake = FakeHAProxy((1, 0))
    start, path = runtime_api
    start(fake)
    assert main(["drain", "--expert", "general", "--admin-socket", path, "--timeout", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drained"] and out["restore"] and out["sessions_left"] == 0 and fake.status == "MAINT"
    assert main(["ready", "--expert", "general", "--admin-socket", path]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "UP"
    fake.refuse = "No such server."
    assert main(["drain", "--expert", "general", "--admin-socket", path]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "expert general: the front door refused to put be_general/general in maintenance: No such server."


# --- drain, the front door's hold (llmhost-hold.lua) and ready, against a real HAProxy ----

HOLD_LUA = __import__("pathlib").Path(__file__).resolve().parents[2] / "roles/frontdoor/files/llmhost-hold.lua"


class Expert(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        out = b'{"choices":[{"message":{"content":"Paris"}}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.fixture
def frontdoor(tmp_path):
    """HAProxy with one preloaded expert's backend as the frontdoor role writes it (the hold
    before the 503), the stand-in expert behind it, and its runtime API socket."""
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed (scripts/bootstrap installs it)")
    expert = ThreadingHTTPServer(("127.0.0.1", 0), Expert)
    threading.Thread(target=expert.serve_forever, daemon=True).start()
    port, sock = free_port(), str(tmp_path / "admin.sock")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    stats socket {sock} mode 600 level admin
    # as the frontdoor role loads it (the shared state), with a Lua time limit shorter than
    # the hold: its sleeps must not count against it
    lua-load {HOLD_LUA}
    tune.lua.session-timeout 1s
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend openai
    bind 127.0.0.1:{port}
    use_backend be_general
backend be_general
    http-request lua.llmhost_hold 2 if {{ nbsrv() eq 0 }}
    http-request return status 503 content-type application/json string '{{"error":{{"code":"expert_unavailable"}}}}' if {{ nbsrv() eq 0 }}
    option httpchk GET /health
    http-check expect status 200
    server general 127.0.0.1:{expert.server_address[1]} check inter 200ms fall 1 rise 1
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    from llmhost.admit import admin_command, server_stat  # noqa: PLC0415
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if (server_stat(admin_command("show stat", sock), "be_general", "general") or {}).get("status") == "UP":
                break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("haproxy did not start: " + proc.stdout.read().decode()[-2000:])
    yield port, sock, expert
    proc.kill()
    proc.wait()
    expert.shutdown()
    expert.server_close()


def ask_frontdoor(port):
    import http.client  # noqa: PLC0415
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("POST", "/v1/chat/completions", '{"model":"general"}', {"Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read().decode(), time.monotonic() - t0


@pytest.mark.parametrize("case,back_after_s,expect_status,waits", [
    ("back in service within the hold: the request waited and is answered", 1.0, 200, (0.9, 2.0)),
    ("still in maintenance past the hold (2 s): the 503 as before", None, 503, (1.9, 3.5)),
])
def test_a_request_to_a_drained_expert_waits_for_it_in_the_front_door(frontdoor, case, back_after_s, expect_status,
                                                                      waits):
    from llmhost.admit import drain, ready  # noqa: PLC0415
    port, sock, _ = frontdoor
    assert ask_frontdoor(port)[0] == 200
    out = main(["drain", "--expert", "general", "--admin-socket", sock, "--timeout", "5"])
    assert out == 0
    if back_after_s is not None:
        threading.Timer(back_after_s, lambda: ready("general", _admin(sock))).start()
    status, body, took = ask_frontdoor(port)
    assert status == expect_status, (case, body)
    assert waits[0] <= took <= waits[1], (case, took)
    ready("general", _admin(sock))
    assert ask_frontdoor(port)[0] == 200
    assert not drain("general", _admin("/nonexistent/admin.sock"), 1)["drained"]


def test_a_crashed_expert_is_not_waited_for(frontdoor):
    """Down for another reason than a deploy (not in maintenance): the 503 at once."""
    port, sock, expert = frontdoor
    expert.shutdown()
    expert.server_close()
    from llmhost.admit import admin_command, server_stat  # noqa: PLC0415
    deadline = time.monotonic() + 5
    while (server_stat(admin_command("show stat", sock), "be_general", "general") or {}).get("status", "").startswith("UP"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, _, took = ask_frontdoor(port)
    assert status == 503 and took < 0.5


def test_ready_if_drained_puts_back_only_what_a_drain_took_out():
    from llmhost.admit import drain, ready  # noqa: PLC0415
    fake = FakeHAProxy((0,))
    assert not ready("general", fake, if_drained=True)["ready"] and fake.status == "UP"   # nothing drained: untouched
    assert drain("general", fake, 5)["drained"] and fake.status == "MAINT"
    assert ready("general", fake, if_drained=True)["ready"] and fake.status == "UP"
    assert not ready("general", fake, if_drained=True)["ready"]                         # once
    operator = FakeHAProxy((0,), status="MAINT")                                        # an operator's maintenance
    assert drain("general", operator, 5)["restore"] is False
    assert not ready("general", operator, if_drained=True)["ready"] and operator.status == "MAINT"

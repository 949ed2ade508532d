"""Routing by meaning for model "auto": the plan's checks, the arithmetic, and the
front door's Lua inside a real HAProxy (real `haproxy`, real lua-cjson) against an
embedder double on loopback, so fallback on a slow or dead embedder is proven in
seconds. The site scenario runs the same path against the real embedding expert."""

import http.server
import json
import os
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llmhost import routing
from llmhost.cli import saved_capabilities
from llmhost.experts import ConfigError
from llmhost.plan import GIB, Host, build_plan, parse_shared

sys.path.insert(0, str(Path(__file__).parent))
from test_frontdoor_render import BIN, ROOT, haproxy_check  # noqa: E402

GENERAL = {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 5, "weights_gib": 0.3,
           "kv_cache_gib": 1, "cores": 1, "route_examples": ["Tell me a joke", "What is the capital of France?"]}
CODER = {"expert_id": "coder", "model": "/srv/models/b", "domain": "coding", "priority": 3, "weights_gib": 0.3,
         "kv_cache_gib": 1, "cores": 1, "route_examples": ["Write a Python function", "Fix this bug in my code"]}
ROUTER = {"expert_id": "router", "runner": "pooling", "model": "/srv/models/all-MiniLM-L6-v2", "domain": "routing",
          "priority": 9, "weights_gib": 0.1, "kv_cache_gib": 1, "cores": 0}
HOST = Host((0, 1), 24 * GIB, "x86_64", {"avx512_bf16": True})


def plan(experts=(GENERAL, CODER, ROUTER), routing_=None, **kw):
    return build_plan(list(experts), kw.pop("lazy", None), saved_capabilities(), HOST,
                      routing={"embedder": "router"} if routing_ is None else routing_, **kw)


def problems(*a, **kw):
    with pytest.raises(ConfigError) as e:
        plan(*a, **kw)
    return e.value.problems


def test_the_plan_routes_auto_through_the_pooling_expert():
    p = plan()
    d = p.to_dict()
    by = {e["expert_id"]: e for e in d["experts"]}
    assert "--runner" in by["router"]["argv"] and by["router"]["argv"][by["router"]["argv"].index("--runner") + 1] \
        == "pooling"
    assert by["router"]["dtype"] == "float32"  # the same vectors on every CPU, bf16 or not
    assert by["router"]["cpu_list"] == "0-1"   # cores: 0 -> no CPUs of its own (none reserved here)
    assert [by["general"]["cores"], by["coder"]["cores"]] == [[0], [1]]
    # any expert with examples may get an "auto" request, so each serves the name
    assert by["general"]["names"] == ["general", "auto"] and by["coder"]["names"] == ["coder", "auto"]
    assert by["router"]["names"] == ["router"]
    r = d["routing"]
    assert r["embedder"] == "router" and r["embedder_port"] == by["router"]["port"] and r["timeout_ms"] == 50
    assert [x["expert_id"] for x in r["domains"]] == ["general", "coder"] and r["default_expert"] == "general"
    req = routing.embed_request(r)
    assert req["input"] == GENERAL["route_examples"] + CODER["route_examples"]
    # the embedder keeps each example's first tokens up to its max_model_len (vLLM 0.32's embeddings API)
    assert req["truncate_prompt_tokens"] == -1 and req["truncation_side"] == "right"


def test_an_example_longer_than_the_embedder_reads_is_warned_naming_the_limit():
    long = "Explain " + "very " * 60 + "slowly."
    router = dict(ROUTER, engine={"max_model_len": 256})
    p = plan((GENERAL, dict(CODER, route_examples=["Fix this bug", long]), router))
    (w,) = [w for w in p.warnings if "route_examples[1]" in w]
    assert w.startswith("expert 'coder' field 'route_examples[1]': 315 characters may exceed the embedder "
                        "'router''s limit of 256 tokens (max_model_len")
    assert not [w for w in plan((GENERAL, CODER, router)).warnings if "route_examples[" in w]
    # the deploy sends it, cut, and vLLM keeps its first 256 tokens: no failure
    assert routing.embed_request(p.routing)["input"][3] == long


def test_a_pooling_expert_never_gets_prefix_caching():
    by = {e.expert_id: e for e in plan().experts}
    assert "--enable-prefix-caching" in by["general"].translation.argv
    assert "--enable-prefix-caching" not in by["router"].translation.argv  # the profile's default is dropped
    got = problems((GENERAL, CODER, dict(ROUTER, engine={"enable_prefix_caching": True})), None, strict=True)
    assert any("enable_prefix_caching" in p and "pooling expert cannot start with prefix caching" in p
               for p in got), got


def test_centroids_are_redone_only_when_examples_or_model_change():
    sha = plan().routing["inputs_sha256"]
    assert plan().routing["inputs_sha256"] == sha
    assert plan(routing_={"embedder": "router", "timeout_ms": 80}).routing["inputs_sha256"] == sha
    more = dict(CODER, route_examples=[*CODER["route_examples"], "Refactor this class"])
    assert plan((GENERAL, more, ROUTER)).routing["inputs_sha256"] != sha
    other_model = dict(ROUTER, model="/srv/models/other-embedder")
    assert plan((GENERAL, CODER, other_model)).routing["inputs_sha256"] != sha


def test_without_routing_auto_stays_the_default_and_examples_are_flagged_unused():
    p = plan(routing_={})
    assert p.routing is None
    by = {e.expert_id: e for e in p.experts}
    assert by["coder"].names == ["coder"] and by["general"].names == ["general", "auto"]
    assert any("route_examples of general, coder unused" in w for w in p.warnings)


@pytest.mark.parametrize("experts,routing_,expected", [
    ((GENERAL, CODER, ROUTER), {"embedder": "nope"}, "llmhost_routing field 'embedder': 'nope' is not an expert"),
    ((GENERAL, CODER, ROUTER), {"embedder": "coder"}, "expert 'coder' field 'runner': the routing embedder must be "
                                                      "a pooling expert"),
    ((GENERAL, CODER, ROUTER), {"embedder": "router", "timeout_ms": 0}, "llmhost_routing field 'timeout_ms'"),
    ((GENERAL, CODER, ROUTER), {"embedder": "router", "model": "x"}, "llmhost_routing field 'model': unknown key"),
    ((dict(GENERAL, route_examples=[]), dict(CODER, route_examples=[]), ROUTER), None,
     "no expert has route_examples"),
    ((GENERAL, CODER, dict(ROUTER, route_examples=["x"])), None,
     "expert 'router' field 'route_examples': a pooling expert is never a route target"),
    ((GENERAL, dict(CODER, route_examples=[""]), ROUTER), None, "expert 'coder' field 'route_examples'"),
    ((GENERAL, dict(CODER, cores=0), ROUTER), None, "expert 'coder' field 'cores': must be >= 1"),
    ((GENERAL, CODER, dict(ROUTER, runner="embed")), None, "expert 'router' field 'runner': must be one of"),
    ((GENERAL, CODER, dict(ROUTER, thresholds={"ttft_p50_s": 1})), None, "expert 'router' field 'thresholds'"),
])
def test_bad_routing_fails_naming_the_expert_and_field(experts, routing_, expected):
    got = problems(experts, routing_)
    assert any(expected in p for p in got), got


def test_a_lazy_embedder_and_a_pooling_default_are_refused():
    lazy = {"enabled": True, "warmup_pool_size": 2, "max_loaded_experts": 3, "auto_unload_after_s": 60}
    got = problems((GENERAL, CODER, dict(ROUTER, priority=1)), lazy=lazy)
    assert any("expert 'router' field 'priority': the routing embedder must be preloaded" in p for p in got), got
    assert "llmhost_default_expert: 'router' is a pooling" in problems(default_expert="router")[0]
    assert "at least one must generate" in problems((ROUTER,), {})[0]


def test_centroids_and_nearest():
    c = routing.centroids([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 2]], ["a", "a", "b"])
    assert math.isclose(sum(x * x for x in c["a"]), 1.0) and c["b"] == [0.0, 0.0, 1.0]
    assert routing.nearest([1, 0.2, 0], c)[0] == "a" and routing.nearest([0.1, 0, 1], c)[0] == "b"
    with pytest.raises(ValueError):
        routing.centroids([[1, 0]], ["a", "b"])
    sec = plan().routing
    resp = {"data": [{"index": i, "embedding": [1.0, float(i)]} for i in range(4)]}
    f = routing.centroids_file(sec, resp)
    assert f["inputs_sha256"] == sec["inputs_sha256"] and [x["expert_id"] for x in f["centroids"]] == ["general",
                                                                                                      "coder"]
    with pytest.raises(ValueError, match="returned 3 vectors for 4 route examples"):
        routing.centroids_file(sec, {"data": resp["data"][:3]})


# --- the Lua inside a real HAProxy ------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Embedder(http.server.BaseHTTPRequestHandler):
    """A 2-d "embedding": code words point one way, everything else the other; "slow" sleeps.
    Strict as vLLM: the body must be UTF-8 JSON (a text cut inside a character is a 400)."""
    calls = 0
    last: dict = {}

    def do_POST(self):  # noqa: N802
        try:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])).decode("utf-8"))
        except UnicodeDecodeError:
            self.send_response(400)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        type(self).last = body
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        type(self).calls += 1
        if any("slow" in t for t in texts):
            time.sleep(0.5)
        vecs = [[1.0, 0.1] if any(w in t.lower() for w in ("python", "bug", "code", "función")) else [0.1, 1.0]
                for t in texts]
        out = json.dumps({"data": [{"index": i, "embedding": v} for i, v in enumerate(vecs)]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # noqa: N802  (the front door's health check)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class Expert(http.server.BaseHTTPRequestHandler):
    """Answers like vLLM would: its first served name as "model"."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        out = json.dumps({"model": self.server.name, "choices": []}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *a):
        pass


def serve(handler, port, name=""):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.name = name
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The frontdoor role's own render, once for this module, on free loopback ports."""
    tmp_path = tmp_path_factory.mktemp("door")
    ports = {k: free_port() for k in ("door", "metrics", "general", "coder", "router")}
    experts = [dict(GENERAL, port=ports["general"]), dict(CODER, port=ports["coder"]),
               dict(ROUTER, port=ports["router"])]
    p = build_plan(experts, None, saved_capabilities(), HOST, routing={"embedder": "router", "timeout_ms": 100},
                   shared=parse_shared({"frontdoor_port": ports["door"], "frontdoor_metrics_port": ports["metrics"]}))
    d = p.to_dict()
    out = tmp_path / "haproxy"
    d["routing"]["centroids_file"] = str(out / "llmhost-centroids.json")
    ev = {"frontdoor_plan": d, "__frontdoor_dir": str(out), "__frontdoor_errors_dir": str(out / "errors"),
          "__frontdoor_route_socket": str(tmp_path / "route-embed.sock"),
          "ansible_python_interpreter": sys.executable, "frontdoor_bind": "127.0.0.1"}
    (tmp_path / "ev.json").write_text(json.dumps(ev))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-frontdoor.yml",
                        "-e", f"@{tmp_path / 'ev.json'}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    assert r.returncode == 0, r.stdout[-3000:]
    cfg = (out / "haproxy.cfg").read_text()
    # run as this user, log to stdout, socket in the test folder: nothing else differs
    cfg = cfg.replace("stats socket /run/haproxy/admin.sock", f"stats socket {tmp_path}/admin.sock") \
        .replace("    user haproxy\n    group haproxy\n", "").replace("log /dev/log", "log stdout")
    (out / "haproxy.cfg").write_text(cfg)
    assert haproxy_check(out / "haproxy.cfg").returncode == 0
    return {"ports": ports, "plan": d, "out": out, "cfg": cfg}


@pytest.fixture
def door(rendered):
    ports, d, out, cfg = rendered["ports"], rendered["plan"], rendered["out"], rendered["cfg"]
    emb = serve(Embedder, ports["router"])
    # the deploy's own path: embed the examples, write the centroids file the Lua reads
    req = urllib.request.Request(f"http://127.0.0.1:{ports['router']}/v1/embeddings",
                                 data=json.dumps(routing.embed_request(d["routing"])).encode(),
                                 headers={"content-type": "application/json"})
    cents = routing.centroids_file(d["routing"], json.load(urllib.request.urlopen(req)))
    Path(d["routing"]["centroids_file"]).write_text(json.dumps(cents))
    backends = [serve(Expert, ports["general"], "general"), serve(Expert, ports["coder"], "coder")]
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(out / "haproxy.cfg")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['door']}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    state = {"ports": ports, "embedder": emb, "proc": proc, "cfg": cfg}
    yield state
    # a test may replace the HAProxy (state["proc"]): stop the one running now, and the first
    for p in {id(x): x for x in (proc, state["proc"])}.values():
        p.terminate()
        p.wait(5)
    for srv in [emb, *backends]:
        srv.shutdown()
        srv.server_close()


def ask(door, body, path="/v1/chat/completions"):
    req = urllib.request.Request(f"http://127.0.0.1:{door['ports']['door']}{path}",
                                 data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["model"], r.headers.get("x-llmhost-expert")


def route_metrics(door):
    text = urllib.request.urlopen(f"http://127.0.0.1:{door['ports']['metrics']}/llmhost/route-metrics").read()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.decode().splitlines()
            if line and not line.startswith("#")}


def msgs(text, model="auto"):
    body = {"messages": [{"role": "user", "content": text}]}
    return body if model is None else {"model": model, **body}


def test_auto_goes_to_the_nearest_domain_and_says_which_expert_answered(door):
    assert ask(door, msgs("Write a python function to sort a list")) == ("coder", "coder")
    assert ask(door, msgs("What is a good name for a cat?")) == ("general", "general")
    assert ask(door, msgs("Corrige este bug en mi código", model=None)) == ("coder", "coder")  # no model at all
    assert ask(door, msgs("Write python", model="general")) == ("general", "general")  # a named model is obeyed
    # the text that decides: the last user message, its text parts (not the system prompt or earlier turns)
    parts = {"model": "auto", "messages": [{"role": "system", "content": "You write python code."},
                                            {"role": "user", "content": "python bug"},
                                            {"role": "assistant", "content": "ok"},
                                            {"role": "user", "content": [{"type": "text", "text": "Name a cat"},
                                                                         {"type": "image_url"}]}]}
    assert ask(door, parts) == ("general", "general")
    assert ask(door, {"model": "auto", "prompt": "def f(): # python"}, "/v1/completions") == ("coder", "coder")
    m = route_metrics(door)
    assert m['llmhost_route_chosen_total{expert="coder"}'] == 3 and m['llmhost_route_chosen_total{expert="general"}'] == 2
    assert m["llmhost_route_loaded"] == 1 and m["llmhost_route_embed_seconds_count"] == 5


def test_a_slow_or_dead_embedder_falls_back_to_the_default_expert_and_counts_it(door):
    # slow: the embedder sleeps 500 ms, the front door waits 100 ms, then the default expert
    assert ask(door, msgs("slow python question")) == ("general", "general")
    assert route_metrics(door)['llmhost_route_fallback_total{reason="timeout"}'] == 1
    # dead: every request is still answered (by the default expert) until and after
    # the health check marks the embedder down, when the Lua stops calling it
    door["embedder"].shutdown()
    door["embedder"].server_close()
    answers = []
    for _ in range(40):
        answers.append(ask(door, msgs("Write a python function")))
        if route_metrics(door)['llmhost_route_fallback_total{reason="down"}'] >= 2:
            break
        time.sleep(0.1)
    assert set(answers) == {("general", "general")}
    m = route_metrics(door)
    assert m['llmhost_route_fallback_total{reason="down"}'] >= 2, m
    assert ask(door, {"model": "auto", "messages": [{"role": "system", "content": "x"}]}) == ("general", "general")
    assert route_metrics(door)['llmhost_route_fallback_total{reason="no_text"}'] == 1


def test_a_long_cjk_prompt_is_cut_on_a_character_boundary_and_truncated_by_the_embedder(door):
    text = "写一个排序列表的函数" * 200  # 2000 characters, 6000 bytes of UTF-8
    assert ask(door, msgs(text + " python")) == ("general", "general")  # routed (embedded), not an error
    sent = Embedder.last
    assert sent["truncate_prompt_tokens"] == -1 and sent["truncation_side"] == "right"
    assert sent["input"] == text[:666]  # 1998 bytes: the 667th character would end past byte 2000
    m = route_metrics(door)
    assert m['llmhost_route_fallback_total{reason="error"}'] == 0 and m['llmhost_route_chosen_total{expert="general"}'] >= 1


def test_a_connect_that_hangs_is_bounded_by_the_timeout_too(door):
    """The embedder's accept queue full: HAProxy's httpclient alone would try to connect for 5 s, 4 times."""
    door["embedder"].shutdown()
    door["embedder"].server_close()
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", door["ports"]["router"]))
    hung.listen(0)
    queued = []
    for _ in range(3):  # fill the queue: later SYNs are dropped, a connect waits
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", door["ports"]["router"]))
        queued.append(c)
    try:
        t0 = time.monotonic()
        assert ask(door, msgs("Write a python function")) == ("general", "general")
        took = time.monotonic() - t0
        m = route_metrics(door)
        # the health check needs its own 5 s to mark it down: this request called it, and gave up
        assert m['llmhost_route_fallback_total{reason="timeout"}'] == 1, m
        assert m["llmhost_route_embed_seconds_sum"] < 1.0 and took < 3.0, (m, took)
    finally:
        for c in [*queued, hung]:
            c.close()


def test_without_centroids_the_door_still_serves_auto_from_the_default(door, rendered):
    Path(rendered["plan"]["routing"]["centroids_file"]).unlink()
    cfg = rendered["out"] / "haproxy.cfg"
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    door["proc"].terminate()
    door["proc"].wait(5)
    door["proc"] = proc
    for _ in range(100):
        try:
            assert ask(door, msgs("Write a python function")) == ("general", "general")
            break
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    assert route_metrics(door)["llmhost_route_loaded"] == 0

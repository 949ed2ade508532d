"""The front door's edges on the deployed host: hostile requests sent as raw bytes to :8082,
each answered with its status and an OpenAI-style JSON error, and nothing the client chose
forged into the access log. docs/frontdoor.md lists the rules; tests/unit/test_frontdoor_render.py
drives the same rules against the rendered configuration offline."""

import hashlib
import json
import socket
import time
import uuid

import pytest

import rawhttp
from conftest import KEY
from rawhttp import parse

AUTH = f"Authorization: Bearer {KEY}\r\n"
CHAT = '{"model": "general", "max_tokens": 1, "messages": [{"role": "user", "content": "Say OK."}]}'
# Unique per run: the access-log check reads this run's lines only.
RUN = uuid.uuid4().hex[:8]


def post(body, path="/v1/chat/completions", auth=AUTH, extra=""):
    b = body if isinstance(body, bytes) else body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: door\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\nConnection: close\r\n{extra}\r\n").encode() + b


def raw(addr, data, wait=60.0):
    return rawhttp.raw(addr, 8082, data, wait)


BIG = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: door\r\n{AUTH}Content-Type: application/json\r\n"
       "Content-Length: 2000000\r\n")
# (name, request, status, error code, or the expert that answers)
CASES = [
    ("a good request", post(CHAT), 200, "general"),
    ("Basic with the key", post(CHAT, auth=f"Authorization: Basic {KEY}\r\n"), 401, "invalid_api_key"),
    ("two Authorization headers", post(CHAT, auth=AUTH * 2), 401, "invalid_api_key"),
    ("a wrong key, then the key", post(CHAT, auth=f"Authorization: Bearer wrong, Bearer {KEY}\r\n"), 401,
     "invalid_api_key"),
    ("the key and more", post(CHAT, auth=f"Authorization: Bearer {KEY} x\r\n"), 401, "invalid_api_key"),
    ("the key's sha256", post(CHAT, auth=f"Authorization: Bearer {hashlib.sha256(KEY.encode()).hexdigest()}\r\n"),
     401, "invalid_api_key"),
    ("a control character in model", post('{"model": "general\\n<134>forged-' + RUN + ': x"}'), 400,
     "invalid_model"),
    ("a carriage return in model", post('{"model": "general\\r\\nforged-' + RUN + '"}'), 400, "invalid_model"),
    ("a space in model", post('{"model": "general expert=coder"}'), 400, "invalid_model"),
    ("non-ASCII model", post('{"model": "g\\u00e9n\\u00e9ral"}'), 400, "invalid_model"),
    ("a 300-character model", post(json.dumps({"model": "m" * 300})), 400, "invalid_model"),
    ("an unknown model", post('{"model": "gpt-edge-' + RUN + '"}'), 404, "model_not_found"),
    ("n over the cap", post('{"model": "general", "n": 5, "messages": []}'), 400, "invalid_value"),
    ("n as 1e9", post('{"model": "general", "n": 1e9, "messages": []}'), 400, "invalid_value"),
    ("n written with an escape", post('{"model": "general", "\\u006e": 50, "messages": []}'), 400, "invalid_value"),
    ("best_of over the cap", post('{"model": "general", "best_of": 9, "prompt": "x"}', "/v1/completions"), 400,
     "invalid_value"),
    ("n at the cap", post('{"model": "general", "n": 4, "max_tokens": 1, "messages": [{"role": "user", '
                          '"content": "hi"}]}'), 200, "general"),
    ("JSON 5000 deep", post('{"model": "general", "x": ' + "[" * 5000 + "]" * 5000 + "}"), 400, "invalid_json"),
    ("not JSON", post('{"model": "general",'), 400, "invalid_json"),
    ("invalid UTF-8", post(b'{"model": "general", "messages": "\xff"}'), 400, "invalid_json"),
    ("chat to the embedding expert", post('{"model": "router", "messages": [{"role": "user", "content": "hi"}]}'),
     400, "wrong_endpoint"),
    ("completion to the embedding expert", post('{"model": "router", "prompt": "hi"}', "/v1/completions"), 400,
     "wrong_endpoint"),
    ("embeddings from a generate expert", post('{"model": "general", "input": "hi"}', "/v1/embeddings"), 400,
     "wrong_endpoint"),
    ("2 MB announced with Expect: 100-continue", (BIG + "Expect: 100-continue\r\n\r\n").encode(), 413,
     "request_too_large"),
    ("2 MB announced, 1 KB sent", (BIG + "\r\n").encode() + b"{" * 1024, 413, "request_too_large"),
]


@pytest.fixture(scope="module")
def addr(host):
    return host.ansible.get_variables()["ansible_host"]


@pytest.mark.parametrize("name,request_,status,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(addr, name, request_, status, expected):
    answer, _ = raw(addr, request_)
    got, headers, body = parse(answer)
    assert got == status, answer[:500]
    assert headers.get("content-type", "").startswith("application/json"), answer[:500]
    doc = json.loads(body)
    if status == 200:
        assert doc["model"] == expected and headers.get("x-llmhost-expert") == expected
    else:
        assert doc["error"]["code"] == expected and doc["error"]["message"], doc
    if expected == "wrong_endpoint":
        assert "runner: " in doc["error"]["message"]  # names the expert's runner
    if status == 413:  # decided from Content-Length: no 100 Continue, no wait for the body
        assert b"100 Continue" not in answer


def test_the_per_source_limit_counts_idle_connections(addr):
    """64 connections per address by default (frontdoor_per_source_maxconn), idle ones included."""
    idle = [socket.create_connection((addr, 8082), timeout=10) for _ in range(64)]
    try:
        # HAProxy's threads accept the idle connections in their own time: a request sent at
        # once can be counted first (seen in make test). Ask again for up to 10 s; without
        # counting per connection the idle ones never count and every answer is 200.
        deadline = time.monotonic() + 10
        while True:
            got, headers, body = parse(raw(addr, post(CHAT))[0])
            if got == 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == 429 and json.loads(body)["error"]["code"] == "rate_limited", body
        assert headers.get("connection") == "close"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    assert parse(raw(addr, post(CHAT))[0])[0] == 200


def test_a_long_cjk_prompt_is_routed_by_meaning_not_refused_by_the_embedder(host, addr):
    """Over the embedder's 256 tokens and the Lua's 2000 bytes: cut on a character, truncated
    by vLLM. Before, the embedder refused it (400) and every such request fell back as an error."""
    def counts():
        out = host.check_output("curl -s 127.0.0.1:8405/llmhost/route-metrics")
        lines = [ln.split() for ln in out.splitlines() if ln.startswith(("llmhost_route_fallback_total",
                                                                         "llmhost_route_chosen_total"))]
        return {k: float(v) for k, v in lines}

    text = "请写一个函数来排序列表并解释它的复杂度。" * 40  # 800 characters, 2400 bytes
    # the embedder itself, asked as the front door's Lua asks it: first 2000 bytes, truncated to its limit
    conf = json.loads(host.file("/etc/haproxy/llmhost-route.json").content_string)
    cut = text.encode()[:2000].decode("utf-8", "ignore")
    sent = json.dumps({"model": conf["embedder_model"], "input": cut, "truncate_prompt_tokens": -1,
                       "truncation_side": "right"}, ensure_ascii=False)
    out = host.run(f"curl -s -w '\n%{{http_code}}' -H content-type:application/json --data-binary @- "
                   f"{conf['embedder_url']} <<'EOF'\n{sent}\nEOF")
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", body[:300]
    assert len(json.loads(body)["data"][0]["embedding"]) == 384
    # and through the front door: routed by its embedding (chosen_total grows). Only a
    # timeout of the routing budget on a busy host is asked again (three times at most);
    # an embedder error, as before the truncation, fails at once.
    msg = json.dumps({"model": "auto", "max_tokens": 1, "messages": [{"role": "user", "content": text}]})
    for _ in range(3):
        before = counts()
        got, headers, _ = parse(raw(addr, post(msg))[0])
        after = counts()
        assert got == 200 and headers.get("x-llmhost-expert") in ("general", "coder")
        grew = {k for k in after if after[k] > before.get(k, 0)}
        assert 'llmhost_route_fallback_total{reason="error"}' not in grew, (before, after)
        if any(k.startswith("llmhost_route_chosen_total") for k in grew):
            break
        assert grew == {'llmhost_route_fallback_total{reason="timeout"}'}, (before, after)
    else:
        pytest.fail(f"three timeouts in a row: {after}")


def test_nothing_the_client_chose_is_forged_into_the_access_log(host, addr):
    raw(addr, post('{"model": "x\\n<134>forged-' + RUN + ': fake line\\r\\nforged-' + RUN + '"}'))
    deadline = time.monotonic() + 20
    while True:  # the unknown, clean name (a case above) shows this run's lines are in
        log = host.run(f"journalctl -t haproxy --since '-10min' --no-pager -o cat | grep -a -- '{RUN}'").stdout
        if f"model=gpt-edge-{RUN}" in log or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert f"model=gpt-edge-{RUN}" in log
    assert f"forged-{RUN}" not in log, log


@pytest.mark.full
def test_haproxys_own_408s(addr):
    """A slow body: the JSON 408 after frontdoor_timeout_request_s (30 s). Headers that never
    complete: HAProxy 2.6's H1 layer answers 408 with its built-in page (docs/frontdoor.md)."""
    answer, took = raw(addr, post(CHAT)[:-5])
    got, headers, body = parse(answer)
    assert got == 408 and took >= 25 and json.loads(body)["error"]["code"] == "timeout"
    assert parse(raw(addr, b"POST /v1/chat/completions HTTP/1.1\r\nHost: door\r\n")[0])[0] == 408


def test_requests_haproxy_cannot_parse_get_a_400(addr):
    """Answered by HAProxy 2.6's H1 layer with its built-in page (docs/frontdoor.md, What remains)."""
    assert parse(raw(addr, b"GARBAGE\r\n\r\n")[0])[0] == 400
    assert parse(raw(addr, b"POST /v1/chat/completions HTTP/1.1\r\nHost: door\r\nBad Header\r\n\r\n")[0])[0] == 400


def test_a_named_key_its_models_its_rate_and_its_usage(host, addr):
    """team-narrow (molecule.yml: coder only, 2 requests a minute, given by its hash): 403 for
    general (not counted in its rate), 200 from coder with the usage vLLM reported counted
    under its id, 200 again, then 429 with Retry-After; its id in the access log, the key
    nowhere. (Run twice within a minute, the second run starts over its rate.)"""
    narrow = "Authorization: Bearer sk-llmhost-narrow-key\r\n"

    def usage():
        out = host.check_output("curl -s 127.0.0.1:8405/llmhost/usage-metrics")
        return {ln.rsplit(" ", 1)[0]: int(ln.rsplit(" ", 1)[1]) for ln in out.splitlines() if 'key="team-narrow"' in ln}

    before = usage()
    got, _, body = parse(raw(addr, post(CHAT, auth=narrow))[0])
    assert got == 403 and json.loads(body)["error"]["code"] == "model_not_allowed", body
    got, headers, body = parse(raw(addr, post(CHAT.replace('"general"', '"coder"'), auth=narrow))[0])
    assert got == 200 and headers.get("x-llmhost-expert") == "coder", body
    reported = json.loads(body)["usage"]
    after = usage()
    pair = 'key="team-narrow",expert="coder"'
    for name, value in (("requests_total{" + pair + ',code="2xx"}', 1),
                        ("prompt_tokens_total{" + pair + "}", reported["prompt_tokens"]),
                        ("completion_tokens_total{" + pair + "}", reported["completion_tokens"])):
        k = "llmhost_usage_" + name
        assert after.get(k, 0) - before.get(k, 0) == value, (k, before, after)
    # the 403 did not use the quota: a second request passes, the third is over it
    assert parse(raw(addr, post(CHAT.replace('"general"', '"coder"'), auth=narrow))[0])[0] == 200
    got, headers, body = parse(raw(addr, post(CHAT.replace('"general"', '"coder"'), auth=narrow))[0])
    assert got == 429 and json.loads(body)["error"]["code"] == "rate_limited" and headers.get("retry-after") == "60"
    log = host.run("journalctl -t haproxy --since '-10min' --no-pager -o cat | grep -a 'key=team-narrow'").stdout
    assert "model=coder" in log and "sk-llmhost-narrow-key" not in log

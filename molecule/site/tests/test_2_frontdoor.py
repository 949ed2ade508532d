"""The front door on :8082, driven by the official openai SDK, unmodified."""

import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import KEY

QUESTION = "What is the capital of France? Answer in one word."


def post(url, body, key=KEY, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_models_are_listed(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["general", "coder", "router"]  # router: the embedding model auto routes with


@pytest.mark.parametrize("model", ["general", "coder", "SmolLM2-135M-Instruct"])
def test_non_streamed_and_streamed_answers(client, model):
    r = client.chat.completions.create(model=model, temperature=0, max_tokens=16,
                                       messages=[{"role": "user", "content": QUESTION}])
    assert "Paris" in r.choices[0].message.content
    # vLLM answers with its first served name, the expert id; only the expert a
    # name belongs to serves it, so a misrouted request would be a 404 from vLLM.
    expected = "general" if model == "SmolLM2-135M-Instruct" else model
    assert r.model == expected
    stream = client.chat.completions.create(model=model, temperature=0, max_tokens=16, stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 2 and "Paris" in "".join(chunks)


def test_auto_and_missing_model_are_answered_by_a_named_expert(base_url):
    # routed by meaning (test_5_routing): the answer names the expert, never "auto"
    for body in ({"model": "auto"}, {}):
        code, out = post(base_url + "/v1/chat/completions",
                         {**body, "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": QUESTION}]})
        assert code == 200 and out["model"] == "general", out


def test_tokens_stream_through_without_bunching(base_url):
    """SSE chunks reach the client as the expert sends them (about one per decode step)."""
    body = json.dumps({"model": "general", "max_tokens": 24, "temperature": 0, "stream": True,
                       "min_tokens": 24, "messages": [{"role": "user", "content": "Describe a desk."}]}).encode()
    req = urllib.request.Request(base_url + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    stamps = []
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r:
            if line.startswith(b"data: {"):
                stamps.append(time.monotonic())
    gaps = sorted(b - a for a, b in zip(stamps[1:], stamps[2:]))
    median = gaps[len(gaps) // 2]
    assert median > 0.002, f"chunks arrive in bursts (median gap {median * 1000:.2f} ms)"


def test_unknown_model_is_404_json(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and "gpt-17" in e.value.body["message"]


def test_missing_or_bad_key_is_401_json(base_url):
    bad = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "invalid_api_key"
    code, out = post(base_url + "/v1/chat/completions", {"model": "general"}, key=None)
    assert code == 401 and out["error"]["type"] == "invalid_request_error"


def test_health_answers_without_a_key(base_url):
    with urllib.request.urlopen(base_url + "/health", timeout=10) as r:
        assert r.status == 200 and json.load(r) == {"status": "ok"}


def test_long_prompt_with_model_last_is_routed_right(base_url):
    filler = "This sentence is filler for a long prompt. " * 2500   # about 110 KB
    body = ('{"messages": [{"role": "user", "content": ' + json.dumps(filler + "Ignore the filler. Say OK.")
            + '}], "max_tokens": 4, "temperature": 0, "model": "coder"}').encode()
    assert len(body) > 100_000
    code, out = post(base_url + "/v1/chat/completions", None, raw=body)
    # routed to coder (which may refuse a prompt over its context with 400), never to general
    if code == 200:
        assert out["model"] == "coder"
    else:
        assert code in (400, 413), out
        assert "general" not in json.dumps(out)


def test_body_over_the_limit_is_413_with_a_reason(base_url):
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}], "model": "coder"}).encode()
    code, out = post(base_url + "/v1/chat/completions", None, raw=body)
    assert code == 413 and "cannot route" in out["error"]["message"]


@pytest.mark.full
def test_a_stopped_expert_gives_503_json_while_the_other_answers(host, client):
    host.run("systemctl stop llmhost-expert-coder")
    try:
        time.sleep(6)  # health checks every 2 s, down after 2 failures
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="coder", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503 and e.value.body["code"] == "expert_unavailable"
        r = client.chat.completions.create(model="general", temperature=0, max_tokens=16,
                                           messages=[{"role": "user", "content": QUESTION}])
        assert "Paris" in r.choices[0].message.content
    finally:
        host.run("systemctl start llmhost-expert-coder")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            client.chat.completions.create(model="coder", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
            break
        except openai.APIError:
            time.sleep(3)


def test_front_door_metrics_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8405").is_listening
    assert "haproxy_backend_current_queue" in host.check_output("curl -s 127.0.0.1:8405/metrics")


def test_one_access_line_per_request_in_the_journal(host, client):
    since = host.check_output("date +%s")
    client.chat.completions.create(model="general", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 20
    while True:
        lines = host.run(f"journalctl -t haproxy --since @{since} --no-pager -o cat").stdout
        hits = [ln for ln in lines.splitlines() if "be_general/general" in ln and "model=general" in ln]
        if hits or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert hits and " 200 " in hits[-1], lines[-2000:]

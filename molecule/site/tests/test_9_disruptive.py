"""Disruptive checks, run last: crash recovery, a broken deploy rolled back, lazy loading.

Also the first checks of the two experts themselves (answers, cores, listeners, hardening)."""

import json
import os
import re
import threading
import time

import pytest
from conftest import smoke
from llmhost import runner

PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
QUESTION = "What is the capital of France? Answer in one word."
PORTS = {"general": 8101, "coder": 8102}


def ask(host, expert, port=None, timeout=120):
    body = json.dumps({"model": expert, "temperature": 0, "max_tokens": 16,
                       "messages": [{"role": "user", "content": QUESTION}]})
    r = host.run(f"curl -s -m {timeout} -H 'Content-Type: application/json' "
                 f"-d '{body}' http://127.0.0.1:{port or PORTS[expert]}/v1/chat/completions")
    if r.rc != 0:
        return None
    try:
        return json.loads(r.stdout)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError):
        return None


def playbook(*args, playbooks=("preflight", "install", "experts", "frontdoor")) -> runner.PlaybookRun:
    return runner.run_playbook([f"playbooks/{p}.yml" for p in playbooks], os.environ["MOLECULE_INVENTORY_FILE"],
                               args=args, envvars=runner.molecule_envvars())


def experts_vars(host, **changes):
    """The scenario's experts list with changes, as extra-vars JSON."""
    inv = json.loads(host.check_output("cat /etc/llmhost/experts.json"))
    base = []
    for e in inv["experts"]:
        pooling = e.get("runner") == "pooling"
        base.append({"expert_id": e["expert_id"], "model": e["model"], "domain": e["domain"],
                     "priority": e["priority"], "kv_cache_gib": 1, "cores": 0 if pooling else 1,
                     # "auto" is the plan's own name for routed experts, not an alias
                     "aliases": [n for n in e["names"] if n not in (e["expert_id"], "auto")],
                     **({"thresholds": e["thresholds"]} if e["thresholds"] else {}),
                     **({"reference": e["reference"]} if e.get("reference") else {}),
                     **({"runner": "pooling"} if pooling else {}),
                     **({"route_examples": e["route_examples"]} if e.get("route_examples") else {}),
                     "compile": "eager", "engine": {"max_model_len": 256 if pooling else 2048}})
    for eid, ch in changes.items():
        [e for e in base if e["expert_id"] == eid][0].update(ch)
    return base


def test_both_experts_answer_paris_on_their_own_port(host):
    for expert in PORTS:
        assert host.service(f"llmhost-expert-{expert}").is_running
        answer = ask(host, expert)
        assert answer and "Paris" in answer, (expert, answer)


def test_units_bind_disjoint_cores_and_kv_cache(host):
    for expert, cpu in (("general", "0"), ("coder", "1")):
        env = host.file(f"/etc/llmhost/experts/{expert}.env").content_string
        assert f'VLLM_CPU_OMP_THREADS_BIND="{cpu}"' in env and 'VLLM_CPU_KVCACHE_SPACE="1"' in env
        unit = host.file(f"/etc/systemd/system/llmhost-expert-{expert}.service").content_string
        assert f"CPUAffinity={cpu}" in unit and "--host 127.0.0.1" in unit
    cfg = json.loads(host.file("/etc/llmhost/experts.json").content_string)
    assert [e["port"] for e in cfg["experts"]] == [8101, 8102, 8103]   # 8103: the router
    router = host.file("/etc/llmhost/experts/router.env").content_string
    assert 'VLLM_CPU_OMP_THREADS_BIND="0-1"' in router   # cores: 0, no CPU reserved: beside both


def test_crash_loops_end_and_env_files_are_private(host):
    for expert in ("general", "coder"):
        show = host.check_output(f"systemctl show -p StartLimitBurst -p StartLimitIntervalUSec llmhost-expert-{expert}")
        assert "StartLimitBurst=5" in show, show
        env = host.file(f"/etc/llmhost/experts/{expert}.env")
        assert env.mode == 0o640 and env.user == "root" and env.group == "llmhost-vllm"


def test_nothing_but_the_front_door_listens_beyond_loopback(host):
    out = host.check_output("ss -Hltnp")
    for line in out.splitlines():
        local = line.split()[3]
        addr = local.rsplit(":", 1)[0]
        if local.endswith(":22") or local.endswith(":8082"):  # ssh of the test host; the front door
            continue
        assert addr.startswith("127.") or addr in ("[::1]", "::1"), line


def test_exposure_score_at_most_2_5(host):
    out = host.check_output("systemd-analyze security llmhost-expert-general.service --no-pager | tail -1")
    score = float(out.split("exposure level for")[1].split(":")[1].split()[0])
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 2.5, out


@pytest.mark.full
def test_kill_9_is_followed_by_serving_again(host):
    pid = host.check_output("systemctl show -p MainPID --value llmhost-expert-coder")
    host.run(f"kill -9 {pid}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = host.check_output("systemctl show -p MainPID --value llmhost-expert-coder")
        if new not in ("0", pid) and host.service("llmhost-expert-coder").is_running:
            state = host.check_output("systemctl show -p ActiveState --value llmhost-expert-coder")
            if state == "active":
                break
        time.sleep(2)
    answer = ask(host, "coder")
    assert answer and "Paris" in answer


def test_broken_model_rolls_back_while_the_other_expert_serves(host):
    host.run("mkdir -p /srv/models/broken && cp /srv/models/SmolLM2-135M-Instruct/*.json /srv/models/broken/ "
             "&& head -c 1048576 /dev/urandom > /srv/models/broken/model.safetensors")
    before = host.file("/etc/systemd/system/llmhost-expert-coder.service").sha256sum
    results = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            results.append(ask(host, "general", timeout=60))
            time.sleep(0.5)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host, coder={"model": "/srv/models/broken"})}),
                     playbooks=("preflight", "experts", "frontdoor"))
    finally:
        stop.set()
        t.join()
    assert r.rc != 0
    out = " ".join(r.stdout.split())
    assert "expert 'coder' did not pass its readiness gate" in out, out[-3000:]
    assert "Restored: " in out and "llmhost-expert-coder.service" in out, out[-3000:]
    assert "the previous version (service) was started again and is active" in out, out[-3000:]
    assert host.file("/etc/systemd/system/llmhost-expert-coder.service").sha256sum == before
    assert host.service("llmhost-expert-coder").is_running
    assert "Paris" in (ask(host, "coder") or "")
    assert len(results) >= 5 and all(a and "Paris" in a for a in results), results


def test_removing_two_experts_needs_confirmation_and_changes_nothing(host):
    before = {e: host.file(f"/etc/systemd/system/llmhost-expert-{e}.service").sha256sum for e in PORTS}
    r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host, general={"expert_id": "general2"},
                                                                  coder={"expert_id": "coder2"})}),
                 playbooks=("preflight", "experts"))
    assert r.rc != 0
    out = " ".join(r.stdout.split())
    assert "2 experts are on the host but not in the list (coder, general); nothing was changed" in out, out[-3000:]
    assert {e: host.file(f"/etc/systemd/system/llmhost-expert-{e}.service").sha256sum for e in PORTS} == before
    assert not host.file("/etc/systemd/system/llmhost-expert-general2.service").exists
    assert all(host.service(f"llmhost-expert-{e}").is_running for e in PORTS)


@pytest.mark.full
def test_a_renamed_expert_that_fails_gives_the_port_back_to_the_old_one(host):
    """Renaming coder to coder2 (same port) with a model that cannot load: the old unit
    is stopped to free the port, the new one fails its gate and is removed, and the old
    one is started again and kept: pruning only ever runs after a successful deploy."""
    host.run("mkdir -p /srv/models/broken && cp /srv/models/SmolLM2-135M-Instruct/*.json /srv/models/broken/ "
             "&& head -c 1048576 /dev/urandom > /srv/models/broken/model.safetensors")
    r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(
        host, coder={"expert_id": "coder2", "model": "/srv/models/broken"})}), playbooks=("preflight", "experts"))
    assert r.rc != 0
    out = " ".join(r.stdout.split())
    assert "expert 'coder2' did not pass its readiness gate" in out, out[-3000:]
    assert "there was no previous version" in out and "started again: coder" in out, out[-3000:]
    assert host.file("/etc/systemd/system/llmhost-expert-coder.service").exists
    assert not host.file("/etc/systemd/system/llmhost-expert-coder2.service").exists
    assert host.service("llmhost-expert-coder").is_running
    assert "Paris" in (ask(host, "coder") or "")


# A chat template that scrambles the conversation (every message reversed): the model
# loads, the readiness gate passes, and the answers are fluent nonsense. Only the
# coherence probes can tell.
SCRAMBLED_TEMPLATE = """{% for m in messages %}<|im_start|>{{ m['role'] }}
{{ m['content'] | reverse | join }}<|im_end|>
{% endfor %}<|im_start|>assistant
"""


@pytest.mark.full
def test_a_wrong_chat_template_fails_the_coherence_probes(host, base_url, tmp_path):
    path = "/srv/models/scrambled-chat-template.jinja"
    host.run(f"cat > {path} <<'EOF'\n{SCRAMBLED_TEMPLATE}EOF\nchmod 0644 {path}")
    broken = experts_vars(host)
    coder = [e for e in broken if e["expert_id"] == "coder"][0]
    coder["engine"] = dict(coder["engine"], chat_template=path)
    try:
        r = playbook("-e", json.dumps({"llmhost_experts": broken}), playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]  # nothing a deploy can see is wrong
        assert f"--chat-template {path}" in host.file("/etc/systemd/system/llmhost-expert-coder.service").content_string
        s = smoke(host, base_url, tmp_path, "--repeat", "2")
        print(s.stdout)
        assert s.returncode == 1, s.stdout + s.stderr
        failed = re.findall(r"FAIL coder: coherence probe '(\w+)' failed", s.stdout)
        assert failed, s.stdout  # names the expert and the probe, and shows the answer
        # the reference comparison sees it too, quoting the reference and the answer
        assert re.search(r"FAIL coder: reference probe 'japan' diverges from the reference at word \d+: "
                         r"expected 'The capital of Japan is Tokyo\.', got ", s.stdout), s.stdout
        assert "FAIL general" not in s.stdout  # the healthy expert still passes
    finally:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host)}), playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]
    assert "--chat-template" not in host.file("/etc/systemd/system/llmhost-expert-coder.service").content_string
    assert "Paris" in (ask(host, "coder") or "")


def native_bf16(host) -> bool:
    flags = host.run("grep -m1 -E '^(flags|Features)' /proc/cpuinfo").stdout.split()
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


@pytest.mark.full
def test_forced_bf16_is_refused_where_emulated_and_stays_on_the_reference(host, base_url, tmp_path):
    """dtype: bfloat16 forced on coder. Where the CPU has no native bf16 (an AVX2-only
    x86) the preflight refuses it, naming expert and field, and nothing changes; with
    allow_emulated_dtype it deploys. Either way (emulated or native) the answers must
    keep to the float32 reference on every decisive start: a precision change may flip
    a near-tie (the France question, 0.10 nats), never a decisive token."""
    unit = "/etc/systemd/system/llmhost-expert-coder.service"
    before = host.file(unit).sha256sum
    forced = experts_vars(host, coder={"engine": {"max_model_len": 2048, "dtype": "bfloat16"}})
    native = native_bf16(host)
    print(f"host CPU has native bf16: {native}")
    try:
        if not native:
            r = playbook("-e", json.dumps({"llmhost_experts": forced}), playbooks=("preflight", "experts"))
            out = " ".join(r.stdout.split())
            assert r.rc != 0 and "expert 'coder' field 'dtype'" in out and "emulated" in out, out[-3000:]
            assert host.file(unit).sha256sum == before  # nothing changed on the host
            [e for e in forced if e["expert_id"] == "coder"][0]["allow_emulated_dtype"] = True
        r = playbook("-e", json.dumps({"llmhost_experts": forced}), playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]
        assert "--dtype bfloat16" in host.file(unit).content_string
        s = smoke(host, base_url, tmp_path, "--repeat", "2", "--expert", "coder")
        print(s.stdout)
        assert "reference probe" not in s.stdout, s.stdout
        assert re.search(r"^coder .* 4/4 ok ", s.stdout, re.M), s.stdout
    finally:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host)}), playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]
    assert "Paris" in (ask(host, "coder") or "")


@pytest.mark.full
def test_lazy_expert_starts_on_demand_and_stops_when_idle(host):
    # preloaded by priority: the router (9) and general (5); coder (3) is lazy
    lazy = {"enabled": True, "warmup_pool_size": 2, "max_loaded_experts": 3, "memory_threshold": 0.9,
            "auto_unload_after_s": 20}
    # the front door and Prometheus follow, as in a real deploy: neither may keep
    # touching the lazy expert's socket (a health check or a scrape would keep it loaded)
    r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host), "llmhost_lazy_loading": lazy}),
                 playbooks=("preflight", "experts", "frontdoor", "monitoring"))
    assert r.rc == 0, r.stdout[-3000:]
    cfg = host.file("/etc/haproxy/haproxy.cfg").content_string
    assert "server coder 127.0.0.1:8102 maxconn 8 maxqueue 32\n" in cfg  # lazy: no health check
    # Until the front door stage ran, the old config still health-checked 8102 and may
    # have woken the freshly armed socket: it must go idle and stop by itself.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and host.service("llmhost-expert-coder").is_running:
        time.sleep(2)
    assert not host.service("llmhost-expert-coder").is_running
    assert host.socket("tcp://127.0.0.1:8102").is_listening
    t0 = time.monotonic()
    answer = ask(host, "coder", timeout=300)
    print(f"lazy first request: {time.monotonic() - t0:.1f} s")
    # what the proxy and its admission gate said, for the failure message when no answer comes
    why = host.run("journalctl -u llmhost-expert-coder-proxy -u llmhost-expert-coder -n 25 --no-pager -o cat; "
                   "cat /run/llmhost-admit/coder.reason; systemctl show -p NRestarts -p Result "
                   "llmhost-expert-coder").stdout
    assert answer and "Paris" in answer, why
    assert host.service("llmhost-expert-coder").is_running
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and host.service("llmhost-expert-coder").is_running:
        time.sleep(2)
    assert not host.service("llmhost-expert-coder").is_running, "idle lazy expert did not stop"
    assert host.socket("tcp://127.0.0.1:8102").is_listening
    # the answer probe skips the idle lazy expert and does not wake it
    host.run("systemctl start llmhost-probe.service")
    prom = host.file("/var/lib/prometheus/node-exporter/llmhost_probe.prom").content_string
    assert 'llmhost_probe_loaded{expert="coder"} 0' in prom and 'llmhost_probe_loaded{expert="general"} 1' in prom
    assert not host.service("llmhost-expert-coder").is_running, "the probe woke the lazy expert"


CACHE = "/var/lib/llmhost/coder"


@pytest.mark.full
def test_a_compiled_expert_restarts_from_its_compile_cache(host):
    """coder deployed with compile: full: the deploy's start compiles (torch.compile,
    inductor) and leaves the compiled graphs in the expert's state folder
    (TORCHINDUCTOR_CACHE_DIR, VLLM_CACHE_ROOT). A restart then writes no new
    compiled file there: every graph came from the cache. Proof from the folder,
    not from a time limit; the start times are printed."""
    unit = "/etc/systemd/system/llmhost-expert-coder.service"
    try:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host, coder={"compile": "full"})}),
                     playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]
        assert "--enforce-eager" not in host.file(unit).content_string
        env = host.file(unit).content_string
        assert f"TORCHINDUCTOR_CACHE_DIR={CACHE}/inductor" in env and f"VLLM_CACHE_ROOT={CACHE}/vllm" in env
        compiled = host.check_output(f"find {CACHE}/inductor -type f -name '*.so' | wc -l")
        assert int(compiled) > 0, "the compiled start left no compiled kernels in the cache"
        since = host.check_output("touch /run/llmhost-cache-mark && sleep 1 && date +%s")
        t0 = time.monotonic()
        host.check_output("systemctl restart llmhost-expert-coder")
        restart_s = time.monotonic() - t0
        fresh = host.check_output(f"find {CACHE}/inductor {CACHE}/vllm -type f -newer /run/llmhost-cache-mark")
        assert fresh == "", f"the restart compiled again: {fresh[:2000]}"
        log = host.check_output(f"journalctl -u llmhost-expert-coder --since @{since} -o cat | "
                                "grep -o 'enforce_eager=[A-Za-z]*\\|init engine .* took [0-9.]* s' || true")
        print(f"compiled kernels in the cache: {compiled}; warm restart to ready {restart_s:.1f} s; {log}")
        assert "enforce_eager=False" in log, log
        assert "Paris" in (ask(host, "coder") or "")
    finally:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host)}), playbooks=("preflight", "experts"))
        assert r.rc == 0, r.stdout[-3000:]
    assert "--enforce-eager" in host.file(unit).content_string

"""A deploy that changes one preloaded expert, under a steady client: no failed request.

The deploy puts the changed expert's server in maintenance at the front door and waits
for its requests in flight (llmhost-admit drain), restarts it through its readiness gate,
and puts it back in service; meanwhile new requests wait in the front door
(llmhost-hold.lua) instead of getting 503. The client sends one request at a time,
streamed and not, through the front door, to the expert being changed.

Runs before the disruptive checks (test_9) and reuses their playbook helpers. Two
deploys (the change, then back), each restarting the expert: `full` (make test-all).
Measured on a test host of this machine under other work (load average ~30 on 2 cores):
38 requests, 0 failed, the longest held 94.6 s through the restart; 464 s in all."""

import json
import threading
import time

import pytest
from test_9_disruptive import experts_vars, playbook

EXPERT = "general"
ADMIT = "/usr/local/libexec/llmhost/llmhost-admit"


def steady_client(client, stop, results):
    """One request at a time until stopped, streamed and not in turn: (ok, seconds, why)."""
    i = 0
    while not stop.is_set():
        stream, i = i % 2 == 0, i + 1
        t0 = time.monotonic()
        try:
            r = client.chat.completions.create(model=EXPERT, max_tokens=8, temperature=0, stream=stream,
                                               messages=[{"role": "user", "content": "Say hello."}])
            if stream:
                text = "".join(c.choices[0].delta.content or "" for c in r if c.choices)
            else:
                text = r.choices[0].message.content or ""
            results.append((bool(text), time.monotonic() - t0, "" if text else "empty answer"))
        except Exception as e:  # noqa: BLE001  (any failure the client sees counts)
            results.append((False, time.monotonic() - t0, f"{type(e).__name__}: {e}"[:300]))
        time.sleep(0.2)


def main_pid(host):
    return host.check_output(f"systemctl show -p MainPID --value llmhost-expert-{EXPERT}")


def server_status(host):
    """The expert's server status at the front door, read by the shipped llmhost-admit's own
    runtime API helpers (loaded with runpy: the script is not a module)."""
    code = (f"import runpy; m = runpy.run_path('{ADMIT}'); "
            f"print((m['server_stat'](m['admin_command']('show stat'), 'be_{EXPERT}', '{EXPERT}') or {{}})"
            ".get('status', ''))")
    return host.check_output(f'python3 -c "{code}"').strip()


def deploy_under_client(host, client, env):
    """Run the experts stage with EXPERT's env set to `env` while the client runs; the front
    door's server is put back in service whatever happens (its status before that is returned)."""
    results, stop, status = [], threading.Event(), ""
    t = threading.Thread(target=steady_client, args=(client, stop, results), daemon=True)
    t.start()
    time.sleep(2)   # a few requests before the deploy starts
    try:
        r = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host, **{EXPERT: {"env": env}})}),
                     playbooks=("preflight", "experts"))
        time.sleep(2)   # and a few after
        status = server_status(host)
    finally:
        stop.set()
        t.join(120)
        host.run(f"python3 {ADMIT} ready --expert {EXPERT}")
    return r, results, status


@pytest.mark.full
def test_a_deploy_that_changes_one_preloaded_expert_fails_no_request_of_a_steady_client(host, client):
    before = main_pid(host)
    mark = f"drain-{int(time.time())}"
    try:
        r, results, status = deploy_under_client(host, client, {"DRAIN_TEST_MARK": mark})
        out = " ".join(r.stdout.split())
        failed = [x for x in results if not x[0]]
        longest = max((x[1] for x in results), default=0.0)
        print(f"drained deploy: {len(results)} requests ({sum(1 for x in results if x[1] > 5)} waited over 5 s), "
              f"{len(failed)} failed, longest {longest:.1f} s; play changed {r.changed}, {r.seconds:.0f} s")
        assert r.rc == 0, out[-3000:]
        # the expert changed and was restarted, drained first and put back
        assert f'DRAIN_TEST_MARK="{mark}"' in host.file(f"/etc/llmhost/experts/{EXPERT}.env").content_string
        assert main_pid(host) not in ("0", before)
        assert f"be_{EXPERT}/{EXPERT} in maintenance at the front door" in out, out[-3000:]
        assert status.startswith("UP"), status     # the deploy put it back in service itself
        assert not failed, failed[:5]
        # requests were sent across the restart: at least one waited for it at the front door
        assert len(results) >= 5 and longest > 5, (len(results), longest)
    finally:
        # the expert as the scenario deployed it (no mark), drained the same way
        t0 = time.monotonic()
        back = playbook("-e", json.dumps({"llmhost_experts": experts_vars(host)}), playbooks=("preflight", "experts"))
        status_back = server_status(host)      # before anything but the deploy touched it
        print(f"deploy back: rc {back.rc}, changed {back.changed}, {time.monotonic() - t0:.0f} s, {status_back}")
        host.run(f"python3 {ADMIT} ready --expert {EXPERT}")
    assert back.rc == 0 and status_back.startswith("UP"), (back.rc, status_back)

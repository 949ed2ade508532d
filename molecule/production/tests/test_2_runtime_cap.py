"""max_loaded_experts holds at run time: lazy experts evict the idle one or are refused,
preloaded experts never stop answering, nothing is OOM-killed.

The cgroup here is v1: MemoryMax is recorded, not enforced (test_1 checks it is set).
So this proves the cap by counting running expert units, not by waiting for the kernel.
"""

import json
import threading
import time

from conftest import LAZY, PRELOADED, chat

COUNTER = ("nohup sh -c 'while true; do "
           "n=$(systemctl list-units \"llmhost-expert-*.service\" --state=active,activating,deactivating "
           "--no-legend --plain | grep -vc -- -proxy.service); echo \"$(date +%s.%N) $n\"; sleep 1; done' "
           "> /run/llmhost-unit-count.log 2>&1 & echo $!")


def units_running(host):
    out = host.run("systemctl list-units 'llmhost-expert-*.service' --state=active,activating --no-legend --plain"
                   " | grep -v -- -proxy.service | cut -d' ' -f1").stdout.split()
    return sorted(u.removeprefix("llmhost-expert-").removesuffix(".service") for u in out)


def test_lazy_experts_in_turn_then_together_never_exceed_the_cap(host, base_url):
    # the inventory's cap (the router, three preloaded experts and one lazy one)
    max_loaded = json.loads(host.file("/etc/llmhost/experts.json").content_string)["lazy_loading"]["max_loaded_experts"]
    assert max_loaded == 5
    pid = host.check_output(COUNTER)
    steady: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer():
        # a steady trickle, not a flood: the folded host has 2 cores for 5 experts,
        # and a lazy expert must still be able to load beside it
        i = 0
        while not stop.is_set():
            steady.append(chat(base_url, PRELOADED[i % len(PRELOADED)], timeout=300))
            i += 1
            stop.wait(2)

    t = threading.Thread(target=hammer)
    t.start()
    timeline = []
    try:
        for e in LAZY:                          # in turn: the second evicts the first
            t0 = time.monotonic()
            code, answer = chat(base_url, e, timeout=600)
            timeline.append((e, code, round(time.monotonic() - t0, 1), units_running(host)))
            assert code == 200 and "Paris" in answer, (e, code, answer)
        assert "gemma-3" not in units_running(host), "the idle lazy expert was not evicted"
        together: dict[str, tuple] = {}

        def ask(e):
            together[e] = chat(base_url, e, timeout=600)

        threads = [threading.Thread(target=ask, args=(e,)) for e in LAZY]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        timeline.append(("together", together, units_running(host)))
    finally:
        stop.set()
        t.join()
        host.run(f"kill {pid}")
    counts = [int(line.split()[1]) for line in host.file("/run/llmhost-unit-count.log").content_string.splitlines()
              if len(line.split()) == 2]
    print("timeline:", timeline)
    print(f"units running: {len(counts)} samples, max {max(counts)}, histogram "
          f"{ {n: counts.count(n) for n in sorted(set(counts))} }")
    print(f"steady stream to the preloaded experts: {len(steady)} requests, "
          f"{sum(1 for c, _ in steady if c != 200)} failed")
    assert max(counts) <= max_loaded, max(counts)
    ok = [e for e, (code, _) in together.items() if code == 200]
    refused = {e: r for e, r in together.items() if r[0] != 200}
    assert ok, together                         # one of them is served ...
    for e, (code, err) in refused.items():      # ... and a refusal says why, OpenAI-style
        assert code == 503 and err["error"]["code"] == "expert_not_loaded", (e, code, err)
        assert "max_loaded_experts" in err["error"]["message"]
    assert steady and all(code == 200 for code, _ in steady), [s for s in steady if s[0] != 200][:3]
    assert all(isinstance(a, str) and "Paris" in a for _, a in steady)
    results = host.run("systemctl show -p Result --value " + " ".join(
        f"llmhost-expert-{e}.service" for e in PRELOADED + LAZY)).stdout.split()
    assert "oom-kill" not in results, results
    for e in PRELOADED:
        assert host.service(f"llmhost-expert-{e}").is_running

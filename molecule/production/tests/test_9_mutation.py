"""The rehearsal catches what the unit test cannot: put ProtectHome=yes back for a
model under /home and the expert no longer serves."""

import time

import pytest
from conftest import PRELOADED, chat

DROPIN = "/etc/systemd/system/llmhost-expert-phi-4-mini.service.d/zz-mutation.conf"


@pytest.mark.full
def test_protect_home_yes_with_a_home_model_fails_the_expert(host, base_url):
    host.run(f"mkdir -p {DROPIN.rsplit('/', 1)[0]} && printf '[Service]\\nProtectHome=yes\\nBindReadOnlyPaths=\\n' "
             f"> {DROPIN} && systemctl daemon-reload")
    try:
        r = host.run("systemctl restart llmhost-expert-phi-4-mini.service")
        assert r.rc != 0, "an expert that cannot see its model passed its readiness gate"
        log = host.run("journalctl -u llmhost-expert-phi-4-mini -n 80 --no-pager").stdout
        print(log[-1500:])
    finally:
        host.run(f"rm -f {DROPIN} && systemctl daemon-reload && systemctl restart llmhost-expert-phi-4-mini.service")
    deadline = time.monotonic() + 60   # the front door's health check marks it up within seconds
    while True:
        code, answer = chat(base_url, PRELOADED[0])
        if code == 200 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert code == 200 and "Paris" in answer, (code, answer)

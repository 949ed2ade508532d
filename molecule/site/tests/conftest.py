"""Shared helpers for the site scenario's testinfra files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

KEY = "sk-llmhost-test-key"


def pytest_collection_modifyitems(config, items):
    """`make test` (LLMHOST_TEST_TIER=test) deselects the tests marked `full`: the
    disruptive failure paths, which `make test-all` and `make scenario S=site` run.
    Run by hand (no tier set), the scenario is whole."""
    if os.environ.get("LLMHOST_TEST_TIER", "all") == "all":
        return
    drop = [i for i in items if i.get_closest_marker("full")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if not i.get_closest_marker("full")]
LLMHOST = str(Path(sys.executable).parent / "llmhost")


def smoke(host, base_url, tmp_path, *args):
    """`llmhost smoke` from the controller through the front door, with the host's
    effective experts config (thresholds included)."""
    (tmp_path / "experts.json").write_text(host.file("/etc/llmhost/experts.json").content_string)
    return subprocess.run([LLMHOST, "smoke", "--url", base_url, "--config", str(tmp_path / "experts.json"), *args],
                          capture_output=True, text=True, env=dict(os.environ, LLMHOST_API_KEY=KEY), check=False)


@pytest.fixture(scope="module")
def base_url(host):
    addr = host.ansible.get_variables()["ansible_host"]
    return f"http://{addr}:8082"


@pytest.fixture(scope="module")
def client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0, timeout=300)

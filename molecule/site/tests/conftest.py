"""Shared helpers for the site scenario's testinfra files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from tiers import pytest_collection_modifyitems  # noqa: E402,F401  (make test deselects the `full` tests)

KEY = "sk-llmhost-test-key"
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

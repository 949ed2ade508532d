"""Helpers for the production rehearsal's testinfra files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from tiers import pytest_collection_modifyitems  # noqa: E402,F401  (make test deselects the `full` tests)

KEY = "sk-llmhost-rehearsal-key"   # in vault.yml, encrypted with the scenario's test password
LLMHOST = str(Path(sys.executable).parent / "llmhost")
PROJECT = os.environ["MOLECULE_PROJECT_DIRECTORY"]
PRELOADED = ("phi-4-mini", "mistral-7b-instruct", "qwen2.5-coder-1.5b")
LAZY = ("gemma-3", "aya-expanse")


@pytest.fixture(scope="module")
def base_url(host):
    return f"http://{host.ansible.get_variables()['ansible_host']}:8082"


def chat(base_url, model, key=KEY, timeout=300, question="What is the capital of France? Answer in one word."):
    """(HTTP status, answer or error JSON) through the front door, with curl on the controller."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": 12,
                       "messages": [{"role": "user", "content": question}]})
    cmd = ["curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
           "-d", body, f"{base_url}/v1/chat/completions"]
    if key:
        cmd[1:1] = ["-H", f"Authorization: Bearer {key}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text, _, code = r.stdout.rpartition("\n")
    try:
        data = json.loads(text)
    except ValueError:
        return int(code or 0), text
    if "choices" in data:
        return int(code), data["choices"][0]["message"]["content"]
    return int(code), data

"""The small real model folder built by scripts/build-model answers coherently (greedy)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.model
CACHE = Path(os.environ.get("LLMHOST_CACHE", "/var/cache/llmhost"))


def test_model_greedy_answer_says_paris():
    folder = subprocess.run([str(ROOT / "scripts/build-model")], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert (Path(folder) / "model.safetensors").stat().st_size > 200_000_000
    r = subprocess.run([str(CACHE / "model-venv/bin/python"), str(ROOT / "scripts/build_model.py"),
                        "--check", folder], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Paris" in r.stdout

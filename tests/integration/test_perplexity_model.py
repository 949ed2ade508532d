"""The numerics check (llmhost.numerics) on the real small model, in transformers: it
passes bf16 and float32 of the same model and fails one with a damaged weight.

The same judgement runs on vLLM's prompt log-probabilities in the smoke test of every
deployed expert (site scenario); here the damage can be made on purpose."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from llmhost import numerics

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.model
CACHE = Path(os.environ.get("LLMHOST_CACHE", "/var/cache/llmhost"))
# a mid-layer projection: one matrix of 211 in SmolLM2-135M
DAMAGED = "model.layers.15.mlp.down_proj.weight"


def perplexity(folder: str, dtype: str, permute: str | None = None) -> dict[str, float]:
    r = subprocess.run([str(CACHE / "model-venv/bin/python"), str(ROOT / "scripts/build_model.py"), "--perplexity",
                        folder, dtype, *([permute] if permute else [])], capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"), check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bf16_and_float32_pass_and_a_damaged_weight_fails():
    folder = subprocess.run([str(ROOT / "scripts/build-model")], capture_output=True, text=True,
                            check=True).stdout.strip()
    reference = json.loads((Path(folder) / "llmhost-reference.json").read_text())["perplexity"]
    f32 = perplexity(folder, "float32")
    bf16 = perplexity(folder, "bfloat16")
    broken = perplexity(folder, "float32", DAMAGED)
    print(f"float32 {f32}\nbf16 {bf16}\ndamaged {broken}\nreference {reference}")
    assert f32 == pytest.approx(reference, rel=1e-3)          # the reference is float32 in transformers
    fp = {"model": folder, "dtype": "float32", "quantization": None}
    assert numerics.judge(f32, reference=reference) == []
    assert numerics.judge(bf16, reference=reference) == []
    # bf16 against a float32 baseline of the same model: another dtype, the loose bound
    assert numerics.judge(bf16, baseline={"fingerprint": fp, "perplexity": f32},
                          fp={**fp, "dtype": "bfloat16"}) == []
    misses = numerics.judge(broken, reference=reference)
    assert misses and any("float32 reference" in m for m in misses), misses
    # and against the host's baseline of the same deploy: the strict bound
    assert numerics.judge(broken, baseline={"fingerprint": fp, "perplexity": f32}, fp=fp)

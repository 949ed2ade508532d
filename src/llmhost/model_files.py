"""What the controller's filesystem says about the experts' models: the size of
their weights and where their reference answers are. The only file reads of a
plan; `plan.build_plan` takes their results as arguments."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from .experts import Expert
from .perf import Shape, shape_from_config
from .reference import FILE_NAME as REFERENCE_FILE

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def reference_for(e: Expert) -> tuple[str | None, str]:
    """The controller-side reference answers file of an expert, or (None, why there is none).

    An explicit `reference` wins (and must be a file); else the file
    scripts/build-model leaves beside a model_source."""
    if e.reference:
        if not os.path.isfile(e.reference):
            return None, f"{e.reference} is not a file on the controller"
        return e.reference, "expert field 'reference'"
    if e.model_source and os.path.isfile(os.path.join(e.model_source, REFERENCE_FILE)):
        return os.path.join(e.model_source, REFERENCE_FILE), "beside model_source"
    return None, ("no reference answers for this model: make them once with "
                  "`scripts/build-model --reference MODEL_DIR` and set the expert's 'reference'")


def model_bytes(folder: str) -> int | None:
    """Size of the weight files in a model folder, or None when it is not readable here."""
    if not os.path.isdir(folder):
        return None
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(WEIGHT_SUFFIXES))
    return total or None


def local_weights(raw_experts: Any) -> dict[str, int]:
    """Weights read from the model folder, or from model_source on the controller."""
    out: dict[str, int] = {}
    for raw in raw_experts if isinstance(raw_experts, list) else []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("expert_id"), str):
            continue
        for key in ("model", "model_source"):
            if isinstance(raw.get(key), str):
                b = model_bytes(raw[key])
                if b:
                    out[raw["expert_id"]] = b
                    break
    return out


def find_results_bytes(experts: Any, results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Weights per expert from Ansible find results on the host, falling back to the controller."""
    out = local_weights(experts)
    for r in results or []:
        item = r.get("item") or {}
        files = r.get("files") or []
        total = sum(int(f.get("size", 0)) for f in files)
        if isinstance(item, Mapping) and total:
            out[str(item.get("expert_id"))] = total
    return out


def checkpoint_quantization(cfg: Mapping[str, Any]) -> str | None:
    """"w8a8", "w4a16", another format's name, or None (not quantized), from config.json."""
    q = cfg.get("quantization_config")
    if not isinstance(q, Mapping):
        return None
    if q.get("quant_method") != "compressed-tensors":
        return str(q.get("quant_method") or "unknown")
    for group in (q.get("config_groups") or {}).values():
        w = (group or {}).get("weights") or {}
        a = (group or {}).get("input_activations") or {}
        if "float" in (str(w.get("type", "int")), str(a.get("type", "int"))):
            return f"compressed-tensors fp{w.get('num_bits')}"  # fp8: not the int8 kernels
        bits = (w.get("num_bits"), a.get("num_bits") if a else None)
        return {(8, 8): "w8a8", (4, None): "w4a16", (4, 8): "w4a8"}.get(
            bits, f"compressed-tensors w{bits[0]}a{bits[1] or 16}")
    return "compressed-tensors"


def local_shapes(raw_experts: Any) -> dict[str, tuple[Shape | None, str | None]]:
    """expert_id -> (its model's shape, its checkpoint's quantization) from a config.json
    the controller can read (model, else model_source); absent when none is readable."""
    out: dict[str, tuple[Shape | None, str | None]] = {}
    for raw in raw_experts if isinstance(raw_experts, list) else []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("expert_id"), str):
            continue
        for key in ("model", "model_source"):
            path = raw.get(key)
            if not isinstance(path, str) or not os.path.isfile(os.path.join(path, "config.json")):
                continue
            try:
                with open(os.path.join(path, "config.json")) as f:
                    cfg = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict):
                out[raw["expert_id"]] = (shape_from_config(cfg), checkpoint_quantization(cfg))
                break
    return out


def float_sources(raw_experts: Any) -> dict[str, tuple[str, int | None]]:
    """expert_id -> the float model a quantized model_source was made from (its
    llmhost-quantized.json, written by scripts/quantize_model.py), when that folder is
    readable here, with its weights' size: what the plan serves on a CPU that cannot run
    the quantization well."""
    out: dict[str, tuple[str, int | None]] = {}
    for raw in raw_experts if isinstance(raw_experts, list) else []:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("model_source"), str):
            continue
        try:
            with open(os.path.join(raw["model_source"], "llmhost-quantized.json")) as f:
                src = json.load(f).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(src, str) and os.path.isfile(os.path.join(src, "config.json")):
            out[str(raw.get("expert_id"))] = (src, model_bytes(src))
    return out

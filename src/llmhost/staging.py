"""Staging overrides: run an inventory unchanged on a smaller host, changing only its scale.

A production rehearsal deploys `inventories/production` itself onto a test host
that cannot hold the real models. `llmhost_staging` may change only these keys
of each expert (by id, or `"*"` for every expert); anything else is an error, so
a rehearsal cannot quietly drift from what production runs:

    llmhost_staging:
      experts:
        "*":   {model_source: /var/cache/llmhost/models/SmolLM2-135M-Instruct, weights_gib: 0.3}
        gemma-3: {max_model_len: 8192}
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from .experts import ConfigError

# key -> (where it goes, why it is a matter of scale)
STAGING_KEYS: dict[str, tuple[str, str]] = {
    "model_source": ("expert", "the stand-in model copied to the production path"),
    "weights_gib": ("expert", "the stand-in model's size"),
    "kv_cache_gib": ("expert", "KV cache sized for the stand-in host"),
    "max_model_len": ("engine", "the stand-in model's context window"),
    "quantization": ("expert", "the stand-in's format: a test host's CPU may not serve production's (w4a8 runs on "
                               "Arm only); null: the float stand-in"),
    "compile": ("expert", "start without torch.compile on a test host (compile: eager; compile is tested by "
                          "make local and the site scenario)"),
}


def apply(raw_experts: Any, staging: Any) -> Any:
    """The experts list with the staging overrides applied; ConfigError on any other key."""
    if not staging:
        return raw_experts
    if not isinstance(staging, Mapping) or set(staging) - {"experts"} or not isinstance(staging.get("experts"), Mapping):
        raise ConfigError(["llmhost_staging: must be a mapping with only 'experts: {ID or \"*\": {key: value}}'"])
    if not isinstance(raw_experts, list):
        return raw_experts  # the schema check reports it
    ids = {e.get("expert_id") for e in raw_experts if isinstance(e, Mapping)}
    problems = []
    for eid, keys in staging["experts"].items():
        if eid != "*" and eid not in ids:
            problems.append(f"llmhost_staging expert '{eid}': no such expert")
        if not isinstance(keys, Mapping):
            problems.append(f"llmhost_staging expert '{eid}': must be a mapping of scale keys")
            continue
        for k in keys:
            if k not in STAGING_KEYS:
                problems.append(f"llmhost_staging expert '{eid}' field '{k}': not a scale key; a staging host may "
                                f"change only {', '.join(STAGING_KEYS)}")
    if problems:
        raise ConfigError(problems)
    out = copy.deepcopy(raw_experts)
    for e in out:
        if not isinstance(e, dict):
            continue
        for eid in ("*", e.get("expert_id")):
            for k, v in (staging["experts"].get(eid) or {}).items():
                if STAGING_KEYS[k][0] == "engine":
                    e["engine"] = {**(e.get("engine") or {}), k: v}
                else:
                    e[k] = v
    return out

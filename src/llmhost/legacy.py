"""Import the old server's config*.json into the experts schema, key by key.

The seed's files carry `#` and `//` comments and trailing commas; `loads_lenient`
reads them. `import_legacy` returns the inventory data and one report line per
input key, with the verdicts of translate.py.

Secrets never reach the inventory in clear: an old bearer key (`api_key` of an
expert, of `server_config`, of `performance_tuning` or at the top) becomes a
front-door key, kept apart in `frontdoor_keys` for the vault file the CLI writes
(0600, to encrypt with ansible-vault); any other secret-looking setting
(secret_names.is_secret_name, at any depth) is left out and named, never shown.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .experts import ConfigError, Expert, parse_experts
from .frontdoor import key_problem
from .secret_names import is_secret_name
from .translate import SCHEMA_KEYS, Line, classify, translate

# Old-server features that were never engine settings; the toolkit has its own
# answer for some (noted), none is passed to vLLM.
TOP_LEVEL_NOT_VLLM = {
    "rag": "the old router's RAG bridge",
    "speculative_routing": "the old router's speculative routing",
    "enable_consensus": "the old router's consensus mode",
    "consensus_model": "the old router's consensus mode",
    "chunk_size": "the old router's streaming chunk size",
    "routing_threshold": "the old router's classifier threshold",
    "use_fast_classifier": "the old router's classifier",
    "optimization_flags": "labels, not settings",
    "notes": "comments",
}
EXPERT_META = {"description"}
# The old router's sentence-transformer, served here by a pooling expert (docs/routing.md).
ROUTER = {"expert_id": "router", "runner": "pooling", "aliases": ["all-MiniLM-L6-v2"],
          "model": "/srv/models/all-MiniLM-L6-v2", "domain": "routing", "priority": 9, "weights_gib": 0.1,
          "kv_cache_gib": 1, "cores": 0, "engine": {"max_model_len": 256}}
ROUTER_MODELS = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
# The front door's keys, as frontdoor.yml of the new inventory reads them (from the vault).
VAULT_KEYS_VAR = "vault_frontdoor_api_keys"
# Names under which the old server kept the bearer key its clients send.
API_KEY_NAMES = ("api_key", "api_keys", "apikey", "apikeys")
# Where a left-out secret goes instead, when it is still needed.
SECRET_HINTS = {
    "hf_token": "weights are never fetched from a hub at run time; if a tokenizer still needs a token, "
                "give it as env HF_TOKEN of the expert (its env file is 0640, docs/experts.md)",
}
SECRET_HINT = "if it is still needed, keep it in an ansible-vault file and pass it as an expert's env"


def strip_comments(text: str) -> str:
    """Remove # and // comments outside JSON strings, then trailing commas."""
    out: list[str] = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
            continue
        if c == '"':
            in_str = True
            out.append(c)
            i += 1
            continue
        if c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        out.append(c)
        i += 1
    cleaned = "".join(out)
    return re.sub(r",(\s*[\]}])", r"\1", cleaned)


def loads_lenient(text: str) -> Any:
    return json.loads(strip_comments(text))


@dataclass
class Imported:
    experts: list[dict[str, Any]] = field(default_factory=list)
    lazy_loading: dict[str, Any] = field(default_factory=dict)
    routing: dict[str, Any] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Bearer keys of the old server: the front door's keys, for the vault file only.
    frontdoor_keys: list[str] = field(default_factory=list)
    # Secret-looking settings left out ("expert.key"), never written anywhere.
    secrets_left_out: list[str] = field(default_factory=list)

    def inventory(self) -> dict[str, Any]:
        return {"llmhost_lazy_loading": self.lazy_loading, **({"llmhost_routing": self.routing} if self.routing else {}),
                "llmhost_experts": self.experts}


def _expert_id(raw: Any) -> str:
    """The old id in lower case, spaces as '-'. Nothing else is rewritten: an id the
    schema refuses (such as '../etc' or 'x;rm') is refused, naming the old one."""
    if not isinstance(raw, str):
        return repr(raw)
    return raw.strip().lower().replace(" ", "-")


def _estimate_weights(data: Mapping[str, Any], eid: str) -> float | None:
    """notes.memory_estimation keys are loose prefixes of the expert ids ("phi4_no_quant")."""
    notes = data.get("notes")
    est = notes.get("memory_estimation") if isinstance(notes, Mapping) else None
    if not isinstance(est, Mapping):
        return None
    stem = eid.split("_")[0].split("-")[0]
    if not stem:
        return None
    for k, v in est.items():
        if k.lower().startswith(stem[:4]):
            m = re.search(r"([\d.]+)\s*GB", str(v))
            if m:
                return float(m.group(1))
    return None


def holds_secret(key: Any, value: Any) -> bool:
    """A setting whose name, or the name of anything nested in its value, looks secret."""
    return bool(_secret_names(str(key), value))


def _secret_names(key: str, value: Any) -> list[str]:
    """The secret-looking names in a setting (never its values)."""
    out = [key] if is_secret_name(key) else []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += [f"{key}.{n}" for n in _secret_names(str(k), v)]
    elif isinstance(value, list):
        for v in value:
            out += [f"{key}.{n.split('.', 1)[-1]}" for n in _secret_names("", v) if n]
    return out


def _take_secret(res: Imported, where: str, key: str, value: Any) -> None:
    """A secret setting of an expert (`where` its id) or a section ('' for the top level):
    an old bearer key becomes a front-door key (vault file only); anything else is left
    out. The value is never put in a report line."""
    label = f"{where}.{key}" if where else key
    who = (f"field '{label}'" if where in ("", "server_config", "performance_tuning")
           else f"expert '{where}' field '{key}'")
    if key.lower().replace("-", "_") in API_KEY_NAMES:
        if value in (None, "", []):
            res.report.append(f"{label}: dropped: empty (the old server had no key here)")
            return
        keys = [value] if isinstance(value, str) else value
        why = "is not a string or a list of strings" if not isinstance(keys, list) or not keys else next(
            (w for w in map(key_problem, keys) if w), None)
        if why:
            res.rejected.append(f"{who}: an old bearer key must be one the front door accepts; this one {why} (the "
                                "value is not shown)")
            return
        res.frontdoor_keys += [k for k in keys if k not in res.frontdoor_keys]
        res.report.append(f"{label}: translated (an old bearer key becomes a front-door key: written only to "
                          f"the vault file as {VAULT_KEYS_VAR}, never to the inventory in clear)")
        return
    names = ", ".join(_secret_names(key, value)) or key
    res.secrets_left_out.append(label)
    hint = SECRET_HINTS.get(key.lower().replace("-", "_"), SECRET_HINT)
    res.report.append(f"{label}: dropped: holds a secret ({names}); not written anywhere, the value is not "
                      f"shown; {hint}")


def _shape_problems(data: Any) -> list[str]:
    """What makes a parsed file unusable as a legacy config at all."""
    if not isinstance(data, Mapping):
        return [f"the file must hold a JSON object with an 'experts' list, got {_kind(data)}"]
    out = []
    for key, kind in (("experts", list), ("performance_tuning", Mapping), ("lazy_loading", Mapping),
                      ("server_config", Mapping)):
        v = data.get(key)
        if v is not None and not isinstance(v, kind):
            want = "a list" if kind is list else "an object"
            out.append(f"field '{key}': must be {want}, got {_kind(v)}")
    if not data.get("experts"):
        out.append("field 'experts': missing or empty; nothing to import")
    return out


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def import_legacy(data: Any, caps: Mapping[str, Any], arch: str = "aarch64") -> Imported:
    """The inventory data and a verdict per key. Raises ConfigError (one line per
    problem) when the file is not a legacy config at all; anything the plan would
    refuse lands in `rejected`, naming the expert and the field."""
    shape = _shape_problems(data)
    if shape:
        raise ConfigError(shape)
    res = Imported()
    caps = {**caps, "cpu": {**caps.get("cpu", {}), "arch": arch}}
    if arch == "aarch64" and "isa" not in caps["cpu"]:
        caps["cpu"]["isa"] = {"bf16": True, "fp16": True, "neon": True}
    perf = dict(data.get("performance_tuning") or {})
    for k in [k for k in perf if holds_secret(k, perf[k])]:
        _take_secret(res, "performance_tuning", str(k), perf.pop(k))
    for key, val in data.items():
        if key in ("experts", "performance_tuning", "lazy_loading"):
            continue
        if is_secret_name(key):
            _take_secret(res, "", str(key), val)
        elif key == "embedding_model":
            name = str((val or {}).get("model_name", "")) if isinstance(val, Mapping) else str(val or "")
            if name.lower() in ROUTER_MODELS:
                res.routing = {"embedder": ROUTER["expert_id"], "timeout_ms": 50}
                res.report.append(f"{key}: translated ({name} becomes the pooling expert 'router' and "
                                  "llmhost_routing: the front door routes model auto by meaning; its other keys "
                                  "(cache_size, use_neon) are not settings of it)")
            else:
                res.report.append(f"{key}: dropped: {name or 'no model_name'} is not all-MiniLM-L6-v2, the "
                                  "embedding model the toolkit ships (docs/routing.md)")
        elif key in TOP_LEVEL_NOT_VLLM:
            res.report.append(f"{key}: dropped: not a vLLM setting ({TOP_LEVEL_NOT_VLLM[key]})")
        elif key == "server_config":
            res.report.append(f"{key}: translated (the front door listens on {(val or {}).get('port', 8082)!r}; "
                              "experts bind 127.0.0.1 only)")
            for k, v in (val or {}).items():
                if holds_secret(k, v):
                    _take_secret(res, key, str(k), v)
        else:
            res.report.append(f"{key}: dropped: not a vLLM setting (unknown section)")
    for k, v in perf.items():
        line = classify(k, v, caps)
        if line:
            res.report.append(f"performance_tuning.{line}")
        else:
            res.report.append(f"performance_tuning.{k}: translated (the default for every expert "
                              f"that does not set {k} itself)")
    lazy = data.get("lazy_loading") or {}
    known_lazy = ("enabled", "warmup_pool_size", "max_loaded_experts", "memory_threshold", "auto_unload_after_s")
    res.lazy_loading = {k: lazy[k] for k in known_lazy if k in lazy}
    for k in lazy:
        verdict = "translated (becomes llmhost_lazy_loading." + k + ")" if k in known_lazy else \
            "dropped: not a vLLM setting"
        res.report.append(f"lazy_loading.{k}: {verdict}")
    if res.lazy_loading.get("enabled") and not res.lazy_loading.get("auto_unload_after_s"):
        res.lazy_loading["auto_unload_after_s"] = 600
    for index, raw in enumerate(data.get("experts") or []):
        if not isinstance(raw, Mapping):
            res.rejected.append(f"expert #{index + 1}: must be an object, got {_kind(raw)}")
            continue
        if "expert_id" not in raw:
            res.rejected.append(f"expert #{index + 1} field 'expert_id': required")
            continue
        eid = _expert_id(raw["expert_id"])
        if eid != raw["expert_id"]:
            res.report.append(f"{eid}.expert_id: translated ({raw['expert_id']!r} becomes {eid!r})")
        engine_in = {k: v for k, v in raw.items() if k not in SCHEMA_KEYS and k not in EXPERT_META
                     and k != "use_cases"}
        for k in [k for k in engine_in if holds_secret(k, engine_in[k])]:
            _take_secret(res, eid, str(k), engine_in.pop(k))
        for k, v in perf.items():
            engine_in.setdefault(k, v)
        legacy_dtype = engine_in.pop("dtype", None)
        if legacy_dtype is not None:
            origin = "" if "dtype" in raw else "performance_tuning."
            res.report.append(f"{eid}.{origin}dtype: translated ({legacy_dtype!r} becomes dtype: auto, which "
                              "the plan resolves from the host's CPU flags: bfloat16 where native, else float32)")
        # Translation only needs the id and model name; the schema checks the real values below.
        expert = Expert(expert_id=eid, model=str(raw.get("model_path", "")), domain="general", priority=1,
                        profile="legacy")
        t = translate(expert, caps, port=0, legacy_keys=engine_in)
        for k in raw:
            if k == "use_cases":
                res.report.append(f"{eid}.use_cases: translated (becomes route_examples, the prompts model "
                                  "auto is routed by)")
            elif k in SCHEMA_KEYS:
                res.report.append(f"{eid}.{k}: translated (becomes '{SCHEMA_KEYS[k]}')")
            elif k in EXPERT_META:
                res.report.append(f"{eid}.{k}: dropped: not a vLLM setting (documentation)")
        applied: dict[str, Any] = {}
        for line in t.report:
            origin = "" if line.key in raw else "performance_tuning."
            res.report.append(f"{eid}.{origin}{line}")
            if line.verdict == "applied" and line.key in engine_in and engine_in[line.key] is not None:
                applied[line.key] = engine_in[line.key]
            if line.verdict == "rejected":
                res.rejected.append(f"expert '{eid}' field '{line.key}': {line}")
        res.warnings += t.warnings
        entry: dict[str, Any] = {
            "expert_id": eid, "model": raw.get("model_path"), "domain": raw.get("domain", "general"),
            "priority": raw.get("priority", 1), "profile": "legacy", "engine": applied,
        }
        cases = raw.get("use_cases")
        if isinstance(cases, list) and cases:
            entry["route_examples"] = [str(c) for c in cases]
        w = _estimate_weights(data, eid)
        if w is not None:
            entry["weights_gib"] = w
            res.warnings.append(f"expert '{eid}' field 'weights_gib': {w} taken from the legacy notes; "
                                "the plan reads the real size from the model files when it can")
        res.experts.append(entry)
    if res.routing:
        res.experts.append(dict(ROUTER))
        res.warnings.append("expert 'router' field 'model_source': set it to the folder `scripts/build-model "
                            "--embedder` prints, or place all-MiniLM-L6-v2 at /srv/models/all-MiniLM-L6-v2")
    n = len(res.experts)
    for k in ("warmup_pool_size", "max_loaded_experts"):
        v = res.lazy_loading.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and n and v > n:
            res.lazy_loading[k] = n
            res.report.append(f"lazy_loading.{k}: translated ({v} capped to {n}, the number of experts)")
    # The output must be what `llmhost plan` accepts: the same schema checks it.
    try:
        parse_experts(res.experts, res.lazy_loading or None)
        if res.routing:
            from .routing import parse_routing  # noqa: PLC0415

            parse_routing(res.routing)
    except ConfigError as ce:
        res.rejected += [p.replace("field 'model'", "field 'model_path'") for p in ce.problems]
    return res


__all__ = ["Line", "Imported", "VAULT_KEYS_VAR", "holds_secret", "import_legacy", "loads_lenient", "strip_comments"]

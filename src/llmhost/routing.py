"""Routing by meaning: which expert answers `model: auto` (or no model).

The old server embedded each prompt with all-MiniLM-L6-v2 and picked the closest
domain. Here the same model runs as a pooling expert (vLLM --runner pooling), the
deploy embeds each expert's `route_examples` through it once and writes their
centroids to a file, and the front door's Lua (roles/frontdoor/files/llmhost-route.lua)
embeds the last user message and takes the nearest centroid, falling back to the
default expert when the embedder is slow or down.

Pure functions: parsing `llmhost_routing`, checking it against the experts, the
plan's routing section, and the centroids the Lua reads. The Lua picks the nearest
centroid itself (tests/unit/test_routing.py drives it inside a real HAProxy; the site
scenario measures its accuracy through the real front door); `nearest` here is the
same rule, for tests and offline checks of route_examples.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .experts import ConfigError, Expert
from .frontdoor import backend

DEFAULT_TIMEOUT_MS = 50
TIMEOUT_RANGE_MS = (5, 5000)
# Bytes of text sent to the embedder, each route example at deploy and the last user
# message by the front door's Lua alike, cut on a UTF-8 character boundary: the embedder
# reads only its first max_model_len tokens anyway (vLLM truncates to them, TRUNCATE
# below), the rest would only cost time.
MAX_TEXT_BYTES = 2000
# vLLM's embeddings API (0.32): truncate_prompt_tokens -1 is the model's max_model_len;
# "right" keeps the first tokens. Without it a text over the limit is an error (a long
# or CJK prompt: a fallback on every such request, a failed centroid build at deploy).
TRUNCATE = {"truncate_prompt_tokens": -1, "truncation_side": "right"}
# WordPiece and BPE tokenizers give at most one token per character, plus the two
# special tokens: a bound the plan can check without the tokenizer.
SPECIAL_TOKENS = 2
CENTROIDS_FILE = "/etc/haproxy/llmhost-centroids.json"
ROUTE_CONFIG_FILE = "/etc/haproxy/llmhost-route.json"
# Where the front door's metrics listener serves the routing counters (Prometheus text).
METRICS_PATH = "/llmhost/route-metrics"
FIELDS = {"embedder": "the expert_id of a pooling expert", "timeout_ms": "whole milliseconds"}


@dataclass(frozen=True)
class Routing:
    embedder: str
    timeout_ms: int = DEFAULT_TIMEOUT_MS


def parse_routing(raw: Any) -> Routing | None:
    """`llmhost_routing` ({embedder, timeout_ms}); None (or no embedder): auto is the default expert."""
    if raw in (None, "", {}):
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError([f"llmhost_routing: a mapping ({', '.join(FIELDS)}), got {raw!r}"])
    problems = [f"llmhost_routing field '{k}': unknown key (known: {', '.join(FIELDS)})" for k in raw
                if k not in FIELDS]
    embedder = raw.get("embedder")
    if embedder in (None, ""):
        if problems:
            raise ConfigError(problems)
        return None
    if not isinstance(embedder, str):
        problems.append(f"llmhost_routing field 'embedder': {FIELDS['embedder']}, got {embedder!r}")
    t = raw.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    lo, hi = TIMEOUT_RANGE_MS
    if isinstance(t, bool) or not isinstance(t, int) or not lo <= t <= hi:
        problems.append(f"llmhost_routing field 'timeout_ms': whole milliseconds in {lo}..{hi}, got {t!r}")
    if problems:
        raise ConfigError(problems)
    return Routing(embedder=str(embedder), timeout_ms=int(t))


def problems(routing: Routing | None, experts: Sequence[Expert], default_expert: str,
             preloaded: set[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a routing setting against the experts."""
    out: list[str] = []
    warn: list[str] = []
    by_id = {e.expert_id: e for e in experts}
    targets = [e for e in experts if e.route_examples]
    if routing is None:
        if targets:
            warn.append(f"route_examples of {', '.join(e.expert_id for e in targets)} unused: no "
                        "llmhost_routing.embedder, so 'auto' always goes to the default expert")
        return out, warn
    emb = by_id.get(routing.embedder)
    if emb is None:
        return [f"llmhost_routing field 'embedder': {routing.embedder!r} is not an expert "
                f"({', '.join(by_id)})"], warn
    if not emb.pooling:
        out.append(f"expert '{emb.expert_id}' field 'runner': the routing embedder must be a pooling expert "
                   "(runner: pooling, an embedding model such as all-MiniLM-L6-v2)")
    elif emb.expert_id not in preloaded:
        out.append(f"expert '{emb.expert_id}' field 'priority': the routing embedder must be preloaded (every "
                   "'auto' request asks it); raise its priority into lazy_loading.warmup_pool_size")
    if not targets:
        out.append("llmhost_routing field 'embedder': no expert has route_examples, so there is nothing to "
                   "route between; give each generate expert a few example prompts")
    elif default_expert not in {e.expert_id for e in targets}:
        warn.append(f"the default expert '{default_expert}' has no route_examples: 'auto' reaches it only "
                    "on a fallback")
    if emb.pooling:
        warn += long_examples(targets, emb)
    return out, warn


def cut_text(text: str) -> str:
    """The text the embedder is sent: its first MAX_TEXT_BYTES bytes, never half a character
    (the Lua cuts requests the same way)."""
    return text.encode()[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


def long_examples(targets: Sequence[Expert], embedder: Expert) -> list[str]:
    """A warning per route example that may be longer than the embedder reads: it is
    embedded from its first tokens only (vLLM truncates; the deploy does not fail)."""
    limit = embedder.effective_engine().get("max_model_len")
    out = []
    for e in targets:
        for i, x in enumerate(e.route_examples):
            n = len(cut_text(x))
            if isinstance(limit, int) and n + SPECIAL_TOKENS > limit:
                out.append(f"expert '{e.expert_id}' field 'route_examples[{i}]': {len(x)} characters may exceed "
                           f"the embedder '{embedder.expert_id}''s limit of {limit} tokens (max_model_len; up to one "
                           "token per character); only its first tokens are embedded")
            elif n < len(x):
                out.append(f"expert '{e.expert_id}' field 'route_examples[{i}]': {len(x.encode())} bytes; only the "
                           f"first {MAX_TEXT_BYTES} are embedded")
    return out


def inputs_sha256(embedder_model: str, embedder_weights_bytes: int | None,
                  domains: Sequence[Mapping[str, Any]]) -> str:
    """What the centroids depend on: the embedding model and every example. The deploy
    recomputes them only when this changes."""
    doc = {"model": embedder_model, "weights_bytes": embedder_weights_bytes,
           "domains": [[d["expert_id"], list(d["examples"])] for d in domains]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def section(routing: Routing | None, experts: Sequence[Mapping[str, Any]], default_expert: str,
            weights_bytes: int | None = None) -> dict[str, Any] | None:
    """The plan's "routing" section (None when auto is the default expert)."""
    if routing is None:
        return None
    emb = next(e for e in experts if e["expert_id"] == routing.embedder)
    domains = [{"expert_id": e["expert_id"], "domain": e["domain"], "examples": list(e["route_examples"])}
               for e in experts if e.get("route_examples")]
    return {
        "embedder": emb["expert_id"], "embedder_port": emb["port"], "embedder_model": emb["names"][0],
        "timeout_ms": routing.timeout_ms, "default_expert": default_expert, "domains": domains,
        "max_text_bytes": MAX_TEXT_BYTES, "centroids_file": CENTROIDS_FILE, "config_file": ROUTE_CONFIG_FILE,
        "metrics_path": METRICS_PATH,
        "inputs_sha256": inputs_sha256(emb["model"], weights_bytes, domains),
    }


def normalize(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    if n == 0:
        raise ValueError("a zero vector has no direction")
    return [x / n for x in v]


def centroids(vectors: Sequence[Sequence[float]], owners: Sequence[str]) -> dict[str, list[float]]:
    """Unit-length mean of each owner's unit-length vectors."""
    if len(vectors) != len(owners):
        raise ValueError(f"{len(vectors)} vectors for {len(owners)} examples")
    sums: dict[str, list[float]] = {}
    for v, o in zip(vectors, owners):
        u = normalize(v)
        s = sums.setdefault(o, [0.0] * len(u))
        if len(s) != len(u):
            raise ValueError("vectors of different lengths")
        for i, x in enumerate(u):
            s[i] += x
    return {o: normalize(s) for o, s in sums.items()}


def nearest(vector: Sequence[float], cents: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """(expert_id, cosine) of the closest centroid; ties go to the first listed."""
    u = normalize(vector)
    best, score = "", -2.0
    for o, c in cents.items():
        s = sum(a * b for a, b in zip(u, c))
        if s > score:
            best, score = o, s
    return best, score


def embed_request(section_: Mapping[str, Any]) -> dict[str, Any]:
    """The one /v1/embeddings body that embeds every example at deploy."""
    return {"model": section_["embedder_model"],
            "input": [cut_text(x) for d in section_["domains"] for x in d["examples"]], **TRUNCATE}


def centroids_file(section_: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """The file the front door's Lua reads, from the embedder's answer to `embed_request`."""
    owners = [d["expert_id"] for d in section_["domains"] for _ in d["examples"]]
    data = sorted(response.get("data") or [], key=lambda d: d.get("index", 0))
    if len(data) != len(owners):
        raise ValueError(f"the embedder returned {len(data)} vectors for {len(owners)} route examples")
    cents = centroids([d["embedding"] for d in data], owners)
    return {"inputs_sha256": section_["inputs_sha256"], "embedder_model": section_["embedder_model"],
            "centroids": [{"expert_id": o, "vector": [round(x, 7) for x in c]} for o, c in cents.items()]}


def lua_config(section_: Mapping[str, Any], embedder_dst: str | None = None) -> dict[str, Any]:
    """What the front door's Lua reads at start (llmhost-route.json). embedder_dst: where
    the Lua sends its call (HAProxy's address syntax, unix@PATH): the front door's own
    proxy to the embedder, whose timeouts bound the call, connect included."""
    return {"embedder_url": f"http://127.0.0.1:{section_['embedder_port']}/v1/embeddings",
            "embedder_dst": embedder_dst, "embedder_backend": backend(section_["embedder"]),
            "embedder_model": section_["embedder_model"], "timeout_ms": section_["timeout_ms"],
            "max_text_bytes": section_["max_text_bytes"], **TRUNCATE, "centroids_file": section_["centroids_file"]}

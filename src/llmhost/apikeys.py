"""The front door's named API keys: who may call which expert, how often, how many at once.

`llmhost_api_keys` (in the vault) is a list. An entry is either a bare key (a string: the
old form, an id `key-<n>`, every model, no limits) or a mapping:

    - id: team-a                  # shown in the access log and the metrics, never the key
      key: "{{ vault_team_a_key }}" # the key in clear, or instead:
      # sha256: <64 hex>          # only its hash, when the vault should not hold the key
      models: [general, coder]    # expert ids or their names; default: every expert
      requests_per_min: 600       # admitted requests; default: no rate limit
      max_parallel: 8             # requests in flight at once; default: no cap
      priority: high              # high, normal (default) or low: its place in an expert's queue

Pure functions: `parse_keys` checks the list (every problem names the entry, its id and the
field; a key is never echoed) and `key_files` prints the HAProxy map files the front door
reads. Only hashes reach the host.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .frontdoor import key_problem, models_list

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AUTO = "auto"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# HAProxy's set-priority-class: a lower class leaves an expert's queue first.
PRIORITIES = {"high": -1, "normal": 0, "low": 1}
FIELDS = ("id", "key", "sha256", "models", "requests_per_min", "max_parallel", "priority")
MAX_RATE = 1_000_000
MAX_PARALLEL = 100_000
VAR = "llmhost_api_keys"


@dataclass(frozen=True)
class Key:
    id: str
    sha256: str
    experts: tuple[str, ...]  # the expert ids it may call
    requests_per_min: int  # 0: no limit
    max_parallel: int  # 0: no cap
    priority: str

    @property
    def retry_after_s(self) -> int:
        """What a 429 over the rate tells the client to wait. HAProxy counts a rate in fixed
        60 s periods, the last one fading out over the next: a count reached now falls only
        once this period has ended, up to 60 s from now. So 60: at most that, never too early."""
        return 60


class KeysError(ValueError):
    """The keys list cannot work; .problems lists every reason, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _names(plan: Mapping[str, Any]) -> dict[str, str]:
    """Every name a key's `models` may use (expert ids and their names) -> the expert id."""
    out: dict[str, str] = {}
    for e in plan.get("experts", []):
        for n in [e["expert_id"], *(e.get("names") or [])]:
            if n != AUTO:  # several experts carry "auto" when routing is on
                out.setdefault(str(n), e["expert_id"])
    return out


def _shape(v: Any) -> str:
    """What a value is, without the value: for fields a key may have been pasted into."""
    return f"a {type(v).__name__} of {len(v)} characters" if isinstance(v, str) else f"a {type(v).__name__}"


def _whole(v: Any, lo: int, hi: int) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi else None


def parse_keys(raw: Any, plan: Mapping[str, Any], notes: list[str] | None = None) -> list[Key]:
    """`llmhost_api_keys` -> keys, or KeysError naming each bad entry and field. Model names
    this host does not serve are not an error (a fleet shares one key list): they grant
    nothing here, and a line goes to `notes`."""
    notes = [] if notes is None else notes
    if raw in (None, ""):
        return []
    if isinstance(raw, (str, bytes)) or not isinstance(raw, list):
        raise KeysError([f"{VAR}: a list of keys (- sk-... or - {{id: ..., key: ...}}), not a single "
                         f"{type(raw).__name__}"])
    names = _names(plan)
    every = tuple(e["expert_id"] for e in plan.get("experts", []))
    problems: list[str] = []
    keys: list[Key] = []
    for i, entry in enumerate(raw, 1):
        where = f"{VAR}[{i}]"
        if not isinstance(entry, Mapping):
            why = key_problem(entry)
            if why:
                problems.append(f"{where}: the key {why}")
                continue
            entry = {"id": f"key-{i}", "key": entry}
        else:
            if isinstance(entry.get("id"), str) and ID_RE.fullmatch(entry["id"]):
                where += f" (id {entry['id']})"
        bad = [k for k in entry if k not in FIELDS]
        if bad:
            # a name is shown only when it is close to a field's: a key pasted as one
            # (`- sk-...: x`) is never echoed
            shown = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(str(k), FIELDS, 1, 0.7))
                     else "(a name, not shown: it may be a key)" for k in bad]
            problems.append(f"{where}: unknown field(s) {', '.join(shown)} (known: {', '.join(FIELDS)})")
        kid = entry.get("id")
        if not isinstance(kid, str) or not ID_RE.fullmatch(kid):
            problems.append(f"{where} field 'id': 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                            f"digit, got {_shape(kid)} (the value is not shown: it may be a key put there)")
        if ("key" in entry) == ("sha256" in entry):
            problems.append(f"{where}: give exactly one of 'key' (the key, from the vault) and 'sha256' (its hash)")
            continue
        if "key" in entry:
            why = key_problem(entry["key"])
            if why:
                problems.append(f"{where} field 'key': {why} (the value is not shown)")
                continue
            digest = hashlib.sha256(entry["key"].encode()).hexdigest()
        else:
            digest = str(entry["sha256"]).lower()
            if not isinstance(entry["sha256"], str) or not SHA256_RE.fullmatch(digest):
                problems.append(f"{where} field 'sha256': 64 hex digits (printf %s KEY | sha256sum), got "
                                f"{_shape(entry['sha256'])} (the value is not shown: it may be the key itself)")
                continue
        models = entry.get("models")
        if models is None:
            experts = every
        elif not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
            problems.append(f"{where} field 'models': a non-empty list of expert ids or names, got {models!r:.80}")
            experts = ()
        else:
            if AUTO in models:
                problems.append(f"{where} field 'models': '{AUTO}' is routed by meaning to one of several experts; list "
                                "the experts the key may reach (a request for auto routed to another gets 403)")
            unknown = [m for m in models if m not in names and m != AUTO]
            if unknown:
                # not an error: one key list serves a fleet whose hosts serve different experts
                # (and an expert renamed on this host): granted nothing here, and said so
                notes.append(f"{where} field 'models': {', '.join(unknown)} is no expert's id or name on this host "
                             f"(experts: {', '.join(every)}): granted nothing here")
            chosen = {names[m] for m in models if m in names}
            experts = tuple(e for e in every if e in chosen)
        limits = {}
        for field, hi in (("requests_per_min", MAX_RATE), ("max_parallel", MAX_PARALLEL)):
            v = entry.get(field)
            limits[field] = 0 if v is None else _whole(v, 1, hi)
            if limits[field] is None:
                problems.append(f"{where} field '{field}': a whole number 1..{hi} (leave it out for no limit), "
                                f"got {v!r:.80}")
        prio = entry.get("priority", "normal")
        if prio not in PRIORITIES:
            problems.append(f"{where} field 'priority': one of {', '.join(PRIORITIES)}, got {prio!r:.80}")
        keys.append(Key(str(kid), digest, experts, limits["requests_per_min"] or 0, limits["max_parallel"] or 0,
                        str(prio)))
    seen_ids: set[str] = set()
    seen_hashes: dict[str, str] = {}
    for k in keys:
        if k.id in seen_ids:
            problems.append(f"{VAR}: id {k.id!r} is used twice")
        seen_ids.add(k.id)
        if k.sha256 in seen_hashes:
            problems.append(f"{VAR}: ids {seen_hashes[k.sha256]!r} and {k.id!r} have the same key")
        seen_hashes[k.sha256] = k.id
    if problems:
        raise KeysError(problems)
    return keys


def key_notes(raw: Any, plan: Mapping[str, Any]) -> list[str]:
    """What the preflight shows about the keys without failing: model names not served here."""
    notes: list[str] = []
    try:
        parse_keys(raw, plan, notes)
    except KeysError:
        return []
    return notes


def key_problems(raw: Any, plan: Mapping[str, Any]) -> list[str]:
    """parse_keys' problems as a list ([] when the keys can work): for the preflight's assert."""
    try:
        parse_keys(raw, plan)
    except KeysError as e:
        return e.problems
    return []


def key_files(raw: Any, plan: Mapping[str, Any]) -> dict[str, str]:
    """The HAProxy map files, by name:
    - llmhost-keys.map: `<sha256> <id>` (the Bearer token's hash -> the key's id);
    - llmhost-key-models.map: `<id>/<expert id> 1` for each expert a key may call;
    - llmhost-key-limits.map: `<id> <requests_per_min>:<max_parallel>:<priority class>:<retry-after s>`
      (0: no limit);
    - llmhost-key-models.json: key id -> the JSON text of its GET /v1/models (llmhost-models.lua)."""
    keys = parse_keys(raw, plan)
    every = models_list(plan)
    lists = {k.id: json.dumps({**every, "data": [m for m in every["data"] if m["id"] in k.experts]})
             for k in keys}
    return {
        "llmhost-key-models.json": json.dumps(lists, indent=1) + "\n",
        "llmhost-keys.map": "".join(f"{k.sha256} {k.id}\n" for k in keys),
        "llmhost-key-models.map": "".join(f"{k.id}/{e} 1\n" for k in keys for e in k.experts),
        "llmhost-key-limits.map": "".join(
            f"{k.id} {k.requests_per_min}:{k.max_parallel}:{PRIORITIES[k.priority]}:{k.retry_after_s}\n"
            for k in keys),
    }


def smoke_key(raw: Any, plan: Mapping[str, Any], concurrency: int = 1) -> str:
    """The key the smoke test sends: the first given in clear that may call every expert,
    with no rate limit and room for the smoke test's parallel streams ("" when there is
    none: set smoke_test_api_key; the smoke test's preflight says so)."""
    every = {e["expert_id"] for e in plan.get("experts", [])}
    try:
        keys = parse_keys(raw, plan)
    except KeysError:
        return ""
    clear = [e if isinstance(e, str) else e.get("key") for e in raw]
    for k, c in zip(keys, clear):
        if c and set(k.experts) >= every and not k.requests_per_min and (
                not k.max_parallel or k.max_parallel >= concurrency):
            return str(c)
    return ""

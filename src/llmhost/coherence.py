"""Numerics checks of an expert's answers: coherence probes (no reference needed) and
reference probes (greedy answers against a float32 reference file). Stdlib only: the
probe timer runs them on the host."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from . import reference as ref_mod
from .stream import stream_chat


@dataclass
class Probe:
    name: str
    prompt: str
    check: Callable[[str], bool]
    max_tokens: int = 48


def _has_parsable_python(text: str) -> bool:
    m = re.search(r"```(?:python)?\s*\n(.*?)```", text, re.S)
    code = m.group(1) if m else text
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.FunctionDef) for n in ast.walk(tree))


PROBES: list[Probe] = [
    Probe("capital", "What is the capital of France? Answer in one word.", lambda a: "paris" in a.lower()),
    Probe("sum", "What is 2 + 3? Answer with the number only.", lambda a: re.search(r"\b5\b|five", a.lower()) is not None),
    Probe("code", "Write a Python function named add that returns the sum of a and b. Reply with only the code.",
          _has_parsable_python, max_tokens=96),
]


def garbage(text: str) -> str | None:
    """Why an answer looks broken, or None: empty, replacement characters, loops."""
    if not text.strip():
        return "empty output"
    if "\ufffd" in text:
        return "replacement characters (broken decoding)"
    words = text.split()
    for n in (1, 2, 3, 4):
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if len(grams) >= 8:
            top = max(grams.count(g) for g in set(grams))
            if top * n >= 0.6 * len(words) and top >= 4:
                return f"a {n}-word sequence repeats {top} times"
    if len(text) >= 40 and len(set(text)) <= 3:
        return "the same few characters over and over"
    return None


def reference_file(expert: Mapping[str, Any]) -> tuple[str | None, str]:
    """The reference file this process can read for an expert, or (None, why not)."""
    import os  # noqa: PLC0415

    paths = [p for p in (expert.get("reference"), expert.get("reference_on_host")) if p]
    if not paths:
        return None, expert.get("reference_why") or "no reference file for this model (see docs/smoke.md)"
    for p in paths:
        if os.path.isfile(p):
            return p, ""
    return None, f"reference file not found here: {', '.join(paths)}"


def coherence_probes(base_url: str, model: str, api_key: str | None,
                     progress: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, Any]]:
    """The easy probes: shape and plausibility of three short answers."""
    out = {}
    for p in PROBES:
        progress(f"{model}: probe {p.name}")
        s = stream_chat(base_url, model, [{"role": "user", "content": p.prompt}], p.max_tokens, api_key)
        why = s.error or garbage(s.text) or (None if p.check(s.text) else "wrong answer")
        out[p.name] = {"ok": why is None, "answer": s.text, "why": why}
    return out


def reference_probes(base_url: str, model: str, path: str | None, why_none: str, api_key: str | None,
                     progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Greedy answers compared with the reference file's first words."""
    if path is None:
        return {"status": "skipped", "why": why_none}
    try:
        data = ref_mod.load(path)
    except ref_mod.ReferenceError as e:
        return {"status": "failed", "why": str(e), "file": path, "results": []}
    results = []
    for item in data["prompts"]:
        progress(f"{model}: reference {item['name']}")
        s = stream_chat(base_url, model, item["messages"], int(data.get("max_tokens", ref_mod.MAX_TOKENS)), api_key)
        if s.error:
            v = ref_mod.Verdict(item["name"], False, item["answer"], "", f"request failed: {s.error}")
        else:
            v = ref_mod.compare(item["name"], item["answer"], s.text,
                                int(data.get("compare_words", ref_mod.COMPARE_WORDS)), item.get("decisive_words"))
        results.append(asdict(v))
    failed = [r for r in results if not r["ok"]]
    compared = [r for r in results if r["compared_words"]]
    status = "failed" if failed else ("passed" if compared else "skipped")
    why = (f"{len(failed)} of {len(results)} answers differ from the reference" if failed else
           None if compared else "no prompt of the reference file has a decisive start to compare")
    return {"status": status, "file": path, "model": data.get("model"),
            "made_with": data.get("made_with"), "results": results, "why": why,
            "perplexity": data.get("perplexity") if isinstance(data.get("perplexity"), dict) else None}


def reference_misses(expert_id: str, rep: Mapping[str, Any]) -> list[str]:
    """One line per divergent answer, quoting both texts."""
    if rep["status"] != "failed":
        return []
    if not rep.get("results"):
        return [f"{expert_id}: reference probe failed: {rep['why']}"]
    return [f"{expert_id}: reference probe '{r['name']}' {r['why']}: expected {r['expected'][:80]!r}, "
            f"got {r['answer'][:80]!r}" for r in rep["results"] if not r["ok"]]

"""Reference answers: what a model says at temperature 0 when nothing is wrong.

Easy probes ("capital of France? one word") pass even when a model is garbled
in subtler ways: on an AVX2-only CPU, SmolLM2 in emulated bf16 still answered
those, yet answered "What is the capital of France?" with "L'Étoile, la
Marseillaise, la femme, ...". So the toolkit records, once per model, the greedy
answers of a fixed prompt set made with transformers in float32 (the reference
implementation, at full precision), and the smoke test and the host's probe
timer compare what the served expert says with them.

The file (`llmhost-reference.json`, beside the model or shipped in the
inventory) is made by `scripts/build-model` for the small model, or by
`scripts/build-model --reference MODEL_DIR` for any model a machine can run.

Stdlib only: scripts/build_model.py (in the model-build venv) and the host's
probe timer import this file without the rest of llmhost.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

FORMAT = 1
FILE_NAME = "llmhost-reference.json"
# Greedy answers are compared on their first words: far enough to catch a model
# that goes wrong from the start, short enough that a late near-tie between two
# tokens (float32 vs bf16 rounding) does not count as a divergence.
COMPARE_WORDS = 6
MAX_TOKENS = 24

# Plain questions with one obvious answer, phrased without "one word" hints:
# the first one is the question the garbled bf16 server got wrong.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("france", "What is the capital of France?"),
    ("planet", "Which planet is the largest in the solar system?"),
    ("water", "What is the chemical formula of water?"),
    ("week", "How many days are there in a week?"),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    expected: str
    answer: str
    why: str | None = None


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def words(text: str) -> list[str]:
    """Lower-case words without surrounding punctuation, accents kept apart."""
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for w in text.split():
        w = re.sub(r"^[\W_]+|[\W_]+$", "", w)
        if w:
            out.append(w)
    return out


def compare(name: str, expected: str, answer: str, n_words: int = COMPARE_WORDS) -> Verdict:
    """Does `answer` start with the same first words as the reference?"""
    ref = words(expected)[:n_words]
    got = words(answer)[:len(ref)]
    if not ref:
        return Verdict(name, False, expected, answer, "the reference answer is empty")
    if got == ref:
        return Verdict(name, True, expected, answer)
    at = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), len(got))
    return Verdict(name, False, expected, answer, f"diverges from the reference at word {at + 1}")


class ReferenceError(ValueError):
    pass


def load(path: str | Path) -> dict[str, Any]:
    """A reference file, checked; ReferenceError with one line otherwise."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ReferenceError(f"{p}: no such reference file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{p}: not a readable JSON reference file ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("prompts"), list):
        raise ReferenceError(f"{p}: not an llmhost reference file (format {FORMAT} expected)")
    for i, item in enumerate(data["prompts"]):
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                and isinstance(item.get("messages"), list) and isinstance(item.get("answer"), str)):
            raise ReferenceError(f"{p}: prompt #{i + 1} needs name, messages and answer")
    return data


def make(answers: Mapping[str, str], *, model: str, made_with: str,
         prompts: Sequence[tuple[str, str]] = PROMPTS) -> dict[str, Any]:
    """The file's content from the reference implementation's answers."""
    return {
        "format": FORMAT,
        "model": model,
        "made_with": made_with,
        "max_tokens": MAX_TOKENS,
        "compare_words": COMPARE_WORDS,
        "prompts": [{"name": n, "messages": messages(p), "answer": answers[n]} for n, p in prompts],
    }

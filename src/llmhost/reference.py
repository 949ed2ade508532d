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
# Greedy answers are compared on their first words, and only as far as the
# reference implementation was sure of them. A token whose top-1 log-probability
# beats the runner-up by less than MIN_MARGIN nats is a near-tie: any change of
# arithmetic (bf16 against float32, another kernel, eager against compiled) may
# flip it, and from there on both continuations are the model's. Measured with
# SmolLM2-135M: "What is the capital of France?" starts "The" at -1.86 against
# "L" at -1.96 (0.10 nats apart); vLLM in bf16 took "L" and went on "L'Étoile,
# la Marseillaise, la femme, ...", on an AVX2 CPU (bf16 emulated) and on an AMX
# CPU (bf16 native, eager mode) alike. That is the model's runner-up, not broken
# arithmetic, so such a prompt is no check. The prompts below were picked for
# long decisive starts that hold the answer itself (Tokyo, Pacific, January, 100).
COMPARE_WORDS = 10
MAX_TOKENS = 24
MIN_MARGIN = 1.0

PROMPTS: tuple[tuple[str, str], ...] = (
    ("japan", "What is the capital of Japan?"),
    ("ocean", "What is the largest ocean on Earth?"),
    ("month", "Name the first month of the year."),
    ("boiling", "What is the boiling point of water in Celsius?"),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    expected: str
    answer: str
    why: str | None = None
    compared_words: int = 0      # 0: nothing decisive to compare (the prompt is skipped)


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


def compare(name: str, expected: str, answer: str, n_words: int = COMPARE_WORDS,
            decisive_words: int | None = None) -> Verdict:
    """Does `answer` start with the reference's first words (as far as they were decisive)?"""
    n = n_words if decisive_words is None else min(n_words, decisive_words)
    ref = words(expected)[:n]
    if not ref:
        return Verdict(name, True, expected, answer, "not compared: the reference is a near-tie from its "
                       "first word", 0)
    got = words(answer)[:len(ref)]
    if got == ref:
        return Verdict(name, True, expected, answer, None, len(ref))
    at = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), len(got))
    return Verdict(name, False, expected, answer, f"diverges from the reference at word {at + 1}", len(ref))


def decisive_words(token_texts: Sequence[str], margins: Sequence[float], min_margin: float = MIN_MARGIN) -> int:
    """How many whole words of a greedy answer come before its first near-tie token.

    token_texts: each generated token as decoded text; margins: top-1 minus top-2
    log-probability at each step (the reference run's own)."""
    k = next((i for i, m in enumerate(margins) if m < min_margin), len(margins))
    prefix = "".join(token_texts[:k])
    n = len(words(prefix))
    if k < len(token_texts) and n and prefix and not prefix[-1].isspace() \
            and token_texts[k][:1].isalnum():
        n -= 1  # the near-tie token continues the last word: that word is not decided
    return n


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
         prompts: Sequence[tuple[str, str]] = PROMPTS,
         decisive: Mapping[str, int] | None = None,
         margins: Mapping[str, Sequence[float]] | None = None,
         perplexity: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The file's content from the reference implementation's answers (and, per
    prompt, how many words it was sure of and its per-token margins)."""
    out = []
    for n, p in prompts:
        item: dict[str, Any] = {"name": n, "messages": messages(p), "answer": answers[n]}
        if decisive is not None:
            item["decisive_words"] = int(decisive[n])
        if margins is not None:
            item["margins"] = [round(float(m), 2) for m in margins[n]]
        out.append(item)
    return {"format": FORMAT, "model": model, "made_with": made_with, "max_tokens": MAX_TOKENS,
            "compare_words": COMPARE_WORDS, "min_margin": MIN_MARGIN, "prompts": out,
            **({"perplexity": dict(perplexity)} if perplexity else {})}

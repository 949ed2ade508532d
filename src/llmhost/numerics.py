"""A numerics check that needs no reference run: the perplexity of fixed passages.

A served model that computes wrong (a bad kernel, a broken quantization, a damaged
weight file: the seed's "garbled output") predicts text worse. Each passage's
perplexity comes from the expert's own prompt log-probabilities (vLLM's
`prompt_logprobs` on /v1/completions, deterministic run to run), so it needs no
answers made elsewhere. Three judgements (`judge`):

- absolute: every perplexity a finite number below ABS_MAX (a broken first deploy);
- against the float32 reference, where the reference file carries one (made by
  `scripts/build-model --reference` in transformers): within the LOOSE bound;
- against the host's baseline, recorded at the first passing deploy: within the
  STRICT bound for the same model, dtype and quantization, within the LOOSE one for
  the same model in another dtype or quantization (bf16 -> w8a8 is allowed to cost a
  few per cent, not a third).

Measured on SmolLM2-135M against float32 (docs/performance.md): bf16 0.98-1.01 per
passage; W8A8 on an AVX2-only CPU 1.08-1.21; one permuted weight matrix 1.35-1.69.

Stdlib only: the probe timer runs it on the host (with stream.py).
"""

from __future__ import annotations

import json
import math
import re
import urllib.request
from typing import Any, Callable, Mapping

# Public texts, not written here: the opening of the US Declaration of Independence
# (1776, public domain), of Don Quixote (Cervantes, 1605, public domain), and
# CPython's bisect.bisect_right (Lib/bisect.py, PSF licence; docstring shortened).
PASSAGES: dict[str, str] = {
    "english": "When in the Course of human events, it becomes necessary for one people to dissolve the political "
               "bands which have connected them with another, and to assume among the powers of the earth, the "
               "separate and equal station to which the Laws of Nature and of Nature's God entitle them, a decent "
               "respect to the opinions of mankind requires that they should declare the causes which impel them "
               "to the separation.",
    "spanish": "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía un hidalgo "
               "de los de lanza en astillero, adarga antigua, rocín flaco y galgo corredor. Una olla de algo más vaca "
               "que carnero, salpicón las más noches, duelos y quebrantos los sábados, lentejas los viernes, algún "
               "palomino de añadidura los domingos, consumían las tres partes de su hacienda.",
    "code": "def bisect_right(a, x, lo=0, hi=None):\n"
            "    \"\"\"Return the index where to insert item x in list a, assuming a is sorted.\n\n"
            "    The return value i is such that all e in a[:i] have e <= x, and all e in\n"
            "    a[i:] have e > x.\n"
            "    \"\"\"\n"
            "    if lo < 0:\n"
            "        raise ValueError('lo must be non-negative')\n"
            "    if hi is None:\n"
            "        hi = len(a)\n"
            "    while lo < hi:\n"
            "        mid = (lo + hi) // 2\n"
            "        if x < a[mid]:\n"
            "            hi = mid\n"
            "        else:\n"
            "            lo = mid + 1\n"
            "    return lo\n",
}
ABS_MAX = 1000.0            # a healthy 135 M model reads Don Quixote at about 90; random weights at ~vocab size
STRICT = (0.15, 0.10)       # (any passage, geometric mean): same model, dtype and quantization
LOOSE = (0.50, 0.25)        # another dtype or quantization of the same model, or against float32


def perplexity(logprobs: list[float]) -> float:
    if not logprobs:
        return math.nan
    mean = -sum(logprobs) / len(logprobs)
    return math.inf if mean > 700 else math.exp(mean)   # vLLM clamps -inf to -9999: a broken model, not a crash


def prompt_logprobs(response: Mapping[str, Any]) -> list[float]:
    """The log-probability of each prompt token after the first, from a /v1/completions
    response with prompt_logprobs 0 (one entry per token: the token itself)."""
    entries = response["choices"][0].get("prompt_logprobs")
    if not isinstance(entries, list):
        raise ValueError("no prompt_logprobs in the answer (is this vLLM?)")
    out = []
    for entry in entries[1:]:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ValueError("prompt_logprobs entries must hold exactly the prompt token (ask with 0)")
        (value,) = entry.values()
        out.append(float(value["logprob"] if isinstance(value, Mapping) else value))
    return out


def post_json(url: str, body: Mapping[str, Any], api_key: str | None, timeout: float = 120) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the operator's own front door
        return json.load(r)


def measure(base_url: str, model: str, api_key: str | None = None,
            post: Callable[..., dict[str, Any]] = post_json) -> dict[str, float]:
    """Passage name -> perplexity, through the OpenAI-compatible completions API."""
    out = {}
    for name, text in PASSAGES.items():
        r = post(base_url.rstrip("/") + "/v1/completions",
                 {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}, api_key)
        out[name] = round(perplexity(prompt_logprobs(r)), 4)
    return out


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def compare(now: Mapping[str, float], then: Mapping[str, float], bound: tuple[float, float],
            what: str) -> list[str]:
    """Misses of `now` against `then` over the passages both have."""
    names = [n for n in now if n in then and then[n] > 0]
    if not names:
        return []
    ratios = {n: now[n] / then[n] for n in names}
    out = [f"perplexity of '{n}' {now[n]:.1f} against {what} {then[n]:.1f} (+{r - 1:.0%}, limit +{bound[0]:.0%})"
           for n, r in ratios.items() if r > 1 + bound[0]]
    g = geomean(list(ratios.values()))
    if g > 1 + bound[1]:
        out.append(f"perplexity {g - 1:+.0%} on the geometric mean against {what} (limit +{bound[1]:.0%})")
    return out


QUANT_SUFFIX = re.compile(r"[-_.](w8a8|w4a8|w4a16|int8|int4|awq|gptq|fp8|quantized)$", re.I)


def model_family(path: Any) -> str:
    """A model folder's name without a quantization suffix: phi-4-mini-w4a8 and phi-4-mini
    are the same model in two formats (the loose bound applies between them)."""
    name = str(path or "").rstrip("/").rsplit("/", 1)[-1]
    return QUANT_SUFFIX.sub("", name)


def fingerprint(expert: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two measurements comparable under the strict bound."""
    return {"model": model_family(expert.get("model")), "dtype": expert.get("dtype"),
            "quantization": expert.get("quantization")}


def judge(now: Mapping[str, float], *, baseline: Mapping[str, Any] | None = None,
          fp: Mapping[str, Any] | None = None, reference: Mapping[str, float] | None = None) -> list[str]:
    """Misses of one expert's perplexities: absolute, against a float32 reference, and
    against the host's baseline entry ({"fingerprint", "perplexity"})."""
    bad = [n for n, v in now.items() if not math.isfinite(v) or v <= 0 or v > ABS_MAX]
    if bad:
        return [f"perplexity of '{n}' is {now[n]} (a working model stays below {ABS_MAX:.0f})" for n in bad]
    out = compare(now, reference, LOOSE, "the float32 reference") if reference else []
    if isinstance(baseline, Mapping) and isinstance(baseline.get("perplexity"), Mapping):
        then_fp = baseline.get("fingerprint") or {}
        if fp is None or then_fp == dict(fp):
            out += compare(now, baseline["perplexity"], STRICT, "the host's baseline")
        elif then_fp.get("model") == (fp or {}).get("model"):
            out += compare(now, baseline["perplexity"], LOOSE,
                           f"the baseline in {then_fp.get('quantization') or then_fp.get('dtype')}")
    return out

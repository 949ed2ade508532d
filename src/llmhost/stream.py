"""The streaming client of the smoke test and the benchmarks: one request, its timings.

Definitions follow `vllm bench serve`:
- TTFT: from sending the request to the first streamed chunk carrying content;
- ITL / TBT (time between tokens): the gaps between successive content chunks;
- decode tokens/s: (output tokens - 1) / (time of last chunk - time of first chunk),
  the rate after the first token (vLLM's TPOT is its inverse);
- E2E: from sending to the end of the stream.
Token counts are the server's own usage figures (stream_options.include_usage).

The arithmetic (`measure`) is pure and unit-tested on scripted event lists; the
client (`stream_chat`) is plain urllib against the front door. Stdlib only.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence


@dataclass
class Sample:
    """One streamed request."""

    ttft_s: float | None
    itls_s: list[float]
    e2e_s: float
    output_tokens: int
    prompt_tokens: int
    text: str
    error: str | None = None

    @property
    def decode_tps(self) -> float | None:
        if self.ttft_s is None or self.output_tokens < 2:
            return None
        decode_time = sum(self.itls_s)
        return (self.output_tokens - 1) / decode_time if decode_time > 0 else None


def measure(events: Iterable[tuple[float, str, Mapping[str, Any] | None]], start: float) -> Sample:
    """events: (monotonic time, content delta, usage or None) in arrival order."""
    first: float | None = None
    last: float | None = None
    itls: list[float] = []
    text: list[str] = []
    usage: Mapping[str, Any] = {}
    end = start
    for t, delta, u in events:
        end = t
        if u:
            usage = u
        if not delta:
            continue
        if first is None:
            first = t
        else:
            assert last is not None
            itls.append(t - last)
        last = t
        text.append(delta)
    out_tokens = int(usage.get("completion_tokens", 0)) if usage else 0
    if not out_tokens and text:
        out_tokens = len(itls) + 1  # no usage: one token per chunk, vLLM's default
    return Sample(
        ttft_s=None if first is None else first - start,
        itls_s=itls,
        e2e_s=end - start,
        output_tokens=out_tokens,
        prompt_tokens=int(usage.get("prompt_tokens", 0)) if usage else 0,
        text="".join(text),
    )


def _post(url: str, body: Mapping[str, Any], api_key: str | None, timeout: float):
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    return urllib.request.urlopen(req, timeout=timeout)


def sse_events(lines: Iterable[bytes], clock: Callable[[], float] = time.monotonic
               ) -> Iterator[tuple[float, str, Mapping[str, Any] | None]]:
    for raw in lines:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        t = clock()
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"].get("message", str(chunk["error"])))
        delta = ""
        for ch in chunk.get("choices") or []:
            delta += (ch.get("delta") or {}).get("content") or ch.get("text") or ""
        yield t, delta, chunk.get("usage")


def stream_chat(base_url: str, model: str, messages: list[dict[str, str]], max_tokens: int,
                api_key: str | None = None, timeout: float = 300, fixed_length: bool = False) -> Sample:
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens,
                            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if fixed_length:
        body["min_tokens"] = max_tokens  # vLLM extension: fixed output length
        body["ignore_eos"] = True
    start = time.monotonic()
    try:
        with _post(base_url.rstrip("/") + "/v1/chat/completions", body, api_key, timeout) as r:
            return measure(sse_events(r), start)
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300]
        return Sample(None, [], time.monotonic() - start, 0, 0, "", f"HTTP {e.code}: {detail}")
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
        return Sample(None, [], time.monotonic() - start, 0, 0, "", f"{type(e).__name__}: {e}")


def stream_pool(base_url: str, jobs: Sequence[tuple[str, list[dict[str, str]]]], max_tokens: int,
                api_key: str | None, *, workers: int,
                progress: Callable[[int], None] = lambda n: None) -> list[Sample]:
    """The one worker pool: stream every (model, messages) job, `workers` at a time,
    fixed output length; samples in the order the jobs were given."""
    done = 0
    lock = threading.Lock()

    def one(job: tuple[str, list[dict[str, str]]]) -> Sample:
        nonlocal done
        s = stream_chat(base_url, job[0], job[1], max_tokens, api_key, fixed_length=True)
        with lock:
            done += 1
            progress(done)
        return s

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, jobs))

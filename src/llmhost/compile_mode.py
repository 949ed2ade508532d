"""Whether an expert runs torch.compile'd or eager, decided per expert.

`compile: auto | eager | full` in the inventory. `full` starts vLLM with its
default torch.compile (inductor) pipeline; `eager` adds `--enforce-eager`.

On CPU, vLLM 0.32 compiles the model once per start with plain torch.compile
(Dynamo traced once, inductor backend; vLLM's own piecewise graph cache is not
used). Inductor keeps the compiled kernels in TORCHINDUCTOR_CACHE_DIR, which the
unit points into the expert's state folder (/var/lib/llmhost/<id>/inductor);
Dynamo's trace is redone on every start. Measured with SmolLM2-135M-Instruct,
one core, Intel Xeon (Emerald Rapids, AMX), start to ready / decode tokens/s:

- compiled, empty cache:   127-134 s (bf16 and float32)
- compiled, warm cache:     44-51 s; bf16 17.5 tok/s, float32 13.9
- eager:                    34-42 s; bf16 16.7 tok/s, float32 14.3
  (two cores, bf16: compiled 24.3, eager 27.1 tok/s)

So here compiling buys no decode speed; on an AVX2-only machine an earlier
session measured compiled decode about 1.5x faster. About 30 s of every start is
Python importing vLLM in its three processes (about 10 s each on one core),
whatever the mode.

`auto`:
- a preloaded generate expert: full, except on a CPU with AMX (`amx_bf16`), where
  compiled decode measured no faster (above, and `make bench-starts`: 14.7
  against 17.3 tok/s) and every start is 20 s slower: eager there. Elsewhere the
  cold compile is paid at deploy, restarts load the cached kernels (+10-20 s
  over eager), and where compiling pays (the AVX2 case) every token is faster.
  Not measured on Arm (Neoverse V2): full there until `make bench-starts` on
  such a host says otherwise.
- a lazy generate expert: eager. Its start is in a client's request path, and
  eager starts 10-20 s sooner than even a warm compiled start.
- a pooling expert: eager (a few ms per call; nothing to gain).
`compile: full` on a lazy expert still starts warm: the deploy's pass through
its gate fills the cache.

`engine.enforce_eager` (vLLM's own flag) still works and is the same as
`compile: eager` / `full`; set both only if they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .experts import COMPILE_MODES as MODES


@dataclass(frozen=True)
class CompileChoice:
    mode: str       # eager | full
    reason: str     # "auto: ...", "explicit", "engine.enforce_eager"

    @property
    def eager(self) -> bool:
        return self.mode == "eager"

    def __str__(self) -> str:
        return f"{self.mode} ({self.reason})"


# CPU flags (as capabilities.parse_cpuinfo names them) where compiled decode measured
# no faster than eager: an Intel Xeon with AMX (Emerald Rapids), bf16 and float32.
NO_COMPILE_GAIN_FLAGS = ("amx_bf16",)


def choose(requested: Any, *, pooling: bool, preload: bool, enforce_eager: Any = None,
           isa: Mapping[str, bool] | None = None) -> tuple[CompileChoice | None, str]:
    """(choice, "") or (None, why it cannot be chosen). `enforce_eager` is the
    expert's engine.enforce_eager, None when unset; `isa` the host's CPU features."""
    req = "auto" if requested is None else requested
    if req not in MODES:
        return None, f"must be one of {', '.join(MODES)}, got {requested!r}"
    if enforce_eager is not None and not isinstance(enforce_eager, bool):
        return None, f"expected true or false, got {enforce_eager!r}"
    if req != "auto":
        if enforce_eager is not None and enforce_eager != (req == "eager"):
            return None, (f"compile: {req} contradicts engine.enforce_eager: {str(enforce_eager).lower()}; "
                          "keep one of them")
        return CompileChoice(req, "explicit"), ""
    if enforce_eager is not None:
        return CompileChoice("eager" if enforce_eager else "full", "engine.enforce_eager"), ""
    if pooling:
        return CompileChoice("eager", "auto: pooling expert, a few ms per call"), ""
    if not preload:
        return CompileChoice("eager", "auto: lazy expert, its start is in a request's path"), ""
    flags = [f for f in NO_COMPILE_GAIN_FLAGS if (isa or {}).get(f)]
    if flags:
        return CompileChoice("eager", f"auto: {', '.join(flags)} CPU, compiled decode measured no faster, "
                                      "its start slower"), ""
    return CompileChoice("full", "auto: preloaded, the deploy compiles, restarts use the cache"), ""

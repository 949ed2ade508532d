"""Which dtype an expert runs in, decided from the host's CPU flags.

Why this is not left to vLLM's own `--dtype auto`: vLLM takes the dtype from the
model's config.json (bfloat16 for most current models), whatever the CPU can do.
On a CPU without native bf16 arithmetic (an AVX2-only x86, an Arm core without
the bf16 extension), PyTorch then emulates it. Measured on an AMD EPYC Zen 3
(AVX2 only) with SmolLM2-135M-Instruct, temperature 0:

- bf16 (emulated, "Failed to create oneDNN linear, fallback to torch linear"):
  TTFT median about 8.3 s (vllm bench serve, 256-token prompt, one core);
- float32: TTFT 0.8 s on two threads.
(Its answer to "What is the capital of France?" also changed, but that question
is a 0.10-nat near-tie that bf16 flips on native-bf16 CPUs too: see reference.py.)

So the plan always passes an explicit `--dtype`: bfloat16 where the CPU has it
natively, float32 otherwise. float16 is never chosen by `auto` (vLLM's CPU
prefill in fp16 was about 7x slower than bf16 on an AVX-512 machine without
AVX-512 FP16, and some model families are refused in fp16). An explicit dtype
that the host would emulate is an error unless the expert says
`allow_emulated_dtype: true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

# vLLM's names for the same thing -> ours
ALIASES = {"half": "float16", "float": "float32", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DTYPES = ("auto", "float32", "bfloat16", "float16")
# x86 flags (as /proc/cpuinfo spells them) that give native bf16 arithmetic.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str          # what --dtype gets: float32 | bfloat16 | float16
    reason: str         # one line for people: "auto: avx512_bf16", "explicit", ...
    emulated: bool      # the host has no native arithmetic for it
    requested: str      # what the inventory said (auto when unset)

    def __str__(self) -> str:
        return f"{self.dtype} ({self.reason})"


def normalize(value: object) -> str | None:
    """The inventory's dtype in our spelling, or None when it is not a dtype."""
    if value is None:
        return "auto"
    if not isinstance(value, str):
        return None
    v = ALIASES.get(value.strip().lower(), value.strip().lower())
    return v if v in DTYPES else None


def native_flags(dtype: str, arch: str, isa: Mapping[str, bool]) -> list[str]:
    """The CPU flags that make `dtype` native here; [] when it would be emulated.

    `isa` is the `isa` mapping of capabilities.parse_cpuinfo: booleans named after
    the features (x86 keeps `avx512_bf16`, `amx_bf16`, `avx512_fp16`; Arm `bf16`, `fp16`).
    """
    if dtype == "float32":
        return ["float32"]
    if arch == "aarch64":
        if dtype == "bfloat16":
            return ["bf16"] if isa.get("bf16") else []
        if dtype == "float16":
            return ["fp16"] if isa.get("fp16") else []
        return []
    if dtype == "bfloat16":
        named = [f for f in X86_BF16_FLAGS if isa.get(f)]
        # Older cached probes carry only the summary key.
        return named or (["bf16"] if isa.get("bf16") else [])
    if dtype == "float16":
        return ["avx512_fp16"] if isa.get("avx512_fp16") or isa.get("fp16") else []
    return []


def choose(requested: object, arch: str, isa: Mapping[str, bool], *, fp16_refused: str = "",
           allow_emulated: bool = False, cpu_name: str = "", pooling: bool = False
           ) -> tuple[DtypeChoice | None, str | None]:
    """(choice, None), or (None, why) when the request cannot work on this host.

    `fp16_refused`: the model family's name when vLLM refuses float16 for it (Gemma 3).
    `pooling`: an embedding model; auto is float32 there (cheap for a small encoder,
    and its vectors, so the routing decisions, are then the same on every CPU).
    """
    req = normalize(requested)
    where = cpu_name or arch
    if req is None:
        return None, f"{requested!r} is not a dtype (use auto, float32, bfloat16 or float16)"
    if req == "auto" and pooling:
        return DtypeChoice("float32", "auto: pooling expert, float32 keeps embeddings the same on every CPU",
                           False, req), None
    if req == "auto":
        flags = native_flags("bfloat16", arch, isa)
        if flags:
            return DtypeChoice("bfloat16", "auto: " + ", ".join(flags), False, req), None
        if not isa:
            return DtypeChoice("float32", "auto: CPU flags unknown, float32 is safe", False, req), None
        return DtypeChoice("float32", "auto: no native bf16 on this CPU", False, req), None
    if req == "float16" and fp16_refused:
        return None, (f"vLLM refuses float16 for {fp16_refused} (numerical instability); "
                      "use dtype: auto or bfloat16")
    if native_flags(req, arch, isa):
        return DtypeChoice(req, "explicit", False, req), None
    need = {"bfloat16": "avx512_bf16 or amx_bf16" if arch != "aarch64" else "bf16",
            "float16": "avx512_fp16" if arch != "aarch64" else "fp16"}[req]
    if allow_emulated:
        return DtypeChoice(req, f"explicit, EMULATED on this CPU (no {need}; allow_emulated_dtype)", True, req), None
    return None, (f"{req} is emulated on {where} (no {need}): answers can change and prefill slows "
                  f"about 10x; use dtype: auto (picks float32 here), or set allow_emulated_dtype: true "
                  f"on this expert to run it anyway")

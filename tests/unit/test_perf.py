"""The performance model (llmhost.perf) and how the plan uses it: host profiles, shapes,
predictions, levers, the quantized kernels per CPU, accept_miss, checkpoints, and the
production inventory's assumed profile. Pure functions and the CLI in process: no
network, no vLLM, no test host."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmhost import perf
from llmhost.cli import main, saved_capabilities
from llmhost.experts import ConfigError
from llmhost.model_files import checkpoint_quantization, local_shapes
from llmhost.plan import GIB, Host, build_plan, choose_profile
from llmhost.plan_text import performance_table

ROOT = Path(__file__).resolve().parents[2]
CAPS = saved_capabilities()
PROD = ROOT / "inventories/production"

# A valid profile: every parse_profile case below changes one thing of it.
PROFILE = {"read_gbps": {1: 10, 4: 40}, "matmul_gflops": {"float32": 50, "bfloat16": 100, "int8": 200},
           "source": "assumed for the test", "assumed": True, "cpu": "test-cpu"}
MEASURED = {"read_gbps": {1: 100, 4: 400}, "matmul_gflops": {"float32": 500, "bfloat16": 1000, "int8": 2000},
            "source": "measured on the test host", "assumed": False}

# SmolLM2-135M's config.json (the fields the shape reads)
SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "num_hidden_layers": 30,
           "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
           "tie_word_embeddings": True}
# Gemma 3 27B's: the text part of a multimodal config, head_dim not hidden / heads
GEMMA3 = {"architectures": ["Gemma3ForConditionalGeneration"],
          "text_config": {"hidden_size": 5376, "num_hidden_layers": 62, "intermediate_size": 21504,
                          "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                          "vocab_size": 262208},
          "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27}}


@pytest.fixture(autouse=True)
def written_for_these_costs(request, monkeypatch):
    """The synthetic cases' figures were worked out by hand for these fixed costs; the
    production cases use the calibrated ones (llmhost/perf.py)."""
    if not request.node.name.startswith("test_production"):
        monkeypatch.setattr(perf, "STEP_S", 0.015)
        monkeypatch.setattr(perf, "TTFT_S", 0.030)
        monkeypatch.setattr(perf, "SMOKE_PREFILL_TOKENS", 40)


def experts(*prios, **extra):
    """As tests/unit/test_plan.py builds them."""
    return [{"expert_id": f"e{i}", "model": f"/m/{i}", "domain": "general", "priority": p,
             "weights_gib": 1.0, "kv_cache_gib": 1, **extra} for i, p in enumerate(prios)]


def host(n=4, isa=None, arch="x86_64", model=""):
    return Host(tuple(range(n)), 64 * GIB, arch, isa if isa is not None else {"bf16": True, "int8_dot": True}, model)


def profile(**change):
    return perf.parse_profile({**PROFILE, **change})


# 1. bandwidth of n cores

def test_bandwidth_interpolates_is_flat_beyond_the_last_point_and_through_the_origin_below_the_first():
    p = perf.HostProfile(((2, 20.0), (6, 60.0), (10, 70.0)), {"float32": 1.0}, "t")
    assert p.bandwidth_gbps(1) == pytest.approx(10.0)        # 20 * 1/2: through the origin
    assert p.bandwidth_gbps(2) == pytest.approx(20.0)        # a measured point
    assert p.bandwidth_gbps(4) == pytest.approx(40.0)        # between 2 and 6
    assert p.bandwidth_gbps(8) == pytest.approx(65.0)        # between 6 and 10
    assert p.bandwidth_gbps(10) == pytest.approx(70.0)
    assert p.bandwidth_gbps(11) == p.bandwidth_gbps(64) == pytest.approx(70.0)  # memory saturates


def test_a_profile_given_out_of_order_is_sorted_and_string_core_counts_are_read():
    p = perf.parse_profile({**PROFILE, "read_gbps": {"8": 150, "1": 37}})   # as a JSON file has them
    assert p.read_gbps == ((1, 37.0), (8, 150.0))
    assert p.bandwidth_gbps(1) == pytest.approx(37.0) and p.bandwidth_gbps(8) == pytest.approx(150.0)


def test_a_profile_survives_its_own_dict():
    p = profile()
    assert perf.parse_profile(p.to_dict()) == p
    assert json.loads(json.dumps(p.to_dict()))["read_gbps"] == {"1": 10.0, "4": 40.0}


# 2. parse_profile

@pytest.mark.parametrize("raw", [None, {}, ""])
def test_no_profile_is_none(raw):
    assert perf.parse_profile(raw) is None


BAD_PROFILES = [
    ("a list", ["read_gbps", 1], "llmhost_host_profile: must be a mapping, got list"),
    ("a string", "fast", "llmhost_host_profile: must be a mapping, got str"),
    ("no read_gbps", {k: v for k, v in PROFILE.items() if k != "read_gbps"}, "field 'read_gbps'"),
    ("empty read_gbps", {**PROFILE, "read_gbps": {}}, "field 'read_gbps'"),
    ("read_gbps a number", {**PROFILE, "read_gbps": 150}, "field 'read_gbps'"),
    ("core count 0", {**PROFILE, "read_gbps": {0: 10, 4: 40}}, "field 'read_gbps.0'"),
    ("core count x", {**PROFILE, "read_gbps": {"x": 10, 4: 40}}, "field 'read_gbps.x'"),
    ("core count 5000", {**PROFILE, "read_gbps": {5000: 10}}, "field 'read_gbps.5000'"),
    ("negative GB/s", {**PROFILE, "read_gbps": {1: -10, 4: 40}}, "field 'read_gbps.1'"),
    ("zero GB/s", {**PROFILE, "read_gbps": {1: 0, 4: 40}}, "field 'read_gbps.1'"),
    ("NaN GB/s", {**PROFILE, "read_gbps": {1: 10, 4: float("nan")}}, "field 'read_gbps.4'"),
    ("inf GB/s", {**PROFILE, "read_gbps": {1: 10, 4: float("inf")}}, "field 'read_gbps.4'"),
    ("bool GB/s", {**PROFILE, "read_gbps": {1: True, 4: 40}}, "field 'read_gbps.1'"),
    ("string GB/s", {**PROFILE, "read_gbps": {1: "10", 4: 40}}, "field 'read_gbps.1'"),
    ("unknown matmul dtype", {**PROFILE, "matmul_gflops": {"float16": 100}}, "field 'matmul_gflops.float16'"),
    ("negative matmul", {**PROFILE, "matmul_gflops": {"int8": -1}}, "field 'matmul_gflops.int8'"),
    ("matmul not a mapping", {**PROFILE, "matmul_gflops": [100]}, "field 'matmul_gflops'"),
    ("no source", {k: v for k, v in PROFILE.items() if k != "source"}, "field 'source'"),
    ("blank source", {**PROFILE, "source": "  "}, "field 'source'"),
    ("assumed a string", {**PROFILE, "assumed": "yes"}, "field 'assumed'"),
    ("assumed a number", {**PROFILE, "assumed": 1}, "field 'assumed'"),
    ("unknown key", {**PROFILE, "bandwidth": 155}, "field 'bandwidth': unknown key"),
]


@pytest.mark.parametrize("case,raw,expect", BAD_PROFILES, ids=[c[0] for c in BAD_PROFILES])
def test_a_bad_profile_is_one_line_naming_the_field(case, raw, expect):
    with pytest.raises(ConfigError) as e:
        perf.parse_profile(raw)
    assert e.value.problems == [e.value.problems[0]] and "\n" not in str(e.value), e.value.problems
    assert expect in str(e.value) and str(e.value).startswith("llmhost_host_profile"), str(e.value)


def test_a_measured_profile_names_itself_and_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        perf.parse_profile({"read_gbps": {}, "matmul_gflops": {}, "source": ""}, "the host's measured profile")
    assert len(e.value.problems) == 2
    assert all(p.startswith("the host's measured profile field ") for p in e.value.problems)


def test_the_bookkeeping_keys_of_a_measured_file_are_accepted():
    p = perf.parse_profile({**PROFILE, "key": "abc123", "measured_at": "2025-01-01T00:00:00Z"})
    assert p is not None and p.cpu == "test-cpu" and p.assumed is True


# 3. shapes

def test_shape_of_smollm2_135m():
    s = perf.shape_from_config(SMOLLM2)
    # per layer: q and o 576 x 576, k and v 576 x 192, MLP 3 x 576 x 1536
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536
    assert s.linear_params == 30 * per_layer == 106_168_320
    assert s.linear_params / 1e6 == pytest.approx(106.2, abs=0.1)
    assert s.head_params == 49152 * 576 and s.head_params / 1e6 == pytest.approx(28.3, abs=0.05)
    assert s.kv_elems_per_token == 2 * 30 * 3 * 64
    assert s.source == "config.json"


def test_shape_of_a_multimodal_config_is_its_text_part():
    s = perf.shape_from_config(GEMMA3)
    h, hd = 5376, 128
    attn = h * hd * (32 + 2 * 16) + 32 * hd * h   # head_dim 128, not 5376 / 32 = 168
    assert s.linear_params == 62 * (attn + 3 * h * 21504)
    assert s.head_params == 262208 * h
    assert (s.linear_params + s.head_params) / 1e9 == pytest.approx(27.0, abs=0.1)   # a 27 B model (+ vision)
    assert s.kv_elems_per_token == 2 * 62 * 16 * 128


def test_a_text_config_without_vocab_takes_the_top_level_one():
    cfg = {"text_config": {k: v for k, v in GEMMA3["text_config"].items() if k != "vocab_size"}, "vocab_size": 1000}
    assert perf.shape_from_config(cfg).head_params == 1000 * 5376


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                                     "vocab_size"])
def test_a_config_without_a_needed_field_has_no_shape(missing):
    assert perf.shape_from_config({k: v for k, v in SMOLLM2.items() if k != missing}) is None


def test_a_config_with_a_null_or_word_field_has_no_shape():
    assert perf.shape_from_config({**SMOLLM2, "hidden_size": None}) is None
    assert perf.shape_from_config({**SMOLLM2, "num_hidden_layers": "many"}) is None
    assert perf.shape_from_config({}) is None


def test_shape_from_bytes_counts_every_byte_as_a_linear_weight():
    assert perf.shape_from_bytes(2e9, None).linear_params == pytest.approx(1e9)
    assert perf.shape_from_bytes(1e9, "w8a8").linear_params == pytest.approx(1e9)
    assert perf.shape_from_bytes(0.5625e9, "w4a8").linear_params == pytest.approx(1e9)
    assert perf.shape_from_bytes(1e9, None).head_params == 0


# 4. predict

def test_decode_is_the_step_plus_one_weight_read_by_hand():
    s = perf.shape_from_config(SMOLLM2)
    p = profile()
    pred = perf.predict(s, p, cores=1, dtype="bfloat16", quantization=None)
    # bf16: 2 bytes per weight and per KV element, 400 context tokens, 10 GB/s on one core
    b = 106_168_320 * 2 + 28_311_552 * 2 + 11_520 * 400 * 2
    assert pred.bytes_per_token == b == 278_175_744
    assert pred.decode_tps == pytest.approx(1 / (0.015 + b / 10e9))
    assert pred.decode_tps == pytest.approx(23.355, abs=0.001)
    pred = perf.predict(s, p, cores=2, dtype="bfloat16", quantization=None)   # 20 GB/s between 1 and 4
    assert pred.bandwidth_gbps == pytest.approx(20.0) and pred.decode_tps == pytest.approx(1 / (0.015 + b / 20e9))
    assert pred.profile_source == "assumed for the test" and pred.assumed is True


def test_quantization_changes_the_linear_bytes_only():
    s = perf.shape_from_config(SMOLLM2)
    p = profile()
    bf16 = perf.predict(s, p, cores=4, dtype="bfloat16", quantization=None).bytes_per_token
    w8 = perf.predict(s, p, cores=4, dtype="bfloat16", quantization="w8a8").bytes_per_token
    f32 = perf.predict(s, p, cores=4, dtype="float32", quantization=None).bytes_per_token
    rest = s.head_params * 2 + s.kv_elems_per_token * perf.SMOKE_CONTEXT_TOKENS * 2
    assert w8 - rest == pytest.approx((bf16 - rest) / 2)       # w8a8 halves the linear bytes
    assert w8 == pytest.approx(s.linear_params * 1 + rest)     # and keeps the head and KV in bf16
    assert f32 == pytest.approx(2 * bf16)                      # float32 doubles every byte
    only_linear = perf.Shape(1e9, 0.0)
    assert perf.bytes_per_token(only_linear, "bfloat16", "w8a8") == pytest.approx(
        perf.bytes_per_token(only_linear, "bfloat16", None) / 2)
    assert perf.bytes_per_token(only_linear, "bfloat16", "w4a16") == pytest.approx(0.53125e9)


def test_quantized_matmuls_run_in_int8_where_the_format_says():
    s = perf.Shape(1e9, 0.0)
    p = profile()
    assert perf.predict(s, p, cores=1, dtype="bfloat16", quantization="w8a8").matmul_gflops == 200
    assert perf.predict(s, p, cores=1, dtype="bfloat16", quantization="w4a8").matmul_gflops == 200
    assert perf.predict(s, p, cores=1, dtype="bfloat16", quantization="w4a16").matmul_gflops == 100
    assert perf.predict(s, p, cores=1, dtype="float32", quantization=None).matmul_gflops == 50


@pytest.mark.parametrize("dtype,quant", [("bfloat16", None), ("float32", None), ("bfloat16", "w8a8"),
                                         ("bfloat16", "w4a16"), ("bfloat16", "w4a8")])
def test_more_cores_never_lower_the_prediction(dtype, quant):
    prod = perf.parse_profile(yaml.safe_load((PROD / "host_vars/models-europe.yml").read_text())
                              ["llmhost_host_profile"])
    for shape in (perf.shape_from_config(SMOLLM2), perf.shape_from_config(GEMMA3)):
        preds = [perf.predict(shape, prod, cores=n, dtype=dtype, quantization=quant) for n in range(1, 65)]
        for a, b in itertools.pairwise(preds):
            assert b.decode_tps >= a.decode_tps and b.ttft_s <= a.ttft_s, (a.cores, b.cores)
        assert preds[-1].decode_tps > preds[0].decode_tps and preds[-1].ttft_s < preds[0].ttft_s


def test_ttft_is_never_below_the_fixed_cost_and_one_weight_read():
    p = perf.parse_profile({**PROFILE, "matmul_gflops": {"float32": 1e6, "bfloat16": 1e6, "int8": 1e6}})
    slow = profile()
    s = perf.shape_from_config(SMOLLM2)
    for prof in (p, slow):
        for n in (1, 2, 3, 4, 8, 32):
            for q in (None, "w8a8", "w4a16"):
                pred = perf.predict(s, prof, cores=n, dtype="bfloat16", quantization=q)
                one_read = pred.bytes_per_token / (pred.bandwidth_gbps * 1e9)
                assert pred.ttft_s >= perf.TTFT_S + one_read - 1e-12
                if prof is p:   # compute is free here: the read is the whole prefill
                    assert pred.ttft_s == pytest.approx(perf.TTFT_S + one_read)
    # compute-bound: the FLOPs over the cores
    pred = perf.predict(s, slow, cores=2, dtype="bfloat16", quantization=None)
    flops = 2 * (s.linear_params + s.head_params) * perf.SMOKE_PREFILL_TOKENS
    assert pred.ttft_s == pytest.approx(perf.TTFT_S + flops / (100e9 * 2))


def test_fits_names_each_threshold_missed():
    pred = perf.predict(perf.Shape(1e9, 0.0), profile(), cores=4, dtype="bfloat16", quantization=None)
    assert perf.fits(pred, {}) == []
    assert perf.fits(pred, {"decode_tps_min": pred.decode_tps * 0.99, "ttft_p50_s": pred.ttft_s * 1.01}) == []
    missed = perf.fits(pred, {"decode_tps_min": pred.decode_tps * 1.01, "ttft_p50_s": pred.ttft_s * 0.99})
    assert len(missed) == 2 and "decode_tps_min" in missed[0] and "ttft_p50_s" in missed[1]


# 5. levers

def lever_case():
    # 10 GB/s per core up to 8 cores; compute never binds
    prof = perf.parse_profile({**PROFILE, "read_gbps": {1: 10, 8: 80},
                               "matmul_gflops": {"float32": 1e6, "bfloat16": 1e6, "int8": 1e6}})
    return perf.Shape(1e9, 0.0), prof


def test_levers_name_the_fewest_cores_per_quantization():
    shape, prof = lever_case()
    thr = {"decode_tps_min": 20}   # a step of 50 ms: 35 ms of reading
    # bf16 2 GB: 57 GB/s -> 6 cores; w8a8 1 GB: 29 GB/s -> 3; w4a16 0.53 GB: 15 GB/s -> 2
    got = perf.levers(shape, prof, thr, dtype="bfloat16", quantizations=["w8a8", "w4a16"], max_cores=8)
    assert got == "would fit: bfloat16 on 6 cores, or w8a8 on 3 cores, or w4a16 on 2 cores"
    for q, n in ((None, 6), ("w8a8", 3), ("w4a16", 2)):   # the fewest: one core less misses
        assert not perf.fits(perf.predict(shape, prof, cores=n, dtype="bfloat16", quantization=q), thr)
        assert perf.fits(perf.predict(shape, prof, cores=n - 1, dtype="bfloat16", quantization=q), thr)


def test_levers_offer_only_the_served_formats_within_the_free_cores():
    shape, prof = lever_case()
    got = perf.levers(shape, prof, {"decode_tps_min": 20}, dtype="bfloat16", quantizations=["w8a8"], max_cores=4)
    assert got == "would fit: w8a8 on 3 cores"


def test_levers_say_when_no_setting_fits():
    shape, prof = lever_case()
    got = perf.levers(shape, prof, {"decode_tps_min": 1000}, dtype="bfloat16", quantizations=["w8a8", "w4a16"],
                      max_cores=8)
    assert got.startswith("no setting fits on this host: the best, w4a16 on all 8 free cores, predicts ")
    best = perf.predict(shape, prof, cores=8, dtype="bfloat16", quantization="w4a16")
    assert f"{best.decode_tps:.1f} tokens/s" in got and "would fit" not in got


# 6. which quantized formats the host's vLLM serves

def test_avx2_only_x86_serves_w8a8_only():
    got = perf.quant_support({}, "x86_64", {"avx2": True})
    assert got["w8a8"] == ""
    assert "_C_AVX2" in got["w4a16"] and "cpu_gemm_wna16" in got["w4a16"]
    assert "_C_AVX2" in got["w4a8"] and "_dyn_quant_matmul_4bit" in got["w4a8"]


@pytest.mark.parametrize("isa,lib", [({"avx2": True, "avx512": True, "avx512_bf16": True}, "_C"),
                                     ({"avx2": True, "avx512": True}, "_C_AVX512")])
def test_avx512_x86_serves_w4a16_too_but_not_w4a8(isa, lib):
    assert perf.kernel_library("x86_64", isa) == lib
    got = perf.quant_support({}, "x86_64", isa)
    assert got["w8a8"] == "" and got["w4a16"] == ""
    assert got["w4a8"] and lib in got["w4a8"]


def test_aarch64_serves_w8a8_and_w4a8_not_w4a16():
    got = perf.quant_support({}, "aarch64", {"bf16": True, "i8mm": True})
    assert got["w8a8"] == "" and got["w4a8"] == ""
    assert got["w4a16"] and "cpu_gemm_wna16" in got["w4a16"]


def test_the_probed_kernels_win_over_the_table():
    caps = {"cpu_rules": {"cpu_ops": ["cpu_gemm_wna16"]}}
    got = perf.quant_support(caps, "aarch64", {"bf16": True})   # the table would say w8a8 and w4a8
    assert got["w4a16"] == ""
    assert got["w8a8"].startswith("the installed vLLM's kernel library") and got["w4a8"]
    got = perf.quant_support({"cpu_rules": {"cpu_ops": []}}, "x86_64", {"avx512": True, "avx512_bf16": True})
    assert all(got.values())   # an empty probe: nothing served, whatever the table says
    # the saved capabilities carry no probe: the table decides
    assert perf.quant_support(CAPS, "x86_64", {"avx2": True})["w8a8"] == ""


# 7. build_plan

def test_a_threshold_out_of_reach_fails_naming_the_field_and_a_lever():
    ex = experts(1, thresholds={"decode_tps_min": 30})
    # 1 GiB bf16 on 4 cores at 40 GB/s: 23.9 tokens/s; w8a8 on 3 cores: 30.4
    with pytest.raises(ConfigError) as e:
        build_plan(ex, None, CAPS, host(4), host_profile=PROFILE)
    (line,) = e.value.problems
    assert line.startswith("expert 'e0' field 'thresholds': out of reach on this host by an assumed profile")
    assert "decode 23.9 tokens/s < decode_tps_min 30" in line
    assert "would fit: w8a8 on 3 cores" in line and line.endswith("or set accept_miss with the reason")


def test_the_lever_offers_only_what_the_host_serves():
    ex = experts(1, thresholds={"decode_tps_min": 30})
    with pytest.raises(ConfigError) as e:
        build_plan(ex, None, CAPS, host(4, {"avx2": True, "avx512": True, "avx512_bf16": True, "int8_dot": True}), host_profile=PROFILE)
    assert "would fit: w8a8 on 3 cores, or w4a16 on 2 cores" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_plan(ex, None, CAPS, host(4, {"avx2": True, "int8_dot": True}), host_profile=PROFILE)
    assert "would fit: w8a8 on 3 cores;" in str(e.value) and "w4a16" not in str(e.value)


def test_no_setting_fits_is_said_in_the_plan():
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1, thresholds={"decode_tps_min": 500}), None, CAPS, host(4), host_profile=PROFILE)
    assert "field 'thresholds'" in str(e.value) and "no setting fits on this host" in str(e.value)


def test_a_ttft_out_of_reach_fails_too():
    ex = experts(1, thresholds={"ttft_p50_s": 0.05})   # one read alone is 27 ms + 30 ms fixed
    with pytest.raises(ConfigError) as e:
        build_plan(ex, None, CAPS, host(4), host_profile=PROFILE)
    assert "expert 'e0' field 'thresholds'" in str(e.value) and "> ttft_p50_s 0.05" in str(e.value)


def test_accept_miss_turns_the_failure_into_a_warning():
    reason = "a large model on a small host, accepted by the owners"
    p = build_plan(experts(1, thresholds={"decode_tps_min": 30}, accept_miss=reason), None, CAPS, host(4),
                   host_profile=PROFILE)
    (w,) = [w for w in p.warnings if "field 'thresholds'" in w]
    assert w.startswith("expert 'e0' field 'thresholds': out of reach") and "would fit: w8a8 on 3 cores" in w
    assert w.endswith(f"Accepted (accept_miss): {reason}")
    assert p.to_dict()["experts"][0]["accept_miss"] == reason
    table = performance_table(p)
    assert table.splitlines()[-1].startswith("e0 ") and table.splitlines()[-1].endswith("MISS, accepted")


def test_accept_miss_is_a_reason_in_words():
    with pytest.raises(ConfigError, match="expert 'e0' field 'accept_miss'"):
        build_plan(experts(1, accept_miss="ok"), None, CAPS, host(4), host_profile=PROFILE)


def test_a_prediction_within_the_models_error_is_a_warning():
    p = build_plan(experts(1, thresholds={"decode_tps_min": 20}), None, CAPS, host(4), host_profile=PROFILE)
    (w,) = [w for w in p.warnings if w.startswith("expert 'e0'")]
    assert "predicted decode 23.9 tokens/s" in w and "within 25% of decode_tps_min" in w
    p = build_plan(experts(1, thresholds={"decode_tps_min": 15}), None, CAPS, host(4), host_profile=PROFILE)
    assert not [w for w in p.warnings if w.startswith("expert 'e0'")]
    assert performance_table(p).splitlines()[-1].endswith("fits")


def test_a_quantization_the_host_cannot_serve_fails_naming_the_field():
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1, quantization="w4a16"), None, CAPS, host(4, {"avx2": True}))
    (line,) = e.value.problems
    assert line.startswith("expert 'e0' field 'quantization': w4a16 is not served on this host (x86_64")
    assert "cpu_gemm_wna16" in line and line.endswith("served here: w8a8")
    with pytest.raises(ConfigError, match="expert 'e0' field 'quantization': w4a8 is not served"):
        build_plan(experts(1, quantization="w4a8"), None, CAPS, host(4, {"avx512": True, "avx512_bf16": True}))
    # served: passes, and predicts with the format's bytes
    p = build_plan(experts(1, quantization="w8a8"), None, CAPS, host(4, {"avx2": True, "int8_dot": True}), host_profile=PROFILE)
    assert p.experts[0].predicted.quantization == "w8a8"
    assert p.experts[0].predicted.bytes_per_token == pytest.approx(GIB)   # 1 GiB of int8 weights
    p = build_plan(experts(1, quantization="w4a8"), None, CAPS, host(4, {"bf16": True, "int8_dot": True}, "aarch64"))
    assert p.experts[0].expert.quantization == "w4a8"


def test_an_unknown_quantization_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match="expert 'e0' field 'quantization': must be one of w8a8, w4a16, w4a8"):
        build_plan(experts(1, quantization="int3"), None, CAPS, host(4))


def test_the_checkpoint_must_match_the_declared_quantization():
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1), None, CAPS, host(4), checkpoints={"e0": (None, "w8a8")})
    assert e.value.problems == ["expert 'e0' field 'quantization': the checkpoint is w8a8; declare quantization: w8a8"]
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1, quantization="w8a8"), None, CAPS, host(4, {"avx2": True, "int8_dot": True}),
                   checkpoints={"e0": (None, None)})
    assert e.value.problems == ["expert 'e0' field 'quantization': declares w8a8 but the checkpoint is not quantized"]
    # agreeing, or unknown ("?": no config.json here), passes
    build_plan(experts(1, quantization="w8a8"), None, CAPS, host(4, {"avx2": True, "int8_dot": True}),
               checkpoints={"e0": (None, "w8a8")})
    build_plan(experts(1), None, CAPS, host(4), checkpoints={"e0": (None, None)})
    build_plan(experts(1), None, CAPS, host(4), checkpoints={"e1": (None, "w8a8")})


def test_a_shape_from_the_checkpoint_is_used_for_the_prediction():
    s = perf.shape_from_config(SMOLLM2)
    p = build_plan(experts(1), None, CAPS, host(4), host_profile=PROFILE, checkpoints={"e0": (s, None)})
    assert p.experts[0].shape == s
    assert p.experts[0].predicted.bytes_per_token == pytest.approx(278_175_744)
    assert p.to_dict()["experts"][0]["shape"]["source"] == "config.json"
    p = build_plan(experts(1), None, CAPS, host(4), host_profile=PROFILE)
    assert p.experts[0].shape.source == "estimated from the weights' size"
    assert p.experts[0].predicted.bytes_per_token == pytest.approx(GIB)


def test_the_measured_profile_wins_unless_the_plan_is_folded():
    p = build_plan(experts(1), None, CAPS, host(4), host_profile=PROFILE, measured_profile=MEASURED)
    assert p.host_profile.source == "measured on the test host"
    assert p.experts[0].predicted.bandwidth_gbps == pytest.approx(400) and not p.experts[0].predicted.assumed
    assert performance_table(p).startswith("performance by a measured host profile (measured on the test host)")
    # only the measured one: it is used
    p = build_plan(experts(1), None, CAPS, host(4), measured_profile=MEASURED)
    assert p.experts[0].predicted.bandwidth_gbps == pytest.approx(400)
    # folded (2 CPUs rehearsing 4): the inventory's host, on the planned 4 cores
    p = build_plan(experts(1), None, CAPS, host(2), expect_cpus=4, host_profile=PROFILE, measured_profile=MEASURED)
    assert p.folded is not None and p.host_profile.source == "assumed for the test"
    assert p.experts[0].predicted.cores == 4 and p.experts[0].predicted.bandwidth_gbps == pytest.approx(40)
    assert choose_profile(PROFILE, MEASURED, folded=True).source == "assumed for the test"
    assert choose_profile(PROFILE, MEASURED, folded=False).source == "measured on the test host"


@pytest.mark.parametrize("damaged", [{"read_gbps": {0: 5}, "source": "x", "matmul_gflops": {}}, "garbage",
                                     ["a", "list"], {"read_gbps": {1: 10}, "matmul_gflops": {}}])
def test_a_damaged_measured_profile_is_ignored(damaged):
    p = build_plan(experts(1), None, CAPS, host(4), host_profile=PROFILE, measured_profile=damaged)
    assert p.host_profile.source == "assumed for the test"
    assert p.experts[0].predicted.bandwidth_gbps == pytest.approx(40)
    p = build_plan(experts(1), None, CAPS, host(4), measured_profile=damaged)
    assert p.host_profile is None and p.experts[0].predicted is None


def test_a_damaged_inventory_profile_fails_the_plan():
    with pytest.raises(ConfigError) as e:
        build_plan(experts(1), None, CAPS, host(4), host_profile={**PROFILE, "read_gbps": {}},
                   measured_profile=MEASURED)
    assert e.value.problems[0].startswith("llmhost_host_profile field 'read_gbps'")


def test_no_profile_no_prediction():
    p = build_plan(experts(2, 1, thresholds={"decode_tps_min": 1000}), None, CAPS, host(4))
    d = p.to_dict()
    assert d["host_profile"] is None
    assert [e["predicted"] for e in d["experts"]] == [None, None]
    assert [e["shape"]["source"] for e in d["experts"]] == ["estimated from the weights' size"] * 2
    assert performance_table(p).startswith("performance: no host profile, so no prediction")


def test_a_profile_predicts_every_generate_expert_and_no_pooling_one():
    ex = [*experts(2, 1), {"expert_id": "router", "runner": "pooling", "model": "/m/r", "domain": "routing",
                           "priority": 1, "weights_gib": 0.1, "kv_cache_gib": 1, "cores": 0}]
    p = build_plan(ex, None, CAPS, host(4), host_profile=PROFILE, reserved_cores=1)
    d = {e["expert_id"]: e for e in p.to_dict()["experts"]}
    assert d["router"]["predicted"] is None and d["router"]["shape"] is None
    assert d["e0"]["predicted"]["cores"] == len(d["e0"]["cores"]) == 2
    assert d["e1"]["predicted"]["cores"] == len(d["e1"]["cores"]) == 1
    assert d["e0"]["predicted"]["decode_tps"] > d["e1"]["predicted"]["decode_tps"]
    assert d["e0"]["predicted"]["basis"].startswith("1.07 GB per token / 20 GB/s on 2 cores")
    rows = performance_table(p).splitlines()
    assert rows[0].startswith("performance by an ASSUMED host profile (assumed for the test)")
    assert [r.split()[0] for r in rows[2:]] == ["e0", "e1"]


# model_files: what the controller's config.json says

def compressed(w_bits, a_bits, a_type="int"):
    acts = None if a_bits is None else {"num_bits": a_bits, "type": a_type, "dynamic": True, "strategy": "token"}
    return {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": w_bits, "type": a_type, "symmetric": True, "strategy": "channel"},
        "input_activations": acts}}}}


def test_checkpoint_quantization():
    assert checkpoint_quantization(SMOLLM2) is None
    assert checkpoint_quantization(compressed(8, 8)) == "w8a8"
    assert checkpoint_quantization(compressed(4, None)) == "w4a16"
    assert checkpoint_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4}}) == "gptq"
    assert checkpoint_quantization({"quantization_config": {"bits": 4}}) == "unknown"
    assert checkpoint_quantization({"quantization_config": {"quant_method": "compressed-tensors"}}) \
        == "compressed-tensors"


def test_a_w4a8_checkpoint_is_w4a8():
    assert checkpoint_quantization(compressed(4, 8)) == "w4a8"


def test_an_fp8_checkpoint_is_not_int8_w8a8():
    assert checkpoint_quantization(compressed(8, 8, "float")) != "w8a8"


def test_local_shapes_reads_config_json_of_model_else_model_source(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/config.json").write_text(json.dumps(SMOLLM2))
    (tmp_path / "quant").mkdir()
    (tmp_path / "quant/config.json").write_text(json.dumps({**SMOLLM2, **compressed(8, 8)}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/config.json").write_text("{not json")
    raw = [{"expert_id": "a", "model": str(tmp_path / "plain")},
           {"expert_id": "b", "model": "/nonexistent/model", "model_source": str(tmp_path / "quant")},
           {"expert_id": "c", "model": str(tmp_path / "broken")},
           {"expert_id": "d", "model": str(tmp_path / "missing")},
           {"model": str(tmp_path / "plain")}, "not a mapping"]
    got = local_shapes(raw)
    assert set(got) == {"a", "b"}
    assert got["a"] == (perf.shape_from_config(SMOLLM2), None)
    assert got["b"][1] == "w8a8" and got["b"][0].linear_params == 106_168_320
    assert local_shapes(None) == {} and local_shapes({"a": 1}) == {}


# 8. the production inventory

def plan_cli(inventory, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc = main(["plan", "-i", str(inventory)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def prod_experts():
    return yaml.safe_load((PROD / "group_vars/llm_hosts/experts.yml").read_text())["llmhost_experts"]


ACCEPTED = [e["expert_id"] for e in prod_experts() if e.get("accept_miss")]


def test_production_plans_with_its_assumed_profile(capsys, monkeypatch):
    rc, out, err = plan_cli("inventories/production", capsys, monkeypatch)
    assert rc == 0, err
    lines = out.splitlines()
    (start,) = [i for i, l in enumerate(lines) if l.startswith("performance by an ASSUMED host profile (")]
    assert "Graviton4" in lines[start]
    rows = []
    for l in lines[start + 2:]:
        if not l.strip():
            break
        rows.append(l.split())
    generate = [e["expert_id"] for e in prod_experts() if e.get("runner", "generate") == "generate"]
    assert len(generate) == 5 and [r[0] for r in rows] == generate
    verdict = {r[0]: " ".join(r[10:]) for r in rows}
    for eid in generate:   # an accepted expert may miss; every other one fits
        assert verdict[eid] == ("MISS, accepted" if eid in ACCEPTED else "fits"), (eid, verdict[eid])
    for eid in ACCEPTED:
        assert any(f"warning: expert '{eid}' field 'thresholds'" in l and "Accepted (accept_miss)" in l
                   for l in err.splitlines()), err


def test_the_production_profile_is_the_assumed_neoverse_v2():
    raw = yaml.safe_load((PROD / "host_vars/models-europe.yml").read_text())
    p = perf.parse_profile(raw["llmhost_host_profile"])
    assert p.assumed is True and p.source.strip()
    # the VM's share, 32/96 x 465 GB/s, is the most any core count reads
    assert max(b for _, b in p.read_gbps) == pytest.approx(32 / 96 * 465, abs=0.5)
    assert p.bandwidth_gbps(raw["llmhost_host_expect"]["cpus"]) == pytest.approx(155)


@pytest.mark.parametrize("eid", ACCEPTED)
def test_production_without_an_accept_miss_fails_naming_the_expert(eid, tmp_path, capsys, monkeypatch):
    inv = tmp_path / "production"
    shutil.copytree(PROD, inv)
    rc, _, err = plan_cli(inv, capsys, monkeypatch)
    assert rc == 0, err          # the copy plans as the original does
    path = inv / "group_vars/llm_hosts/experts.yml"
    raw = yaml.safe_load(path.read_text())
    (e,) = [e for e in raw["llmhost_experts"] if e["expert_id"] == eid]
    del e["accept_miss"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    rc, _, err = plan_cli(inv, capsys, monkeypatch)
    assert rc == 1
    problems = [l.strip() for l in err.splitlines() if l.startswith("  expert ")]
    assert len(problems) == 1 and problems[0].startswith(f"expert '{eid}' field 'thresholds': out of reach"), err
    assert "or set accept_miss with the reason" in problems[0]


def test_a_profile_without_float32_matmul_is_refused():
    raw = {"read_gbps": {1: 10}, "matmul_gflops": {}, "source": "x"}
    with pytest.raises(ConfigError, match=r"matmul_gflops\.float32': required"):
        perf.parse_profile(raw)


def test_a_dip_in_measured_bandwidth_never_lowers_a_prediction_with_more_cores():
    prof = perf.parse_profile({"read_gbps": {1: 20, 8: 155, 16: 140}, "matmul_gflops": {"float32": 50},
                               "source": "a busy run"})
    assert prof.bandwidth_gbps(16) == prof.bandwidth_gbps(8) == 155


def test_int8_activations_without_int8_dot_products_fall_back_to_the_float_model():
    ex = experts(1)
    ex[0].update(quantization="w8a8", model_source="/cache/m-W8A8", weights_gib=None)
    avx2 = host(4, {"avx2": True})
    p = build_plan(ex, None, CAPS, avx2, weights_bytes={"e0": GIB // 2},
                   float_sources={"e0": ("/cache/m", GIB)})
    d = p.to_dict()["experts"][0]
    assert d["quantization"] is None and d["quantization_requested"] == "w8a8"
    assert d["model_source"] == "/cache/m" and d["weights_gib"] == pytest.approx(1.0)
    assert "int8 dot-product" in d["quantization_reason"]
    # the same on a CPU with VNNI: served quantized, from the quantized folder
    d = build_plan(ex, None, CAPS, host(4, {"avx2": True, "int8_dot": True}), weights_bytes={"e0": GIB // 2},
                   float_sources={"e0": ("/cache/m", GIB)}).to_dict()["experts"][0]
    assert d["quantization"] == "w8a8" and d["model_source"] == "/cache/m-W8A8"


def test_int8_activations_without_a_float_model_fail_unless_forced():
    ex = experts(1)
    ex[0].update(quantization="w8a8")
    with pytest.raises(ConfigError, match=r"expert 'e0' field 'quantization': w8a8 on this CPU: .*int8 dot"):
        build_plan(ex, None, CAPS, host(4, {"avx2": True}))
    ex[0]["allow_emulated_dtype"] = True
    p = build_plan(ex, None, CAPS, host(4, {"avx2": True}))
    assert p.to_dict()["experts"][0]["quantization"] == "w8a8"
    assert any("forced (allow_emulated_dtype)" in w for w in p.warnings)


def test_the_cpuinfo_parser_sees_int8_dot_products():
    from llmhost.capabilities import parse_cpuinfo

    assert parse_cpuinfo("processor: 0\nflags: avx2 avx512f avx512_vnni\n", "x86_64")["isa"]["int8_dot"]
    assert not parse_cpuinfo("processor: 0\nflags: avx2 fma\n", "x86_64")["isa"]["int8_dot"]
    assert parse_cpuinfo("processor: 0\nFeatures: fp asimd asimddp\n", "aarch64")["isa"]["int8_dot"]


# cores split to meet budgets (llmhost_core_split: budget)

def test_budget_split_gives_each_the_fewest_cores_that_fit_then_shares_by_demand():
    counts, notes = perf.budget_split({"a": 3, "b": 2, "c": None}, {"a": 1.0, "b": 1.0, "c": 2.0}, ["a", "b", "c"], 10)
    assert counts["a"] >= 3 and counts["b"] >= 2 and sum(counts.values()) == 10
    assert counts["c"] == 1 + 2   # 4 spare cores, half of the demand: 2
    assert notes == ["expert 'c': no core count of this host meets its thresholds; it gets its share"]


def test_budget_split_serves_priority_first_when_short():
    counts, notes = perf.budget_split({"hi": 4, "lo": 4}, {"hi": 1.0, "lo": 1.0}, ["hi", "lo"], 6)
    assert counts["hi"] >= 4 and counts["lo"] < 4 and sum(counts.values()) == 6, counts
    assert any("'lo': needs 4 cores" in n for n in notes)


def test_core_split_budget_meets_thresholds_where_priority_does_not():
    # e0, low priority, needs 6 cores for its TTFT (0.03 + 0.43 s / cores <= 0.11 s); e1 needs 1
    ex = experts(1, 5)
    ex[0]["thresholds"] = {"ttft_p50_s": 0.11}
    ex[1]["thresholds"] = {"decode_tps_min": 5}
    with pytest.raises(ConfigError, match="expert 'e0' field 'thresholds'"):
        build_plan(ex, None, CAPS, host(8), host_profile=PROFILE)          # by priority: e0 gets 2 cores
    p = build_plan(ex, None, CAPS, host(8), host_profile=PROFILE, core_split="budget")
    got = {e.expert_id: len(e.cores) for e in p.experts}
    assert got["e0"] >= 6 and sum(got.values()) == 8, got
    assert any(w.startswith("llmhost_core_split budget: e1") for w in p.warnings)


def test_core_split_budget_without_a_profile_splits_by_priority_and_says_so():
    # the first deploy of a host without llmhost_host_profile has no measured profile yet
    p = build_plan(experts(5, 1), None, CAPS, host(8), core_split="budget")
    assert [len(e.cores) for e in p.experts] == [6, 2]
    assert any("llmhost_core_split: budget needs a host profile" in w for w in p.warnings)


def test_core_split_needs_a_known_mode():
    with pytest.raises(ConfigError, match="llmhost_core_split: one of priority, budget"):
        build_plan(experts(1), None, CAPS, host(4), core_split="fair")


def test_a_quantization_format_of_the_engine_key_is_not_the_fields():
    # an AWQ or GPTQ checkpoint goes through engine.quantization (x86), never the quantization field
    build_plan(experts(1), None, CAPS, host(4), checkpoints={"e0": (None, "awq")})
    with pytest.raises(ConfigError, match="declares w8a8 but the checkpoint is awq"):
        build_plan(experts(1, quantization="w8a8"), None, CAPS, host(4), checkpoints={"e0": (None, "awq")})


def test_a_measured_profile_of_another_cpu_is_not_this_hosts():
    h = host(4, model="AMD EPYC")
    other = {**MEASURED, "cpu": "Intel(R) Xeon(R) Platinum"}
    assert choose_profile(PROFILE, other, False, h.model).assumed is True
    assert choose_profile(PROFILE, {**MEASURED, "cpu": "AMD EPYC"}, False, h.model).assumed is False


def test_a_legacy_expert_is_predicted_on_every_cpu_and_never_given_cores_by_the_budget():
    ex = experts(5, 1)
    ex[1]["profile"] = "legacy"
    p = build_plan(ex, None, CAPS, host(8), host_profile=PROFILE, core_split="budget")
    legacy = p.experts[1]
    assert legacy.predicted.cores == 8 and legacy.cpu_list == "0-7"

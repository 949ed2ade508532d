"""Verdicts against the saved vLLM 0.32.0 capabilities, for every legacy key of the seed."""

from pathlib import Path

from llmhost.cli import saved_capabilities
from llmhost.experts import Expert
from llmhost.legacy import import_legacy, loads_lenient, strip_comments
from llmhost.translate import translate

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CAPS = saved_capabilities("0.32.0")
ARM = {"arch": "aarch64", "isa": {"bf16": True, "fp16": True, "neon": True}, "model": "Neoverse-V2"}
ZEN4 = {"arch": "x86_64", "isa": {"bf16": True, "fp16": False, "avx512": True}, "model": "AMD EPYC"}


def caps(cpu):
    return {**CAPS, "cpu": cpu}


# Every key of the seed document's config.low_latency.json expert, and its verdict on aarch64.
SEED_EXPERT_VERDICTS = {
    "expert_id": "translated", "model_path": "translated", "domain": "translated",
    "priority": "translated",
    "quantization": "rejected",             # awq on Arm
    "tensor_parallel_size": "applied",
    "gpu_memory_utilization": "dropped: GPU only",
    "max_num_seqs": "applied",
    "enable_neon": "dropped: not a vLLM setting",
    "enable_chunked_prefill": "applied",
    "max_num_batched_tokens": "applied",
    "max_model_len": "applied",
    "enforce_eager": "applied",
    "kv_cache_dtype": "applied",
    "use_v2_block_manager": "dropped: removed in vLLM 0.32.0",
    "enable_prefix_caching": "applied",
    "device": "dropped: removed in vLLM 0.32.0",
    "dtype": "applied",
    "use_captured_graph": "dropped: not a vLLM setting",
    "swap_space": "dropped: removed in vLLM 0.32.0",
    "cpu_offload_gb": "dropped: GPU only",
    "num_scheduler_steps": "dropped: removed in vLLM 0.32.0",
}
SEED_PERF_VERDICTS = {
    "swap_space": "dropped: removed", "cpu_offload_gb": "dropped: GPU only",
    "enforce_eager": "translated", "max_context_len_to_capture": "dropped: removed",
    "enable_prefix_caching": "translated", "use_v2_block_manager": "dropped: removed",
    "num_scheduler_steps": "dropped: removed", "enable_chunked_prefill": "translated",
    "max_num_cached_tokens": "dropped: not a vLLM setting",
}


def test_seed_json_with_comments_parses():
    text = (FIX / "config.low_latency.json").read_text()
    assert "#" in text and "//" in text
    data = loads_lenient(text)
    assert data["experts"][0]["quantization"] == "awq"
    assert strip_comments('{"a": "x # y // z"} # c') .strip() == '{"a": "x # y // z"}'


def test_every_seed_key_gets_its_verdict():
    data = loads_lenient((FIX / "config.low_latency.json").read_text())
    res = import_legacy(data, caps(ARM), arch="aarch64")
    lines = {l.split(": ", 1)[0]: l.split(": ", 1)[1] for l in res.report}
    raw = data["experts"][0]
    assert set(raw) == set(SEED_EXPERT_VERDICTS), "fixture and table out of step"
    for key, verdict in SEED_EXPERT_VERDICTS.items():
        assert lines[f"phi4_fast.{key}"].startswith(verdict), (key, lines[f"phi4_fast.{key}"])
    for key, verdict in SEED_PERF_VERDICTS.items():
        assert lines[f"performance_tuning.{key}"].startswith(verdict), (key, lines[f"performance_tuning.{key}"])
    for key in data["lazy_loading"]:
        assert lines[f"lazy_loading.{key}"].startswith("translated")
    assert "KleidiAI" in lines["phi4_fast.quantization"]
    assert res.rejected and "expert 'phi4_fast' field 'quantization'" in res.rejected[0]
    entry = res.experts[0]
    assert "quantization" not in entry["engine"] and entry["engine"]["max_num_batched_tokens"] == 4096


def test_awq_is_fine_on_x86():
    t = translate(Expert("e", "/m/x", "general", 1, engine={"quantization": "awq"}), caps(ZEN4), port=8101)
    assert not t.rejected and "--quantization" in t.argv


def test_gemma3_float16_rejected_with_fix():
    e = Expert("gemma-3", "/home/elect/models/gemma-3-27b-it", "multimodal", 2, engine={"dtype": "float16"})
    t = translate(e, caps(ARM), port=8104)
    assert [str(l) for l in t.rejected] == [
        "dtype: rejected (vLLM refuses float16 for Gemma 3 (numerical instability); use dtype: auto or bfloat16)"]
    assert "--dtype" not in t.argv


def test_float16_without_native_fp16_is_refused_and_native_fp16_is_not():
    t = translate(Expert("e", "/m/x", "g", 1, engine={"dtype": "float16"}), caps(ZEN4), port=8101)
    assert [l.key for l in t.rejected] == ["dtype"] and "avx512_fp16" in str(t.rejected[0])
    t = translate(Expert("e", "/m/x", "g", 1, engine={"dtype": "float16"}), caps(ARM), port=8101)
    assert t.warnings == [] and t.rejected == [] and t.argv[t.argv.index("--dtype") + 1] == "float16"


def test_fp8_kv_rejected_on_arm_in_0_32():
    t = translate(Expert("e", "/m/x", "g", 1, engine={"kv_cache_dtype": "fp8"}), caps(ARM), port=8101)
    assert "AVX-512 or AMX" in str(t.rejected[0])
    t = translate(Expert("e", "/m/x", "g", 1, engine={"kv_cache_dtype": "fp8"}), caps(ZEN4), port=8101)
    assert not t.rejected and t.argv[t.argv.index("--kv-cache-dtype") + 1] == "fp8"


def test_fp8_kv_with_prefix_caching_where_a_version_refuses_it():
    c = caps(ZEN4)
    c["cpu_rules"] = {**c["cpu_rules"], "fp8_kv_refuses": ["prefix_caching"]}
    t = translate(Expert("e", "/m/x", "g", 1, engine={"kv_cache_dtype": "fp8"}), c, port=8101)
    assert "prefix caching" in str(t.rejected[0])
    t = translate(Expert("e", "/m/x", "g", 1, engine={"kv_cache_dtype": "fp8",
                                                      "enable_prefix_caching": False}), c, port=8101)
    assert not t.rejected


def test_bool_flags_and_choices():
    e = Expert("e", "/m/x", "g", 1, profile="legacy",
               engine={"enable_prefix_caching": False, "enforce_eager": True, "dtype": "bfloat",
                       "max_num_seqs": 4})
    t = translate(e, caps(ZEN4), port=8101)
    assert "--no-enable-prefix-caching" in t.argv and "--enforce-eager" in t.argv
    assert "dtype: rejected ('bfloat' is not a dtype" in str(t.rejected[0])
    assert t.argv[:8] == ["--model", "/m/x", "--served-model-name", "e", "--host", "127.0.0.1", "--port", "8101"]


def test_env_kv_cache_bind_and_arm_only_env():
    e = Expert("e", "/m/x", "g", 1, kv_cache_gib=3)
    t = translate(e, caps(ARM), port=8101, cores="4-7")
    assert t.env == {"VLLM_CPU_KVCACHE_SPACE": "3", "VLLM_CPU_OMP_THREADS_BIND": "4-7", "THP_MEM_ALLOC_ENABLE": "1"}
    t = translate(e, caps(ZEN4), port=8101, cores="0")
    assert "THP_MEM_ALLOC_ENABLE" not in t.env
    legacy = Expert("e", "/m/x", "g", 1, profile="legacy")
    assert translate(legacy, caps(ZEN4), port=8101, cores="0").env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_gpu_memory_utilization_never_sizes_the_kv_cache():
    e = Expert("e", "/m/x", "g", 1, engine={"gpu_memory_utilization": 0.9})
    t = translate(e, caps(ZEN4), port=8101)
    assert "--gpu-memory-utilization" not in t.argv and t.env["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert t.errors(strict=False) == []
    assert "field 'gpu_memory_utilization'" in t.errors(strict=True)[0]


def test_unknown_vllm_cpu_env_rejected():
    e = Expert("e", "/m/x", "g", 1, env={"VLLM_CPU_TURBO": "1"})
    t = translate(e, caps(ZEN4), port=8101)
    assert "VLLM_CPU_TURBO" in str(t.rejected[0]) and "VLLM_CPU_TURBO" not in t.env


def test_toolkit_owned_flags_cannot_be_set():
    t = translate(Expert("e", "/m/x", "g", 1, engine={"port": 9000}), caps(ZEN4), port=8101)
    assert "set by the toolkit" in str(t.rejected[0]) and t.argv.count("--port") == 1


def test_saved_capabilities_are_real():
    assert CAPS["vllm_version"] == "0.32.0"
    assert "swap_space" not in CAPS["flags"] and "max_num_seqs" in CAPS["flags"]
    assert "VLLM_CPU_KVCACHE_SPACE" in CAPS["cpu_env_vars"]
    assert CAPS["flags"]["enable_prefix_caching"]["kind"] == "bool_optional"

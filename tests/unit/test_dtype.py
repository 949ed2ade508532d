"""dtype: auto resolved from the host's CPU flags, on real cpuinfo fixtures."""

from importlib import resources
from pathlib import Path

import pytest

from llmhost.capabilities import parse_cpuinfo
from llmhost.cli import main, saved_capabilities
from llmhost.dtype import choose, native_flags, normalize
from llmhost.experts import ConfigError
from llmhost.plan import GIB, Host, build_plan

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests/fixtures"
ZEN3 = parse_cpuinfo((FIX / "cpuinfo-x86-zen3-2cpu.txt").read_text(), "x86_64")
ZEN4 = parse_cpuinfo((FIX / "cpuinfo-x86-zen4-2cpu.txt").read_text(), "x86_64")
EMR = parse_cpuinfo((FIX / "cpuinfo-x86-intel-emerald-rapids-2cpu.txt").read_text(), "x86_64")
NV2 = parse_cpuinfo(resources.files("llmhost").joinpath("data/cpuinfo-neoverse-v2.txt").read_text(), "aarch64")
CAPS = saved_capabilities()


def pick(info, requested="auto", **kw):
    return choose(requested, info["arch"], info["isa"], cpu_name=info["model"], **kw)


def test_fixtures_are_what_they_claim():
    assert ZEN3["isa"]["avx2"] and not ZEN3["isa"]["avx512"] and not ZEN3["isa"]["bf16"]
    assert ZEN4["isa"]["avx512_bf16"] and not ZEN4["isa"]["amx_bf16"]
    assert EMR["isa"]["amx_bf16"] and EMR["isa"]["avx512_fp16"]
    assert NV2["arch"] == "aarch64" and NV2["isa"]["bf16"]


@pytest.mark.parametrize("info, dtype, reason", [
    (ZEN3, "float32", "auto: no native bf16 on this CPU"),
    (ZEN4, "bfloat16", "auto: avx512_bf16"),
    (EMR, "bfloat16", "auto: avx512_bf16, amx_bf16"),
    (NV2, "bfloat16", "auto: bf16"),
])
def test_auto_picks_bf16_only_where_native(info, dtype, reason):
    c, why = pick(info)
    assert why is None and (c.dtype, c.reason, c.emulated) == (dtype, reason, False)


def test_auto_never_picks_float16_even_where_native():
    assert pick(EMR)[0].dtype != "float16" and pick(NV2)[0].dtype != "float16"


def test_arm_without_bf16_gets_float32():
    isa = dict(NV2["isa"], bf16=False)
    assert choose("auto", "aarch64", isa)[0].dtype == "float32"


def test_unknown_flags_fall_back_to_float32_and_say_so():
    c, _ = choose("auto", "x86_64", {})
    assert c.dtype == "float32" and "unknown" in c.reason


def test_explicit_emulated_dtype_is_refused_with_the_fix():
    c, why = pick(ZEN3, "bfloat16")
    assert c is None and "emulated on AMD EPYC 7B13" in why and "allow_emulated_dtype" in why
    c, why = pick(ZEN4, "float16")  # Zen 4: no avx512_fp16
    assert c is None and "avx512_fp16" in why


def test_explicit_emulated_dtype_runs_when_allowed_and_is_marked():
    c, why = pick(ZEN3, "bfloat16", allow_emulated=True)
    assert why is None and c.dtype == "bfloat16" and c.emulated and "EMULATED" in c.reason


def test_explicit_native_and_float32_always_work():
    assert pick(ZEN3, "float32")[0].reason == "explicit"
    assert pick(ZEN4, "bfloat16")[0].dtype == "bfloat16"
    assert pick(EMR, "half")[0].dtype == "float16"
    assert pick(NV2, "float16")[0].dtype == "float16"


def test_float16_refused_family_even_when_native():
    c, why = pick(EMR, "float16", fp16_refused="Gemma 3")
    assert c is None and "refuses float16" in why


def test_not_a_dtype():
    assert normalize("bfloat") is None and normalize(None) == "auto" and normalize("BF16") == "bfloat16"
    assert pick(ZEN4, "int8")[1].startswith("'int8' is not a dtype")


def test_old_probe_without_flag_names_still_counts_bf16():
    assert native_flags("bfloat16", "x86_64", {"bf16": True}) == ["bf16"]


def one(**extra):
    return [{"expert_id": "general", "model": "/m/x", "domain": "general", "priority": 1,
             "weights_gib": 0.3, "kv_cache_gib": 1, **extra}]


def host(info):
    return Host((0, 1), 24 * GIB, info["arch"], info["isa"], info["model"])


def test_plan_passes_the_choice_as_an_explicit_flag():
    for info, want in ((ZEN3, "float32"), (ZEN4, "bfloat16")):
        p = build_plan(one(), None, CAPS, host(info)).to_dict()["experts"][0]
        assert p["argv"][p["argv"].index("--dtype") + 1] == want == p["dtype"]


def test_plan_fails_on_emulated_dtype_naming_expert_and_field():
    with pytest.raises(ConfigError) as e:
        build_plan(one(engine={"dtype": "bfloat16"}), None, CAPS, host(ZEN3))
    assert "expert 'general' field 'dtype'" in str(e.value) and "emulated" in str(e.value)
    p = build_plan(one(engine={"dtype": "bfloat16"}, allow_emulated_dtype=True), None, CAPS, host(ZEN3))
    assert p.experts[0].translation.dtype.emulated and any("EMULATED" in w for w in p.warnings)


@pytest.mark.parametrize("fixture, line", [
    ("cpuinfo-x86-zen3-2cpu.txt", "dtype float32 (auto: no native bf16 on this CPU)"),
    ("cpuinfo-x86-zen4-2cpu.txt", "dtype bfloat16 (auto: avx512_bf16)"),
])
def test_cli_plan_shows_the_choice_and_reason(capsys, fixture, line):
    assert main(["plan", "-i", str(ROOT / "inventories/local"), "--cpuinfo", str(FIX / fixture)]) == 0
    out = capsys.readouterr().out
    assert out.count(line) == 2, out


def test_production_plan_is_bf16_on_neoverse_v2(capsys):
    assert main(["plan", "-i", str(ROOT / "inventories/production")]) == 0
    assert capsys.readouterr().out.count("dtype bfloat16 (auto: bf16)") == 5


def test_cli_cpuinfo_that_is_not_one_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x"
    bad.write_text("hello\n")
    with pytest.raises(SystemExit, match="not a /proc/cpuinfo"):
        main(["plan", "-i", str(ROOT / "inventories/local"), "--cpuinfo", str(bad)])


def test_a_pooling_expert_is_float32_under_auto_on_every_cpu():
    from llmhost.dtype import choose

    for arch, isa in (("x86_64", {"avx512_bf16": True}), ("x86_64", {"avx2": True}), ("aarch64", {"bf16": True})):
        c, why = choose("auto", arch, isa, pooling=True)
        assert why is None and c.dtype == "float32" and "pooling" in c.reason
    assert choose("bfloat16", "x86_64", {"avx512_bf16": True}, pooling=True)[0].dtype == "bfloat16"  # explicit wins

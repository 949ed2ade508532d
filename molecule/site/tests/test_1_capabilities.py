"""The live capabilities read on the host agree with the file the project keeps for vLLM 0.32.0."""

import json

from llmhost import capabilities, perf
from llmhost.cli import saved_capabilities


def test_live_capabilities_match_the_saved_file(host):
    host.run("mkdir -p /tmp/llmhost-probe")
    script = open(capabilities.__file__).read()
    host.run(f"cat > /tmp/llmhost-probe/capabilities.py <<'PYEOF'\n{script}\nPYEOF")
    out = host.run("cd /tmp && /opt/vllm/venv/bin/python /tmp/llmhost-probe/capabilities.py")
    assert out.rc == 0, out.stderr[-2000:]
    live = capabilities.from_output(out.stdout)
    saved = saved_capabilities("0.32.0")
    assert live["vllm_version"] == saved["vllm_version"] == "0.32.0"
    assert live["flags"] == saved["flags"]
    assert live["cpu_env_vars"] == saved["cpu_env_vars"]
    # the quantized-matmul kernels of the library this CPU loads: what llmhost.perf's table says
    ops = set(live["cpu_rules"].pop("cpu_ops"))
    lib = perf.kernel_library("x86_64", live["cpu"]["isa"])
    print(f"kernel library {lib}, quantized-matmul ops {sorted(ops)}")
    assert ops & set(perf.QUANT_OPS.values()) == perf.SHIPPED_OPS[lib] & set(perf.QUANT_OPS.values())
    assert live["cpu_rules"] == saved["cpu_rules"]   # the rest is the vLLM release's, the same everywhere
    # bf16 as this CPU's flags say (AMX or AVX-512 BF16; an AVX2-only CPU has none)
    flags = set(host.check_output("grep -m1 '^flags' /proc/cpuinfo").split(":", 1)[1].split())
    assert live["cpu"]["arch"] == "x86_64"
    assert live["cpu"]["isa"]["bf16"] == bool({"avx512_bf16", "amx_bf16"} & flags), (live["cpu"]["isa"], flags)


def test_the_translated_argv_is_what_runs(host):
    cfg = json.loads(host.file("/etc/llmhost/experts.json").content_string)
    for e in cfg["experts"]:
        cmdline = host.check_output(f"systemctl show -p ExecStart --value llmhost-expert-{e['expert_id']}")
        assert " ".join(e["argv"]) in cmdline
        assert host.service(f"llmhost-expert-{e['expert_id']}").is_running

"""llmhost smoke against the live front door: pass, fail on an impossible budget,
agree with `vllm bench serve`, and catch garbled output."""

import json
import os
import re
import time
from pathlib import Path

import pytest
from conftest import smoke
from llmhost.smoke import measured_prompt
from llmhost.stats import summarize
from llmhost.stream import Sample

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def test_site_wrote_a_passing_report():
    reports = sorted((PROJECT / "reports/molecule").glob("mol-site-*.json"))
    assert reports, "verify.yml wrote no report"
    rep = json.loads(reports[-1].read_text())
    assert rep["passed"] and [e["expert_id"] for e in rep["experts"]] == ["general", "coder"]
    for e in rep["experts"]:
        assert e["ttft_p50_s"] > 0 and e["tbt_p95_s"] > 0 and e["decode_tps"] > 0
        assert e["probes"]["capital"]["ok"], e["probes"]
    # the rollout's gate: the first run had no baseline, so this report became it
    base = PROJECT / "reports/molecule/mol-site/baseline.json"
    assert base.exists(), "the verify stage set no baseline for the host"
    assert json.loads(base.read_text())["experts"] == rep["experts"]


def test_the_report_carries_predicted_against_measured_and_the_numerics_check():
    rep = json.loads(sorted((PROJECT / "reports/molecule").glob("mol-site-*.json"))[-1].read_text())
    perf = {e["expert_id"]: e for e in rep["performance"]["experts"]}
    assert rep["performance"]["assumed"] is False and set(perf) == {"general", "coder"}, rep["performance"]
    for e in perf.values():   # predicted from the host's measured profile, compared with the run
        assert e["decode_tps_predicted"] > 0 and e["decode_error"] is not None and e["ttft_error"] is not None
    for e in rep["experts"]:
        n = e["numerics"]
        assert set(n["perplexity"]) == {"english", "spanish", "code"} and n["misses"] == [], n
        assert "the float32 reference" in n["against"]


def test_numerics_baseline_and_host_profile_are_on_the_host(host):
    base = json.loads(host.file("/etc/llmhost/numerics-baseline.json").content_string)
    assert set(base) == {"general", "coder"}, base
    for entry in base.values():
        assert all(0 < v < 1000 for v in entry["perplexity"].values()) and entry["fingerprint"]["model"]
    prof = json.loads(host.file("/opt/vllm/venv/llmhost-host-profile.json").content_string)
    cpus = int(host.check_output("nproc"))
    assert set(prof["read_gbps"]) == {str(n) for n in (1, 2, 4, 8, 16, 32, 64) if n < cpus} | {str(cpus)}
    assert prof["assumed"] is False and prof["matmul_gflops"]["float32"] > 0


def test_coder_is_w8a8_where_the_cpu_has_int8_dot_products_else_its_float_source(host):
    cfg = json.loads(host.file("/etc/llmhost/experts.json").content_string)
    coder = next(e for e in cfg["experts"] if e["expert_id"] == "coder")
    assert coder["quantization_requested"] == "w8a8"
    on_host = json.loads(host.file("/srv/models/coder/config.json").content_string)
    int8_dot = host.run("grep -qwE 'avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo").rc == 0
    print(f"int8 dot products: {int8_dot}; coder: {coder['quantization_reason']}")
    if int8_dot:
        assert coder["quantization"] == "w8a8" and coder["model_source"].endswith("-W8A8")
        assert on_host["quantization_config"]["quant_method"] == "compressed-tensors"
    else:
        assert coder["quantization"] is None and coder["model_source"].endswith("SmolLM2-135M-Instruct")
        assert "int8 dot-product" in coder["quantization_reason"] and "quantization_config" not in on_host


def test_smoke_passes_with_local_thresholds(host, base_url, tmp_path):
    r = smoke(host, base_url, tmp_path, "--repeat", "3", "--json", str(tmp_path / "r.json"), "--chart", str(tmp_path / "c.png"))
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout and (tmp_path / "c.png").stat().st_size > 1000


def test_an_impossible_budget_fails_naming_expert_and_figure(host, base_url, tmp_path):
    r = smoke(host, base_url, tmp_path, "--expert", "coder", "--repeat", "2", "--threshold", "ttft_p50_s=0.0001")
    assert r.returncode == 1
    assert re.search(r"FAIL coder: ttft_p50 \d+\.\d{3} s > budget 0.0001 s", r.stdout), r.stdout


def test_the_regression_gate_sets_a_baseline_then_fails_a_worse_run(host, base_url, tmp_path):
    base = tmp_path / "mol-site" / "baseline.json"
    args = ("--expert", "general", "--repeat", "2", "--baseline", str(base))
    r = smoke(host, base_url, tmp_path, *args)
    assert r.returncode == 0 and "GATE no baseline yet" in r.stdout and base.exists(), r.stdout + r.stderr
    b = json.loads(base.read_text())
    # a baseline ten times faster than this host; TBT: its floor (10 ms) is below any
    # host's TBT p95 less a tenth of it, on every CPU met (25-45 ms here)
    b["experts"][0]["tbt_p95_s"] /= 10
    base.write_text(json.dumps(b))
    r = smoke(host, base_url, tmp_path, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^GATE FAIL general: TBT p95 \d+ ms against baseline \d+ ms \(\+\d+%, limit \+25% and "
                     r"\+10 ms\)$", r.stdout, re.M), r.stdout
    assert json.loads(base.read_text()) == b   # a failed run never moves the baseline


def quiet_probe_timer(host):
    """Stop the answer probe timer (and wait out a run in progress): its probes share the
    experts' cores and would skew the figures printed below."""
    host.run("systemctl stop llmhost-probe.timer")
    for _ in range(120):
        if host.run("systemctl is-active --quiet llmhost-probe.service").rc != 0:
            return
        time.sleep(1)


@pytest.mark.full
def test_metrics_agree_with_vllm_bench_serve(host, base_url, tmp_path):
    """Same expert, same run: llmhost's arithmetic over vllm bench serve's own per-request
    timings gives vllm's medians and p95s exactly, and both clients get the fixed output
    length. The two live medians are printed, not compared: two timed series run one after
    the other on a 2-core host differed by 14 % in one CI run (TBT 45 against 52 ms) with
    nothing wrong in either; figures belong to `make bench`."""
    quiet_probe_timer(host)
    try:
        compare_with_vllm_bench_serve(host, base_url, tmp_path)
    finally:
        host.run("systemctl start llmhost-probe.timer")


def compare_with_vllm_bench_serve(host, base_url, tmp_path):
    N, OUT = 16, 64
    cfg = json.loads(host.file("/etc/llmhost/experts.json").content_string)
    port = [e for e in cfg["experts"] if e["expert_id"] == "general"][0]["backend_port"]
    # llmhost smoke's own prompts as a custom dataset, labelled "Request H. ..." where
    # ours say "Request 7. ...": the same shape within a token, and neither run may hit
    # the other's prefix cache.
    lines = "\n".join(json.dumps({"prompt": measured_prompt(i, label=chr(65 + i))}) for i in range(N))
    host.run(f"cat > /tmp/prompts.jsonl <<'EOF'\n{lines}\nEOF")
    # vllm bench's custom dataset reads JSONL with pandas, an optional vLLM extra
    # that the served venv does not carry; the benchmark brings its own.
    host.run("/opt/vllm/venv/bin/python -m pip install -q pandas")
    bench = host.run(
        "cd /tmp && HF_HUB_OFFLINE=1 /opt/vllm/venv/bin/python -c 'import sys; "
        "from vllm.utils.argparse_utils import FlexibleArgumentParser as P; "
        "from vllm.benchmarks.serve import add_cli_args, main; "
        "p = P(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))' "
        f"--backend openai-chat --endpoint /v1/chat/completions --base-url http://127.0.0.1:{port} "
        "--model general --tokenizer /srv/models/SmolLM2-135M-Instruct --dataset-name custom "
        f"--dataset-path /tmp/prompts.jsonl --custom-output-len {OUT} --num-prompts {N} --max-concurrency 1 "
        # The custom dataset applies the chat template itself unless told not to; the
        # chat endpoint then applies it again: a prompt twice as long as ours.
        "--skip-chat-template "
        "--ignore-eos --save-result --save-detailed --result-filename bench.json "
        "--percentile-metrics ttft,itl --metric-percentiles 50,95")
    assert bench.rc == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    b = json.loads(host.file("/tmp/bench.json").content_string)
    assert b["completed"] == N and b["total_output_tokens"] == N * OUT, {k: b.get(k) for k in ("completed", "total_output_tokens")}

    # Aggregation: vllm's raw per-request TTFTs and ITLs through llmhost's summarize()
    raw = [Sample(ttft_s=t, itls_s=list(itl), e2e_s=0.0, output_tokens=OUT, prompt_tokens=0, text="x")
           for t, itl in zip(b["ttfts"], b["itls"], strict=True)]
    st = summarize(raw)
    for ours_field, theirs in (("ttft_p50_s", "median_ttft_ms"), ("ttft_p95_s", "p95_ttft_ms"),
                               ("tbt_p50_s", "median_itl_ms"), ("tbt_p95_s", "p95_itl_ms")):
        assert getattr(st, ours_field) * 1000 == pytest.approx(b[theirs], rel=1e-9), (ours_field, theirs)

    # ours, live: from the controller through the front door (the JSON is written pass or fail)
    smoke(host, base_url, tmp_path, "--expert", "general", "--repeat", str(N), "--max-tokens", str(OUT),
          "--json", str(tmp_path / "s.json"))
    ours = json.loads((tmp_path / "s.json").read_text())["experts"][0]
    assert ours["errors"] == 0 and ours["output_tokens"] == N * OUT, ours
    print(f"vllm bench serve (direct): TTFT median {b['median_ttft_ms']:.1f} ms, ITL median {b['median_itl_ms']:.1f} ms; "
          f"llmhost smoke (front door): TTFT median {ours['ttft_p50_s'] * 1000:.1f} ms, "
          f"TBT median {ours['tbt_p50_s'] * 1000:.1f} ms")

"""The smoke test's arithmetic on a scripted stream (the one place a fake server is right)."""


import pytest

from llmhost import coherence, smoke, stats, stream


def test_measure_ttft_itl_decode_rate():
    start = 10.0
    events = [(10.05, "", None),            # role chunk: no content yet
              (10.20, "The", None), (10.25, " capital", None), (10.31, " is", None), (10.40, " Paris", None),
              (10.41, "", {"prompt_tokens": 42, "completion_tokens": 4})]
    s = stream.measure(events, start)
    assert s.ttft_s == pytest.approx(0.20)
    assert s.itls_s == pytest.approx([0.05, 0.06, 0.09])
    assert s.decode_tps == pytest.approx(3 / 0.20)           # (4 - 1) / (10.40 - 10.20)
    assert s.e2e_s == pytest.approx(0.41) and s.output_tokens == 4 and s.prompt_tokens == 42
    assert s.text == "The capital is Paris"


def test_percentiles_match_numpy_linear():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == pytest.approx(9.55)
    assert stats.percentile([], 50) is None


def test_summarize_and_thresholds_name_the_expert_and_figure():
    a = stream.Sample(0.1, [0.02, 0.03], 0.2, 3, 10, "x")
    b = stream.Sample(0.3, [0.04], 0.4, 2, 10, "y")
    err = stream.Sample(None, [], 1.0, 0, 0, "", "HTTP 503")
    st = stats.summarize([a, b, err])
    assert st.requests == 3 and st.errors == 1
    assert st.ttft_p50_s == pytest.approx(0.2) and st.tbt_p50_s == pytest.approx(0.03)
    assert st.decode_tps == pytest.approx((2 / 0.05 + 1 / 0.04) / 2)
    misses = stats.check_thresholds("general", st, {"ttft_p50_s": 0.05, "decode_tps_min": 100})
    assert "general: 1 of 3 requests failed" in misses
    assert "general: ttft_p50 0.200 s > budget 0.05 s" in misses
    assert any(m.startswith("general: decode 32.5 tokens/s < floor 100") for m in misses)
    assert stats.check_thresholds("g", stats.summarize([a]), {"ttft_p50_s": 1}) == []


def test_sse_parsing_with_usage_and_done():
    lines = [b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n', b"\n",
             b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n',
             b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n', b"data: [DONE]\n",
             b'data: {"choices":[{"delta":{"content":"never"}}]}\n']
    ticks = iter([1.0, 2.0, 3.0, 4.0])
    ev = list(stream.sse_events(lines, clock=lambda: next(ticks)))
    assert ev == [(1.0, "", None), (2.0, "Hi", None), (3.0, "", {"prompt_tokens": 5, "completion_tokens": 1})]
    with pytest.raises(RuntimeError, match="boom"):
        list(stream.sse_events([b'data: {"error":{"message":"boom"}}']))


@pytest.mark.parametrize("text, broken", [
    ("The capital of France is Paris.", False),
    ("", True),
    ("Paris \ufffd\ufffd", True),
    ("the the the the the the the the the the", True),
    ("Paris is nice. Paris is nice. Paris is nice. Paris is nice. Paris is nice.", True),
    ("def add(a, b):\n    return a + b", False),
])
def test_garbage_detector(text, broken):
    assert (coherence.garbage(text) is not None) == broken


def test_probes_check_answers():
    cap, add, code = coherence.PROBES
    assert cap.check("Paris.") and not cap.check("Lyon")
    assert add.check("5") and add.check("The answer is 5.") and not add.check("15")
    assert code.check("```python\ndef add(a, b):\n    return a + b\n```") and not code.check("def add(a, b) return")


def test_measured_prompts_are_distinct_and_can_be_relabelled():
    prompts = [smoke.measured_prompt(i) for i in range(8)]
    assert len(set(prompts)) == 8 and prompts[0] == f"Request 0. {smoke.QUESTIONS[0]}"
    # another client's copy: same question, other opening, so no shared cache prefix
    assert smoke.measured_prompt(5, label="F") == f"Request F. {smoke.QUESTIONS[1]}" != prompts[5]


def test_a_folded_host_reports_answers_but_no_figures():
    from llmhost import smoke_report

    st = stats.Stats(5, 0, 0.1, 0.2, 0.01, 0.02, 50.0, 1.0, 100, 320)
    r = smoke.ExpertResult("general", st, {"capital": {"ok": True, "answer": "Paris", "why": None}})
    rep = smoke_report.report([r], {"url": "u"}, figures=False)
    assert "not reported" in rep["figures"]
    assert not set(smoke_report.TIMING_FIELDS) & set(rep["experts"][0]) and rep["experts"][0]["requests"] == 5
    row = smoke_report.table([r], figures=False).splitlines()[1]
    assert "100" not in row and "50.0" not in row and "+" in row


def test_the_worker_pool_runs_every_job_once_in_order_and_reports_progress():
    seen = []
    jobs = [(f"m{i}", [{"role": "user", "content": str(i)}]) for i in range(7)]
    samples = stream.stream_pool("http://127.0.0.1:9", jobs, 4, None, workers=3, progress=seen.append)
    assert len(samples) == 7 and all(s.error for s in samples)   # nothing listens on port 9
    assert sorted(seen) == list(range(1, 8))


def test_the_probe_timers_files_are_its_whole_import_closure_and_stdlib_only():
    """The monitoring role ships probe_files() to the host, where only the stdlib exists."""
    import ast
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "collections/ansible_collections/llmhost/toolkit/plugins/filter/llmhost.py"
    spec = importlib.util.spec_from_file_location("llmhost_filter_plugin_probe", path)
    f = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(f)
    shipped = {Path(p).stem: Path(p) for p in f.probe_files()}
    for name, p in shipped.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                mods = [node.module] if node.module else [a.name for a in node.names]
                assert set(mods) <= set(shipped), f"{name}.py imports {mods}, not shipped"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                tops = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module.split(".")[0]]
                assert all(t in sys.stdlib_module_names or t == "__future__" for t in tops), f"{name}.py: {tops}"

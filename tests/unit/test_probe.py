"""The host's answer probe: never wakes a lazy expert, writes valid textfile metrics."""

import json
import shutil
import subprocess

import pytest

from llmhost import numerics, probe, reference


def coherence_ok(url, model, api_key):
    return {"capital": {"ok": True, "answer": "Paris", "why": None},
            "sum": {"ok": True, "answer": "5", "why": None}}


def ppl_ok(url, model, api_key):
    return {"english": 18.9, "spanish": 93.6, "code": 5.7}


def test_a_lazy_expert_that_is_not_loaded_is_not_touched():
    touched = []

    def fail(*a, **k):
        touched.append(a)
        raise AssertionError("must not send a request")

    r = probe.probe_expert({"expert_id": "gemma-3", "port": 8104, "backend_port": 18104, "preload": False},
                           is_listening=lambda port: touched.append(port) or False,
                           coherence=fail, references=fail)
    assert touched == [18104]   # only the backend port is looked at, never the socket's 8104
    assert not r.loaded and r.probes == {} and "not woken" in r.notes[0]


def test_a_loaded_expert_gets_coherence_and_reference_verdicts(tmp_path):
    ref = tmp_path / "r.json"
    ref.write_text(json.dumps(reference.make({n: "The answer" for n, _ in reference.PROMPTS},
                                             model="m", made_with="t")))

    def refs(url, model, path, why, api_key):
        assert url == "http://127.0.0.1:8101" and path == str(ref)
        return {"status": "failed", "why": "1 of 2", "results": [
            {"name": "japan", "ok": False, "expected": "The capital of Japan is Tokyo.",
             "answer": "Kyoto, la capitale", "why": "diverges from the reference at word 1", "compared_words": 6},
            {"name": "month", "ok": True, "expected": "January", "answer": "January", "why": None,
             "compared_words": 1},
            {"name": "france", "ok": True, "expected": "The capital", "answer": "L'Étoile", "why": "near-tie",
             "compared_words": 0}]}

    r = probe.probe_expert({"expert_id": "general", "port": 8101, "backend_port": 8101, "preload": True,
                            "reference": str(ref)}, is_listening=lambda p: True,
                           coherence=coherence_ok, references=refs, measure=ppl_ok)
    assert r.loaded and r.reference_available
    # the near-tie prompt is no probe at all
    assert r.probes == {"capital": True, "sum": True, "reference_japan": False, "reference_month": True,
                        "perplexity": True}
    assert any("Kyoto" in n and "Tokyo" in n for n in r.notes)


def test_no_reference_is_visible_not_a_pass():
    r = probe.probe_expert({"expert_id": "x", "port": 8101, "preload": True}, is_listening=lambda p: True,
                           coherence=coherence_ok, measure=ppl_ok)
    assert not r.reference_available and not any(k.startswith("reference_") for k in r.probes)
    text = probe.render([r], 1700000000.0, 1.5)
    assert 'llmhost_probe_reference_available{expert="x"} 0' in text


def test_render_is_valid_exposition_format_with_escaped_labels():
    rs = [probe.ExpertProbe("general", True, {"capital": True, "reference_france": False}, True),
          probe.ExpertProbe('we"ird', False)]
    text = probe.render(rs, 1700000000.25, 2.0)
    assert 'llmhost_probe_ok{expert="general",probe="reference_france"} 0' in text
    assert 'llmhost_probe_loaded{expert="we\\"ird"} 0' in text
    assert "llmhost_probe_last_run_timestamp_seconds 1700000000.250" in text
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: scripts/bootstrap installs Debian's prometheus")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_main_writes_the_textfile_atomically_and_reports_bad_config(tmp_path, capsys):
    cfg = tmp_path / "experts.json"
    cfg.write_text(json.dumps({"experts": [{"expert_id": "lazy", "port": 1, "backend_port": 1,
                                            "preload": False}]}))
    out = tmp_path / "llmhost_probe.prom"
    assert probe.main(["--config", str(cfg), "--textfile", str(out)]) == 0
    assert 'llmhost_probe_loaded{expert="lazy"} 0' in out.read_text()
    assert {p.name for p in tmp_path.iterdir()} == {"experts.json", "llmhost_probe.prom"}  # no .tmp left
    cfg.write_text("{not json")
    assert probe.main(["--config", str(cfg), "--textfile", str(out)]) == 2
    assert "cannot read the experts config" in capsys.readouterr().err


def test_perplexity_is_judged_against_the_hosts_baseline_and_exported():
    expert = {"expert_id": "coder", "port": 8102, "preload": True, "model": "/srv/m", "dtype": "float32",
              "quantization": "w8a8"}
    base = {"fingerprint": numerics.fingerprint(expert),
            "perplexity": {"english": 18.9, "spanish": 60.0, "code": 5.7}}
    r = probe.probe_expert(expert, is_listening=lambda p: True, coherence=coherence_ok, measure=ppl_ok,
                           baseline=base)
    assert r.probes["perplexity"] is False   # Spanish 93.6 against 60.0 at deploy: +56 %
    assert any("'spanish'" in n and "baseline" in n for n in r.notes)
    ok = probe.probe_expert(expert, is_listening=lambda p: True, coherence=coherence_ok, measure=ppl_ok,
                            baseline={**base, "perplexity": ppl_ok(None, None, None)})
    assert ok.probes["perplexity"] is True
    text = probe.render([r], 1700000000.0, 1.0)
    assert 'llmhost_probe_perplexity{expert="coder",passage="spanish"} 93.6' in text
    assert 'llmhost_probe_ok{expert="coder",probe="perplexity"} 0' in text


def test_an_expert_that_cannot_be_measured_gets_no_perplexity_verdict_but_a_note():
    def down(url, model, api_key):
        raise OSError("connection refused")

    r = probe.probe_expert({"expert_id": "x", "port": 8101, "preload": True}, is_listening=lambda p: True,
                           coherence=coherence_ok, measure=down)
    assert "perplexity" not in r.probes and any("not measured" in n for n in r.notes)


def test_the_lazy_wait_figures_are_merged_one_family_header_each(tmp_path):
    from llmhost.admit import Counters, metrics_text  # noqa: PLC0415
    from llmhost.probe import included  # noqa: PLC0415
    for eid, held in (("gemma-3", 2), ("aya-expanse", 1)):
        (tmp_path / f"{eid}.prom").write_text(metrics_text(eid, Counters(held=held), 0, held, 30.0))
    (tmp_path / f"{eid}.reason").write_text("expert_not_loaded\nnot a metrics file")
    text = included(str(tmp_path / "*.prom"))
    assert text.count("# TYPE llmhost_lazy_held_requests_total counter") == 1
    assert 'llmhost_lazy_held_requests_total{expert="gemma-3"} 2' in text
    assert 'llmhost_lazy_held_requests_total{expert="aya-expanse"} 1' in text
    assert included(str(tmp_path / "none-*/wait.prom")) == ""

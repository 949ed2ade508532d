"""The site's own templates (top-level templates/): the inventory that
`llmhost import-legacy --out` writes, and the smoke test's HTML page, rendered
in headless Chromium."""

import json
import re
import subprocess
from pathlib import Path

from llmhost import site_templates, smoke, smoke_report, stats, stream
from llmhost.cli import main

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests/fixtures/config.five_models_optimized_with_aya.json"


def uncomment_host_expect(inv: Path, host: str = "models-europe") -> None:
    """What the skeleton asks a person to do: fill in and uncomment the block."""
    f = inv / f"host_vars/{host}.yml"
    f.write_text(re.sub(r"^# (llmhost_host_expect:|  )", r"\1", f.read_text(), flags=re.M))


def test_import_legacy_out_writes_an_inventory_the_plan_reads(tmp_path, capsys):
    inv = tmp_path / "inv"
    assert main(["import-legacy", str(LEGACY), "--out", str(inv)]) == 0
    assert sorted(str(p.relative_to(inv)) for p in inv.rglob("*.yml")) == [
        "group_vars/llm_hosts/experts.yml", "group_vars/llm_hosts/frontdoor.yml", "host_vars/models-europe.yml",
        "hosts.yml"]
    for f in inv.rglob("*.yml"):
        assert f.read_text().startswith("---\n"), f
    assert "vault_frontdoor_api_keys" in (inv / "group_vars/llm_hosts/frontdoor.yml").read_text()
    capsys.readouterr()
    # as written: the host is unknown, so the plan is for this machine and says why it does not fit
    assert main(["plan", "-i", str(inv)]) == 1
    assert "models-europe: the plan does not work" in capsys.readouterr().err
    uncomment_host_expect(inv)
    assert main(["plan", "-i", str(inv), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [e["expert_id"] for e in plan["experts"]][0] == "phi4_fast"
    assert "bfloat16" in plan["experts"][0]["argv"]   # the dtype rules saw the Neoverse V2 flags


def test_import_legacy_out_never_overwrites(tmp_path, capsys):
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text("mine\n")
    assert main(["import-legacy", str(LEGACY), "--out", str(inv)]) == 1
    assert "exists and is not an empty folder; nothing overwritten" in capsys.readouterr().err
    assert [p.name for p in inv.iterdir()] == ["hosts.yml"] and (inv / "hosts.yml").read_text() == "mine\n"


def test_stdout_is_the_skeletons_experts_file(tmp_path, capsys):
    assert main(["import-legacy", str(LEGACY)]) == 0
    out = capsys.readouterr().out
    assert main(["import-legacy", str(LEGACY), "--out", str(tmp_path / "inv")]) == 0
    assert out == (tmp_path / "inv/group_vars/llm_hosts/experts.yml").read_text()


def results():
    st = stats.summarize([stream.Sample(0.12, [0.03, 0.04], 0.3, 3, 20, "Paris")])
    ok = smoke.ExpertResult("general", st, probes={"capital": {"ok": True}},
                            reference={"status": "passed", "results": [{"ok": True, "compared_words": 5}]})
    bad = smoke.ExpertResult("coder", st, probes={"capital": {"ok": False}},
                             misses=["coder: ttft_p50 0.120 s > budget 0.05 s <script>alert(1)</script>"],
                             reference={"status": "skipped", "why": "no reference file for this model"})
    return [ok, bad]


def page(tmp_path: Path) -> Path:
    res = results()
    rep = smoke_report.report(res, {"url": "http://127.0.0.1:8082", "time_utc": "2026-11-28T00:00:00Z", "repeat": 1})
    smoke_report.chart(res, str(tmp_path / "c.png"))
    out = tmp_path / "report.html"
    out.write_text(site_templates.report_page(rep, smoke_report.TABLE_HEADER, smoke_report.table_rows(res),
                                              (tmp_path / "c.png").read_bytes()))
    return out


def test_page_escapes_what_it_prints(tmp_path):
    html = page(tmp_path).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_page_renders_table_and_chart_in_headless_chromium(tmp_path):
    out = page(tmp_path)
    # --dump-dom prints the DOM after load: the chart's onload handler has run by then
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}",
                        "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    dom = r.stdout
    assert r.returncode == 0 and "<table" in dom, r.stderr[-2000:]
    assert re.search(r'id="verdict" class="FAIL">FAIL<', dom)
    rows = re.findall(r"<tr><td>(\w+)</td>.*?<td class=\"(PASS|FAIL)\">", dom)
    assert rows == [("general", "PASS"), ("coder", "FAIL")], rows
    assert re.search(r'id="chart"[^>]*data-loaded="1000x400"', dom), "the chart did not decode"
    assert "coder: reference probe skipped" in dom

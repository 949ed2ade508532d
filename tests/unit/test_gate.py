"""The rollout's regression gate: a smoke report against the host's baseline."""

import pytest

from llmhost.gate import compare


def rep(ttft=0.100, tbt=0.040, probe_ok=True, eid="general"):
    return {"experts": [{"expert_id": eid, "ttft_p50_s": ttft, "tbt_p95_s": tbt,
                         "probes": {"capital": {"ok": probe_ok, "why": None if probe_ok else "wrong answer"}}}]}


def test_no_baseline_passes_and_sets_it():
    g = compare(rep(), None)
    assert g.passed and g.set_baseline and "becomes the baseline" in g.lines[0]


def test_within_the_share_passes_and_shows_both_values():
    g = compare(rep(ttft=0.124, tbt=0.049), rep())
    assert g.passed and not g.set_baseline, g.lines
    assert g.lines == ["GATE ok general: TTFT p50 124 ms against baseline 100 ms (+24%)",
                       "GATE ok general: TBT p95 49 ms against baseline 40 ms (+23%)",
                       "GATE pass: no expert worse than its baseline by more than 25%"]


def test_worse_ttft_fails_naming_expert_figure_and_both_values():
    assert not compare(rep(ttft=0.160), rep()).passed
    g = compare(rep(ttft=0.160), rep())
    assert g.lines[0] == "GATE FAIL general: TTFT p50 160 ms against baseline 100 ms (+60%, limit +25% and +50 ms)"
    assert g.lines[1:] == ["GATE ok general: TBT p95 40 ms against baseline 40 ms (+0%)"]


def test_a_small_figure_must_also_be_worse_by_an_absolute_floor():
    # +40 % but only 40 ms: within a scheduler hiccup on a small model
    assert compare(rep(ttft=0.140), rep()).passed
    # TBT: +50 % and 20 ms (floor 10 ms) fails; +50 % of 10 ms (5 ms) does not
    assert not compare(rep(tbt=0.060), rep()).passed
    assert compare(rep(tbt=0.015), rep(tbt=0.010)).passed


def test_worse_tbt_fails_and_the_share_is_a_setting():
    assert not compare(rep(tbt=0.060), rep()).passed
    assert compare(rep(tbt=0.060), rep(), max_worse=0.6).passed


def test_a_probe_that_passed_in_the_baseline_and_fails_now_fails():
    g = compare(rep(probe_ok=False), rep())
    assert not g.passed and "coherence probe 'capital' passed in the baseline and fails now" in g.lines[0]
    # one that already failed in the baseline is the absolute check's business, not a regression
    assert compare(rep(probe_ok=False), rep(probe_ok=False)).passed


def test_folded_reports_without_figures_gate_answers_only():
    folded = {"experts": [{"expert_id": "general", "probes": {"capital": {"ok": True}}}]}
    assert compare(folded, rep()).passed


def test_a_new_expert_is_named_not_failed():
    g = compare(rep(eid="coder"), rep())
    assert g.passed and "GATE coder: no baseline for this expert" in g.lines[0]


@pytest.mark.parametrize("bad", [0, -0.1, 11])
def test_the_share_must_make_sense(bad):
    with pytest.raises(ValueError, match="max_worse"):
        compare(rep(), rep(), max_worse=bad)

"""Reference answers: comparison, file checks, and the smoke test's use of them."""

import json

import pytest

from llmhost import coherence, reference, smoke_report, stream


def test_same_first_words_pass_whatever_the_punctuation_and_case():
    v = reference.compare("france", "The capital of France is Paris.", "the capital of France is Paris, a city")
    assert v.ok and v.why is None


def test_the_garbled_bf16_answer_fails_at_the_first_word():
    v = reference.compare("france", "The capital of France is Paris.",
                          "L'Étoile, la Marseillaise, la femme, la femme, la femme,")
    assert not v.ok and v.why == "diverges from the reference at word 1"


def test_a_late_divergence_beyond_the_compared_words_passes():
    ref = "The largest planet in our solar system is Jupiter, the fifth planet from the Sun."
    assert reference.compare("p", ref, "The largest planet in our solar system is Jupiter, the biggest").ok is True
    assert not reference.compare("p", ref, "The largest moon in our solar system").ok


def test_only_the_decisive_start_is_compared():
    # France, measured: "The" beat "L" by 0.10 nats; bf16 took "L". Not a check.
    v = reference.compare("france", "The capital of France is Paris.",
                          "L'Étoile, la Marseillaise, la femme", decisive_words=0)
    assert v.ok and v.compared_words == 0 and "near-tie" in v.why
    v = reference.compare("ocean", "The largest ocean on Earth is the Pacific Ocean, which",
                          "The largest ocean on Earth is the Pacific Ocean. It", decisive_words=9)
    assert v.ok and v.compared_words == 9
    assert not reference.compare("ocean", "The largest ocean on Earth is the Pacific Ocean",
                                 "The largest ocean on Earth is the Atlantic", decisive_words=9).ok


def test_decisive_words_stop_before_the_first_near_tie():
    toks = ["The", " capital", " of", " France", " is", " Paris", "."]
    assert reference.decisive_words(toks, [0.1, 3, 3, 3, 3, 3, 3]) == 0
    assert reference.decisive_words(toks, [3, 3, 3, 3, 0.5, 3, 3]) == 4
    assert reference.decisive_words(toks, [3] * 7) == 6
    # a near-tie inside a word leaves that word undecided
    assert reference.decisive_words(["The", " Pac", "ific"], [3, 3, 0.2]) == 1


def test_a_short_answer_must_still_match_fully():
    assert not reference.compare("w", "H2O.", "").ok
    assert not reference.compare("w", "H2O is water", "H2O").ok
    assert reference.compare("w", "H2O", "H2O, two hydrogens").ok


def test_load_rejects_what_is_not_a_reference(tmp_path):
    p = tmp_path / "r.json"
    for content, msg in (("{", "not a readable JSON"), ("[]", "not an llmhost reference"),
                         (json.dumps({"format": 1, "prompts": [{"name": "a"}]}), "prompt #1")):
        p.write_text(content)
        with pytest.raises(reference.ReferenceError, match=msg):
            reference.load(p)
    with pytest.raises(reference.ReferenceError, match="no such reference file"):
        reference.load(tmp_path / "missing.json")


def test_make_roundtrips_through_load(tmp_path):
    answers = {n: f"answer {n}" for n, _ in reference.PROMPTS}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(reference.make(answers, model="m", made_with="test")))
    data = reference.load(p)
    assert [x["name"] for x in data["prompts"]] == [n for n, _ in reference.PROMPTS]


def fake_stream(answers):
    def stream_chat(base_url, model, messages, max_tokens, api_key=None, **kw):
        return stream.Sample(0.1, [0.01], 0.2, 5, 10, answers[messages[-1]["content"]])
    return stream_chat


def test_reference_probes_quote_both_answers_and_name_the_expert(tmp_path, monkeypatch):
    ref = {n: f"Right answer to {n} here" for n, _ in reference.PROMPTS}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(reference.make(ref, model="m", made_with="t")))
    served = {prompt: ref[n] for n, prompt in reference.PROMPTS}
    served["What is the capital of Japan?"] = "Kyoto, la capitale"
    monkeypatch.setattr(coherence, "stream_chat", fake_stream(served))
    rep = coherence.reference_probes("http://x", "general", str(p), "", None)
    assert rep["status"] == "failed" and sum(not r["ok"] for r in rep["results"]) == 1
    (line,) = coherence.reference_misses("general", rep)
    assert line.startswith("general: reference probe 'japan' diverges")
    assert "Right answer to japan" in line and "Kyoto" in line
    assert smoke_report.reference_cell(rep) == f"{len(ref) - 1}/{len(ref)} DIFF"


def test_missing_reference_is_skipped_loudly_never_passed():
    path, why = coherence.reference_file({"expert_id": "x", "reference_why": "no reference answers for this model"})
    rep = coherence.reference_probes("http://x", "x", path, why, None)
    assert rep == {"status": "skipped", "why": "no reference answers for this model"}
    assert smoke_report.reference_cell(rep) == "skipped" and coherence.reference_misses("x", rep) == []
    path, why = coherence.reference_file({"reference": "/nonexistent/r.json"})
    assert path is None and "not found here" in why

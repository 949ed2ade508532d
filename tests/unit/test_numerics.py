"""The numerics check's judgement and plumbing (llmhost.numerics, smoke, smoke_report)."""

import math

import pytest

from llmhost import numerics, smoke, smoke_report
from llmhost.stats import Stats as _Stats


def Stats(**k):  # noqa: N802 - the report's figures, none measured unless given
    base = dict(requests=0, errors=0, ttft_p50_s=None, ttft_p95_s=None, tbt_p50_s=None, tbt_p95_s=None,
                decode_tps=None, e2e_p50_s=None, prompt_tokens=0, output_tokens=0)
    return _Stats(**{**base, **k})

REF = {"english": 18.87, "spanish": 93.57, "code": 5.66}
FP = {"model": "/srv/models/m", "dtype": "float32", "quantization": None}


def scaled(base, **factors):
    return {k: v * factors.get(k, 1.0) for k, v in base.items()}


def test_healthy_figures_pass_every_judgement():
    assert numerics.judge(REF) == []
    assert numerics.judge(scaled(REF, english=1.02), reference=REF,
                          baseline={"fingerprint": FP, "perplexity": REF}, fp=FP) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0, 1e6])
def test_a_broken_first_deploy_fails_absolutely(bad):
    misses = numerics.judge({**REF, "code": bad})
    assert len(misses) == 1 and "'code'" in misses[0]


def test_against_the_float32_reference_the_loose_bound():
    assert numerics.judge(scaled(REF, english=1.21, spanish=1.13, code=1.08), reference=REF) == []  # W8A8 on AVX2
    misses = numerics.judge(scaled(REF, english=1.35, spanish=1.36, code=1.69), reference=REF)   # damaged weight
    assert any("'code'" in m for m in misses) and any("geometric mean" in m for m in misses)


def test_the_same_deploy_is_held_to_the_strict_bound_another_format_to_the_loose_one():
    base = {"fingerprint": FP, "perplexity": REF}
    drift = scaled(REF, spanish=1.20)
    assert any("'spanish'" in m and "baseline" in m for m in numerics.judge(drift, baseline=base, fp=FP))
    as_w8a8 = {**FP, "quantization": "w8a8"}
    assert numerics.judge(drift, baseline=base, fp=as_w8a8) == []
    assert numerics.judge(scaled(REF, spanish=1.6), baseline=base, fp=as_w8a8)
    # another model: nothing to compare with but the absolute bound
    assert numerics.judge(scaled(REF, spanish=3.0), baseline=base, fp={**FP, "model": "/other"}) == []


def test_prompt_logprobs_are_read_from_vllms_answer():
    r = {"choices": [{"prompt_logprobs": [None, {"12": {"logprob": -1.0, "rank": 3}},
                                          {"7": {"logprob": -3.0, "rank": 1}}]}]}
    lp = numerics.prompt_logprobs(r)
    assert lp == [-1.0, -3.0] and numerics.perplexity(lp) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="exactly the prompt token"):
        numerics.prompt_logprobs({"choices": [{"prompt_logprobs": [None, {"1": {"logprob": -1}, "2": {"logprob": -2}}]}]})
    with pytest.raises(ValueError, match="no prompt_logprobs"):
        numerics.prompt_logprobs({"choices": [{"text": "x"}]})


def test_measure_asks_each_passage_once_with_prompt_logprobs_0():
    seen = []

    def post(url, body, api_key):
        seen.append((url, body["prompt"][:10], body["prompt_logprobs"], body["max_tokens"], api_key))
        return {"choices": [{"prompt_logprobs": [None, {"1": {"logprob": -math.log(4.0)}}]}]}

    got = numerics.measure("http://h:8082/", "coder", "k", post=post)
    assert got == {n: pytest.approx(4.0) for n in numerics.PASSAGES}
    assert [s[0] for s in seen] == ["http://h:8082/v1/completions"] * 3 and {s[2:] for s in seen} == {(0, 1, "k")}


def result(eid, ppl, misses=(), fp=FP):
    r = smoke.ExpertResult(eid, Stats())
    r.numerics = {"perplexity": ppl, "fingerprint": fp, "misses": list(misses)}
    return r


def test_the_baseline_is_recorded_once_and_again_only_when_the_expert_changed():
    first = smoke.updated_baseline({}, [result("a", REF), result("b", {}), result("c", REF, ["x"])])
    assert set(first) == {"a"}   # not measured, or missed: nothing recorded
    again = smoke.updated_baseline(first, [result("a", scaled(REF, english=1.05))])
    assert again == first        # same model, dtype and format: the deploy's figures stay
    changed = smoke.updated_baseline(first, [result("a", scaled(REF, english=1.05), fp={**FP, "dtype": "bfloat16"})])
    assert changed["a"]["fingerprint"]["dtype"] == "bfloat16"


def test_numerics_check_turns_a_failed_request_into_a_miss():
    def down(url, model, key):
        raise OSError("connection refused")

    got = smoke.numerics_check("http://h", {"expert_id": "a"}, None, None, None, measure=down)
    assert got["misses"] and "not measured" in got["misses"][0]


def test_predicted_against_measured_uses_the_measured_profile():
    r = smoke.ExpertResult("general", Stats(decode_tps=20.2, ttft_p50_s=0.247))
    expert = {"expert_id": "general", "cores": [0], "dtype": "float32", "quantization": None,
              "shape": {"linear_params": 106168320, "head_params": 28311552, "kv_elems_per_token": 11520,
                        "source": "config.json"}}
    prof = {"read_gbps": {"1": 24.0, "2": 37.9}, "matmul_gflops": {"float32": 78.2}, "source": "measured here"}
    sec = smoke_report.performance([r], [expert], prof)
    (row,) = sec["experts"]
    assert sec["profile"] == "measured here" and row["cores"] == 1
    assert row["decode_error"] == pytest.approx(20.2 / row["decode_tps_predicted"] - 1, abs=1e-3)
    assert "predicted" in smoke_report.performance_table(sec)
    # no profile and no prediction in the plan: nothing to show
    assert smoke_report.performance([r], [{**expert, "predicted": None}], None)["experts"] == []


def test_an_unusable_host_profile_costs_the_comparison_not_the_smoke_test():
    r = smoke.ExpertResult("general", Stats(decode_tps=20.0))
    sec = smoke_report.performance([r], [{"expert_id": "general"}], {"experts": []})   # another file passed
    assert sec["experts"] == [] and "unusable" in sec["profile"]


def test_a_quantized_copy_is_judged_against_its_float_models_baseline():
    assert numerics.model_family("/home/elect/models/phi-4-mini-w4a8") == numerics.model_family("/m/phi-4-mini")
    before = {"fingerprint": numerics.fingerprint({"model": "/m/phi-4-mini", "dtype": "bfloat16"}),
              "perplexity": REF}
    now = numerics.fingerprint({"model": "/m/phi-4-mini-w4a8", "dtype": "bfloat16", "quantization": "w4a8"})
    assert numerics.judge(scaled(REF, english=2.4), baseline=before, fp=now)   # int4 damage: caught
    assert numerics.judge(scaled(REF, english=1.05), baseline=before, fp=now) == []


def test_a_model_that_puts_minus_infinity_on_the_prompt_is_infinitely_perplexed_not_a_crash():
    assert numerics.perplexity([-9999.0] * 5) == math.inf   # vLLM clamps -inf to -9999
    assert numerics.judge({"english": math.inf})
    assert numerics.judge(REF, baseline={"fingerprint": FP, "perplexity": REF, "x": 1}, fp=FP) == []
    assert numerics.judge(REF, baseline="damaged", fp=FP) == []   # a damaged entry: absolute bound only

"""The capabilities probe's cache: reused only while everything it depends on holds."""

import json

from llmhost.capabilities import cache_key, cached_vllm_probe

CPU = {"arch": "x86_64", "model": "Xeon", "flags": ["avx2", "avx512f"]}
VERSIONS = {"vllm": "0.32.0+cpu", "torch": "2.13.0+cpu", "python": "/opt/vllm/venv/bin/python3.11"}


def probe_counting(calls):
    def probe():
        calls.append(1)
        return {"vllm_version": "0.32.0", "flags": ["--dtype"]}
    return probe


def test_a_second_probe_with_the_same_key_is_read_from_the_cache(tmp_path):
    cache, calls = str(tmp_path / "caps.json"), []
    key = cache_key(CPU, VERSIONS, b"probe code")
    first, hit1 = cached_vllm_probe(cache, key, probe_counting(calls))
    second, hit2 = cached_vllm_probe(cache, key, probe_counting(calls))
    assert (hit1, hit2) == (False, True) and first == second and len(calls) == 1


def test_any_change_it_depends_on_probes_again(tmp_path):
    cache, calls = str(tmp_path / "caps.json"), []
    base = cache_key(CPU, VERSIONS, b"probe code")
    cached_vllm_probe(cache, base, probe_counting(calls))
    changed = [cache_key(CPU, {**VERSIONS, "vllm": "0.33.0+cpu"}, b"probe code"),
               cache_key(CPU, {**VERSIONS, "torch": "2.14.0+cpu"}, b"probe code"),
               cache_key({**CPU, "flags": ["avx2"]}, VERSIONS, b"probe code"),     # another machine type
               cache_key(CPU, VERSIONS, b"new probe code")]
    assert len(set(changed + [base])) == 5
    for key in changed:
        _, hit = cached_vllm_probe(cache, key, probe_counting(calls))
        assert not hit
    assert len(calls) == 5


def test_a_broken_or_foreign_cache_file_is_probed_over(tmp_path):
    cache, calls = tmp_path / "caps.json", []
    key = cache_key(CPU, VERSIONS, b"x")
    for text in ("not json", json.dumps([1, 2]), json.dumps({"key": key, "vllm": "not a dict"})):
        cache.write_text(text)
        _, hit = cached_vllm_probe(str(cache), key, probe_counting(calls))
        assert not hit
    assert json.loads(cache.read_text())["key"] == key and len(calls) == 3


def test_an_unwritable_cache_still_gives_the_probe(tmp_path):
    (tmp_path / "a-file").write_text("")    # its "folder" is a file: no write succeeds, even as root
    calls = []
    part, hit = cached_vllm_probe(str(tmp_path / "a-file" / "caps.json"), "k", probe_counting(calls))
    assert part["vllm_version"] == "0.32.0" and not hit and len(calls) == 1

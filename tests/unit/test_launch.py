"""The experts' start: vLLM's get_mp_context answers `fork` for the pinned release only."""

import multiprocessing
import sys
import types

import pytest

from llmhost import launch


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = []

    def get_mp_context():
        calls.append("vllm's own checks")
        return multiprocessing.get_context("spawn")

    su = types.ModuleType("vllm.utils.system_utils")
    su.get_mp_context = get_mp_context
    bound = types.ModuleType("vllm.v1.engine.utils")      # a module that imported the name before
    bound.get_mp_context = get_mp_context
    for name, mod in (("vllm", types.ModuleType("vllm")), ("vllm.utils", types.ModuleType("vllm.utils")),
                      ("vllm.utils.system_utils", su), ("vllm.v1.engine.utils", bound)):
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules["vllm"].utils = sys.modules["vllm.utils"]
    sys.modules["vllm.utils"].system_utils = su
    return su, bound, calls


def test_a_forked_child_says_what_it_inherited(capsys):
    launch.said_in_child()
    err = capsys.readouterr().err
    assert "llmhost vllm-start: pid" in err and "vLLM modules already imported" in err


def test_fork_for_the_pinned_release_keeps_vllms_own_checks(fake_vllm, monkeypatch):
    monkeypatch.setattr(launch.os, "register_at_fork", lambda **kw: None)
    su, bound, calls = fake_vllm
    said = launch.patch("fork", launch.PINNED[0])
    assert "engine core and worker forked from the API server" in said
    assert su.get_mp_context().get_start_method() == "fork" and calls == ["vllm's own checks"]
    assert bound.get_mp_context is su.get_mp_context


@pytest.mark.parametrize("method,version,why", [
    ("spawn", "0.32.0", "plain start (LLMHOST_VLLM_START=spawn)"),
    ("", "0.32.0", "plain start (LLMHOST_VLLM_START=unset)"),
    ("fork", "0.33.0", "plain start: vLLM 0.33.0 is not the release the fork start was made for"),
    ("fork", None, "plain start: vLLM None is not the release"),
])
def test_anything_else_is_the_plain_start(fake_vllm, method, version, why):
    su, _, _ = fake_vllm
    before = su.get_mp_context
    assert why in launch.patch(method, version)
    assert su.get_mp_context is before


def test_a_release_without_the_function_is_the_plain_start(fake_vllm):
    su, _, _ = fake_vllm
    del su.get_mp_context
    assert "get_mp_context is missing" in launch.patch("fork", launch.PINNED[0])


def test_the_pinned_release_is_the_toolkits():
    # a new pinned vLLM must be checked (the function and where it is) before the fork start applies to it
    from llmhost.cli import DEFAULT_VLLM_VERSION  # noqa: PLC0415
    assert DEFAULT_VLLM_VERSION in launch.PINNED

from llmhost.install import torch_source, torch_wheel_matches

SPEC = "torch==2.13.0+cpu"
ARM_WHL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl"
X86_WHL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"


def test_wheel_names():
    assert torch_wheel_matches(ARM_WHL, "2.13.0+cpu", "aarch64")
    assert not torch_wheel_matches(X86_WHL, "2.13.0+cpu", "aarch64")
    assert not torch_wheel_matches("torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", "2.13.0+cpu", "aarch64")
    assert torch_wheel_matches("../../whl/cpu/" + ARM_WHL + "#sha256=ab", "2.13.0+cpu", "aarch64")


def test_aarch64_with_only_pypi_refuses_before_downloading():
    r = torch_source("aarch64", SPEC, {"/opt/wheels": [X86_WHL]}, {"https://pypi.org/simple": "<a>torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl</a>"})
    assert not r["ok"] and "CUDA build" in r["reason"] and "Nothing was downloaded" in r["reason"]
    assert "download.pytorch.org/whl/cpu" in r["reason"]


def test_aarch64_with_the_cpu_index_or_a_wheelhouse():
    idx = {"https://download.pytorch.org/whl/cpu": f'<a href="/whl/cpu/{ARM_WHL}#sha256=1">{ARM_WHL}</a>'}
    assert torch_source("aarch64", SPEC, {}, idx) == {"ok": True, "source": "index https://download.pytorch.org/whl/cpu", "reason": ""}
    assert torch_source("aarch64", SPEC, {"/w": [ARM_WHL]}, {})["source"] == "wheelhouse /w"
    assert not torch_source("aarch64", SPEC, {}, {"https://download.pytorch.org/whl/cpu": None})["ok"]


def test_x86_wheelhouse_and_unpinned_spec():
    assert torch_source("x86_64", SPEC, {"/opt/wheels": [X86_WHL]}, {})["ok"]
    assert "not a pinned +cpu" in torch_source("x86_64", "torch", {}, {})["reason"]

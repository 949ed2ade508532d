"""Where the install stage takes torch from, per architecture.

vLLM's CPU wheels pin a `+cpu` torch. On aarch64, PyPI's torch is a CUDA build
(2.87 GB with its nvidia dependencies) that vLLM's CPU extension cannot load
(`undefined symbol: sbgemm_`), and `+cpu` builds live only on the PyTorch CPU
index. So on aarch64 the install needs that index or a wheelhouse holding a
`+cpu` aarch64 torch, and must stop, before downloading anything, when neither
is reachable. Pure functions; the vllm_install role gathers the listings.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence


def torch_wheel_matches(name: str, version: str, arch: str) -> bool:
    """torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_aarch64.whl and the like."""
    base = version.split("+")[0]
    pat = rf"^torch-{re.escape(base)}\+cpu-.*(_|-){re.escape(arch)}\.whl$"
    return re.match(pat, name.split("#")[0].split("/")[-1]) is not None


def torch_source(arch: str, torch_spec: str, find_links: Mapping[str, Sequence[str]],
                 indexes: Mapping[str, str | None]) -> dict:
    """Decide, or refuse with the reason.

    find_links: directory -> wheel file names found there;
    indexes: index URL -> the text of <index>/torch/ (None when unreachable).
    """
    version = torch_spec.split("==", 1)[1] if "==" in torch_spec else ""
    if "+cpu" not in version:
        return {"ok": False, "reason": f"vllm_install_torch_spec {torch_spec!r} is not a pinned +cpu build; "
                                       "vLLM's CPU wheels need torch==X+cpu"}
    for d, names in find_links.items():
        if any(torch_wheel_matches(n, version, arch) for n in names):
            return {"ok": True, "source": f"wheelhouse {d}", "reason": ""}
    for url, listing in indexes.items():
        if listing and any(torch_wheel_matches(m, version, arch)
                           for m in re.findall(r"torch-[^\"<>\s]+\.whl", listing)):
            return {"ok": True, "source": f"index {url}", "reason": ""}
    tried = [f"find-links {d}" for d in find_links] + [
        f"index {u} ({'unreachable' if t is None else 'no ' + version + ' for ' + arch})" for u, t in indexes.items()]
    if arch == "x86_64" and not tried:
        tried = ["nothing configured"]
    return {"ok": False, "source": "", "reason": (
        f"no source of torch {version} for {arch} is reachable (tried: {', '.join(tried) or 'nothing configured'}). "
        + ("PyPI's aarch64 torch is a CUDA build (2.87 GB) that vLLM's CPU extension cannot load "
           "(undefined symbol: sbgemm_); set vllm_install_extra_index_urls to the PyTorch CPU index "
           "(https://download.pytorch.org/whl/cpu) or vllm_install_find_links to a wheelhouse with a +cpu "
           "aarch64 torch. Nothing was downloaded." if arch == "aarch64" else
           "Set vllm_install_find_links or vllm_install_extra_index_urls to where torch+cpu lives."))}

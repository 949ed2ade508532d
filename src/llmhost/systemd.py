"""Render argv and environment safely for systemd unit files."""

from __future__ import annotations

import re
from typing import Iterable, Mapping

_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_arg(arg: object) -> str:
    """One word of ExecStart=: specifiers (%) and variables ($) escaped, quoted when needed."""
    s = str(arg).replace("%", "%%").replace("$", "$$")
    if s and _PLAIN.match(s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: Iterable[object]) -> str:
    return " ".join(quote_arg(a) for a in argv)


def env_file(env: Mapping[str, object]) -> str:
    """Lines for EnvironmentFile=, sorted, values double-quoted."""
    lines = []
    for k in sorted(env):
        if not _ENV_NAME.match(k):
            raise ValueError(f"not an environment variable name: {k!r}")
        v = str(env[k]).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{k}="{v}"')
    return "\n".join(lines) + ("\n" if lines else "")


def preload_env(found: Iterable[str], *, tcmalloc: bool, iomp: bool, arch: str) -> dict[str, str]:
    """LD_PRELOAD for an expert unit from the libraries found on the host.

    tcmalloc when the profile wants it; Intel's libiomp5 (shipped in the x86 torch
    wheel) only on x86_64 and only when asked: on aarch64 torch uses GNU OpenMP.
    Empty when nothing applies, so the unit carries no LD_PRELOAD at all.
    """
    if not tcmalloc:
        return {}
    libs = [p for p in found if "tcmalloc" in p or (iomp and arch == "x86_64" and "iomp" in p)]
    return {"LD_PRELOAD": ":".join(libs)} if libs else {}

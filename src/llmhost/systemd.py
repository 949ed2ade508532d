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

"""Raw HTTP/1.1 for the front door's edge tests: bytes sent as they are (a malformed
request line, two Authorization headers, a body in slow parts), the answer read whole.
Shared by the site scenario's live tests and the unit tests against a local HAProxy
(tests/unit/test_frontdoor_render.py puts this folder on sys.path, as the scenarios'
conftest does)."""

from __future__ import annotations

import socket
import time


def raw(host: str, port: int, data: bytes, wait: float = 60.0, parts: list[bytes] | None = None,
        pause: float = 0.0) -> tuple[bytes, float]:
    """Send bytes (or `parts`, `pause` s apart) on a new connection; the whole answer
    (until close or `wait`) and the seconds it took."""
    s = socket.create_connection((host, port), timeout=wait)
    t0 = time.monotonic()
    for part in parts or [data]:
        s.sendall(part)
        time.sleep(pause)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    s.close()
    return out, time.monotonic() - t0


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body); status 0 when the answer is not HTTP."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    return status, {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:] if ": " in ln)}, body


def haproxy_cli(host, path: str, command: str) -> str:
    """One command on one of HAProxy's unix CLI sockets on a test host (testinfra `host`;
    the hosts have no socat)."""
    import shlex

    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1]); "
            "s.sendall(sys.argv[2].encode() + bytes([10])); s.shutdown(socket.SHUT_WR); "
            "print(s.makefile('rb').read().decode())")
    return host.check_output(f"python3 -c {shlex.quote(code)} {path} {shlex.quote(command)}")

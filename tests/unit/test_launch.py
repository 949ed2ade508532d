"""The experts' start: vLLM's get_mp_context answers `fork` for the pinned release only."""

import multiprocessing
from pathlib import Path
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


FAKE_SERVER = '''
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.getpid()} {os.getppid()} {'already' if 'llmhost_fake_marker' in sys.modules else 'fresh'}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
if __name__ == "__main__":    # as vLLM's api_server: importing it serves nothing
    port = int(sys.argv[sys.argv.index("--port") + 1])
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def _free_port():
    import socket  # noqa: PLC0415
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, timeout=10.0):
    import time  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def start_standby(tmp_path, once=False):
    """A real standby subprocess over the stand-in server: (process, its socket, the server's port, env)."""
    import subprocess  # noqa: PLC0415
    (tmp_path / "fake_server.py").write_text(FAKE_SERVER)
    (tmp_path / "llmhost_fake_marker.py").write_text("")
    sock, port = str(tmp_path / "standby.sock"), _free_port()
    env = {"PYTHONPATH": f"{tmp_path}:{Path(launch.__file__).parent.parent}", "PATH": "/usr/bin:/bin"}
    standby = subprocess.Popen(
        [sys.executable, "-c", "import llmhost_fake_marker, sys; from llmhost import launch; "
         f"sys.exit(launch.standby({sock!r}, ['--port', '{port}'], module='fake_server', grace_s=3, once={once}))"],
        env=env, stderr=subprocess.PIPE, text=True)
    return standby, sock, port, env


def test_a_standby_forks_a_server_per_handle_and_the_handle_stops_it(tmp_path):
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    standby, sock, port, env = start_standby(tmp_path)
    try:
        handles = []
        for _ in range(2):          # the standby outlives each server and forks the next
            h = subprocess.Popen([sys.executable, "-m", "llmhost.launch", "--handle", sock], env=env,
                                 stderr=subprocess.PIPE, text=True)
            pid, parent, imports = _get(port).split()
            assert int(parent) == standby.pid and imports == "already"   # forked, with the standby's imports
            h.send_signal(signal.SIGTERM)
            assert h.wait(10) == 0
            handles.append(h.stderr.read())
            with pytest.raises(OSError):
                _get(port, timeout=0.5)                                  # the server went with its handle
        assert "server pid" in handles[0] and "forked by the standby, vLLM already imported" in handles[0]
        assert standby.poll() is None
    finally:
        standby.kill()
        standby.wait()
    err = standby.stderr.read()
    assert "standby: fake_server imported" in err and err.count("forked for a start") == 2


def test_a_handle_without_a_standby_fails_in_one_line(tmp_path, capsys):
    assert launch.handle(str(tmp_path / "none.sock"), wait_s=0.3) == 1
    assert "handle: no standby on" in capsys.readouterr().err


def test_a_stop_sent_right_behind_the_start_is_not_lost(tmp_path):
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415
    standby, sock, _, _ = start_standby(tmp_path, once=True)
    try:
        c = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + 10
        while True:
            try:
                c.connect(sock)
                break
            except OSError:
                assert time.monotonic() < end
                time.sleep(0.05)
        c.sendall(b'{"cmd": "start"}\n{"cmd": "stop"}\n')
        replies = c.makefile("rb").read().decode()
        assert '"pid"' in replies and '"exit"' in replies
        assert standby.wait(5) is not None          # once=True: it ended after that server
    finally:
        standby.kill()
        standby.wait()

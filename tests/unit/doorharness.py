"""The front door's test harness: render it with the role's own tasks, check it with the real
`haproxy -c`, run it against stand-in experts. Shared by the front door and fleet door tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

from llmhost.cli import saved_capabilities
from llmhost.plan import GIB, Host, build_plan

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "molecule" / "shared"))
import rawhttp  # noqa: E402  (raw HTTP shared with the site scenario's live edge tests)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "sk-door-test"


def plan_dict(lazy=None, default=None):
    experts = [
        {"expert_id": "general", "model": "/srv/models/a", "domain": "general", "priority": 5,
         "weights_gib": 0.3, "kv_cache_gib": 1, "aliases": ["SmolLM2-135M-Instruct"]},
        {"expert_id": "coder", "model": "/srv/models/b", "domain": "coding", "priority": 3,
         "weights_gib": 0.3, "kv_cache_gib": 1},
    ]
    p = build_plan(experts, lazy, saved_capabilities(), Host((0, 1), 24 * GIB, "x86_64", {"bf16": True}),
                   default_expert=default)
    d = p.to_dict()
    d["memory_budget_bytes"] = int(p.budget_gib * GIB)
    return d


def render(tmp_path, **extra):
    out = tmp_path / "haproxy"
    ev = {"frontdoor_plan": plan_dict(extra.pop("lazy", None), extra.pop("default", None)), "__frontdoor_dir": str(out),
          "__frontdoor_errors_dir": str(out / "errors"), "ansible_python_interpreter": sys.executable, **extra}
    evf = tmp_path / "ev.json"
    evf.write_text(json.dumps(ev))
    r = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "tests/render/render-frontdoor.yml",
                        "-e", f"@{evf}"], cwd=ROOT, capture_output=True, text=True, check=False,
                       env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return out


def haproxy_check(cfg):
    return subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw(port, data, wait=5.0, parts=None, pause=0.0):
    """rawhttp.raw against the local HAProxy."""
    return rawhttp.raw("127.0.0.1", port, data, wait, parts, pause)


def post(body, path="/v1/chat/completions", auth=f"Authorization: Bearer {KEY}\r\n", extra=""):
    b = body if isinstance(body, bytes) else body.encode()
    return (f"POST {path} HTTP/1.1\r\nHost: door\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\nConnection: close\r\n{extra}\r\n").encode() + b


class Expert(__import__("http.server").server.BaseHTTPRequestHandler):
    """A stand-in expert: answers its name as {"model": ...}, after `delay` seconds for a body
    that asks {"sleep": s}."""

    def do_POST(self):  # noqa: N802
        import time

        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            time.sleep(float(json.loads(data).get("sleep", 0)))
        except (ValueError, AttributeError, TypeError):
            pass
        asked = json.loads(data) if data.startswith(b"{") else {}
        if asked.get("stream"):
            body = b'data: {"choices": []}\n\ndata: [DONE]\n\n'
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        answer = {"model": self.server.name}
        if "usage" in asked:  # what vLLM reports: {"prompt_tokens": p, "completion_tokens": c}
            answer["usage"] = asked["usage"]
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815  (health checks)

    def log_message(self, *a):
        pass


def start_door(tmp, ports, experts, serve, ready, label="", **render_kw):
    """Render the front door for these experts, start the stand-in experts named in `serve`
    (each answers its `label` and name) and HAProxy (logging to a file), wait until
    `ready(port)` holds; returns (info with the plan, stop)."""
    import http.server
    import threading
    import time
    import urllib.request

    from llmhost.plan import parse_shared

    p = build_plan(experts, None, saved_capabilities(), Host(tuple(range(8)), 24 * GIB, "x86_64", {"bf16": True}),
                   shared=parse_shared({"frontdoor_port": ports["door"], "frontdoor_metrics_port": ports["metrics"]}))
    out = render(tmp, frontdoor_plan=p.to_dict(), frontdoor_bind="127.0.0.1", **render_kw)
    cfg = (out / "haproxy.cfg").read_text()
    cfg = cfg.replace("stats socket /run/haproxy/admin.sock", f"stats socket {tmp}/admin.sock") \
        .replace("    user haproxy\n    group haproxy\n", "").replace("log /dev/log", "log stdout")
    (out / "haproxy.cfg").write_text(cfg)
    assert haproxy_check(out / "haproxy.cfg").returncode == 0
    servers = []
    for name in serve:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", ports[name]), Expert)
        srv.name = label + name
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    log = tmp / "haproxy.log"
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(out / "haproxy.cfg")], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['door']}/health", timeout=1)
            if ready(ports["door"]):
                break
        except OSError:
            pass
        time.sleep(0.1)

    def stop():
        proc.terminate()
        proc.wait(5)
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    return {"port": ports["door"], "metrics": ports["metrics"], "log": log, "cfg": cfg, "dir": out,
            "plan": p.to_dict()}, stop


def expert(expert_id, port, **kw):
    return {"expert_id": expert_id, "model": f"/srv/models/{expert_id}", "domain": kw.pop("domain", "general"),
            "priority": kw.pop("priority", 5), "weights_gib": 0.3, "kv_cache_gib": 1, "cores": kw.pop("cores", 1),
            "port": port, **kw}

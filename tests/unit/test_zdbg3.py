import sys, time, json, subprocess, urllib.request
sys.path.insert(0, "tests/unit")
import test_routing as tr

def test_real(tmp_path_factory):
    real = tr.free_port
    calls = {"n": 0}
    def fp():
        calls["n"] += 1
        return {3: 8191, 5: 8190}.get(calls["n"]) or real()
    tr.free_port = fp
    r = tr.rendered.__wrapped__(tmp_path_factory)
    tr.free_port = real
    ports, d, out = r["ports"], r["plan"], r["out"]
    req = urllib.request.Request("http://127.0.0.1:8190/v1/embeddings", data=json.dumps(tr.routing.embed_request(d["routing"])).encode(), headers={"content-type": "application/json"})
    cents = tr.routing.centroids_file(d["routing"], json.load(urllib.request.urlopen(req)))
    open(d["routing"]["centroids_file"], "w").write(json.dumps(cents))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(out / "haproxy.cfg")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    url = f"http://127.0.0.1:{ports['door']}/v1/chat/completions"
    for m in ["general", "auto", "general", "auto", "auto"]:
        body = json.dumps({"model": m, "max_tokens": 1, "messages": [{"role": "user", "content": "Name a colour of the rainbow."}]}).encode()
        t = time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"content-type": "application/json"})) as resp:
            resp.read()
        print(m, round(time.monotonic() - t, 4))
    proc.terminate(); print("\n".join(l for l in proc.communicate()[0].splitlines() if "openai" in l)[-1500:])

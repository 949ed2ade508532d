from llmhost.systemd import env_file, exec_line, preload_env, quote_arg


def test_quote_arg():
    assert quote_arg("--max-num-seqs") == "--max-num-seqs"
    assert quote_arg("/srv/models/a b") == '"/srv/models/a b"'
    assert quote_arg('{"a": 1}') == '"{\\"a\\": 1}"'
    assert quote_arg("50%") == "50%%" and quote_arg("$HOME") == '"$$HOME"'
    assert quote_arg("") == '""'


def test_exec_line_and_env_file():
    assert exec_line(["python", "-m", "x", "--port", 8101]) == "python -m x --port 8101"
    assert env_file({"B": "2", "A": 'say "hi"'}) == 'A="say \\"hi\\""\nB="2"\n'


TC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
IOMP = "/opt/vllm/venv/lib/libiomp5.so"


def test_preload_env_follows_profile_arch_and_what_exists():
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=True, arch="x86_64") == {"LD_PRELOAD": f"{TC}:{IOMP}"}
    # GNU OpenMP on aarch64: never Intel's runtime there
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=True, arch="aarch64") == {"LD_PRELOAD": TC}
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=False, arch="x86_64") == {"LD_PRELOAD": TC}
    assert preload_env([TC, IOMP], tcmalloc=False, iomp=True, arch="x86_64") == {}  # the legacy profile
    assert preload_env([], tcmalloc=True, iomp=True, arch="x86_64") == {}  # nothing installed: no empty LD_PRELOAD


def test_unit_names_are_spelled_once():
    from llmhost.systemd import unit_names

    n = unit_names("coder", "/u")
    assert n["service"] == "llmhost-expert-coder.service" and n["service_path"] == "/u/llmhost-expert-coder.service"
    assert n["all"] == ["llmhost-expert-coder-proxy.socket", "llmhost-expert-coder-proxy.service",
                        "llmhost-expert-coder.service", "llmhost-expert-coder-standby.service"]
    assert n["lazy_paths"] == {"proxy.socket": "/u/llmhost-expert-coder-proxy.socket",
                               "proxy.service": "/u/llmhost-expert-coder-proxy.service",
                               "standby.service": "/u/llmhost-expert-coder-standby.service"}
    assert n["standby_socket"] == "/run/llmhost-coder/standby.sock"


def test_restore_puts_back_what_had_a_previous_version_and_removes_what_was_new():
    from llmhost.systemd import restore_spec

    files = [{"dest": "/e/coder.env", "changed": True, "backup_file": "/e/coder.env.1.bak"},
             {"dest": "/u/llmhost-expert-coder.service", "changed": False},
             {"dest": "/u/llmhost-expert-coder-proxy.socket", "changed": True},          # new: no backup
             {"item": "proxy.service", "skipped": True, "changed": False}]
    aside = [{"item": "proxy.socket", "dest": "/e/.rollback-coder-proxy.socket", "changed": True},
             {"item": "proxy.service", "skipped": True}]
    spec = restore_spec("coder", files, aside, "/u")
    assert spec["copies"] == [{"src": "/e/coder.env.1.bak", "dest": "/e/coder.env"},
                              {"src": "/e/.rollback-coder-proxy.socket", "dest": "/u/llmhost-expert-coder-proxy.socket"}]
    assert spec["remove"] == ["/u/llmhost-expert-coder-proxy.socket"] and spec["had_previous"]
    new = restore_spec("fresh", [{"dest": "/e/fresh.env", "changed": True}], None, "/u")
    assert new["copies"] == [] and new["remove"] == ["/e/fresh.env"] and not new["had_previous"]


def test_the_previous_version_is_the_socket_when_there_is_one():
    from llmhost.systemd import previous_unit, unit_names

    n = unit_names("x", "/u")
    stat = lambda sock, svc: [{"item": n["socket_path"], "stat": {"exists": sock}},  # noqa: E731
                              {"item": n["service_path"], "stat": {"exists": svc}}]
    assert previous_unit(stat(True, True), n) == {"unit": n["socket"], "kind": "socket, loaded on demand"}
    assert previous_unit(stat(False, True), n) == {"unit": n["service"], "kind": "service"}
    assert previous_unit(stat(False, False), n) == {"unit": "", "kind": ""}


def test_check_mode_results_restore_nothing():
    """In check mode a template that would change returns {changed: true} and no dest."""
    from llmhost.systemd import restore_spec

    spec = restore_spec("coder", [{"changed": True, "diff": []}, {"changed": False, "skipped": True}], [], "/u")
    assert spec["copies"] == [] and spec["remove"] == [] and not spec["had_previous"]


# --- the admission gate reads the front door's usage over HAProxy's runtime API -------------

import pytest  # noqa: E402

from llmhost.systemd import expert_unit  # noqa: E402


def render_proxy(admin_socket="/run/haproxy/admin.sock"):
    """roles/vllm_experts/templates/proxy.service.j2 for a lazy expert, with the role's filters."""
    from pathlib import Path  # noqa: PLC0415

    import jinja2  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root / "roles/vllm_experts/templates")),
                             undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda s: "# " + s
    env.filters["llmhost.toolkit.systemd_exec"] = exec_line
    return env.get_template("proxy.service.j2").render(
        ansible_managed="managed", vllm_experts_item={"expert_id": "gemma", "backend_port": 9101, "port": 8101},
        __vllm_experts_admit_script="/usr/local/libexec/llmhost/llmhost-admit", vllm_experts_config_dir="/etc/llmhost",
        __vllm_experts_unit=expert_unit("gemma", 900, 5, 5, "llmhost"), vllm_experts_frontdoor_admin_socket=admin_socket,
        __vllm_experts_lazy_idle_s=600, __vllm_experts_lazy_max_waiting=64)


@pytest.mark.parametrize("socket_path", ["/run/haproxy/admin.sock", "/run/haproxy/other.sock"])
def test_the_proxy_unit_passes_the_gate_the_roles_runtime_api_socket(socket_path):
    unit = render_proxy(socket_path)
    pre = [ln for ln in unit.splitlines() if ln.startswith("ExecStartPre=")]
    assert pre == ["ExecStartPre=+/usr/bin/python3 /usr/local/libexec/llmhost/llmhost-admit gate --config "
                   f"/etc/llmhost/admission.json --expert gemma --admin-socket {socket_path}"]
    assert "IPAddressAllow=localhost" in unit.splitlines()


def test_every_variable_an_expert_unit_sets_is_owned():
    from llmhost.experts import OWNED_ENV  # noqa: PLC0415

    names = {line.split("=", 1)[0] for line in expert_unit("gemma", 900, 5, 5, "llmhost")["environment"]}
    assert names and names <= OWNED_ENV, names - OWNED_ENV


def test_ip_allow_lists_only_a_loopback_service():
    from llmhost.systemd import ip_allow

    loop = {"deny": "any", "allow": "localhost"}
    none = {"deny": "", "allow": ""}
    # Prometheus on loopback scraping loopback targets; a wildcard metrics bind is reached on loopback
    assert ip_allow(["127.0.0.1:9090"], ["127.0.0.1:8405", "127.0.0.1:9100", "0.0.0.0:8405", "*:8405"]) == loop
    assert ip_allow(["[::1]:9100"]) == ip_allow(["localhost:9100"]) == ip_allow() == loop
    # a target beyond loopback is added by address, v4 and v6, each once
    assert ip_allow(["127.0.0.1:9090"], ["10.0.0.5:8405", "http://[fd00::1]:8405/metrics", "10.0.0.5:1"]) == \
        {"deny": "any", "allow": "localhost 10.0.0.5 fd00::1"}
    # a service that serves the network, or a target only DNS can place: no list (it would cut them)
    for listen, connect in ((["0.0.0.0:9090"], []), ([":9100"], []), (["*:9100"], []), (["10.0.0.2:9100"], []),
                            (["127.0.0.1:9090"], ["metrics.example:8405"])):
        assert ip_allow(listen, connect) == none, (listen, connect)

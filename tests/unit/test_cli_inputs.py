"""Every option of every `llmhost` command is checked for shape and range before
anything is done: a bad one is one line naming the option, exit 2 (its shape,
argparse) or 1 (a file or folder that cannot be used), no traceback, nothing
written. Every command's --help renders. `llmhost plan` resolves the inventory's
Jinja as Ansible does, or names the variable it cannot resolve offline."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from llmhost import cli
from llmhost.cli import main

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests/fixtures/config.five_models_optimized_with_aya.json"


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(rc: int, capsys, code: int, expect: str) -> str:
    """Exit `code`, one stderr line holding `expect`, no traceback, nothing on stdout."""
    out, err = capsys.readouterr()
    assert rc == code, f"exit {rc}, expected {code}: {err}"
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert expect in err, err
    assert out == "", out
    return err


def run(argv: list[str]) -> int:
    """main(), with argparse's exit turned into the exit code."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


# --- every --help renders --------------------------------------------------------------------


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser tree, walked through its subparsers."""
    out = [prefix]
    for action in parser._actions:   # noqa: SLF001 - argparse keeps its subparsers there only
        if isinstance(action, argparse._SubParsersAction):   # noqa: SLF001
            for name, sub in action.choices.items():
                out += command_paths(sub, (*prefix, name))
    return out


def test_the_tree_has_every_command():
    paths = command_paths(cli.build_parser())
    assert {p[0] for p in paths if p} == {"import-legacy", "plan", "smoke", "deploy", "profile", "capabilities"}


@pytest.mark.parametrize("path", command_paths(cli.build_parser()), ids=lambda p: " ".join(p) or "llmhost")
def test_every_help_renders(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    assert out.startswith("usage: llmhost") and "Traceback" not in out + err and err == ""
    assert "--help" in out


# --- one line, no traceback, nothing written ------------------------------------------------


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A folder with a smoke config, a private key file and a plain file to misuse."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMHOST_API_KEY", raising=False)
    (tmp_path / "cfg.json").write_text('{"experts": []}')
    (tmp_path / "key").write_text("sk-1\n")
    os.chmod(tmp_path / "key", 0o600)
    (tmp_path / "plain").write_text("x\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir/keep").write_text("x\n")
    return tmp_path


SMOKE = ["smoke", "--config", "cfg.json", "--json", "out/report.json"]
CASES = [
    # (case, argv, exit, words of the one line)
    ("no command", [], 2, "the following arguments are required"),
    ("unknown command", ["launch"], 2, "invalid choice: 'launch'"),
    # import-legacy
    ("legacy --host ../../x", ["import-legacy", str(LEGACY), "--out", "inv", "--host", "../../x"], 2,
     "argument --host"),
    ("legacy --host newline", ["import-legacy", str(LEGACY), "--out", "inv", "--host", "h\nllmhost_x: 1"], 2,
     "argument --host"),
    ("legacy --host a/b", ["import-legacy", str(LEGACY), "--out", "inv", "--host", "a/b"], 2, "argument --host"),
    ("legacy --host ..", ["import-legacy", str(LEGACY), "--out", "inv", "--host", ".."], 2, "argument --host"),
    ("legacy --host empty", ["import-legacy", str(LEGACY), "--out", "inv", "--host", ""], 2, "argument --host"),
    ("legacy --host space", ["import-legacy", str(LEGACY), "--out", "inv", "--host", "a b"], 2, "argument --host"),
    ("legacy --arch sparc", ["import-legacy", str(LEGACY), "--out", "inv", "--arch", "sparc"], 2, "argument --arch"),
    ("legacy --out a file", ["import-legacy", str(LEGACY), "--out", "plain"], 1, "--out plain"),
    ("legacy --out not empty", ["import-legacy", str(LEGACY), "--out", "adir"], 1, "nothing overwritten"),
    ("legacy --out under a file", ["import-legacy", str(LEGACY), "--out", "plain/inv"], 1, "--out"),
    ("legacy --caps missing", ["import-legacy", str(LEGACY), "--out", "inv", "--caps", "nope.json"], 1,
     "--caps nope.json: no such file"),
    ("legacy file missing", ["import-legacy", "nope.json", "--out", "inv"], 1, "nope.json: no such file"),
    # plan
    ("plan -i missing", ["plan", "-i", "nope"], 1, "-i nope"),
    ("plan --host ../x", ["plan", "-i", str(ROOT / "inventories/local"), "--host", "../x"], 2, "argument --host"),
    ("plan --host unknown", ["plan", "-i", str(ROOT / "inventories/local"), "--host", "other"], 1,
     "no host 'other'"),
    ("plan --cpuinfo missing", ["plan", "-i", str(ROOT / "inventories/local"), "--cpuinfo", "nope.txt"], 1,
     "--cpuinfo nope.txt"),
    ("plan --caps a folder", ["plan", "-i", str(ROOT / "inventories/local"), "--caps", "adir"], 1,
     "--caps adir: is a directory"),
    # smoke: numbers
    ("smoke --repeat 0", [*SMOKE, "--repeat", "0"], 2, "argument --repeat"),
    ("smoke --repeat a word", [*SMOKE, "--repeat", "many"], 2, "argument --repeat"),
    ("smoke --repeat huge", [*SMOKE, "--repeat", "99999999999"], 2, "argument --repeat"),
    ("smoke --warmup -1", [*SMOKE, "--warmup=-1"], 2, "argument --warmup"),
    ("smoke --concurrency 0", [*SMOKE, "--concurrency", "0"], 2, "argument --concurrency"),
    ("smoke --concurrency 1e3", [*SMOKE, "--concurrency", "1e3"], 2, "argument --concurrency"),
    ("smoke --max-tokens 0", [*SMOKE, "--max-tokens", "0"], 2, "argument --max-tokens"),
    ("smoke --max-worse 0", [*SMOKE, "--max-worse", "0"], 2, "argument --max-worse"),
    ("smoke --max-worse nan", [*SMOKE, "--max-worse", "nan"], 2, "argument --max-worse"),
    ("smoke --max-worse 11", [*SMOKE, "--max-worse", "11"], 2, "argument --max-worse"),
    ("smoke --max-worse a word", [*SMOKE, "--max-worse", "lots"], 2, "argument --max-worse"),
    ("smoke --threshold negative", [*SMOKE, "--threshold", "ttft_p50_s=-1"], 2, "argument --threshold"),
    ("smoke --threshold inf", [*SMOKE, "--threshold", "ttft_p50_s=inf"], 2, "argument --threshold"),
    ("smoke --threshold nan", [*SMOKE, "--threshold", "tbt_p95_s=nan"], 2, "argument --threshold"),
    ("smoke --threshold a word", [*SMOKE, "--threshold", "ttft_p50_s=fast"], 2, "argument --threshold"),
    ("smoke --threshold unknown name", [*SMOKE, "--threshold", "latency=1"], 2, "argument --threshold"),
    ("smoke --threshold no value", [*SMOKE, "--threshold", "ttft_p50_s="], 2, "argument --threshold"),
    # smoke: shapes
    ("smoke --url ftp", [*SMOKE, "--url", "ftp://127.0.0.1:8082"], 2, "argument --url"),
    ("smoke --url no host", [*SMOKE, "--url", "http://"], 2, "argument --url"),
    ("smoke --url bad port", [*SMOKE, "--url", "http://127.0.0.1:99999"], 2, "argument --url"),
    ("smoke --url port 0", [*SMOKE, "--url", "http://127.0.0.1:0"], 2, "argument --url"),
    ("smoke --url space", [*SMOKE, "--url", "http://a b:8082"], 2, "argument --url"),
    ("smoke --url credentials", [*SMOKE, "--url", "http://u:p@127.0.0.1:8082"], 2, "argument --url"),
    ("smoke --expert upper case and space", [*SMOKE, "--expert", "My Expert"], 2, "argument --expert"),
    ("smoke --api-key empty", [*SMOKE, "--api-key", ""], 2, "argument --api-key"),
    ("smoke --api-key newline", [*SMOKE, "--api-key", "sk-1\nX: y"], 2, "argument --api-key"),
    # smoke: files
    ("smoke --config missing", ["smoke", "--config", "nope.json"], 1, "--config nope.json: no such file"),
    ("smoke --config a folder", ["smoke", "--config", "adir"], 1, "--config adir: is a directory"),
    ("smoke --api-key-file missing", [*SMOKE, "--api-key-file", "nokey"], 1, "--api-key-file nokey"),
    ("smoke --api-key and --api-key-file", [*SMOKE, "--api-key", "sk-1", "--api-key-file", "key"], 1,
     "--api-key and --api-key-file"),
    ("smoke --host-profile missing", [*SMOKE, "--host-profile", "nope.json"], 1, "--host-profile nope.json"),
    ("smoke --json a folder", ["smoke", "--config", "cfg.json", "--json", "adir"], 1, "--json adir: is a directory"),
    ("smoke --json under a file", ["smoke", "--config", "cfg.json", "--json", "plain/r.json"], 1, "--json"),
    ("smoke --chart under a file", [*SMOKE, "--chart", "plain/c.png"], 1, "--chart"),
    ("smoke --html same as --json", [*SMOKE, "--html", "out/report.json"], 1, "the same file"),
    ("smoke --json over --config", ["smoke", "--config", "cfg.json", "--json", "cfg.json"], 1, "the same file"),
    ("smoke --baseline a folder", [*SMOKE, "--baseline", "adir"], 1, "--baseline adir: is a directory"),
    ("smoke --numerics-baseline under a file", [*SMOKE, "--numerics-baseline", "plain/n.json"], 1,
     "--numerics-baseline"),
    # deploy
    ("deploy -i missing", ["deploy", "-i", "nope"], 1, "-i nope"),
    ("deploy --playbook missing", ["deploy", "-i", str(ROOT / "inventories/local"), "--playbook", "nope.yml"], 1,
     "--playbook nope.yml"),
    # profile
    ("profile --measure and --file", ["profile", "--measure", "--file", "plain"], 2, "not allowed with"),
    ("profile --quick alone", ["profile", "--quick", "--file", "plain"], 1, "--quick goes with --measure"),
    ("profile --host without -i", ["profile", "--file", "plain", "--host", "h1"], 1, "--host goes with -i"),
    ("profile --file missing", ["profile", "--file", "nope.json"], 1, "--file nope.json"),
    ("profile -i missing", ["profile", "-i", "nope"], 1, "-i nope"),
    ("profile nothing to read", ["profile"], 1, "give one of --measure, --file FILE or -i INVENTORY"),
    # capabilities
    ("capabilities --caps missing", ["capabilities", "--caps", "nope.json"], 1, "--caps nope.json"),
    ("capabilities --caps not JSON", ["capabilities", "--caps", "plain"], 1, "--caps plain: not JSON"),
]


@pytest.mark.parametrize("case,argv,code,expect", CASES, ids=[c[0] for c in CASES])
def test_a_bad_option_is_one_line_and_nothing_is_written(work, capsys, case, argv, code, expect):
    before = files_under(work)
    refused(run(argv), capsys, code, expect)
    assert files_under(work) == before, "something was written"
    assert not (work / "inv").exists() and not (work / "out").exists()


def test_there_are_enough_cases():
    assert len(CASES) >= 40


# --- import-legacy: names, paths, secrets, and the plan's verdict ------------------------------


def test_every_written_path_stays_inside_out(tmp_path):
    root = tmp_path / "inv"
    assert set(cli.tree_paths(root, {"hosts.yml": "", "host_vars/h.yml": ""})) == {"hosts.yml", "host_vars/h.yml"}
    for rel in ("../x.yml", "host_vars/../../x.yml", "/etc/passwd", "."):
        with pytest.raises(cli.UsageError, match="outside it; nothing written"):
            cli.tree_paths(root, {rel: ""})
    with pytest.raises(cli.UsageError):
        cli.write_new_tree(root, {"hosts.yml": "a", "../escape.yml": "b"})
    assert not root.exists() and not (tmp_path / "escape.yml").exists()   # checked before the first write


@pytest.mark.parametrize("name,ok", [("models-europe", True), ("node1.example.org", True), ("a_b", True),
                                     ("../x", False), ("a/b", False), ("..", False), ("a..b", False),
                                     ("x\ny: 1", False), ("a b", False), ("-a", False), ("a\x00", False),
                                     ("é", False), ("x" * 254, False), ("a.", False)])
def test_inventory_host_names(name, ok):
    assert (cli.host_name_problem(name) is None) is ok


def legacy(tmp_path: Path, body: dict) -> Path:
    f = tmp_path / "config.json"
    f.write_text(json.dumps(body))
    return f


KEYED = {"experts": [{"expert_id": "a", "model_path": "/srv/models/a", "api_key": "sk-expert",
                      "hf_token": "hf_secret_1", "env": {"HF_TOKEN": "hf_secret_2"}, "max_num_seqs": 4}],
         "server_config": {"port": 8082, "api_key": "sk-server"}, "api_key": ["sk-top", "sk-server"],
         "performance_tuning": {"DB_PASSWORD": "pw-secret"},
         "notes": {"memory_estimation": {"a_model": "~1 GB"}}}


def test_legacy_keys_go_to_a_private_vault_file_and_nowhere_else(tmp_path, capsys):
    inv = tmp_path / "inv"
    assert main(["import-legacy", str(legacy(tmp_path, KEYED)), "--arch", "x86_64", "--out", str(inv)]) == 0
    out, err = capsys.readouterr()
    vault = inv / "group_vars/llm_hosts/vault.yml"
    assert oct(vault.stat().st_mode & 0o777) == "0o600"
    text = vault.read_text()
    assert "ansible-vault encrypt group_vars/llm_hosts/vault.yml" in text
    import yaml  # noqa: PLC0415

    assert yaml.safe_load(text) == {"vault_frontdoor_api_keys": ["sk-server", "sk-top", "sk-expert"]}
    for f in inv.rglob("*"):
        if f.is_file() and f != vault:
            body = f.read_text()
            assert not any(k in body for k in ("sk-expert", "sk-server", "sk-top", "secret_1", "secret_2",
                                               "pw-secret")), f
    for secret in ("sk-expert", "sk-server", "sk-top", "hf_secret", "pw-secret"):
        assert secret not in err and secret not in out
    assert "hf_secret" not in text and "pw-secret" not in text   # left out, not kept
    assert "a.hf_token: dropped: holds a secret" in err and "performance_tuning.DB_PASSWORD" in err
    assert f"encrypt it now: ansible-vault encrypt {inv}/group_vars/llm_hosts/vault.yml" in err
    # the plan reads the inventory with the vault file in clear, and once it is encrypted
    assert main(["plan", "-i", str(inv), "--json"]) in (0, 1)
    assert "vault" not in capsys.readouterr().err
    vault.write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    rc = main(["plan", "-i", str(inv), "--json"])
    out, err = capsys.readouterr()
    assert "decrypt" not in err and "vault password" not in err and rc in (0, 1)


def test_legacy_keys_are_left_out_of_stdout(tmp_path, capsys):
    assert main(["import-legacy", str(legacy(tmp_path, KEYED)), "--arch", "x86_64"]) == 0
    out, err = capsys.readouterr()
    assert "sk-" not in out and "hf_secret" not in out and "api_key" not in out and "hf_token" not in out
    assert "run with --out DIR" in err and "sk-" not in err


@pytest.mark.parametrize("value", [5, [], ["sk ok"], ["sk-1\n"], {"k": "v"}, ["sk-clé"], ["sk-a,b"]])
def test_a_legacy_key_of_the_wrong_shape_is_refused_without_its_value(tmp_path, capsys, value):
    body = {**KEYED, "api_key": value}
    rc = main(["import-legacy", str(legacy(tmp_path, body)), "--arch", "x86_64", "--out", str(tmp_path / "inv")])
    err = capsys.readouterr().err
    if value == []:   # an empty key list is no key
        assert rc == 0 and "api_key: dropped: empty" in err
        return
    assert rc == 1 and "field 'api_key': an old bearer key must be one the front door accepts" in err
    assert "Traceback" not in err
    assert not (tmp_path / "inv").exists()


def test_import_legacy_exits_1_when_the_plan_would_refuse_what_it_writes(tmp_path, capsys):
    # weights unknown: the schema takes it, the plan does not (nothing says how big the model is)
    body = {"experts": [{"expert_id": "a", "model_path": "/srv/models/a"}]}
    inv = tmp_path / "inv"
    rc = main(["import-legacy", str(legacy(tmp_path, body)), "--arch", "x86_64", "--out", str(inv)])
    err = capsys.readouterr().err
    assert rc == 1 and "`llmhost plan` would refuse this inventory" in err and "nothing written" in err
    assert "expert 'a' field 'weights_gib'" in err and "Traceback" not in err
    assert not inv.exists()
    assert main(["import-legacy", str(legacy(tmp_path, body)), "--arch", "x86_64"]) == 1
    assert capsys.readouterr().out == ""


def test_what_import_legacy_accepts_the_plan_accepts(tmp_path, capsys):
    inv = tmp_path / "inv"
    assert main(["import-legacy", str(LEGACY), "--out", str(inv), "--host", "node-1.example"]) == 0
    err = capsys.readouterr().err
    assert "planned on any aarch64 host big enough" in err
    assert (inv / "host_vars/node-1.example.yml").exists()
    f = inv / "host_vars/node-1.example.yml"
    f.write_text(f.read_text() + "llmhost_host_expect: {arch: aarch64, cpu: neoverse-v2, cpus: 512, "
                 "memory_gib: 8192}\n")
    assert main(["plan", "-i", str(inv)]) == 0, capsys.readouterr().err


# --- plan: what Ansible will run -------------------------------------------------------------


def inventory(tmp_path: Path, body: str) -> Path:
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text("llm_hosts:\n  hosts:\n    h1: {ansible_connection: local}\n")
    (inv / "group_vars/all.yml").write_text(
        "llmhost_host_expect: {cpus: 4, memory_gib: 16}\nbase_port: 8100\n" + body)
    return inv


def test_plan_resolves_jinja_as_ansible_does(tmp_path, capsys):
    inv = inventory(tmp_path, """llmhost_reserved_cores: "{{ 0 + 1 }}"
llmhost_experts:
  - {expert_id: g, model: /m, domain: "{{ 'gen' ~ 'eral' }}", priority: 1, weights_gib: 1,
     port: "{{ base_port + 50 }}"}
llmhost_api_keys: "{{ vault_frontdoor_api_keys }}"
""")
    assert main(["plan", "-i", str(inv), "--json"]) == 0, capsys.readouterr().err
    plan = json.loads(capsys.readouterr().out)
    e = plan["experts"][0]
    assert e["port"] == 8150 and "8150" in e["argv"] and plan["reserved_cores"] == [0]
    assert e["domain"] == "general"
    # what Ansible itself makes of the same inventory
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    r = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inv), "h1", "-m",
                        "ansible.builtin.debug", "-a", "msg={{ llmhost_experts[0].port }}"],
                       capture_output=True, text=True, check=False)
    assert re.search(r'"?msg"?: 8150\b', r.stdout), r.stdout + r.stderr


@pytest.mark.parametrize("value,where", [
    ("{{ ansible_hostname }}", "llmhost_experts[0].domain"),
    ("{{ undefined_thing | int }}", "llmhost_experts[0].domain"),
    ("{{ lookup('file', '/nonexistent/llmhost') }}", "llmhost_experts[0].domain"),
])
def test_plan_names_a_value_it_cannot_resolve_offline(tmp_path, capsys, value, where):
    inv = inventory(tmp_path, f"""llmhost_experts:
  - {{expert_id: g, model: /m, domain: "{value}", priority: 1, weights_gib: 1}}
""")
    err = refused(run(["plan", "-i", str(inv)]), capsys, 1, where)
    assert "cannot be resolved offline" in err
    assert f"ansible-playbook -i {inv} site.yml --tags preflight --check" in err


def test_an_unused_unresolvable_variable_does_not_stop_the_plan(tmp_path, capsys):
    inv = inventory(tmp_path, """llmhost_experts:
  - {expert_id: g, model: /m, domain: general, priority: 1, weights_gib: 1}
llmhost_api_keys: "{{ vault_frontdoor_api_keys }}"
llmhost_unrelated: "{{ ansible_hostname }}"
""")
    assert main(["plan", "-i", str(inv)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("where,key,value", [
    ("expert", "api_key", "sk-S3CRET"),
    ("expert", "apiKey", "sk-S3CRET"),
    ("expert", "hf_token", "S3CRET"),
    ("expert", "env", {"HF_TOKEN": "S3CRET", "OMP_NUM_THREADS": "4"}),
    ("expert", "hf_overrides", {"auth": {"password": "S3CRET"}}),
    ("expert", "db_password", "S3CRET"),
    ("performance_tuning", "api_key", "sk-S3CRET"),
    ("performance_tuning", "hf_token", "S3CRET"),
    ("server_config", "api_keys", ["sk-S3CRET", "sk-OTHER"]),
    ("server_config", "ssl_keyfile_password", "S3CRET"),
    ("top", "api_key", "sk-S3CRET"),
])
def test_no_secret_reaches_the_inventory_or_the_report(where, key, value):
    from llmhost.legacy import import_legacy  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    data: dict = {"experts": [{"expert_id": "a", "model_path": "/srv/models/a"}],
                  "notes": {"memory_estimation": {"a_model": "~1 GB"}}}
    if where == "expert":
        data["experts"][0][key] = value
    elif where == "top":
        data[key] = value
    else:
        data[where] = {key: value}
    res = import_legacy(data, cli.saved_capabilities(), arch="x86_64")
    shown = yaml.safe_dump(res.inventory()) + "\n".join(res.report + res.warnings + res.rejected)
    assert "S3CRET" not in shown and "OTHER" not in shown, shown
    assert res.rejected == []
    if key.lower().replace("-", "_") in ("api_key", "api_keys", "apikey"):
        assert "sk-S3CRET" in res.frontdoor_keys and res.secrets_left_out == []
    else:
        assert res.frontdoor_keys == [] and res.secrets_left_out == [f"{'a' if where == 'expert' else where}.{key}"]


def test_an_existing_read_only_baseline_is_read_not_refused(tmp_path, monkeypatch):
    """--baseline is written only when it does not exist yet; an existing one may be read-only
    (a shared, protected reference). --numerics-baseline is rewritten, so it must be writable.
    (The file is made unwritable through os.access: the suite may run as root.)"""
    import argparse
    import os

    from llmhost.cli import UsageError, check_inputs

    base = tmp_path / "baseline.json"
    base.write_text("{}")
    real = os.access
    monkeypatch.setattr("llmhost.cli.os.access",
                        lambda p, mode: False if (str(p) == str(base) and mode == os.W_OK) else real(p, mode))
    ns = dict(cmd="smoke", caps=None, config=None, api_key_file=None, host_profile=None, json=None, chart=None,
              html=None, numerics_baseline=None, baseline=str(base), api_key=None)
    check_inputs(argparse.Namespace(**ns))
    with pytest.raises(UsageError, match="--numerics-baseline .*: not writable"):
        check_inputs(argparse.Namespace(**{**ns, "baseline": None, "numerics_baseline": str(base)}))

"""The `llmhost` command.

    llmhost import-legacy FILE [--arch aarch64] [--out DIR]   legacy config*.json -> inventory, report (stderr)
    llmhost plan -i INVENTORY [--host H] [--json]  cores, memory, argv and env per expert
    llmhost smoke [--url U] [--config F] [--json R]  TTFT, TBT, tokens/s and coherence per expert
    llmhost deploy -i INVENTORY [-- ANSIBLE ARGS]    site.yml through ansible-runner: a line per stage, counts
    llmhost capabilities                            the saved capabilities of the pinned vLLM
    llmhost profile -i INVENTORY | --file F | --measure   a host profile (bandwidth, matmul) as inventory YAML

All but deploy and smoke run offline. Exit codes: 0 fine, 1 a rejection or a plan that does not fit, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import frontdoor, gate
from . import host as host_mod
from . import site_templates
from . import smoke as smoke_mod
from .experts import ID_RE, ConfigError
from .gate import DEFAULT_MAX_WORSE
from .legacy import VAULT_KEYS_VAR, import_legacy, loads_lenient
from .model_files import float_sources, local_shapes, local_weights
from .plan import DEFAULT_START_BUDGET_S, Shared, build_plan, default_reserved, parse_shared
from .plan_text import memory_table, performance_table

DEFAULT_VLLM_VERSION = Shared().vllm_version


def saved_capabilities(version: str = DEFAULT_VLLM_VERSION) -> dict[str, Any]:
    version = version or DEFAULT_VLLM_VERSION
    name = f"capabilities-vllm-{version}.json"
    try:
        text = resources.files("llmhost").joinpath("data", name).read_text()
    except FileNotFoundError:
        raise SystemExit(f"no saved capabilities for vLLM {version} (looked for llmhost/data/{name})") from None
    return json.loads(text)


class UsageError(Exception):
    """A one-line error about the command's input (a file, an option): exit 1."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the option (`llmhost smoke: argument
    --repeat: ...`), exit 2, instead of the usage block."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


# --- option shapes, checked by argparse before anything is done (exit 2) -----------------------

# An inventory host name: what hosts.yml, host_vars/NAME.yml and the plan accept.
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def host_name_problem(name: str) -> str | None:
    """Why a string cannot be an inventory host name (None when it can)."""
    if not HOST_NAME_RE.match(name) or ".." in name or name.endswith("."):
        return (f"an inventory host name is letters, digits, '.', '-' and '_' (no path separators, '..', "
                f"spaces or control characters), got {name!r:.80}")
    return None


def _host_name(text: str) -> str:
    why = host_name_problem(text)
    if why:
        raise argparse.ArgumentTypeError(why)
    return text


def _count(lo: int, hi: int) -> Any:
    """A whole number in lo..hi, for argparse."""
    def parse(text: str) -> int:
        try:
            n = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a whole number {lo}..{hi}, got {text!r:.40}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"a whole number {lo}..{hi}, got {n}")
        return n
    parse.__name__ = "count"
    return parse


def _url(text: str) -> str:
    """http(s)://host[:port][/path] without credentials, query or spaces."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    bad = f"an http:// or https:// address such as http://127.0.0.1:8082, got {text!r:.80}"
    if not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(bad)
    try:
        u = urlsplit(text)
        port = u.port
    except ValueError:
        raise argparse.ArgumentTypeError(bad) from None
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or "@" in u.netloc:
        raise argparse.ArgumentTypeError(bad)
    if port == 0:
        raise argparse.ArgumentTypeError(f"port 1..65535, got {text!r:.80}")
    return text


def _expert(text: str) -> str:
    if not ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"an expert id (lower-case letters, digits, '.', '_', '-'), got {text!r:.80}")
    return text


def _api_key(text: str) -> str:
    why = frontdoor.key_problem(text)
    if why:
        raise argparse.ArgumentTypeError(f"a bearer key: {why} (the value is not shown)")
    return text


# --- paths, checked before anything is done (exit 1) --------------------------------------------

def need_file(path: str | None, what: str) -> None:
    """A file the command reads must exist and be a readable regular file."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {path}: no such file")
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what} {path}: not readable by this user")


def need_writable(path: str | None, what: str, may_exist: bool = True) -> None:
    """A file the command writes: not a directory, and its folder exists or can be made."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory; give a file name")
    if p.exists() and not may_exist:
        raise UsageError(f"{what} {path}: exists; nothing overwritten")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{what} {path}: not writable by this user")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: cannot write in {parent}")


def check_inputs(args: argparse.Namespace) -> None:
    """Every path option of the command checked before anything is done (UsageError)."""
    cmd = args.cmd
    need_file(getattr(args, "caps", None), "--caps")
    if cmd == "import-legacy":
        need_file(args.file, "file")
        if args.out:
            check_new_tree(Path(args.out))
            need_writable(os.path.join(args.out, "hosts.yml"), "--out")
    elif cmd == "plan":
        if not os.path.exists(args.inventory):
            raise UsageError(f"-i {args.inventory}: no such inventory file or directory")
        need_file(args.cpuinfo, "--cpuinfo")
    elif cmd == "smoke":
        need_file(args.config, "--config")
        need_file(args.api_key_file, "--api-key-file")
        need_file(args.host_profile, "--host-profile")
        for opt, path in (("--numerics-baseline", args.numerics_baseline), ("--baseline", args.baseline)):
            if path and Path(path).exists():
                need_file(path, opt)
            # --numerics-baseline is rewritten after a passing run; --baseline is written only
            # when it does not exist yet (the first run sets it), so an existing one may be read-only
            if opt == "--numerics-baseline" or not (path and Path(path).exists()):
                need_writable(path, opt)
        outs = {"--json": args.json, "--chart": args.chart, "--html": args.html}
        for opt, path in outs.items():
            need_writable(path, opt)
        given = [(o, os.path.abspath(p)) for o, p in outs.items() if p]
        given += [(o, os.path.abspath(p)) for o, p in (("--config", args.config), ("--baseline", args.baseline),
                                                         ("--numerics-baseline", args.numerics_baseline)) if p]
        for i, (o1, p1) in enumerate(given):
            for o2, p2 in given[i + 1:]:
                if p1 == p2:
                    raise UsageError(f"{o1} and {o2} name the same file {p1}; one would overwrite the other")
        if args.api_key and args.api_key_file:
            raise UsageError("--api-key and --api-key-file: give one")
    elif cmd == "deploy":
        if not os.path.exists(args.inventory):
            raise UsageError(f"-i {args.inventory}: no such inventory")
        need_file(args.playbook, "--playbook")
    elif cmd == "profile":
        if args.quick and not args.measure:
            raise UsageError("--quick goes with --measure")
        if args.host and not args.inventory:
            raise UsageError("--host goes with -i INVENTORY")
        need_file(args.file, "--file")
        if args.inventory and not os.path.exists(args.inventory):
            raise UsageError(f"-i {args.inventory}: no such inventory file or directory")


def read_text(path: str, what: str) -> str:
    """A file's text, or a UsageError that says in one line why not."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UsageError(f"{what} {path}: is a directory, not a file") from None
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not a text file (not UTF-8)") from None
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read it ({e.strerror or e.__class__.__name__})") from None


def load_caps(path: str | None, version: str = DEFAULT_VLLM_VERSION) -> dict[str, Any]:
    if path:
        try:
            caps = json.loads(read_text(path, "--caps"))
        except (ValueError, RecursionError) as e:
            raise UsageError(f"--caps {path}: not JSON ({str(e).splitlines()[0][:120]})") from None
        if not isinstance(caps, dict) or not isinstance(caps.get("flags"), dict):
            raise UsageError(f"--caps {path}: not a capabilities file (no 'flags' object); "
                             "see `llmhost capabilities`")
        return caps
    return saved_capabilities(version)


def check_new_tree(root: Path) -> None:
    """A folder to write a new tree in must not exist or be empty: nothing is overwritten."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"--out {root}: exists and is not an empty folder; nothing overwritten")


def tree_paths(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """Each file's path, every one checked to stay inside root (resolved: no '..', no
    absolute name, no symlink out). UsageError before anything is written."""
    base = root.resolve()
    out = {}
    for rel in files:
        target = (root / rel).resolve()
        if Path(rel).is_absolute() or not target.is_relative_to(base) or target == base:
            raise UsageError(f"--out {root}: {rel!r} would be written outside it; nothing written")
        out[rel] = target
    return out


def write_new_tree(root: Path, files: dict[str, str], private: frozenset[str] = frozenset()) -> None:
    """Write the files under root (every path checked first); the `private` ones mode 0600."""
    paths = tree_paths(root, files)
    for rel, text in files.items():
        target = paths[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in private:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(target, 0o600)
        else:
            target.write_text(text, encoding="utf-8")


VAULT_FILE = "group_vars/llm_hosts/vault.yml"
# The host a legacy import is checked against when its inventory describes none yet:
# big enough that only what the config itself gets wrong is refused (the fit on the real
# host is for `llmhost plan` once host_vars describes it).
NOMINAL_HOST = {"aarch64": {"arch": "aarch64", "cpu": "neoverse-v2", "cpus": 512, "memory_gib": 8192},
                "x86_64": {"arch": "x86_64", "cpus": 512, "memory_gib": 8192}}


def vault_text(source: str, keys: list[str]) -> str:
    """The vault file of an import: the old server's bearer keys as the front door's."""
    return ("---\n"
            f"# From `llmhost import-legacy {source}`: the old server's bearer keys, now the front door's\n"
            "# (frontdoor.yml reads them; only their sha256 hashes reach the host). This file is\n"
            "# in clear, mode 0600: encrypt it before anything else, and never commit it in clear:\n"
            "#\n"
            f"#   ansible-vault encrypt {VAULT_FILE}\n"
            "#   ansible-playbook -i THIS_INVENTORY site.yml --ask-vault-pass\n"
            "#\n"
            "# `llmhost plan` does not read it (it skips encrypted files).\n"
            + yaml.safe_dump({VAULT_KEYS_VAR: keys}, sort_keys=False, allow_unicode=True))


def legacy_plan_problems(files: dict[str, str], host: str, arch: str, caps: str | None) -> tuple[list[str], str]:
    """What `llmhost plan` says of the inventory an import would write: its problems
    (empty when it plans) and on what host it was planned."""
    with tempfile.TemporaryDirectory(prefix="llmhost-import-") as tmp:
        write_new_tree(Path(tmp), files)
        name, hv = inventory_hostvars(tmp, host)
        on = "the host that host_vars describes"
        if not hv.get("llmhost_host_expect"):
            nominal = NOMINAL_HOST[arch]
            hv["llmhost_host_expect"] = nominal
            on = (f"any {arch} host big enough (host_vars/{host}.yml does not describe the host yet: "
                  "fill in llmhost_host_expect, then `llmhost plan` says whether it fits)")
        try:
            make_plan(hv, caps_path=caps)
        except ConfigError as e:
            return e.problems, on
    return [], on


def cmd_import_legacy(args: argparse.Namespace) -> int:
    """Nothing is written (files or stdout) unless the import is clean and `llmhost plan`
    accepts what it would write; secrets go to a separate vault file only."""
    text = read_text(args.file, "file")      # (--out was checked with the other paths: check_inputs)
    try:
        data = loads_lenient(text)
    except ValueError as e:
        print(f"{args.file}: not JSON even without comments: {str(e).splitlines()[0][:160]}", file=sys.stderr)
        return 1
    except RecursionError:
        print(f"{args.file}: nested too deeply to be a config", file=sys.stderr)
        return 1
    try:
        res = import_legacy(data, load_caps(args.caps), arch=args.arch)
    except ConfigError as e:
        for p in e.problems:
            print(f"{args.file}: {p}", file=sys.stderr)
        return 1
    for line in res.report:
        print(line, file=sys.stderr)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    experts_yaml = yaml.safe_dump(res.inventory(), sort_keys=False, allow_unicode=True)
    files = site_templates.legacy_skeleton(Path(args.file).name, args.arch, args.host, experts_yaml)
    if res.rejected:
        if not args.out:   # what passed, for review; the exit status says it is not usable as is
            sys.stdout.write(files["group_vars/llm_hosts/experts.yml"])
        print(f"\n{len(res.rejected)} rejected; " + ("no file written:" if args.out else
              "left out of the YAML on stdout, which is for review only:"), file=sys.stderr)
        for r in res.rejected:
            print(f"  {r}", file=sys.stderr)
        return 1
    problems, on = legacy_plan_problems(files, args.host, args.arch, args.caps)
    if problems:
        print(f"\n`llmhost plan` would refuse this inventory (planned on {on}); nothing written:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if args.out:
        private = frozenset()
        if res.frontdoor_keys:
            files[VAULT_FILE] = vault_text(Path(args.file).name, res.frontdoor_keys)
            private = frozenset({VAULT_FILE})
        write_new_tree(Path(args.out), files, private)
        print(f"inventory: {args.out} ({', '.join(files)}); planned on {on}; next: llmhost plan -i {args.out}",
              file=sys.stderr)
        if res.frontdoor_keys:
            print(f"SECRET: {len(res.frontdoor_keys)} bearer key(s) of the old server in {args.out}/{VAULT_FILE} "
                  f"(mode 0600, in clear): encrypt it now: ansible-vault encrypt {args.out}/{VAULT_FILE}",
                  file=sys.stderr)
    else:
        sys.stdout.write(files["group_vars/llm_hosts/experts.yml"])
        if res.frontdoor_keys:
            print(f"SECRET: {len(res.frontdoor_keys)} bearer key(s) of the old server left out of stdout; "
                  f"run with --out DIR to get them in DIR/{VAULT_FILE} (mode 0600) for ansible-vault",
                  file=sys.stderr)
    for name in res.secrets_left_out:
        print(f"SECRET: {name} left out (not written anywhere); see its line above", file=sys.stderr)
    return 0


def _plain(v: Any) -> Any:
    """Ansible's tagged and lazy containers as plain Python values."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, dict) or hasattr(v, "items"):
        return {_plain(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


class Unresolved(UsageError):
    """A templated inventory value that cannot be known offline."""


# The inventory variables a plan reads (make_plan, host.from_vars), besides the shared ones.
PLAN_VARS = ("llmhost_experts", "llmhost_lazy_loading", "llmhost_reserved_cores", "llmhost_default_expert",
             "llmhost_start_budget_s", "llmhost_routing", "llmhost_host_profile", "llmhost_core_split",
             "llmhost_host_expect")


def plan_var_names() -> list[str]:
    return [*PLAN_VARS, *(f"llmhost_{k}" for k in asdict(Shared()))]


def resolve_vars(raw: dict[str, Any], templar: Any, inventory: str, vaulted: list[str]) -> dict[str, Any]:
    """The variables a plan reads, with their Jinja resolved as Ansible resolves them; the
    others are left out, so one the plan never reads cannot stop it (the vaulted keys).
    A value that needs what only a live run has (facts, a vault not given, a lookup that
    fails here) is an Unresolved error naming the variable and the item, and how to get
    the authoritative answer."""
    from ansible.errors import AnsibleError  # noqa: PLC0415

    def resolve(v: Any, path: str) -> Any:
        if isinstance(v, str):
            try:
                return _plain(templar.template(v))
            except AnsibleError as e:
                why = " ".join(str(e).split())[:200]
                vault = (f"; encrypted files skipped, llmhost plan reads no vault: {', '.join(vaulted)}"
                         if vaulted else "")
                raise Unresolved(
                    f"inventory {inventory}: {path} = {v!r:.80} cannot be resolved offline ({why}{vault}); "
                    "a value from facts or the host is known only on a live run: the preflight plans it, "
                    f"`ansible-playbook -i {inventory} site.yml --tags preflight --check`") from None
        if isinstance(v, dict) or hasattr(v, "items"):
            return {_plain(k): resolve(x, f"{path}.{k}") for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [resolve(x, f"{path}[{i}]") for i, x in enumerate(v)]
        return _plain(v)

    return {k: resolve(raw[k], k) for k in plan_var_names() if k in raw}


def inventory_hostvars(inventory: str, host: str | None) -> tuple[str, dict[str, Any]]:
    from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415
    from ansible.vars.manager import VariableManager  # noqa: PLC0415

    from ansible.errors import AnsibleError  # noqa: PLC0415

    if not os.path.exists(inventory):
        raise UsageError(f"inventory {inventory}: no such file or directory")
    vaulted: list[str] = []

    class Loader(DataLoader):
        """Skips vault-encrypted vars files (the plan needs no secret) and says so when
        a value needs one."""

        def load_from_file(self, file_name: str, *a: Any, **kw: Any) -> Any:
            path = self.path_dwim(file_name)
            try:
                with open(path, "rb") as f:
                    head = f.read(14)
            except OSError:
                head = b""
            if head == b"$ANSIBLE_VAULT":
                vaulted.append(os.path.relpath(path, inventory if os.path.isdir(inventory) else "."))
                return {}
            return super().load_from_file(file_name, *a, **kw)

    loader = Loader()
    try:
        inv = InventoryManager(loader=loader, sources=[inventory])
    except AnsibleError as e:
        raise UsageError(f"inventory {inventory}: {' '.join(str(e).split())[:240]}") from None
    hosts = [h.name for h in inv.get_hosts("llm_hosts")] or [h.name for h in inv.get_hosts()]
    if not hosts:
        raise UsageError(f"inventory {inventory}: no hosts")
    name = host or hosts[0]
    if name not in hosts:
        raise UsageError(f"inventory {inventory}: no host {name!r} (hosts: {', '.join(hosts)[:200]})")
    vm = VariableManager(loader=loader, inventory=inv)
    try:
        hv = vm.get_vars(host=inv.get_host(name), include_hostvars=False)
    except AnsibleError as e:
        raise UsageError(f"inventory {inventory}: {' '.join(str(e).split())[:240]}") from None
    templar = Templar(loader=loader, variables=hv)
    return name, resolve_vars(hv, templar, inventory, vaulted)


def make_plan(hv: dict[str, Any], *, caps_path: str | None = None, cpuinfo: str | None = None,
              strict: bool = False) -> tuple[Any, Any, str, dict[str, Any]]:
    """The plan of a host's variables: (plan, host, where the host came from, caps).
    ConfigError with one line per problem when it does not work."""
    host, source = host_mod.from_vars(hv)
    if cpuinfo:
        host, cpu_source = host_mod.with_cpuinfo(host, cpuinfo)
        source += f"; {cpu_source}"
    shared = parse_shared({k: hv.get(f"llmhost_{k}") for k in asdict(Shared())})
    caps = load_caps(caps_path, shared.vllm_version)
    reserved = hv.get("llmhost_reserved_cores")
    if reserved is None:
        reserved = default_reserved(len(host.cpus))
    if isinstance(reserved, bool) or not isinstance(reserved, int):
        try:
            reserved = int(str(reserved), 10)
        except ValueError:
            raise ConfigError([f"llmhost_reserved_cores: expected a whole number of CPUs, got {reserved!r:.60}"]) \
                from None
    plan = build_plan(hv.get("llmhost_experts"), hv.get("llmhost_lazy_loading"), caps, host,
                      reserved_cores=int(reserved), strict=strict,
                      weights_bytes=local_weights(hv.get("llmhost_experts")),
                      default_expert=hv.get("llmhost_default_expert") or None, shared=shared,
                      start_budget_s=hv.get("llmhost_start_budget_s", DEFAULT_START_BUDGET_S),
                      routing=hv.get("llmhost_routing"), host_profile=hv.get("llmhost_host_profile"),
                      checkpoints=local_shapes(hv.get("llmhost_experts")),
                      float_sources=float_sources(hv.get("llmhost_experts")),
                      core_split=str(hv.get("llmhost_core_split") or "priority"))
    return plan, host, source, caps


def cmd_plan(args: argparse.Namespace) -> int:
    name, hv = inventory_hostvars(args.inventory, args.host)
    try:
        plan, host, source, caps = make_plan(hv, caps_path=args.caps, cpuinfo=args.cpuinfo, strict=args.strict)
    except ConfigError as e:
        print(f"{name}: the plan does not work:", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"host": name, **plan.to_dict()}, indent=1))
        return 0
    print(f"host {name}: {len(host.cpus)} CPUs, {host.memory_gib:.0f} GiB, {host.arch} "
          f"{host.model or ''} ({source}); "
          f"vLLM {caps.get('vllm_version')}; reserved CPUs: {plan.reserved or 'none'}")
    print(memory_table(plan))
    print()
    print(performance_table(plan))
    for p in plan.experts:
        print(f"\n[{p.expert_id}] port {p.port}, CPUs {p.cpu_list}, names {', '.join(p.names)}")
        if p.translation.dtype:
            print(f"  dtype {p.translation.dtype}")
        if p.translation.compile:
            print(f"  compile {p.translation.compile}")
        if p.quantization_reason:
            print(f"  quantization {p.quantization_reason}")
        print(f"  reference answers: {p.reference or 'none'} ({p.reference_why})")
        print("  argv: " + " ".join(p.translation.argv))
        print("  env:  " + " ".join(f"{k}={v}" for k, v in sorted(p.translation.env.items())))
        for line in p.translation.report:
            print(f"    {line}")
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def read_key_file(path: str) -> str:
    """A bearer key from a file only its owner can read (the smoke test's way: not argv, not env)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError as e:
        raise UsageError(f"--api-key-file {path}: {e.strerror}") from None
    if mode & 0o077:
        raise UsageError(f"--api-key-file {path}: mode {mode:04o} lets others read the key; chmod 600 it")
    key = read_text(path, "--api-key-file").strip()
    if not key:
        raise UsageError(f"--api-key-file {path}: empty")
    return key


def cmd_smoke(args: argparse.Namespace) -> int:
    from . import smoke, smoke_report  # noqa: PLC0415

    baseline = read_baseline(args.baseline) if args.baseline else None   # before minutes of measuring
    cfg = json.loads(read_text(args.config, "--config")) if args.config else None
    if cfg is None:
        import urllib.request  # noqa: PLC0415

        with urllib.request.urlopen(args.url.rstrip("/") + "/v1/models", timeout=30) as r:
            cfg = {"experts": [{"expert_id": m["id"], "runner": (m.get("llmhost") or {}).get("runner", "generate")}
                               for m in json.load(r)["data"]]}
    # pooling (embedding) experts make no tokens: nothing to time or to compare with answers
    experts = [e for e in cfg["experts"] if (not args.expert or e["expert_id"] in args.expert)
               and e.get("runner", "generate") != "pooling"]
    missing = set(args.expert or []) - {e["expert_id"] for e in experts}
    if missing:
        print(f"no such expert: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    folded = cfg.get("folded")
    if folded:
        print(f"FOLDED host: planned for {folded['expected_cpus']} CPUs, running on {folded['host_cpus']}; "
              "answers are checked, latency budgets are not, and no performance figures are reported",
              file=sys.stderr)
    for e in experts:
        if folded:
            e["thresholds"] = {}
        for k, v in (args.threshold or []):
            e.setdefault("thresholds", {})[k] = v
    api_key = args.api_key or os.environ.get("LLMHOST_API_KEY")
    if args.api_key_file:
        api_key = read_key_file(args.api_key_file)
    show = smoke_report.progress_printer()
    numerics_base: dict[str, Any] = {}
    if args.numerics_baseline and Path(args.numerics_baseline).exists():
        try:
            numerics_base = json.loads(read_text(args.numerics_baseline, "--numerics-baseline"))
        except ValueError:
            raise UsageError(f"--numerics-baseline {args.numerics_baseline}: not JSON") from None
        if not isinstance(numerics_base, dict):
            raise UsageError(f"--numerics-baseline {args.numerics_baseline}: not a mapping of expert to entry")
    results = []
    for e in experts:
        results.append(smoke.run_expert(args.url, e, repeat=args.repeat, warmup=args.warmup,
                                        concurrency=args.concurrency, max_tokens=args.max_tokens,
                                        shared_prefix=args.shared_prefix, api_key=api_key, progress=show,
                                        numerics_baseline=numerics_base.get(e["expert_id"])))
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    print(smoke_report.table(results, figures=not folded))
    rep = smoke_report.report(results, {"url": args.url, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "repeat": args.repeat, "concurrency": args.concurrency,
                                 "max_tokens": args.max_tokens, "shared_prefix": args.shared_prefix},
                       figures=not folded)
    if not folded:  # a folded host's figures are not performance figures
        try:
            profile = json.loads(read_text(args.host_profile, "--host-profile")) if args.host_profile else None
        except (UsageError, ValueError) as e:   # costs the comparison, never the smoke test
            profile = {"unreadable": str(e)[:200]}
        rep["performance"] = smoke_report.performance(results, cfg["experts"], profile)
        if rep["performance"]["experts"]:
            print(smoke_report.performance_table(rep["performance"]))
        elif "unusable" in rep["performance"]["profile"]:
            print(f"performance: {rep['performance']['profile']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=1))
        print(f"report: {args.json}")
    if args.chart and not folded:
        smoke_report.chart(results, args.chart)
        print(f"chart: {args.chart}")
    if args.html:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        png = None if folded else smoke_report.chart_png(results)
        perf_rows = smoke_report.performance_rows(rep["performance"]) if rep.get("performance") else []
        Path(args.html).write_text(site_templates.report_page(rep, smoke_report.TABLE_HEADER,
                                                              smoke_report.table_rows(results, figures=not folded), png,
                                                              smoke_report.PERF_HEADER, perf_rows))
        print(f"page: {args.html}")
    misses = [m for r in results for m in r.misses]
    print(smoke_report.numerics_line(results))
    if args.numerics_baseline and not misses:
        new = smoke.updated_baseline(numerics_base, results)
        if new != numerics_base:
            Path(args.numerics_baseline).write_text(json.dumps(new, indent=1, sort_keys=True))
            print(f"numerics baseline: {args.numerics_baseline} "
                  f"(recorded: {', '.join(sorted(k for k in new if new[k] != numerics_base.get(k)))})")
    for r in results:
        if r.reference["status"] == "skipped":
            print(f"SKIP {r.expert_id}: reference probe skipped: {r.reference['why']}")
    for m in misses:
        print(f"FAIL {m}")
    gate_failed = False
    if args.baseline:
        g = gate.compare(rep, baseline, args.max_worse)
        print("\n".join(g.lines))
        gate_failed = not g.passed
        if g.set_baseline and not misses:
            Path(args.baseline).parent.mkdir(parents=True, exist_ok=True)
            Path(args.baseline).write_text(json.dumps(rep, indent=1))
            print(f"baseline: {args.baseline}")
    return 1 if misses or gate_failed else 0


def read_baseline(path: str) -> dict[str, Any] | None:
    """The host's baseline report, or None when there is none yet."""
    if not Path(path).exists():
        return None
    try:
        data = json.loads(read_text(path, "--baseline"))
    except ValueError as e:
        raise UsageError(f"--baseline {path}: not JSON ({str(e).splitlines()[0][:120]}); "
                         "remove it to set a new baseline") from None
    if not isinstance(data, dict) or not isinstance(data.get("experts"), list):
        raise UsageError(f"--baseline {path}: not a smoke report; remove it to set a new baseline")
    return data


def _share(text: str) -> float:
    try:
        return gate.check_max_worse(float(text))
    except ValueError as e:
        msg = str(e) if "max_worse" in str(e) else "a share above 0 and at most 10 (0.25 is 25 %)"
        raise argparse.ArgumentTypeError(f"{msg} ({text!r:.40})") from None


THRESHOLD_NAMES = ("ttft_p50_s", "ttft_p95_s", "tbt_p95_s", "decode_tps_min")
THRESHOLD_MAX = 1e6   # seconds or tokens/s: anything above is a typo


def _threshold(text: str) -> tuple[str, float]:
    k, _, v = text.partition("=")
    if k not in THRESHOLD_NAMES or not v:
        raise argparse.ArgumentTypeError(f"NAME=VALUE with NAME one of {', '.join(THRESHOLD_NAMES)}; "
                                         f"got {text!r:.60}")
    try:
        x = float(v)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or not 0 < x <= THRESHOLD_MAX:
        raise argparse.ArgumentTypeError(f"{k}: a number above 0 and at most {THRESHOLD_MAX:g}, got {v!r:.40}")
    return k, x


def cmd_capabilities(args: argparse.Namespace) -> int:
    print(json.dumps(load_caps(args.caps), indent=1))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """A host profile: measured here (--measure), read from a file the install stage
    wrote (--file), or the inventory's (-i); printed as the YAML an inventory records."""
    from . import hostprofile, perf  # noqa: PLC0415

    if args.measure:
        try:
            raw = hostprofile.measure(quick=args.quick)
        except ImportError:
            raise UsageError("--measure needs torch in this python (the vLLM venv's); the install stage measures "
                             "each host into <venv>/llmhost-host-profile.json: read it with --file "
                             "(docs/performance.md)") from None
    elif args.file:
        text = read_text(args.file, "--file")
        try:
            raw = json.loads(text) if text.lstrip().startswith("{") else hostprofile.from_output(text)
        except ValueError as e:
            raise UsageError(f"--file {args.file}: not a host profile ({e})") from None
    elif args.inventory:
        name, hv = inventory_hostvars(args.inventory, args.host)
        raw = hv.get("llmhost_host_profile")
        if not raw:
            print(f"{name}: no llmhost_host_profile in {args.inventory}; the install stage measures the host "
                  "(docs/performance.md)")
            return 0
    else:
        raise UsageError("give one of --measure, --file FILE or -i INVENTORY")
    if not isinstance(raw, dict):
        raise UsageError(f"the host profile must be a mapping, got {type(raw).__name__.lstrip('_')}")
    prof = perf.parse_profile({k: v for k, v in raw.items() if k != "cached"}, "host profile")
    if prof is None:
        raise UsageError("the profile is empty")
    n_max = max(n for n, _ in prof.read_gbps)
    print(f"# {'ASSUMED' if prof.assumed else 'measured'}: {prof.source}")
    print("# read GB/s by cores: " + ", ".join(f"{n}: {prof.bandwidth_gbps(n):.0f}"
                                                  for n in sorted({1, 2, 4, 8, 16, n_max}) if n <= n_max))
    print(yaml.safe_dump({"llmhost_host_profile": {
        "assumed": prof.assumed, "cpu": prof.cpu, "source": prof.source,
        "read_gbps": {n: b for n, b in prof.read_gbps}, "matmul_gflops": dict(prof.matmul_gflops)}},
        sort_keys=False, width=200), end="")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from . import runner  # noqa: PLC0415

    if not Path(args.inventory).exists():
        raise UsageError(f"-i {args.inventory}: no such inventory")
    extra = [a for a in args.ansible_args if a != "--"]
    print(f"llmhost deploy: {args.playbook} on {args.inventory}" + (f" {' '.join(extra)}" if extra else ""))
    r = runner.run_playbook([args.playbook], args.inventory, args=extra, on_line=print)
    for h in sorted(set(r.changed) | set(r.failed)):
        print(f"{h}: changed {r.changed.get(h, 0)}, failed {r.failed.get(h, 0)}")
    slow = r.task_times()[:3]
    if slow:
        print("slowest: " + "; ".join(f"{t} on {h} {s:.0f} s" for t, h, s in slow))
    print(f"{'done' if r.rc == 0 else 'FAILED'} in {r.seconds:.0f} s (ansible-playbook exit {r.rc})")
    return 0 if r.rc == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    """The command's parser; every option's shape and range is checked by its type."""
    ap = Parser(prog="llmhost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    il = sub.add_parser("import-legacy", help="legacy config*.json -> inventory YAML")
    il.add_argument("file")
    il.add_argument("--arch", default="aarch64", choices=["aarch64", "x86_64"],
                    help="target architecture for the verdicts (default: production's aarch64)")
    il.add_argument("--caps", help=f"capabilities JSON (default: the saved one for vLLM {DEFAULT_VLLM_VERSION})")
    il.add_argument("--out", metavar="DIR", help="write a new inventory here (hosts, host_vars, group_vars) "
                    "instead of the experts YAML on stdout; DIR must not exist or be empty")
    il.add_argument("--host", default="models-europe", type=_host_name,
                    help="the host's name in the new inventory (letters, digits, '.', '-', '_')")
    il.set_defaults(func=cmd_import_legacy)
    pl = sub.add_parser("plan", help="print each expert's cores, memory, argv and env")
    pl.add_argument("-i", "--inventory", required=True, help="the inventory (file or folder)")
    pl.add_argument("--host", type=_host_name, help="the inventory host to plan (default: the first)")
    pl.add_argument("--caps", help="capabilities JSON (default: the saved one for the pinned vLLM)")
    pl.add_argument("--cpuinfo", help="plan for the CPU of this saved /proc/cpuinfo (dtype and ISA rules)")
    pl.add_argument("--strict", action="store_true", help="every dropped key is an error")
    pl.add_argument("--json", action="store_true", help="the plan as JSON on stdout")
    pl.set_defaults(func=cmd_plan)
    sm = sub.add_parser("smoke", help="stream through the front door: TTFT, TBT, tokens/s, coherence")
    sm.add_argument("--url", default="http://127.0.0.1:8082", type=_url, help="the front door")
    sm.add_argument("--config", help="effective config (/etc/llmhost/experts.json) with thresholds; "
                    "default: the front door's /v1/models, no thresholds")
    sm.add_argument("--expert", action="append", type=_expert, help="only this expert (repeatable)")
    sm.add_argument("--repeat", type=_count(*smoke_mod.RANGES["repeat"]), default=5,
                    help="measured requests per stream (1..10000)")
    sm.add_argument("--warmup", type=_count(*smoke_mod.RANGES["warmup"]), default=1,
                    help="unmeasured requests first (0..1000)")
    sm.add_argument("--concurrency", type=_count(*smoke_mod.RANGES["concurrency"]), default=1,
                    help="parallel streams per expert (1..1024; a front door counts at most "
                         "frontdoor_per_source_maxconn connections per address, 64 by default)")
    sm.add_argument("--max-tokens", type=_count(*smoke_mod.RANGES["max_tokens"]), default=64,
                    help="fixed output length of measured requests (1..1048576)")
    sm.add_argument("--shared-prefix", action="store_true", help="a shared long system prompt (prefix caching)")
    sm.add_argument("--threshold", action="append", type=_threshold, metavar="NAME=VALUE",
                    help="override a threshold for every expert")
    sm.add_argument("--api-key", type=_api_key, help="bearer key (or LLMHOST_API_KEY); visible in ps, prefer --api-key-file")
    sm.add_argument("--api-key-file", help="read the bearer key from this file (mode 0600 or stricter)")
    sm.add_argument("--host-profile", metavar="FILE", help="the host's measured profile (JSON, written by the "
                    "install stage): predicted against measured per expert")
    sm.add_argument("--numerics-baseline", metavar="FILE", help="the host's perplexity baseline (JSON): judged "
                    "against, and recorded there for an expert seen the first time or changed, when the run passed")
    sm.add_argument("--json", help="write the JSON report here")
    sm.add_argument("--chart", help="write a PNG chart of TTFT and TBT here")
    sm.add_argument("--html", help="write one HTML page with the table and the chart here")
    sm.add_argument("--baseline", metavar="FILE", help="regression gate: compare with this earlier report "
                    "(written from this run when absent and the run passed)")
    sm.add_argument("--max-worse", type=_share, default=DEFAULT_MAX_WORSE, metavar="SHARE",
                    help=f"with --baseline: how much worse TTFT p50 and TBT p95 may get (default "
                    f"{DEFAULT_MAX_WORSE}, i.e. {DEFAULT_MAX_WORSE * 100:.0f} %%)")
    sm.set_defaults(func=cmd_smoke)
    dp = sub.add_parser("deploy", help="run site.yml (or a stage) with a line per stage and counts at the end")
    dp.add_argument("-i", "--inventory", required=True, help="the inventory (file or folder)")
    dp.add_argument("--playbook", default="site.yml", help="site.yml or playbooks/STAGE.yml")
    dp.add_argument("ansible_args", nargs=argparse.REMAINDER,
                    help="after --: passed to ansible-playbook (--check, --tags, --limit, -e ...)")
    dp.set_defaults(func=cmd_deploy)
    pr = sub.add_parser("profile", help="a host profile (read bandwidth by cores, matmul per core) as inventory YAML")
    src = pr.add_mutually_exclusive_group()
    src.add_argument("--measure", action="store_true", help="measure this machine (needs torch: the vLLM venv)")
    src.add_argument("--file", help="a profile the install stage wrote (<venv>/llmhost-host-profile.json)")
    src.add_argument("-i", "--inventory", help="show the inventory's llmhost_host_profile")
    pr.add_argument("--quick", action="store_true", help="with --measure: fewer runs per point")
    pr.add_argument("--host", type=_host_name, help="with -i: the inventory host (default: the first)")
    pr.set_defaults(func=cmd_profile)
    cp = sub.add_parser("capabilities", help="print the saved vLLM capabilities")
    cp.add_argument("--caps", help="print this capabilities JSON instead (checked first)")
    cp.set_defaults(func=cmd_capabilities)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        check_inputs(args)
        return int(args.func(args))
    except UsageError as e:
        print(f"llmhost {args.cmd}: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"llmhost {args.cmd}: " + "; ".join(e.problems), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `llmhost plan | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"llmhost {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for people; LLMHOST_DEBUG=1 for the traceback
        if os.environ.get("LLMHOST_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"llmhost {args.cmd}: {e.__class__.__name__}: {first} (LLMHOST_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

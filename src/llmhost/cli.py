"""The `llmhost` command.

    llmhost import-legacy FILE [--arch aarch64]   legacy config*.json -> inventory YAML (stdout), report (stderr)
    llmhost plan -i INVENTORY [--host H] [--json]  cores, memory, argv and env per expert
    llmhost capabilities                            the saved capabilities of the pinned vLLM

Both run offline. Exit codes: 0 fine, 1 a rejection or a plan that does not fit, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .capabilities import parse_cpuinfo
from .experts import ConfigError
from .legacy import import_legacy, loads_lenient
from .plan import GIB, Host, build_plan, default_reserved, local_weights, memory_table

DEFAULT_VLLM_VERSION = "0.32.0"


def saved_capabilities(version: str = DEFAULT_VLLM_VERSION) -> dict[str, Any]:
    name = f"capabilities-vllm-{version}.json"
    try:
        text = resources.files("llmhost").joinpath("data", name).read_text()
    except FileNotFoundError:
        raise SystemExit(f"no saved capabilities for vLLM {version} (looked for llmhost/data/{name})") from None
    return json.loads(text)


def load_caps(path: str | None, version: str = DEFAULT_VLLM_VERSION) -> dict[str, Any]:
    if path:
        return json.loads(Path(path).read_text())
    return saved_capabilities(version)


def cmd_import_legacy(args: argparse.Namespace) -> int:
    text = Path(args.file).read_text()
    try:
        data = loads_lenient(text)
    except json.JSONDecodeError as e:
        print(f"{args.file}: not JSON even without comments: {e}", file=sys.stderr)
        return 1
    res = import_legacy(data, load_caps(args.caps), arch=args.arch)
    for line in res.report:
        print(line, file=sys.stderr)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    header = (f"# Imported by `llmhost import-legacy {Path(args.file).name} --arch {args.arch}`.\n"
              "# Every key's verdict went to stderr; rejected keys are left out below.\n")
    sys.stdout.write(header + yaml.safe_dump(res.inventory(), sort_keys=False, allow_unicode=True))
    if res.rejected:
        print(f"\n{len(res.rejected)} rejected:", file=sys.stderr)
        for r in res.rejected:
            print(f"  {r}", file=sys.stderr)
        return 1
    return 0


def inventory_hostvars(inventory: str, host: str | None) -> tuple[str, dict[str, Any]]:
    from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.vars.manager import VariableManager  # noqa: PLC0415

    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[inventory])
    hosts = [h.name for h in inv.get_hosts("llm_hosts")] or [h.name for h in inv.get_hosts()]
    if not hosts:
        raise SystemExit(f"{inventory}: no hosts")
    name = host or hosts[0]
    if name not in hosts:
        raise SystemExit(f"{inventory}: no host {name!r} (hosts: {', '.join(hosts)})")
    vm = VariableManager(loader=loader, inventory=inv)
    hv = vm.get_vars(host=inv.get_host(name), include_hostvars=False)
    return name, {k: v for k, v in hv.items() if k.startswith("llmhost_")}


def cpu_profile(name: str) -> dict[str, Any]:
    """A saved /proc/cpuinfo of a known CPU (llmhost/data/cpuinfo-NAME.txt), parsed."""
    try:
        text = resources.files("llmhost").joinpath("data", f"cpuinfo-{name}.txt").read_text()
    except FileNotFoundError:
        raise SystemExit(f"llmhost_host_expect.cpu: no saved cpuinfo for {name!r}") from None
    return parse_cpuinfo(text, "aarch64" if "neoverse" in name else "x86_64")


def host_from_vars(hv: dict[str, Any]) -> tuple[Host, str]:
    """The host as the inventory describes it (offline), or else this machine."""
    exp = hv.get("llmhost_host_expect")
    if exp:
        info = cpu_profile(exp["cpu"]) if exp.get("cpu") else {"arch": exp.get("arch", "x86_64"), "isa": {}}
        return Host(tuple(range(int(exp["cpus"]))), int(float(exp["memory_gib"]) * GIB),
                    exp.get("arch", info["arch"]), info.get("isa", {}), info.get("model", "")), \
            "from llmhost_host_expect"
    import psutil  # noqa: PLC0415

    with open("/proc/cpuinfo") as f:
        info = parse_cpuinfo(f.read(), os.uname().machine)
    return Host(tuple(sorted(os.sched_getaffinity(0))), psutil.virtual_memory().total, info["arch"],
                info["isa"], info["model"]), "no llmhost_host_expect: this machine's CPUs and memory"


def cmd_plan(args: argparse.Namespace) -> int:
    name, hv = inventory_hostvars(args.inventory, args.host)
    host, source = host_from_vars(hv)
    caps = load_caps(args.caps)
    reserved = hv.get("llmhost_reserved_cores", default_reserved(len(host.cpus)))
    try:
        plan = build_plan(hv.get("llmhost_experts"), hv.get("llmhost_lazy_loading"), caps, host,
                          reserved_cores=int(reserved), strict=args.strict,
                          weights_bytes=local_weights(hv.get("llmhost_experts")))
    except ConfigError as e:
        print(f"{name}: the plan does not work:", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"host": name, **plan.to_dict()}, indent=1))
        return 0
    print(f"host {name}: {len(host.cpus)} CPUs, {host.memory_gib:.0f} GiB, {host.arch} ({source}); "
          f"vLLM {caps.get('vllm_version')}; reserved CPUs: {plan.reserved or 'none'}")
    print(memory_table(plan))
    for p in plan.experts:
        print(f"\n[{p.expert_id}] port {p.port}, CPUs {p.cpu_list}, names {', '.join(p.names)}")
        print("  argv: " + " ".join(p.translation.argv))
        print("  env:  " + " ".join(f"{k}={v}" for k, v in sorted(p.translation.env.items())))
        for line in p.translation.report:
            print(f"    {line}")
    for w in plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_capabilities(args: argparse.Namespace) -> int:
    print(json.dumps(load_caps(args.caps), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llmhost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    il = sub.add_parser("import-legacy", help="legacy config*.json -> inventory YAML")
    il.add_argument("file")
    il.add_argument("--arch", default="aarch64", choices=["aarch64", "x86_64"],
                    help="target architecture for the verdicts (default: production's aarch64)")
    il.add_argument("--caps", help="capabilities JSON (default: the saved one for vLLM 0.32.0)")
    il.set_defaults(func=cmd_import_legacy)
    pl = sub.add_parser("plan", help="print each expert's cores, memory, argv and env")
    pl.add_argument("-i", "--inventory", required=True)
    pl.add_argument("--host")
    pl.add_argument("--caps")
    pl.add_argument("--strict", action="store_true", help="every dropped key is an error")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)
    cp = sub.add_parser("capabilities", help="print the saved vLLM capabilities")
    cp.add_argument("--caps")
    cp.set_defaults(func=cmd_capabilities)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

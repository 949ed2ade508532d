"""The site's own templates, in the repository's top-level `templates/`: the
inventory skeleton `llmhost import-legacy --out` writes and the smoke test's HTML
page. Python decides every value; the templates only print them."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from . import CHECKOUT
from .experts import ConfigError


def template_dir() -> Path:
    """LLMHOST_TEMPLATES, else the checkout llmhost is installed from (editable)."""
    env = os.environ.get("LLMHOST_TEMPLATES")
    d = Path(env) if env else CHECKOUT / "templates"
    if not (d / "smoke-report.html.j2").is_file():
        raise ConfigError([f"site templates not found in {d}: run llmhost from its checkout "
                           "(pip install -e .) or set LLMHOST_TEMPLATES"])
    return d


def render(name: str, **values: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False))
    return env.get_template(name).render(**values)


def report_page(report: Mapping[str, Any], header: Sequence[str], rows: Sequence[Sequence[str]],
                chart_png: bytes | None, perf_header: Sequence[str] = (),
                perf_rows: Sequence[Sequence[str]] = ()) -> str:
    """One HTML page: the smoke table, the chart (embedded, so the page travels
    alone), and every miss and skipped reference, named by expert."""
    notes = [m for e in report["experts"] for m in e["misses"]]
    notes += [f"{e['expert_id']}: reference probe skipped: {e['reference']['why']}"
              for e in report["experts"] if e["reference"]["status"] == "skipped"]
    return render("smoke-report.html.j2", verdict="PASS" if report["passed"] else "FAIL",
                  url=report.get("url", ""), time_utc=report.get("time_utc", ""),
                  settings=[(k, report[k]) for k in ("repeat", "concurrency", "max_tokens", "shared_prefix")
                            if k in report],
                  definitions=report.get("definitions", ""), figures_note=report.get("figures"),
                  header=list(header), rows=[list(r) for r in rows], notes=notes,
                  perf_header=list(perf_header), perf_rows=[list(r) for r in perf_rows],
                  perf_source=(report.get("performance") or {}).get("profile", ""),
                  chart=base64.b64encode(chart_png).decode() if chart_png else None)


def legacy_skeleton(source_name: str, arch: str, host: str, experts_yaml: str) -> dict[str, str]:
    """The files of a new inventory for what import-legacy read: path -> text."""
    header = f"llmhost import-legacy {source_name} --arch {arch}"
    return {
        "hosts.yml": render("import-legacy/hosts.yml.j2", host=host, command=header),
        f"host_vars/{host}.yml": render("import-legacy/host_vars.yml.j2", host=host, arch=arch, command=header),
        "group_vars/llm_hosts/experts.yml": render("import-legacy/experts.yml.j2", command=header,
                                                   experts_yaml=experts_yaml),
        "group_vars/llm_hosts/frontdoor.yml": render("import-legacy/frontdoor.yml.j2", command=header),
    }

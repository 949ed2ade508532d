"""Playbooks run from Python through ansible-runner, read through its events:
changed and failed counts and each task's time, never parsed from the play output.
Used by `llmhost deploy`, the benchmark, the VM reboot test and the test harness."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import CHECKOUT as PROJECT

FINISHED = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")


@dataclass
class PlaybookRun:
    rc: int
    status: str
    stdout: str
    events: list[dict[str, Any]] = field(repr=False)
    # per host, as the recap counts them; a host with no such task is absent
    ok: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)      # failures and unreachable
    seconds: float = 0.0

    def task_times(self) -> list[tuple[str, str, float]]:
        """(task, host, seconds) of every finished task, slowest first."""
        out = [(e["event_data"].get("task", "?"), e["event_data"].get("host", "?"),
                float(e["event_data"].get("duration") or 0)) for e in self.events if e.get("event") in FINISHED]
        return sorted(out, key=lambda x: -x[2])

    def ran(self, task_prefix: str) -> int:
        """How many times a task finished ok on any host."""
        return sum(1 for e in self.events if e.get("event") == "runner_on_ok"
                   and e["event_data"].get("task", "").startswith(task_prefix))


def stage_line(event: Mapping[str, Any]) -> str | None:
    """One progress line per play start and per failed task: what `llmhost deploy` shows."""
    ev, data = event.get("event"), event.get("event_data") or {}
    if ev == "playbook_on_play_start":
        return f"[{time.strftime('%H:%M:%S')}] {data.get('play', '?')}"
    if ev in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
        res = data.get("res") or {}
        msg = " ".join(str(res.get("msg") or res.get("stderr") or "").split())
        # "Task failed: Finalization of ... failed: ... The filter plugin '...' failed: WHAT": keep WHAT
        msg = msg.rsplit("' failed: ", 1)[-1][:300]
        return f"  FAILED {data.get('host', '?')}: {data.get('task', '?')}: {msg}"
    return None


def run_playbook(playbooks: Sequence[str], inventory: str | Path, *, extravars: Mapping[str, Any] | None = None,
                 args: Sequence[str] = (), private_dir: str | Path | None = None, timeout: int | None = None,
                 on_line: Callable[[str], None] | None = None, envvars: Mapping[str, str] | None = None
                 ) -> PlaybookRun:
    """ansible-playbook PLAYBOOKS -i INVENTORY ARGS from the project folder, with the
    project's ansible.cfg and the ansible-playbook beside this Python."""
    import ansible_runner  # noqa: PLC0415 - the CLI's other commands do not need it

    def handler(event: dict[str, Any]) -> bool:
        if on_line and (line := stage_line(event)):
            on_line(line)
        return True

    # without a private dir, a temporary one, removed once its events are read
    pdir = Path(private_dir) if private_dir else Path(tempfile.mkdtemp(prefix="llmhost-runner-"))
    pdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        # with `binary`, ansible-runner leaves the playbooks to the command line
        r = ansible_runner.run(private_data_dir=str(pdir), project_dir=str(PROJECT),
                               binary=str(Path(sys.executable).parent / "ansible-playbook"),
                               cmdline=shlex.join([*playbooks, *args]), inventory=str(inventory),
                               extravars=dict(extravars or {}),
                               envvars={"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                                        **(envvars or {})},
                               quiet=True, timeout=timeout, event_handler=handler)
        events = list(r.events)
        stats = final_stats(events) if events else (r.stats or {})
        failed: dict[str, int] = {}
        for key in ("failures", "dark"):
            for h, n in (stats.get(key) or {}).items():
                failed[h] = failed.get(h, 0) + n
        return PlaybookRun(rc=r.rc, status=r.status, stdout=r.stdout.read(), events=events,
                           ok=dict(stats.get("ok") or {}), changed=dict(stats.get("changed") or {}),
                           failed=failed, seconds=time.monotonic() - t0)
    finally:
        if not private_dir:
            shutil.rmtree(pdir, ignore_errors=True)


def final_stats(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's totals: the last `playbook_on_stats` event. ansible-playbook with
    several playbooks sends one after each, each a running total; ansible-runner's
    own `stats` returns the first, i.e. the first playbook's counts only."""
    last = max((e for e in events if e.get("event") == "playbook_on_stats"), key=lambda e: e.get("counter", 0),
               default=None)
    return dict(last.get("event_data") or {}) if last else {}


def molecule_envvars() -> dict[str, str]:
    """What a playbook run from a Molecule verifier needs beyond run_playbook's
    defaults: Molecule's own ansible.cfg (its connection settings) and the project's
    roles and collections."""
    env = {"ANSIBLE_ROLES_PATH": str(PROJECT / "roles"), "ANSIBLE_COLLECTIONS_PATH": str(PROJECT / "collections")}
    if os.environ.get("ANSIBLE_CONFIG"):
        env["ANSIBLE_CONFIG"] = os.environ["ANSIBLE_CONFIG"]
    return env

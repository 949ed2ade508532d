#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Apply values to /proc/sys and /sys where the kernel lets us; report the rest."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_values
short_description: Write live kernel settings (/proc/sys, /sys) where possible, report where not
description:
  - Each item names a path (shell globs allowed) and a value. For every matching file the
    module reads the current value, writes the wanted one if it differs, and reads it back.
  - A missing path, a read-only file (a container's /sys), a denied write (vm.* in a container)
    or a value the file does not offer is reported per item and is never fatal.
  - Files written by this module are not persistent; persistence belongs to sysctl.d,
    tmpfiles.d and udev files, which the calling role writes.
  - Supports check mode and reports what it would change.
options:
  items:
    description: List of dicts with C(path), C(value) and optional C(name) (a label for the report).
    type: list
    elements: dict
    required: true
author: llmhost toolkit
"""

EXAMPLES = r"""
- name: Apply sysctl values live
  kernel_values:
    items:
      - {name: vm.swappiness, path: /proc/sys/vm/swappiness, value: "10"}
      - {name: thp, path: /sys/kernel/mm/transparent_hugepage/enabled, value: madvise}
"""

RETURN = r"""
report:
  description: One entry per item and matching file, with C(status) one of
    C(already), C(applied), C(would apply), C(missing), C(read-only), C(denied), C(unsupported), C(mismatch).
  type: list
  returned: always
"""

import errno
import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule

_BRACKET = re.compile(r"\[([^\]]+)\]")


def current_value(raw: str) -> tuple[str, list[str] | None]:
    """Return (selected, choices) for files like "always [madvise] never"; plain values
    come back whitespace-normalised with no choices."""
    raw = raw.strip()
    m = _BRACKET.search(raw)
    if m:
        choices = [c.strip("[]") for c in raw.split()]
        return m.group(1), choices
    return " ".join(raw.split()), None


def apply_one(path: str, want: str, check: bool) -> dict:
    want_n = " ".join(str(want).split())
    try:
        with open(path) as f:
            before, choices = current_value(f.read())
    except FileNotFoundError:
        return {"path": path, "status": "missing", "wanted": want_n}
    except OSError as e:
        return {"path": path, "status": "denied", "wanted": want_n, "error": e.strerror}
    res = {"path": path, "before": before, "wanted": want_n}
    if before == want_n:
        return {**res, "status": "already"}
    if choices is not None and want_n not in choices:
        return {**res, "status": "unsupported", "choices": choices}
    if not os.access(path, os.W_OK):
        return {**res, "status": "read-only"}
    if check:
        return {**res, "status": "would apply"}
    try:
        with open(path, "w") as f:
            f.write(want_n + "\n")
    except OSError as e:
        status = "read-only" if e.errno in (errno.EROFS, errno.EACCES) else "denied"
        return {**res, "status": status, "error": e.strerror}
    with open(path) as f:
        after, _ = current_value(f.read())
    return {**res, "after": after, "status": "applied" if after == want_n else "mismatch"}


def main() -> None:
    module = AnsibleModule(
        argument_spec={"items": {"type": "list", "elements": "dict", "required": True}},
        supports_check_mode=True,
    )
    report = []
    changed = False
    for item in module.params["items"]:
        path = item.get("path")
        if not path or "value" not in item:
            module.fail_json(msg=f"each item needs path and value, got {item!r}")
        paths = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        if not paths:
            report.append({"name": item.get("name", path), "path": path, "status": "missing",
                           "wanted": str(item["value"])})
            continue
        for p in paths:
            r = apply_one(p, str(item["value"]), module.check_mode)
            r["name"] = item.get("name", p)
            changed |= r["status"] in ("applied", "would apply", "mismatch")
            report.append(r)
    module.exit_json(changed=changed, report=report)


if __name__ == "__main__":
    main()

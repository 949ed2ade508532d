"""Shared pytest setup: the repo root and the harness on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "collections/ansible_collections/llmhost/toolkit/plugins/modules"))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))

"""os_tuning on a real kernel: vm.swappiness, THP and the I/O scheduler hold after a reboot
(the rootfs has no udev until the role installs it).

Boots a QEMU TCG VM (scripts/vm_reboot_test.py) from the same rootfs as the test hosts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.testhost, pytest.mark.full]


def test_values_hold_after_reboot():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/vm_reboot_test.py")], capture_output=True, text=True,
                       timeout=1500, check=False)
    print(r.stderr[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["held"]
    assert res["after_converge"] == {"swappiness": "10", "thp": "madvise", "sched": "mq-deadline"}
    assert res["after_reboot"] == {"swappiness": "10", "thp": "madvise", "sched": "mq-deadline"}
    assert all(res["before"][k] != res["after_converge"][k] for k in res["before"])  # every value changed by the role

"""The kernel_values module's core against real files standing in for /proc and /sys."""

import os

import kernel_values as kv


def test_current_value_parses_bracketed_choices():
    assert kv.current_value("always [madvise] never\n") == ("madvise", ["always", "madvise", "never"])
    assert kv.current_value("4096\t65000\n") == ("4096 65000", None)


def test_apply_writes_and_reads_back(tmp_path):
    f = tmp_path / "swappiness"
    f.write_text("60\n")
    assert kv.apply_one(str(f), "10", check=False)["status"] == "applied"
    assert f.read_text() == "10\n"
    assert kv.apply_one(str(f), "10", check=False)["status"] == "already"


def test_check_mode_changes_nothing(tmp_path):
    f = tmp_path / "somaxconn"
    f.write_text("4096\n")
    assert kv.apply_one(str(f), "65535", check=True)["status"] == "would apply"
    assert f.read_text() == "4096\n"


def test_missing_readonly_unsupported(tmp_path):
    assert kv.apply_one(str(tmp_path / "nope"), "1", check=False)["status"] == "missing"
    ro = tmp_path / "ro"
    ro.write_text("[none] mq-deadline\n")
    assert kv.apply_one(str(ro), "bfq", check=False)["status"] == "unsupported"
    os.chmod(ro, 0o444)
    if os.geteuid() != 0:  # root ignores file modes; the container case is EROFS
        assert kv.apply_one(str(ro), "mq-deadline", check=False)["status"] == "read-only"

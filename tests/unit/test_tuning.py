import pytest

from llmhost import tuning


def test_merge_sysctl_override_wins_and_is_sorted():
    merged = tuning.merge_sysctl({"vm.swappiness": 10, "net.core.somaxconn": 65535},
                                 {"vm.swappiness": 1, "net.ipv4.tcp_fin_timeout": 20})
    assert merged == {"net.core.somaxconn": "65535", "net.ipv4.tcp_fin_timeout": "20", "vm.swappiness": "1"}
    assert list(merged) == sorted(merged)


def test_sysctl_values_normalised():
    assert tuning.sysctl_value(True) == "1"
    assert tuning.sysctl_value([1024, 65000]) == "1024 65000"
    assert tuning.sysctl_value("4096\t 87380  ") == "4096 87380"


@pytest.mark.parametrize("bad", ["", ".vm", "vm..x", "vm/swappiness"])
def test_bad_sysctl_key_rejected(bad):
    with pytest.raises(ValueError):
        tuning.sysctl_path(bad)


def test_sysctl_items_paths():
    assert tuning.sysctl_items({"net.core.somaxconn": "65535"}) == [
        {"name": "net.core.somaxconn", "path": "/proc/sys/net/core/somaxconn", "value": "65535"}]


def test_sysfs_items_skip_governor_without_cpufreq():
    items = tuning.sysfs_items(True, "madvise", "madvise", True, "performance", False)
    assert [i["name"] for i in items] == ["thp enabled", "thp defrag"]
    items = tuning.sysfs_items(False, "madvise", "madvise", True, "performance", True)
    assert items == [{"name": "cpu governor", "path": tuning.GOVERNOR_GLOB, "value": "performance"}]


def test_iosched_items_use_udev_glob_under_sys_block():
    assert tuning.iosched_items([{"kernel": "nvme[0-9]*n[0-9]*", "scheduler": "none"}])[0]["path"] == \
        "/sys/block/nvme[0-9]*n[0-9]*/queue/scheduler"


def test_explain_names_each_unapplied_setting_with_reason():
    lines = tuning.explain([
        {"name": "vm.swappiness", "status": "read-only"},
        {"name": "net.core.somaxconn", "status": "applied"},
        {"name": "net.core.netdev_max_backlog", "status": "missing"},
        {"name": "io scheduler nvme", "path": "/sys/block/nvme*/queue/scheduler", "status": "missing"},
    ], governor_enabled=True, cpufreq_present=False)
    assert lines[0].startswith("cpu governor: skipped")
    assert any(l.startswith("vm.swappiness: read-only") for l in lines)
    assert any(l.startswith("net.core.netdev_max_backlog: missing, this kernel has no such") for l in lines)
    assert not any("nvme" in l for l in lines)  # no such disk here is not a problem
    assert tuning.explain([{"name": "x", "status": "already"}], False, False) == ["every setting is live"]

"""Thin Jinja filters over the llmhost package (the logic and its tests live there)."""

from __future__ import annotations

from llmhost import tuning


class FilterModule:
    def filters(self):
        return {
            "merge_sysctl": tuning.merge_sysctl,
            "sysctl_items": tuning.sysctl_items,
            "sysfs_items": tuning.sysfs_items,
            "iosched_items": tuning.iosched_items,
            "tuning_explain": tuning.explain,
        }

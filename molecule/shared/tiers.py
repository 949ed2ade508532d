"""The test tier inside a scenario's testinfra run (docs/testing.md).

`make test` sets LLMHOST_TEST_TIER=test: the scenario's tests marked `full` (the
disruptive failure paths and the slow cross-checks) are deselected, and pytest
says how many. `make test-all` and `make scenario S=NAME` set `all`; run by hand
(no tier set), a scenario is whole. A scenario's conftest imports the hook."""

import os


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLMHOST_TEST_TIER", "all") == "all":
        return
    drop = [i for i in items if i.get_closest_marker("full")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if not i.get_closest_marker("full")]

"""What `llmhost deploy` shows from ansible-runner's events (the events of a real run
are read in tests/integration/test_preflight_bad_input.py)."""

from llmhost import runner


def test_a_line_per_play_and_per_failed_task():
    assert runner.stage_line({"event": "playbook_on_play_start", "event_data": {"play": "Tune the OS"}}).endswith(
        "] Tune the OS")
    msg = ("Task failed: Finalization of task args for 'ansible.builtin.set_fact' failed: Error while resolving "
           "value for 'llmhost_plan_host': The filter plugin 'llmhost.toolkit.plan' failed: the experts config "
           "cannot work: expert 'general' field 'priority': required")
    line = runner.stage_line({"event": "runner_on_failed", "event_data": {
        "host": "h1", "task": "Plan", "res": {"msg": msg}}})
    assert line == ("  FAILED h1: Plan: the experts config cannot work: expert 'general' field 'priority': "
                    "required")
    assert runner.stage_line({"event": "runner_on_failed", "event_data": {"ignore_errors": True, "res": {}}}) is None
    assert runner.stage_line({"event": "runner_on_ok", "event_data": {"task": "x"}}) is None


def test_task_times_and_counts_come_from_events():
    ev = [{"event": "runner_on_ok", "event_data": {"task": "Probe the host CPU", "host": "h", "duration": 1.5}},
          {"event": "runner_on_ok", "event_data": {"task": "Render", "host": "h", "duration": 4}},
          {"event": "runner_on_failed", "event_data": {"task": "Gate", "host": "h", "duration": 9}}]
    r = runner.PlaybookRun(rc=2, status="failed", stdout="", events=ev)
    assert r.task_times() == [("Gate", "h", 9.0), ("Render", "h", 4.0), ("Probe the host CPU", "h", 1.5)]
    assert r.ran("Probe the host") == 1 and r.ran("Gate") == 0


def test_counts_are_the_whole_runs_not_the_first_playbooks(tmp_path):
    """Two playbooks in one run: ansible-playbook sends a stats event after each (a
    running total); the run's counts are the last. ansible-runner's own `stats` is
    the first, which left a failure in a later playbook uncounted."""
    pb = tmp_path / "pb.yml"
    pb.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                  "    - ansible.builtin.command: 'true'\n      changed_when: true\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                   "    - ansible.builtin.command: 'false'\n")
    r = runner.run_playbook([str(pb), str(pb)], "localhost,", args=["-c", "local"])
    assert r.rc == 0 and r.changed == {"localhost": 2} and r.ok == {"localhost": 2}, (r.changed, r.ok)
    r = runner.run_playbook([str(pb), str(bad)], "localhost,", args=["-c", "local"])
    assert r.rc != 0 and r.failed == {"localhost": 1} and r.changed == {"localhost": 1}, (r.failed, r.changed)


def test_final_stats_takes_the_last_running_total():
    ev = [{"event": "playbook_on_stats", "counter": 18, "event_data": {"changed": {"h": 4}}},
          {"event": "playbook_on_stats", "counter": 9, "event_data": {"changed": {"h": 2}}},
          {"event": "runner_on_ok", "counter": 20, "event_data": {}}]
    assert runner.final_stats(ev) == {"changed": {"h": 4}}
    assert runner.final_stats([]) == {}

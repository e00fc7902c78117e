"""notify.d hooks run as the daemon's user (root), so only a hook that user alone can change runs, as
keepalived's enable_script_security: the file, the one a symlink leads to and every directory above
them up to / are root's or the daemon's, and writable by no one else (a sticky directory such as
/tmp aside). A refused hook is logged once with the reason and counted. No root needed (as root,
the tests also hand files to nobody)."""
import os

import pytest

import heartbeat as hb
from fakes import Recorder, common, run, tutorial_confdir

NOBODY = 65534
HOOK = '#!/bin/sh\necho "$0 $1" >> "$(dirname "$0")/../record"\n'


def hook(directory, name="record", mode=0o755, body=HOOK):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(body)
    os.chmod(path, mode)
    return path


def other_group(path):
    """Give path to a group other than root's (a user's own group is not root's already)."""
    if os.geteuid() == 0:
        os.chown(path, -1, NOBODY)


@pytest.fixture()
def confdir(tmp_path):
    directory = tmp_path / "ha.d"
    os.makedirs(directory / hb.NOTIFY_DIR)
    return str(directory)


def test_a_hook_only_its_owner_can_change_may_run(confdir):
    path = hook(os.path.join(confdir, hb.NOTIFY_DIR))
    assert hb.hook_problem(path, os.geteuid()) is None


@pytest.mark.parametrize("mode", [0o757, 0o777, 0o722], ids=oct)
def test_a_hook_others_may_write_is_refused(confdir, mode):
    path = hook(os.path.join(confdir, hb.NOTIFY_DIR), mode=mode)
    assert hb.hook_problem(path, os.geteuid()) == f"{path} is writable by other users"


def test_a_hook_its_group_may_write_is_refused(confdir):
    path = hook(os.path.join(confdir, hb.NOTIFY_DIR), mode=0o775)
    other_group(path)
    assert hb.hook_problem(path, os.geteuid()) == f"{path} is writable by group {os.stat(path).st_gid}"


def test_a_directory_above_others_may_write_is_refused(confdir):
    notify_d = os.path.join(confdir, hb.NOTIFY_DIR)
    path = hook(notify_d)
    os.chmod(confdir, 0o777)
    assert hb.hook_problem(path, os.geteuid()) == f"{confdir} is writable by other users"
    os.chmod(confdir, 0o1777)                                   # sticky, as /tmp: only an entry's owner replaces it
    assert hb.hook_problem(path, os.geteuid()) is None
    os.chmod(notify_d, 0o777)
    assert hb.hook_problem(path, os.geteuid()) == f"{notify_d} is writable by other users"


def test_a_symlink_is_judged_by_where_it_leads(confdir, tmp_path):
    elsewhere = str(tmp_path / "anyone")
    target = hook(elsewhere, "page")
    link = os.path.join(confdir, hb.NOTIFY_DIR, "page")
    os.symlink(target, link)
    assert hb.hook_problem(link, os.geteuid()) is None
    os.chmod(elsewhere, 0o777)
    assert hb.hook_problem(link, os.geteuid()) == f"{elsewhere} is writable by other users"


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
def test_a_hook_of_another_user_is_refused(confdir):
    path = hook(os.path.join(confdir, hb.NOTIFY_DIR))
    os.chown(path, NOBODY, -1)
    assert hb.hook_problem(path, 0) == f"{path} belongs to uid {NOBODY}, not to root"
    os.chown(path, 0, -1)
    os.chown(os.path.join(confdir, hb.NOTIFY_DIR), NOBODY, -1)
    assert hb.hook_problem(path, 0) == f"{os.path.join(confdir, hb.NOTIFY_DIR)} belongs to uid {NOBODY}, not to root"


def event(kind="node-dead"):
    return hb.Event(kind, 0.0, 0.0, {"node": "calc"})


def test_the_notifier_runs_safe_hooks_and_refuses_the_others_once_with_the_reason(confdir):
    """It ran any executable with a run-parts name, as root, whoever could write it."""
    notify_d = os.path.join(confdir, hb.NOTIFY_DIR)
    good, bad = hook(notify_d, "a-good"), hook(notify_d, "b-bad", mode=0o777)
    log = Recorder()
    notifier = hb.Notifier(confdir, "prime", 5.0, log)
    for kind in ("node-dead", "group-acquired", "node-up"):
        notifier(event(kind))
    notifier.drain()
    with open(os.path.join(confdir, "record"), encoding="utf-8") as handle:
        assert handle.read().splitlines() == [f"{good} node-dead", f"{good} group-acquired", f"{good} node-up"]
    refusals = [line for line in log.lines if "b-bad" in line]
    assert refusals == [f"error: notify hook {bad} not run: {bad} is writable by other users (a hook runs as "
                        "this daemon's user: it and every directory above it must be root's, and writable by "
                        "root alone)"]
    assert notifier.refused == {bad: 3}
    os.chmod(bad, 0o755)                                        # fixed: it runs from the next event on
    notifier(event("node-dead"))
    notifier.drain()
    with open(os.path.join(confdir, "record"), encoding="utf-8") as handle:
        assert handle.read().splitlines()[-2:] == [f"{good} node-dead", f"{bad} node-dead"]


def test_check_lists_the_hooks_it_would_run_and_why_not_the_others(tmp_path):
    confdir = tutorial_confdir(tmp_path)
    notify_d = os.path.join(confdir, hb.NOTIFY_DIR)
    hook(notify_d, "mail")
    bad = hook(notify_d, "page", mode=0o777)
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "  notify:    mail (in notify.d)\n" in result.stdout
    assert f"    page will not run: {bad} is writable by other users (a hook runs as" in result.stdout


REPORT = {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active", "pid": 1,
          "auto_failback": "on", "nodes": {}, "links": [], "counters": {}, "groups": []}


def test_status_and_metrics_count_the_refused_hooks():
    report = dict(REPORT, notify_refused={"/etc/ha.d/notify.d/page": 3})
    assert ('heartbeat_notify_hooks_refused_total{hook="page"} 3' in hb.prometheus_text(report).splitlines())
    assert hb.format_status(report).splitlines()[-1] == ("notify hooks not run (another user could change them; "
                                                         "the log says why): page 3")
    assert "notify hooks" not in hb.format_status(dict(REPORT, notify_refused={}))


# ---------------------------------------------------------------- the hooks thread survives what it is handed

def test_a_nul_byte_in_an_event_detail_neither_kills_the_thread_nor_loses_the_next_events(confdir):
    """A start script's first output line becomes a group-failed detail; with a NUL in it the hook's
    argv made Popen raise ValueError and the notify thread died: every later event was lost and a
    clean stop waited the whole drain."""
    good = hook(os.path.join(confdir, hb.NOTIFY_DIR), "a-good",
                body='#!/bin/sh\nprintf "%s %s %s\\n" "$0" "$1" "$5" >> "$(dirname "$0")/../record"\n')
    notifier = hb.Notifier(confdir, "prime", 5.0, Recorder())
    notifier(hb.Event("group-failed", 0.0, 0.0, {"group": "apache"}, "bad\x00line"))
    notifier(event("node-up"))
    notifier.drain()
    assert notifier.queue.unfinished_tasks == 0 and notifier.thread.is_alive()
    with open(os.path.join(confdir, "record"), encoding="utf-8") as handle:
        assert handle.read().splitlines() == [f"{good} group-failed bad\\0line", f"{good} node-up "]


def test_an_exception_in_the_hooks_thread_is_logged_counted_and_the_next_event_still_runs(confdir, monkeypatch):
    notify_d = os.path.join(confdir, hb.NOTIFY_DIR)
    good = hook(notify_d, "a-good")
    log, events = Recorder(), hb.EventLog()
    faults = hb.Faults(log, events)
    notifier = hb.Notifier(confdir, "prime", 5.0, log, faults)
    events.listeners.append(notifier)
    real = hb.Notifier.run

    def broken(self, path, event):
        if event.kind == "node-dead":
            raise RuntimeError("a bug")
        real(self, path, event)
    monkeypatch.setattr(hb.Notifier, "run", broken)
    events.record("node-dead", node="calc")
    notifier.drain()
    events.record("node-up", node="calc")
    notifier.drain()
    assert notifier.queue.unfinished_tasks == 0
    with open(os.path.join(confdir, "record"), encoding="utf-8") as handle:   # the internal-error event ran it too
        assert handle.read().splitlines() == [f"{good} internal-error", f"{good} node-up"]
    (line,) = [line for line in log.lines if "internal error" in line]
    assert line.startswith("error: internal error in notify (please report): Traceback (most recent call last):")
    assert "RuntimeError: a bug" in line
    assert faults.counts == {"notify": 1} and events.counts["internal-error"] == 1
    report = dict(REPORT, internal_errors=dict(faults.counts), event_counts=dict(events.counts))
    assert 'heartbeat_internal_errors_total{where="notify"} 1' in hb.prometheus_text(report).splitlines()
    assert 'heartbeat_events_total{kind="internal-error"} 1' in hb.prometheus_text(report).splitlines()
    assert hb.format_status(report).splitlines()[-1] == ("internal errors (please report; the log has each "
                                                         "traceback): notify 1")


def test_a_fault_that_repeats_is_one_event_per_interval_and_never_feeds_on_its_own_events():
    log, events, clock = Recorder(), hb.EventLog(), [100.0]
    faults = hb.Faults(log, events, clock=lambda: clock[0])
    for _ in range(5):
        faults("event loop", ValueError("again"))
    assert faults.counts == {"event loop": 5} and events.counts["internal-error"] == 1
    clock[0] += hb.FAULT_EVENT_INTERVAL_S
    faults("event loop", ValueError("again"))
    assert events.counts["internal-error"] == 2
    assert events.snapshot()[-1]["detail"] == "event loop: ValueError: again (4 more since the last event)"
    faults("notify", ValueError("x"), event=False)
    assert events.counts["internal-error"] == 2 and faults.counts["notify"] == 1

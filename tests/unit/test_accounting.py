"""Service accounting: each group's service processes (what its start scripts left running, in their
sessions, and their descendants) counted with psutil when it is installed, on real processes the
tests start; and without psutil (hidden from the import), the numbers absent and `status` saying
how to get them. Every process started here is killed by its pid."""
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest

import heartbeat as hb
from fakes import Clock, scripts_config
from paths import ROOT

SLEEPS = 5
# start: SLEEPS `sleep`s left in the script's session, and one that makes a session of its own
# under a shell that stays in ours (a descendant all the same); every pid into the pid file
SERVICE = f"""#!/bin/sh
pids="$(dirname "$0")/../$1.pids"
case "$2" in
start)
    for i in $(seq {SLEEPS}); do sleep 300 & echo $! >> "$pids"; done
    sh -c 'echo $$ >> "$1"; setsid sleep 300 & echo $! >> "$1"; wait' sh "$pids" &
    sleep 0.2 ;;
stop) [ -f "$pids" ] && kill $(cat "$pids") 2>/dev/null; rm -f "$pids" ;;
status) [ -f "$pids" ] && echo running || echo stopped ;;
esac
exit 0
"""


class Lines:
    def __getattr__(self, level):
        return lambda message, *a: None


def pids_in(path):
    return [int(word) for word in path.read_text().split()] if path.exists() else []


def kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture()
def service(tmp_path):
    """A configuration whose group `service::web` runs SERVICE; its Resources; the pid file."""
    cfg = scripts_config(tmp_path, {"service": SERVICE}, "prime service::web\n")
    resources = hb.Resources(cfg, Lines())
    pidfile = tmp_path / "web.pids"
    try:
        yield cfg, resources, pidfile
    finally:
        kill_all(pids_in(pidfile))


def daemon_for(cfg, resources, accounting):
    """What Daemon.groups_report reads: the configuration, the policy's snapshot and its resources."""
    snapshot = [{"key": g.key, "home": g.home, "resources": [r.spec for r in g.resources], "owner": "prime",
                 "state": "running", "fault": None, "failures": 0, "takeovers": 1, "releases": 0,
                 "start_failures": 0, "stop_failures": 0, "last_takeover_s": 0.3, "last_release_s": None}
                for g in cfg.groups]
    daemon = types.SimpleNamespace(config=cfg, accounting=accounting,
                                   policy=types.SimpleNamespace(resources=resources, snapshot=lambda: snapshot))
    daemon.service_roots = lambda: hb.Daemon.service_roots(daemon)
    return daemon


def report_with(groups, psutil_version):
    return {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active",
            "pid": 1, "auto_failback": "on", "nodes": {}, "links": [], "counters": {}, "groups": groups,
            "psutil": psutil_version, "events": []}


def test_a_groups_service_processes_are_its_start_scripts_session_and_their_descendants(service):
    psutil = pytest.importorskip("psutil")
    cfg, resources, pidfile = service
    assert resources.acquire_group(cfg.groups[0]) is None
    started = pids_in(pidfile)
    assert len(started) == SLEEPS + 2
    outsider = subprocess.Popen(["sleep", "300"])            # ours, not the group's
    try:
        groups = hb.Daemon.groups_report(daemon_for(cfg, resources, hb.ServiceAccounting()))
        usage = groups[0]["processes"]
        assert usage["pids"] == sorted(started) and usage["count"] == SLEEPS + 2
        assert outsider.pid not in usage["pids"]
        assert usage["rss_bytes"] == sum(psutil.Process(pid).memory_info().rss for pid in started)
        assert usage["open_fds"] >= 3 * usage["count"]        # each has stdin, stdout and stderr at least
        assert 0 <= usage["uptime_s"] < 60 and usage["cpu_seconds"] >= 0
        assert resources.release_group(cfg.groups[0]) is True
        assert "processes" not in hb.Daemon.groups_report(daemon_for(cfg, resources, hb.ServiceAccounting()))[0]
    finally:
        outsider.kill()
        outsider.wait()


def test_a_collection_is_kept_a_second_unless_the_sessions_change_and_an_ended_session_stays_ended(service):
    pytest.importorskip("psutil")
    cfg, resources, pidfile = service
    assert resources.acquire_group(cfg.groups[0]) is None
    clock = Clock()
    accounting = hb.ServiceAccounting(clock=clock)
    roots = hb.Daemon.service_roots(daemon_for(cfg, resources, accounting))
    first = accounting.groups(roots)["service::web"]
    assert first["count"] == SLEEPS + 2
    kill_all(pids_in(pidfile))
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in pids_in(pidfile)) and time.monotonic() < deadline:
        time.sleep(0.02)
    clock.now += hb.ACCOUNTING_CACHE_S / 2
    assert accounting.groups(roots)["service::web"] is first            # the cached one
    other = {"other": hb.ServiceRoots((os.getsid(0),))}
    assert accounting.groups(other)["other"]["count"] >= 1              # other sessions: made again at once
    clock.now += hb.ACCOUNTING_CACHE_S
    assert accounting.groups(roots)["service::web"]["count"] == 0
    assert accounting.ended == set(roots["service::web"].sessions)       # a process given its id later is another's


def test_the_cost_of_one_collection_for_a_group_of_fifty_processes(tmp_path):
    """Measured, printed (pytest -s) and bounded: the loop makes one at most once a second."""
    pytest.importorskip("psutil")
    result = hb.run_command(["sh", "-c", 'for i in $(seq 50); do sleep 300 & echo $! >> "$1"; done',
                             "sh", str(tmp_path / "pids")], 10)
    pids = pids_in(tmp_path / "pids")
    try:
        roots = {"big": hb.ServiceRoots((result.pid,))}
        runs, started, cpu = 20, time.perf_counter(), time.process_time()
        for _ in range(runs):
            usage = hb.ServiceAccounting().groups(roots)["big"]
        took_ms = (time.perf_counter() - started) / runs * 1000
        cpu_ms = (time.process_time() - cpu) / runs * 1000
        print(f"\none collection, 50 service processes, {len(hb.process_table())} on the host: {took_ms:.1f} ms "
              f"({cpu_ms:.1f} ms of CPU)")
        assert usage["count"] == 50
        assert cpu_ms < 50                  # about 7 ms on an idle 2-core test machine
    finally:
        kill_all(pids)


def test_without_psutil_the_numbers_are_absent_and_status_says_how_to_get_them(service, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)           # `import psutil` raises ImportError
    cfg, resources, pidfile = service
    assert resources.acquire_group(cfg.groups[0]) is None
    accounting = hb.ServiceAccounting()
    groups = hb.Daemon.groups_report(daemon_for(cfg, resources, accounting))
    assert "processes" not in groups[0] and accounting.version is None
    report = report_with(groups, accounting.version)
    text = hb.format_status(report)
    assert text.splitlines()[-1] == ("service processes: not counted (needs psutil: apt install python3-psutil "
                                     "(Debian, Ubuntu) or dnf install python3-psutil (RHEL, Fedora))")
    assert "heartbeat_group_process" not in hb.prometheus_text(report)
    assert "Service processes are not counted: psutil is not installed" in hb.html_page(report)
    assert "not counted" not in hb.format_status(report_with([], None))         # no group: nothing to count
    assert "not counted" not in hb.format_status(report_with(groups, "7.0.0"))


def test_status_the_page_and_the_metrics_show_each_groups_service_processes(service, tmp_path):
    psutil = pytest.importorskip("psutil")
    cfg, resources, pidfile = service
    assert resources.acquire_group(cfg.groups[0]) is None
    accounting = hb.ServiceAccounting()
    groups = hb.Daemon.groups_report(daemon_for(cfg, resources, accounting))
    report = report_with(groups, accounting.version)
    assert report["psutil"] == psutil.__version__
    usage = groups[0]["processes"]
    line = hb.format_status(report).splitlines()[-1]
    shown = " ".join(str(pid) for pid in usage["pids"])
    assert line.startswith(f"  {SLEEPS + 2} service process(es) (pid {shown}): CPU ")
    assert f"{usage['open_fds']} open files, up " in line
    assert f"<td>{SLEEPS + 2} service process(es) (pid {shown}): CPU" in hb.html_page(report)
    metrics = hb.prometheus_text(report)
    assert f'heartbeat_group_processes{{group="service::web"}} {SLEEPS + 2}' in metrics.splitlines()
    assert f'heartbeat_group_process_resident_memory_bytes{{group="service::web"}} {usage["rss_bytes"]}' \
        in metrics.splitlines()
    for name, kind in (("heartbeat_group_process_cpu_seconds_total", "counter"),
                       ("heartbeat_group_process_open_fds", "gauge"),
                       ("heartbeat_group_process_uptime_seconds", "gauge")):
        assert f"# TYPE {name} {kind}" in metrics and f'{name}{{group="service::web"}} ' in metrics
    parser = pytest.importorskip("prometheus_client.parser")
    families = {family.name: family for family in parser.text_string_to_metric_families(metrics)}
    assert families["heartbeat_group_process_cpu_seconds"].type == "counter"
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True,
                               timeout=30, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_many_pids_are_shown_in_part():
    usage = {"count": 12, "pids": list(range(100, 112)), "cpu_seconds": 1.5, "rss_bytes": 3 * hb.MIB,
             "open_fds": 40, "uptime_s": 61.2}
    assert hb.process_summary(usage) == ("12 service process(es) (pid 100 101 102 103 104 105 106 107 ...): "
                                         "CPU 1.50 s, RSS 3.0 MiB, 40 open files, up 61 s")
    assert hb.process_summary(dict(usage, count=0, pids=[], uptime_s=None)).startswith("no service process")


def test_psutil_is_imported_by_the_first_report_never_before_and_tried_again_a_minute_later():
    loads, clock = [], Clock()
    accounting = hb.ServiceAccounting(clock=clock, load=lambda: loads.append("psutil"))
    assert loads == []                              # the daemon makes one at start: no import yet
    assert accounting.groups({}) is None and accounting.version is None
    assert loads == ["psutil"]                      # one attempt, remembered
    clock.now += hb.PSUTIL_RETRY_S - 0.1
    assert accounting.version is None and loads == ["psutil"]
    module = types.SimpleNamespace(__version__="7.0.0")
    accounting.load = lambda: loads.append("psutil") or module      # installed meanwhile
    clock.now += 0.1
    assert accounting.version == "7.0.0" and len(loads) == 2
    clock.now += hb.PSUTIL_RETRY_S
    assert accounting.version == "7.0.0" and len(loads) == 2        # found: never imported again


def test_the_readme_names_each_series_and_how_to_install_psutil_and_ci_installs_it():
    usage = {"count": 1, "pids": [1], "cpu_seconds": 0.5, "rss_bytes": 4096, "open_fds": 3, "uptime_s": 9.0}
    metrics = hb.prometheus_text(report_with([{"key": "web", "home": "prime", "owner": "prime", "state": "running",
                                               "fault": None, "takeovers": 1, "releases": 0, "start_failures": 0,
                                               "stop_failures": 0, "last_takeover_s": None, "last_release_s": None,
                                               "processes": usage}], "7.0.0"))
    names = {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE heartbeat_group_process")}
    assert len(names) == 5
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert all(f"`{name}`" in readme for name in names), names
    assert "`apt install python3-psutil` (Debian, Ubuntu)" in readme and "`dnf install python3-psutil`" in readme
    schema = readme.split("`status --json` prints one object:", 1)[1].split("\n\n", 1)[0]
    assert "`processes`" in schema and "`psutil`" in schema
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        ci = handle.read()
    assert "need_apt+=(python3-psutil)" in ci and "|| pip_install psutil" in ci


def test_the_process_table_skips_what_is_not_a_stat_line(tmp_path):
    """A name may hold ')' and spaces; an empty or cut file (a process exiting) is left out, not an error."""
    for pid, text in ((10, "10 (a) b)  c) S 1 10 10 0 -1"), (11, ""), (12, "12 (cut"), (13, "13 (x) S 10 13 10"),
                      (14, "14 (y) S 1")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(text)
    (tmp_path / "self").mkdir()
    assert hb.process_table(str(tmp_path)) == {10: (1, 10), 13: (10, 10)}
    assert hb.service_processes(hb.process_table(str(tmp_path)), {10}) == [10, 13]


def test_a_groups_cpu_seconds_keep_what_an_ended_process_used(tmp_path):
    """A counter: the sum over the living processes would fall when a busy one ends."""
    psutil = pytest.importorskip("psutil")
    busy = 'i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done'
    script = f'sh -c \'{busy}; exec sleep 300\' & echo $! >> "$1"; sleep 300 & echo $! >> "$1"'
    result = hb.run_command(["sh", "-c", script, "sh", str(tmp_path / "pids")], 10)
    burner, idle = pids_in(tmp_path / "pids")
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(burner).name() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.05)
        clock = Clock()
        accounting = hb.ServiceAccounting(clock=clock)
        roots = {"busy": hb.ServiceRoots((result.pid,))}
        first = accounting.groups(roots)["busy"]
        assert first["count"] == 2 and first["cpu_seconds"] >= 0.1, first
        os.kill(burner, signal.SIGKILL)
        while os.path.exists(f"/proc/{burner}") and time.monotonic() < deadline:
            time.sleep(0.02)
        clock.now += hb.ACCOUNTING_CACHE_S
        after = accounting.groups(roots)["busy"]
        assert after["pids"] == [idle] and after["cpu_seconds"] >= first["cpu_seconds"]
    finally:
        kill_all([burner, idle])


def test_large_counters_and_ages_keep_their_digits_in_the_metrics():
    """A busy service passes a million CPU seconds in weeks: with six digits its counter would move
    by tens of seconds, and rate() would see steps."""
    usage = {"count": 1, "pids": [1], "cpu_seconds": 1234567.89, "rss_bytes": 4096, "open_fds": 3,
             "uptime_s": 8640000.5}
    metrics = hb.prometheus_text(report_with([{"key": "web", "home": "prime", "owner": "prime", "state": "running",
                                               "fault": None, "takeovers": 1, "releases": 0, "start_failures": 0,
                                               "stop_failures": 0, "last_takeover_s": 0.25, "last_release_s": None,
                                               "processes": usage}], "7.0.0")).splitlines()
    assert 'heartbeat_group_process_cpu_seconds_total{group="web"} 1234567.89' in metrics
    assert 'heartbeat_group_process_uptime_seconds{group="web"} 8640000.5' in metrics
    assert 'heartbeat_group_last_takeover_duration_seconds{group="web"} 0.25' in metrics
    assert "heartbeat_uptime_seconds 1" in metrics

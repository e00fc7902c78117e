"""The process watch (`monitor RESOURCE process=NAME`), on a fake clock, with real processes: `sleep`
children started by the test under names of their own (a symlink's name is the comm the kernel gives
the process), held by real pidfds in a real selector, killed by the test. Matching by comm and by
argv[0] (cmdline=yes), zombies, quorum and quorum_max, delay, D state, the fallback without
pidfd_open, and the failure path it shares with the status monitor. Every child is killed and reaped
by its pid at the end."""
import errno
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time

import pytest

import heartbeat as hb
from fakes import Clock, MonitorPolicy, Recorder, webserver_config

NAMES = itertools.count()
SLEEP = shutil.which("sleep")


def unique_name():
    """A comm no other process has: hbpw, this pid, a counter (at most 15 characters)."""
    return f"hbpw{os.getpid() % 100000}x{next(NAMES)}"[:hb.TASK_COMM_CHARS]


class Children:
    """Processes the test starts, each a `sleep` run through a symlink called NAME in DIRECTORY."""

    def __init__(self, tmp_path):
        self.tmp_path, self.procs, self.cleanups = tmp_path, [], []

    def start(self, name, directory="bin", program=SLEEP, args=("300",)):
        where = self.tmp_path / directory
        where.mkdir(exist_ok=True)
        link = where / name
        if not link.exists():
            link.symlink_to(program)
        proc = subprocess.Popen([str(link), *args])
        self.procs.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:               # until the exec has given it its name
            try:
                with open(f"/proc/{proc.pid}/comm") as handle:
                    if handle.read().strip() == name:
                        return proc
            except OSError:
                pass
            time.sleep(0.005)
        raise AssertionError(f"{name} did not start")

    def kill(self, proc, reap=True):
        proc.send_signal(signal.SIGKILL)
        if reap:
            proc.wait(5)

    def close(self):
        for cleanup in self.cleanups:
            cleanup()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@pytest.fixture()
def children(tmp_path):
    kids = Children(tmp_path)
    yield kids
    kids.close()


class NoStatus:
    def run_script(self, *args, **kw):
        raise AssertionError("a process watch runs no status check")


class World:
    """A ServiceMonitor whose process watch holds real pidfds in `selector`, on a fake clock."""

    def __init__(self, tmp_path, settings, procs=None, running=True):
        self.tmp_path, self.clock, self.log = tmp_path, Clock(), Recorder()
        self.timers = hb.Timers(self.clock)
        self.selector = selectors.DefaultSelector()
        self.policy = MonitorPolicy()
        self.policy.running = running
        self.monitor = hb.ServiceMonitor(webserver_config(tmp_path, settings), self.policy, NoStatus(), self.timers,
                                         lambda callback: callback(), self.log, selector=self.selector,
                                         procs=procs or hb.ProcTable())

    def events(self, until=lambda: False, seconds=2.0):
        """Dispatch what the kernel says (pidfds that became readable) until `until()` or `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for key, _ in self.selector.select(0.02):
                key.data(key.fileobj)
            if until():
                return True
        return until()

    def step(self, seconds):
        self.clock.now += seconds
        self.timers.run_due()

    def state(self):
        return self.monitor.snapshot()[0]

    def process(self):
        return self.state()["process"]

    def close(self):
        for watch in self.monitor.watches.values():
            if watch.procs:
                watch.procs.stop()


@pytest.fixture()
def make_world(tmp_path):
    worlds = []

    def make(settings, **kw):
        worlds.append(World(tmp_path, settings, **kw))
        return worlds[-1]
    yield make
    for world in worlds:
        world.close()


# ---------------------------------------------------------------- kernel I/O: /proc

def test_proc_stat_takes_the_name_between_the_first_and_the_last_parenthesis():
    line = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10 18446744073709551615\n"
    assert hb.parse_proc_stat(42, line) == hb.ProcStat(42, "a) b (c)", "S", 123456)
    assert hb.parse_proc_stat(42, b"42 (truncated") is None


def test_proc_table_reads_this_process():
    table = hb.ProcTable()
    me = table.stat(os.getpid())
    with open(f"/proc/{os.getpid()}/comm") as handle:
        assert me.comm == handle.read().strip() and me.state == "R"
    assert os.getpid() in table.pids() and table.switches(os.getpid()) >= 0
    assert table.argv0(os.getpid())


def test_switches_are_read_at_the_end_of_a_long_status(tmp_path):
    """/proc/PID/status ends with its ctxt_switches lines, after fields that grow with each kernel."""
    (tmp_path / "42").mkdir()
    filler = "".join(f"Field{n}:\t{'x' * 60}\n" for n in range(80))           # 5 KB before them
    (tmp_path / "42" / "status").write_text(filler + "voluntary_ctxt_switches:\t40\n"
                                            "nonvoluntary_ctxt_switches:\t2\n")
    assert hb.ProcTable(str(tmp_path)).switches(42) == 42
    assert hb.ProcTable(str(tmp_path)).switches(43) is None


# ---------------------------------------------------------------- matching

def test_comm_matches_and_each_exit_is_seen_at_once_through_its_pidfd(make_world, children):
    name = unique_name()
    first, second = children.start(name), children.start(name)
    children.start(unique_name())                          # another name: not counted
    world = make_world(f"monitor webserver process={name} interval=10s\n")
    state = world.process()
    assert (state["matched"], state["pids"], state["events"], state["in_quorum"]) == \
        (2, sorted([first.pid, second.pid]), "pidfd", True)
    assert len(world.selector.get_map()) == 2
    children.kill(first)
    assert world.events(lambda: world.process()["matched"] == 1)      # no clock step: the kernel said so
    assert world.policy.restarts == [] and world.process()["exits"] == 1
    children.kill(second)
    assert world.events(lambda: world.policy.restarts)
    assert world.log.has(f"warn: Resource webserver failed its process watch (0 processes named {name} "
                         "(quorum 1)); restarting it in place (failure 1/3)")
    assert len(world.selector.get_map()) == 0           # restarted: nothing of that name to hold yet


def test_a_zombie_does_not_count(make_world, children):
    name = unique_name()
    alive, dying = children.start(name), children.start(name)
    world = make_world(f"monitor webserver process={name} quorum=2 delay=5s\n")
    assert world.process()["matched"] == 2
    children.kill(dying, reap=False)                   # killed, never waited for: a zombie in /proc
    assert world.events(lambda: world.process()["matched"] == 1)
    with open(f"/proc/{dying.pid}/stat") as handle:
        assert handle.read().rpartition(")")[2].split()[0] == "Z"
    assert world.process()["pids"] == [alive.pid]
    assert world.log.has(f"1 process named {name} (quorum 2): a failure unless back within 5s (delay)")


def test_cmdline_matches_the_command_as_run_not_the_name(make_world, children, tmp_path):
    name = unique_name()
    ours = children.start(name, directory="ours")
    children.start(name, directory="theirs")            # the same comm, another argv[0]
    by_comm = make_world(f"monitor webserver process={name}\n")
    assert by_comm.process()["matched"] == 2
    by_comm.close()
    path = str(tmp_path / "ours" / name)
    by_path = make_world(f"monitor webserver process={path} cmdline=yes\n")
    assert by_path.process()["pids"] == [ours.pid] and by_path.process()["cmdline"] is True


def test_quorum_max_too_many_is_a_failure_found_by_the_safety_rescan(make_world, children):
    name = unique_name()
    children.start(name)
    world = make_world(f"monitor webserver process={name} quorum_max=1 interval=2s\n")
    assert world.process()["in_quorum"] is True
    children.start(name)                              # a second one: no exit to wake us
    world.step(1.9)
    assert world.policy.restarts == []
    world.step(0.1)                                   # the rescan every interval finds it
    assert world.policy.restarts == ["webserver::8080"]
    assert world.log.has(f"failed its process watch (2 processes named {name} (quorum 1..1))")


def test_delay_forgives_a_process_back_in_time_and_not_one_that_stays_away(make_world, children):
    name = unique_name()
    first = children.start(name)
    world = make_world(f"monitor webserver process={name} delay=3s interval=1min\n")
    children.kill(first)
    assert world.events(lambda: world.process()["matched"] == 0)
    world.step(2)
    second = children.start(name)                     # respawned within the delay
    world.step(1)                                     # the delay's end reads /proc again
    assert world.policy.restarts == [] and world.process()["pids"] == [second.pid]
    assert world.log.has(f"Resource webserver: 1 process named {name} (quorum 1): back in quorum")
    children.kill(second)
    assert world.events(lambda: world.process()["matched"] == 0)
    world.step(2.9)
    assert world.policy.restarts == []
    world.step(0.1)
    assert world.policy.restarts == ["webserver::8080"]


def test_restart_in_place_then_migration_threshold_hands_the_group_over(make_world, children):
    name = unique_name()
    started = [children.start(name)]
    world = make_world(f"monitor webserver process={name} interval=5s\n")
    world.policy.on_restart = lambda: started.append(children.start(name))
    for failure in (1, 2):
        children.kill(started[-1])
        assert world.events(lambda failure=failure: len(world.policy.restarts) == failure)
        assert world.process()["pids"] == [started[-1].pid]      # the restarted one, held again
    assert world.state()["failures"] == 2 and world.state()["restarts"] == 2
    children.kill(started[-1])
    assert world.events(lambda: world.policy.moves)
    assert world.policy.moves == [("10.9.0.1/24/eth0", "monitor failure of webserver")]
    assert world.state()["moved_away"]
    world.step(5)                                     # the group is not here any more: nothing watched
    assert world.process()["watching"] is False and len(world.selector.get_map()) == 0


def test_a_failed_restart_is_tried_again_at_the_next_rescan(make_world, children):
    name = unique_name()
    first = children.start(name)
    world = make_world(f"monitor webserver process={name} interval=2s\n")
    world.policy.restart_error = "webserver::8080: start returned 1"
    children.kill(first)
    assert world.events(lambda: world.policy.restarts)
    assert world.state()["failures"] == 2 and world.state()["last_result"] == "restart failed"
    world.step(2)
    assert world.policy.moves                         # failure 3 at the next rescan: handed over


def test_a_node_whose_group_is_not_held_watches_nothing(make_world, children):
    name = unique_name()
    children.start(name)
    world = make_world(f"monitor webserver process={name} interval=1s\n", running=False)
    for _ in range(3):
        world.step(1)
    state = world.process()
    assert (state["watching"], state["scans"], state["matched"]) == (False, 0, 0)
    assert len(world.selector.get_map()) == 0
    world.policy.running = True                       # taken over: watched from the next interval
    world.step(1)
    assert world.process()["matched"] == 1 and len(world.selector.get_map()) == 1


def test_a_group_that_starts_here_is_watched_at_once_not_at_the_next_interval(make_world, children):
    name = unique_name()
    proc = children.start(name)
    world = make_world(f"monitor webserver process={name} interval=10s\n", running=False)
    world.policy.running = True                       # the takeover is done: the policy records group-acquired
    world.monitor.heard(hb.Event("group-acquired", 0.0, 0.0, {"group": "10.9.0.1/24/eth0", "node": "prime"}))
    assert world.process()["pids"] == [proc.pid] and len(world.selector.get_map()) == 1
    world.monitor.heard(hb.Event("group-acquired", 0.0, 0.0, {"group": "another", "node": "prime"}))
    assert world.process()["scans"] == 1              # another group's start: nothing read again
    children.kill(proc)                               # dies before the first interval: seen at once
    assert world.events(lambda: world.policy.restarts)


def test_a_reload_of_quorum_judges_the_same_processes_again(make_world, children, tmp_path):
    name = unique_name()
    children.start(name)
    second = children.start(name)
    world = make_world(f"monitor webserver process={name}\n")
    world.step(1)
    children.kill(second)
    assert world.events(lambda: world.process()["exits"] == 1)
    world.step(1)
    world.monitor.reconfigure(webserver_config(tmp_path, f"monitor webserver process={name} quorum=2 delay=1s\n"))
    state = world.process()                           # the same watch, held on: its history stays
    assert (state["quorum"], state["in_quorum"], state["exits"], state["last_change_s"]) == (2, False, 1, 1.0)
    assert world.log.has(f"1 process named {name} (quorum 2): a failure unless back within 1s (delay)")
    world.step(1)
    assert world.policy.restarts == ["webserver::8080"]


def test_an_exit_while_the_group_is_being_changed_is_no_failure(make_world, children):
    name = unique_name()
    proc = children.start(name)
    world = make_world(f"monitor webserver process={name}\n")
    world.policy.running = False                      # released (or a takeover under way)
    children.kill(proc)
    assert world.events(lambda: not world.process()["watching"])
    assert world.policy.restarts == [] and len(world.selector.get_map()) == 0


# ---------------------------------------------------------------- D state, and no pidfd_open

class Blocked(hb.ProcTable):
    """The real table, except that the pids in `blocked` show D state, switched `switches[pid]` times."""

    def __init__(self):
        super().__init__()
        self.blocked, self.switch_counts = set(), {}

    def stat(self, pid):
        found = super().stat(pid)
        return found._replace(state="D") if found and pid in self.blocked else found

    def switches(self, pid):
        return self.switch_counts.get(pid, 7) if pid in self.blocked else super().switches(pid)


def test_a_process_in_d_state_past_timeout_without_a_switch_is_hung(make_world, children):
    name = unique_name()
    proc = children.start(name)
    table = Blocked()
    world = make_world(f"monitor webserver process={name} interval=5s timeout=20s\n", procs=table)
    table.blocked.add(proc.pid)
    for _ in range(3):                                # 15 s in D, still switching now and then
        table.switch_counts[proc.pid] = table.switch_counts.get(proc.pid, 0) + 1
        world.step(5)
    world.step(5)
    world.step(5)                                     # 10 s without a switch
    assert world.policy.restarts == [] and world.process()["hung"] == []
    world.step(5)
    world.step(5)                                     # 20 s: hung
    assert world.policy.restarts == ["webserver::8080"]
    assert world.log.has(f"failed its process watch (0 processes named {name}, 1 more hung in D state (quorum 1))")


# A process really stuck in D state, without root: posix_spawn's child (a vfork: the parent waits, killable
# but uninterruptible, shown as D) blocks opening a FIFO for reading before its exec. Its parent never
# runs, so its switch count stands still, as a process waiting on a dead NFS server's does.
STUCK_IN_VFORK = ("import os, sys\n"
                  "os.posix_spawn('/bin/true', ['true'], {}, "
                  "file_actions=[(os.POSIX_SPAWN_OPEN, 0, sys.argv[1], os.O_RDONLY, 0)])\n")


def release(fifo):
    """Let the blocked child open the FIFO (a writer appears), exec /bin/true and end, and its parent go on."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass                                              # no reader (any more): nothing held


def test_a_real_process_stuck_in_d_state_is_hung_past_timeout(make_world, children, tmp_path):
    name = unique_name()
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    children.cleanups.append(lambda: release(fifo))
    stuck = children.start(name, program=os.path.realpath(sys.executable), args=("-c", STUCK_IN_VFORK, fifo))
    deadline = time.monotonic() + 5
    while hb.ProcTable().stat(stuck.pid).state != "D" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hb.ProcTable().stat(stuck.pid).state == "D"
    world = make_world(f"monitor webserver process={name} quorum=2 interval=1s timeout=2s\n")
    assert (world.process()["matched"], world.process()["hung"]) == (2, [])    # and the vfork child, asleep
    world.step(1)
    assert world.policy.restarts == []
    world.step(1)                                     # 2 s in D without one switch: hung, so one is left
    assert world.policy.restarts == ["webserver::8080"]
    assert world.log.has(f"failed its process watch (1 process named {name}, 1 more hung in D state (quorum 2))")


class NoPidfd(hb.ProcTable):
    def open_pidfd(self, pid):
        raise OSError(errno.ENOSYS, "Function not implemented")


def test_without_pidfd_open_it_looks_every_interval_and_says_so(make_world, children):
    name = unique_name()
    proc = children.start(name)
    world = make_world(f"monitor webserver process={name} interval=2s\n", procs=NoPidfd())
    state = world.process()
    assert (state["matched"], state["events"], state["polling_why"]) == (1, "polling",
                                                                          "pidfd_open: Function not implemented")
    assert len(world.selector.get_map()) == 0
    assert world.log.has("monitor webserver: pidfd_open: Function not implemented: its processes are looked for "
                         "every 2s (interval) instead of watched")
    children.kill(proc)
    assert not world.events(lambda: world.policy.restarts, seconds=0.2)     # no event comes
    world.step(2)
    assert world.policy.restarts == ["webserver::8080"]


def test_without_os_pidfd_open_at_all(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    with pytest.raises(OSError) as caught:
        hb.ProcTable().open_pidfd(os.getpid())
    assert caught.value.errno == errno.ENOSYS


def test_a_reload_that_changes_the_name_watches_the_new_one(make_world, children, tmp_path):
    old, new = unique_name(), unique_name()
    children.start(old)
    fresh = children.start(new)
    world = make_world(f"monitor webserver process={old}\n")
    world.monitor.reconfigure(webserver_config(tmp_path, f"monitor webserver process={new}\n"))
    assert world.process()["name"] == new and world.process()["pids"] == [fresh.pid]
    assert len(world.selector.get_map()) == 1
    world.monitor.reconfigure(webserver_config(tmp_path, "monitor webserver\n"))        # back to status checks
    assert world.state()["process"] is None and len(world.selector.get_map()) == 0


# ---------------------------------------------------------------- status, --json, /metrics

REPORT = {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active", "pid": 1,
          "auto_failback": "on", "nodes": {}, "links": [], "counters": {}, "groups": []}


def test_status_json_and_metrics_show_the_watch(make_world, children):
    name = unique_name()
    first, second = children.start(name), children.start(name)
    world = make_world(f"monitor webserver process={name} quorum=1 quorum_max=4 interval=5s\n")
    world.step(3)
    children.kill(second)
    assert world.events(lambda: world.process()["matched"] == 1)
    world.step(2)                                     # the rescan at interval
    world.step(0.5)
    state = world.state()
    assert state["process"] == {
        "name": name, "cmdline": False, "watching": True, "matched": 1, "pids": [first.pid], "hung": [],
        "quorum": 1, "quorum_max": 4, "delay_ms": 0, "in_quorum": True, "last_change_s": 2.5,
        "events": "pidfd", "polling_why": None, "exits": 1, "scans": 2}
    assert (state["last_result"], state["last_checked_s"]) == ("running", 0.5)
    report = dict(REPORT, monitors=world.monitor.snapshot())
    assert hb.format_status(report).splitlines()[-1] == (
        f"monitor webserver: 1 process named {name} (quorum 1..4), by pidfd, changed 2.5 s ago; failures 0/3, "
        "restarts 0")
    metrics = hb.prometheus_text(report).splitlines()
    for line in (f'heartbeat_monitor_processes{{resource="webserver",group="10.9.0.1/24/eth0",process="{name}"}} 1',
                 'heartbeat_monitor_processes_hung{resource="webserver",group="10.9.0.1/24/eth0"} 0',
                 'heartbeat_monitor_process_quorum{resource="webserver",group="10.9.0.1/24/eth0",bound="min"} 1',
                 'heartbeat_monitor_process_quorum{resource="webserver",group="10.9.0.1/24/eth0",bound="max"} 4',
                 'heartbeat_monitor_process_in_quorum{resource="webserver",group="10.9.0.1/24/eth0"} 1',
                 'heartbeat_monitor_process_last_change_seconds{resource="webserver",group="10.9.0.1/24/eth0"} 2.5',
                 'heartbeat_monitor_process_exits_total{resource="webserver",group="10.9.0.1/24/eth0"} 1'):
        assert line in metrics, line
    prometheus_client = pytest.importorskip("prometheus_client.parser")
    assert {family.name for family in prometheus_client.text_string_to_metric_families(hb.prometheus_text(report))} \
        >= {"heartbeat_monitor_processes", "heartbeat_monitor_process_exits"}


def test_status_says_when_nothing_is_watched_and_why_it_polls(make_world, children):
    name = unique_name()
    world = make_world(f"monitor webserver process={name}\n", running=False)
    report = dict(REPORT, monitors=world.monitor.snapshot())
    assert hb.format_status(report).splitlines()[-1] == (
        f"monitor webserver: process {name}: not watched (its group does not run here); failures 0/3, restarts 0")
    assert not [line for line in hb.prometheus_text(report).splitlines() if "monitor_process" in line]
    children.start(name)
    polling = make_world(f"monitor webserver process={name}\n", procs=NoPidfd())
    report = dict(REPORT, monitors=polling.monitor.snapshot())
    assert hb.format_status(report).splitlines()[-1].startswith(
        f"monitor webserver: 1 process named {name} (quorum 1), looked for every interval (pidfd_open: Function not "
        "implemented), changed 0.0 s ago")


def test_status_monitors_alone_open_no_selector(tmp_path):
    """The daemon passes its loop's selector; a monitor built without one makes its own only for a process
    watch (an epoll descriptor each was opened for nothing)."""
    monitor = hb.ServiceMonitor(webserver_config(tmp_path, "monitor webserver\n"), MonitorPolicy(), NoStatus(),
                                hb.Timers(Clock()), lambda callback: callback(), Recorder())
    assert monitor.selector is None
    monitor.reconfigure(webserver_config(tmp_path, "monitor webserver process=nosuchprocess\n"))
    assert isinstance(monitor.selector, selectors.BaseSelector)


def test_an_exit_that_leaves_quorum_whole_reads_no_proc(make_world, children):
    """A server that recycles its workers: each exit within quorum is counted without a read of /proc;
    the one that breaks quorum is followed by one at once (a successor may be there already)."""
    name = unique_name()
    first, second, third = children.start(name), children.start(name), children.start(name)
    world = make_world(f"monitor webserver process={name} quorum=2 interval=10s\n")
    assert world.process()["scans"] == 1
    children.kill(first)
    assert world.events(lambda: world.process()["exits"] == 1)
    assert (world.process()["matched"], world.process()["scans"]) == (2, 1)
    successor = children.start(name)                  # not known until /proc is read again
    children.kill(second)
    assert world.events(lambda: world.process()["exits"] == 2)
    state = world.process()
    assert (state["scans"], state["pids"], state["in_quorum"]) == (2, sorted([third.pid, successor.pid]), True)
    assert world.policy.restarts == []

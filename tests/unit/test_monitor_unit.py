"""ServiceMonitor with a fake clock and a fake policy: fall, restarts in place, migration-threshold,
failure-timeout, takeover, reloads; and a status that hangs never holds up the loop."""
import threading
import time

import pytest

import heartbeat as hb
from fakes import Calc, Clock, InlineWorker, NoResources, Recorder, MonitorPolicy, routed, sent, webserver_config



class FakeStatusResources:
    """status answers from a list (then 'running'); run_script may be made to hang."""

    def __init__(self):
        self.answers, self.calls, self.release = [], [], threading.Event()
        self.release.set()

    def run_script(self, res, operation, timeout_s=None, quiet=False, check_level=0):
        self.calls.append((operation, timeout_s, quiet) + ((check_level,) if check_level else ()))
        self.release.wait(10)
        text = self.answers.pop(0) if self.answers else "running"
        return hb.CommandResult(124 if text == "hang" else 0, text)


class World:
    def __init__(self, tmp_path, settings="monitor webserver interval=1s timeout=2s\n"):
        self.tmp_path, self.clock, self.log = tmp_path, Clock(), Recorder()
        self.timers = hb.Timers(self.clock)
        self.posted, self.resources, self.policy = [], FakeStatusResources(), MonitorPolicy()
        self.monitor = hb.ServiceMonitor(webserver_config(tmp_path, settings), self.policy, self.resources,
                                         self.timers, self.posted.append, self.log)

    def step(self, seconds=1.0):
        """Let the clock run, then deliver what the check threads posted."""
        self.clock.now += seconds
        self.timers.run_due()
        deadline = time.monotonic() + 5
        while any(w.checking for w in self.monitor.watches.values()) and time.monotonic() < deadline:
            while self.posted:
                self.posted.pop(0)()
            time.sleep(0.001)

    def state(self):
        return self.monitor.snapshot()[0]


@pytest.fixture()
def world(tmp_path):
    return World(tmp_path)


def test_checks_every_interval_in_a_thread_with_the_timeout_and_quietly(world):
    world.step(0.5)
    assert world.resources.calls == []
    world.step(0.5)
    assert world.resources.calls == [("status", 2.0, True)]
    world.step(1)
    state = world.state()
    assert (state["last_result"], state["last_checked_s"], state["failures"]) == ("running", 0.0, 0)


def test_a_hanging_status_never_holds_up_the_loop(world):
    world.resources.release.clear()              # the status script hangs
    started = time.monotonic()
    world.clock.now += 1
    world.timers.run_due()                       # starts the check and returns at once
    assert time.monotonic() - started < 0.5
    world.clock.now += 1
    world.timers.run_due()                       # no second check while one runs
    assert len(world.resources.calls) == 1
    world.resources.answers = ["hang"]           # it is killed at its timeout: 124
    world.resources.release.set()
    world.step(0)
    assert world.state()["last_result"] == "timed out"
    assert world.policy.restarts == ["webserver::8080"]


def test_a_failure_restarts_in_place_and_says_so(world):
    world.resources.answers = ["stopped"]
    world.step()
    assert world.policy.restarts == ["webserver::8080"]
    assert world.log.has("warn: Resource webserver failed its monitor (status: stopped); restarting it in place "
                         "(failure 1/3)")
    assert world.log.has("Resource webserver restarted in place")
    state = world.state()
    assert (state["failures"], state["restarts"], state["consecutive_failures"]) == (1, 1, 0)


def test_fall_failed_checks_in_a_row_make_one_failure(tmp_path):
    world = World(tmp_path, "monitor webserver interval=1s fall=3\n")
    world.resources.answers = ["stopped", "stopped", "running", "stopped", "stopped", "stopped"]
    for _ in range(5):
        world.step()
    assert world.policy.restarts == [] and world.state()["consecutive_failures"] == 2
    world.step()
    assert world.policy.restarts == ["webserver::8080"] and world.state()["failures"] == 1


def test_migration_threshold_moves_the_group_and_marks_it(world):
    world.resources.answers = ["stopped"] * 3
    for _ in range(3):
        world.step()
    assert len(world.policy.restarts) == 2
    assert world.policy.moves == [("10.9.0.1/24/eth0", "monitor failure of webserver")]
    assert world.log.has("failure 3/3: migration-threshold reached, handing group 10.9.0.1/24/eth0 to the peer. "
                         "It will not be started here for 10min (failure-timeout) or until 'heartbeat.py takeover'")
    assert world.state()["moved_away"]
    world.step()                                  # the group is gone: no more checks
    assert len(world.resources.calls) == 3


def test_a_restart_whose_start_fails_is_a_failure_too(world):
    world.policy.restart_error = "webserver::8080: start returned 1: cannot start"
    world.resources.answers = ["stopped", "stopped"]
    world.step()                                  # failure 1, restart fails: failure 2
    assert world.state()["failures"] == 2 and world.state()["last_result"] == "restart failed"
    assert world.log.has("Resource webserver failed to restart (webserver::8080: start returned 1: cannot start); "
                         "trying again after the next check (failure 2/3)")
    world.step()                                  # failure 3: moved
    assert world.policy.moves and len(world.policy.restarts) == 1


def test_with_no_live_peer_it_keeps_restarting_in_place(world):
    world.policy.peer = False
    world.resources.answers = ["stopped"] * 5
    for _ in range(5):
        world.step()
    assert len(world.policy.restarts) == 5 and world.policy.moves == []
    assert world.log.has("failure 3/3: migration-threshold reached, but the group cannot move "
                         "(no live peer can take it): restarting it in place")


def test_infinity_never_moves(tmp_path):
    world = World(tmp_path, "monitor webserver interval=1s migration-threshold=INFINITY\n")
    world.resources.answers = ["stopped"] * 6
    for _ in range(6):
        world.step()
    assert len(world.policy.restarts) == 6 and world.policy.moves == []
    assert world.log.has("(failure 6/INFINITY)") and world.state()["migration_threshold"] is None


def test_failure_timeout_clears_the_count_and_allows_the_group_here_again(tmp_path):
    world = World(tmp_path, "monitor webserver interval=1s failure-timeout=30s\n")
    world.resources.answers = ["stopped"]
    world.step()
    assert world.state()["failures"] == 1 and world.state()["failures_clear_in_s"] == 30.0
    for _ in range(29):
        world.step()
    assert world.state()["failures"] == 1
    world.step()
    assert world.state()["failures"] == 0 and world.policy.allowed == ["10.9.0.1/24/eth0"]
    assert world.log.has("Resource webserver: no monitor failure for 30s (failure-timeout): failure count 1 cleared")


def test_takeover_clears_every_count(world):
    world.resources.answers = ["stopped"] * 3
    for _ in range(3):
        world.step()
    world.monitor.clear_all()
    state = world.state()
    assert (state["failures"], state["moved_away"]) == (0, False) and world.policy.allowed


def test_only_while_the_group_runs_here(world):
    world.policy.running = False
    world.resources.answers = ["stopped"]
    for _ in range(3):
        world.step()
    assert world.resources.calls == [] and world.policy.restarts == []


def test_a_result_that_comes_after_the_group_left_says_nothing(world):
    world.resources.release.clear()
    world.resources.answers = ["stopped"]
    world.clock.now += 1
    world.timers.run_due()
    world.policy.running = False                  # released meanwhile
    world.resources.release.set()
    world.step(0)
    assert world.policy.restarts == [] and world.state()["failures"] == 0


def test_reload_keeps_counts_changes_interval_and_stops_watches(world, tmp_path):
    world.resources.answers = ["stopped"]
    world.step()
    world.monitor.reconfigure(webserver_config(tmp_path, "monitor webserver interval=5s\n"))
    assert world.state()["failures"] == 1 and world.state()["interval_ms"] == 5000
    calls = len(world.resources.calls)
    world.step(4)
    assert len(world.resources.calls) == calls
    world.step(1)
    assert len(world.resources.calls) == calls + 1
    world.monitor.reconfigure(webserver_config(tmp_path, ""))
    assert world.monitor.snapshot() == [] and world.log.has("Monitor of webserver::8080 stopped")
    world.step(10)
    assert len(world.resources.calls) == calls + 1


def test_status_text_shows_a_line_per_monitor(world):
    world.resources.answers = ["stopped"]
    world.step()
    world.step()
    report = {"node": "prime", "status": "active", "pid": 1, "uptime_s": 1, "generation": 1,
              "auto_failback": "on", "nodes": {}, "counters": {}, "monitors": world.monitor.snapshot()}
    assert hb.format_status(report).splitlines()[-1] == \
        "monitor webserver: running 0.0 s ago; failures 1/3, restarts 1 (count clears in 599 s)"


# ---------------------------------------------------------------- the policy's side

@pytest.fixture()
def cluster(tmp_path):
    """A real ClusterPolicy (inline worker) for prime with calc alive."""
    config = webserver_config(tmp_path, "monitor webserver interval=1s\n")
    clock, rec = Clock(), Recorder()
    timers = hb.Timers(clock)
    membership = hb.Membership(config, hb.Identity("prime", b"P" * 16, 0x100), timers, rec, rec.sent.append, rec)
    policy = hb.ClusterPolicy(config, membership, NoResources(), InlineWorker(), rec)
    membership.listener = routed(policy)
    membership.start()
    membership.receive(Calc(config).status(), "eth0")
    return policy, rec, config, clock


def run_for(policy, clock, seconds):
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.1
        policy.timers.run_due()


def test_move_group_asks_the_peer_to_take_it_and_it_is_not_started_here_again(cluster):
    policy, rec, config, _ = cluster
    key = config.groups[0].key
    policy.acquire(["local"], reason="test")
    assert policy.state[key] == "running" and policy.may_check(key)
    assert policy.move_group(key, reason="monitor failure of webserver") == ""
    asked = [m for m in sent(rec) if m.get("t") == "ask_resources"]
    assert [(m.get("rsc_hold"), m.get("info")) for m in asked] == [("local", "me")]
    assert not policy.may_check(key)              # a standby is in progress
    policy.exchange.request = None
    policy.release(["local"], reason="standby")
    policy.acquire(["local"], reason="test again")
    assert policy.state[key] == "stopped"         # failed here: not started
    policy.takeover()
    assert key not in policy.failed_here


def test_move_group_without_a_live_peer_is_refused(tmp_path):
    config = webserver_config(tmp_path, "monitor webserver\n")
    clock, rec = Clock(), Recorder()
    timers = hb.Timers(clock)
    membership = hb.Membership(config, hb.Identity("prime", b"P" * 16, 0x100), timers, rec, rec.sent.append, rec)
    policy = hb.ClusterPolicy(config, membership, NoResources(), InlineWorker(), rec)
    assert policy.move_group(config.groups[0].key, "test") == "no live peer can take it"
    assert not policy.failed_here


def test_a_moved_group_comes_back_when_the_peer_that_took_it_dies(cluster):
    policy, rec, config, clock = cluster
    key = config.groups[0].key
    run_for(policy, clock, 1)
    policy.acquire(["local"], reason="test")
    assert policy.move_group(key, reason="monitor failure of webserver") == ""
    policy.exchange.request = None
    policy.release(["local"], reason="standby")
    assert policy.state[key] == "stopped"
    run_for(policy, clock, 15)                    # calc falls silent: dead after deadtime
    assert not policy.live_peers()
    assert policy.state[key] == "running" and rec.has("Resources being acquired from calc.")


def test_restart_resource_stops_then_starts_in_the_worker(cluster):
    policy, rec, config, _ = cluster
    done = []

    class Steps:
        stuck = set()
        conflicted = set()

        def __init__(self):
            self.steps = []

        def stop_all(self, resources):
            self.steps.append(("stop", [r.spec for r in resources]))
            return True

        def start(self, res):
            self.steps.append(("start", res.spec))
            raise hb.ResourceError("start returned 1")

    policy.resources = Steps()
    res = config.groups[0].resources[1]
    policy.state[config.groups[0].key] = "running"
    policy.restart_resource(config.groups[0].key, res, done.append)
    assert policy.resources.steps == [("stop", ["webserver::8080"]), ("start", "webserver::8080")]
    assert done == ["start returned 1"]

"""The watchdog (`watchdog DEVICE` in ha.cf) with fake devices only: a temp file or a FIFO that the
test reads. Never /dev/watchdog, never a real device, never a reboot.

Unit tests (no root): the Watchdog class, the ha.cf line and `check`. Root-only tests run the
daemon in a network namespace and read its FIFO: a byte every keepalive, 'V' last on SIGTERM, no
byte while the loop is stopped (SIGSTOP), no 'V' after SIGKILL, no start without the device."""
import errno
import os
import select
import signal
import stat
import struct
import threading
import time
import types

import pytest

import heartbeat as hb
from netns import Node, hacf, have_root_net
from test_cli import common, confdir, run, write  # noqa: F401 - confdir is a fixture
from test_membership_unit import Clock, Recorder

root_only = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")


class FakeIoctl:
    def __init__(self, answer=None, error=None):
        self.calls, self.answer, self.error = [], answer, error

    def __call__(self, fd, request, arg):
        self.calls.append((request, struct.unpack("i", arg)[0]))
        if self.error:
            raise OSError(self.error, os.strerror(self.error))
        return struct.pack("i", self.answer)


def contents(path):
    with open(path, "rb") as handle:
        return handle.read()


# -- the class, on a temp file ------------------------------------------------------------------

def test_open_feeds_one_nul_byte_each_time_and_a_clean_close_writes_v(tmp_path):
    path = str(tmp_path / "fake-watchdog")
    write(str(tmp_path), "fake-watchdog", "")
    log, ioctl = Recorder(), FakeIoctl(answer=31)
    dog = hb.Watchdog(path, log, ioctl=ioctl)
    dog.open(30000)
    assert contents(path) == b"\0"
    assert f"notice: Using watchdog device: {path}" in log.lines
    dog.feed()
    dog.feed()
    assert contents(path) == b"\0\0\0" and dog.feeds == 3
    assert ioctl.calls == []                  # a plain file is no watchdog: no WDIOC_SETTIMEOUT
    assert dog.snapshot()["open"] and dog.snapshot()["last_fed_s"] < 1
    dog.close()
    assert contents(path) == b"\0\0\0V" and dog.fd == -1
    dog.close()
    dog.feed()
    assert contents(path) == b"\0\0\0V"       # closed: nothing more


def test_a_missing_device_is_an_error_and_is_not_created(tmp_path):
    path = str(tmp_path / "no-watchdog")
    with pytest.raises(hb.WatchdogError, match=f"Cannot open watchdog device: {path} \\(No such file"):
        hb.Watchdog(path, Recorder()).open(30000)
    assert not os.path.exists(path)


def fake_char_device(monkeypatch):
    real_fstat = os.fstat

    def fstat(fd):
        info = list(real_fstat(fd))
        info[0] = stat.S_IFCHR | 0o600
        return os.stat_result(info)
    monkeypatch.setattr(hb.os, "fstat", fstat)


def test_a_character_device_gets_deadtime_plus_10_ms_in_whole_seconds(tmp_path, monkeypatch):
    path = write(str(tmp_path), "fake-watchdog", "")
    fake_char_device(monkeypatch)
    ioctl = FakeIoctl(answer=30)              # the driver may round: its answer is kept
    dog = hb.Watchdog(path, Recorder(), ioctl=ioctl)
    dog.open(30000)
    assert ioctl.calls == [(hb.WDIOC_SETTIMEOUT, 31)] and dog.timeout_s == 30
    ioctl = FakeIoctl(error=errno.ENOTTY)
    log = Recorder()
    other = hb.Watchdog(path, log, ioctl=ioctl)
    other.open(1000)
    assert ioctl.calls == [(hb.WDIOC_SETTIMEOUT, 2)] and other.timeout_s is None
    assert any("WDIOC_SETTIMEOUT: Failed to set watchdog timer to 2 seconds." in line for line in log.lines)
    assert other.fd >= 0                      # 3.0.6 logs it and uses the device all the same
    dog.close()
    other.close()


def test_a_full_fifo_never_blocks_the_loop_and_the_device_is_given_up(tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = Recorder()
        dog = hb.Watchdog(path, log)
        dog.open(30000)
        started = time.monotonic()
        for _ in range(1 << 20):              # a pipe holds 64 KiB by default
            dog.feed()
            if dog.fd < 0:
                break
        assert dog.fd < 0 and time.monotonic() - started < 10
        assert any(line.startswith(f"error: Watchdog write failure: closing {path}!") for line in log.lines)
        assert any("Watchdog write magic character failure" in line for line in log.lines)
    finally:
        os.close(reader)


def test_the_daemon_feeds_from_its_loop_timers_only(tmp_path):
    """No thread and no sleep: each feed is a Timers entry one keepalive after the last, so only a
    loop that runs its timers feeds the device, and a keepalive changed by SIGHUP applies."""
    path = write(str(tmp_path), "fake-watchdog", "")
    clock, threads = Clock(), threading.active_count()
    daemon = types.SimpleNamespace(timers=hb.Timers(clock), watchdog=hb.Watchdog(path, Recorder(), clock=clock),
                                   config=types.SimpleNamespace(hacf=types.SimpleNamespace(keepalive_ms=200)))
    daemon.feed_watchdog = lambda: hb.Daemon.feed_watchdog(daemon)
    daemon.watchdog.open(1000)
    daemon.feed_watchdog()
    assert contents(path) == b"\0\0" and daemon.timers.next_delay() == pytest.approx(0.2)
    clock.now += 0.19
    daemon.timers.run_due()
    assert contents(path) == b"\0\0"          # not before keepalive
    clock.now += 0.01
    daemon.timers.run_due()
    assert contents(path) == b"\0\0\0"
    daemon.config.hacf.keepalive_ms = 500
    clock.now += 0.2
    daemon.timers.run_due()
    assert daemon.timers.next_delay() == pytest.approx(0.5) and threading.active_count() == threads
    daemon.watchdog.close()
    clock.now += 1
    daemon.timers.run_due()
    assert contents(path) == b"\0\0\0\0V" and daemon.timers.next_delay() is None   # closed: no more feeds


# -- ha.cf and check -------------------------------------------------------------------------------

def test_two_watchdog_lines_are_an_error_as_in_3_0_6(tmp_path):
    path = write(str(tmp_path), "ha.cf", "bcast eth0\nnode prime\nnode calc\n"
                                         "watchdog /dev/watchdog\nwatchdog /dev/watchdog1\n")
    with pytest.raises(hb.ConfigErrors) as caught:
        hb.parse_hacf(path)
    assert [(e.lineno, e.message.split(" (")[0]) for e in caught.value.errors] == \
        [(5, "Watchdog device multiply specified")]
    write(str(tmp_path), "ha.cf", "bcast eth0\nnode prime\nnode calc\nwatchdog /dev/watchdog\n")
    cfg = hb.parse_hacf(path)
    assert cfg.watchdog == "/dev/watchdog" and not [w for w in cfg.warnings if "watchdog" in w.message]


def test_check_warns_about_a_missing_device_and_one_that_is_not_a_character_device(confdir, tmp_path):  # noqa: F811
    with open(os.path.join(confdir, "ha.cf"), encoding="utf-8") as handle:
        text = handle.read()
    missing = str(tmp_path / "no-watchdog")
    write(confdir, "ha.cf", text + f"watchdog {missing}\n")
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{confdir}/ha.cf:12: warning: watchdog device {missing}: No such file or directory; " \
           "the daemon will not start" in result.stderr
    assert f"watchdog:  {missing}, fed every keepalive" in result.stdout
    plain = write(str(tmp_path), "plain", "")
    write(confdir, "ha.cf", text + f"watchdog {plain}\n")
    result = run("check", *common(confdir, tmp_path))
    assert f"ha.cf:12: warning: watchdog device {plain} is not a character device" in result.stderr
    assert not os.path.exists(missing)


# -- the daemon, reading its FIFO (root) ---------------------------------------------------------

FAST = dict(keepalive="200ms", deadtime="1", initdead="3")


class Fifo:
    """The fake device: a FIFO the test reads without blocking, each byte with its arrival time."""

    def __init__(self, lab):
        self.path = os.path.join(lab.tmp, "watchdog-fifo")
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)   # before the daemon opens it
        self.eof = False

    def collect(self, seconds):
        """[(monotonic time, byte)] for `seconds`, or until the daemon closes its end."""
        got, end = [], time.monotonic() + seconds
        while not self.eof and time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                continue
            data = os.read(self.fd, 4096)
            if not data:
                self.eof = True
                break
            now = time.monotonic()
            got.extend((now, data[i:i + 1]) for i in range(len(data)))
        return got

    def close(self):
        os.close(self.fd)


def start(lab, fifo_path, extra=""):
    return Node(lab, "prime", hacf(nodes=("prime", "calc"), extra=f"watchdog {fifo_path}\n" + extra,
                                   **FAST)).start()


def gaps(samples):
    times = [t for t, _ in samples]
    return [b - a for a, b in zip(times, times[1:])]


@root_only
@pytest.mark.parametrize("lab", [("prime",)], indirect=True)
def test_fed_every_keepalive_kept_on_sighup_and_v_last_on_sigterm(lab):
    fifo = Fifo(lab)
    try:
        node = start(lab, fifo.path)
        node.wait_for(lambda s: True, 5)
        fed = fifo.collect(2.0)
        assert {b for _, b in fed} == {b"\0"}, fed[:5]
        assert 7 <= len(fed) <= 14, len(fed)                  # keepalive 200 ms
        assert max(gaps(fed)) < 0.5, gaps(fed)
        report = node.status()["watchdog"]
        assert report["device"] == fifo.path and report["open"] and report["last_fed_s"] < 0.5
        assert f"Using watchdog device: {fifo.path}" in node.log()
        assert f"watchdog {fifo.path}: fed " in lab.exec("prime", node.argv("status")).stdout
        other = os.path.join(lab.tmp, "another-watchdog")  # never opened: a change waits for a restart
        node.write("ha.cf", hacf(nodes=("prime", "calc"), extra=f"watchdog {other}\n", **FAST))
        node.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "Configuration reloaded." not in node.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"watchdog changed: restart heartbeat.py to apply it; keeping {fifo.path}" in node.log()
        assert len(fifo.collect(1.0)) >= 3 and not os.path.exists(other)   # still the FIFO that is fed
        node.proc.send_signal(signal.SIGTERM)
        rest = fifo.collect(10.0)
        assert node.proc.wait(timeout=10) == 0
        assert fifo.eof and rest and rest[-1][1] == b"V"
        assert [b for _, b in rest].count(b"V") == 1
    finally:
        fifo.close()


@root_only
@pytest.mark.parametrize("lab", [("prime",)], indirect=True)
def test_a_stopped_loop_stops_feeding_and_sigcont_resumes(lab):
    fifo = Fifo(lab)
    node = None
    try:
        node = start(lab, fifo.path)
        node.wait_for(lambda s: True, 5)
        assert len(fifo.collect(1.0)) >= 3
        os.kill(node.proc.pid, signal.SIGSTOP)
        try:
            fifo.collect(0.1)                                 # a byte already on its way
            assert fifo.collect(1.5) == []                    # a hung daemon feeds nothing
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
        resumed = fifo.collect(1.0)
        assert len(resumed) >= 3 and {b for _, b in resumed} == {b"\0"}
        assert node.stop() == 0
    finally:
        if node and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGCONT)
        fifo.close()


@root_only
@pytest.mark.parametrize("lab", [("prime",)], indirect=True)
def test_sigkill_closes_the_device_without_v(lab):
    fifo = Fifo(lab)
    try:
        node = start(lab, fifo.path)
        node.wait_for(lambda s: True, 5)
        fed = fifo.collect(1.0)
        assert len(fed) >= 3
        node.kill()
        rest = fifo.collect(5.0)
        assert fifo.eof
        assert b"V" not in b"".join(b for _, b in fed + rest)
    finally:
        fifo.close()


@root_only
@pytest.mark.parametrize("lab", [("prime",)], indirect=True)
def test_a_missing_device_refuses_the_start(lab):
    missing = os.path.join(lab.tmp, "no-watchdog")
    node = Node(lab, "prime", hacf(nodes=("prime", "calc"), extra=f"watchdog {missing}\n", **FAST))
    for mode in (("daemon",), ("daemon", "--foreground")):
        result = lab.exec("prime", node.argv(*mode), check=False, timeout=15)
        assert result.returncode == 1, (mode, result.stderr)
        assert f"Cannot open watchdog device: {missing} (No such file or directory); heartbeat not started" \
            in result.stderr
        assert lab.exec("prime", node.argv("status"), check=False).returncode == 3
    assert not os.path.exists(missing)

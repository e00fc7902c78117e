"""The watchdog (`watchdog DEVICE` in ha.cf) with fake devices only: a temp file or a FIFO that the
test reads. Never /dev/watchdog, never a real device, never a reboot.

Unit tests (no root): the Watchdog class, the ha.cf line and `check`. The daemon feeding a FIFO in a
network namespace is in tests/lab/test_integration_watchdog.py."""
import errno
import os
import stat
import struct
import threading
import time
import types

import pytest

import heartbeat as hb
from fakes import Clock, Recorder, common, run, write


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


def test_check_warns_about_a_missing_device_and_one_that_is_not_a_character_device(confdir, tmp_path):
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


def test_a_clean_stop_closes_the_watchdog_before_it_waits_for_the_hooks(tmp_path):
    """Issue 26: finish_shutdown waited up to 5 s for notify.d hooks in the loop without feeding the
    watchdog, whose timer is deadtime + 10 ms (1-5 s at the README's deadtimes): a slow hook on
    group-released turned `systemctl stop` into a hard reset. The magic close now comes first."""
    path = write(str(tmp_path), "fake-watchdog", "")
    seen_by_drain = []
    nothing = lambda *args, **kwargs: None    # noqa: E731
    daemon = types.SimpleNamespace(
        watchdog=hb.Watchdog(path, Recorder()), ipfail=types.SimpleNamespace(stop=nothing),
        membership=types.SimpleNamespace(send=nothing, stop=nothing), transmit=nothing,
        pings=types.SimpleNamespace(sockets={}, stop=nothing), selector=None, log=Recorder(),
        config=types.SimpleNamespace(node="prime"),
        notifier=types.SimpleNamespace(drain=lambda: seen_by_drain.append(contents(path))))
    daemon.watchdog.open(1000)
    hb.Daemon.finish_shutdown(daemon)
    assert seen_by_drain == [b"\0V"] and daemon.running is False


def test_sighup_sets_the_timer_again_for_the_new_deadtime(tmp_path, monkeypatch):
    path = write(str(tmp_path), "fake-watchdog", "")
    fake_char_device(monkeypatch)
    ioctl = FakeIoctl(answer=3)
    dog = hb.Watchdog(path, Recorder(), ioctl=ioctl)
    dog.open(3000)
    dog.retime(1500)
    assert ioctl.calls == [(hb.WDIOC_SETTIMEOUT, 4), (hb.WDIOC_SETTIMEOUT, 2)]
    dog.close()
    dog.retime(9000)                       # closed: nothing to set
    assert len(ioctl.calls) == 2

"""The watchdog (`watchdog DEVICE` in ha.cf) fed by the daemon, with a FIFO as the fake device:
never /dev/watchdog, never a real device, never a reboot. Root: the daemon runs in a network
namespace and the test reads its FIFO: a byte every keepalive, 'V' last on SIGTERM, no byte while
the loop is stopped (SIGSTOP), no 'V' after SIGKILL, no start without the device. The Watchdog class
itself: tests/unit/test_watchdog.py."""
import os
import select
import signal
import time

import pytest

from netns import Node, hacf, have_root_net

root_only = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")


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

    def drain(self):
        """Forget what the daemon wrote before now (a loaded test may come late to read it)."""
        while select.select([self.fd], [], [], 0)[0] and os.read(self.fd, 4096):
            pass

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
        fifo.drain()
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

"""Resource scripts and helper processes for real (root only): a start script that leaves a daemon
running is done when it exits, and the daemon leaves no zombie children behind."""
import os
import signal
import time

import pytest

from netns import VIP, Node, hacf, have_root_net, holders, wait

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")

# The everyday `daemon &`: the background child keeps the script's stdout and stderr open.
DAEMONIZE = """#!/bin/sh
# daemonize PIDFILE start|stop|status
case "$2" in
start) sleep 300 & echo $! > "$1"; echo "started sleep $!" ;;
stop) [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; echo stopped ;;
status) if [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; then echo running; else echo stopped; fi ;;
esac
exit 0
"""


def cluster(lab, haresources):
    nodes = [Node(lab, name, hacf(**TIMERS), haresources=haresources, resource_scripts={"daemonize": DAEMONIZE})
             for name in ("prime", "calc")]
    return [node.start() for node in nodes]


def zombie_children(pid):
    """Children of pid that have exited and were not waited for."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(ppid) == pid and state == "Z":
            found.append(int(entry))
    return found


@pytest.mark.parametrize("lab", [("prime", "calc")], indirect=True)
def test_start_script_that_leaves_a_daemon_running_is_done_when_it_exits(lab):
    pidfile = os.path.join(lab.tmp, "daemonize.pid")
    prime, _ = cluster(lab, f"prime daemonize::{pidfile}\n")
    try:
        took = prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 10)
        print(f"\ngroup running {took:.2f} s after start (initdead 3 s)")
        assert prime.status()["groups"][0]["failures"] == 0
        assert "started sleep" in prime.log()
    finally:
        if os.path.exists(pidfile):
            with open(pidfile) as handle:
                pid = int(handle.read())
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("lab", [("prime", "calc")], indirect=True)
def test_no_zombies_after_gratuitous_arp(lab):
    prime, _ = cluster(lab, f"prime {VIP}/24/eth0\n")
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 10)
    with open(f"/proc/{prime.proc.pid}/cmdline", "rb") as handle:
        assert b"daemon" in handle.read()            # `ip netns exec` and the bytecode exec keep the pid
    assert holders(lab) == ["prime"]
    time.sleep(6)                                    # the rounds of gratuitous ARP last 4 s
    wait(lambda: not zombie_children(prime.proc.pid), 3)

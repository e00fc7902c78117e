"""A mixed IPv6-only cluster: real Heartbeat 3.0.6 on one node, heartbeat.py on the other (root only).

The lab has no IPv4 at all. Both nodes talk over `ucast6 eth0 PEER` and carry the same group:
an IPv6 virtual address and the lab's web server. The real node runs its own
resource.d/IPv6addr (the wrapper of resource-agents' OCF IPv6addr: address added by ioctl,
then five unsolicited neighbour advertisements to ff02::1, one a second, before `start`
returns); heartbeat.py its built-in IPv6 address.

The address is written out in full in haresources: 3.0.6's ResourceManager splits every
haresources word at each "::", so `IPv6addr::fd77::100/64/eth0` reaches the wrapper as the two
arguments `fd77 100/64/eth0` and the wrapper refuses them (usage, exit 1; seen with a real
3.0.6 pair). `fd77:0:0:0:0:0:0:100` has no "::" and works on both.

A hard failure of the home node is a crash: its cable is pulled, every process in its namespace
is killed and its addresses are gone; its return is a reboot (cable back, daemon started).
"""
import contextlib
import glob
import os
import signal
import subprocess
import time

import pytest

from netns import VIP6, WEBSERVER_SCRIPT, Node, have_root_net, holders, page, poller, settled, wait
from netns import WEB_PORT as PORT
from realhb import RealNode, both_active, have_real_heartbeat

pytestmark = pytest.mark.skipif(not (have_root_net() and have_real_heartbeat()),
                                reason="needs root, ip(8) and Debian's heartbeat package")

VIP6_FULL = "fd77:0:0:0:0:0:0:100"          # VIP6 without "::" (see above)
KEYS = "auth 2\n2 sha1 lab-secret\n"


def hacf(peer_address):
    return (f"keepalive 500ms\ndeadtime 3\ninitdead 6\nudpport 694\nucast6 eth0 {peer_address}\n"
            "node prime\nnode calc\nauto_failback on\n")


def build(lab, real_name):
    """The real node named real_name, heartbeat.py on the other; the same haresources on both,
    each ha.cf naming the other's address. (A real-real pair, run as a baseline while this module
    was written: crash -> calc served after 9.9-10.4 s; it tests no line of heartbeat.py, so it is
    not run here.)"""
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    haresources = f"prime IPv6addr::{VIP6_FULL}/64/eth0 webserver::{PORT}::{piddir}\n"
    scripts = {"webserver": WEBSERVER_SCRIPT}
    py_name = "calc" if real_name == "prime" else "prime"
    real = RealNode(lab, real_name, hacf(lab.addr6(py_name)), KEYS, haresources, scripts)
    py = Node(lab, py_name, hacf(lab.addr6(real_name)), authkeys=KEYS, haresources=haresources,
              resource_scripts=scripts)
    return real, py


def links_of(node, other):
    """The names of the links `node` has to `other`."""
    if isinstance(node, RealNode):
        return (node.cl_status("listhblinks", other.name) or "").split()
    return list(node.status()["nodes"][other.name]["links"])


def crash(lab, name, node):
    """The machine dies: cable out, every process in its namespace killed, its VIP gone."""
    lab.cut(name)
    node.kill()
    for pid in subprocess.run(["ip", "netns", "pids", lab.ns(name)], capture_output=True, text=True,
                              check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    lab.exec(name, ["ip", "-6", "addr", "flush", "dev", "eth0", "to", f"{VIP6}/128"], check=False)
    for stale in glob.glob(os.path.join(lab.tmp, "pids", f"webserver-{name}.pid")):
        os.unlink(stale)
    if isinstance(node, RealNode):     # the OCF agent's pid file in its /run (it SIGKILLs a stale pid)
        for stale in glob.glob(os.path.join(node.run, "resource-agents", "IPv6addr-*")):
            os.unlink(stale)


def first_answer_from(proc, name, since):
    """Seconds from `since` (wall clock) until the poller first got `name`'s page; None if never."""
    for line in proc.stdout:
        stamp, _, answer = line.strip().partition(" ")
        if answer == name:
            return float(stamp) - since
    return None


def back_home_without_doubling(lab, timeout):
    """Poll until prime alone holds and serves the VIP; True if both held it at any sample."""
    doubled, end = False, time.monotonic() + timeout
    while time.monotonic() < end:
        now = holders(lab, address=VIP6)
        doubled |= len(now) > 1
        if now == ["prime"] and page(lab, VIP6) == "prime":
            return doubled
        time.sleep(0.05)
    raise AssertionError(f"prime did not get the group back in {timeout} s: {holders(lab, address=VIP6)}")


@pytest.mark.parametrize("real_name", ["prime", "calc"])
def test_ipv6_only_crash_of_the_home_node_and_its_return(lab6, real_name):
    lab = lab6
    real, py = build(lab, real_name)
    real.start()
    py.start()
    wait(both_active(real, py), 20)
    wait(settled(lab, "prime", VIP6), 30, interval=0.2)
    assert holders(lab, address=VIP6) == ["prime"]

    # The link as each side names it: 3.0.6 names a ucast6 medium after its interface.
    assert links_of(real, py) == ["eth0"] and links_of(py, real) == ["eth0"]
    assert real.cl_status("hblinkstatus", py.name, "eth0") == "up"

    prime = py if real_name == "calc" else real
    client = poller(lab, 30, address=VIP6)
    time.sleep(0.5)
    cut_at = time.time()
    crash(lab, "prime", prime)
    took = first_answer_from(client, "calc", cut_at)
    client.terminate()
    assert took is not None, "the client never reached calc"
    print(f"\n{real_name} real: prime crashed -> the client gets calc's page at http://[{VIP6}]:{PORT}/ "
          f"after {took:.2f} s (deadtime 3 s)")
    wait(settled(lab, "calc", VIP6), 5)
    assert holders(lab, address=VIP6) == ["calc"]

    lab.heal("prime")
    back_at = time.monotonic()
    prime.start()
    try:
        doubled = back_home_without_doubling(lab, 45)
    except AssertionError:
        print(f"--- real {real.name}:\n{real.log()[-6000:]}\n--- heartbeat.py {py.name}:\n{py.log()[-6000:]}")
        raise
    print(f"{real_name} real: prime back -> serves again after {time.monotonic() - back_at:.2f} s"
          f"{' (both held the VIP at one moment)' if doubled else ''}")
    assert not doubled
    time.sleep(1)
    assert holders(lab, address=VIP6) == ["prime"] and page(lab, VIP6) == "prime"
    if isinstance(py, Node):
        log = py.log()
        print("".join(f"  heartbeat.py: {line}\n" for line in log.splitlines()
                      if any(word in line for word in ("WARN", "ERROR", "CRIT"))), end="")
        assert "Traceback" not in log

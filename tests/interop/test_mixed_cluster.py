"""A mixed cluster: one node runs Debian's real Heartbeat 3.0.6, the other heartbeat.py (root only).

Both read the same ha.cf, authkeys and haresources. The real node uses its own resource
scripts (IPaddr, and the webserver script below from resource.d); heartbeat.py its built-in VIP.
"""
import os
import time

import pytest

from netns import (VIP, WEBSERVER_SCRIPT, Lab, Node, have_root_net, holders, page,
                   two_holders_during_failback, wait)
from netns import WEB_PORT as PORT
from realhb import RealNode, both_active, have_real_heartbeat

pytestmark = pytest.mark.skipif(not (have_root_net() and have_real_heartbeat()),
                                reason="needs root, ip(8) and Debian's heartbeat package")

HACF = ("keepalive 500ms\ndeadtime 3\ninitdead 6\nudpport 694\nbcast eth0\nnode prime\nnode calc\n"
        "auto_failback on\n")
KEYS = {"sha1": "auth 2\n2 sha1 lab-secret\n", "md5": "auth 3\n3 md5 lab-md5-secret\n", "crc": "auth 1\n1 crc\n"}

ERRORS = ("authtoken does not match", "authentication failed", "peel_netstring", "bad node", "replay",
          "Invalid authentication", "missing", "dropped packet")



def build(lab, real_name, keys="sha1", resources=True, py_keys=None):
    """The real node named real_name, heartbeat.py on the other; same files on both."""
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{piddir}\n" if resources else ""
    scripts = {"webserver": WEBSERVER_SCRIPT}
    py_name = "calc" if real_name == "prime" else "prime"
    real = RealNode(lab, real_name, HACF, KEYS[keys], haresources, scripts)
    py = Node(lab, py_name, HACF, authkeys=KEYS[py_keys or keys], haresources=haresources,
              resource_scripts=scripts)
    return real, py








def test_membership_both_ways_for_a_minute_with_sha1_md5_and_crc():
    labs, pairs = [], []
    try:
        for keys in ("sha1", "md5", "crc"):
            lab = Lab(["prime", "calc"])
            labs.append(lab)
            real, py = build(lab, "calc", keys, resources=False)
            real.start()
            py.start()
            pairs.append((keys, real, py))
        for _keys, real, py in pairs:
            wait(both_active(real, py), 20)
        time.sleep(60)
        for keys, real, py in pairs:
            assert real.cl_status("nodestatus", "prime") == "active", keys
            assert py.status()["nodes"]["calc"]["status"] == "active", keys
            counters = py.status()["counters"]
            assert not {k: v for k, v in counters.items() if k in ("dropped_bad_auth", "dropped_malformed",
                                                                    "dropped_replay", "dropped_unknown_node")}
            real_log, py_log = real.log(), py.log()
            for word in ERRORS:
                assert word not in real_log, (keys, word, [line for line in real_log.splitlines() if word in line])
                assert word not in py_log, (keys, word)
            assert "is dead" not in real_log and "is dead" not in py_log
            assert "flow control disabled" not in real_log
    finally:
        for lab in labs:
            lab.close()


@pytest.mark.parametrize("wrong_side", ["real", "py"])
def test_a_wrong_key_is_refused_by_both_then_deadtime_applies(lab, wrong_side):
    real, py = build(lab, "calc", "sha1", resources=False)
    if wrong_side == "real":
        real.write("authkeys", "auth 2\n2 sha1 not-the-key\n", 0o600)
    else:
        py.write("authkeys", "auth 2\n2 sha1 not-the-key\n", 0o600)
    real.start()
    py.start()
    time.sleep(9)                                         # past initdead (6 s)
    assert py.status()["nodes"]["calc"]["status"] == "dead"
    assert py.status()["counters"].get("dropped_bad_auth", 0) > 5
    assert "authentication failed" in py.log()
    assert real.cl_status("nodestatus", "prime") == "dead"
    assert "authtoken does not match" in real.log()


@pytest.mark.parametrize("real_name", ["prime", "calc"])
def test_hard_failure_and_return_in_both_directions(lab, real_name):
    real, py = build(lab, real_name)
    real.start()
    py.start()
    wait(both_active(real, py), 20)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25)
    time.sleep(2)
    lab.cut("prime")
    wait(lambda: page(lab) == "calc", 15)
    print(f"\n{real_name} is real: prime's link cut -> client gets calc's page")
    lab.heal("prime")
    # The real node, seeing a partition heal, gives everything up and restarts itself (about deadtime + 1 s
    # and a start-up); heartbeat.py keeps or returns the group by its home-node rule. In the end: prime.
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 60, interval=0.2)
    time.sleep(3)
    assert holders(lab) == ["prime"] and page(lab) == "prime"


@pytest.mark.parametrize("real_name", ["prime", "calc"])
def test_graceful_stop_hands_over_at_once_and_failback_never_doubles(lab, real_name):
    real, py = build(lab, real_name)
    real.start()
    py.start()
    wait(both_active(real, py), 20)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25)
    prime = real if real_name == "prime" else py
    stopped = time.monotonic()
    prime.stop()
    wait(lambda: holders(lab) == ["calc"] and page(lab) == "calc", 8)
    print(f"\n{real_name} is real: graceful stop of prime -> calc serves after {time.monotonic() - stopped:.2f} s "
          "(deadtime 3 s)")
    assert time.monotonic() - stopped < 3
    prime.start()
    assert not two_holders_during_failback(lab, 40)
    assert holders(lab) == ["prime"] and page(lab) == "prime"


def test_standby_requests_are_honoured_both_ways(lab):
    real, py = build(lab, "calc")                        # heartbeat.py is prime, the home node
    real.start()
    py.start()
    wait(both_active(real, py), 20)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25)
    assert lab.exec("prime", py.argv("standby"), check=False).returncode == 0
    wait(lambda: holders(lab) == ["calc"] and page(lab) == "calc", 20)
    # Both sides ignore a new request while a standby is in progress (as 3.0.6 does): let it finish.
    wait(lambda: "Other node completed standby takeover" in py.log()
         and "Standby resource acquisition done [all]" in real.log(), 10)
    result = real.nsenter(["/usr/share/heartbeat/hb_standby"])
    assert result.returncode == 0, result.stderr
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 20)
    wait(lambda: "Local standby process completed [all]" in real.log(), 10)
    result = real.nsenter(["/usr/share/heartbeat/hb_takeover"])
    assert result.returncode == 0, result.stderr
    wait(lambda: holders(lab) == ["calc"] and page(lab) == "calc", 20)


SLOW_SCRIPT = """#!/bin/sh
# A resource that takes DELAY seconds to start on this node (the haresources line is the same on both).
state={state}
case "$1" in
  start)  sleep {delay}; touch "$state" ;;
  stop)   rm -f "$state" ;;
  status) if [ -e "$state" ]; then echo running; else echo stopped; fi ;;
esac
exit 0
"""


def test_the_home_node_back_during_our_takeover_gets_its_group_once_both_are_stable(lab):
    """Real prime returns while heartbeat.py calc is still starting prime's group (its last resource
    takes 4 s on calc). 3.0.6 ignores a standby request while the other side is in flux, so calc
    must ask for the hand-back only after its own takeover ends and prime says it is stable, as
    3.0.6's PerformAutoFailback does. (Seen in CI: calc asked at once, prime ignored it, and the
    group stayed on calc for good.)"""
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{piddir} slowstart\n"

    def scripts(name, delay):
        state = os.path.join(lab.tmp, f"slowstart-{name}")
        return {"webserver": WEBSERVER_SCRIPT, "slowstart": SLOW_SCRIPT.format(state=state, delay=delay)}
    real = RealNode(lab, "prime", HACF, KEYS["sha1"], haresources, scripts("prime", 0))
    py = Node(lab, "calc", HACF, authkeys=KEYS["sha1"], haresources=haresources, resource_scripts=scripts("calc", 4))
    real.start()
    py.start()
    wait(both_active(real, py), 20)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25)
    real.stop()
    wait(lambda: holders(lab) == ["calc"] and page(lab) == "calc", 10)
    assert py.status()["groups"][0]["state"] != "running"     # calc is still in its slow start
    real.start()
    assert not two_holders_during_failback(lab, 40)
    assert holders(lab) == ["prime"] and page(lab) == "prime", "prime never got its group back"
    assert "standby message [me] from calc ignored" not in real.log()
    wait(lambda: os.path.exists(os.path.join(lab.tmp, "slowstart-prime")), 5)   # the page answers before it starts
    assert not os.path.exists(os.path.join(lab.tmp, "slowstart-calc"))

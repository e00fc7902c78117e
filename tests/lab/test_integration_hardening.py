"""What someone else on the segment, or a second machine with our name, can and cannot do to a
running pair (root, network namespaces). The third namespace, client, is the other party."""
import os
import signal
import sys
import time

import pytest

from netns import VIP, Node, hacf, have_root_net, holders, past_startup_grace, wait
from fencing import RECORDER, STUCK
from paths import HOSTILE

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")
KEY = "lab-secret"


def pair(lab, **kw):
    """prime holding the VIP, calc up, and both past their first 5 s (when dt carries 2 s more)."""
    nodes = [Node(lab, name, hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0\n", **kw).start()
             for name in ("prime", "calc")]
    wait(lambda: holders(lab) == ["prime"], 10)
    nodes[1].wait_for(lambda s: s["nodes"]["prime"]["status"] == "active", 5)
    wait(past_startup_grace(*nodes), 10)
    return nodes


def hostile(lab, *args, timeout=120):
    return lab.exec("client", [sys.executable, HOSTILE, *map(str, args)], timeout=timeout)


def test_replayed_datagrams_of_every_type_do_not_keep_a_dead_peer_alive(lab):
    prime, calc = pair(lab)
    capture = os.path.join(lab.tmp, "captured")
    hostile(lab, "capture", 3, capture)
    with open(capture) as handle:
        kinds = {hb_type for line in handle for hb_type in ("status", "NS_ackmsg", "resource")
                 if f"t={hb_type},".encode().hex() in line}
    assert {"status", "NS_ackmsg"} <= kinds, kinds           # prime's own datagrams, acks included
    lab.cut("prime")
    replayer = lab.popen("client", [sys.executable, HOSTILE, "replay", capture, "6", "0.02"])   # 10 x keepalive
    took = wait(lambda: "calc" in holders(lab), 5, interval=0.02)
    print(f"\nreplaying prime's datagrams every 20 ms: calc holds the VIP {took:.2f} s after the cut "
          "(deadtime 1 s, keepalive 0.2 s)")
    assert took <= 1.0 + 0.2 + 0.3          # deadtime + one keepalive (+ ip(8) polling)
    assert calc.status()["nodes"]["prime"]["status"] == "dead"
    replayer.wait(timeout=15)
    assert calc.status()["counters"].get("dropped_duplicate", 0) + calc.status()["counters"].get(
        "dropped_replay", 0) > 100


def test_a_second_node_with_our_name_is_refused_and_named(lab):
    first = Node(lab, "prime", hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0\n").start()
    wait(lambda: holders(lab) == ["prime"], 10)
    clone = Node(lab, "prime", hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0\n", host="calc").start()
    clone.wait_for(lambda s: s["name_conflict"] is not None, 5)
    time.sleep(4)                                            # past the clone's initdead (3 s)
    assert holders(lab) == ["prime"]                         # the namespace prime: the first one only
    for node, other in ((first, lab.addr("calc")), (clone, lab.addr("prime"))):
        assert "CRIT: Another node uses our name prime" in node.log()
        assert f"from {other}" in node.log()
        assert node.status()["name_conflict"]["sender"] == other
    text = lab.exec("calc", clone.argv("status")).stdout
    assert "NAME CONFLICT" in text
    first.stop()
    took = wait(lambda: holders(lab) == ["calc"], 6)
    print(f"\nthe first 'prime' stopped: the other takes the VIP {took:.2f} s later, once the conflict is over")
    assert "name conflict over" in clone.log()


def test_a_storm_of_reloads_keeps_the_heartbeats_going(lab):
    prime, calc = pair(lab)
    end = time.monotonic() + 10
    while time.monotonic() < end:                            # SIGHUP to both every 0.1 s for 10 s
        for node in (prime, calc):
            node.proc.send_signal(signal.SIGHUP)
        assert holders(lab) == ["prime"]
        time.sleep(0.1)
    time.sleep(1)
    for node in (prime, calc):
        assert "is dead" not in node.log() and "Late heartbeat" not in node.log()
        assert "Configuration reloaded." in node.log()
    assert holders(lab) == ["prime"]


def test_garbage_and_signed_hostile_bursts_leave_the_pair_running_with_one_holder(lab):
    prime, calc = pair(lab)
    capture = os.path.join(lab.tmp, "captured")
    hostile(lab, "capture", 2, capture)
    answered = []
    burst = lab.popen("client", [sys.executable, HOSTILE, "garbage", capture, "100000"])
    while burst.poll() is None:                              # status answers throughout
        answered.append(prime.status().get("running", False))
        time.sleep(0.5)
    burst = lab.popen("client", [sys.executable, HOSTILE, "signed", KEY, "20000"])
    while burst.poll() is None:
        answered.append(prime.status().get("running", False) and calc.status().get("running", False))
        time.sleep(0.5)
    assert burst.returncode == 0 and len(answered) >= 4 and all(answered), answered
    took = wait(lambda: holders(lab) == ["prime"] and calc.status()["nodes"]["prime"]["status"] == "active"
                and prime.status()["nodes"]["calc"]["status"] == "active", 20, interval=0.2)
    time.sleep(3)
    print(f"\n100,000 garbage and 20,000 signed hostile datagrams: one holder again {took:.1f} s after the "
          "burst (deadtime 1 s)")
    assert holders(lab) == ["prime"]
    assert prime.proc.poll() is None and calc.proc.poll() is None
    counters = prime.status()["counters"]
    assert counters.get("dropped_malformed", 0) + counters.get("dropped_bad_auth", 0) > 50000
    assert "internal error" not in prime.log() + calc.log(), (prime.log() + calc.log())[-3000:]




@pytest.mark.parametrize("reboot_works", [True, False])
def test_a_group_that_will_not_stop_is_never_announced_released(lab, reboot_works):
    calls = os.path.join(lab.tmp, "reboot-calls")
    recorder = os.path.join(lab.tmp, "reboot")
    with open(recorder, "w") as handle:
        handle.write(RECORDER.format(calls=calls, code=0 if reboot_works else 1))
    os.chmod(recorder, 0o755)
    nodes = {}
    for name in ("prime", "calc"):
        nodes[name] = Node(lab, name, hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0 stuck\n",
                           resource_scripts={"stuck": STUCK}).start(fake_reboot=recorder)
    prime, calc = nodes["prime"], nodes["calc"]
    wait(lambda: holders(lab) == ["prime"], 10)
    calc.wait_for(lambda s: s["groups"][0]["owner"] == "prime", 5)
    prime.proc.send_signal(signal.SIGTERM)                    # the release fails: 11 tries, 1 s apart
    time.sleep(9)
    assert holders(lab) == ["prime"]                         # calc was never told it is free
    if reboot_works:
        prime.proc.wait(timeout=10)
        with open(calls) as handle:
            assert handle.read().split()[1:] == ["-nf"]
        assert "CRIT: Resource STOP failure. Reboot required!" in prime.log()
        assert "shutdone" not in prime.log() and "Heartbeat shutdown complete" not in prime.log()
        took = wait(lambda: "calc" in holders(lab), 5, interval=0.02)
        print(f"\nprime 'rebooted' after a failed stop: calc takes over {took:.2f} s later (deadtime 1 s)")
        assert took >= 0.5                                   # by deadtime, not by a release message
        assert "Received shutdown notice" not in calc.log()
    else:
        prime.wait_for(lambda s: s["groups"][0]["state"] == "stop failed", 10)
        time.sleep(2)
        assert prime.proc.poll() is None and holders(lab) == ["prime"]
        assert "CRIT: Unable to force reboot." in prime.log()
        assert "Heartbeat shutdown cancelled" in prime.log()
        assert calc.status()["groups"][0]["owner"] == "prime"
        prime.kill()

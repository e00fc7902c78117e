"""authkeys keys on a running pair (root): the README's key rotation, step by step, on two
heartbeat.py daemons in network namespaces, with no heartbeat lost and the group where it was;
a pair on different methods never hears the other."""
import importlib.util
import signal
import time

import pytest

from netns import VIP, Node, hacf, have_root_net, past_startup_grace, wait

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="2", initdead="4", extra="warntime 1\n")
OLD, NEW = "1 sha1 " + "o" * 40, {"sha256": "2 sha256 " + "n" * 64, "aes256gcm": "2 aes256gcm " + "g" * 64}
LOST = ("is dead", "Late heartbeat", "Link prime:eth0 dead", "Link calc:eth0 dead")


def keys_of(status):
    return {key["index"]: key for key in status["auth_keys"]}


def holders(node):
    return tuple(group["owner"] for group in node.status()["groups"])


def step(nodes, authkeys, watch, pause_s=0.0):
    """Write authkeys on each node and reload it, pause_s apart; watch the holders meanwhile."""
    for node in nodes:
        node.write("authkeys", authkeys, mode=0o600)
        reloads = node.log().count("Configuration reloaded.")
        node.proc.send_signal(signal.SIGHUP)
        wait(lambda n=node, r=reloads: n.log().count("Configuration reloaded.") > r, 5)
        end = time.monotonic() + pause_s
        while time.monotonic() < end:
            watch.append(holders(nodes[0]))
            time.sleep(0.2)
    watch.append(holders(nodes[0]))


@pytest.mark.parametrize("method", ["sha256", "aes256gcm"])
def test_key_rotation_by_the_readme_loses_no_heartbeat_and_moves_nothing(lab, method):
    if method == "aes256gcm" and importlib.util.find_spec("cryptography") is None:
        pytest.skip("no cryptography here")
    nodes = [Node(lab, name, hacf(**TIMERS), authkeys=f"auth 1\n{OLD}\n", haresources=f"prime {VIP}/24/eth0\n")
             for name in ("prime", "calc")]
    prime, calc = (node.start() for node in nodes)
    for me, other in ((prime, "calc"), (calc, "prime")):
        me.wait_for(lambda s, o=other: s["nodes"][o]["status"] == "active" and s["groups"][0]["owner"] == "prime", 10)
    wait(past_startup_grace(prime, calc), 10)
    watch = [holders(prime)]
    # 1. add the new key on both nodes; 2. sign with it on both (held apart for more than a deadtime,
    # as a sysadmin going from one node to the other might: both keys are accepted meanwhile)
    step(nodes, f"auth 1\n{OLD}\n{NEW[method]}\n", watch)
    step(nodes, f"auth 2\n{OLD}\n{NEW[method]}\n", watch, pause_s=3.0)
    for me, other in ((prime, "calc"), (calc, "prime")):
        me.wait_for(lambda s, o=other: s["nodes"][o]["auth_index"] == 2, 3)
    # 3. remove the old key on both
    step(nodes, f"auth 2\n{NEW[method]}\n", watch)
    time.sleep(1.0)
    for me, other in ((prime, "calc"), (calc, "prime")):
        status = me.status()
        assert status["nodes"][other]["status"] == "active"
        keys = keys_of(status)
        assert keys[2]["method"] == method and keys[2]["signing"] and keys[2]["received"] > 10
        assert keys[2]["last_seen_s"] < 0.5
        assert keys[1]["configured"] is False and keys[1]["received"] > 10
        assert status["counters"].get("dropped_bad_auth", 0) == 0
        log = me.log()
        assert not [line for line in log.splitlines() if any(word in line for word in LOST)], log[-3000:]
        assert f"node {other} signs with authkeys key" in log       # the half-done rotation, warned once
        assert log.count(f"node {other} signs with authkeys key") == 1
    assert set(watch) == {("prime",)}, watch
    if method == "aes256gcm":
        assert keys_of(prime.status())[2]["received"] > 0 and "extras" in prime.status()
        assert prime.status()["extras"]["cryptography"]


def test_a_pair_on_different_keys_never_hears_the_other_and_counts_it(lab):
    prime = Node(lab, "prime", hacf(**TIMERS), authkeys=f"auth 2\n{NEW['sha256']}\n").start()
    calc = Node(lab, "calc", hacf(**TIMERS), authkeys=f"auth 2\n2 sha256 {'x' * 64}\n").start()
    time.sleep(3)
    for me, other in ((prime, "calc"), (calc, "prime")):
        status = me.status()
        assert status["nodes"][other]["last_heard_s"] is None and status["nodes"][other]["auth_index"] is None
        assert status["counters"].get("dropped_bad_auth", 0) > 5
        assert keys_of(status)[2]["received"] == 0

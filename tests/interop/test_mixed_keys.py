"""authkeys beside real Heartbeat 3.0.6 (root only): the methods it does not know, and a sha1 key
rotation on a running mixed pair.

Verified here of 3.0.6 (Debian's 3.0.6 package):
* An authkeys with a sha256 or aes256gcm line, signing with it or not, stops it at start (exit 6):
  `ERROR: LoadPlugin on sha256 returned 5: No such plugin/interface/interface type`,
  `ERROR: Lookup extended#2 returned FALSE for sha256`, `ERROR: Table size: N`,
  `ERROR: Invalid authtype [sha256]` (`Auth Key [N] not found in keyfile [/etc/ha.d//authkeys]` when
  `auth N` named that line), `ERROR: Authentication configuration error.`,
  `ERROR: Configuration error, heartbeat not started.`
* Beside a heartbeat.py node signing with sha256 under an index it has as sha1, it logs every
  packet: `ERROR: authtoken does not match, authtoken=<64 hex>, authstr=<40 hex>`, then
  `netstring authentication failed` and a field dump; aes256gcm datagrams (no `###`) it drops
  without a word. Neither is a sign of life: the peer is `dead` after initdead.
* SIGHUP rereads authkeys (`info: Rereading authentication file.`, then `Child rereading
  authentication file.` from each child).
* It checks every index with the key of its own `auth N` (the same method as the index names):
  while the peer signs with the new index and it still with the old, it drops the peer's packets
  (`authtoken does not match`); once its own `auth` moves it asks for the ones it lost
  (`WARN: N lost packet(s) for [prime] [A:B]`, then `No pkts missing from prime!`). So both nodes
  must switch `auth` within warntime of each other: reload them together.
"""
import importlib.util
import re
import signal
import time

import pytest

from netns import Node, have_root_net, wait
from realhb import RealNode, both_active, have_real_heartbeat

pytestmark = pytest.mark.skipif(not (have_root_net() and have_real_heartbeat()),
                                reason="needs root, ip(8) and Debian's heartbeat package")

HACF = ("keepalive 500ms\ndeadtime 3\nwarntime 2\ninitdead 6\nudpport 694\nbcast eth0\nnode prime\nnode calc\n"
        "auto_failback on\n")
OLD, NEW = "one-key-" * 5, "two-key-" * 5
LOST = ("is dead", "Late heartbeat")


@pytest.mark.parametrize("authkeys, method", [
    ("auth 2\n2 sha256 " + "k" * 64 + "\n", "sha256"),
    ("auth 2\n2 aes256gcm " + "k" * 64 + "\n", "aes256gcm"),
    ("auth 1\n1 sha1 " + "k" * 40 + "\n2 sha256 " + "n" * 64 + "\n", "sha256")],
    ids=["sha256", "aes256gcm", "sha256-not-signing"])
def test_real_heartbeat_refuses_an_authkeys_with_a_method_it_does_not_know(lab, authkeys, method):
    real = RealNode(lab, "calc", HACF, authkeys).start()
    assert real.proc.wait(timeout=30) == 6
    log = real.log()
    for line in (f"ERROR: LoadPlugin on {method} returned 5: No such plugin/interface/interface type",
                 f"ERROR: Invalid authtype [{method}]", "ERROR: Authentication configuration error.",
                 "ERROR: Configuration error, heartbeat not started."):
        assert line in log, log


@pytest.mark.parametrize("method", ["sha256", "aes256gcm"])
def test_a_real_sha1_peer_and_a_node_on_a_new_method_never_hear_each_other(lab, method):
    if method == "aes256gcm" and importlib.util.find_spec("cryptography") is None:
        pytest.skip("no cryptography here")
    real = RealNode(lab, "calc", HACF, f"auth 1\n1 sha1 {'k' * 64}\n").start()
    py = Node(lab, "prime", HACF, authkeys=f"auth 1\n1 {method} {'k' * 64}\n").start()
    time.sleep(9)                                         # past initdead (6 s)
    status = py.status()
    assert status["nodes"]["calc"]["status"] == "dead" and status["nodes"]["calc"]["last_heard_s"] is None
    assert status["counters"].get("dropped_bad_auth", 0) > 5
    assert [key["received"] for key in status["auth_keys"]] == [0]
    assert "authentication failed" in py.log()
    assert real.cl_status("nodestatus", "prime") == "dead"
    log = real.log()
    assert "WARN: node prime: is dead" in log
    if method == "sha256":
        assert re.search(r"ERROR: authtoken does not match, authtoken=[0-9a-f]{64}, authstr=[0-9a-f]{40}", log), log
    else:                                                 # nothing of a sealed datagram reaches its log
        assert "authtoken" not in log and "MSG[" not in log and "peel_netstring" not in log, log


def reload_real(real, authkeys):
    count = real.log().count("info: Rereading authentication file.")
    real.write("authkeys", authkeys, 0o600)
    real.proc.send_signal(signal.SIGHUP)
    return count


def test_sha1_key_rotation_with_a_real_peer_loses_no_heartbeat(lab):
    """The README's procedure against 3.0.6: a new key on both, `auth` switched on both (here
    heartbeat.py 1 s before the real node, less than warntime), the old key removed."""
    first, both, switched, last = (f"auth 1\n1 sha1 {OLD}\n", f"auth 1\n1 sha1 {OLD}\n2 sha1 {NEW}\n",
                                   f"auth 2\n1 sha1 {OLD}\n2 sha1 {NEW}\n", f"auth 2\n2 sha1 {NEW}\n")
    real = RealNode(lab, "calc", HACF, first).start()
    py = Node(lab, "prime", HACF, authkeys=first).start()
    wait(both_active(real, py), 20)
    time.sleep(1.1)                                       # a new mtime (3.0.6 rereads only a changed file)
    for text, py_first_s in ((both, 0.0), (switched, 1.0), (last, 0.0)):
        reloads = py.log().count("Configuration reloaded.")
        py.write("authkeys", text, 0o600)
        py.proc.send_signal(signal.SIGHUP)
        time.sleep(py_first_s)
        before = reload_real(real, text)
        wait(lambda b=before: real.log().count("info: Rereading authentication file.") > b, 5)
        wait(lambda r=reloads: py.log().count("Configuration reloaded.") > r, 5)
        if text == switched:
            mismatches = real.log().count("authtoken does not match")
        time.sleep(2.0)
    log, py_log = real.log(), py.log()
    assert mismatches > 0                                 # 3.0.6's quirk: index 2 checked with key 1
    assert log.count("authtoken does not match") == mismatches   # none once its own auth moved
    assert re.search(r"lost packet\(s\) for \[prime\]", log) and "No pkts missing from prime!" in log
    assert not [line for line in log.splitlines() + py_log.splitlines() if any(word in line for word in LOST)]
    assert real.cl_status("nodestatus", "prime") == "active"
    status = py.status()
    assert status["nodes"]["calc"]["status"] == "active" and status["nodes"]["calc"]["auth_index"] == 2
    keys = {key["index"]: key for key in status["auth_keys"]}
    assert keys[2]["signing"] and keys[2]["received"] > 3 and keys[2]["last_seen_s"] < 1.0
    assert keys[1]["configured"] is False and status["counters"].get("dropped_bad_auth", 0) == 0

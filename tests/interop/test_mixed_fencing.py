"""STONITH across implementations (root only): Debian's real Heartbeat 3.0.6 beside heartbeat.py,
both configured with `stonith_host * external/labfence prime calc` — the lab fence plugin
(tests/kits/fencing.py, action poweroff) run through cluster-glue's stonith machinery on both sides
(3.0.6 loads it as a PIL plugin, heartbeat.py runs the `stonith` command).

What 3.0.6 does (see /work/notes/stonith-facts.md §4): a peer dead by silence that may hold
resources (its last rsc_hold was not `none`; `local` with an empty local set counts) is reset before
its groups are taken; the takeover waits for the reset to succeed; `t=stonith node=X result=OK`
follows each attempt. The plugin records every reset with its start and end (monotonic clock).
Each test fails against heartbeat.py before STONITH (a18d949), which read stonith_host and ignored it.

Measured here (2 CPUs): the survivor carries the VIP ~1.0-1.4 s after the plugin's reset ended, for
either implementation (cluster-glue's stonith sleeps 1 s at the end of an external plugin's output).
"""
import os
import time

import pytest

import fencing
from netns import VIP, WEBSERVER_SCRIPT, Node, have_root_net, holders, page, wait
from netns import WEB_PORT as PORT
from realhb import RealNode, have_real_heartbeat

pytestmark = pytest.mark.skipif(not (have_root_net() and have_real_heartbeat() and fencing.can_install()),
                                reason="needs root, ip(8), unshare, Debian's heartbeat package and cluster-glue")

KEYS = "auth 1\n1 sha1 lab-secret\n"
ERRORS = ("authtoken does not match", "authentication failed", "peel_netstring", "bad node", "replay",
          "Invalid authentication", "missing", "dropped packet", "Invalid message", "bad message")


def hacf(plugin):
    """The same ha.cf for both nodes, real or not."""
    return ("keepalive 500ms\ndeadtime 2\ninitdead 4\nudpport 694\nbcast eth0\nnode prime\nnode calc\n"
            f"auto_failback on\nstonith_host * {plugin.type} prime calc\n")


def haresources(lab):
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    os.chmod(piddir, 0o755)
    return f"prime {VIP}/24/eth0 webserver::{PORT}::{piddir}\n"


def start(lab, plugin, name, kind):
    """One node, real 3.0.6 or heartbeat.py, started with the lab's plugin bound over cluster-glue's dir."""
    scripts = {"webserver": WEBSERVER_SCRIPT}
    if kind == "real":
        return fencing.start_real(RealNode(lab, name, hacf(plugin), KEYS, haresources(lab), scripts), plugin)
    return fencing.start_node(Node(lab, name, hacf(plugin), authkeys=KEYS, haresources=haresources(lab),
                                   resource_scripts=scripts), plugin)


def peer_status(node, other):
    if isinstance(node, RealNode):
        return node.cl_status("nodestatus", other)
    return node.status().get("nodes", {}).get(other, {}).get("status")


def build(lab, plugin, kinds):
    """kinds: {"prime": "real"|"py", "calc": ...}; both members, prime serving. Returns {name: node}."""
    nodes = {name: start(lab, plugin, name, kind) for name, kind in kinds.items()}
    wait(lambda: peer_status(nodes["prime"], "calc") == "active" and peer_status(nodes["calc"], "prime") == "active",
         20, interval=0.2)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25, interval=0.1)
    time.sleep(1.5)                      # both announced their holdings (rsc_hold) after the start-up
    assert holders(lab) == ["prime"]
    return nodes


def seen_on(lab, name, timeout):
    """time.monotonic() when `name` first carries the VIP."""
    wait(lambda: name in holders(lab), timeout, interval=0.02)
    return time.monotonic()


def no_foreign_errors(nodes):
    """Nothing either side sent (T_STONITH included) was refused by the other."""
    for name, node in nodes.items():
        if isinstance(node, RealNode):
            text = node.log()
            for word in ERRORS:
                assert word not in text, (name, word, [line for line in text.splitlines() if word in line])
        elif node.proc.poll() is None:
            counters = node.status().get("counters", {})
            assert not {k: v for k, v in counters.items()
                        if k in ("dropped_bad_auth", "dropped_malformed", "dropped_unknown_node")}, (name, counters)


def crash_and_fence(lab, plugin, nodes, victim, survivor):
    """Kill the victim's heartbeat (its VIP and web server stay up), then: the survivor resets it
    before it carries the VIP. Returns (reset record, seconds from the reset's end to the VIP)."""
    nodes[victim].kill()
    reset = fencing.wait_reset(plugin, victim, 15)
    took = seen_on(lab, survivor, 10)
    assert took > reset["mono_end"], "the group was taken over before the reset ended"
    assert [r["rc"] for r in plugin.resets(victim)] == [0], plugin.resets(victim)
    assert fencing.gone(lab, victim)     # (its eth0 is down but keeps its addresses, the VIP too)
    wait(lambda: page(lab) == survivor, 5)
    return reset, took - reset["mono_end"]


def test_real_prime_crashes_and_heartbeat_py_calc_resets_it_before_taking_the_vip(lab):
    plugin = fencing.make_plugin(lab)
    nodes = build(lab, plugin, {"prime": "real", "calc": "py"})
    calc = nodes["calc"]
    reset, after = crash_and_fence(lab, plugin, nodes, "prime", "calc")
    print(f"\nreal prime crashed: heartbeat.py calc's reset took {reset['mono_end'] - reset['mono']:.2f} s; "
          f"calc holds the VIP {after:.2f} s after it ended")
    log = calc.log()
    assert f"Resetting node prime with [{plugin.type}]" in log and "node prime now reset." in log
    assert calc.status()["stonith"]["resets"] == {"prime": 1}
    no_foreign_errors(nodes)


def test_heartbeat_py_prime_is_reset_by_real_calc_then_back_it_resets_the_real_calc(lab):
    """heartbeat.py prime crashes: the real calc resets it before it takes the VIP. prime is powered
    on again, gets its group back; then the real calc crashes holding nothing, but its last
    rsc_hold was `local` (its own, empty, set): heartbeat.py resets it, as 3.0.6 does (facts §4.2)."""
    plugin = fencing.make_plugin(lab)
    nodes = build(lab, plugin, {"prime": "py", "calc": "real"})
    prime, calc = nodes["prime"], nodes["calc"]
    reset, after = crash_and_fence(lab, plugin, nodes, "prime", "calc")
    print(f"\nheartbeat.py prime crashed: real calc's reset took {reset['mono_end'] - reset['mono']:.2f} s; "
          f"calc holds the VIP {after:.2f} s after it ended")
    log = calc.log()
    assert "Resetting node prime with [labfence device" in log and "node prime now reset." in log
    assert "STONITH of prime failed" not in log

    # prime powered on again: a fresh boot has its link up and no VIP; heartbeat.py starts, auto_failback
    lab.exec("prime", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    lab.exec("prime", ["ip", "link", "set", "eth0", "up"])
    fencing.start_node(prime, plugin)
    wait(lambda: peer_status(prime, "calc") == "active", 20, interval=0.2)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 25, interval=0.1)
    time.sleep(1.5)
    calc.kill()
    second = fencing.wait_reset(plugin, "calc", 15)
    assert holders(lab) == ["prime"] and page(lab) == "prime"
    assert fencing.gone(lab, "calc")
    print(f"real calc crashed (holding nothing, rsc_hold=local): heartbeat.py prime reset it in "
          f"{second['mono_end'] - second['mono']:.2f} s")
    prime.wait_for(lambda status: status["stonith"]["resets"] == {"calc": 1}, 5)   # the command ends ~1 s later
    assert f"Resetting node calc with [{plugin.type}]" in prime.log() and "node calc now reset." in prime.log()
    assert holders(lab) == ["prime"] and page(lab) == "prime"
    no_foreign_errors({"prime": prime})


SNIFF = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("", 694))
sock.settimeout(0.5)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data = sock.recv(65536)
    except socket.timeout:
        continue
    if b"t=stonith" in data:
        with open(sys.argv[1], "a") as out:
            out.write(repr(data) + "\\n")
"""


def t_stonith_to_a_live_peer(lab, kinds):
    """calc's heartbeats stop reaching prime (nftables drops what calc sends; calc still hears prime):
    prime declares calc dead and "resets" it with the plugin in record mode, so calc lives on and
    receives prime's `t=stonith node=calc result=...`; the client namespace sniffs the broadcast.
    Returns (nodes, the datagrams seen)."""
    plugin = fencing.make_plugin(lab, action="record")
    sniffed = os.path.join(lab.tmp, "t_stonith")
    lab.popen("client", ["python3", "-c", SNIFF, sniffed, "60"])
    nodes = build(lab, plugin, kinds)
    for argv in (["nft", "add", "table", "inet", "hbcut"],
                 ["nft", "add", "chain", "inet", "hbcut", "out", "{ type filter hook output priority 0 ; }"],
                 ["nft", "add", "rule", "inet", "hbcut", "out", "udp", "dport", "694", "drop"]):
        lab.exec("calc", argv)
    fencing.wait_reset(plugin, "calc", 15)

    def sniffed_lines():
        if not os.path.exists(sniffed):
            return []
        with open(sniffed) as handle:
            return [line.strip() for line in handle if line.strip()]
    wait(lambda: any("node=calc" in line for line in sniffed_lines()), 10, interval=0.1)
    time.sleep(1)                        # calc has read it too (it hears everything the client hears)
    seen = sniffed_lines()
    assert nodes["calc"].proc.poll() is None and not fencing.gone(lab, "calc")
    no_foreign_errors(nodes)
    complaints = [line for line in nodes["calc"].log().splitlines()
                  if ("ERROR" in line or "WARN" in line) and "stonith" in line.lower()]
    assert not complaints, complaints
    return nodes, seen


NOISE = ("bcast_write", "write_child", "Temporarily Suppressing", "cable unplugged", "Core dumps", "core_pattern",
         "core_uses_pid", "may be too small", "Logging daemon", "No Previous generation")


def errors_after_the_cut(real):
    """The real node's ERROR/WARN lines, less the start-up warnings and its failed writes (nftables)."""
    return [line.split(": ", 2)[-1] for line in real.log().splitlines()
            if ("ERROR" in line or "WARN" in line) and not any(word in line for word in NOISE)]


def test_t_stonith_results_sent_by_each_are_understood_by_the_other(lab):
    """heartbeat.py -> 3.0.6 (heartbeat.py prime fences the real calc), then 3.0.6 -> heartbeat.py
    (real prime fences heartbeat.py calc), each in its own lab."""
    from netns import Lab
    nodes, seen = t_stonith_to_a_live_peer(lab, {"prime": "py", "calc": "real"})
    print(f"\nheartbeat.py prime -> real calc: {seen}")
    assert any("t=stonith" in s and "node=calc" in s and "result=OK" in s for s in seen), seen
    print("real calc's other ERROR/WARN lines:", errors_after_the_cut(nodes["calc"]))
    other = Lab(["prime", "calc", "client"])
    try:
        nodes, seen = t_stonith_to_a_live_peer(other, {"prime": "real", "calc": "py"})
        print(f"real prime -> heartbeat.py calc: {seen}")
        assert any("t=stonith" in s and "node=calc" in s and "result=OK" in s for s in seen), seen
        print("heartbeat.py calc's counters:", nodes["calc"].status()["counters"],
              "real prime's ERROR/WARN lines:", errors_after_the_cut(nodes["prime"]))
    finally:
        other.close()

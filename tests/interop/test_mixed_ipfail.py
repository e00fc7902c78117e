"""ipfail across implementations (root only): Debian's real Heartbeat 3.0.6 running its own ipfail
(/usr/libexec/heartbeat/ipfail, respawned by heartbeat as hacluster) beside heartbeat.py's built-in
one. A fourth namespace, "router", is the ping node; nftables in a node's namespace drops what that
node sends to it, as a dead uplink would.

What 3.0.6 does on the wire (see /work/notes/ipfail-wire.md): the node whose ping node goes dead
sends `num_ping_nodes num_ping=0`; the peer that sees more answers `you_are_dead`; the loser gives
up all its groups after 2 x keepalive with hb_standby's `ask_resources rsc_hold=all info=me`. When
the route comes back it sends `num_ping_nodes num_ping=1`; the peer, now balanced, answers
`abort_giveup` and (auto_failback on) hands the foreign groups back with `rsc_hold=foreign`.
"""
import os
import subprocess
import time

import pytest

from netns import VIP, WEBSERVER_SCRIPT, Node, cut_uplink, have_root_net, heal_route, holders, page, settled, wait
from netns import WEB_PORT as PORT
from realhb import RealNode, have_real_heartbeat

IPFAIL_BIN = "/usr/libexec/heartbeat/ipfail"

pytestmark = pytest.mark.skipif(not (have_root_net() and have_real_heartbeat() and os.path.exists(IPFAIL_BIN)),
                                reason="needs root, ip(8) and Debian's heartbeat package (with ipfail)")

HOSTS = ("prime", "calc", "client", "router")
KEEPALIVE_S, DEADPING_S = 0.5, 2.0
KEYS = "auth 1\n1 sha1 lab-secret\n"


def hacf(lab):
    """The same ha.cf for both nodes, real or not: ping node, deadping and ipfail at Debian's path."""
    return ("keepalive 500ms\ndeadtime 3\nwarntime 2\ninitdead 6\n"
            f"deadping {DEADPING_S:g}\nudpport 694\nbcast eth0\nnode prime\nnode calc\nauto_failback on\n"
            f"ping {lab.addr('router')}\nrespawn hacluster {IPFAIL_BIN}\napiauth ipfail gid=haclient uid=hacluster\n")


def real_node(lab, name):
    """A RealNode whose ipfail (uid hacluster) can reach heartbeat's API socket in the private /run
    and write its log lines into the node's ha-log/ha-debug."""
    os.chmod(lab.tmp, 0o755)
    real = RealNode(lab, name, hacf(lab), KEYS, haresources(lab), {"webserver": WEBSERVER_SCRIPT})
    os.chmod(real.root, 0o755)
    os.chmod(os.path.join(real.run, "heartbeat"), 0o755)
    subprocess.run(["chown", "hacluster:haclient", real.logdir], check=False)
    for log in ("ha-log", "ha-debug"):
        path = os.path.join(real.logdir, log)
        open(path, "a").close()
        os.chmod(path, 0o666)
    return real


def haresources(lab):
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    os.chmod(piddir, 0o755)
    return f"prime {VIP}/24/eth0 webserver::{PORT}::{piddir}\n"


def py_node(lab, name):
    return Node(lab, name, hacf(lab), authkeys=KEYS, haresources=haresources(lab),
                resource_scripts={"webserver": WEBSERVER_SCRIPT})


def real_log(real):
    """Everything the real node and its ipfail logged (ha-debug carries the info lines and the debug)."""
    return real.log()


def ping_seen(node, lab):
    """What this node says about the ping node: "ping", "dead", or None before it knows."""
    if isinstance(node, RealNode):
        return node.cl_status("nodestatus", lab.addr("router"))
    return node.status().get("nodes", {}).get(lab.addr("router"), {}).get("status")


def log_of(node):
    return real_log(node) if isinstance(node, RealNode) else node.log()


def build(lab, kinds):
    """kinds: {"prime": "real"|"py", "calc": ...}; started, both members, prime serving, both seeing
    the ping node, every real ipfail signed on. Returns {name: node}."""
    nodes = {name: (real_node(lab, name) if kind == "real" else py_node(lab, name)) for name, kind in kinds.items()}
    for node in nodes.values():
        node.start()
    wait(settled(lab, "prime"), 40, interval=0.2)
    for node in nodes.values():
        wait(lambda node=node: ping_seen(node, lab) == "ping", 20, interval=0.2)
        if isinstance(node, RealNode):
            wait(lambda node=node: "ipfail" in real_log(node) and "Waiting for messages..." in real_log(node), 20)
    time.sleep(3)                        # the start-up exchange (join -> num_ping_nodes -> abort_giveup) is over
    assert holders(lab) == ["prime"]
    return nodes


def no_foreign_errors(nodes):
    for name, node in nodes.items():
        text = log_of(node)
        if isinstance(node, RealNode):
            for word in ("Cannot sign on", "Respawning client", "authtoken does not match", "bad node"):
                assert word not in text, (name, word)
        else:
            counters = node.status().get("counters", {})
            assert not {k: v for k, v in counters.items()
                        if k in ("dropped_bad_auth", "dropped_malformed", "dropped_unknown_node")}, (name, counters)


def route_loss_and_return(lab, nodes):
    """prime loses its route -> the group moves to calc; the route comes back -> home again."""
    prime, calc = nodes["prime"], nodes["calc"]
    cut_uplink(lab, "prime")
    cut = time.monotonic()
    moved = wait(settled(lab, "calc"), 25, interval=0.05)
    assert moved < 15, moved             # 3.0.6 alone: about 5-6 s (deadping 2 s, 2 x keepalive, ipfail's polling)
    assert ping_seen(prime, lab) == "dead" and ping_seen(calc, lab) == "ping"
    assert "Giving up because we were told that we have less ping nodes." in log_of(prime)
    assert "Telling other node that we have more visible ping nodes." in log_of(calc)
    time.sleep(3)
    assert holders(lab) == ["calc"], "the group must stay with the node that reaches the ping node"
    heal_route(lab, "prime")
    healed = time.monotonic()
    back = wait(settled(lab, "prime"), 25, interval=0.05)
    assert back < 15, back               # 3.0.6 alone: about 3-4 s
    assert "Giving up foreign resources (auto_failback)." in log_of(calc)
    time.sleep(3)
    assert holders(lab) == ["prime"] and page(lab) == "prime"
    no_foreign_errors(nodes)
    return moved, back, healed - cut


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_real_and_real_the_node_without_its_ping_node_hands_over_and_gets_the_group_back(lab):
    """3.0.6 against itself: the behaviour the mixed cases must reproduce."""
    nodes = build(lab, {"prime": "real", "calc": "real"})
    moved, back, _ = route_loss_and_return(lab, nodes)
    print(f"\nreal+real: prime's route cut -> calc serves after {moved:.2f} s (deadping {DEADPING_S:g} s, "
          f"giveup 2 x {KEEPALIVE_S:g} s); route back -> prime serves after {back:.2f} s")


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
@pytest.mark.parametrize("real_name", ["prime", "calc"])
def test_mixed_the_node_without_its_ping_node_hands_over_and_gets_the_group_back(lab, real_name):
    """real prime (ipfail) + heartbeat.py calc, and heartbeat.py prime + real calc (ipfail)."""
    kinds = {"prime": "py", "calc": "py"}
    kinds[real_name] = "real"
    nodes = build(lab, kinds)
    moved, back, _ = route_loss_and_return(lab, nodes)
    print(f"\n{real_name} is real: prime's route cut -> calc serves after {moved:.2f} s; "
          f"route back -> prime serves after {back:.2f} s")


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
@pytest.mark.parametrize("real_name", ["prime", "calc"])
def test_mixed_equal_reachability_moves_nothing(lab, real_name):
    kinds = {"prime": "py", "calc": "py"}
    kinds[real_name] = "real"
    nodes = build(lab, kinds)
    lab.cut("router")                    # both lose the ping node at one instant: two cuts one after the
    for node in nodes.values():          # other gave the first node a moment with fewer ping nodes
        wait(lambda node=node: ping_seen(node, lab) == "dead", 10, interval=0.1)
    end = time.monotonic() + 8           # well past 2 x keepalive and ipfail's 1 s polling, on both sides
    while time.monotonic() < end:
        assert holders(lab) == ["prime"]
        time.sleep(0.1)
    assert "Ping node count is balanced." in log_of(nodes["prime"]) + log_of(nodes["calc"])
    lab.heal("router")
    for node in nodes.values():
        wait(lambda node=node: ping_seen(node, lab) == "ping", 10, interval=0.1)
    end = time.monotonic() + 6
    while time.monotonic() < end:
        assert holders(lab) == ["prime"]
        time.sleep(0.1)
    assert page(lab) == "prime"
    no_foreign_errors(nodes)


def answers(node, lab):
    """cl_status's answers about the ping node: {query: (exit code, output)}."""
    router = lab.addr("router")
    result = {}
    for query in (["listnodes"], ["nodestatus", router], ["nodetype", router], ["listhblinks", router],
                  ["hblinkstatus", router, router]):
        if isinstance(node, RealNode):
            done = node.nsenter(["cl_status", *query])
        else:
            done = lab.exec(node.name, node.argv("status", *query), check=False)
        result[" ".join(query)] = (done.returncode, done.stdout.strip("\n"))
    return result


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_mixed_cl_status_answers_about_the_ping_node_agree(lab):
    """`heartbeat.py status QUERY` answers as 3.0.6's cl_status does, while the ping node answers
    and after both nodes lost it (3.0.6: nodestatus and hblinkstatus of a dead one exit 1)."""
    nodes = build(lab, {"prime": "py", "calc": "real"})
    real, py = nodes["calc"], nodes["prime"]
    up = answers(real, lab)
    assert up["nodestatus " + lab.addr("router")] == (0, "ping")
    assert up["listnodes"] == (0, f"{lab.addr('router')}\ncalc\nprime")
    assert answers(py, lab) == up
    for name in ("prime", "calc"):
        cut_uplink(lab, name)
    for node in nodes.values():
        wait(lambda node=node: ping_seen(node, lab) == "dead", 10, interval=0.1)
    down = answers(real, lab)
    assert down["nodestatus " + lab.addr("router")] == (1, "dead")
    assert answers(py, lab) == down

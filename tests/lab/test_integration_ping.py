"""Ping nodes and the built-in ipfail, for real (root only): a fourth namespace, "router", is the
ping node; nftables in a node's namespace cuts that node's way to it, as a dead uplink would."""
import json
import os
import subprocess
import sys
import time

import pytest

from netns import VIP, WEBSERVER_SCRIPT, Node, cut_uplink, hacf, have_root_net, heal_route, holders, settled, wait
from netns import WEB_PORT as PORT
from paths import ROOT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

HOSTS = ("prime", "calc", "client", "router")
KEEPALIVE_S, DEADPING_S = 0.2, 1.0
IPFAIL = "respawn hacluster /usr/lib/heartbeat/ipfail\n"


def cluster(lab, extra=IPFAIL, auto_failback="on"):
    text = hacf(keepalive="200ms", deadtime="1", initdead="3",
                extra=f"ping {lab.addr('router')}\ndeadping {DEADPING_S}\n{extra}")
    text = text.replace("auto_failback on", f"auto_failback {auto_failback}")
    haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n"
    nodes = [Node(lab, n, text, haresources=haresources, resource_scripts={"webserver": WEBSERVER_SCRIPT})
             for n in ("prime", "calc")]
    for node in nodes:
        node.start()
    return nodes


def ping_status(node, lab):
    return node.status().get("nodes", {}).get(lab.addr("router"), {}).get("status")


def serving_with_ping_nodes(lab):
    """The cluster with ipfail, prime serving and both nodes seeing the ping node."""
    prime, calc = cluster(lab)
    wait(settled(lab, "prime"), 10)
    for node in (prime, calc):
        node.wait_for(lambda s: s["nodes"][lab.addr("router")]["status"] == "ping", 5)
    time.sleep(1)
    return prime, calc


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_node_that_loses_its_ping_node_gives_its_groups_to_the_peer_and_gets_them_back(lab):
    prime, calc = serving_with_ping_nodes(lab)
    text = lab.exec("prime", prime.argv("status")).stdout
    assert f"ping node: {lab.addr('router')}" in text and "ipfail: on, 1 ping node(s) answering here" in text
    cut_uplink(lab, "prime")
    cut = time.monotonic()
    moved = wait(settled(lab, "calc"), 10, interval=0.02)
    print(f"\nprime's uplink cut -> calc serves after {moved:.2f} s "
          f"(deadping {DEADPING_S} s + 2 x keepalive {KEEPALIVE_S} s + hand-over)")
    assert moved < DEADPING_S + 2 * KEEPALIVE_S + 1.5
    assert ping_status(prime, lab) == "dead" and ping_status(calc, lab) == "ping"
    log = prime.log()
    assert "Giving up because we were told that we have less ping nodes." in log
    assert "Delayed giveup in 0 seconds." in log
    time.sleep(2)
    assert holders(lab) == ["calc"], "the groups must stay with the node that reaches the ping node"
    heal_route(lab, "prime")
    back = wait(settled(lab, "prime"), 10, interval=0.02)
    print(f"uplink back -> prime serves again after {back:.2f} s (auto_failback on)")
    assert "Giving up foreign resources (auto_failback)." in calc.log()
    assert time.monotonic() - cut < 30


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_equal_reachability_moves_nothing(lab):
    prime, calc = serving_with_ping_nodes(lab)
    for name in ("prime", "calc"):
        cut_uplink(lab, name)
    for node in (prime, calc):
        node.wait_for(lambda s: s["nodes"][lab.addr("router")]["status"] == "dead", 5)
    end = time.monotonic() + DEADPING_S + 4 * KEEPALIVE_S + 2
    while time.monotonic() < end:
        assert holders(lab) == ["prime"]
        time.sleep(0.05)
    assert "Ping node count is balanced." in prime.log() + calc.log()


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_without_ipfail_a_dead_ping_node_is_shown_and_moves_nothing(lab):
    prime, calc = cluster(lab, extra="")
    wait(settled(lab, "prime"), 10)
    prime.wait_for(lambda s: s["nodes"][lab.addr("router")]["status"] == "ping", 5)
    cut_uplink(lab, "prime")
    took = prime.wait_for(lambda s: s["nodes"][lab.addr("router")]["status"] == "dead", 5)
    print(f"\nping node dead on prime after {took:.2f} s (deadping {DEADPING_S} s)")
    assert took > DEADPING_S - 0.3
    query = lab.exec("prime", prime.argv("status", "nodestatus", lab.addr("router")), check=False)
    assert (query.returncode, query.stdout.strip()) == (1, "dead")        # as cl_status answers
    query = lab.exec("prime", prime.argv("status", "hblinkstatus", lab.addr("router"), lab.addr("router")),
                     check=False)
    assert (query.returncode, query.stdout.strip()) == (1, "dead")
    query = lab.exec("prime", prime.argv("status", "nodetype", lab.addr("router")), check=False)
    assert query.stdout.strip() == "ping"
    time.sleep(1)
    assert holders(lab) == ["prime"]
    heal_route(lab, "prime")
    prime.wait_for(lambda s: s["nodes"][lab.addr("router")]["status"] == "ping", 3)


@pytest.mark.parametrize("lab", [HOSTS], indirect=True)
def test_ping_nodes_added_by_sighup_are_pinged(lab):
    import signal
    prime, calc = cluster(lab, extra="")
    hacf_path = f"{prime.config_dir}/ha.cf"
    with open(hacf_path) as handle:
        text = handle.read()
    prime.write("ha.cf", text.replace(f"ping {lab.addr('router')}\n", ""))
    prime.stop()
    prime.start()
    prime.wait_for(lambda s: lab.addr("router") not in s["nodes"], 5)
    prime.write("ha.cf", text + IPFAIL)
    prime.proc.send_signal(signal.SIGHUP)
    took = prime.wait_for(lambda s: s["nodes"].get(lab.addr("router"), {}).get("status") == "ping", 5)
    print(f"\nping node added by SIGHUP answers after {took:.2f} s")
    assert prime.status()["ipfail"]["enabled"]


PING_PROBE = r'''
import json, selectors, sys, time
sys.path.insert(0, sys.argv[1])
import heartbeat as hb
class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kw: None
timers = hb.Timers()
pings = hb.PingNodes(hb.load_config(sys.argv[2], "prime").hacf, timers, Quiet(), Quiet())
selector = selectors.DefaultSelector()
for sock in pings.open():
    selector.register(sock, selectors.EVENT_READ)
pings.start()
print("ready", flush=True)
sys.stdin.readline()
end = time.monotonic() + 0.5
while time.monotonic() < end:
    for key, _ in selector.select(0.05):
        pings.read(key.fileobj)
    timers.run_due()
print(json.dumps(dict(pings.counters)), flush=True)
'''


@pytest.mark.parametrize("lab", [("prime", "router")], indirect=True)
def test_only_echo_replies_reach_the_ping_socket(lab):
    """ICMP_FILTER on the IPv4 raw socket: 300 echo requests to prime (a ping flood from the router)
    never reach heartbeat.py; without it each was read and parsed in Python."""
    confdir = os.path.join(lab.tmp, "ha.d")
    os.makedirs(confdir)
    with open(os.path.join(confdir, "ha.cf"), "w") as handle:
        handle.write(hacf(extra=f"ping {lab.addr('router')}\n"))
    with open(os.path.join(confdir, "authkeys"), "w") as handle:
        handle.write("auth 1\n1 sha1 lab-secret\n")
    os.chmod(os.path.join(confdir, "authkeys"), 0o600)
    open(os.path.join(confdir, "haresources"), "w").close()
    probe = lab.popen("prime", [sys.executable, "-c", PING_PROBE, ROOT, confdir], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, text=True)
    assert probe.stdout.readline().strip() == "ready"
    flood = lab.exec("router", ["ping", "-q", "-c", "300", "-i", "0.002", "-W", "1", lab.addr("prime")])
    assert " 0% packet loss" in flood.stdout
    probe.stdin.write("\n")
    probe.stdin.flush()
    counters = json.loads(probe.stdout.readline())
    probe.wait(timeout=10)
    print(f"\nping socket counters after 300 echo requests to prime: {counters}")
    assert counters.get("echo_replies", 0) >= 1                      # the router answers our echoes
    assert counters.get("echo_replies_ignored", 0) == 0 and counters.get("echo_replies_forged", 0) == 0

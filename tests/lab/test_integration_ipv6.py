"""IPv6 for real (root only): IPv6addr virtual addresses and the ucast6/mcast6 media, in
namespaces whose link carries no IPv4 at all, and a dual-stack group whose two families move
together. What counts is what the client sees: its neighbour entry and its HTTP answers."""
import contextlib
import os
import time

import pytest

from netns import VIP, VIP6, WEBSERVER_SCRIPT, Lab, Node, hacf, have_root_net, holders, page, poller, settled, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

DEADTIME_S = 1.0


@contextlib.contextmanager
def lab_of(family, hosts=("prime", "calc", "client")):
    lab = Lab(hosts, family=family)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture()
def dual():
    with lab_of("dual") as lab:
        yield lab


def cluster(lab, resources, media=None, start=True):
    """prime and calc, heartbeats over ucast6 to each other (or `media`), the group on prime."""
    nodes = {}
    for name, peer in (("prime", "calc"), ("calc", "prime")):
        text = hacf(media=media or f"ucast6 eth0 {lab.addr6(peer)}", keepalive="200ms", deadtime="1", initdead="3")
        haresources = f"prime {resources} webserver::{PORT}::{lab.tmp}\n"
        nodes[name] = Node(lab, name, text, haresources=haresources,
                           resource_scripts={"webserver": WEBSERVER_SCRIPT})
    for node in nodes.values() if start else ():
        node.start()
    return nodes["prime"], nodes["calc"]


def neighbour_mac(lab, address):
    """The client's neighbour entry for address: its MAC, or '' (no entry, or no MAC yet)."""
    words = lab.exec("client", ["ip", "neigh", "show", address]).stdout.split()
    return words[words.index("lladdr") + 1] if "lladdr" in words else ""


def first_answer(proc, name, since):
    """Seconds from `since` (wall clock) to the poller's first answer from node `name`."""
    for line in proc.stdout.read().splitlines():
        stamp, answer = line.split(" ", 1)
        if answer == name and float(stamp) >= since:
            return float(stamp) - since
    return None


def test_ipv6_only_hard_failure_moves_the_vip_and_the_clients_neighbour_entry(lab6):
    prime, calc = cluster(lab6, f"IPv6addr::{VIP6}/64/eth0")
    wait(settled(lab6, "prime", VIP6), 15)
    assert not lab6.exec("prime", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout   # no IPv4 here
    mac = {n: lab6.exec(n, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() for n in ("prime", "calc")}
    assert neighbour_mac(lab6, VIP6) == mac["prime"]
    for node in (prime, calc):          # past the first 5 s of the daemons, when deadtime is 2 s longer
        node.wait_for(lambda s: s["uptime_s"] >= 6.0, 15)
    client = poller(lab6, 8, address=VIP6)
    time.sleep(0.5)
    cut = time.time()
    lab6.cut("prime")
    held = wait(lambda: holders(lab6, ["calc"], VIP6) == ["calc"], 5, interval=0.02)
    moved = wait(lambda: neighbour_mac(lab6, VIP6) == mac["calc"], 3, interval=0.02)
    client.wait(timeout=15)
    reached = first_answer(client, "calc", cut)
    print(f"\nIPv6 only, prime's cable cut: calc holds [{VIP6}] {held:.2f} s after the cut, the client's "
          f"neighbour entry moves {moved:.2f} s later, the client reaches it {reached:.2f} s after the cut "
          f"(deadtime {DEADTIME_S} s)")
    assert reached is not None and reached < DEADTIME_S + 1.0, calc.log()[-4000:]
    assert "IPv6addr: added fd77::100/64 on eth0" in calc.log()
    lab6.heal("prime")
    wait(settled(lab6, "prime", VIP6), 15)
    wait(lambda: neighbour_mac(lab6, VIP6) == mac["prime"], 3, interval=0.02)
    time.sleep(1)
    assert holders(lab6, address=VIP6) == ["prime"]


def test_ipv6_graceful_hand_over_and_status(lab6):
    prime, calc = cluster(lab6, f"IPv6addr::{VIP6}/64")          # interface found by prefix
    wait(settled(lab6, "prime", VIP6), 15)
    status = prime.status()
    assert status["groups"][0]["resources"][0].startswith(f"IPv6addr::{VIP6}")
    assert status["nodes"]["calc"]["links"] == {"eth0": "up"}
    stop = time.monotonic()
    prime.stop()
    took = wait(settled(lab6, "calc", VIP6), 5, interval=0.02)
    print(f"\nIPv6 only, graceful stop of prime: calc serves [{VIP6}] {took:.2f} s later")
    assert "IPv6addr: removed fd77::100/64 from eth0" in prime.log()
    assert not holders(lab6, ["prime"], VIP6)
    assert time.monotonic() - stop < 10


def test_dual_stack_group_moves_together_over_mcast6(dual):
    resources = f"{VIP}/24/eth0 IPv6addr::{VIP6}/64/eth0"
    prime, calc = cluster(dual, resources, media="mcast6 eth0 ff12::1:2:3:4 694 1 0")
    wait(lambda: settled(dual, "prime", VIP)() and settled(dual, "prime", VIP6)(), 15)
    assert "mcast6 eth0 [ff12::1:2:3:4]:694 hops 1 loop 0: heartbeat started" in prime.log()
    prime.stop()
    wait(lambda: holders(dual, address=VIP) == ["calc"] and holders(dual, address=VIP6) == ["calc"], 5,
         interval=0.02)
    wait(lambda: page(dual, VIP) == "calc" and page(dual, VIP6) == "calc", 5)
    prime.start()
    wait(lambda: settled(dual, "prime", VIP)() and settled(dual, "prime", VIP6)(), 15)
    assert holders(dual, ["calc"], VIP) == holders(dual, ["calc"], VIP6) == []


def test_an_address_the_kernel_refuses_fails_the_group_here_and_it_runs_on_the_peer(lab6):
    """vip0 exists on calc only: prime's start fails with the reason naming the address, and the
    group goes to calc as after any failed start."""
    lab6.exec("calc", ["ip", "link", "add", "vip0", "type", "veth", "peer", "name", "vip0p"])
    for name in ("vip0", "vip0p"):
        lab6.exec("calc", ["ip", "link", "set", name, "up"])
    prime, calc = cluster(lab6, "IPv6addr::fd78::100/64/vip0")
    wait(lambda: "fd78::100" in lab6.exec("calc", ["ip", "-6", "-o", "addr", "show", "dev", "vip0"]).stdout, 20)
    assert "cannot add fd78::100/64 on vip0: interface vip0 does not exist" in prime.log()
    assert "Giving up resources due to failure of IPv6addr::fd78::100/64/vip0" in prime.log()
    calc.wait_for(lambda s: s["groups"][0]["state"] == "running", 5)


def test_check_reads_ipv6_media_and_addresses_and_warns_for_3_0_6(tmp_path):
    import subprocess
    import sys

    from paths import HEARTBEAT
    (tmp_path / "ha.cf").write_text("keepalive 1\ndeadtime 10\nucast6 lo fd77::2\nnode prime\nnode calc\n")
    (tmp_path / "authkeys").write_text("auth 1\n1 sha1 secret\n")
    os.chmod(tmp_path / "authkeys", 0o600)
    (tmp_path / "haresources").write_text("prime IPv6addr::fd77::100/64/eth0 IPv6addr::fd77:0:0:0:0:0:0:101/64\n")
    out = subprocess.run([sys.executable, HEARTBEAT, "check", "-c", str(tmp_path), "--node", "prime"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "haresources:1: warning: IPv6addr::fd77::100/64/eth0: Heartbeat 3.0.6 splits arguments at '::'" in text
    assert "write fd77:0:0:0:0:0:0:100 (no '::')" in text
    assert text.count("Heartbeat 3.0.6 splits") == 1                # the full form is fine
    assert "ucast6 lo to fd77::2 port 694" in text


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_an_address_another_host_has_fails_the_group_on_both_nodes(family):
    """The client already has the VIP: prime's probe gets its answer, prime gives the group up and
    calc, trying it next, finds the same; after their start attempts nobody keeps the address of
    the host that has it."""
    with lab_of("dual") as lab:
        address, spec = (VIP, f"{VIP}/24/eth0") if family == "ipv4" else (VIP6, f"IPv6addr::{VIP6}/64/eth0")
        prefix = "24" if family == "ipv4" else "64"
        lab.exec("client", ["ip", "addr", "add", f"{address}/{prefix}", "dev", "eth0"]
                 + (["nodad"] if family == "ipv6" else []))
        mac = lab.exec("client", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        prime, calc = cluster(lab, spec, media="bcast eth0")
        wanted = f"{address} is in use by another host ({mac} answered for it)"
        wait(lambda: wanted in prime.log() and wanted in calc.log(), 20)
        assert f"Giving up resources due to failure of {spec}" in prime.log()
        given_up = "will not be started here again"            # after 3 failed starts on each node
        wait(lambda: given_up in prime.log() and given_up in calc.log(), 30)
        time.sleep(0.5)
        assert holders(lab, address=address) == []
        assert address in lab.exec("client", ["ip", "-o", "addr"]).stdout


def test_ping6_node_and_ipfail_move_the_ipv6_group_when_prime_loses_its_uplink():
    """A fourth namespace, router, is an IPv6 ping node (ping6, as in 3.0.6); nftables in prime
    drops what prime sends it."""
    from netns import cut_route, heal_route
    with lab_of("ipv6", ("prime", "calc", "client", "router")) as lab:
        router = lab.addr6("router")
        extra = f"ping6 {router}\ndeadping 1\nrespawn hacluster /usr/lib/heartbeat/ipfail\n"
        nodes = {}
        for name, peer in (("prime", "calc"), ("calc", "prime")):
            text = hacf(media=f"ucast6 eth0 {lab.addr6(peer)}", keepalive="200ms", deadtime="1", initdead="3",
                        extra=extra)
            nodes[name] = Node(lab, name, text, haresources=f"prime IPv6addr::{VIP6}/64/eth0 "
                               f"webserver::{PORT}::{lab.tmp}\n", resource_scripts={"webserver": WEBSERVER_SCRIPT})
            nodes[name].start()
        prime, calc = nodes["prime"], nodes["calc"]
        wait(settled(lab, "prime", VIP6), 15)
        for node in (prime, calc):
            node.wait_for(lambda s: s["nodes"][router]["status"] == "ping", 5)
        time.sleep(1)
        cut_route(lab, "prime", router)
        moved = wait(settled(lab, "calc", VIP6), 10, interval=0.02)
        print(f"\nIPv6 only: prime's way to the ping6 node cut -> calc serves [{VIP6}] after {moved:.2f} s")
        assert prime.status()["nodes"][router]["status"] == "dead"
        assert "Giving up because we were told that we have less ping nodes." in prime.log()
        heal_route(lab, "prime")
        wait(settled(lab, "prime", VIP6), 10, interval=0.02)


def test_a_stale_ipv6_address_left_by_a_crash_is_removed_before_joining(lab6):
    lab6.exec("calc", ["ip", "-6", "addr", "add", f"{VIP6}/64", "dev", "eth0", "nodad"])
    prime, calc = cluster(lab6, f"IPv6addr::{VIP6}/64/eth0")
    wait(settled(lab6, "prime", VIP6), 15)
    assert "Address fd77::100 was already configured here (left by a crash?)" in calc.log()
    assert holders(lab6, address=VIP6) == ["prime"]

"""Failover for real: two daemons, a virtual IP, a web server per node and a client (root only).

Every test checks what the client gets over HTTP and where `ip addr` shows the address.
"""
import os
import time

import pytest

from netns import (VIP, WEBSERVER_SCRIPT, Node, hacf, have_root_net, holders, page, past_startup_grace,
                   settled, two_holders_during_failback, wait)
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")

FAILING = """#!/bin/sh
# fails to start on prime only, and says why
case "$1" in
start) if [ "$HA_CURHOST" = prime ]; then echo "cannot start: disk missing on prime"; exit 1; fi; echo started ;;
stop) echo stopped ;;
status) echo stopped ;;
esac
"""


def cluster(lab, auto_failback="on", haresources=f"prime {VIP}/24/eth0 webserver::{PORT}::PIDDIR\n", start=True):
    text = hacf(**TIMERS).replace("auto_failback on", f"auto_failback {auto_failback}")
    haresources = haresources.replace("PIDDIR", lab.tmp)
    scripts = {"webserver": WEBSERVER_SCRIPT, "failing": FAILING}
    nodes = {n: Node(lab, n, text, haresources=haresources, resource_scripts=scripts) for n in ("prime", "calc")}
    if start:
        for node in nodes.values():
            node.start()
    return nodes["prime"], nodes["calc"]








def test_hard_failure_then_heal_leaves_exactly_one_holder(lab):
    prime, calc = cluster(lab)
    wait(settled(lab, "prime"), 10)
    wait(past_startup_grace(prime, calc), 10)       # dt carries +2 s for 5 s after start
    pids = (prime.proc.pid, calc.proc.pid)
    lab.cut("prime")
    took = wait(lambda: page(lab) == "calc", 4, interval=0.02)
    print(f"\nlink cut -> client gets calc's page after {took:.2f} s (deadtime 1 s)")
    assert "calc" in holders(lab)
    lab.heal("prime")
    healed = wait(settled(lab, "prime"), 5, interval=0.02)
    print(f"partition healed -> one holder (prime) after {healed:.2f} s")
    time.sleep(1)
    assert holders(lab) == ["prime"] and page(lab) == "prime"
    assert (prime.proc.pid, calc.proc.pid) == pids and prime.proc.poll() is None and calc.proc.poll() is None
    assert calc.status()["groups"][0]["owner"] == "prime"
    assert "Both machines own" in prime.log() + calc.log()


def test_graceful_stop_hands_over_at_once_and_failback_never_doubles(lab):
    prime, calc = cluster(lab)
    wait(settled(lab, "prime"), 10)
    stopped = time.monotonic()
    prime.stop()
    wait(lambda: page(lab) == "calc", 1.5, interval=0.02)
    print(f"\ngraceful stop -> calc serves after {time.monotonic() - stopped:.2f} s (deadtime 1 s)")
    assert holders(lab) == ["calc"]
    prime.start()
    assert not two_holders_during_failback(lab, 8, interval=0.02)
    assert holders(lab) == ["prime"] and page(lab) == "prime"


def test_auto_failback_off_leaves_the_group_where_it_is(lab):
    prime, calc = cluster(lab, auto_failback="off")
    wait(settled(lab, "prime"), 10)
    prime.stop()
    wait(settled(lab, "calc"), 3)
    prime.start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 5)
    time.sleep(3)
    assert holders(lab) == ["calc"] and page(lab) == "calc"


def test_standby_and_takeover_commands(lab):
    prime, calc = cluster(lab)
    wait(settled(lab, "prime"), 10)
    assert lab.exec("prime", prime.argv("standby"), check=False).returncode == 0
    wait(settled(lab, "calc"), 5)
    assert calc.status()["groups"][0]["owner"] == "calc"
    assert lab.exec("prime", prime.argv("takeover"), check=False).returncode == 0
    wait(settled(lab, "prime"), 5)


def test_failing_start_is_cleaned_up_offered_and_does_not_flap(lab):
    prime, calc = cluster(lab, haresources=f"prime {VIP}/24/eth0 failing webserver::{PORT}::PIDDIR\n")
    wait(settled(lab, "calc"), 12)
    log = prime.log()
    assert "cannot start: disk missing on prime" in log
    assert "Return code 1 from" in log
    time.sleep(8)
    assert holders(lab) == ["calc"] and page(lab) == "calc"
    for node in (prime, calc):
        assert node.log().count("Acquiring resource group") <= 3
    group = prime.status()["groups"][0]
    assert group["failures"] >= 1 and group["owner"] == "calc"


def test_stale_address_is_released_before_joining(lab):
    prime, calc = cluster(lab, start=False)
    calc.start()
    wait(settled(lab, "calc"), 8)
    lab.exec("prime", ["ip", "addr", "add", f"{VIP}/24", "dev", "eth0"])
    prime.start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 5)
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 8)
    assert "was already configured here" in prime.log()


def test_gratuitous_arp_moves_the_clients_neighbour_entry_without_ip_or_arping(lab):
    """Addresses go through rtnetlink and frames through a raw socket: a PATH with neither ip(8)
    nor arping still moves the VIP and the client's neighbour entry."""
    prime, calc = cluster(lab, start=False)
    bindir = os.path.join(lab.tmp, "bin")
    os.makedirs(bindir)
    for tool in ("python3", "sh", "sleep", "cat", "kill", "rm"):
        found = [os.path.join(d, tool) for d in os.environ["PATH"].split(":") if os.path.exists(os.path.join(d, tool))]
        if found:
            os.symlink(found[0], os.path.join(bindir, tool))
    for node in (prime, calc):
        node.start(env_path=bindir)
    wait(settled(lab, "prime"), 10)
    lab.exec("client", ["sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"])
    mac = {n: lab.exec(n, ["cat", "/sys/class/net/eth0/address"]).stdout.strip() for n in ("prime", "calc")}

    def neighbour():
        return lab.exec("client", ["ip", "neigh", "show", VIP]).stdout

    assert mac["prime"] in neighbour()
    prime.stop()
    moved = wait(lambda: mac["calc"] in neighbour(), 3, interval=0.02)
    print(f"\nclient's neighbour entry for {VIP} moved to calc's MAC {moved:.2f} s after prime's stop")


def test_a_peer_crashed_holding_the_address_delays_the_takeover_and_someone_serves_in_the_end(lab):
    """Issue 26: calc holds prime's group alone (prime stopped) and its daemon is killed (-9): the VIP
    stays on calc's interface. prime starts; calc is silent, so prime takes the group, and its ARP
    probe is answered by calc's MAC. That is the peer's stale copy, not a foreign host: prime must not
    give the group up for good. calc restarts, removes its stale copy and joins: in the end exactly one
    node serves (the home node, prime), where before both were active and nobody held the group."""
    prime, calc = cluster(lab, start=False)
    calc.start()
    wait(settled(lab, "calc"), 12)
    calc.kill()
    assert holders(lab) == ["calc"]                      # the crashed daemon's stale copy
    prime.start()
    wait(lambda: "Acquiring resource group" in prime.log(), 15)    # and (unless its probe was too late) fails
    calc.start()
    try:
        wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 20)
    except AssertionError:
        raise AssertionError(f"holders {holders(lab)}, page {page(lab)}\n--- prime ---\n{prime.log()[-6000:]}"
                             f"\n--- calc ---\n{calc.log()[-3000:]}") from None
    assert "was already configured here" in calc.log()
    assert "will not be started here again" not in prime.log()

"""The address and link watch for real (root only): a VIP removed by hand comes back, a lost
carrier hands the group to the peer at once, and a flapping cable leaves no two holders.

Each test checks where `ip addr` shows the address and what the client gets over HTTP.
"""
import threading
import time

import pytest

from netns import VIP, WEBSERVER_SCRIPT, Node, hacf, have_root_net, holders, page, past_startup_grace, settled, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

HARESOURCES = f"prime {VIP}/24/eth0 webserver::{PORT}::PIDDIR\n"


def cluster(lab, media="bcast eth0", deadtime="1", initdead="3", start=True):
    text = hacf(media=media, keepalive="200ms", deadtime=deadtime, initdead=initdead)
    haresources = HARESOURCES.replace("PIDDIR", lab.tmp)
    nodes = [Node(lab, n, text, haresources=haresources, resource_scripts={"webserver": WEBSERVER_SCRIPT})
             for n in ("prime", "calc")]
    for node in nodes if start else ():
        node.start()
    return nodes


def direct_link(lab, subnet="10.78.0"):
    """A second cable, prime's eth1 to calc's eth1: a veth pair made inside the two namespaces,
    so it goes with them."""
    lab.exec("prime", ["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1",
                       "netns", lab.ns("calc")])
    for name in ("prime", "calc"):
        lab.exec(name, ["ip", "addr", "add", f"{subnet}.{lab.hosts[name]}/24", "brd", "+", "dev", "eth1"])
        lab.exec(name, ["ip", "link", "set", "eth1", "up"])


def test_vip_removed_by_hand_is_added_back_and_announced(lab):
    prime, calc = cluster(lab)
    wait(settled(lab, "prime"), 10)
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 5)
    lab.exec("prime", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    back = wait(lambda: holders(lab) == ["prime"], 1.0, interval=0.01)
    print(f"\nVIP deleted by hand on prime -> back on prime's eth0 after {back:.3f} s")
    wait(lambda: f"IPaddr {VIP} disappeared from eth0 while held: added back" in prime.log(), 2)
    wait(lambda: page(lab) == "prime", 2)
    assert holders(lab) == ["prime"]
    assert prime.status()["groups"][0]["state"] == "running"


def test_link_watch_off_in_heartbeat_py_cf_leaves_addresses_alone_and_sighup_turns_it_on(lab):
    import signal
    prime, calc = cluster(lab, start=False)
    prime.write("heartbeat.py.cf", "link_watch off   # NetworkManager owns the addresses here\n")
    for node in (prime, calc):
        node.start()
    wait(settled(lab, "prime"), 10)
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 5)
    assert prime.status()["links_watched"] is None
    assert "address and link watch: off" in lab.exec("prime", prime.argv("status")).stdout
    lab.exec("prime", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    time.sleep(1.5)
    assert holders(lab) == [], "with the watch off, nobody puts the address back"
    prime.write("heartbeat.py.cf", "link_watch on\n")
    prime.proc.send_signal(signal.SIGHUP)
    prime.wait_for(lambda s: s["links_watched"] == {"eth0": "up"}, 5)
    lab.exec("prime", ["ip", "addr", "add", f"{VIP}/24", "dev", "eth0"])
    lab.exec("prime", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    wait(lambda: holders(lab) == ["prime"], 1.0, interval=0.01)


def test_carrier_lost_hands_the_group_over_at_once_when_heartbeats_flow_elsewhere(lab):
    direct_link(lab)
    prime, calc = cluster(lab, media="bcast eth0 eth1", deadtime="10", initdead="20")
    wait(settled(lab, "prime"), 15)
    calc.wait_for(lambda s: s["nodes"]["prime"]["links"] == {"eth0": "up", "eth1": "up"}, 5)
    cut = time.monotonic()
    lab.cut("prime")
    took = wait(lambda: holders(lab) == ["calc"], 5, interval=0.02)
    served = wait(lambda: page(lab) == "calc", 5, interval=0.02)
    print(f"\nprime's eth0 lost carrier -> calc holds the VIP after {took:.2f} s, serves after "
          f"{time.monotonic() - cut:.2f} s (deadtime 10 s)")
    assert took < 3 and served < 5
    assert calc.status()["links_watched"] == {"eth0": "up", "eth1": "up"}
    log = prime.log()
    assert "Link eth0: no carrier: taking 10.77.0.100 down" in log and "wants to go standby [local]" in log
    assert prime.status()["links_watched"]["eth0"] == "no carrier"
    assert "carrier: eth0 no carrier, eth1 up" in lab.exec("prime", prime.argv("status")).stdout
    assert calc.status()["nodes"]["prime"]["status"] == "active"     # not the deadtime path
    lab.heal("prime")
    prime.wait_for(lambda s: s["links_watched"]["eth0"] == "up", 5)
    time.sleep(3)
    assert holders(lab) == ["calc"] and page(lab) == "calc"
    assert calc.status()["groups"][0]["owner"] == "calc"


def test_flapping_cable_leaves_no_two_holders(lab):
    prime, calc = cluster(lab, deadtime="600ms")          # each 0.7 s outage outlasts deadtime: calc takes over
    wait(settled(lab, "prime"), 10)
    wait(past_startup_grace(prime, calc), 10)      # dt carries +2 s for 5 s after start
    stop = threading.Event()

    def flap():
        try:
            for _ in range(12):                    # 12 x 1.5 s
                if stop.is_set():
                    break
                lab.cut("prime")
                time.sleep(0.7)
                lab.heal("prime")
                time.sleep(0.8)
        finally:
            lab.heal("prime")
            stop.set()

    flapper = threading.Thread(target=flap, daemon=True)
    started = time.monotonic()
    flapper.start()
    doubled, samples, last = 0.0, 0, time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() - started < 30:
            both = len(holders(lab)) > 1
            now = time.monotonic()
            if both:
                doubled += now - last
            last, samples = now, samples + 1
            time.sleep(0.05)
    finally:
        stop.set()
        flapper.join(timeout=5)
    print(f"\nprime's cable flapped (0.7 s down / 0.8 s up) for {time.monotonic() - started:.1f} s: "
          f"{doubled:.2f} s with two holders ({samples} samples)")
    assert doubled < 0.2
    took = wait(settled(lab, "prime"), 10)
    print(f"prime (home) alone serves {took:.2f} s after the last flap")
    lab.cut("prime")                               # one more, held long enough to read the status
    prime.wait_for(lambda s: s["groups"][0]["state"] == "fault (eth0 no carrier)", 2, interval=0.05)
    assert "held by prime [fault (eth0 no carrier)]" in lab.exec("prime", prime.argv("status")).stdout
    assert "prime" not in holders(lab)
    lab.heal("prime")
    wait(settled(lab, "prime"), 10)
    time.sleep(2)
    assert holders(lab) == ["prime"]

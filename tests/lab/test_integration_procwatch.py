"""The process watch for real (root only): the demo's cluster (prime, calc, a client; the VIP and the web
server of tests/kits/netns.py) with `monitor webserver process=NAME` in heartbeat.py.cf, the default
interval (10 s: only the safety rescan) unless said. The web server's python runs through a symlink
named after this lab, so its comm is the lab's own: the namespaces share one pid namespace with every
other lab and test running at the same time, and another lab's web server must not count here. Killed
on prime, it is restarted in place at once (its pidfd, not a poll); unable to start there, its group
goes to calc at migration-threshold. The client polls http://VIP/ every 50 ms throughout."""
import os
import signal
import sys
import time

import pytest

from netns import BREAKABLE_WEBSERVER_SCRIPT as SCRIPT
from netns import VIP, Node, OutageClient, hacf, have_root_net, holders, kill_webserver, page, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")


def process_name(lab):
    """The web server's comm in this lab: the symlink's name (at most 15 characters)."""
    return f"{lab.prefix}web"[:15]


def cluster(lab, settings):
    """prime and calc with the web server run as LAB.tmp/NAME (a symlink to this python)."""
    name = process_name(lab)
    os.symlink(os.path.realpath(sys.executable), os.path.join(lab.tmp, name))
    script = SCRIPT.replace("    python3 -c '", f'    "$2/{name}" -c \'', 1)
    assert script != SCRIPT
    nodes = []
    for node_name in ("prime", "calc"):
        node = Node(lab, node_name, hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n",
                    resource_scripts={"webserver": script})
        node.write("heartbeat.py.cf", settings.format(name=name))
        nodes.append(node.start())
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 15)
    return nodes


def watch_of(status):
    return status["monitors"][0]["process"]


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_killed_web_server_is_restarted_in_place_at_once(lab):
    prime, calc = cluster(lab, "monitor webserver process={name}\n")
    prime.wait_for(lambda s: watch_of(s)["watching"] and watch_of(s)["matched"] == 1, 15)
    assert not watch_of(calc.status())["watching"]            # calc does not hold the group: watches nothing
    assert watch_of(prime.status())["events"] == "pidfd"
    client = OutageClient(lab, 30)
    time.sleep(1)
    killed = time.monotonic()
    kill_webserver(lab, "prime")
    prime.wait_for(lambda s: s["monitors"][0]["restarts"] == 1 and watch_of(s)["matched"] == 1, 5, interval=0.02)
    took = time.monotonic() - killed
    wait(lambda: page(lab) == "prime", 5)
    outage, timeline = client.outage()
    print(f"\nweb server killed on prime -> restarted in place and watched again after {took:.2f} s; client outage "
          f"{outage:.2f} s (process watch, interval 10 s)")
    assert took < 1.0 and outage < 1.0
    assert holders(lab) == ["prime"] and "calc" not in timeline
    log = prime.log()
    name = process_name(lab)
    assert (f"WARN: Resource webserver failed its process watch (0 processes named {name} (quorum 1)); "
            "restarting it in place (failure 1/3)") in log
    assert "Resource webserver restarted in place" in log
    text = lab.exec("prime", prime.argv("status"), check=False).stdout
    assert f"monitor webserver: 1 process named {name} (quorum 1), by pidfd" in text
    assert "failures 1/3, restarts 1" in text
    prime.write("heartbeat.py.cf", f"monitor webserver process={name} quorum_max=2 delay=200ms\n")
    prime.proc.send_signal(signal.SIGHUP)                       # SIGHUP applies a change
    prime.wait_for(lambda s: watch_of(s)["quorum_max"] == 2 and watch_of(s)["delay_ms"] == 200
                   and watch_of(s)["matched"] == 1, 5)
    assert prime.status()["monitors"][0]["failures"] == 1       # the count outlives the reload


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_web_server_that_cannot_start_is_handed_to_calc(lab):
    prime, calc = cluster(lab, "monitor webserver process={name} interval=1s\n")
    prime.wait_for(lambda s: watch_of(s)["watching"] and watch_of(s)["matched"] == 1, 15)
    client = OutageClient(lab, 40)
    time.sleep(1)
    open(os.path.join(lab.tmp, "broken-prime"), "w").close()
    killed = time.monotonic()
    kill_webserver(lab, "prime")
    wait(lambda: page(lab) == "calc", 20)
    took = time.monotonic() - killed
    outage, _ = client.outage()
    print(f"\nweb server killed on prime and unable to start there -> calc serves after {took:.2f} s; client "
          f"outage {outage:.2f} s (process watch, interval 1 s, migration-threshold 3)")
    assert holders(lab) == ["calc"] and outage < 5.0
    log = prime.log()
    assert "failed its process watch" in log and "restarting it in place (failure 1/3)" in log
    assert "Resource webserver failed to restart" in log and "migration-threshold reached, handing group" in log
    state = prime.status()["monitors"][0]
    assert state["moved_away"] and state["failures"] == 3
    calc.wait_for(lambda s: watch_of(s)["watching"] and watch_of(s)["matched"] == 1, 5)   # calc's own watch
    prime.wait_for(lambda s: not watch_of(s)["watching"], 5)

"""Service monitoring for real (root only): the demo's cluster (prime, calc, a client; the VIP and
the web server of tests/kits/netns.py) with `monitor webserver interval=1s` in heartbeat.py.cf. The web
server killed on prime is restarted in place; unable to start there, its group moves to calc. The
client polls http://VIP/ every 50 ms throughout, and each test prints the outage it saw. With a real
Heartbeat 3.0.6 beside it: tests/interop/test_mixed_monitor.py."""
import os
import signal
import time

import pytest

from netns import BREAKABLE_WEBSERVER_SCRIPT as SCRIPT
from netns import VIP, Node, OutageClient, hacf, have_root_net, holders, kill_webserver, page, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")
MONITOR = "monitor webserver interval=1s timeout=2s\n"


def cluster(lab, settings=MONITOR):
    nodes = []
    for name in ("prime", "calc"):
        node = Node(lab, name, hacf(**TIMERS), haresources=f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n",
                    resource_scripts={"webserver": SCRIPT})
        if settings is not None:
            node.write("heartbeat.py.cf", settings)
        nodes.append(node.start())
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 15)
    return nodes


def monitor_of(node):
    return node.status()["monitors"][0]


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_killed_web_server_is_restarted_in_place(lab):
    prime, calc = cluster(lab)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["last_result"] == "running", 5)
    client = OutageClient(lab, 30)
    time.sleep(1)
    kill_webserver(lab, "prime")
    took = prime.wait_for(lambda s: s["monitors"][0]["restarts"] == 1 and s["monitors"][0]["last_result"] == "running"
                          and s["groups"][0]["state"] == "running", 10)
    wait(lambda: page(lab) == "prime", 5)
    outage, timeline = client.outage()
    print(f"\nweb server killed on prime -> restarted in place, checked running again after {took:.2f} s; "
          f"client outage {outage:.2f} s (monitor interval 1 s)")
    assert holders(lab) == ["prime"]
    assert "calc" not in timeline                     # it never moved
    assert 0 < outage < 4.0
    log = prime.log()
    assert "WARN: Resource webserver failed its monitor (status: stopped); restarting it in place (failure 1/3)" in log
    assert "Resource webserver restarted in place" in log
    state = monitor_of(prime)
    assert (state["failures"], state["restarts"], state["moved_away"]) == (1, 1, False)
    text = prime.lab.exec("prime", prime.argv("status"), check=False).stdout
    assert "monitor webserver: running" in text and "failures 1/3, restarts 1" in text


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_web_server_that_cannot_start_moves_its_group_to_calc(lab):
    prime, calc = cluster(lab)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["last_result"] == "running", 5)
    client = OutageClient(lab, 40)
    time.sleep(1)
    broken = os.path.join(lab.tmp, "broken-prime")
    open(broken, "w").close()
    kill_webserver(lab, "prime")
    took = wait(lambda: page(lab) == "calc", 20)
    outage, timeline = client.outage()
    print(f"\nweb server killed on prime and unable to start there -> calc serves after {took:.2f} s; "
          f"client outage {outage:.2f} s (interval 1 s, migration-threshold 3)")
    assert holders(lab) == ["calc"]
    assert outage < 8.0
    log = prime.log()
    assert "restarting it in place (failure 1/3)" in log
    assert "Resource webserver failed to restart" in log
    assert "migration-threshold reached, handing group" in log
    state = monitor_of(prime)
    assert state["moved_away"] and state["failures"] == 3
    assert prime.status()["groups"][0]["owner"] == "calc"
    time.sleep(2)
    assert holders(lab) == ["calc"]                   # not started here again
    os.unlink(broken)                                 # fixed: takeover clears the count and brings it back
    assert lab.exec("prime", prime.argv("takeover"), check=False).returncode == 0
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 20)
    assert monitor_of(prime)["failures"] == 0 and not monitor_of(prime)["moved_away"]


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_sighup_starts_changes_and_keeps_monitors(lab):
    prime, calc = cluster(lab, settings=None)
    assert prime.status()["monitors"] == []
    prime.write("heartbeat.py.cf", "monitor webserver interval=500ms\n")
    prime.proc.send_signal(signal.SIGHUP)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["interval_ms"] == 500
                   and s["monitors"][0]["last_result"] == "running", 5)
    prime.write("heartbeat.py.cf", "monitor webserver interval=500ms\nmonitor nosuch\n")
    prime.proc.send_signal(signal.SIGHUP)
    wait(lambda: "New configuration refused" in prime.log(), 5)
    assert "heartbeat.py.cf:2: monitor nosuch: haresources has no resource nosuch" in prime.log()
    assert prime.status()["monitors"][0]["interval_ms"] == 500
    prime.write("heartbeat.py.cf", "# no monitor any more\n")
    prime.proc.send_signal(signal.SIGHUP)
    prime.wait_for(lambda s: s["monitors"] == [], 5)
    assert "Monitor of webserver::8080" in prime.log()

"""Service monitoring for real (root only): the demo's cluster (prime, calc, a client; the VIP and
the web server of tests/netns.py) with `monitor webserver interval=1s` in heartbeat.py.cf. The web
server killed on prime is restarted in place; unable to start there, its group moves to calc. The
client polls http://VIP/ every 50 ms throughout, and each test prints the outage it saw."""
import os
import signal
import time

import pytest

from netns import VIP, WEBSERVER_SCRIPT, Lab, Node, hacf, have_root_net, holders, page, poller, wait
from netns import WEB_PORT as PORT
from realhb import RealNode, have_real_heartbeat

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")
MONITOR = "monitor webserver interval=1s timeout=2s\n"
# The netns web server, except that it will not start while DIR/broken-NODE exists.
BROKEN = 'if [ -e "$2/broken-$HA_CURHOST" ]; then echo "cannot start: $2/broken-$HA_CURHOST"; exit 1; fi'
SCRIPT = WEBSERVER_SCRIPT.replace("start)\n", f"start)\n    {BROKEN}\n", 1)


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


class Client:
    """The client polling http://VIP/ for `seconds`; outage() is the longest run without an answer."""

    def __init__(self, lab, seconds):
        self.proc = poller(lab, seconds)

    def outage(self):
        time.sleep(1)                    # its next polls see what the test saw
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        worst, down = 0.0, None
        for line in out.splitlines():
            stamp, answer = line.split(" ", 1)
            if answer == "-" and down is None:
                down = float(stamp)
            elif answer != "-" and down is not None:
                worst, down = max(worst, float(stamp) - down), None
        assert down is None, f"the client had no answer at the end:\n{out}"
        return worst, out


def kill_webserver(lab, node):
    """The web server process, by the pid in its pid file."""
    with open(os.path.join(lab.tmp, f"webserver-{node}.pid")) as handle:
        os.kill(int(handle.read()), signal.SIGKILL)


def monitor_of(node):
    return node.status()["monitors"][0]


@pytest.mark.parametrize("lab", [("prime", "calc", "client")], indirect=True)
def test_killed_web_server_is_restarted_in_place(lab):
    prime, calc = cluster(lab)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["last_result"] == "running", 5)
    client = Client(lab, 30)
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
    client = Client(lab, 40)
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


@pytest.mark.skipif(not have_real_heartbeat(), reason="needs Debian's heartbeat package")
def test_a_real_heartbeat_starts_from_the_same_ha_d_and_takes_a_group_the_monitor_moves():
    """heartbeat.py.cf (and notify.d) sit in /etc/ha.d beside the files 3.0.6 reads; 3.0.6 ignores
    them (and would refuse `monitor` or `http_listen` in ha.cf). prime (heartbeat.py) hands the
    group to the real calc by hb_standby's exchange when its web server cannot start any more."""
    lab = Lab(["prime", "calc", "client"])
    try:
        haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n"
        text = hacf(keepalive="500ms", deadtime="3", initdead="6")
        prime = Node(lab, "prime", text, haresources=haresources, resource_scripts={"webserver": SCRIPT})
        real = RealNode(lab, "calc", text, "auth 1\n1 sha1 lab-secret\n", haresources, {"webserver": SCRIPT})
        for node, ha_d in ((prime, prime.config_dir), (real, real.ha_d)):
            node.write("heartbeat.py.cf", MONITOR + "http_listen 9694\nnotify_timeout 5s\n")
            os.makedirs(os.path.join(ha_d, "notify.d"))
            node.write("notify.d/log", "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/events\"\n", 0o755)
        real.start()
        prime.start()
        wait(lambda: real.cl_status("nodestatus", "prime") == "active" and page(lab) == "prime", 30)
        assert "Illegal directive" not in real.log()
        open(os.path.join(lab.tmp, "broken-prime"), "w").close()
        kill_webserver(lab, "prime")
        took = wait(lambda: page(lab) == "calc", 30)
        print(f"\nweb server unable to start on prime -> the real Heartbeat on calc serves after {took:.2f} s")
        assert holders(lab) == ["calc"] and monitor_of(prime)["moved_away"]
        assert "standby" in real.log()
        with open(os.path.join(prime.config_dir, "notify.d", "events")) as handle:
            assert "group-stopping prime" in handle.read()     # prime's hook was told; the real node runs none
    finally:
        lab.close()


@pytest.mark.skipif(not have_real_heartbeat(), reason="needs Debian's heartbeat package")
@pytest.mark.parametrize("lab", [("calc",)], indirect=True)
def test_a_real_heartbeat_refuses_monitor_in_ha_cf(lab):
    """Why the settings have a file of their own: 3.0.6 stops at a directive it does not know."""
    real = RealNode(lab, "calc", hacf() + MONITOR, "auth 1\n1 sha1 lab-secret\n")
    real.start()
    real.proc.wait(timeout=30)
    assert real.proc.returncode != 0
    with open(os.path.join(real.logdir, "console"), errors="replace") as console:
        assert "Illegal directive [monitor]" in real.log() + console.read()

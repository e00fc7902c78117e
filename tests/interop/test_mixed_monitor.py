"""Service monitoring beside a real Heartbeat 3.0.6 (root): the settings file that 3.0.6 ignores in the
same /etc/ha.d, and 3.0.6 refusing `monitor` in ha.cf."""
import os

import pytest

from netns import BREAKABLE_WEBSERVER_SCRIPT as SCRIPT
from netns import VIP, Lab, Node, hacf, have_root_net, holders, kill_webserver, page, wait
from netns import WEB_PORT as PORT
from realhb import RealNode, have_real_heartbeat

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

MONITOR = "monitor webserver interval=1s timeout=2s\n"        # as in tests/lab/test_integration_monitor.py


def monitor_of(node):
    return node.status()["monitors"][0]


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

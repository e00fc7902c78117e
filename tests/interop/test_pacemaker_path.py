"""The exported cluster on real Corosync 3 + Pacemaker 2.1 (root, Debian's packages).

One cluster per module: prime and calc run corosync and pacemakerd in namespaces (tests/kits/realpcmk.py),
the client polls the VIP. The configuration is the tutorial's, with a resource.d web server:
export-pacemaker's XML is loaded with cibadmin and the tests walk through what Heartbeat did with it.
The tests run in file order and share the cluster.
"""
import os
import re
import subprocess
import sys
import time

import pytest

import heartbeat as hb
from paths import HEARTBEAT
from netns import VIP, WEB_PORT, WEBSERVER_SCRIPT, Lab, cut_route, heal_route, holders, page, wait
from realpcmk import PacemakerNode, corosync_authkey, corosync_conf, have_pacemaker, load_cib, outage

REASON = have_pacemaker()
# One real Pacemaker cluster at a time, on one xdist worker (make test: --dist loadgroup), which also
# builds each module's cluster once.
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.xdist_group("pacemaker")]

CLIENT = "10.77.0.3"      # the client's address: also the ping node (Lab gives client index 3)
HACF = ("keepalive 500ms\ndeadtime 3\ninitdead 6\nudpport 694\nbcast eth0\nnode prime\nnode calc\n"
        f"auto_failback on\nping {CLIENT}\ndeadping 4\nrespawn hacluster /usr/lib/heartbeat/ipfail\n")
HB_PY_CF = "monitor webserver interval=1s timeout=5s\n"
# Only for the harness: a fresh cluster waits dc-deadtime (20 s) before it elects a DC; each node's
# first CIB sets 3 s. The exported configuration replaces it (cibadmin --replace) like any other.
SEED_CIB = ('<cib validate-with="pacemaker-3.0" epoch="1" num_updates="0" admin_epoch="0"><configuration>'
            '<crm_config><cluster_property_set id="cib-bootstrap-options"><nvpair id="seed-dc-deadtime" '
            'name="dc-deadtime" value="3s"/></cluster_property_set></crm_config><nodes/><resources/>'
            '<constraints/></configuration><status/></cib>')
TIMES = {}


def config_dir(root, hacf=HACF, name="ha.d", middle=""):
    """The three files (and heartbeat.py.cf) as a heartbeat.py pair would have them; `middle`: more
    haresources words between the VIP and the web server."""
    conf = os.path.join(root, name)
    os.makedirs(os.path.join(conf, "resource.d"))
    piddir = os.path.join(root, "pids")
    os.makedirs(piddir, exist_ok=True)
    files = {"ha.cf": hacf, "authkeys": "auth 1\n1 sha1 lab-secret\n", "heartbeat.py.cf": HB_PY_CF,
             "haresources": f"prime {VIP}/24/eth0 {middle}webserver::{WEB_PORT}::{piddir}\n",
             "resource.d/webserver": WEBSERVER_SCRIPT}
    for name, text in files.items():
        path = os.path.join(conf, name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755 if name.startswith("resource.d") else 0o600 if name == "authkeys" else 0o644)
    return conf


def seed_cib(node):
    path = os.path.join(node.dirs["/var/lib/pacemaker"], "cib", "cib.xml")
    with open(path, "w") as handle:
        handle.write(SEED_CIB)
    os.chmod(path, 0o600)
    os.system(f"chown hacluster:haclient {path}")  # noqa: S605 - a fixed command on our own file


@pytest.fixture(scope="module")
def cluster():
    lab = Lab(("prime", "calc", "client"))
    nodes = {}
    try:
        conf = config_dir(lab.tmp)
        config = hb.load_config(conf, "prime", [os.path.join(conf, "resource.d")])
        text = corosync_conf(config, {"prime": [lab.addr("prime")], "calc": [lab.addr("calc")]},
                             os.path.join(lab.tmp, "corosync.conf"))
        key = corosync_authkey(os.path.join(lab.tmp, "authkey"))
        xml, _, wrappers = hb.export_pacemaker(config, "xml")
        for name in ("prime", "calc"):
            nodes[name] = PacemakerNode(lab, name, text, key, init_scripts=wrappers)
            seed_cib(nodes[name])
        start = time.monotonic()
        for node in nodes.values():
            node.start()
        nodes["prime"].wait_online(["prime", "calc"], timeout=90)
        TIMES["cluster up"] = round(time.monotonic() - start, 2)
        start = time.monotonic()
        load_cib(nodes["prime"], xml, os.path.join(lab.tmp, "cib.xml"))
        wait(lambda: page(lab) == "prime", 60)
        TIMES["CIB loaded -> prime serves"] = round(time.monotonic() - start, 2)
        yield lab, nodes, config, xml, wrappers
    finally:
        for node in nodes.values():
            node.close()
        lab.close()
        print("\nPacemaker path, measured (s):", TIMES)


def test_corosync_conf_comes_from_the_export(cluster):
    lab, nodes, config, _, _ = cluster
    with open(os.path.join(nodes["prime"].dirs["/etc/corosync"], "corosync.conf")) as handle:
        text = handle.read()
    assert "cluster_name: linux-ha" in text and "token: 3000" in text and "two_node: 1" in text
    assert re.search(r"ring0_addr: 10\.77\.0\.1\s+name: prime\s+nodeid: 1", text)
    quorum = nodes["calc"].crm(["corosync-quorumtool", "-s"]).stdout
    assert re.search(r"Quorate:\s+Yes", quorum) and "2 Node" in quorum.replace("2Node", "2 Node"), quorum


def test_vip_and_service_start_on_the_home_node(cluster):
    lab, nodes, _, _, wrappers = cluster
    assert holders(lab) == ["prime"] and page(lab) == "prime"

    def started():          # the page can answer before execd has reported the start complete
        return re.search(r"hb-webserver\s+\(lsb:hb-webserver\):\s+Started prime",
                         nodes["calc"].crm(["crm_mon", "-1"]).stdout)
    wait(started, 20, interval=0.2)
    # the exported LSB wrapper, as Pacemaker's execd runs it: status 0 where it runs, 3 where not
    assert list(wrappers) == ["hb-webserver"]
    assert nodes["prime"].crm(["/etc/init.d/hb-webserver", "status"]).returncode == 0
    assert nodes["calc"].crm(["/etc/init.d/hb-webserver", "status"]).returncode == 3


def test_monitor_restarts_a_dead_service_in_place(cluster):
    """heartbeat.py.cf `monitor webserver interval=1s` became a 1 s monitor operation."""
    lab, nodes, _, xml, _ = cluster
    assert 'name="monitor" interval="1s" timeout="5s"' in xml
    pids = [p for p in os.listdir(os.path.join(lab.tmp, "pids")) if p.endswith("-prime.pid")]
    with open(os.path.join(lab.tmp, "pids", pids[0])) as handle:
        os.kill(int(handle.read()), 9)
    took = wait(lambda: page(lab) == "-", 5)
    TIMES["monitor: web server restarted"] = round(wait(lambda: page(lab) == "prime", 20) + took, 2)
    assert holders(lab) == ["prime"]


def test_standby_hands_over_and_unstandby_fails_back(cluster):
    lab, nodes, _, _, _ = cluster
    calc = nodes["calc"]
    TIMES["standby prime: dark, calc serves"] = outage(
        lab, lambda: calc.crm(["crm_standby", "-N", "prime", "-v", "on"], check=True), "calc")
    assert holders(lab) == ["calc"]
    TIMES["unstandby prime (auto_failback on): dark, prime serves"] = outage(
        lab, lambda: calc.crm(["crm_standby", "-N", "prime", "-D"], check=True), "prime")
    assert holders(lab) == ["prime"]


def test_ipfail_ping_moves_the_group_to_the_node_that_reaches_the_ping_node(cluster):
    """ha.cf `ping` + ipfail became an ocf:pacemaker:ping clone and a location rule on its attribute."""
    lab, nodes, _, xml, _ = cluster
    assert 'type="ping"' in xml and f'value="{CLIENT}"' in xml
    TIMES["ipfail: prime loses the ping node: dark, calc serves"] = outage(
        lab, lambda: cut_route(lab, "prime", CLIENT), "calc")
    assert holders(lab) == ["calc"]
    TIMES["ipfail: prime reaches it again: dark, prime serves"] = outage(
        lab, lambda: heal_route(lab, "prime"), "prime")
    assert holders(lab) == ["prime"]


def test_stopping_the_home_nodes_pacemaker_fails_over_and_its_return_fails_back(cluster):
    lab, nodes, _, _, _ = cluster
    prime = nodes["prime"]
    TIMES["stop prime's pacemaker+corosync: dark, calc serves"] = outage(lab, prime.stop, "calc")
    assert holders(lab) == ["calc"]

    def back():
        prime.start()
        prime.wait_online(["prime", "calc"], timeout=60)
    TIMES["prime's cluster back (auto_failback on): dark, prime serves"] = outage(lab, back, "prime", 90)
    assert holders(lab) == ["prime"]


def test_link_cut_fails_over_and_the_heal_brings_it_home(cluster):
    """Hard failure: prime's cable is pulled (no fencing, as under Heartbeat: prime keeps its copy)."""
    lab, nodes, _, _, _ = cluster
    TIMES["link cut: dark, calc serves"] = outage(lab, lambda: lab.cut("prime"), "calc")
    assert "calc" in holders(lab)
    TIMES["link healed: dark, prime serves"] = outage(lab, lambda: lab.heal("prime"), "prime", 90)
    wait(lambda: holders(lab) == ["prime"], 30)
    nodes["calc"].wait_online(["prime", "calc"], timeout=30)


def test_auto_failback_off_stays_on_the_node_that_took_over(cluster):
    """The same cluster with auto_failback off: its pcs export's stickiness lines, run on a copy of the
    running CIB (pcs cluster cib) and pushed back (pcs cluster cib-push), as the export's script does."""
    lab, nodes, _, _, _ = cluster
    calc = nodes["calc"]
    conf = config_dir(lab.tmp, HACF.replace("auto_failback on", "auto_failback off"), name="ha.d-off")
    config = hb.load_config(conf, "prime", [os.path.join(conf, "resource.d")])
    assert 'name="resource-stickiness" value="200"' in hb.export_pacemaker(config, "xml")[0]
    script = hb.export_pacemaker(config, "pcs")[0]
    lines = [line for line in script.splitlines()
             if line.startswith(('pcs -f "$CIB" resource defaults', 'pcs -f "$CIB" resource meta'))]
    assert len(lines) == 2, script
    cib = os.path.join(lab.tmp, "pcs-off.xml")
    calc.crm(["pcs", "cluster", "cib", cib], check=True)
    calc.crm(["sh", "-ec", "\n".join(lines), "pcs-lines"], check=True, env_extra={"CIB": cib})
    calc.crm(["pcs", "cluster", "cib-push", cib], check=True)
    live = calc.crm(["cibadmin", "-Q", "--scope", "configuration"], check=True).stdout
    assert 'name="resource-stickiness" value="200"' in live and 'name="resource-stickiness" value="100"' in live
    time.sleep(2)
    assert page(lab) == "prime"
    TIMES["auto_failback off: standby prime: dark, calc serves"] = outage(
        lab, lambda: calc.crm(["crm_standby", "-N", "prime", "-v", "on"], check=True), "calc")
    calc.crm(["crm_standby", "-N", "prime", "-D"], check=True)
    time.sleep(8)            # time enough to have failed back (it takes under 1 s with auto_failback on)
    assert page(lab) == "calc" and holders(lab) == ["calc"]


def test_a_filesystem_from_haresources_is_mounted_by_pacemakers_agent(cluster):
    """Issue 25: `Filesystem::IMAGE::DIR::ext4::loop` (3.0.6's wrapper word) between the VIP and the web
    server; export-pacemaker (the CLI) makes it ocf:heartbeat:Filesystem, the XML replaces the running
    configuration, and Pacemaker's execd runs the agent: the ext4 image is mounted on prime (in its
    mount namespace), moves with a standby to calc with the data written on prime, and comes back; it is
    never mounted on both. (This configuration has auto_failback on again.)"""
    lab, nodes, _, _, _ = cluster
    calc = nodes["calc"]
    image, mountpoint = os.path.join(lab.tmp, "disk.img"), os.path.join(lab.tmp, "data")
    os.makedirs(mountpoint)
    subprocess.run(["truncate", "-s", "16M", image], check=True, timeout=10)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, timeout=30, capture_output=True)
    conf = config_dir(lab.tmp, name="ha.d-fs", middle=f"Filesystem::{image}::{mountpoint}::ext4::loop ")
    work = os.path.join(lab.tmp, "export-fs")
    os.makedirs(work)
    cib = os.path.join(work, "cib.xml")
    subprocess.run([sys.executable, HEARTBEAT, "export-pacemaker", "--format", "xml", "-o", cib, "-c", conf],
                   check=True, capture_output=True, timeout=60)
    with open(cib) as handle:
        xml = handle.read()
    assert re.search(r'<primitive id="[^"]+" class="ocf" provider="heartbeat" type="Filesystem">', xml), xml
    for name in os.listdir(work):        # the web server's LSB wrapper, for this ha.d
        if name.startswith("hb-"):
            with open(os.path.join(work, name)) as handle:
                for node in nodes.values():
                    node.install_init_script(name, handle.read())

    def mounted():
        found = []
        for name, node in nodes.items():
            with open(f"/proc/{node.holder_pid}/mountinfo") as handle:
                if any(line.split()[4] == mountpoint for line in handle):
                    found.append(name)
        return found

    def settle(name, timeout):
        """Until `name` alone has the disk and serves the page; the most nodes that had it at once."""
        most, end = 0, time.monotonic() + timeout
        while time.monotonic() < end:
            now = mounted()
            most = max(most, len(now))
            if now == [name] and holders(lab) == [name] and page(lab) == name:
                return most
            time.sleep(0.05)
        raise AssertionError(f"not on {name} after {timeout} s: mounted {mounted()}, holders {holders(lab)}\n"
                             f"{calc.crm(['crm_mon', '-1']).stdout}\n{calc.logs()}")

    start = time.monotonic()
    load_cib(calc, xml, os.path.join(work, "load.xml"))
    assert settle("prime", 60) == 1
    TIMES["Filesystem configuration loaded -> prime mounted and serves"] = round(time.monotonic() - start, 2)
    assert re.search(r"\(ocf:heartbeat:Filesystem\):\s+Started prime", calc.crm(["crm_mon", "-1"]).stdout)
    enter = ["nsenter", "--target", str(nodes["prime"].holder_pid), "--mount"]
    subprocess.run([*enter, "sh", "-c", f"echo written-on-prime > {mountpoint}/marker && sync"], check=True,
                   timeout=10)

    start = time.monotonic()
    calc.crm(["crm_standby", "-N", "prime", "-v", "on"], check=True)
    assert settle("calc", 60) == 1
    TIMES["Filesystem: standby prime -> calc mounted and serves"] = round(time.monotonic() - start, 2)
    read = subprocess.run(["nsenter", "--target", str(calc.holder_pid), "--mount", "cat", f"{mountpoint}/marker"],
                          capture_output=True, text=True, timeout=10)
    assert read.stdout.strip() == "written-on-prime", read.stderr
    start = time.monotonic()
    calc.crm(["crm_standby", "-N", "prime", "-D"], check=True)
    assert settle("prime", 60) == 1
    TIMES["Filesystem: unstandby prime -> prime mounted and serves"] = round(time.monotonic() - start, 2)
    with open(nodes["prime"].pacemaker_log, errors="replace") as handle:
        assert f"INFO: Running start for {image} on {mountpoint}" in handle.read()

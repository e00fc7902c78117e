"""From a running heartbeat.py pair to Pacemaker, step by step, while a client polls the VIP (root).

The pair first runs the scenario that test_pacemaker_path.py runs on Pacemaker (hand-over, failback,
link cut, heal) with the same files and timers, so both engines' times are measured alike. Then the
migration, exactly as README's "Moving to Pacemaker" procedure: export (the CLI), corosync.conf from
the export, and per node, the passive one first: stop heartbeat.py, start corosync and Pacemaker;
the CIB is loaded once, on the first Pacemaker node (it holds nothing: two_node's wait_for_all keeps
it without quorum until the second one joins). The client's outage is measured over the whole of it.
"""
import os
import subprocess
import sys
import time

import pytest

from paths import HEARTBEAT
from netns import VIP, WEB_PORT, WEBSERVER_SCRIPT, Lab, Node, holders, page, poller, wait
from realpcmk import PacemakerNode, corosync_authkey, corosync_conf, have_pacemaker, load_cib, outage

REASON = have_pacemaker()
# One real Pacemaker cluster at a time, on one xdist worker (make test: --dist loadgroup), which also
# builds each module's cluster once.
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.xdist_group("pacemaker")]

HACF = "keepalive 500ms\ndeadtime 3\ninitdead 6\nudpport 694\nbcast eth0\nnode prime\nnode calc\nauto_failback on\n"
HB_PY_CF = "monitor webserver interval=1s timeout=5s\n"     # as in test_pacemaker_path.py
TIMES = {}


@pytest.fixture(scope="module")
def pair():
    lab = Lab(("prime", "calc", "client"))
    try:
        piddir = os.path.join(lab.tmp, "pids")
        os.makedirs(piddir)
        nodes = {name: Node(lab, name, HACF, haresources=f"prime {VIP}/24/eth0 webserver::{WEB_PORT}::{piddir}\n",
                            resource_scripts={"webserver": WEBSERVER_SCRIPT}) for name in ("prime", "calc")}
        for node in nodes.values():
            node.write("heartbeat.py.cf", HB_PY_CF)
            node.start()
        wait(lambda: page(lab) == "prime", 30)
        for node in nodes.values():      # past their first 5 s, when each announces a deadtime 2 s longer
            node.wait_for(lambda s: s["uptime_s"] >= 6.0, 15)
        yield lab, nodes
    finally:
        lab.close()
        print("\nheartbeat.py, then the migration, measured (s):", TIMES)


def test_the_same_scenario_on_heartbeat_py(pair):
    lab, nodes = pair
    prime = nodes["prime"]

    def ask(command):
        return lambda: lab.exec("prime", prime.argv(command), check=True)
    TIMES["standby prime: dark, calc serves"] = outage(lab, ask("standby"), "calc")
    TIMES["takeover on prime: dark, prime serves"] = outage(lab, ask("takeover"), "prime")
    TIMES["link cut: dark, calc serves"] = outage(lab, lambda: lab.cut("prime"), "calc")
    TIMES["link healed (auto_failback on): dark, prime serves"] = outage(lab, lambda: lab.heal("prime"), "prime")
    wait(lambda: holders(lab) == ["prime"], 30)
    for node in nodes.values():
        node.wait_for(lambda s: all(n["status"] == "active" for n in s["nodes"].values()), 30)
    TIMES["stop prime's heartbeat.py: dark, calc serves"] = outage(lab, prime.stop, "calc")
    TIMES["prime's heartbeat.py back (auto_failback on): dark, prime serves"] = outage(lab, prime.start, "prime")
    for node in nodes.values():
        node.wait_for(lambda s: all(n["status"] == "active" for n in s["nodes"].values()), 30)


def test_migration_to_pacemaker_while_the_client_polls(pair):
    lab, nodes = pair
    conf_dir = nodes["prime"].config_dir
    work = os.path.join(lab.tmp, "migration")
    os.makedirs(work)
    # 1. export, with the CLI as an operator would; the LSB wrapper is written next to the output
    cib = os.path.join(work, "cib.xml")
    subprocess.run([sys.executable, HEARTBEAT, "export-pacemaker", "--format", "xml", "-o", cib, "-c", conf_dir],
                   check=True, capture_output=True, timeout=60)
    wrappers = {}
    for name in os.listdir(work):
        if name.startswith("hb-"):
            with open(os.path.join(work, name)) as handle:
                wrappers[name] = handle.read()
    assert list(wrappers) == ["hb-webserver"]
    # 2. corosync.conf from the export's settings, one authkey
    import heartbeat as hb
    config = hb.load_config(conf_dir, "prime", [os.path.join(conf_dir, "resource.d")])
    text = corosync_conf(config, {"prime": [lab.addr("prime")], "calc": [lab.addr("calc")]},
                         os.path.join(work, "corosync.conf"))
    key = corosync_authkey(os.path.join(work, "authkey"))
    pcmk = {name: PacemakerNode(lab, name, text, key, init_scripts=wrappers) for name in ("prime", "calc")}
    with open(cib) as handle:
        cib_text = handle.read()
    client = poller(lab, 180)
    time.sleep(0.5)
    try:
        begin = time.monotonic()
        # 3. the passive node: heartbeat.py off, its cluster on; the CIB loaded there once
        nodes["calc"].stop()
        pcmk["calc"].start()
        TIMES["calc: Pacemaker up alone (DC, no quorum)"] = round(pcmk["calc"].wait_online(["calc"], 90), 2)
        load_cib(pcmk["calc"], cib_text, os.path.join(work, "load.xml"))
        assert page(lab) == "prime"            # prime's heartbeat.py still serves
        # 4. the active node: heartbeat.py off (the outage starts), its cluster on
        switch = time.monotonic()
        nodes["prime"].stop()
        pcmk["prime"].start()
        wait(lambda: page(lab) == "prime", 90)
        TIMES["prime: heartbeat.py stopped -> Pacemaker serves"] = round(time.monotonic() - switch, 2)
        TIMES["whole procedure"] = round(time.monotonic() - begin, 2)
        # 5. check
        pcmk["calc"].wait_online(["prime", "calc"], 30)
        assert holders(lab) == ["prime"]
        time.sleep(1)
    finally:
        client.terminate()
        out = client.communicate(timeout=10)[0]
        for node in pcmk.values():
            node.close()
    lines = [(float(stamp), answer) for stamp, answer in (line.split() for line in out.splitlines())]
    dark = sum(b[0] - a[0] for a, b in zip(lines, lines[1:]) if a[1] == "-")
    TIMES["client's outage over the whole migration"] = round(dark, 2)
    assert [answer for _, answer in lines] == ["prime", "-", "prime"], out
    assert dark < 30


"""The membership daemon for real: daemons in network namespaces on a bridge (root only)."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from netns import Node, hacf, have_root_net, past_startup_grace, wait

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

FAST = dict(keepalive="200ms", deadtime="1", initdead="3")



def node_status(node, name):
    return node.status().get("nodes", {}).get(name, {}).get("status")


@pytest.mark.parametrize("lab", [("prime", "calc", "third")], indirect=True)
def test_three_nodes_see_each_other_then_a_cut_node_is_dead_after_deadtime(lab):
    names = ("prime", "calc", "third")
    nodes = {n: Node(lab, n, hacf(nodes=names, **FAST)).start() for n in names}
    for node in nodes.values():
        node.wait_for(lambda s: all(v["status"] == "active" for v in s["nodes"].values()), 3)
    wait(past_startup_grace(*nodes.values()), 10)     # past the first 5 s, when dt still carries +2 s
    cut = time.monotonic()
    lab.cut("third")
    detected = nodes["prime"].wait_for(lambda s: s["nodes"]["third"]["status"] == "dead", 5, interval=0.02)
    elapsed = time.monotonic() - cut
    print(f"\nthird declared dead {elapsed * 1000:.0f} ms after its link was cut (deadtime 1000 ms, keepalive 200 ms)")
    assert 0.8 - 0.05 <= elapsed <= 2.0, detected
    nodes["calc"].wait_for(lambda s: s["nodes"]["third"]["status"] == "dead", 1)
    assert nodes["calc"].status()["nodes"]["prime"]["status"] == "active"
    assert "Link third:eth0 dead." in nodes["prime"].log()
    lab.heal("third")
    nodes["prime"].wait_for(lambda s: s["nodes"]["third"]["status"] == "active", 3)


def test_graceful_stop_is_seen_at_once(lab):
    prime = Node(lab, "prime", hacf(deadtime="5", keepalive="500ms", initdead="10")).start()
    calc = Node(lab, "calc", hacf(deadtime="5", keepalive="500ms", initdead="10")).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 5)
    stopped = time.monotonic()
    assert calc.stop() == 0
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "dead", 1.0, interval=0.02)
    assert time.monotonic() - stopped < 1.5               # deadtime is 5 s
    assert "Received shutdown notice from 'calc'." in prime.log()


def test_wrong_key_is_never_accepted(lab):
    prime = Node(lab, "prime", hacf(**FAST)).start()
    calc = Node(lab, "calc", hacf(**FAST), authkeys="auth 1\n1 sha1 another-secret\n").start()
    time.sleep(4)
    for me, other in ((prime, "calc"), (calc, "prime")):
        status = me.status()
        assert status["nodes"][other]["status"] == "dead"
        assert status["nodes"][other]["last_heard_s"] is None
        assert status["counters"].get("dropped_bad_auth", 0) > 5
    assert "authentication failed" in prime.log()


def test_restarted_node_is_seen_as_restarted_not_as_a_replay(lab):
    prime = Node(lab, "prime", hacf(**FAST)).start()
    calc = Node(lab, "calc", hacf(**FAST)).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 3)
    before = prime.status()["nodes"]["calc"]["generation"]
    calc.kill()
    calc.start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["generation"] == before + 1
                   and s["nodes"]["calc"]["status"] == "active", 3)
    assert "Heartbeat restart on node calc" in prime.log()
    assert "replay" not in prime.log() and "returning after partition" not in prime.log()


def test_twenty_percent_loss_causes_no_false_death(lab):
    if not shutil.which("nft"):
        pytest.skip("nft (nftables) is not installed")
    timers = dict(keepalive="100ms", deadtime="1", initdead="3")
    prime = Node(lab, "prime", hacf(**timers)).start()
    Node(lab, "calc", hacf(**timers)).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 3)
    for rule in (["add", "table", "inet", "hbloss"],
                 ["add", "chain", "inet", "hbloss", "input", "{ type filter hook input priority 0 ; }"],
                 ["add", "rule", "inet", "hbloss", "input", "udp", "dport", "694", "numgen", "random", "mod", "100",
                  "<", "20", "counter", "drop"]):
        lab.exec("prime", ["nft", *rule])
    time.sleep(20)
    counters = lab.exec("prime", ["nft", "list", "table", "inet", "hbloss"]).stdout
    dropped = int(re.search(r"counter packets (\d+)", counters).group(1))
    print(f"\n20% loss for 20 s at keepalive 100 ms, deadtime 1 s: {dropped} heartbeat packets dropped, no death")
    assert dropped > 50
    assert prime.status()["nodes"]["calc"]["status"] == "active"
    assert "is dead" not in prime.log()


def test_second_copy_refuses_and_status_exit_codes(lab):
    prime = Node(lab, "prime", hacf(**FAST))
    stopped = lab.exec("prime", prime.argv("status"), check=False)
    assert stopped.returncode == 3 and "stopped" in stopped.stdout
    prime.start()
    prime.wait_for(lambda s: True, 3)
    second = lab.exec("prime", prime.argv("daemon", "--foreground"), check=False, timeout=10)
    assert second.returncode != 0 and "already running" in second.stderr
    status = prime.status()
    assert status["node"] == "prime"
    assert set(status["nodes"]["calc"]) >= {"status", "links", "last_heard_s"}
    assert lab.exec("prime", prime.argv("status"), check=False).returncode == 0
    # The daemon the init system started is the one answering, now from its bytecode.
    assert status["pid"] == prime.proc.pid
    with open(f"/proc/{prime.proc.pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert argv[1:3] == [b"-I", os.path.join(prime.state_dir, "heartbeat.pyc").encode()], argv


def test_sighup_keeps_a_broken_config_out_and_applies_a_good_one(lab):
    prime = Node(lab, "prime", hacf(**FAST)).start()
    prime.wait_for(lambda s: True, 3)
    prime.write("ha.cf", hacf(**FAST) + "bogus_directive 1\n")
    prime.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert prime.proc.poll() is None
    assert "New configuration refused" in prime.log()
    assert prime.status()["timers_ms"]["keepalive"] == 200
    prime.write("ha.cf", hacf(keepalive="300ms", deadtime="1", initdead="3"))
    prime.proc.send_signal(signal.SIGHUP)
    prime.wait_for(lambda s: s["timers_ms"]["keepalive"] == 300, 2)


def test_crc_is_warned_at_start_and_on_every_reload(lab):
    prime = Node(lab, "prime", hacf(**FAST), authkeys="auth 1\n1 crc\n").start()
    prime.wait_for(lambda s: True, 3)
    warning = "authkeys:2: warning: key 1 uses crc: anyone on the network can forge heartbeat packets"
    assert prime.log().count(warning) == 1
    for reloads in (1, 2):
        prime.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 3
        while prime.log().count("Configuration reloaded.") < reloads:
            assert time.monotonic() < deadline, "no reload"
            time.sleep(0.05)
        assert prime.log().count(warning) == 1 + reloads
    prime.write("authkeys", "auth 1\n1 sha1 lab-secret\n", mode=0o600)
    prime.proc.send_signal(signal.SIGHUP)
    prime.wait_for(lambda s: prime.log().count("Configuration reloaded.") == 3, 3)
    assert prime.log().count(warning) == 3


@pytest.mark.parametrize("syslogmsgfmt, pattern", [
    ("true", r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \S+ heartbeat: \[\d+\]: info: Local status now set to: 'up'$"),
    ("false", r"^heartbeat\[\d+\]: \d{4}/\d\d/\d\d_\d\d:\d\d:\d\d info: Local status now set to: 'up'$"),
])
def test_log_files_where_and_how_ha_cf_says(lab, syslogmsgfmt, pattern):
    logdir = os.path.join(lab.tmp, "logs")
    os.makedirs(logdir)
    extra = (f"logfile {logdir}/ha-log\ndebugfile {logdir}/ha-debug\ndebug 1\nlogfacility none\n"
             f"syslogmsgfmt {syslogmsgfmt}\n")
    prime = Node(lab, "prime", hacf(extra=extra, **FAST)).start()
    prime.wait_for(lambda s: True, 3)
    time.sleep(0.3)
    for name in ("ha-log", "ha-debug"):
        with open(os.path.join(logdir, name)) as handle:
            lines = handle.read().splitlines()
        assert any(re.match(pattern, line) for line in lines), lines[:5]


def test_background_daemon_pidfile_and_sigterm(lab):
    prime = Node(lab, "prime", hacf(**FAST))
    started = lab.exec("prime", prime.argv("daemon"), check=False, timeout=15)
    assert started.returncode == 0, started.stderr
    with open(os.path.join(prime.run_dir, "heartbeat.pid")) as handle:
        pid = int(handle.read())
    try:
        assert lab.exec("prime", prime.argv("status"), check=False).returncode == 0
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")
    assert lab.exec("prime", prime.argv("status"), check=False).returncode == 3


def test_missing_interface_is_named_and_nothing_runs(lab):
    prime = Node(lab, "prime", hacf(media="bcast eth7", **FAST))
    result = subprocess.run(["ip", "netns", "exec", lab.ns("prime"), *prime.argv("daemon")],
                            capture_output=True, text=True, timeout=15)
    assert result.returncode != 0 and "eth7" in result.stderr
    assert lab.exec("prime", prime.argv("status"), check=False).returncode == 3


def test_unwritable_state_dir_fails_the_start_and_nothing_runs(lab):
    prime = Node(lab, "prime", hacf(**FAST))
    blocker = os.path.join(prime.root, "not-a-dir")
    with open(blocker, "w") as handle:
        handle.write("a regular file where the state directory's parent should be\n")
    prime.state_dir = os.path.join(blocker, "state")
    result = lab.exec("prime", prime.argv("daemon"), check=False, timeout=15)
    assert result.returncode != 0
    assert f"cannot keep hb_uuid and hb_generation in the state directory {prime.state_dir}" in result.stderr
    status = lab.exec("prime", prime.argv("status"), check=False)
    assert status.returncode == 3 and "stopped" in status.stdout
    time.sleep(0.2)
    assert subprocess.run(["ip", "netns", "pids", lab.ns("prime")], capture_output=True, text=True,
                          timeout=10).stdout.split() == []


def test_bcast_without_a_broadcast_address_computes_it_and_warns(lab):
    lab.exec("prime", ["ip", "addr", "flush", "dev", "eth0"])
    lab.exec("prime", ["ip", "addr", "add", "10.77.0.1/24", "dev", "eth0"])      # no `brd +`: no broadcast
    assert " brd " not in lab.exec("prime", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    prime = Node(lab, "prime", hacf(**FAST)).start()
    calc = Node(lab, "calc", hacf(**FAST)).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 4)
    calc.wait_for(lambda s: s["nodes"]["prime"]["status"] == "active", 4)
    assert "interface eth0 has no broadcast address set: sending bcast heartbeats to 10.77.0.255, " \
           "computed from 10.77.0.1/24" in prime.log()


def test_bcast_on_a_host_address_is_refused_with_the_reason(lab):
    lab.exec("prime", ["ip", "addr", "flush", "dev", "eth0"])
    lab.exec("prime", ["ip", "addr", "add", "10.77.0.1/32", "dev", "eth0"])
    prime = Node(lab, "prime", hacf(**FAST))
    result = lab.exec("prime", prime.argv("daemon"), check=False, timeout=15)
    assert result.returncode != 0
    assert "Get broadcast for interface eth0 failed: its address 10.77.0.1/32 has no broadcast address" \
        in result.stderr
    assert lab.exec("prime", prime.argv("status"), check=False).returncode == 3


@pytest.mark.parametrize("media", [
    ("mcast eth0 239.77.0.1 694 1 0", "mcast eth0 239.77.0.1 694 1 0"),
    ("ucast eth0 10.77.0.2", "ucast eth0 10.77.0.1"),
    ("bcast eth0\nucast eth0 10.77.0.2", "bcast eth0\nucast eth0 10.77.0.1"),
])
def test_mcast_ucast_and_two_media_at_once(lab, media):
    prime = Node(lab, "prime", hacf(media=media[0], **FAST)).start()
    Node(lab, "calc", hacf(media=media[1], **FAST)).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active", 3)
    time.sleep(2)
    status = prime.status()
    assert status["nodes"]["calc"]["status"] == "active"
    assert status["counters"].get("dropped_bad_auth", 0) == 0 and status["counters"].get("dropped_malformed", 0) == 0
    if "\n" in media[0]:                 # every heartbeat arrives twice: counted once
        assert status["counters"].get("dropped_duplicate", 0) >= 10


def test_cl_status_style_queries(lab):
    prime = Node(lab, "prime", hacf(**FAST), haresources="prime 10.77.0.100/24/eth0\n").start()
    Node(lab, "calc", hacf(**FAST)).start()
    prime.wait_for(lambda s: s["nodes"]["calc"]["status"] == "active" and s["groups"][0]["state"] == "running", 5)

    def query(*words):
        result = lab.exec("prime", prime.argv("status", *words), check=False)
        return result.returncode, result.stdout.strip()
    assert query("hbstatus") == (0, "Heartbeat is running on this machine.")
    assert query("listnodes") == (0, "calc\nprime")
    assert query("nodestatus", "calc") == (0, "active")
    assert query("nodetype", "calc") == (0, "normal")
    assert query("listhblinks", "calc") == (0, "eth0")
    assert query("hblinkstatus", "calc", "eth0") == (0, "up")
    assert query("rscstatus") == (0, "local")
    assert query("nodestatus", "nosuch")[0] == 11
    assert query("hblinkstatus", "calc", "eth9")[0] == 11
    assert query("frobnicate")[0] == 2

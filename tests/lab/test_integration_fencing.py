"""STONITH for real (root only): heartbeat.py nodes in namespaces with the lab's fence plugin
(tests/kits/fencing.py), which powers a node's namespace off (every process killed, links down) and
records when. cluster-glue's `stonith` command runs it, as it would run external/ipmi."""
import os
import signal
import subprocess
import time

import pytest

import fencing
from fencing import RECORDER, STUCK
from netns import VIP, WEBSERVER_SCRIPT, Node, hacf, have_root_net, holders, page, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not (have_root_net() and fencing.can_install()),
                                reason="needs root, ip(8), unshare and cluster-glue (Debian's heartbeat package)")


def cluster(lab, plugin, settings=""):
    text = hacf(keepalive="200ms", deadtime="1", initdead="3",
                extra=f"stonith_host * {plugin.type} prime calc\n")
    haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n"
    nodes = []
    for name in ("prime", "calc"):
        node = Node(lab, name, text, haresources=haresources, resource_scripts={"webserver": WEBSERVER_SCRIPT})
        if settings:
            node.write("heartbeat.py.cf", settings)
        nodes.append(fencing.start_node(node, plugin))
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 15)
    time.sleep(1)
    return nodes


def first_seen_on_calc(lab, timeout):
    """time.monotonic() when calc first carries the VIP."""
    wait(lambda: "calc" in holders(lab), timeout, interval=0.02)
    return time.monotonic()


def test_a_crashed_node_is_powered_off_before_its_group_is_taken(lab):
    plugin = fencing.make_plugin(lab)
    prime, calc = cluster(lab, plugin)
    prime.kill()                                     # heartbeat.py dies; its VIP and web server stay
    reset = fencing.wait_reset(plugin, "prime", 10)
    took = first_seen_on_calc(lab, 10)
    print(f"\nprime reset {reset['mono_end'] - reset['mono']:.2f} s long; calc holds the VIP "
          f"{took - reset['mono_end']:.2f} s after the reset ended")
    assert took > reset["mono_end"], "the group was taken over before the reset"
    assert fencing.gone(lab, "prime")
    wait(lambda: page(lab) == "calc", 5)
    log = calc.log()
    assert f"Resetting node prime with [{plugin.type}]" in log and "node prime now reset." in log
    assert calc.status()["stonith"]["resets"] == {"prime": 1}


def test_a_failing_device_blocks_the_takeover_and_is_retried_every_5_s(lab):
    plugin = fencing.make_plugin(lab, fail_times=2)
    prime, calc = cluster(lab, plugin)
    prime.kill()
    reset = fencing.wait_reset(plugin, "prime", 30)
    took = first_seen_on_calc(lab, 10)
    attempts = plugin.resets("prime")
    starts = [a["mono"] for a in attempts]
    gaps = [round(b - a, 2) for a, b in zip(starts, starts[1:])]
    print(f"\nattempts {len(attempts)}, {gaps} s apart; calc took over {took - reset['mono_end']:.2f} s after "
          "the one that worked")
    assert [a["rc"] == 0 for a in attempts] == [False, False, True]
    assert all(gap >= 5.0 for gap in gaps)
    assert took > reset["mono_end"]
    assert calc.log().count("STONITH of prime failed.  Retrying...") == 2


def test_in_a_partition_the_node_without_groups_waits_and_the_active_node_keeps_serving(lab):
    plugin = fencing.make_plugin(lab)
    prime, calc = cluster(lab, plugin, settings="fence_delay 3s\n")
    for argv in (["nft", "add", "table", "inet", "hbcut"],
                 ["nft", "add", "chain", "inet", "hbcut", "in", "{ type filter hook input priority 0 ; }"],
                 ["nft", "add", "chain", "inet", "hbcut", "out", "{ type filter hook output priority 0 ; }"],
                 ["nft", "add", "rule", "inet", "hbcut", "in", "udp", "dport", "694", "drop"],
                 ["nft", "add", "rule", "inet", "hbcut", "out", "udp", "dport", "694", "drop"]):
        lab.exec("prime", argv)                      # heartbeats cut both ways; clients still reach prime
    reset = fencing.wait_reset(plugin, "calc", 10)
    time.sleep(4)                                    # past calc's fence_delay: it is gone, nobody resets prime
    print(f"\npartition: calc reset after {reset['mono_end'] - reset['mono']:.2f} s; prime never reset")
    assert plugin.resets("prime") == []
    assert fencing.gone(lab, "calc") and not fencing.gone(lab, "prime")
    assert holders(lab) == ["prime"] and page(lab) == "prime"


def test_a_node_whose_stop_failed_is_reset_by_its_peer_before_the_peer_starts_the_group(lab):
    plugin = fencing.make_plugin(lab)
    recorder = f"{lab.tmp}/reboot"
    with open(recorder, "w") as handle:
        handle.write(RECORDER.format(calls=f"{lab.tmp}/reboot-calls", code=1))     # the reboot fails
    os.chmod(recorder, 0o755)
    text = hacf(keepalive="200ms", deadtime="1", initdead="3", extra=f"stonith_host * {plugin.type} prime calc\n")
    nodes = [fencing.start_node(Node(lab, name, text, haresources=f"prime {VIP}/24/eth0 stuck\n",
                                     resource_scripts={"stuck": STUCK}), plugin, fake_reboot=recorder)
             for name in ("prime", "calc")]
    prime, calc = nodes
    wait(lambda: holders(lab) == ["prime"], 15)
    calc.wait_for(lambda s: s["groups"][0]["owner"] == "prime", 5)
    prime.proc.send_signal(signal.SIGTERM)          # the stop fails 11 times, the reboot fails
    reset = fencing.wait_reset(plugin, "prime", 30)
    took = first_seen_on_calc(lab, 10)
    print(f"\nstop failed on prime: reset by calc, which holds the VIP {took - reset['mono_end']:.2f} s later")
    assert took > reset["mono_end"] and fencing.gone(lab, "prime")
    assert "The peer resets this node (STONITH) before it takes the group" in prime.log()


def test_meatware_waits_for_the_operator_and_then_takes_over(lab):
    """cluster-glue's meatware: the takeover waits until an operator runs meatclient -c prime. The
    nodes get a private /run (meatware's FIFO lives there), so nothing is made on the host."""
    runs = {name: os.path.join(lab.tmp, f"run-{name}") for name in ("prime", "calc")}
    nodes = []
    for name in ("prime", "calc"):
        os.makedirs(runs[name])
        node = Node(lab, name, hacf(keepalive="200ms", deadtime="1", initdead="3",
                                    extra="stonith_host * meatware prime calc\n"),
                    haresources=f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n",
                    resource_scripts={"webserver": WEBSERVER_SCRIPT})
        nodes.append(node.start(binds=[(runs[name], "/run")]))
    prime, calc = nodes
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 15)
    time.sleep(1)
    prime.kill()
    lab.exec("prime", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])      # the operator pulls its plug
    try:
        wait(lambda: "OPERATOR INTERVENTION REQUIRED to reset prime" in calc.log(), 10)
    except AssertionError:
        raise AssertionError(calc.log()[-3000:]) from None
    time.sleep(2)
    assert "calc" not in holders(lab), "no takeover before the operator's word"
    confirmed = time.monotonic()
    confirm = subprocess.run(["nsenter", "--target", str(calc.proc.pid), "--mount", "--net", "meatclient", "-c",
                              "prime"], input="y\n", capture_output=True, text=True, timeout=20)
    assert confirm.returncode == 0, confirm.stdout + confirm.stderr
    took = first_seen_on_calc(lab, 10)
    print(f"\nmeatware: calc holds the VIP {took - confirmed:.2f} s after the operator's meatclient -c prime")
    assert "node prime now reset." in calc.log()

#!/usr/bin/env python3
"""make demo: the tutorial's cluster, for real, in network namespaces on this machine.

prime and calc run heartbeat.py with ha.d-style files; sigma (10.77.0.100), a
shared ext4 disk (an image file, mounted by resource-agents' Filesystem agent in
each node's own mount namespace, as 3.0.6's Filesystem::DEVICE::DIR::ext4 line
did) and a web server that answers with its node's name form the resource group,
watched by heartbeat.py.cf's `monitor` line; a client polls http://sigma/ every 50 ms and
this script prints a timeline while it cuts prime's link (while the client
replays prime's recorded heartbeats, as anyone on the LAN could), restores it,
cuts prime's way to the ping node (router) so that ipfail moves the group,
restores it, stops prime gracefully, starts it again, and kills its web server
(restarted in place).
IPV6=1 (make demo IPV6=1): the same on a LAN without IPv4 at all: sigma is fd77::100
(IPv6addr), heartbeats go over mcast6, the router is a ping6 node.
Everything it creates is removed at the end, also on Ctrl-C or SIGTERM.
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kits"))
from netns import (WEBSERVER_SCRIPT, Lab, Node, catch_stop_signals, cut_route, have_root_net,  # noqa: E402
                   heal_route, ignore_stop_signals, poller, url)
from netns import holders as lab_holders  # noqa: E402
from paths import HOSTILE  # noqa: E402

IPV6 = os.environ.get("IPV6") not in (None, "", "0")
PORT = 80
KEEPALIVE, DEADTIME, INITDEAD = "500ms", "3", "10"
if IPV6:
    VIP, ROUTER, MCAST6 = "fd77::100", "fd77::4", "ff12::1:2:3:4"
    MEDIA, PING = f"mcast6 eth0 {MCAST6} 694 1 0", f"ping6 {ROUTER}"
    SIGMA = "IPv6addr::fd77:0:0:0:0:0:0:100/64/eth0"     # no '::' inside: a 3.0.6 node can read it too
else:
    VIP, ROUTER, MCAST6 = "10.77.0.100", "10.77.0.4", ""
    MEDIA, PING, SIGMA = "bcast eth0", f"ping {ROUTER}", f"{VIP}/24/eth0"

HACF = f"""# the tutorial's ha.cf, with timers short enough for a demo
keepalive {KEEPALIVE}
deadtime {DEADTIME}
initdead {INITDEAD}
udpport 694
{MEDIA}
node prime
node calc
auto_failback on
{PING}
respawn hacluster /usr/lib/heartbeat/ipfail
"""
HARESOURCES = f"prime {SIGMA} Filesystem::TMP/disk.img::TMP/data::ext4::loop webserver::{PORT}::TMP\n"
DISK_MB = 16
SETTINGS = ("# heartbeat.py's own settings (Heartbeat 3.0.6 never reads this file)\nmonitor webserver interval=1s\n"
            "http_listen 9694      # /metrics and a status page, on 127.0.0.1\n")
METRICS = """
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9694/metrics", timeout=5).read().decode()
wanted = ("heartbeat_group_takeovers_total", "heartbeat_group_last_takeover_duration",
          "heartbeat_events_total{kind=\\"node-dead")
print("\\n".join(line for line in text.splitlines() if line.startswith(wanted)))
"""



class Client:
    """The client's view of sigma: a poller in its namespace, read in a thread."""

    def __init__(self, lab, seconds):
        self.start = time.time()
        self.changes = []           # (wall time, answer)
        self.proc = poller(lab, seconds, port=PORT, address=VIP)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            stamp, answer = line.split(" ", 1)
            self.changes.append((float(stamp), answer.strip()))
            say(f"client: {url(VIP, PORT)} -> {answer.strip() if answer.strip() != '-' else 'no answer'}")

    def outage(self, since, timeout):
        """Seconds the client went unanswered after `since` (first '-' to the next answer), or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            changes = [(stamp, seen) for stamp, seen in self.changes if stamp >= since]
            down = next((i for i, (_, seen) in enumerate(changes) if seen == "-"), None)
            if down is not None and down + 1 < len(changes):
                return changes[down + 1][0] - changes[down][0]
            time.sleep(0.02)
        return None

    def wait_for(self, answer, since, timeout):
        """Seconds from `since` until the client got `answer`, or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for stamp, seen in self.changes:
                if stamp >= since and seen == answer:
                    return stamp - since
            time.sleep(0.02)
        return None


T0 = time.time()


def say(text):
    print(f"[{time.time() - T0:6.2f}s] {text}", flush=True)


def holders(lab):
    return lab_holders(lab, address=VIP)


def mounted_on(nodes, directory):
    """The nodes whose daemon sees the shared disk mounted on directory (each has its own mount namespace)."""
    found = []
    for name, node in nodes.items():
        if node.proc and node.proc.poll() is None:
            with open(f"/proc/{node.proc.pid}/mountinfo") as handle:
                if any(line.split()[4] == directory for line in handle):
                    found.append(name)
    return found


def where(lab, nodes):
    disk = mounted_on(nodes, os.path.join(lab.tmp, "data"))
    return f"sigma is on: {', '.join(holders(lab)) or 'nobody'}; the disk is mounted on: {', '.join(disk) or 'nobody'}"


def main():
    if not have_root_net():
        print("make demo needs root and ip(8): it builds network namespaces (try: sudo make demo)")
        return 1
    catch_stop_signals()
    try:
        lab = Lab(["prime", "calc", "client", "router"], prefix="hbdemo", family="ipv6" if IPV6 else "ipv4")
    except KeyboardInterrupt:       # stopped while it was being built: Lab removed what it had made
        say("interrupted: cleaned up")
        return 130
    results = {}
    try:
        address = lab.addr6 if IPV6 else lab.addr
        say(f"namespaces prime ({address('prime')}), calc ({address('calc')}), client ({address('client')}), "
            f"router ({ROUTER}, the ping node){', no IPv4 on their LAN' if IPV6 else ''}; sigma = {VIP}")
        disk = os.path.join(lab.tmp, "disk.img")
        os.makedirs(os.path.join(lab.tmp, "data"))
        with open(disk, "wb") as handle:
            handle.truncate(DISK_MB << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", disk], check=True, timeout=60)
        say(f"a {DISK_MB} MB ext4 disk for the group: {disk} (the Filesystem agent mounts it with -o loop)")
        nodes = {name: Node(lab, name, HACF, haresources=HARESOURCES.replace("TMP", lab.tmp),
                            resource_scripts={"webserver": WEBSERVER_SCRIPT}) for name in ("prime", "calc")}
        for node in nodes.values():
            node.write("heartbeat.py.cf", SETTINGS)
            node.start()
        prime = nodes["prime"]
        say("started heartbeat.py on prime and calc (keepalive 500ms, deadtime 3, auto_failback on)")
        client = Client(lab, seconds=120)
        if client.wait_for("prime", T0, 30) is None:
            raise SystemExit("sigma never answered from prime; logs:\n" + prime.log()[-3000:])
        time.sleep(6)
        say(where(lab, nodes))

        say(">>> the client records prime's heartbeats for 2 s (anyone on the LAN can)")
        recording = os.path.join(lab.tmp, "recorded")
        hostile = ["env", f"HB_MCAST6={MCAST6}"] if IPV6 else []
        lab.exec("client", [*hostile, sys.executable, HOSTILE, "capture", "2", recording])
        say(">>> pulling prime's network cable; the client replays the recording every 50 ms")
        cut = time.time()
        lab.cut("prime")
        replayer = lab.popen("client", [*hostile, sys.executable, HOSTILE, "replay", recording, "8", "0.05"])
        results["hard failover (link cut)"] = client.wait_for("calc", cut, 20)
        say(where(lab, nodes))
        replayer.wait(timeout=20)
        counters = nodes["calc"].status().get("counters", {})
        ignored = counters.get("dropped_duplicate", 0) + counters.get("dropped_replay", 0)
        say(f"calc was not fooled: it dropped {ignored} replayed or duplicate packets")

        time.sleep(2)
        say(">>> plugging prime's cable back in")
        heal = time.time()
        lab.heal("prime")
        results["failback after the partition heals"] = client.wait_for("prime", heal, 20)
        time.sleep(1)
        say(where(lab, nodes))

        say(">>> prime loses its uplink: nftables in prime drops everything to the router (the ping node)")
        uplink = time.time()
        cut_route(lab, "prime", ROUTER)
        results["uplink lost on prime (ipfail)"] = client.wait_for("calc", uplink, 20)
        say(where(lab, nodes) + " (calc still reaches the router: ipfail gave it the group)")
        time.sleep(1)
        say(">>> prime's uplink is back")
        uplink = time.time()
        heal_route(lab, "prime")
        results["failback when the uplink returns"] = client.wait_for("prime", uplink, 20)
        time.sleep(1)
        say(where(lab, nodes))

        say(">>> service heartbeat stop on prime (SIGTERM)")
        stop = time.time()
        prime.stop()
        results["graceful stop of prime"] = client.wait_for("calc", stop, 20)
        say(where(lab, nodes))

        say(">>> service heartbeat start on prime")
        start = time.time()
        prime.start()
        results["failback when prime returns"] = client.wait_for("prime", start, 30)
        time.sleep(1)
        say(where(lab, nodes))

        say(">>> killing prime's web server (kill -9 PID); heartbeat.py.cf says: monitor webserver interval=1s")
        kill = time.time()
        with open(os.path.join(lab.tmp, "webserver-prime.pid")) as handle:
            os.kill(int(handle.read()), 9)
        results["web server killed: client outage"] = client.outage(kill, 15)
        end = time.monotonic() + 5
        while "restarted in place" not in prime.log() and time.monotonic() < end:
            time.sleep(0.1)
        for line in prime.log().splitlines():
            if "failed its monitor" in line or "restarted in place" in line:
                say("prime's log: " + line.split("]: ", 1)[-1])
        say(where(lab, nodes) + " (restarted in place, no failover)")

        calc = nodes["calc"]
        print("\ncalc's event history (heartbeat.py status --events; calc ran through the whole demo):")
        print(lab.exec("calc", calc.argv("status", "--events")).stdout.rstrip())
        print("\nsome of calc's metrics (http://127.0.0.1:9694/metrics in calc's namespace):")
        print(lab.exec("calc", [sys.executable, "-c", METRICS]).stdout.rstrip())
        print("\nmeasured (client's view, polling every 50 ms):")
        for what, seconds in results.items():
            print(f"  {what:<38} {'never' if seconds is None else f'{seconds:.2f} s'}")
        print(f"  (deadtime {DEADTIME} s, keepalive {KEEPALIVE}, deadping = deadtime)")
        return 0 if all(v is not None for v in results.values()) else 1
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        ignore_stop_signals()
        lab.close()
        say("namespaces and processes removed")


if __name__ == "__main__":
    sys.exit(main())

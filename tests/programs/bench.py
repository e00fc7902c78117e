#!/usr/bin/env python3
"""make bench: failover speed and idle cost of heartbeat.py and Heartbeat 3.0.6, side by side.

Same namespaces, same ha.cf timers, same web server script; a client polls http://VIP/ every
10 ms (30 ms timeout) from its own namespace. For each implementation and timer profile, one cluster life
measures: graceful stop of the active node, failback when it returns, and a hard failure (its
link cut), split into detection (cut -> peer logs "node prime: is dead") and takeover (-> the
client gets the peer's page). Idle cost: CPU and RSS per node of the daemon processes at rest
(both nodes measured), beside a bare Python socket loop doing the same sends as a calibration.
Many addresses (fast profile, dual-stack lab): one group of 100 VIPs on prime (all IPv4, or 50 IPv4 +
50 IPv6), and one of 1,000 IPv4 VIPs (heartbeat.py alone), handed over by a graceful stop and by a cut
link, timed until the last of them answers the client's ping from the peer; and the cut with one VIP in
the same run, for the difference (see addresses_run). Idle with the HTTP listener: heartbeat.py alone,
with `http_listen` and /metrics fetched every 15 s on both nodes, beside the same without (ONLY=idle-http).
authkeys methods (heartbeat.py alone): the cost of one status packet in µs under sha1, sha256 and
aes256gcm (sign or seal, then verify or open, in the daemon's Python), and idle CPU and RSS of a pair
at keepalive 100ms under each, with the ratio to sha1 (ONLY=auth-idle; aes256gcm only where that
Python imports cryptography).
Service monitoring (heartbeat.py alone, fast profile): the web server, a resource of prime's group, killed
under the status monitor and under the process watch at their defaults, until it is served again
(restarted in place), and killed again while it cannot start on prime, until calc serves it; and what one
read of /proc costs the process watch.
QUICK=1: one run per row, fast profile only, the address groups for heartbeat.py alone, no idle-http,
auth-idle nor monitor handover (unless ONLY names them). ONLY=WORD[,WORD]: only the sections whose name
contains a word (failover-fast, failover-tutorial, monitor, idle, idle-http, addresses-ipv4,
addresses-mixed, addresses-1000, auth-packet, auth-idle; ONLY=addresses runs all three address groups,
ONLY=auth both auth sections). SIGTERM or Ctrl-C: it stops and removes what it made, by name.
Prints a Markdown table; asserts nothing.
"""
import ipaddress
import itertools
import os
import random
import re
import selectors
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kits"))
from paths import ROOT as REPO  # noqa: E402 - heartbeat.py's directory, put on the path
from netns import (BREAKABLE_WEBSERVER_SCRIPT, WEBSERVER_SCRIPT, Lab, Node, catch_stop_signals,  # noqa: E402
                   have_root_net, ignore_stop_signals, sweep)
from realhb import RealNode, have_real_heartbeat  # noqa: E402

from heartbeat import (MonitorSettings, ProcessWatch, ProcTable, Timers,  # noqa: E402 - on the path once paths
                       parse_time_ms)                                   # is imported

VIP, PORT = "10.77.0.100", 8080
# The daemon runs under the python3 that service(8) and systemd find on their PATH, as it does once
# installed; the interpreter running this benchmark (and the tests) may be another build.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DAEMON_PYTHON = shutil.which("python3", path=SERVICE_PATH) or sys.executable
BARE = "a bare Python socket loop"
HTTP_IDLE_S = 60          # idle windows with and without the HTTP listener: four scrapes at 15 s
PROFILES = {
    "tutorial": dict(keepalive="2", deadtime="10", initdead="20"),
    "fast": dict(keepalive="100ms", deadtime="500ms", initdead="2"),
}
POLLER = f"""
import sys, time, urllib.request
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        answer = urllib.request.urlopen("http://{VIP}:{PORT}/", timeout=0.03).read().decode().strip()
    except Exception:
        answer = "-"
    print(f"{{time.time():.4f}} {{answer}}", flush=True)
    time.sleep(0.01)
"""
# Many addresses in one group. IPv6 ones are written without "::" (fd77:0:0:0:0:0:1:5): Heartbeat
# 3.0.6's ResourceManager splits a resource's arguments at every "::", so IPv6addr::fd77::1:5/64/eth0
# would reach its IPv6addr script as two arguments.
ADDRESS_GROUPS = {
    "ipv4": ("100 VIPs (IPv4)", [f"10.77.0.{100 + n}" for n in range(100)]),
    "mixed": ("100 VIPs (50 IPv4 + 50 IPv6)",
              [f"10.77.0.{100 + n}" for n in range(50)] + [f"fd77::1:{n}" for n in range(1, 51)]),
    "1000": ("1000 VIPs (IPv4)", [f"10.77.{1 + n // 250}.{1 + n % 250}" for n in range(1000)]),
}
# More than a /24 holds: these VIPs are IP/16/eth0 and the client reaches that /16 on its link. Heartbeat
# 3.0.6 does not run them: one IPaddr script an address, about 0.6 s each, 10 minutes a cluster life.
WIDE_GROUPS = {"1000": "10.77.0.0/16"}
# For each "MAC ADDRESS" line on stdin: an ICMP echo request to ADDRESS every 10 ms until a reply
# comes from MAC, then a line "WALLTIME MAC ADDRESS". Replies are read on a packet socket, which shows
# the Ethernet source: who answered, not only that someone did.
PROBER = """
import os, selectors, socket, struct, sys, time
sys.path.insert(0, sys.argv[1])
from heartbeat import internet_checksum as checksum
ping4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ping6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
echo4 = struct.pack("!BBHHH", 8, 0, 0, 0xbe, 1)
echo4 = echo4[:2] + struct.pack("!H", checksum(echo4)) + echo4[4:]
echo6 = struct.pack("!BBHHH", 128, 0, 0, 0xbe, 1)           # the kernel fills in an ICMPv6 checksum
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sniff.bind(("eth0", 0))
sniff.setblocking(False)
selector = selectors.DefaultSelector()
selector.register(sniff, selectors.EVENT_READ)
selector.register(sys.stdin.fileno(), selectors.EVENT_READ)
pending, buffered, due = {}, b"", time.monotonic()
while True:
    for key, _ in selector.select(max(0.0, due - time.monotonic())):
        if key.fileobj is sniff:
            for _ in range(1024):                 # all the frames there are (a bounded number), our own skipped
                try:
                    frame, (_, _, kind, _, _) = sniff.recvfrom(2048)
                except BlockingIOError:
                    break
                if kind == socket.PACKET_OUTGOING:
                    continue
                kind = frame[12:14]
                if kind == b"\\x08\\x00" and frame[23] == 1 and frame[14 + (frame[14] & 15) * 4] == 0:
                    source = socket.inet_ntop(socket.AF_INET, frame[26:30])
                elif kind == b"\\x86\\xdd" and frame[20] == 58 and frame[54] == 129:
                    source = socket.inet_ntop(socket.AF_INET6, frame[22:38])
                else:
                    continue
                mac = frame[6:12].hex(":")
                if pending.get(source) == mac:
                    print(f"{time.time():.4f} {mac} {source}", flush=True)
                    del pending[source]
        else:
            data = os.read(sys.stdin.fileno(), 65536)
            if not data:
                sys.exit(0)
            *lines, buffered = (buffered + data).split(b"\\n")
            for line in lines:
                mac, address = line.decode().split()
                pending[address] = mac
    if time.monotonic() >= due:
        for address in list(pending):
            try:
                if ":" in address:
                    ping6.sendto(echo6, (address, 0))
                else:
                    ping4.sendto(echo4, (address, 0))
            except OSError:
                pass                                            # no neighbour yet: next round
        due = time.monotonic() + 0.01
"""


def hacf(timers):
    return (f"keepalive {timers['keepalive']}\ndeadtime {timers['deadtime']}\ninitdead {timers['initdead']}\n"
            "udpport 694\nbcast eth0\nnode prime\nnode calc\nauto_failback on\n")


class Client:
    """Every answer of http://VIP/ with its time, from a poller in the client namespace."""

    def __init__(self, lab, seconds):
        self.samples = []
        self.proc = lab.popen("client", [sys.executable, "-c", POLLER, str(seconds)], stdout=subprocess.PIPE,
                              text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            stamp, answer = line.split(" ", 1)
            self.samples.append((float(stamp), answer.strip()))

    def first(self, answer, since, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for stamp, seen in list(self.samples):
                if stamp >= since and seen == answer:
                    return stamp
            time.sleep(0.01)
        return None

    def unanswered(self, since, until):
        """The longest run of failed polls between since and until, in seconds."""
        longest, start = 0.0, None
        for stamp, seen in [s for s in self.samples if since <= s[0] <= until]:
            if seen == "-":
                start = stamp if start is None else start
            elif start is not None:
                longest, start = max(longest, stamp - start), None
        return longest


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_line_time(path, text, offset, timeout):
    """Wall time at which `text` shows up in the log after byte `offset` (polled every 5 ms)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                if text.encode() in handle.read():
                    return time.time()
        except OSError:
            pass
        time.sleep(0.005)
    return None


def resource(address, prefix=24):
    """The haresources word for one address: IPaddr's short form, or IPv6addr's with no "::"."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return f"{ip}/{prefix}/eth0"
    return "IPv6addr::" + ":".join(f"{int(group, 16):x}" for group in ip.exploded.split(":")) + "/64/eth0"


def build(lab, kind, profile, addresses=(VIP,), prefix=24):
    """Both nodes, with the addresses as the only resources (one group on prime); the web servers
    run all the time on both (like the tutorial's apache, started at boot), so the client sees the
    addresses move and nothing else."""
    piddir = os.path.join(lab.tmp, "pids")
    os.makedirs(piddir, exist_ok=True)
    script = os.path.join(lab.tmp, "webserver")
    with open(script, "w") as handle:
        handle.write(WEBSERVER_SCRIPT)
    os.chmod(script, 0o755)
    keys = "auth 1\n1 sha1 bench-secret\n"
    haresources = "prime " + " ".join(resource(address, prefix) for address in addresses) + "\n"
    nodes = {}
    for name in ("prime", "calc"):
        lab.exec(name, ["env", f"HA_CURHOST={name}", "sh", script, str(PORT), piddir, "start"])
        if kind == "heartbeat.py":
            nodes[name] = Node(lab, name, hacf(PROFILES[profile]), authkeys=keys, haresources=haresources,
                               python=DAEMON_PYTHON)
            nodes[name].logfile = nodes[name].log_path
        else:
            nodes[name] = RealNode(lab, name, hacf(PROFILES[profile]), keys, haresources)
            nodes[name].logfile = os.path.join(nodes[name].logdir, "ha-log")
    return nodes


LAB_PREFIXES = []                     # every lab this bench began to build, swept by name at the end
LAB_NUMBERS = itertools.count()


def new_lab(hosts, **options):
    """A Lab whose names (namespaces PREFIX-HOST, links PREFIX*, /tmp/PREFIX-*) are known before it
    is built: a signal in the middle of building it leaves nothing that sweep() misses."""
    prefix = f"b{os.getpid() % 10000:04d}{next(LAB_NUMBERS):03d}"
    LAB_PREFIXES.append(prefix)
    return Lab(hosts, prefix=prefix, **options)


def failover_run(kind, profile, number):
    """One cluster life: graceful stop, failback, hard failure. Seconds per measurement.
    The link is cut at a random point of the keepalive interval, the same for both
    implementations in run `number` (otherwise the cut would fall at the same phase of the
    heartbeats every time, and detection would always be deadtime minus the same amount)."""
    deadtime = parse_time_ms(PROFILES[profile]["deadtime"]) / 1000
    keepalive = parse_time_ms(PROFILES[profile]["keepalive"]) / 1000
    lab = new_lab(["prime", "calc", "client"])
    result = {}
    try:
        nodes = build(lab, kind, profile)
        for node in nodes.values():
            node.start()
        client = Client(lab, 600)
        if client.first("prime", 0, 90) is None:
            raise RuntimeError(f"{kind}: prime never served")
        time.sleep(max(6.0, 2 * deadtime))                     # past the start-up dt (+2 s for 5 s)
        stop = time.time()
        nodes["prime"].stop()
        served = client.first("calc", stop, 30 + deadtime)
        result["graceful stop"] = served - stop if served else None
        time.sleep(1)
        start = time.time()
        nodes["prime"].start()
        back = client.first("prime", start, 90)
        result["failback: VIP unanswered"] = client.unanswered(start, back) if back else None
        time.sleep(max(6.0, 2 * deadtime))
        time.sleep(random.Random(number).uniform(0, keepalive))  # noqa: S311 - a timing, not a secret
        offset = log_size(nodes["calc"].logfile)
        cut = time.time()
        lab.cut("prime")
        dead = log_line_time(nodes["calc"].logfile, "node prime: is dead", offset, 30 + deadtime)
        served = client.first("calc", cut, 30 + deadtime)
        result["hard failover (link cut)"] = served - cut if served else None
        result["  detection (cut -> declared dead)"] = dead - cut if dead else None
        result["  takeover (dead -> page served)"] = served - dead if served and dead else None
    finally:
        lab.close()
    return result


class Prober:
    """The client for many addresses: ask(mac, address) has the client namespace ping the address
    until the machine with that MAC answers; answered[mac, address] is when it did."""

    def __init__(self, lab):
        self.answered, self.lock = {}, threading.Lock()
        self.proc = lab.popen("client", [sys.executable, "-c", PROBER, REPO], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            stamp, mac, address = line.split()
            self.answered[mac, address] = float(stamp)

    def ask(self, mac, *addresses):
        with self.lock:
            self.proc.stdin.write("".join(f"{mac} {address}\n" for address in addresses))
            self.proc.stdin.flush()

    def last(self, mac, addresses, timeout):
        """When the last of the addresses answered from `mac`; None after timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            stamps = [self.answered.get((mac, address)) for address in addresses]
            if None not in stamps:
                return max(stamps)
            time.sleep(0.01)
        return None


def mac(lab, name):
    """The MAC address of node `name`'s eth0."""
    return lab.exec(name, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def probe_as_added(lab, name, prober, addresses):
    """Each of the addresses that shows up on node `name` (`ip monitor` in its namespace) goes to the
    prober at once, to be pinged until that node answers. Returns {address: wall time the monitor
    reported it}, filled in as they come."""
    seen = {}
    monitor = lab.popen(name, ["ip", "-o", "monitor", "address", "dev", "eth0"], stdout=subprocess.PIPE)
    ours, answerer = set(addresses), mac(lab, name)

    def read():                       # what the monitor said since the last read, in one message
        buffered = b""
        while True:
            data = os.read(monitor.stdout.fileno(), 65536)
            if not data:
                return
            *lines, buffered = (buffered + data).split(b"\n")
            added = [match.group(1) for match in (re.match(r"\d+:\s+\S+\s+inet6?\s+([0-9a-f.:]+)/", line.decode())
                                                  for line in lines) if match and match.group(1) in ours]
            if added:
                now = time.time()
                seen.update((address, now) for address in added)
                prober.ask(answerer, *added)

    threading.Thread(target=read, daemon=True).start()
    return seen


def addresses_run(kind, addresses, event, number, wide=None):
    """One cluster life, fast profile, dual-stack lab, the addresses as prime's group: seconds from
    `event` ("stop": SIGTERM to prime; "cut": its link, at the random phase of run `number`) until
    the last of them answers from calc; None if that takes over `bound` (60 s, and for 3.0.6 10 s an
    address: its IPv6addr takes 5 to 6 s to start each address). With it, seconds until `ip monitor` on
    calc had reported the last of them added there: the daemons' part, without the announcement
    and the client's pings.

    The client must see every address answer, not a sample: a late announcement of the 80th address
    strands the clients of that one. It pings rather than fetches the web page: 100 fetches at once
    measure the web server (a Python server with a listen backlog of 5 answers the last one 0.4 s
    late), while an echo reply comes from the kernel that holds the address; and the reply's Ethernet
    source, read on a packet socket, says which node answered. It pings an address only once it is on
    calc (`ip monitor` in calc's namespace hands it over), every 10 ms until calc answers: pinging
    all 100 all the time would load the 2-CPU machine for the daemons measured. The time counted is
    still the client's, ARP/ND announcement included: before the event the client pinged every address
    at prime, so its neighbour cache still has prime's MAC for each until calc announces it."""
    keepalive = parse_time_ms(PROFILES["fast"]["keepalive"]) / 1000
    bound = 60 + (10 * len(addresses) if kind != "heartbeat.py" else 0)    # 1,000 VIPs: not 2.8 hours
    lab = new_lab(["prime", "calc", "client"], family="dual")
    try:
        nodes = build(lab, kind, "fast", addresses, prefix=ipaddress.ip_network(wide).prefixlen if wide else 24)
        if wide:
            lab.exec("client", ["ip", "route", "add", wide, "dev", "eth0"])
        if kind == "heartbeat.py":
            checked = lab.exec("prime", nodes["prime"].argv("check"), check=False)
            if checked.returncode:
                raise RuntimeError(f"heartbeat.py check refuses the group: {checked.stdout}{checked.stderr}")
        for node in nodes.values():
            node.start()
        prober, prime = Prober(lab), mac(lab, "prime")
        prober.ask(prime, addresses[-1])                        # the group is up: all of it answers
        if prober.last(prime, addresses[-1:], bound) is None:
            raise RuntimeError(f"{kind}: prime never answered {addresses[-1]}")
        prober.ask(prime, *addresses)
        if prober.last(prime, addresses, 30) is None:
            raise RuntimeError(f"{kind}: prime never answered all {len(addresses)} addresses")
        on_calc = probe_as_added(lab, "calc", prober, addresses)
        calc = mac(lab, "calc")
        time.sleep(6)
        if event == "cut":
            time.sleep(random.Random(number).uniform(0, keepalive))  # noqa: S311 - a timing, not a secret
        start = time.time()
        if event == "stop":
            nodes["prime"].stop(timeout=bound)
        else:
            lab.cut("prime")
        served = prober.last(calc, addresses, bound)
        added = [on_calc.get(address) for address in addresses]
        return served - start if served else None, max(added) - start if None not in added else None
    finally:
        lab.close()


def daemon_pids(lab, name, kind):
    pids = subprocess.run(["ip", "netns", "pids", lab.ns(name)], capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if (kind == "heartbeat.py" and b"heartbeat.py" in cmdline) or \
                (kind != "heartbeat.py" and cmdline.startswith(b"heartbeat:")):
            found.append(int(pid))
    return found


def cpu_and_rss(pids):
    """CPU seconds of all threads (the scheduler's own count, in ns), RSS and PSS (the shared pages
    divided among the processes that map them: the library code of Heartbeat's four) in MB, summed."""
    cpu_ns, rss, pss = 0, 0, 0
    for pid in pids:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    cpu_ns += int(handle.read().split()[0])
            with open(f"/proc/{pid}/status") as handle:
                rss += int(next(line for line in handle if line.startswith("VmRSS")).split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                pss += int(next(line for line in handle if line.startswith("Pss:")).split()[1])
        except (OSError, StopIteration):
            pass
    return cpu_ns / 1e9, rss / 1024, pss / 1024


# Calibration: the least a Python process can do at the same rate here. It sends a heartbeat-sized
# broadcast every keepalive and reads the peer's, nothing else (our own broadcasts filtered by the
# kernel, as heartbeat.py does). What it costs is the interpreter waking up on this machine.
BARE_LOOP = """
import selectors, socket, sys, time
sys.path.insert(0, sys.argv[3])
from heartbeat import SO_BINDTODEVICE, drop_own_broadcasts, interface_ipv4
period, end = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
send, recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for sock in (send, recv):
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, b"eth0")
send.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
recv.bind(("", 695))
drop_own_broadcasts(recv, interface_ipv4("eth0"))
selector = selectors.DefaultSelector()
selector.register(recv, selectors.EVENT_READ)
due = time.monotonic() + period
while time.monotonic() < end:
    for _ in selector.select(max(0.0, due - time.monotonic())):
        recv.recvfrom(65536)
    if time.monotonic() >= due:
        send.sendto(b"x" * 300, ("10.77.0.255", 695))
        due += period
"""


SCRAPER = """
import sys, time, urllib.request
end, every = time.monotonic() + float(sys.argv[1]), float(sys.argv[2])
while time.monotonic() < end:
    urllib.request.urlopen("http://127.0.0.1:9694/metrics", timeout=5).read()
    time.sleep(every)
"""


SHA1_KEYS = "auth 1\n1 sha1 bench-secret\n"
AUTH_METHODS = ("sha1", "sha256", "aes256gcm")
AUTH_KEY = "bench-" + "k" * 58               # 64 bytes, as keygen's 32 random bytes in hex
# One status packet as the daemon sends it (fixed fields, then seq, hg, ts, ld, ttl), sealed with
# each method (seal: the in-message digest and the trailer, or AES-256-GCM) and opened (decode_message:
# verify and parse, or open and parse): microseconds each, the best of 5 rounds, in the daemon's Python.
PACKET_COST = """
import sys, timeit
sys.path.insert(0, sys.argv[1])
import heartbeat as hb
method, rounds = sys.argv[2], int(sys.argv[3])
if method == "aes256gcm" and hb.extra_module("cryptography") is None:
    print("n/a n/a")
    sys.exit(0)
keys = hb.AuthKeys("bench", 1, {1: (method, sys.argv[4])})
msg = hb.Message(("t", "status"), ("st", "active"), ("dt", "1f4"), ("protocol", "1"), ("src", "prime"))
msg.add("srcuuid", bytes(16), hb.FIELD_BINARY)
for name, value in (("seq", "1a2b"), ("hg", "6b05d253"), ("ts", "6b05d257"), ("ld", "0.05 0.11 0.06 1/100 8140"),
                    ("ttl", "3")):
    msg.add(name, value)
classic, body = hb.classic_text(msg.fields), hb.netstring_fields(msg.fields)
data = hb.seal(classic, body, keys)
assert hb.decode_message(data, keys).get("seq") == "1a2b"
seal_s = min(timeit.repeat(lambda: hb.seal(classic, body, keys), number=rounds, repeat=5)) / rounds
open_s = min(timeit.repeat(lambda: hb.decode_message(data, keys), number=rounds, repeat=5)) / rounds
print(f"{seal_s * 1e6:.2f} {open_s * 1e6:.2f} {len(data)}")
"""


def packet_cost(method, rounds):
    """(seal µs, open µs, datagram bytes) of one status packet under method, or None where the daemon's
    Python cannot (aes256gcm without cryptography)."""
    out = subprocess.run([DAEMON_PYTHON, "-c", PACKET_COST, REPO, method, str(rounds), AUTH_KEY],
                         capture_output=True, text=True, check=True).stdout.split()
    return None if out[0] == "n/a" else (float(out[0]), float(out[1]), int(out[2]))


def authkeys_for(method):
    return SHA1_KEYS if method == "sha1" else f"auth 1\n1 {method} {AUTH_KEY}\n"


def idle_run(kind, keepalive, seconds, scrape_every=None, keys=SHA1_KEYS):
    """Per node: CPU seconds per minute and RSS (MB) of its daemon processes, both nodes up and
    both measured (heartbeat.py nodes fall into step, one wakes once a keepalive, one twice).
    scrape_every: heartbeat.py with `http_listen 9694`, its /metrics fetched that often on both
    nodes, as Prometheus would (the scraper's own CPU is not counted)."""
    timers = dict(keepalive=keepalive, deadtime="10" if keepalive == "2" else "1", initdead="20")
    lab, procs = new_lab(["prime", "calc"]), []
    try:
        text = hacf(timers)
        for name in ("prime", "calc"):
            if kind == BARE:
                period = parse_time_ms(keepalive) / 1000
                procs.append(lab.popen(name, [DAEMON_PYTHON, "-c", BARE_LOOP, str(period), str(seconds + 30), REPO]))
                continue
            node = Node(lab, name, text, authkeys=keys, python=DAEMON_PYTHON) if kind == "heartbeat.py" else \
                RealNode(lab, name, text, keys)
            if scrape_every:
                node.write("heartbeat.py.cf", "http_listen 9694\n")
            node.start()
        time.sleep(8)
        for name in ("prime", "calc") if scrape_every else ():
            procs.append(lab.popen(name, [sys.executable, "-c", SCRAPER, str(seconds + 5), str(scrape_every)]))
        pids = [p.pid for p in procs] if kind == BARE and not scrape_every else \
            daemon_pids(lab, "prime", kind) + daemon_pids(lab, "calc", kind)
        cpu0, _, _ = cpu_and_rss(pids)
        time.sleep(seconds)
        cpu1, rss, pss = cpu_and_rss(pids)
        return {"cpu": (cpu1 - cpu0) * 60 / seconds / 2, "rss": rss / 2, "pss": pss / 2, "processes": len(pids) / 2}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        lab.close()


def addresses_rows(kinds, runs, groups, ours_only=()):
    """Rows for the address groups (keys of ADDRESS_GROUPS). In each run, for each implementation:
    the cut with one VIP, then each group's graceful stop and cut, and the group's cut minus the
    one-VIP cut of the same run (same random phase of the keepalive, same load on the machine).
    The groups in ours_only run for heartbeat.py alone (n/a for 3.0.6)."""
    one = "hard failover (link cut), 1 VIP"
    results = {kind: [] for kind in kinds}
    for number in range(runs):
        for kind in kinds:
            measured = {}
            mine = [group for group in groups if kind == kinds[0] or group not in ours_only]
            lives = [(one, [VIP], "cut", None, None)] if mine else []
            for group in mine:
                name, addresses = ADDRESS_GROUPS[group]
                wide = WIDE_GROUPS.get(group)
                lives += [(f"graceful stop, {name}: the last answers from the peer", addresses, "stop", None, wide),
                          (f"hard failover (link cut), {name}: the last answers from the peer", addresses, "cut",
                           f"  {name}: minus the 1-VIP cut (same run)", wide)]
            for label, addresses, event, difference, wide in lives:
                started = time.monotonic()
                try:
                    measured[label], on_peer = addresses_run(kind, addresses, event, number, wide)
                    if event == "stop":
                        measured[f"  {label.split(':')[0]}: all added on the peer (its ip monitor)"] = on_peer
                except RuntimeError as err:
                    measured[label] = None
                    print(f"  {label}: {err}", file=sys.stderr, flush=True)
                print(f"  addresses run {number + 1}/{runs} {kind}: {label}: {measured[label]} "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
                if difference:
                    both = None not in (measured[label], measured[one])
                    measured[difference] = measured[label] - measured[one] if both else None
            results[kind].append(measured)
    fast = PROFILES["fast"]
    return [(f"{label} [fast: keepalive {fast['keepalive']}, deadtime {fast['deadtime']}]",
             {kind: [r.get(label) for r in results[kind]] for kind in kinds}, "s") for label in results[kinds[0]][0]]


# The web server as a resource of prime's group, watched by the status monitor or the process watch at their
# defaults (interval 10s); its python runs through a symlink named after the lab, so that its comm is this
# lab's alone (every lab shares the machine's pid namespace).
MONITORS = {
    "status monitor (defaults: interval 10s)": "monitor webserver\n",
    "process watch (defaults: interval 10s)": "monitor webserver process={name}\n",
}


def monitor_run(settings, number, handover):
    """One cluster life: the web server killed on prime, seconds until the client is served by prime again
    (restarted in place); with handover, killed while it cannot start on prime (the start fails: at the
    default migration-threshold of 3 the failed restart is failure 2 and the next check or rescan failure 3),
    seconds until calc serves it. The kill falls at a point of the monitor's interval that run `number`
    draws, the same for both monitors."""
    lab = new_lab(["prime", "calc", "client"])
    result = {}
    try:
        name = f"{lab.prefix}web"[:15]
        os.symlink(os.path.realpath(DAEMON_PYTHON), os.path.join(lab.tmp, name))
        script = BREAKABLE_WEBSERVER_SCRIPT.replace("    python3 -c '", f'    "$2/{name}" -c \'', 1)
        keys = "auth 1\n1 sha1 bench-secret\n"
        haresources = f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n"
        nodes = {}
        for host in ("prime", "calc"):
            nodes[host] = Node(lab, host, hacf(PROFILES["fast"]), authkeys=keys, haresources=haresources,
                               resource_scripts={"webserver": script}, python=DAEMON_PYTHON)
            nodes[host].write("heartbeat.py.cf", settings.format(name=name))
            nodes[host].start()
        client = Client(lab, 600)
        if client.first("prime", 0, 90) is None:
            raise RuntimeError("prime never served")
        pid_file = os.path.join(lab.tmp, "webserver-prime.pid")
        rng = random.Random(number)  # noqa: S311 - a timing, not a secret

        def kill():
            time.sleep(rng.uniform(0, 10))                 # a point of the 10 s interval
            with open(pid_file) as handle:
                pid = int(handle.read())
            killed = time.time()
            os.kill(pid, 9)
            return killed

        time.sleep(3)
        if handover:
            open(os.path.join(lab.tmp, "broken-prime"), "w").close()
            killed = kill()
            served = client.first("calc", killed, 90)
            result["cannot start: killed -> served by the peer"] = served - killed if served else None
        else:
            killed = kill()
            down = client.first("-", killed, 10)
            served = client.first("prime", down or killed, 60)
            result["restart in place: killed -> served again"] = served - killed if served else None
    finally:
        lab.close()
    return result


def scan_cost(rounds=200):
    """What one read of /proc costs the process watch here: median seconds a scan, and processes."""
    class Quiet:
        def __getattr__(self, _name):
            return lambda *args, **kw: None
    table = ProcTable()
    settings = MonitorSettings("bench", "bench", "group", 1, 10000, 20000, 1, 3, 0, 0, process="no-such-name")
    watch = ProcessWatch(settings, table, selectors.DefaultSelector(), Timers(), Quiet(), lambda: True,
                         lambda why: None)
    watch.watching = True
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        watch.scan()
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(table.pids())


def python_version(python):
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True).stdout.strip()


def fmt(values, unit="s"):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.3f} {unit}"
    return f"{median:.3f} {unit} ({min(values):.3f}-{max(values):.3f})"


def ratio(ours, theirs):
    ours, theirs = [v for v in ours if v is not None], [v for v in theirs if v is not None]
    if not ours or not theirs or statistics.median(theirs) == 0:
        return "n/a"
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}"


def main():
    if not have_root_net():
        print("make bench needs root and ip(8): it builds network namespaces")
        return 1
    catch_stop_signals()
    try:
        return measure()
    except KeyboardInterrupt as err:
        print(f"\nmake bench: {err or 'interrupted'}: removing its namespaces, links and processes", flush=True)
        return 130
    finally:
        ignore_stop_signals()
        for prefix in LAB_PREFIXES:                 # what a lab's own close() did not get to
            sweep(prefix)


def measure():
    quick = os.environ.get("QUICK") not in (None, "", "0")
    runs = 1 if quick else int(os.environ.get("RUNS", "5"))
    profiles = ["fast"] if quick else ["fast", "tutorial"]
    kinds = ["heartbeat.py"] + (["Heartbeat 3.0.6"] if have_real_heartbeat() else [])
    only = [word for word in os.environ.get("ONLY", "").split(",") if word]

    def wanted(section):
        return not only or any(word in section for word in only)

    idle_seconds = 20
    print(f"# heartbeat.py benchmark: {runs} run(s) per row, medians (min-max); "
          f"client polls every 10 ms (30 ms timeout); kernel {os.uname().release}; "
          f"daemon under {DAEMON_PYTHON} (Python {python_version(DAEMON_PYTHON)})", flush=True)
    rows = []
    for profile in [p for p in profiles if wanted(f"failover-{p}")]:
        results = {kind: [] for kind in kinds}
        for number in range(runs):
            for kind in kinds:
                started = time.monotonic()
                results[kind].append(failover_run(kind, profile, number))
                print(f"  {profile} run {number + 1}/{runs} {kind}: {results[kind][-1]} "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        timers = PROFILES[profile]
        for row in results[kinds[0]][0]:
            label = f"{row} [{profile}: keepalive {timers['keepalive']}, deadtime {timers['deadtime']}]"
            values = {kind: [r[row] for r in results[kind]] for kind in kinds}
            rows.append((label, values, "s"))
    monitored = {}
    if wanted("monitor"):           # heartbeat.py alone (3.0.6 has no monitor); QUICK=1: restarts in place only
        handovers = (False, True) if not quick or only else (False,)
        for number, handover in itertools.product(range(runs), handovers):
            for label, settings in MONITORS.items():
                started = time.monotonic()
                measured = monitor_run(settings, number, handover)
                for row, value in measured.items():
                    monitored.setdefault(row, {}).setdefault(label, []).append(value)
                print(f"  monitor run {number + 1}/{runs} {label}: {measured} ({time.monotonic() - started:.0f} s)",
                      file=sys.stderr, flush=True)
        scan_s, processes = scan_cost()
    groups = [group for group in ADDRESS_GROUPS if wanted(f"addresses-{group}")]
    if groups:        # 3.0.6 takes minutes for each group (a script an address): not with QUICK=1 unless ONLY asks
        ours_only = set(WIDE_GROUPS) | (set(groups) if quick and not only else set())
        rows += addresses_rows(kinds, runs, groups, ours_only)
    calibration = {}
    for keepalive in (["100ms"] if quick else ["2", "100ms"]) if wanted("idle") else []:
        values_cpu = {kind: [] for kind in kinds + [BARE]}
        values_rss = {kind: [] for kind in kinds + [BARE]}
        values_pss = {kind: [] for kind in kinds + [BARE]}
        for _ in range(runs):
            for kind in kinds + [BARE]:
                measured = idle_run(kind, keepalive, idle_seconds)
                values_cpu[kind].append(measured["cpu"])
                values_rss[kind].append(measured["rss"])
                values_pss[kind].append(measured["pss"])
                print(f"  idle keepalive {keepalive} {kind}: {measured}", file=sys.stderr, flush=True)
        rows.append((f"idle CPU per node, s per minute [keepalive {keepalive}]", values_cpu, "s"))
        rows.append((f"idle RSS per node, all daemon processes [keepalive {keepalive}]", values_rss, "MB"))
        rows.append((f"idle PSS per node, all daemon processes [keepalive {keepalive}]", values_pss, "MB"))
        calibration[keepalive] = fmt(values_cpu[BARE])
    scraped = {}
    for keepalive in ["2", "100ms"] if wanted("idle-http") and (only or not quick) else []:
        values = {"without": [], "with": []}
        for _ in range(runs):
            for label, every in (("without", None), ("with", 15.0)):
                values[label].append(idle_run("heartbeat.py", keepalive, HTTP_IDLE_S, scrape_every=every)["cpu"])
                print(f"  idle keepalive {keepalive} heartbeat.py, http_listen {label}: {values[label][-1]:.4f}",
                      file=sys.stderr, flush=True)
        scraped[keepalive] = values
    auth_rows = auth_sections(quick, runs, idle_seconds, wanted, bool(only))
    header = "| measurement | " + " | ".join(kinds) + (" | heartbeat.py / 3.0.6 |" if len(kinds) > 1 else " |")
    if rows:
        print()
        print(header)
        print("|---" * (len(kinds) + 1 + (len(kinds) > 1)) + "|")
    for label, values, unit in rows:
        cells = [fmt(values[kind], unit) for kind in kinds]
        if len(kinds) > 1:
            cells.append(ratio(values[kinds[0]], values[kinds[1]]))
        print(f"| {label} | " + " | ".join(cells) + " |")
    if monitored:
        labels = list(MONITORS)
        print("\n| web server killed on prime [fast: keepalive 100ms, deadtime 500ms] | " + " | ".join(labels)
              + " | process / status |")
        print("|---|---|---|---|")
        for row, values in monitored.items():
            print(f"| {row} | " + " | ".join(fmt(values.get(label, [])) for label in labels)
                  + f" | {ratio(values.get(labels[1], []), values.get(labels[0], []))} |")
        print(f"\nprocess watch: one read of /proc costs {scan_s * 1000:.2f} ms here ({processes} processes), done "
              "at an exit that breaks quorum, at the end of delay, after a restart and every interval")
    if calibration:
        print("\nidle CPU as % of one core = s per minute / 60 x 100")
    for keepalive, cpu in calibration.items():
        print(f"calibration, keepalive {keepalive}: {BARE} (the same sends and receives, no work) "
              f"costs {cpu} per minute per node here")
    if scraped:
        print(f"\n| heartbeat.py idle CPU per node, s per minute ({HTTP_IDLE_S} s windows) | without http_listen | "
              "with /metrics scraped every 15 s | with / without |")
        print("|---|---|---|---|")
        for keepalive, values in scraped.items():
            print(f"| keepalive {keepalive} | {fmt(values['without'])} | {fmt(values['with'])} | "
                  f"{ratio(values['with'], values['without'])} |")
    if auth_rows:
        print("\n| heartbeat.py, authkeys method | " + " | ".join(AUTH_METHODS) + " |")
        print("|---" * (len(AUTH_METHODS) + 1) + "|")
        for row in auth_rows:
            print("| " + " | ".join(row) + " |")
    return 0


def auth_sections(quick, runs, idle_seconds, wanted, only):
    """Rows of the authkeys methods table: the cost per packet, then (not with QUICK=1 unless ONLY
    asks) idle CPU and RSS of a pair under each method, medians of the runs, and the ratio to sha1."""
    rows = []
    if wanted("auth-packet"):
        costs = {method: packet_cost(method, 2000 if quick else 20000) for method in AUTH_METHODS}
        print(f"  cost per packet: {costs}", file=sys.stderr, flush=True)
        for index, label in enumerate(("sign or seal a status packet, µs", "verify or open and parse it, µs")):
            rows.append([label] + [f"{costs[m][index]:.1f}" if costs[m] else "n/a (no cryptography)"
                                   for m in AUTH_METHODS])
        rows.append(["together, µs (ratio to sha1)"] + [
            f"{sum(costs[m][:2]):.1f} ({sum(costs[m][:2]) / sum(costs['sha1'][:2]):.2f})" if costs[m] else "n/a"
            for m in AUTH_METHODS])
        rows.append(["status datagram, bytes"] + [str(costs[m][2]) if costs[m] else "n/a" for m in AUTH_METHODS])
    if wanted("auth-idle") and (only or not quick):
        usable = [m for m in AUTH_METHODS if m != "aes256gcm" or packet_cost(m, 1)]
        cpu, rss = {m: [] for m in usable}, {m: [] for m in usable}
        for _ in range(runs):
            for method in usable:
                measured = idle_run("heartbeat.py", "100ms", idle_seconds, keys=authkeys_for(method))
                cpu[method].append(measured["cpu"])
                rss[method].append(measured["rss"])
                print(f"  idle keepalive 100ms heartbeat.py {method}: {measured}", file=sys.stderr, flush=True)
        for label, values, unit in (("idle CPU per node, s per minute [keepalive 100ms]", cpu, "s"),
                                    ("idle RSS per node [keepalive 100ms]", rss, "MB")):
            rows.append([label] + [f"{fmt(values[m], unit)}" + ("" if m == "sha1" else
                                                               f" (x{ratio(values[m], values['sha1'])})")
                                   if m in values else "n/a (no cryptography)" for m in AUTH_METHODS])
    return rows


if __name__ == "__main__":
    sys.exit(main())

"""A small lab of network namespaces joined by a bridge, for the root-only tests.

Every name it creates starts with a prefix unique to this test run, and
everything it creates is removed by name in close(), even after a failure.
"""
import contextlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from paths import HEARTBEAT

SUBNET = "10.77.0"
IP = shutil.which("ip") or "/usr/sbin/ip"
SUBNET6 = "fd77::"       # the IPv6 lab (Lab(..., family="ipv6" or "dual")): eth0 = fd77::INDEX/64

# A Heartbeat-style resource.d script (arguments, then start|stop|status) for a tiny web server
# that answers GET / with its node's name ($HA_CURHOST), so a client can see who serves the VIP.
WEBSERVER_SCRIPT = """#!/bin/sh
# webserver PORT PIDDIR start|stop|status
PIDFILE="$2/webserver-$HA_CURHOST.pid"
case "$3" in
start)
    python3 -c 'import http.server, socket, sys
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (sys.argv[2] + "\\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6       # on :: it answers IPv4 (mapped) and IPv6 clients alike
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
Server(("::", int(sys.argv[1])), Page).serve_forever()' "$1" "$HA_CURHOST" \\
        </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"; sleep 0.2; echo "webserver started on port $1" ;;
stop) [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null; rm -f "$PIDFILE"; echo stopped ;;
status) PID=$(cat "$PIDFILE" 2>/dev/null)     # a killed server not reaped yet (a zombie) is stopped too
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$PID/stat")" != Z ]; then
        echo running; else echo stopped; fi ;;
esac
exit 0
"""
# The same web server, except that it will not start while PIDDIR/broken-NODE exists.
BROKEN = 'if [ -e "$2/broken-$HA_CURHOST" ]; then echo "cannot start: $2/broken-$HA_CURHOST"; exit 1; fi'
BREAKABLE_WEBSERVER_SCRIPT = WEBSERVER_SCRIPT.replace("start)\n", f"start)\n    {BROKEN}\n", 1)

LAB_NUMBERS = itertools.count()      # one prefix per lab: names never collide with a lab being torn down


VIP, WEB_PORT = "10.77.0.100", 8080      # the virtual IP the tests move, and the web server's port
VIP6 = "fd77::100"                       # the IPv6 one
FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=0.4).read().decode().strip())
except Exception:
    print("-")
"""


def url(address, port=WEB_PORT):
    """http://ADDRESS:PORT/, with IPv6 addresses in brackets."""
    return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"


POLLER = """
import sys, time, urllib.request
end, last = time.monotonic() + float(sys.argv[1]), None
while time.monotonic() < end:
    try:
        answer = urllib.request.urlopen(sys.argv[2], timeout=0.3).read().decode().strip()
    except Exception:
        answer = "-"
    if answer != last:
        print(f"{time.time():.3f} {answer}", flush=True)
        last = answer
    time.sleep(0.05)
"""


def poller(lab, seconds, port=WEB_PORT, host="client", address=VIP):
    """A client in `host` polling http://address:port/ every 50 ms for `seconds`; it prints a line
    "WALLTIME ANSWER" ("-" for none) each time the answer changes."""
    return lab.popen(host, [sys.executable, "-c", POLLER, str(seconds), url(address, port)],
                     stdout=subprocess.PIPE, text=True)


class OutageClient:
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


def cut_route(lab, name, address, table="hbtest"):
    """nftables in `name`'s namespace drops everything it sends to address (a dead uplink)."""
    for argv in (["nft", "add", "table", "inet", table],
                 ["nft", "add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }"],
                 ["nft", "add", "rule", "inet", table, "out", "ip6" if ":" in address else "ip", "daddr", address,
                  "drop"]):
        lab.exec(name, argv)


def heal_route(lab, name, table="hbtest"):
    lab.exec(name, ["nft", "delete", "table", "inet", table])


def page(lab, address=VIP):
    """What the client namespace gets from http://address/ ("-" for nothing)."""
    return lab.exec("client", ["python3", "-c", FETCH, url(address)], check=False).stdout.strip()


def holders(lab, names=("prime", "calc"), address=VIP):
    """The nodes whose interfaces carry the address now."""
    family, word = ("-6", "inet6") if ":" in address else ("-4", "inet")
    return [n for n in names if f"{word} {address}/" in lab.exec(n, ["ip", family, "-o", "addr"]).stdout]


def wait(what, timeout, interval=0.05):
    """Seconds until what() is true; fails after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if what():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout} s")


def kill_webserver(lab, node, piddir=None):
    """The web server of `node` killed (SIGKILL), by the pid in its pid file (in piddir, default the lab's tmp)."""
    with open(os.path.join(piddir or lab.tmp, f"webserver-{node}.pid")) as handle:
        os.kill(int(handle.read()), signal.SIGKILL)


def settled(lab, node, address=VIP):
    """A condition for wait(): `node` alone holds the address, and the client gets its page there."""
    return lambda: holders(lab, address=address) == [node] and page(lab, address) == node


def past_startup_grace(*nodes):
    """A condition for wait(): each node has heard every other one announce its deadtime without the 2 s
    a daemon adds in its first 5 s (3.0.6's start-up grace), so that a failure is seen after deadtime."""
    def check():
        statuses = {node.name: node.status() for node in nodes}
        return all(statuses[a.name].get("nodes", {}).get(b.name, {}).get("deadtime_ms")
                   == statuses[b.name].get("timers_ms", {}).get("deadtime", -1)
                   for a in nodes for b in nodes if a is not b)
    return check


def cut_uplink(lab, name):
    """`name` loses its way to the lab's ping node, host "router" (nftables drops what it sends there)."""
    cut_route(lab, name, lab.addr("router"))


def two_holders_during_failback(lab, timeout, interval=0.05):
    """Poll until prime alone holds the VIP and serves it; True if both nodes held it at any sample."""
    doubled, end = False, time.monotonic() + timeout
    while time.monotonic() < end:
        now = holders(lab)
        doubled |= len(now) > 1
        if now == ["prime"] and page(lab) == "prime":
            break
        time.sleep(interval)
    return doubled


def run(argv, check=True, timeout=20, **kw):
    return subprocess.run(argv, check=check, timeout=timeout, capture_output=True, text=True, **kw)


def have_root_net():
    """True when we may create namespaces (root, ip present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


class Lab:
    """Namespaces NAME -> host index; each host gets eth0 = SUBNET.index/24 on one bridge, or with
    family "ipv6" only SUBNET6index/64 (no IPv4 at all on the link), or with "dual" both."""

    def __init__(self, hosts, prefix=None, family="ipv4"):
        assert family in ("ipv4", "ipv6", "dual")
        self.family = family
        self.prefix = prefix or f"h{os.getpid() % 10000:04d}{next(LAB_NUMBERS):03d}"
        self.bridge = f"{self.prefix}br"
        self.hosts = {}           # name -> index
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix=self.prefix + "-")
        self.bridge_made = False          # close() removes only what this lab made: a second demo
        try:                              # that finds the name taken must not tear the first one down
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            self.bridge_made = True
            run(["ip", "link", "set", self.bridge, "up"])
            for index, name in enumerate(hosts, 1):
                self.add_host(name, index)
        except BaseException:                 # a signal too (make demo, make bench): nothing half built stays
            self.close()
            raise

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def veth(self, name):
        return f"{self.prefix}{self.hosts[name]}"

    def addr(self, name):
        return f"{SUBNET}.{self.hosts[name]}"

    def addr6(self, name):
        return f"{SUBNET6}{self.hosts[name]}"

    def add_host(self, name, index):
        ns, veth = f"{self.prefix}-{name}", f"{self.prefix}{index}"
        run(["ip", "netns", "add", ns])
        self.hosts[name] = index
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        self.exec(name, ["ip", "link", "set", "lo", "up"])
        if self.family != "ipv6":
            self.exec(name, ["ip", "addr", "add", f"{SUBNET}.{index}/24", "brd", "+", "dev", "eth0"])
        if self.family != "ipv4":        # no DAD: usable at once, as a configured address on a real host
            self.exec(name, ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
            self.exec(name, ["ip", "-6", "addr", "add", f"{SUBNET6}{index}/64", "dev", "eth0", "nodad"])
        self.exec(name, ["ip", "link", "set", "eth0", "up"])

    def exec(self, name, argv, check=True, timeout=20):
        return run(["ip", "netns", "exec", self.ns(name)] + list(argv), check=check, timeout=timeout)

    def popen(self, name, argv, **kw):
        proc = subprocess.Popen([IP, "netns", "exec", self.ns(name)] + list(argv), **kw)   # IP: kw's env
        self.procs.append(proc)                                                           # may hide ip
        return proc

    def cut(self, name):
        """Pull the host's cable: its veth end on the bridge goes down."""
        run(["ip", "link", "set", self.veth(name), "down"])

    def heal(self, name):
        run(["ip", "link", "set", self.veth(name), "up"])

    def close(self, grace=3):
        """SIGTERM to every process started here, SIGKILL to those still running `grace` seconds later
        (nothing is asserted any more: a daemon still trying to stop a group that will not stop, 11 tries
        1 s apart, need not be waited for), then every process left in the namespaces; links,
        namespaces, the bridge and the tmp dir go."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        for name in list(self.hosts):
            pids = run(["ip", "netns", "pids", self.ns(name)], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "link", "del", self.veth(name)], check=False)
            run(["ip", "netns", "del", self.ns(name)], check=False)
        if self.bridge_made:
            run(["ip", "link", "del", self.bridge], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def with_binds(argv, binds):
    """argv in a private mount namespace with each (source, target) bound over target, run only
    when every bind mount succeeded; argv itself when there is nothing to bind."""
    if not binds:
        return list(argv)
    script = "mount --make-rprivate / && " + " && ".join(
        f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in binds) + ' && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "with-binds", *argv]


class Node:
    """A heartbeat.py daemon in one namespace (host, by default its node name), with its own
    config, state and run dirs."""

    def __init__(self, lab, name, hacf, authkeys="auth 1\n1 sha1 lab-secret\n", haresources="",
                 resource_scripts=None, python=sys.executable, host=None):
        self.lab, self.name, self.python, self.host = lab, name, python, host or name
        self.root = os.path.join(lab.tmp, self.host)
        self.config_dir = os.path.join(self.root, "ha.d")
        self.state_dir = os.path.join(self.root, "state")
        self.run_dir = os.path.join(self.root, "run")
        os.makedirs(os.path.join(self.config_dir, "resource.d"))
        self.write("ha.cf", hacf)
        self.write("authkeys", authkeys, mode=0o600)
        self.write("haresources", haresources)
        for script, text in (resource_scripts or {}).items():
            self.write(os.path.join("resource.d", script), text, mode=0o755)
        self.proc = None
        self.log_path = os.path.join(self.root, "stderr.log")

    def write(self, relpath, text, mode=0o644):
        path = os.path.join(self.config_dir, relpath)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)

    def argv(self, *args):
        return [self.python, HEARTBEAT, *args, "-c", self.config_dir, "--node", self.name,
                "--state-dir", self.state_dir, "--run-dir", self.run_dir]

    def start(self, env_path=None, fake_reboot=None, binds=()):
        """Run the daemon in the foreground; env_path replaces PATH (e.g. to hide ip and arping).
        fake_reboot: a script that the daemon finds at /sbin/reboot; binds: more (source, target)
        pairs (a lab's STONITH plugins, a private /run). They are bound in a mount namespace of the
        daemon's own, which is not started unless every bind mount succeeded."""
        self.stderr = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the daemon's life
        env = dict(os.environ, PATH=env_path) if env_path else None
        binds = [*binds, *([(fake_reboot, "/sbin/reboot")] if fake_reboot else [])]
        argv = with_binds(self.argv("daemon", "--foreground"), binds)
        self.proc = self.lab.popen(self.host, argv, stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        return self

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def status(self):
        import json
        out = self.lab.exec(self.host, self.argv("status", "--json"), check=False)
        return json.loads(out.stdout) if out.stdout.strip() else {"running": False}

    def log(self):
        with open(self.log_path, "rb") as handle:
            return handle.read().decode(errors="replace")

    def wait_for(self, predicate, timeout, interval=0.1):
        """Poll status until predicate(status) is true; return seconds taken, or raise."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            status = self.status()
            if status.get("running") and predicate(status):
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"{self.name}: condition not met in {timeout} s; last status "
                             f"{self.status()}\n--- log ---\n{self.log()[-3000:]}")


def hacf(nodes=("prime", "calc"), media="bcast eth0", keepalive="200ms", deadtime="1", initdead="2",
         extra=""):
    return (f"keepalive {keepalive}\ndeadtime {deadtime}\ninitdead {initdead}\nudpport 694\n{media}\n"
            + "".join(f"node {n}\n" for n in nodes) + "auto_failback on\n" + extra)


def sweep(prefix):
    """Remove, by name, whatever of lab `prefix` is left: the processes in its namespaces (the
    daemons of both implementations, the client), its namespaces, its links and its directory."""
    names = [line.split()[0] for line in
             subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
             if line.startswith(prefix + "-")]
    for name in names:
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for line in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines():
        fields = line.split(":")
        link = fields[1].strip().split("@")[0] if len(fields) > 2 else ""
        if link.startswith(prefix):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        if entry.startswith(prefix + "-"):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)


def catch_stop_signals():
    """make demo and make bench: SIGTERM or SIGINT, once, is the KeyboardInterrupt their clean-up
    handles."""
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)


def ignore_stop_signals():
    """While the labs are torn down: a second signal must not cut the clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted(signum, _frame):
    ignore_stop_signals()
    raise KeyboardInterrupt(signal.Signals(signum).name)

"""What the unit tests share: a fake clock, a recorder standing in for log, listener and transmit,
calc's packets as the real daemon builds them, workers and resources that do nothing or run inline,
prime's membership (and ipfail cluster) on the fake clock, and the command line run as a subprocess
with a configuration directory to run it on. No root, no network, no sleeping."""
import os
import subprocess
import sys

import heartbeat as hb
from paths import HEARTBEAT

# ---------------------------------------------------------------- the clock and the recorder

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Recorder:
    """Log, listener and transmit in one: remembers everything."""

    def __init__(self):
        self.lines, self.events, self.sent = [], [], []

    def __getattr__(self, level):
        return lambda message, *a: self.lines.append(f"{level}: {message}")

    def on_node_status(self, peer, old, new):
        self.events.append(("status", peer.name, old, new))

    def on_message(self, peer, msg):
        self.events.append(("message", peer.name, msg.get("t")))

    def on_comm_up(self):
        self.events.append(("comm_up",))

    def has(self, text):
        return any(text in line for line in self.lines)


def routed(policy, ipfail=None):
    """A DecisionRouter to the policy (and ipfail), as the daemon's, for a membership to tell."""
    router = hb.DecisionRouter()
    router.route_to(policy, ipfail)
    return router


# ---------------------------------------------------------------- prime's membership; calc's packets

DEADTIME_MS, KEEPALIVE_MS, WARNTIME_MS, INITDEAD_MS = 5000, 1000, 3000, 10000


def membership_world(tmp_path):
    """prime's Membership on a fake clock, two media, calc its peer: (membership, clock, timers, rec,
    config). The `world` fixture of tests/unit/conftest.py."""
    (tmp_path / "ha.cf").write_text(f"keepalive {KEEPALIVE_MS}ms\ndeadtime {DEADTIME_MS}ms\nwarntime {WARNTIME_MS}ms\n"
                                    f"initdead {INITDEAD_MS}ms\nbcast eth0\nbcast eth1\nnode prime calc\n"
                                    "auto_failback on\n")
    (tmp_path / "authkeys").write_text("auth 2\n2 sha1 secret\n")
    os.chmod(tmp_path / "authkeys", 0o600)
    (tmp_path / "haresources").write_text("")
    config = hb.load_config(str(tmp_path), "prime")
    clock, rec = Clock(), Recorder()
    timers = hb.Timers(clock)
    membership = hb.Membership(config, hb.Identity("prime", b"P" * 16, 0x100), timers, rec,
                               rec.sent.append, rec)
    return membership, clock, timers, rec, config


def advance(world, seconds, step=0.01):
    membership, clock, timers, rec, _ = world
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        clock.now = min(end, clock.now + step)
        timers.run_due()


class Calc:
    """Builds calc's packets as the real daemon would."""

    def __init__(self, config, generation=0x200, key=None):
        self.keys = config.authkeys if key is None else hb.AuthKeys("k", 2, {2: ("sha1", key)})
        self.seq, self.generation = 0, generation

    def packet(self, *fields, seq=None, name="calc", generation=None, ts="6b05d22a"):
        msg = hb.Message(*fields)
        msg.add("src", name)
        msg.add("srcuuid", b"C" * 16, hb.FIELD_BINARY)
        if not fields[0][1].startswith("NS_"):
            self.seq = self.seq + 1 if seq is None else seq
            msg.add("seq", format(self.seq, "x"))
        msg.add("hg", format(self.generation if generation is None else generation, "x"))
        msg.add("ts", ts)
        return hb.encode_message(msg, self.keys)

    def status(self, st="active", dt=DEADTIME_MS, **kw):
        return self.packet(("t", "status"), ("st", st), ("dt", format(dt, "x")), ("protocol", "1"), **kw)


def sent(rec):
    return [hb.decode_message(d, hb.AuthKeys("k", 2, {2: ("sha1", "secret")})) for d in rec.sent]


# ---------------------------------------------------------------- the policy's worker and resources

class InlineWorker:
    """Runs each resource job at once, in the caller's thread. An exception from the job goes up to the
    caller, so that a test fails where it happened; with pass_errors it is handed to `done` as the
    job's result instead, as the daemon's Worker does (the link watch tests count on that)."""
    busy = False

    def __init__(self, pass_errors=False):
        self.pass_errors = pass_errors

    def submit(self, job, done=None):
        if self.pass_errors:
            try:
                result = job()
            except Exception as err:
                result = err
        else:
            result = job()
        if done:
            done(result)


class NoResources:
    stuck = set()
    conflicted = set()

    def acquire_group(self, group):
        return None

    def release_group(self, group):
        return True


# ---------------------------------------------------------------- ping nodes and ipfail

DEADPING_MS = 3000
ROUTER, UPLINK2 = "10.0.0.254", "10.0.1.254"


def ipfail_config(tmp_path, extra="respawn hacluster /usr/lib/heartbeat/ipfail\n", auto_failback="on", groups=True):
    (tmp_path / "ha.cf").write_text(f"keepalive {KEEPALIVE_MS}ms\ndeadtime 5\ninitdead 10\ndeadping {DEADPING_MS}ms\n"
                                    f"bcast eth0\nnode prime calc\nauto_failback {auto_failback}\n"
                                    f"ping {ROUTER}\nping_group uplink2 {UPLINK2} 10.0.1.253\n{extra}")
    (tmp_path / "authkeys").write_text("auth 2\n2 sha1 secret\n")
    os.chmod(tmp_path / "authkeys", 0o600)
    (tmp_path / "haresources").write_text("prime 10.0.0.100\ncalc 10.0.0.101\n" if groups else "")
    return hb.load_config(str(tmp_path), "prime")


class IPFailCluster:
    """prime's membership, policy, ping nodes and ipfail on a fake clock; calc is a packet builder."""

    def __init__(self, config):
        self.config, self.clock, self.rec = config, Clock(), Recorder()
        self.timers = hb.Timers(self.clock)
        router = hb.DecisionRouter()
        self.membership = hb.Membership(config, hb.Identity("prime", b"P" * 16, 0x100), self.timers, self.rec,
                                        self.rec.sent.append, router)
        self.policy = hb.ClusterPolicy(config, self.membership, NoResources(), InlineWorker(), self.rec)
        self.pings = hb.PingNodes(config.hacf, self.timers, self.rec, router)
        self.ipfail = hb.IPFail(config, self.membership, self.policy, self.pings, self.rec)
        router.route_to(self.policy, self.ipfail)
        self.calc = Calc(config)
        self.membership.start()
        self.pings.start()
        self.ipfail.start()
        self.receive(self.calc.status())

    def advance(self, seconds, step=0.05):
        """Time passes; calc beats every keepalive all along."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + step)
            if self.clock.now - self.membership.peers["calc"].last_heard >= KEEPALIVE_MS / 1000:
                self.receive(self.calc.status())
            self.timers.run_due()

    def hold(self, *classes):
        for cls in classes:
            self.policy.holds[cls] = True

    def receive(self, datagram):
        self.membership.receive(datagram, "eth0", "10.0.0.2")

    def from_calc(self, mtype, *fields, ts="6b05d22a"):
        self.receive(self.calc.packet(("t", mtype), *fields, ("dest", "prime"), ts=ts))

    def answer(self, *names):
        for name in names:
            self.pings.heard(self.pings.targets[name])

    def sent(self, mtype):
        return [m for m in sent(self.rec) if m.get("t") == mtype]


# ---------------------------------------------------------------- the command line

HACF = (
    "# the tutorial's cluster\n"          # 1
    "debugfile /var/log/ha-debug\n"       # 2
    "logfile /var/log/ha-log\n"           # 3
    "logfacility     local0\n"            # 4
    "keepalive 2\n"                       # 5
    "deadtime 10\n"                       # 6
    "udpport 694\n"                       # 7
    "bcast     eth0\n"                    # 8
    "node    prime\n"                     # 9
    "node    calc\n"                      # 10
    "auto_failback on\n"                  # 11
)
AUTHKEYS = "auth 2\n#1 crc\n2 sha1 a-secret-of-ours\n"
HARESOURCES = ("prime 192.168.77.100/24/eth0/192.168.77.255 apache2\n"
               "calc IPaddr::192.168.77.101/24 hbdummy::alpha::beta\n")


def run(*args, timeout=30):
    """heartbeat.py ARGS as a subprocess."""
    return subprocess.run([sys.executable, HEARTBEAT, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def write(directory, name, text, mode=0o644):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


def tutorial_confdir(tmp_path):
    """The tutorial's ha.d (HACF, AUTHKEYS, HARESOURCES and its two scripts) in tmp_path/ha.d. The
    `confdir` fixture of tests/unit/conftest.py."""
    directory = tmp_path / "ha.d"
    directory.mkdir()
    directory = str(directory)
    write(directory, "ha.cf", HACF)
    write(directory, "authkeys", AUTHKEYS, 0o600)
    write(directory, "haresources", HARESOURCES)
    os.mkdir(os.path.join(directory, "resource.d"))
    for script in ("apache2", "hbdummy"):
        write(os.path.join(directory, "resource.d"), script, "#!/bin/sh\nexit 0\n", 0o755)
    return directory


def common(directory, tmp_path):
    return ["-c", directory, "--node", "prime", "--state-dir", str(tmp_path / "state"),
            "--run-dir", str(tmp_path / "run")]


RESTART = """
import sys
copy_dir, state = sys.argv[1], sys.argv[2]
sys.path.insert(0, copy_dir)
import heartbeat
sys.argv = [copy_dir + "/heartbeat.py", "--version"]
heartbeat.restart_from_bytecode(state)
print("still running from source")
"""


def restart(copy_dir, state):
    """restart_from_bytecode() in a process of its own, as the daemon command calls it."""
    return subprocess.run([sys.executable, "-c", RESTART, str(copy_dir), str(state)], capture_output=True,
                          text=True, timeout=30)


def scripts_config(tmp_path, scripts, haresources):
    """prime's configuration in tmp_path with these resource.d scripts (name -> body) and haresources."""
    (tmp_path / "resource.d").mkdir()
    (tmp_path / "ha.cf").write_text("keepalive 1\ndeadtime 5\nbcast lo\nnode prime calc\nauto_failback on\n")
    write(str(tmp_path), "authkeys", "auth 1\n1 sha1 key\n", 0o600)
    for name, body in scripts.items():
        write(str(tmp_path / "resource.d"), name, body, 0o755)
    (tmp_path / "haresources").write_text(haresources)
    return hb.load_config(str(tmp_path), "prime")


def pcs_applied_to_a_cib_file(text, tmp_path):
    """The `pcs -f "$CIB"` lines of an export run on an empty CIB file (the cluster part, pcs cluster
    setup/start/cib-push, needs real nodes), then crm_verify on the result: the file's path."""
    cib = tmp_path / "cib.xml"
    cib.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True, check=True,
                                  timeout=30).stdout)
    commands = "\n".join(line for line in text.splitlines() if line.startswith('pcs -f "$CIB"'))
    result = subprocess.run(["sh", "-e", "-c", commands], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, CIB=str(cib)))
    assert result.returncode == 0, result.stderr
    verify = subprocess.run(["crm_verify", "--xml-file", str(cib)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return cib


WEBSERVER_GROUP = "prime 10.9.0.1/24/eth0 webserver::8080\n"


def webserver_config(tmp_path, settings):
    """prime's configuration in tmp_path/ha.d for the service monitor's tests: WEBSERVER_GROUP (its
    webserver script does nothing) and this heartbeat.py.cf; called again, it rewrites them (a reload)."""
    directory = tmp_path / "ha.d"
    (directory / "resource.d").mkdir(parents=True, exist_ok=True)
    (directory / "ha.cf").write_text("keepalive 1\ndeadtime 5\nbcast eth0\nnode prime calc\nauto_failback on\n")
    write(str(directory), "authkeys", "auth 2\n2 sha1 secret\n", 0o600)
    (directory / "haresources").write_text(WEBSERVER_GROUP)
    write(str(directory / "resource.d"), "webserver", "#!/bin/sh\nexit 0\n", 0o755)
    (directory / "heartbeat.py.cf").write_text(settings)
    return hb.load_config(str(directory), "prime")


class MonitorPolicy:
    """The cluster policy as the service monitor asks it (MonitorRequests): the group runs here while
    `running`; a move needs a live `peer`; restarts run on_restart (start processes again) first."""

    def __init__(self):
        self.running, self.peer, self.restarts, self.moves, self.allowed = True, True, [], [], []
        self.on_restart = None
        self.restart_error = None

    def may_check(self, key):
        return self.running

    def restart_resource(self, key, res, done):
        self.restarts.append(res.spec)
        if self.on_restart:
            self.on_restart()
        done(self.restart_error)

    def move_group(self, key, reason):
        if not self.peer:
            return "no live peer can take it"
        self.moves.append((key, reason))
        self.running = False
        return ""

    def allow_here(self, key):
        self.allowed.append(key)

    def live_peers(self):
        return ["calc"] if self.peer else []

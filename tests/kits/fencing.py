"""Fencing test kit (root only): a STONITH plugin for the namespace lab, and ways to install it.

The plugin follows cluster-glue's external/* calling convention (doc/stonith/README.external):
`PLUGIN reset|off|on HOST`, `PLUGIN status|gethosts|getconfignames|getinfo-*`, parameters in the
environment (its only config name is `hostlist`), exit 0 = success. Every call is appended to a
JSON-lines record in the lab's tmp dir with wall and monotonic times.

Actions on a successful reset/off: "poweroff" kills every process of the target's namespace and
takes its links down (the node is really gone); "record" only records. fail_times=N fails the first
N reset/off calls for a host; fail_times=None fails them all.

It can only ever touch the namespaces of the lab it was made for: the target's namespace is
identified by the (device, inode) of /run/netns/<prefix>-<host> taken when the plugin is written
(so it also works under a real 3.0.6 node whose /run is private), and it refuses its own namespace
and that of pid 1.

cluster-glue looks for external plugins only in /usr/lib/stonith/plugins/external (compiled in,
no option). wrap() binds the lab's plugin dir over it inside a private mount namespace; the host's
directory is never touched (see /work/notes/stonith-facts.md §5).
"""
import json
import os
import subprocess
import sys
import time

from netns import with_binds

EXTERNAL_DIR = "/usr/lib/stonith/plugins/external"

# A resource script that starts and will not stop, and a fake /sbin/reboot that records its calls
# (Node.start(fake_reboot=...)) and exits with `code`: nothing here can reboot anything.
STUCK = """#!/bin/sh
# stuck start|stop|status: a service that starts and will not stop
case "$1" in
start) echo started ;;
stop) echo "cannot stop: device busy"; exit 1 ;;
status) echo running ;;
esac
"""
RECORDER = """#!/bin/sh
echo "$0 $*" >> {calls}
exit {code}
"""

PLUGIN = r'''#!{python}
"""{name}: a test STONITH plugin for namespace lab {prefix} (written by tests/kits/fencing.py)."""
import fcntl, json, os, signal, subprocess, sys, time

CONFIG = json.loads({config!r})


def netns_id(path):
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


def pids_in(nsid):
    """Every process whose network namespace is nsid (what `ip netns pids` does, by /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if netns_id(f"/proc/{{entry}}/ns/net") == nsid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def poweroff(host):
    nsid = CONFIG["nodes"][host]
    refuse = [netns_id("/proc/self/ns/net")]
    try:
        refuse.append(netns_id("/proc/1/ns/net"))
    except OSError:                         # in some containers pid 1's namespace cannot be read
        pass
    if nsid in refuse:
        return "refused: own or initial namespace", [], []
    pids = pids_in(nsid)
    path = "/run/netns/" + CONFIG["prefix"] + "-" + host
    if not (os.path.exists(path) and netns_id(path) == nsid):
        path = f"/proc/{{pids[0]}}/ns/net" if pids else None
    links = []
    if path:
        enter = ["nsenter", "--net=" + path, "ip"]
        out = subprocess.run(enter + ["-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            link = line.split(":")[1].strip().split("@")[0]
            if link != "lo":
                subprocess.run(enter + ["link", "set", link, "down"], capture_output=True, timeout=10)
                links.append(link)
    killed = []
    for _ in range(10):                     # bounded: a forking node gets at most 10 sweeps
        pids = [p for p in pids_in(nsid) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return "ok", killed, links


def main():
    op = sys.argv[1] if len(sys.argv) > 1 else ""
    host = sys.argv[2].lower() if len(sys.argv) > 2 else None
    info = {{"getconfignames": "hostlist", "getinfo-devid": CONFIG["name"] + " device",
            "getinfo-devname": CONFIG["name"], "getinfo-devdescr": "namespace lab test fence (tests/kits/fencing.py)",
            "getinfo-devurl": "file://" + CONFIG["record"],
            "getinfo-xml": '<parameters><parameter name="hostlist" unique="1" required="1">'
                           '<content type="string"/></parameter></parameters>'}}
    if op in info:
        print(info[op])
        return 0
    if op == "gethosts":
        print(" ".join(os.environ.get("hostlist", " ".join(CONFIG["nodes"])).split()))
        return 0
    entry = {{"op": op, "host": host, "hostlist": os.environ.get("hostlist"), "pid": os.getpid(),
             "wall": time.time(), "mono": time.monotonic()}}
    with open(CONFIG["record"], "a+") as record:
        fcntl.flock(record, fcntl.LOCK_EX)          # one attempt counter across racing fencers
        record.seek(0)
        earlier = [json.loads(line) for line in record if line.strip()]
        if op in ("reset", "off"):
            entry["attempt"] = 1 + sum(1 for e in earlier if e["op"] in ("reset", "off") and e["host"] == host
                                   and e["phase"] == "begin")
        record.write(json.dumps(dict(entry, phase="begin")) + "\n")
        record.flush()
    rc, entry["result"] = 1, "unknown operation"
    if op == "status":
        rc = 0 if CONFIG["status_ok"] else 1
        entry["result"] = "ok" if rc == 0 else "device failed"
    elif op in ("reset", "off", "on"):
        time.sleep(CONFIG["delay"])
        if host not in CONFIG["nodes"]:
            entry["result"] = "refused: not one of the plugin's hosts"
        elif op != "on" and (CONFIG["fail_times"] is None or entry["attempt"] <= CONFIG["fail_times"]):
            entry["result"] = "failed on purpose"
        elif op == "on" or CONFIG["action"] == "record":
            rc, entry["result"] = 0, "ok"
        else:
            try:
                entry["result"], entry["killed"], entry["links"] = poweroff(host)
            except Exception as error:      # recorded, and a failed reset for the caller
                entry["result"] = f"error: {{error!r}}"
            rc = 0 if entry["result"] == "ok" else 1
    entry.update(phase="end", rc=rc, wall_end=time.time(), mono_end=time.monotonic())
    with open(CONFIG["record"], "a") as record:
        fcntl.flock(record, fcntl.LOCK_EX)
        record.write(json.dumps(entry) + "\n")
    print(f"{{op}} {{host or ''}}: {{entry['result']}}")
    return rc


sys.exit(main())
'''


class Plugin:
    """One generated plugin: `type` is what stonith_host/stonith lines name (external/NAME)."""

    def __init__(self, lab, name, directory, record):
        self.lab, self.name, self.dir, self.record = lab, name, directory, record
        self.path = os.path.join(directory, name)
        self.type = f"external/{name}"

    def calls(self, op=None, host=None, phase="end"):
        """The recorded calls (by default the finished ones), oldest first."""
        try:
            with open(self.record) as handle:
                entries = [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []
        return [e for e in entries if (phase is None or e.get("phase") == phase)
                and (op is None or e["op"] == op) and (host is None or e["host"] == host)]

    def resets(self, host=None):
        """Finished reset/off calls (each has attempt, rc, result, mono/mono_end, wall/wall_end)."""
        return [e for e in self.calls(host=host) if e["op"] in ("reset", "off")]

    def first_success(self, host):
        """The first reset/off of host that succeeded, or None."""
        return next((e for e in self.resets(host) if e["rc"] == 0), None)


def make_plugin(lab, name="labfence", action="poweroff", fail_times=0, hosts=None, delay=0.0, status_ok=True):
    """Write plugin NAME into the lab's plugin dir (lab.tmp/stonith-external, mode 0755).

    action: "poweroff" or "record"; fail_times: N failures per host before success, None = always
    fail; hosts: the lab hosts it may fence (default: all of them); delay: seconds each
    reset/off/on takes before acting; status_ok: what `status` answers."""
    assert action in ("poweroff", "record")
    directory = os.path.join(lab.tmp, "stonith-external")
    os.makedirs(directory, exist_ok=True)
    os.chmod(lab.tmp, 0o755)               # a real node's helpers traverse it; never g/o-writable
    os.chmod(directory, 0o755)
    record = os.path.join(lab.tmp, f"{name}.calls")
    nodes = {}
    for host in hosts or lab.hosts:
        st = os.stat(f"/run/netns/{lab.ns(host)}")
        nodes[host] = [st.st_dev, st.st_ino]
    config = json.dumps({"name": name, "prefix": lab.prefix, "record": record, "action": action,
                         "fail_times": fail_times, "nodes": nodes, "delay": delay, "status_ok": status_ok})
    plugin = Plugin(lab, name, directory, record)
    with open(plugin.path, "w") as handle:
        handle.write(PLUGIN.format(python=sys.executable, name=name, prefix=lab.prefix, config=config))
    os.chmod(plugin.path, 0o755)           # cluster-glue refuses group/other-writable plugins
    return plugin


def can_install():
    """True when the bind mount can be made: root, unshare, and cluster-glue's external dir exists."""
    return os.geteuid() == 0 and os.path.isdir(EXTERNAL_DIR) and subprocess.run(
        ["which", "unshare"], capture_output=True).returncode == 0


def wrap(argv, plugin_dir, binds=()):
    """argv run in a private mount namespace where plugin_dir is bound over cluster-glue's external
    plugin dir (plus any (source, target) pairs in binds); the command is not run unless every bind
    mount succeeded. Children (the stonith command) inherit it."""
    return with_binds(argv, [(plugin_dir, EXTERNAL_DIR), *binds])


def stonith(lab, host, plugin, *args, timeout=30):
    """cluster-glue's `stonith` command in lab namespace host with the plugin installed, e.g.
    stonith(lab, "prime", plugin, "-t", plugin.type, "-p", "prime calc", "-T", "reset", "calc").
    Its log lines go to stdout through HA_logfile=/dev/stdout (stdin is not a tty)."""
    env = dict(os.environ, HA_logfile="/dev/stdout", HA_logfacility="none")
    return subprocess.run(["ip", "netns", "exec", lab.ns(host), *wrap(["stonith", *args], plugin.dir)],
                          capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def start_node(node, plugin, env_path=None, fake_reboot=None):
    """Node.start(), with the plugin dir bound over cluster-glue's (and optionally a fake reboot); its
    ha.cf, which holds the device's parameters, readable by root only, as `check` asks."""
    os.chmod(os.path.join(node.config_dir, "ha.cf"), 0o600)
    return node.start(env_path=env_path, fake_reboot=fake_reboot, binds=[(plugin.dir, EXTERNAL_DIR)])


def start_real(real, plugin):
    """RealNode.start(), with the plugin dir bound over cluster-glue's inside its mount namespace."""
    return real.start(binds=[(plugin.dir, EXTERNAL_DIR)])


def meatclient_confirm(real, host):
    """Answer a real node's meatware wait as an operator would (`meatclient -c HOST`, answer y);
    meatware's FIFO is /run/meatware.HOST in the node's private /run. Returns the CompletedProcess."""
    return subprocess.run(["nsenter", "--target", str(real.proc.pid), "--mount", "--uts", "--net",
                           "meatclient", "-c", host], input="y\n", capture_output=True, text=True, timeout=20)


def gone(lab, host):
    """True when host's namespace has no process left and its eth0 is down."""
    pids = subprocess.run(["ip", "netns", "pids", lab.ns(host)], capture_output=True, text=True).stdout.split()
    link = subprocess.run(["ip", "-n", lab.ns(host), "-o", "link", "show", "eth0"],
                          capture_output=True, text=True).stdout
    flags = link.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in link else []
    return not pids and "UP" not in flags


def wait_reset(plugin, host, timeout, interval=0.1):
    """The first successful reset/off of host (waits up to timeout seconds)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = plugin.first_success(host)
        if done:
            return done
        time.sleep(interval)
    raise AssertionError(f"{host} not fenced in {timeout} s; calls: {plugin.calls(phase=None)}")

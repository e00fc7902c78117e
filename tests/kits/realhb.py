"""Real Heartbeat 3.0.6 as a peer: Debian's daemon in one of a Lab's namespaces.

Each real node gets its own hostname (unshare --uts) and, in its own mount namespace
(unshare --mount, made private first so nothing leaks to the host), private copies of
/etc/ha.d, /var/lib/heartbeat and /run bind-mounted over the real ones. Its tools
(cl_status, hb_standby, hb_takeover) run in the same namespaces through nsenter.
"""
import os
import shlex
import shutil
import signal
import subprocess
import time

HEARTBEAT_BIN = "/usr/libexec/heartbeat/heartbeat"


def have_real_heartbeat():
    return os.path.exists(HEARTBEAT_BIN) and shutil.which("nsenter") is not None


class RealNode:
    """One Heartbeat 3.0.6 daemon, run in the foreground inside lab namespace `name`."""

    def __init__(self, lab, name, hacf, authkeys, haresources="", resource_scripts=None):
        self.lab, self.name = lab, name
        self.root = os.path.join(lab.tmp, f"real-{name}")
        self.ha_d = os.path.join(self.root, "ha.d")
        self.lib = os.path.join(self.root, "lib")
        self.run = os.path.join(self.root, "run")
        self.logdir = os.path.join(self.root, "log")
        os.makedirs(self.root)
        shutil.copytree("/etc/ha.d", self.ha_d, symlinks=True)
        shutil.copytree("/var/lib/heartbeat", self.lib, symlinks=True)
        os.makedirs(os.path.join(self.run, "resource-agents"))     # the OCF agents' state (IPaddr)
        if os.path.isdir("/var/run/heartbeat"):
            shutil.copytree("/var/run/heartbeat", os.path.join(self.run, "heartbeat"), symlinks=True)
        for directory in (os.path.join(self.lib), os.path.join(self.run, "heartbeat")):
            subprocess.run(["chown", "-R", "--reference=/var/lib/heartbeat/crm", directory], check=False)
            subprocess.run(["chown", "root:root", directory], check=False)
        os.makedirs(self.logdir)
        self.write("ha.cf", f"logfile {self.logdir}/ha-log\ndebugfile {self.logdir}/ha-debug\n"
                             f"logfacility none\ncrm off\nrealtime off\n{hacf}")
        self.write("authkeys", authkeys, 0o600)
        self.write("haresources", haresources)
        for script, text in (resource_scripts or {}).items():
            self.write(os.path.join("resource.d", script), text, 0o755)
        self.proc = None

    def write(self, relpath, text, mode=0o644):
        path = os.path.join(self.ha_d, relpath)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)

    def start(self, binds=(), env=None):
        """binds: more (source, target) pairs bound in its mount namespace (a lab's STONITH plugins, a
        fake /sbin/reboot); env: the daemon's environment (default ours), e.g. a PATH with a recorder."""
        extra = "".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)} && " for src, dst in binds)
        script = (f"mount --make-rprivate / && {extra}hostname {self.name} && "
                  f"mount --bind {self.ha_d} /etc/ha.d && mount --bind {self.lib} /var/lib/heartbeat && "
                  f"mount --bind {self.run} /run && exec {HEARTBEAT_BIN} -f")
        self.console = open(os.path.join(self.logdir, "console"), "ab")  # noqa: SIM115 - the daemon's life
        self.proc = self.lab.popen(self.name, ["unshare", "--mount", "--uts", "sh", "-c", script],
                                   stdout=self.console, stderr=self.console, env=env)
        return self

    def nsenter(self, argv, timeout=20):
        """Run a command inside the daemon's namespaces (mount, uts, net)."""
        return subprocess.run(["nsenter", "--target", str(self.proc.pid), "--mount", "--uts", "--net", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def cl_status(self, *args):
        """cl_status's answer (its exit code says little: nodestatus of a dead node exits non-zero)."""
        result = self.nsenter(["cl_status", *args])
        return result.stdout.strip() or None

    def stop(self, timeout=60):
        """Graceful stop: SIGTERM to the master control process, as `heartbeat -k` does."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)

    def kill(self):
        """Crash: SIGKILL to every heartbeat process of this node."""
        pids = subprocess.run(["ip", "netns", "pids", self.lab.ns(self.name)], capture_output=True,
                              text=True, check=False).stdout.split()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if b"heartbeat" in handle.read():
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if self.proc:
            self.proc.wait(timeout=10)

    def log(self):
        try:
            with open(os.path.join(self.logdir, "ha-debug"), errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def wait_for(self, predicate, timeout, interval=0.2):
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate(self):
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"real {self.name}: condition not met in {timeout} s\n--- log ---\n"
                             f"{self.log()[-4000:]}")


def state_of(node, other):
    """What `node` says of `other`: cl_status nodestatus of a real node, or a heartbeat.py node's status."""
    if isinstance(node, RealNode):
        return node.cl_status("nodestatus", other.name)
    return node.status().get("nodes", {}).get(other.name, {}).get("status")


def both_active(a, b):
    """A condition for wait(): each of the two nodes (real or heartbeat.py) sees the other active."""
    return lambda: state_of(a, b) == "active" and state_of(b, a) == "active"

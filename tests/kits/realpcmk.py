"""Real Corosync 3 + Pacemaker 2.1 as a cluster node: Debian's daemons in one of a Lab's namespaces.

Each node gets, as tests/kits/realhb.py gives real Heartbeat, its own hostname (unshare --uts) and, in a
mount namespace of its own (made private first, so nothing leaks to the host):
  /dev/shm              a tmpfs (libqb's IPC ring buffers; its sockets are abstract, so the
                        network namespace already keeps them apart)
  /run                  private (pacemaker's /run/crm, the OCF agents' /run/resource-agents,
                        corosync's pid file)
  /etc/corosync         corosync.conf and the authkey
  /var/lib/corosync, /var/lib/pacemaker (cib, pengine, blackbox, cores: hacluster:haclient 0750),
  /var/log/pacemaker, /var/log/corosync, and /etc/init.d (a copy, plus the export's LSB wrappers).
No systemd: a holder process (`sleep`) keeps the namespaces; corosync -f and then pacemakerd (always
in the foreground; it starts pacemaker-based, -fenced, -execd, -attrd, -schedulerd and -controld) are
started in them with nsenter, and so is every tool (crm_mon, cibadmin, crm_standby, ...).
"""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

from netns import page, poller, wait

COROSYNC, PACEMAKERD = "/usr/sbin/corosync", "/usr/sbin/pacemakerd"
DAEMONS = ("pacemaker-based", "pacemaker-fenced", "pacemaker-execd", "pacemaker-attrd",
           "pacemaker-schedulerd", "pacemaker-controld")


def have_pacemaker():
    """None when a real cluster can run here, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    missing = [path for path in (COROSYNC, PACEMAKERD, "/usr/lib/ocf/resource.d/heartbeat/IPaddr2")
               if not os.path.exists(path)]
    missing += [tool for tool in ("nsenter", "unshare", "cibadmin", "crm_mon", "corosync-keygen")
                if shutil.which(tool) is None]
    if missing:
        return "Pacemaker is not installed (apt-get install corosync pacemaker resource-agents): missing " + \
            ", ".join(missing)
    try:
        import pwd
        import grp
        pwd.getpwnam("hacluster")
        grp.getgrnam("haclient")
    except KeyError:
        return "the hacluster user or the haclient group is missing"
    return None


def corosync_conf(config, addresses, path, logfile="/var/log/corosync/corosync.log"):
    """Write corosync.conf for config (a heartbeat.load_config result) with each node's address on each
    link (addresses: node -> [address per medium]). It runs the `pcs cluster setup` line of the export
    itself (pcs --corosync_conf writes the file without contacting any node) when pcs is here, else writes
    the same settings: totem knet with the deadtime as token, the nodelist in ha.cf order (node ids as
    in the exported CIB), votequorum with two_node. Logging goes to logfile, not to syslog."""
    import heartbeat as hb
    hacf = config.hacf
    text = None
    if shutil.which("pcs"):
        script = hb.export_pacemaker(config, "pcs")[0]
        line = next(x for x in script.splitlines() if x.startswith("pcs cluster setup "))
        for node, addrs in addresses.items():
            for medium, addr in zip(hacf.media, addrs):
                line = line.replace(f"<{node}-{medium.iface}-address>", addr)
        assert "<" not in line, f"an address is missing in {line}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        import shlex
        result = subprocess.run([*shlex.split(line), "--corosync_conf", path], capture_output=True, text=True,
                                timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{line} failed: {result.stderr}")
        with open(path) as handle:
            text = handle.read()
        text = re.sub(r"(?m)^(\s*)logfile: .*", rf"\g<1>logfile: {logfile}", text)
        text = text.replace("to_syslog: yes", "to_syslog: no")
    else:
        links = "".join(f"        ring{i}_addr: {{{i}}}\n" for i in range(len(hacf.media)))
        nodes = "".join("    node {\n" + links.format(*addresses[node]) + f"        name: {node}\n"
                        f"        nodeid: {number}\n    }}\n" for number, node in enumerate(hacf.nodes, 1))
        text = (f"totem {{\n    version: 2\n    cluster_name: {hacf.cluster}\n    transport: knet\n"
                f"    token: {hacf.deadtime_ms}\n    crypto_cipher: aes256\n    crypto_hash: sha256\n}}\n\n"
                f"nodelist {{\n{nodes}}}\n\nquorum {{\n    provider: corosync_votequorum\n"
                + ("    two_node: 1\n" if len(hacf.nodes) == 2 else "")
                + f"}}\n\nlogging {{\n    to_logfile: yes\n    logfile: {logfile}\n    to_syslog: no\n"
                  "    timestamp: on\n}\n")
    with open(path, "w") as handle:
        handle.write(text)
    return text


def corosync_authkey(path):
    """One authkey for every node of a cluster (knet's aes256/sha256)."""
    subprocess.run(["corosync-keygen", "-k", path], capture_output=True, check=True, timeout=30)
    os.chmod(path, 0o400)
    return path


class PacemakerNode:
    """corosync + pacemakerd in lab namespace `name` (also its hostname and its Pacemaker node name)."""

    def __init__(self, lab, name, corosync_conf_text, authkey, init_scripts=None):
        self.lab, self.name = lab, name
        self.root = os.path.join(lab.tmp, f"pcmk-{name}")
        self.dirs = {target: os.path.join(self.root, label) for target, label in (
            ("/etc/corosync", "etc-corosync"), ("/var/lib/corosync", "lib-corosync"),
            ("/var/lib/pacemaker", "lib-pacemaker"), ("/var/log/pacemaker", "log-pacemaker"),
            ("/var/log/corosync", "log-corosync"), ("/run", "run"), ("/etc/init.d", "init.d"))}
        for target, path in self.dirs.items():
            if target == "/etc/init.d":
                shutil.copytree(target, path, symlinks=True)
            else:
                os.makedirs(path)
        for sub in ("cib", "pengine", "blackbox", "cores"):
            os.makedirs(os.path.join(self.dirs["/var/lib/pacemaker"], sub), mode=0o750)
        os.makedirs(os.path.join(self.dirs["/run"], "crm"))
        os.makedirs(os.path.join(self.dirs["/run"], "resource-agents"))
        for path in (self.dirs["/var/lib/pacemaker"], self.dirs["/var/log/pacemaker"],
                     os.path.join(self.dirs["/run"], "crm")):
            subprocess.run(["chown", "-R", "hacluster:haclient", path], check=True)
        os.chmod(self.dirs["/var/log/pacemaker"], 0o770)
        with open(os.path.join(self.dirs["/etc/corosync"], "corosync.conf"), "w") as handle:
            handle.write(corosync_conf_text)
        shutil.copy(authkey, os.path.join(self.dirs["/etc/corosync"], "authkey"))
        os.chmod(os.path.join(self.dirs["/etc/corosync"], "authkey"), 0o400)
        for script, text in (init_scripts or {}).items():
            self.install_init_script(script, text)
        self.holder = self.corosync = self.pacemakerd = None
        self.console = open(os.path.join(self.root, "console.log"), "ab")  # noqa: SIM115 - the node's life

    def install_init_script(self, name, text):
        path = os.path.join(self.dirs["/etc/init.d"], name)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755)

    @property
    def pacemaker_log(self):
        return os.path.join(self.dirs["/var/log/pacemaker"], "pacemaker.log")

    @property
    def corosync_log(self):
        return os.path.join(self.dirs["/var/log/corosync"], "corosync.log")

    def boot(self):
        """The namespaces: hostname, a private /dev/shm and the bind mounts, kept by a holder process."""
        if self.holder and self.holder.poll() is None:
            return self
        binds = " && ".join(f"mount --bind {path} {target}" for target, path in self.dirs.items())
        script = (f"mount --make-rprivate / && hostname {self.name} && "
                  f"mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm && {binds} && "
                  "echo ready && exec sleep 86400")
        self.holder = self.lab.popen(self.name, ["unshare", "--mount", "--uts", "sh", "-c", script],
                                     stdout=subprocess.PIPE, stderr=self.console, text=True)
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.wait(timeout=5)
            raise RuntimeError(f"{self.name}: the namespaces could not be set up:\n{self.tail(self.console.name)}")
        self.holder_pid = self.holder.pid       # ip netns exec, unshare and sh all exec: this is the sleep
        return self

    def enter(self, argv):
        return ["nsenter", "--target", str(self.holder_pid), "--mount", "--uts", "--net", *argv]

    def popen(self, argv, env=None):
        proc = subprocess.Popen(self.enter(argv), stdout=self.console, stderr=self.console, env=env,
                                stdin=subprocess.DEVNULL)
        self.lab.procs.append(proc)
        return proc

    def crm(self, argv, timeout=30, check=False, env_extra=None):
        """A command (crm_mon, cibadmin, crm_attribute, crm_standby, pcs, ...) in the node's namespaces."""
        env = dict(os.environ, **env_extra) if env_extra else None
        result = subprocess.run(self.enter(argv), capture_output=True, text=True, timeout=timeout, check=False,
                                env=env)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} exited {result.returncode}: {result.stderr}"
                               f"{result.stdout}")
        return result

    def start(self, timeout=30):
        """corosync -f, once its IPC answers pacemakerd; returns when both run (not yet online)."""
        self.boot()
        self.corosync = self.popen([COROSYNC, "-f"])
        start = time.monotonic()
        while self.crm(["corosync-cfgtool", "-s"], timeout=10).returncode != 0:
            if self.corosync.poll() is not None:
                raise RuntimeError(f"{self.name}: corosync exited {self.corosync.returncode}\n{self.logs()}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{self.name}: corosync not answering after {timeout} s\n{self.logs()}")
            time.sleep(0.1)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PCMK_logfile": "/var/log/pacemaker/pacemaker.log",
               "PCMK_logfacility": "none", "PCMK_debug": "no", "LANG": "C.UTF-8"}
        self.pacemakerd = self.popen([PACEMAKERD], env=env)
        return self

    def alive(self):
        return {"corosync": bool(self.corosync and self.corosync.poll() is None),
                "pacemakerd": bool(self.pacemakerd and self.pacemakerd.poll() is None)}

    def status_xml(self):
        result = self.crm(["crm_mon", "-1", "--output-as=xml"], timeout=15)
        return result.stdout if result.returncode == 0 else ""

    def online_nodes(self):
        xml = self.status_xml()
        return sorted(re.findall(r'<node name="([^"]+)" id="[^"]*" online="true"', xml))

    def wait_online(self, nodes=None, timeout=60):
        """Until crm_mon here shows a DC and every node of `nodes` (default: this one) online; seconds
        taken. Raises with the logs' tails when a daemon died or the time is up."""
        nodes = sorted(nodes or [self.name])
        start = time.monotonic()
        while True:
            dead = [name for name, up in self.alive().items() if not up]
            if dead:
                raise RuntimeError(f"{self.name}: {', '.join(dead)} died\n{self.logs()}")
            xml = self.status_xml()
            if 'current_dc present="true"' in xml and \
                    all(re.search(f'<node name="{n}" id="[^"]*" online="true"', xml) for n in nodes):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{self.name}: {nodes} not online with a DC after {timeout} s\n"
                                   f"crm_mon: {xml[-1500:]}\n{self.logs()}")
            time.sleep(0.25)

    def stop(self, timeout=60):
        """Graceful, as `systemctl stop pacemaker corosync`: pacemakerd stops its resources and daemons
        on SIGTERM, then corosync leaves the membership (SIGTERM too)."""
        for proc in (self.pacemakerd, self.corosync):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        # nsenter waits for its child: a daemon left over (pacemakerd gone first) still dies here
        self.kill_daemons(signal.SIGKILL)

    def kill(self):
        """Crash: SIGKILL to corosync, pacemakerd and every pacemaker daemon of this node."""
        self.kill_daemons(signal.SIGKILL)
        for proc in (self.pacemakerd, self.corosync):
            if proc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)

    def kill_daemons(self, sig):
        pids = subprocess.run(["ip", "netns", "pids", self.lab.ns(self.name)], capture_output=True, text=True,
                              check=False).stdout.split()
        names = ("corosync", "pacemakerd", *DAEMONS)
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as handle:
                    comm = handle.read().strip()
                if comm in names or any(name.startswith(comm) for name in names if len(comm) == 15):
                    os.kill(int(pid), sig)
            except (OSError, ValueError):
                pass

    def close(self):
        """Stop everything, then the holder: the mount namespace and its mounts go with it."""
        self.stop()
        if self.holder and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(timeout=5)
        self.console.close()

    @staticmethod
    def tail(path, chars=3000):
        try:
            with open(path, errors="replace") as handle:
                return handle.read()[-chars:]
        except OSError:
            return ""

    def logs(self):
        return (f"--- {self.name} corosync.log ---\n{self.tail(self.corosync_log)}\n"
                f"--- {self.name} pacemaker.log ---\n{self.tail(self.pacemaker_log)}\n"
                f"--- {self.name} console ---\n{self.tail(self.console.name)}")


def load_cib(node, xml_text, path):
    """The export's XML into the running cluster: its configuration section replaces the cluster's (a
    whole-CIB replace is refused once the cluster has counted past the file's epoch)."""
    with open(path, "w") as handle:
        handle.write(xml_text)
    node.crm(["cibadmin", "--replace", "--scope", "configuration", "--xml-file", path], check=True)


def outage(lab, action, expect, timeout=60):
    """Run action while the client polls the VIP; (seconds without an answer, seconds until `expect`
    answers) from the action's start."""
    client = poller(lab, timeout + 5)
    time.sleep(0.5)
    start = time.time()
    action()
    wait(lambda: page(lab) == expect, timeout)
    took = time.time() - start
    time.sleep(0.3)
    client.terminate()
    out = client.communicate(timeout=10)[0]
    changes = [(float(t), a) for t, a in (line.split() for line in out.splitlines())]
    down, dark = None, 0.0
    for stamp, answer in changes:
        if answer == "-" and down is None:
            down = stamp
        elif answer != "-" and down is not None:
            dark += stamp - max(down, start)
            down = None
    return round(dark, 2), round(took, 2)

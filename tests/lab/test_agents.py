"""OCF resource agents for real (issue 25; root only): the agents of Debian's resource-agents
(/usr/lib/ocf/resource.d/heartbeat), named in haresources as Heartbeat 3.0.6's resource.d wrappers
name them (`Filesystem::DEVICE::DIR::FSTYPE::OPTIONS`, `IPsrcaddr::IP`, `SendArp::IP/NIC`,
`portblock::tcp::PORT::block`, `apache::CONFIG`, `MailTo::EMAIL::SUBJECT`), as `OCF::TYPE::INSTANCE`
and as `ocf:heartbeat:AGENT::name=value` (Delay, Dummy, awsvip), run by two heartbeat.py daemons (prime,
calc) in network namespaces. Each daemon has a mount namespace of its own (`ip netns exec` makes one),
so a file system it mounts is seen by it alone; tests look into it through /proc/PID/mountinfo.

Nothing is mocked where the agent can run: a real ext4 image on a loop device, real routes, real
gratuitous ARP, real iptables rules, a real apache2. The two that cannot run here have stand-ins that
record what they were given: the mail command (MailTo) and the `aws` CLI (awsvip: no cloud is
reachable from here; its EC2 metadata is served on 169.254.169.254 inside each node's own namespace,
which has no default route, so nothing can leave the lab)."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from netns import VIP, Node, hacf, have_root_net, holders, past_startup_grace, wait

AGENTS = "/usr/lib/ocf/resource.d/heartbeat"
pytestmark = [pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces"),
              pytest.mark.skipif(not os.path.isfile(os.path.join(AGENTS, "Filesystem")),
                                 reason=f"needs Debian's resource-agents ({AGENTS})")]

TIMERS = dict(keepalive="200ms", deadtime="1", initdead="3")
TWO = [("prime", "calc")]
THREE = [("prime", "calc", "client")]


def need(*tools):
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs it)")


def cluster(lab, haresources, settings=None, env_path=None, start=True):
    """prime and calc with the same haresources (and heartbeat.py.cf `settings`), started."""
    nodes = []
    for name in ("prime", "calc"):
        node = Node(lab, name, hacf(**TIMERS), haresources=haresources)
        if settings is not None:
            node.write("heartbeat.py.cf", settings)
        nodes.append(node.start(env_path=env_path) if start else node)
    return nodes


def until(what, timeout, *nodes, interval=0.05):
    """wait(what, timeout), with the nodes' logs in the failure."""
    try:
        return wait(what, timeout, interval=interval)
    except AssertionError as failure:
        logs = "".join(f"\n--- {node.name} ---\n{node.log()[-4000:]}" for node in nodes)
        raise AssertionError(f"{failure}{logs}") from None


def group_running(node):
    return lambda: (node.status().get("groups") or [{}])[0].get("state") == "running"


def rsctmp(node, name=""):
    """The node's HA_RSCTMP (RUN_DIR/rsctmp), or a file in it."""
    return os.path.join(node.run_dir, "rsctmp", name)


def standby(lab, node):
    assert lab.exec(node.name, node.argv("standby"), check=False).returncode == 0


# ---------------------------------------------------------------- Filesystem

@pytest.fixture()
def ext4_image():
    """A 16 MB ext4 file system in a file; any loop device still bound to it is detached after the test."""
    need("mkfs.ext4", "losetup", "modprobe", "fuser", "fsck", "nsenter")   # Filesystem's check_binary: the middle 3
    directory = tempfile.mkdtemp(prefix="hbtest-ext4-")
    image = os.path.join(directory, "disk.img")
    with open(image, "wb") as handle:
        handle.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True, timeout=30)
    try:
        yield image
    finally:
        for _ in range(10):                      # the daemons' mount namespaces die with them: autoclear
            if not loops(image):
                break
            time.sleep(0.3)
        for device in loops(image):
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True, timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def loops(image):
    """The loop devices bound to image now."""
    out = subprocess.run(["losetup", "-j", image], capture_output=True, text=True, timeout=10).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def mounted(node, directory):
    """True when `directory` is a mount point in the daemon's own mount namespace."""
    if node.proc is None or node.proc.poll() is not None:
        return False
    try:
        with open(f"/proc/{node.proc.pid}/mountinfo") as handle:
            return any(line.split()[4] == directory for line in handle)
    except (FileNotFoundError, ProcessLookupError):
        return False


def in_mounts_of(node, argv):
    """argv in the daemon's mount namespace (where its file system is mounted)."""
    return subprocess.run(["nsenter", "-t", str(node.proc.pid), "-m", *argv], capture_output=True, text=True,
                          timeout=10, check=True)


@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_filesystem_moves_with_the_vip_and_is_never_mounted_twice(ext4_image, lab):
    """`Filesystem::IMAGE::DIR::ext4::loop` after the VIP: mounted on prime alone; prime dies (its daemon
    killed, its cable cut) -> mounted on calc, where a file is written; prime back -> mounted on prime
    again with calc's file in it, never on both nodes (nor bound to two loop devices) on the way."""
    mountpoint = os.path.join(lab.tmp, "shared")
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 Filesystem::{ext4_image}::{mountpoint}::ext4::loop\n")
    until(lambda: mounted(prime, mountpoint) and holders(lab) == ["prime"], 15, prime, calc)
    assert not mounted(calc, mountpoint)
    assert not os.path.ismount(mountpoint)                   # not on the host: the daemon's namespace only
    assert len(loops(ext4_image)) == 1
    until(past_startup_grace(prime, calc), 10, prime, calc)
    in_mounts_of(prime, ["sh", "-c", f"echo prime > {mountpoint}/from-prime"])

    prime.kill()                            # prime "loses power": its daemon dies, and its mount namespace with
    lab.cut("prime")                        # it; the cable goes too (its VIP, still on eth0, must not answer)
    took = until(lambda: mounted(calc, mountpoint) and "calc" in holders(lab), 10, prime, calc)
    print(f"\nprime killed -> file system mounted on calc after {took:.2f} s (deadtime 1 s)")
    assert len(loops(ext4_image)) == 1
    assert in_mounts_of(calc, ["cat", f"{mountpoint}/from-prime"]).stdout == "prime\n"
    in_mounts_of(calc, ["sh", "-c", f"echo calc > {mountpoint}/from-calc && sync"])

    lab.heal("prime")
    prime.start()                                            # back: auto_failback brings the group home
    doubled, end = [], time.monotonic() + 20
    while time.monotonic() < end:
        both = mounted(prime, mountpoint) and mounted(calc, mountpoint)
        bound = len(loops(ext4_image))
        if both or bound > 1:
            doubled.append((both, bound))
        if mounted(prime, mountpoint) and not mounted(calc, mountpoint) and holders(lab) == ["prime"]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no failback to prime in 20 s\n--- prime ---\n{prime.log()[-3000:]}"
                             f"\n--- calc ---\n{calc.log()[-3000:]}")
    assert not doubled, f"mounted on both nodes (or bound to two loop devices) during failback: {doubled}"
    assert in_mounts_of(prime, ["cat", f"{mountpoint}/from-calc"]).stdout == "calc\n"
    # the agent's own lines reach the daemon's log, under its instance name as 3.0.6's wrapper made it
    assert f"Filesystem(Filesystem_{ext4_image})[start]: INFO: Running start for {ext4_image} on {mountpoint}" \
        in prime.log()
    assert f"Filesystem(Filesystem_{ext4_image})[stop]: INFO: unmounted {mountpoint} successfully" in calc.log()
    time.sleep(1)                                            # and it stays that way
    assert mounted(prime, mountpoint) and not mounted(calc, mountpoint) and len(loops(ext4_image)) == 1


@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_filesystem_monitor_at_check_level_20_remounts_in_place(ext4_image, lab):
    """`monitor Filesystem interval=1s OCF_CHECK_LEVEL=20`: at level 20 the agent's monitor writes
    its OCF_RESOURCE_INSTANCE into a status file on the file system (so the file shows that both were
    given); unmounted behind the daemon's back, it is mounted again where it was."""
    mountpoint = os.path.join(lab.tmp, "shared")
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 Filesystem::{ext4_image}::{mountpoint}::ext4::loop\n",
                          settings="monitor Filesystem interval=1s OCF_CHECK_LEVEL=20\n")
    until(lambda: mounted(prime, mountpoint) and holders(lab) == ["prime"], 15, prime, calc)
    status_files = ["find", f"{mountpoint}/.Filesystem_status", "-type", "f", "-exec", "cat", "{}", "+"]
    until(lambda: in_mounts_of(prime, ["sh", "-c", " ".join(status_files) + " 2>/dev/null || true"]).stdout
          .rstrip("\0") == f"Filesystem_{ext4_image}\n", 10, prime, calc)        # dd conv=sync pads with NULs
    in_mounts_of(prime, ["umount", mountpoint])
    assert not mounted(prime, mountpoint)
    took = prime.wait_for(lambda s: s["monitors"][0]["restarts"] == 1 and s["monitors"][0]["last_result"] == "running",
                          10)
    print(f"\nfile system unmounted behind prime's back -> mounted again in place after {took:.2f} s")
    assert mounted(prime, mountpoint) and not mounted(calc, mountpoint) and holders(lab) == ["prime"]
    assert len(loops(ext4_image)) == 1
    assert "WARN: Resource Filesystem failed its monitor" in prime.log()


# ---------------------------------------------------------------- IPsrcaddr

UDP_ECHO_SOURCE = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
print(sock.recvfrom(100)[1][0], flush=True)
"""
UDP_SEND = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    sock.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
"""


def source_seen_by_client(lab, sender, port=9999):
    """The source address the client sees on a datagram `sender` sends it (plain sendto, no bind; one
    every 100 ms for up to 2 s, so the listener need not be up before the first)."""
    listener = lab.popen("client", [sys.executable, "-c", UDP_ECHO_SOURCE, str(port), "5"],
                         stdout=subprocess.PIPE, text=True)
    talker = lab.popen(sender, [sys.executable, "-c", UDP_SEND, lab.addr("client"), str(port)])
    out, _ = listener.communicate(timeout=10)
    talker.kill()
    talker.wait(timeout=5)
    return out.strip()


def default_route(lab, name):
    return lab.exec(name, ["ip", "-4", "route", "show", "default"]).stdout.strip()


@pytest.mark.parametrize("lab", THREE, indirect=True)
def test_ipsrcaddr_makes_the_vip_the_source_address_while_held(lab):
    """`IPsrcaddr::VIP` after the VIP (the agent needs a default route: one via an address nobody has
    is added on the lab's bridge): while prime holds the group its routes carry `src VIP` and the
    client sees datagrams from the VIP; after a standby prime's own address is the source again."""
    for name in ("prime", "calc"):                    # a default route to an address nobody has, on the lab's bridge
        lab.exec(name, ["ip", "route", "add", "default", "via", "10.77.0.254", "dev", "eth0"])
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 IPsrcaddr::{VIP}\n")
    until(lambda: f"src {VIP}" in default_route(lab, "prime"), 15, prime, calc)
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 5)
    assert holders(lab) == ["prime"]
    assert f"src {VIP}" in lab.exec("prime", ["ip", "-4", "route", "get", "10.77.0.3"]).stdout
    assert source_seen_by_client(lab, "prime") == VIP
    assert "src" not in default_route(lab, "calc")

    standby(lab, prime)                               # prime lets go: its own address is the source again
    until(lambda: f"src {VIP}" in default_route(lab, "calc") and holders(lab) == ["calc"], 10, prime, calc)
    until(lambda: f"src {VIP}" not in default_route(lab, "prime"), 5, prime, calc)
    assert "src 10.77.0.1" in default_route(lab, "prime")
    assert source_seen_by_client(lab, "prime") == lab.addr("prime")
    assert source_seen_by_client(lab, "calc") == VIP


# ---------------------------------------------------------------- SendArp

ARP_IP = "10.77.0.150"           # an address no node carries: only the agent's gratuitous ARP names it


def mac_of(lab, name):
    return lab.exec(name, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def client_neighbour(lab, address=ARP_IP):
    return lab.exec("client", ["ip", "neigh", "show", address]).stdout


@pytest.mark.parametrize("lab", THREE, indirect=True)
def test_sendarp_announces_the_address_from_the_holder(lab):
    """`SendArp::IP/eth0` for an address no node carries: the client (arp_accept on) learns it at
    prime's MAC from the agent's send_arp, then at calc's after a standby; the agent's pseudo-resource
    file is in each daemon's own HA_RSCTMP."""
    lab.exec("client", ["sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"])     # gratuitous ARP makes entries
    lab.exec("client", ["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 SendArp::{ARP_IP}/eth0\n")
    mac = {name: mac_of(lab, name) for name in ("prime", "calc")}
    until(lambda: mac["prime"] in client_neighbour(lab), 15, prime, calc)
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running", 5)
    assert os.path.exists(rsctmp(prime, f"SendArp_SendArp_{ARP_IP}"))    # ha_pseudo_resource in HA_RSCTMP
    assert ARP_IP not in lab.exec("prime", ["ip", "-4", "-o", "addr"]).stdout

    standby(lab, prime)                                # the stop kills send_arp; calc's start sends its own
    took = until(lambda: mac["calc"] in client_neighbour(lab), 10, prime, calc)
    print(f"\nstandby -> the client's neighbour entry for {ARP_IP} names calc after {took:.2f} s")
    until(lambda: not os.path.exists(rsctmp(prime, f"SendArp_SendArp_{ARP_IP}")), 5, prime, calc)
    assert os.path.exists(rsctmp(calc, f"SendArp_SendArp_{ARP_IP}"))


# ---------------------------------------------------------------- Delay, OCF::, ocf:

@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_delay_and_dummy_in_the_ocf_forms(lab):
    """ocf:heartbeat:Delay::startdelay=1::stopdelay=0::mondelay=0 (start sleeps 1 s), OCF::Dummy::lab
    (parameters from conf/OCF/Dummy/lab) and ocf:heartbeat:Dummy::state=... in one group.

    Not `Delay::1::0`: 3.0.6's wrapper cannot set mondelay, and Delay's monitor (which is what a
    status is, before every start, in 3.0.6 as here) sleeps mondelay, 30 s by default."""
    states = {form: os.path.join(lab.tmp, f"dummy-{form}.state") for form in ("conf", "inline")}
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 ocf:heartbeat:Delay::startdelay=1::stopdelay=0::mondelay=0 "
                               f"OCF::Dummy::lab ocf:heartbeat:Dummy::state={states['inline']}\n", start=False)
    for node in (prime, calc):
        os.makedirs(os.path.join(node.config_dir, "conf", "OCF", "Dummy"))
        node.write("conf/OCF/Dummy/lab", f"# the lab's Dummy\nOCF_RESKEY_state={states['conf']}\n")
        node.start()

    def delay_tracking(node):                         # ha_pseudo_resource's file, in the node's HA_RSCTMP
        found = glob.glob(rsctmp(node, "Delay_*"))
        return found[0] if found else None

    until(lambda: delay_tracking(prime), 15, prime, calc, interval=0.02)
    began = os.stat(delay_tracking(prime)).st_mtime    # touched just before the agent's `sleep 1`
    until(group_running(prime), 10, prime, calc, interval=0.02)
    seen = time.time()
    print(f"\nDelay start: group running {seen - began:.2f} s after the agent began sleeping")
    assert seen - began >= 1.0
    assert all(os.path.exists(path) for path in states.values())
    assert delay_tracking(calc) is None
    prime.stop()                                      # stopdelay 0: the release is not held up
    until(lambda: holders(lab) == ["calc"] and group_running(calc)(), 10, prime, calc)
    assert delay_tracking(calc) and all(os.path.exists(path) for path in states.values())


# ---------------------------------------------------------------- portblock

TCP_LISTEN = """
import socket, sys, threading
def serve(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(16)
    while True:
        sock.accept()[0].close()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
threading.Event().wait()
"""
TCP_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()
    print("open")
except OSError:
    print("blocked")
"""


# iptables 1.8.9 (Debian 12's) prints the protocol as a number in `iptables -n -L` (netfilter bug 1729,
# fixed in 1.8.10); resource-agents 4.12's portblock looks for "tcp" there, so it never finds its own rule:
# a block is never lifted (ClusterLabs/resource-agents#1924, in 4.14). Where the installed iptables does
# that, the agent runs with this shim first on PATH, which names the protocols again.
IPTABLES_SHIM = """#!/bin/sh
case " $* " in
*" -L "*) {iptables} "$@" | sed -E 's/^([A-Z]+ +)6( +--)/\\1tcp\\2/; s/^([A-Z]+ +)17( +--)/\\1udp\\2/' ;;
*) exec {iptables} "$@" ;;
esac
"""


def iptables_numeric_protocol(lab, host="client"):
    """True when this iptables lists a tcp rule's protocol as 6 (tried in a lab namespace)."""
    rule = ["INPUT", "-p", "tcp", "-m", "multiport", "--dports", "9", "-j", "DROP"]
    lab.exec(host, ["iptables", "-w", "-I", *rule])
    listed = lab.exec(host, ["iptables", "-w", "-n", "-L", "INPUT"]).stdout
    lab.exec(host, ["iptables", "-w", "-D", *rule])
    return any(line.split()[1:2] == ["6"] for line in listed.splitlines() if line.startswith("DROP"))


def reachable(lab, address, port):
    return lab.exec("client", [sys.executable, "-c", TCP_CONNECT, address, str(port)]).stdout.strip() == "open"


@pytest.mark.parametrize("lab", THREE, indirect=True)
def test_portblock_blocks_and_unblocks_with_the_group(lab):
    """portblock::tcp::8080::block drops connections to 8080 while the group runs (and lets them in
    after); portblock::tcp::8081::unblock does the opposite."""
    need("iptables")
    for name in ("prime", "calc"):
        lab.popen(name, [sys.executable, "-c", TCP_LISTEN, "8080", "8081"])
    prime_ip = lab.addr("prime")
    wait(lambda: reachable(lab, prime_ip, 8080) and reachable(lab, prime_ip, 8081), 5)
    env_path = None
    if iptables_numeric_protocol(lab):
        bindir = os.path.join(lab.tmp, "bin")
        os.makedirs(bindir)
        with open(os.path.join(bindir, "iptables"), "w") as handle:
            handle.write(IPTABLES_SHIM.format(iptables=shutil.which("iptables")))
        os.chmod(os.path.join(bindir, "iptables"), 0o755)
        env_path = f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 portblock::tcp::8080::block portblock::tcp::8081::unblock\n",
                          env_path=env_path)
    until(group_running(prime), 15, prime, calc)
    assert holders(lab) == ["prime"]
    rules = lab.exec("prime", ["iptables", "-S", "INPUT"]).stdout
    assert "--dports 8080" in rules and "-j DROP" in rules and "8081" not in rules, rules
    assert not reachable(lab, prime_ip, 8080) and not reachable(lab, VIP, 8080)
    assert reachable(lab, prime_ip, 8081) and reachable(lab, VIP, 8081)

    standby(lab, prime)                                  # stop: 8081 blocked (unblock's stop), 8080 unblocked
    until(lambda: holders(lab) == ["calc"] and group_running(calc)(), 10, prime, calc)
    until(lambda: "8081" in (rules := lab.exec("prime", ["iptables", "-S", "INPUT"]).stdout) and "8080" not in rules,
          5, prime, calc)
    assert reachable(lab, prime_ip, 8080) and not reachable(lab, prime_ip, 8081)
    assert not reachable(lab, VIP, 8080) and reachable(lab, VIP, 8081)        # now calc's rules


# ---------------------------------------------------------------- apache and its monitor

APACHE_CONF = """ServerRoot /etc/apache2
ServerName hbtest
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule status_module /usr/lib/apache2/modules/mod_status.so
Listen 8080
PidFile {tmp}/apache.pid
ErrorLog {tmp}/apache-error.log
User www-data
Group www-data
Mutex posixsem
DocumentRoot /usr/share/apache2
<Directory />
    AllowOverride None
</Directory>
<Location /server-status>
    SetHandler server-status
    Require all granted
</Location>
"""


def server_status(lab, host="client"):
    out = lab.exec(host, ["curl", "-s", "-m", "1", f"http://{VIP}:8080/server-status"], check=False).stdout
    return "Apache Server Status" in out


@pytest.mark.parametrize("lab", THREE, indirect=True)
def test_apache_killed_on_the_holder_is_restarted_in_place(lab):
    """apache listens on every address (`Listen 8080`), so the agent's status URL is
    http://localhost:8080/server-status: its curl runs with `--interface lo`, and to a VIP on eth0
    where nothing listens any more that curl hangs (no reset comes back) instead of failing at once."""
    need("apache2", "curl")
    config = os.path.join(lab.tmp, "apache.conf")
    with open(config, "w") as handle:
        handle.write(APACHE_CONF.format(vip=VIP, tmp=lab.tmp))
    pidfile = os.path.join(lab.tmp, "apache.pid")
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 apache::{config}\n",
                          settings="monitor apache interval=1s timeout=20s\n")
    until(lambda: server_status(lab), 20, prime, calc)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["last_result"] == "running", 10)
    assert holders(lab) == ["prime"]
    with open(pidfile) as handle:
        first = int(handle.read())
    assert lab.exec("prime", ["ip", "netns", "identify", str(first)]).stdout.strip() == lab.ns("prime")
    os.killpg(first, signal.SIGKILL)                  # the parent and its workers (it is their group leader)
    killed = time.monotonic()
    took = prime.wait_for(lambda s: s["monitors"][0]["restarts"] >= 1 and s["monitors"][0]["last_result"] == "running",
                          20)
    until(lambda: server_status(lab), 10, prime, calc)
    print(f"\napache killed on prime -> restarted in place, monitor running again after {took:.2f} s, "
          f"serving after {time.monotonic() - killed:.2f} s (interval 1 s)")
    with open(pidfile) as handle:
        second = int(handle.read())
    assert second != first
    assert holders(lab) == ["prime"] and prime.status()["groups"][0]["owner"] == "prime"
    assert lab.exec("prime", ["ip", "netns", "identify", str(second)]).stdout.strip() == lab.ns("prime")
    log = prime.log()
    assert "restarted in place" in log
    assert f"apache(apache_{config})[stop]: INFO: " in log        # the agent's own words, under its instance


# ---------------------------------------------------------------- MailTo

MAIL_RECORDER = """#!/bin/sh
# stands in for mail(1): one JSON line per mail (argv, stdin, the network namespace it ran in)
exec {python} -c '
import json, subprocess, sys
ns = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True).stdout.strip()
record = {{"argv": sys.argv[1:], "body": sys.stdin.read(), "netns": ns}}
with open("{log}", "a") as handle:
    handle.write(json.dumps(record) + "\\n")
' "$@"
"""


def mails(path):
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_mailto_sends_takeover_and_release_mails(lab):
    bindir, log = os.path.join(lab.tmp, "bin"), os.path.join(lab.tmp, "mails.jsonl")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "mail"), "w") as handle:
        handle.write(MAIL_RECORDER.format(python=sys.executable, log=log))
    os.chmod(os.path.join(bindir, "mail"), 0o755)
    prime, calc = cluster(lab, f"prime {VIP}/24/eth0 MailTo::ops@example.test::Cluster-alert\n",
                          env_path=f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")

    def sent(ns, word):
        return [m for m in mails(log) if m["netns"] == lab.ns(ns) and word in m["argv"][1]]

    until(lambda: sent("prime", "Takeover"), 15, prime, calc)
    first = sent("prime", "Takeover")[0]
    assert first["argv"][0] == "-s" and first["argv"][2] == "ops@example.test", first
    assert first["argv"][1].startswith("Cluster-alert Takeover in progress at "), first
    prime.stop()
    until(lambda: sent("calc", "Takeover"), 10, prime, calc)
    away = sent("prime", "Migrating resource away")
    assert away and away[0]["argv"][1].startswith("Cluster-alert Migrating resource away at ")
    assert away[0]["argv"][2] == "ops@example.test"
    assert [m["netns"] for m in mails(log)] == [lab.ns("prime")] * 2 + [lab.ns("calc")]


# ---------------------------------------------------------------- a cloud agent: awsvip

METADATA = """
import http.server, sys
node, mac = sys.argv[1], sys.argv[2]
PATHS = {"/latest/meta-data/instance-id": "i-" + node, "/latest/meta-data/mac": mac,
         f"/latest/meta-data/network/interfaces/macs/{mac}/interface-id": "eni-" + node}
class Metadata(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        data = body.encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_PUT(self):
        self.answer("token-" + node if self.path == "/latest/api/token" else "")
    def do_GET(self):
        self.answer(PATHS.get(self.path, ""))
    def log_message(self, *args):
        pass
http.server.HTTPServer(("169.254.169.254", 80), Metadata).serve_forever()
"""

AWS_STANDIN = """#!{python}
# stands in for the aws CLI: records argv and the OCF environment, keeps the "cloud" (which ENI holds
# which private IP) in a JSON file, and fails assign-private-ip-addresses for an ENI with a fail-ENI file
import fcntl, json, os, sys
LAB = {lab!r}
argv = sys.argv[1:]
with open(os.path.join(LAB, "aws-calls.jsonl"), "a") as handle:
    handle.write(json.dumps({{"argv": argv, "env": {{k: v for k, v in os.environ.items()
                                                   if k.startswith(("OCF_", "HA_"))}}}}) + "\\n")
def value(option):
    return argv[argv.index(option) + 1]
with open(os.path.join(LAB, "cloud.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    path = os.path.join(LAB, "cloud.json")
    cloud = {{}}
    if os.path.exists(path):
        with open(path) as handle:
            cloud = json.load(handle)
    command = argv[argv.index("ec2") + 1]
    if command == "describe-instances":
        eni = "eni-" + value("--instance-id")[2:]
        print("\\t".join(ip for ip, holder in cloud.items() if holder == eni))
    elif command == "assign-private-ip-addresses":
        eni = value("--network-interface-id")
        if os.path.exists(os.path.join(LAB, "fail-" + eni)):
            print("An error occurred (UnauthorizedOperation) (stand-in)", file=sys.stderr)
            sys.exit(255)
        cloud[value("--private-ip-addresses")] = eni
    elif command == "unassign-private-ip-addresses":
        if cloud.get(value("--private-ip-addresses")) == value("--network-interface-id"):
            del cloud[value("--private-ip-addresses")]
    else:
        sys.exit(252)
    with open(path + ".new", "w") as handle:
        json.dump(cloud, handle)
    os.replace(path + ".new", path)
"""
CLOUD_IP = "10.77.0.200"
METADATA_IP = "169.254.169.254"


def cloud(lab):
    path = os.path.join(lab.tmp, "cloud.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def aws_calls(lab):
    path = os.path.join(lab.tmp, "aws-calls.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def fake_cloud(lab):
    """EC2 metadata on 169.254.169.254 in prime's and calc's namespaces (on their loopback: neither
    has a default route, which is checked first) and the aws stand-in; its path."""
    need("curl")
    for name in ("prime", "calc"):
        assert default_route(lab, name) == "", "a lab namespace must have no way out"
        lab.exec(name, ["ip", "addr", "add", f"{METADATA_IP}/32", "dev", "lo"])
        lab.popen(name, [sys.executable, "-c", METADATA, name, mac_of(lab, name)])
    for name in ("prime", "calc"):
        wait(lambda name=name: lab.exec(name, ["curl", "-s", "-m", "1", f"http://{METADATA_IP}/latest/meta-data/instance-id"],
                                        check=False).stdout == f"i-{name}", 5)
    standin = os.path.join(lab.tmp, "aws")
    with open(standin, "w") as handle:
        handle.write(AWS_STANDIN.format(python=sys.executable, lab=lab.tmp))
    os.chmod(standin, 0o755)
    return standin


@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_awsvip_gets_its_parameters_and_its_failures_move_the_group(lab):
    """No cloud is reachable here: `aws` is a recording stand-in, and the EC2 metadata the agent asks
    with curl is served by the test on 169.254.169.254, an address of each node's own loopback, in
    namespaces without a default route. The stand-in refuses prime's assign: the start fails there and
    calc takes the group; allowed again, `takeover` brings it back to prime."""
    standin = fake_cloud(lab)
    open(os.path.join(lab.tmp, "fail-eni-prime"), "w").close()
    prime, calc = cluster(lab, f"prime ocf:heartbeat:awsvip::secondary_private_ip={CLOUD_IP}::awscli={standin}"
                               "::api_delay=0\n")
    until(lambda: cloud(lab) == {CLOUD_IP: "eni-calc"}, 20, prime, calc)
    calc.wait_for(lambda s: s["groups"][0]["state"] == "running" and s["groups"][0]["owner"] == "calc", 10)
    refused = [c for c in aws_calls(lab) if "assign-private-ip-addresses" in c["argv"]
               and "eni-prime" in c["argv"]]
    assert refused, aws_calls(lab)
    call = refused[0]
    assert call["argv"] == ["--profile", "default", "ec2", "assign-private-ip-addresses", "--network-interface-id",
                            "eni-prime", "--private-ip-addresses", CLOUD_IP, "--allow-reassignment"]
    assert call["env"]["OCF_RESKEY_secondary_private_ip"] == CLOUD_IP
    assert call["env"]["OCF_RESKEY_awscli"] == standin and call["env"]["OCF_RESKEY_api_delay"] == "0"
    assert call["env"]["OCF_ROOT"] == "/usr/lib/ocf" and call["env"]["OCF_RESOURCE_TYPE"] == "awsvip"
    assert call["env"]["OCF_RESOURCE_PROVIDER"] == "heartbeat" and call["env"]["OCF_RESOURCE_INSTANCE"]
    assert (call["env"]["OCF_RA_VERSION_MAJOR"], call["env"]["OCF_RA_VERSION_MINOR"]) == ("1", "0")
    assert int(call["env"]["OCF_RESKEY_CRM_meta_timeout"]) >= 1000          # milliseconds
    assert call["env"]["HA_RSCTMP"] == rsctmp(prime).rstrip("/")
    assert prime.status()["groups"][0]["owner"] == "calc"

    os.unlink(os.path.join(lab.tmp, "fail-eni-prime"))
    assert lab.exec("prime", prime.argv("takeover"), check=False).returncode == 0
    until(lambda: cloud(lab) == {CLOUD_IP: "eni-prime"}, 15, prime, calc)
    prime.wait_for(lambda s: s["groups"][0]["state"] == "running" and s["groups"][0]["owner"] == "prime", 10)
    assert any("unassign-private-ip-addresses" in c["argv"] and "eni-calc" in c["argv"] for c in aws_calls(lab))


@pytest.mark.parametrize("lab", TWO, indirect=True)
def test_awsvip_monitor_moves_the_group_when_the_ip_is_taken_and_cannot_be_taken_back(lab):
    """`monitor ocf:heartbeat:awsvip interval=1s migration-threshold=1` (the name is the word before
    its first `::`): the private IP is given to another instance behind the cluster's back and the
    stand-in refuses prime's assign from then on: the monitor says 7, the restart in place fails and
    the group moves to calc, whose assign takes the IP. (No cloud here either: see the test above.)"""
    standin = fake_cloud(lab)
    prime, calc = cluster(lab, f"prime ocf:heartbeat:awsvip::secondary_private_ip={CLOUD_IP}::awscli={standin}"
                               "::api_delay=0\n",
                          settings="monitor ocf:heartbeat:awsvip interval=1s migration-threshold=1\n")
    until(lambda: cloud(lab) == {CLOUD_IP: "eni-prime"}, 15, prime, calc)
    prime.wait_for(lambda s: s["monitors"] and s["monitors"][0]["last_result"] == "running", 10)
    open(os.path.join(lab.tmp, "fail-eni-prime"), "w").close()
    with open(os.path.join(lab.tmp, "cloud.json.new"), "w") as handle:          # as the stand-in writes it
        json.dump({CLOUD_IP: "eni-someone-else"}, handle)
    os.replace(os.path.join(lab.tmp, "cloud.json.new"), os.path.join(lab.tmp, "cloud.json"))
    took = until(lambda: cloud(lab) == {CLOUD_IP: "eni-calc"}, 15, prime, calc)
    print(f"\nprivate IP taken away -> assigned to calc's interface after {took:.2f} s (interval 1 s)")
    calc.wait_for(lambda s: s["groups"][0]["state"] == "running" and s["groups"][0]["owner"] == "calc", 10)
    state = prime.status()["monitors"][0]
    assert state["moved_away"] and state["failures"] >= 1
    assert "migration-threshold reached" in prime.log()

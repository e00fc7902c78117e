"""Install and operate: make install, the init script, the systemd unit, setup PEER over real ssh."""
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from conftest import HEARTBEAT, ROOT
from netns import Node, hacf, have_root_net

root_only = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")
INIT = os.path.join(ROOT, "init", "heartbeat")
FAST = dict(keepalive="200ms", deadtime="1", initdead="3")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# -- make install / uninstall ---------------------------------------------------------------

def test_make_install_into_destdir_keeps_existing_configuration(tmp_path):
    dest = str(tmp_path / "dest")
    run = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    expected = {"usr/sbin/heartbeat.py": 0o755, "etc/init.d/heartbeat": 0o755, "etc/ha.d/authkeys": 0o600,
                "etc/ha.d/ha.cf": 0o644, "etc/ha.d/haresources": 0o644, "etc/logrotate.d/heartbeat": 0o644,
                "usr/lib/systemd/system/heartbeat.service": 0o644,
                "etc/ha.d/notify.d/syslog": 0o644, "etc/ha.d/notify.d/mail": 0o644}     # hooks off until chmod +x
    for path, wanted in expected.items():
        assert mode(os.path.join(dest, path)) == wanted, path
    version = subprocess.run([os.path.join(dest, "usr/sbin/heartbeat.py"), "--version"], capture_output=True,
                             text=True, timeout=10)
    assert version.returncode == 0 and "heartbeat.py" in version.stdout
    hacf_path = os.path.join(dest, "etc/ha.d/ha.cf")
    with open(hacf_path, "a") as handle:
        handle.write("# mine\n")
    again = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}"], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and "keeping existing /etc/ha.d/ha.cf" in again.stdout
    with open(hacf_path) as handle:
        assert handle.read().endswith("# mine\n")
    state = os.path.join(dest, "var/lib/heartbeat")
    os.makedirs(state)
    for name in ("heartbeat.pyc", "hb_uuid"):      # as a daemon that ran leaves them
        with open(os.path.join(state, name), "wb") as handle:
            handle.write(b"\0" * 16)
    gone = subprocess.run(["make", "-s", "-C", ROOT, "uninstall", f"DESTDIR={dest}"], capture_output=True,
                          text=True, timeout=60)
    assert gone.returncode == 0
    assert not os.path.exists(os.path.join(state, "heartbeat.pyc"))      # program, not state
    assert os.path.exists(os.path.join(state, "hb_uuid"))                # the node's identity stays
    for path in ("usr/sbin/heartbeat.py", "etc/init.d/heartbeat", "usr/lib/systemd/system/heartbeat.service",
                 "etc/logrotate.d/heartbeat"):
        assert not os.path.exists(os.path.join(dest, path)), path
    assert os.path.exists(hacf_path) and os.path.exists(os.path.join(dest, "etc/ha.d/authkeys"))


def test_install_with_another_prefix_points_the_unit_and_init_script_there(tmp_path):
    dest = str(tmp_path / "dest")
    subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/opt/hb"], check=True,
                   capture_output=True, timeout=60)
    with open(os.path.join(dest, "etc/init.d/heartbeat")) as handle:
        assert "HEARTBEAT=${HEARTBEAT:-/opt/hb/sbin/heartbeat.py}" in handle.read()
    with open(os.path.join(dest, "opt/hb/lib/systemd/system/heartbeat.service")) as handle:
        unit = handle.read()
    assert "ExecStart=/opt/hb/sbin/heartbeat.py daemon --foreground" in unit


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    with open(os.path.join(ROOT, "init", "heartbeat.service")) as handle:
        unit = handle.read().replace("/usr/sbin/heartbeat.py", HEARTBEAT)
    path = tmp_path / "heartbeat.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "ExecStartPre=" in unit and "check" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_init_script_headers():
    with open(INIT) as handle:
        text = handle.read()
    assert "# chkconfig: 2345" in text and "### BEGIN INIT INFO" in text and "# Provides:          heartbeat" in text
    assert subprocess.run(["sh", "-n", INIT], timeout=10).returncode == 0


# -- the init script against a real daemon ---------------------------------------------------


def service(lab, node, action, timeout=60):
    node.write("nodeinfo", node.name + "\n")        # the init script runs without --node, as on a real host
    env = ["env", f"HEARTBEAT={HEARTBEAT}", f"CONFIG_DIR={node.config_dir}", f"STATE_DIR={node.state_dir}",
           f"RUN_DIR={node.run_dir}", "STOP_TIMEOUT=20",
           f"PATH={os.path.dirname(sys.executable)}:/usr/sbin:/usr/bin:/sbin:/bin"]
    return lab.exec(node.name, [*env, "sh", INIT, action], check=False, timeout=timeout)


def pid_of(node):
    with open(os.path.join(node.run_dir, "heartbeat.pid")) as handle:
        return int(handle.read())


@root_only
def test_init_script_start_status_reload_restart_stop(lab):
    prime = Node(lab, "prime", hacf(**FAST), haresources="prime 10.77.0.100/24/eth0\n")
    assert service(lab, prime, "status").returncode == 3
    assert service(lab, prime, "stop").returncode == 0              # stopping a stopped service is fine
    started = service(lab, prime, "start")
    assert started.returncode == 0 and "Starting High-Availability services: Done." in started.stdout
    first = pid_of(prime)
    assert service(lab, prime, "start").returncode == 0             # already running: success, one daemon
    assert pid_of(prime) == first
    status = service(lab, prime, "status")
    assert status.returncode == 0 and str(first) in status.stdout
    assert service(lab, prime, "reload").returncode == 0
    prime.write("ha.cf", hacf(**FAST) + "keepalive 2s\n")
    broken = service(lab, prime, "reload")
    assert broken.returncode == 6 and "NOT reloaded" in broken.stdout and "ha.cf:" in broken.stderr
    assert service(lab, prime, "status").returncode == 0
    prime.write("ha.cf", hacf(**FAST))
    assert service(lab, prime, "restart").returncode == 0
    second = pid_of(prime)
    assert second != first and not os.path.exists(f"/proc/{first}")
    deadline = time.monotonic() + 10
    while "10.77.0.100" not in lab.exec("prime", ["ip", "-4", "-o", "addr"]).stdout:
        assert time.monotonic() < deadline, "the VIP never came up"
        time.sleep(0.1)
    stopped = service(lab, prime, "stop")
    assert stopped.returncode == 0 and "Done." in stopped.stdout
    assert not os.path.exists(f"/proc/{second}")                   # stop waited for the daemon to exit
    assert "10.77.0.100" not in lab.exec("prime", ["ip", "-4", "-o", "addr"]).stdout
    assert service(lab, prime, "status").returncode == 3
    assert service(lab, prime, "bogus").returncode == 2


@root_only
def test_init_script_refuses_a_broken_configuration(lab):
    prime = Node(lab, "prime", hacf(**FAST) + "deadtime 100ms\n")
    result = service(lab, prime, "start")
    assert result.returncode == 6
    assert f"{prime.config_dir}/ha.cf:" in result.stderr and "Dead time" in result.stderr
    assert service(lab, prime, "status").returncode == 3


@root_only
def test_init_script_refuses_the_shipped_sample_key(lab):
    with open(os.path.join(ROOT, "ha.d", "authkeys")) as handle:
        prime = Node(lab, "prime", hacf(**FAST), authkeys=handle.read())
    result = service(lab, prime, "start")
    assert result.returncode == 6
    assert f"{prime.config_dir}/authkeys:15: key 2 is public" in result.stderr
    assert "heartbeat.py keygen --force" in result.stderr and "test-ha" not in result.stdout + result.stderr
    assert service(lab, prime, "status").returncode == 3


# -- setup PEER against a real OpenSSH server ------------------------------------------------

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


class Peer:
    """sshd in calc's namespace, with its own hostname, /root and a private view of the config's parent."""

    def __init__(self, lab, hostname, client_home, parent):
        self.dir = os.path.join(lab.tmp, "sshd")
        self.store = os.path.join(self.dir, "store")        # what the peer sees at `parent`
        self.root = os.path.join(self.dir, "root")           # the peer's /root
        for path in (self.store, os.path.join(self.root, ".ssh")):
            os.makedirs(path)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(self.dir, "host")],
                       check=True, timeout=30)
        os.makedirs(os.path.join(client_home, ".ssh"), mode=0o700, exist_ok=True)
        self.identity = os.path.join(client_home, ".ssh", "id_ed25519")
        if not os.path.exists(self.identity):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.identity], check=True,
                           timeout=30)
        shutil.copy(self.identity + ".pub", os.path.join(self.root, ".ssh", "authorized_keys"))
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as handle:
            handle.write(f"ListenAddress 10.77.0.2\nPort 22\nHostKey {self.dir}/host\nPermitRootLogin yes\n"
                         f"PidFile {self.dir}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
                         "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
                         "Subsystem sftp /usr/lib/openssh/sftp-server\n")
        script = (f"mount --make-rprivate / && hostname {hostname} && mount --bind {self.root} /root && "
                  f"mount --bind {self.store} {parent} && mkdir -p /run/sshd && exec {SSHD} -D -e -f {config}")
        self.proc = lab.popen("calc", ["unshare", "--mount", "--uts", "sh", "-c", script],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while lab.exec("calc", ["sh", "-c", "ss -ltn | grep -q 10.77.0.2:22"], check=False).returncode != 0:
            assert time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.1)


@pytest.fixture()
def ssh_lab(lab):
    if not SSHD:
        pytest.skip("openssh-server is not installed")
    return lab


def setup_cmd(lab, node, home, *args, host="10.77.0.2", timeout=60):
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", f"IdentityFile={home}/.ssh/id_ed25519", "-o", "ConnectTimeout=3", "-o", "BatchMode=yes"]
    return lab.exec(node.name, ["env", f"HOME={home}", *node.argv("setup", *args, "--host", host, *options)],
                    check=False, timeout=timeout)


@root_only
def test_setup_copies_the_configuration_with_modes_and_replaces_the_old_one(ssh_lab, tmp_path):
    lab, home = ssh_lab, str(tmp_path / "home")
    prime = Node(lab, "prime", hacf(**FAST), haresources="prime 10.77.0.100/24/eth0\n")
    peer = Peer(lab, "calc", home, os.path.dirname(prime.config_dir))
    os.makedirs(os.path.join(peer.store, "ha.d"))
    with open(os.path.join(peer.store, "ha.d", "old-file"), "w") as handle:
        handle.write("stale\n")
    result = setup_cmd(lab, prime, home, "calc")
    assert result.returncode == 0, result.stderr
    copied = os.path.join(peer.store, "ha.d")
    assert sorted(os.listdir(copied)) == sorted(os.listdir(prime.config_dir))
    assert mode(os.path.join(copied, "authkeys")) == 0o600
    with open(os.path.join(copied, "ha.cf")) as theirs, open(os.path.join(prime.config_dir, "ha.cf")) as ours:
        assert theirs.read() == ours.read()
    assert [n for n in os.listdir(peer.store) if n != "ha.d"] == []         # no .new-/.old- leftovers
    assert "copied" in result.stdout


@root_only
def test_setup_keys_are_exchanged_once(ssh_lab, tmp_path):
    lab, home = ssh_lab, str(tmp_path / "home")
    prime = Node(lab, "prime", hacf(**FAST))
    peer = Peer(lab, "calc", home, os.path.dirname(prime.config_dir))
    for _ in range(2):
        result = setup_cmd(lab, prime, home, "calc", "--keys")
        assert result.returncode == 0, result.stderr
    with open(os.path.join(peer.root, ".ssh", "authorized_keys")) as handle:
        theirs = handle.read().splitlines()
    with open(os.path.join(home, ".ssh", "id_ed25519.pub")) as handle:
        ours = handle.read().strip()
    assert theirs.count(ours) == 1
    with open(os.path.join(peer.root, ".ssh", "id_ed25519.pub")) as handle:
        peer_key = handle.read().strip()
    with open(os.path.join(home, ".ssh", "authorized_keys")) as handle:
        assert handle.read().splitlines().count(peer_key) == 1
    assert peer_key.startswith("ssh-ed25519 ")


@root_only
def test_setup_refuses_a_peer_with_another_name_and_copies_nothing(ssh_lab, tmp_path):
    lab, home = ssh_lab, str(tmp_path / "home")
    prime = Node(lab, "prime", hacf(**FAST))
    peer = Peer(lab, "other", home, os.path.dirname(prime.config_dir))
    result = setup_cmd(lab, prime, home, "calc")
    assert result.returncode != 0 and "says its name is 'other'" in result.stderr
    assert os.listdir(peer.store) == []


@root_only
@pytest.mark.parametrize("peer_has_one", [True, False])
def test_setup_never_copies_our_nodeinfo_and_keeps_the_peers(ssh_lab, tmp_path, peer_has_one):
    lab, home = ssh_lab, str(tmp_path / "home")
    prime = Node(lab, "prime", hacf(**FAST))
    prime.write("nodeinfo", "prime\n")
    peer = Peer(lab, "calc", home, os.path.dirname(prime.config_dir))
    theirs = os.path.join(peer.store, "ha.d", "nodeinfo")
    if peer_has_one:
        os.makedirs(os.path.dirname(theirs))
        with open(theirs, "w") as handle:
            handle.write("calc\n")
    result = setup_cmd(lab, prime, home, "calc")
    assert result.returncode == 0, result.stderr
    if peer_has_one:
        with open(theirs) as handle:
            assert handle.read() == "calc\n"
    else:
        assert not os.path.exists(theirs)
    assert os.path.exists(os.path.join(peer.store, "ha.d", "ha.cf"))


@root_only
@pytest.mark.parametrize("how", ["hostname", "nodeinfo"])
def test_setup_refuses_a_peer_that_would_run_with_our_name(ssh_lab, tmp_path, how):
    lab, home = ssh_lab, str(tmp_path / "home")
    prime = Node(lab, "prime", hacf(**FAST))
    peer = Peer(lab, "prime" if how == "hostname" else "calc", home, os.path.dirname(prime.config_dir))
    if how == "nodeinfo":
        os.makedirs(os.path.join(peer.store, "ha.d"))
        with open(os.path.join(peer.store, "ha.d", "nodeinfo"), "w") as handle:
            handle.write("Prime\n")
    before = sorted(os.listdir(peer.store))
    result = setup_cmd(lab, prime, home, "calc")
    assert result.returncode != 0 and "would run as 'prime', the name of this node" in result.stderr
    assert sorted(os.listdir(peer.store)) == before


@root_only
def test_setup_unreachable_peer_fails_quickly_and_clearly(lab, tmp_path):
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".ssh"))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(home, ".ssh", "id_ed25519")],
                   check=True, timeout=30)
    prime = Node(lab, "prime", hacf(**FAST))
    started = time.monotonic()
    result = setup_cmd(lab, prime, home, "calc", host="10.77.0.9")
    assert result.returncode != 0 and "failed" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 20


def test_setup_refusals_and_dry_run(tmp_path):
    conf = tmp_path / "ha.d"
    (conf / "resource.d").mkdir(parents=True)
    (conf / "ha.cf").write_text(hacf(**FAST))
    (conf / "authkeys").write_text("auth 1\n1 sha1 k\n")
    os.chmod(conf / "authkeys", 0o600)
    (conf / "haresources").write_text("")

    def setup(*args):
        return subprocess.run([sys.executable, HEARTBEAT, "setup", *args, "-c", str(conf), "--node", "prime"],
                              capture_output=True, text=True, timeout=30)
    assert "not a node" in setup("other").stderr
    assert "this node" in setup("prime").stderr
    dry = setup("calc", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.splitlines()[0].startswith("ssh ") and "\nscp -r -p " in dry.stdout
    assert "dry run: nothing was run" in dry.stdout
    (conf / "ha.cf").write_text(hacf(**FAST) + "keepalive 2s\n")
    broken = setup("calc")
    assert broken.returncode == 6 and "ha.cf:" in broken.stderr

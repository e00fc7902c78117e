"""setup PEER against a real OpenSSH server: sshd in calc's namespace (root)."""
import os
import shutil
import stat
import subprocess
import time

import pytest

from netns import Node, hacf, have_root_net

root_only = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")
FAST = dict(keepalive="200ms", deadtime="1", initdead="3")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


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

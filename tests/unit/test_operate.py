"""Install and operate without root: make install, the systemd unit, the init script's headers, and
setup's refusals and dry run. The init script against a real daemon: tests/lab/test_operate_init.py;
setup PEER over real ssh: tests/interop/test_operate_setup.py."""
import os
import shutil
import stat
import subprocess
import sys

import pytest

from netns import hacf
from paths import HEARTBEAT, ROOT

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

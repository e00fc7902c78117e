"""The init script (init/heartbeat) against a real daemon in a network namespace (root)."""
import os
import sys
import time

import pytest

from netns import Node, hacf, have_root_net
from paths import HEARTBEAT, ROOT

root_only = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")
INIT = os.path.join(ROOT, "init", "heartbeat")
FAST = dict(keepalive="200ms", deadtime="1", initdead="3")



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

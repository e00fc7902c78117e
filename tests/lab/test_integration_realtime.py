"""ha.cf's `realtime` and `rtprio` for real (root): the daemon runs SCHED_RR and locked in memory, as
Heartbeat 3.0.6 does with the same ha.cf (realtime defaults to on; 3.0.6's cl_make_realtime: SCHED_RR
at rtprio, by default the policy's lowest priority, 1, then mlockall), while the resource scripts it
runs are normal processes: SCHED_OTHER, nothing locked. `realtime off` leaves it all as it was."""
import os
import re

import pytest

from netns import Node, hacf, have_root_net, wait

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

# A resource.d script that writes down how it was scheduled and what it had locked, then says running.
RECORDER = """#!/bin/sh
case "$2" in
start) { chrt -p $$; grep VmLck /proc/$$/status; } > "$1/child.tmp" && mv "$1/child.tmp" "$1/child-$HA_CURHOST"
       echo started ;;
stop) rm -f "$1/child-$HA_CURHOST" ;;
status) [ -f "$1/child-$HA_CURHOST" ] && echo running || echo stopped ;;
esac
exit 0
"""


def locked_kib(pid):
    with open(f"/proc/{pid}/status") as handle:
        return int(re.search(r"^VmLck:\s+(\d+) kB", handle.read(), re.M).group(1))


def policies(pid):
    """(policy without SCHED_RESET_ON_FORK, priority) of every thread of pid."""
    tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    return {(os.sched_getscheduler(t) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(t).sched_priority) for t in tids}


@pytest.mark.parametrize("lab", [("prime",)], indirect=True)
@pytest.mark.parametrize("line, policy, priority", [("", os.SCHED_RR, 1), ("rtprio 5\n", os.SCHED_RR, 5),
                                                    ("realtime off\n", os.SCHED_OTHER, 0)],
                         ids=["default", "rtprio", "off"])
def test_the_daemon_runs_realtime_and_locked_and_its_scripts_do_not(lab, line, policy, priority):
    text = hacf(nodes=("prime", "calc"), keepalive="200ms", deadtime="1", initdead="2", extra=line)
    prime = Node(lab, "prime", text, haresources="prime recorder::" + lab.tmp + "\n",
                 resource_scripts={"recorder": RECORDER}).start()
    child = os.path.join(lab.tmp, "child-prime")
    wait(lambda: os.path.exists(child), 20)     # after initdead it takes its group
    pid = prime.proc.pid
    assert policies(pid) == {(policy, priority)}, prime.log()[-2000:]
    if policy == os.SCHED_RR:
        assert locked_kib(pid) > 1024 and f"pid {pid} locked in memory." in prime.log()
    else:
        assert locked_kib(pid) == 0
    with open(child) as handle:
        recorded = handle.read()
    assert "scheduling policy: SCHED_OTHER" in recorded and re.search(r"VmLck:\s+0 kB", recorded), recorded
    assert prime.stop() == 0

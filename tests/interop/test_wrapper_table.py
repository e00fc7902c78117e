"""heartbeat.py's table of Heartbeat 3.0.6's resource.d names (HEARTBEAT_WRAPPERS) against 3.0.6's own
wrappers, run for real (root; Debian's heartbeat package installs them in /etc/ha.d/resource.d).

Each wrapper sources hto-mapfuncs, sets OCF_RESKEY_* and OCF_RESOURCE_INSTANCE from its positional
arguments and runs /usr/lib/ocf/resource.d/heartbeat/NAME, a path written into hto-mapfuncs. Here it
runs in a private mount namespace with a recording agent bound over that directory, so what the
wrapper hands the agent is written down and compared with what heartbeat.py gives the same agent.
Facts seen this way: AudibleAlarm's nodelist keeps a trailing blank (`echo $* | sed 's%OP$%%'`),
which the agent's `for` loop ignores, so values are compared without surrounding blanks, and an empty
one when no node is given; Delay without arguments names its instance Delay_10 but never exports the
10 it sets, so the agent waits its own default (30 s); WinPopup exports hostfile=hosts; a wrapper given
too few or too many arguments prints its usage and exits 1 without running the agent.
"""
import os
import shutil
import subprocess

import pytest

import heartbeat as hb
from netns import with_binds
from realhb import have_real_heartbeat

WRAPPERS = "/etc/ha.d/resource.d"
AGENTS = os.path.join(hb.OCF_ROOT, "resource.d", "heartbeat")
pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or not have_real_heartbeat() or shutil.which("unshare") is None,
                                 reason="needs root, unshare and Debian's heartbeat package"),
              pytest.mark.xdist_group("wrappers")]

RECORDER = """#!/bin/sh
env | grep -E '^OCF_(RESKEY_|RESOURCE_INSTANCE=)' > "$RECORD"
echo "$1" >> "$RECORD.actions"
exit 0
"""

CASES = [      # one word per wrapper at least; every optional argument left out once
    "AudibleAlarm", "AudibleAlarm::prime::calc",
    "Delay", "Delay::3", "Delay::1::0",
    "Filesystem::/dev/drbd0::/data", "Filesystem::/dev/drbd0::/data::ext4",
    "Filesystem::srv:/data1::/data1::nfs::ro",
    "ICP::c1::/dev/sdb", "IPsrcaddr::10.9.0.5", "LVM::vg0", "LinuxSCSI::0:0:1:0",
    "MailTo::root@localhost", "MailTo::root@localhost::Failover", "Raid1::/etc/raidtab::/dev/md0",
    "SendArp::10.9.0.5/eth0", "ServeRAID::1::2", "WAS", "WAS::9080", "WinPopup", "WinPopup::/etc/winhosts",
    "Xinetd::tftp", "apache", "apache::/etc/apache2/apache2.conf", "db2::db2inst1",
    "ids", "ids::/opt/informix::ifx1::onconfig.ifx1", "portblock::tcp::80,443::block",
]
REFUSED = ["Filesystem::/dev/drbd0", "IPsrcaddr", "IPsrcaddr::a::b", "MailTo", "portblock::tcp::80",
           "Delay::1::2::3", "ids::/opt/informix", "Xinetd"]


def run_wrapper(tmp_path, word):
    """3.0.6's wrapper for word with its start operation, the recorder standing in for every agent:
    (exit code, {variable: value} the agent was given, or None when it never ran)."""
    agents = tmp_path / "agents"
    if not agents.exists():
        agents.mkdir()
        os.symlink(os.path.join(hb.OCF_ROOT, "lib", "heartbeat", "ocf-shellfuncs"), agents / ".ocf-shellfuncs")
        for name in hb.HEARTBEAT_WRAPPERS:
            (agents / name).write_text(RECORDER)
            (agents / name).chmod(0o755)
    record = tmp_path / "record"
    for path in (record, tmp_path / "record.actions"):
        if path.exists():
            path.unlink()
    name, _, args = word.partition("::")
    argv = with_binds([os.path.join(WRAPPERS, name), *(args.split("::") if args else []), "start"],
                      [(str(agents), AGENTS)])
    done = subprocess.run(argv, env=dict(os.environ, RECORD=str(record)), capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL, cwd=tmp_path)
    if not record.exists():
        return done.returncode, None
    variables = dict(line.split("=", 1) for line in record.read_text().splitlines())
    return done.returncode, {k: v.strip() for k, v in variables.items()}


def ours(word):
    """What heartbeat.py gives the agent for word (the table alone: the real agents are not needed)."""
    name, _, args = word.partition("::")
    wrapper = hb.HEARTBEAT_WRAPPERS[name]
    params = hb.wrapper_params(name, wrapper, args.split("::") if args else [])
    variables = {hb.RESKEY_PREFIX + k: v for k, v in params.items()}
    variables["OCF_RESOURCE_INSTANCE"] = hb.wrapper_instance(wrapper, params)
    return variables


def test_every_wrapper_of_306_is_in_the_table_or_built_in():
    names = set(os.listdir(WRAPPERS)) - {"hto-mapfuncs"}
    assert names == set(hb.HEARTBEAT_WRAPPERS) | {"IPaddr", "IPaddr2", "IPv6addr", "OCF"}
    assert {word.partition("::")[0] for word in CASES} == set(hb.HEARTBEAT_WRAPPERS)


@pytest.mark.parametrize("word", CASES)
def test_the_agent_gets_from_heartbeat_py_what_it_got_from_306s_wrapper(tmp_path, word):
    code, given = run_wrapper(tmp_path, word)
    assert code == 0 and given is not None, f"3.0.6's wrapper did not run the agent for {word}"
    assert ours(word) == given


@pytest.mark.parametrize("word", REFUSED)
def test_a_word_306s_wrapper_refuses_is_refused(tmp_path, word):
    code, given = run_wrapper(tmp_path, word)
    assert code != 0 and given is None
    name, _, args = word.partition("::")
    with pytest.raises(ValueError, match=f"^{name} takes "):
        hb.wrapper_params(name, hb.HEARTBEAT_WRAPPERS[name], args.split("::") if args else [])

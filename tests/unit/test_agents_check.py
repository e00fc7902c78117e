"""`heartbeat.py check` on haresources words that name OCF resource agents (issue 25), against the
real agents of Debian's resource-agents (/usr/lib/ocf/resource.d/heartbeat): an unknown agent, too few
`::` arguments for a 3.0.6 resource.d wrapper, a missing required parameter and an unknown parameter
name are refused at PATH:LINE:; a failing `validate-all` is only a `warning:`. No root needed.

The agents' validate-all runs on this host here, so only agents whose validate-all touches nothing
and asks no network are used (never a cloud agent: awsvip and friends ask 169.254.169.254)."""
import os
import re

import pytest

from fakes import common, run, write

AGENTS = "/usr/lib/ocf/resource.d/heartbeat"
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(AGENTS, "Filesystem")),
                                reason=f"needs Debian's resource-agents ({AGENTS})")

VIP = "192.168.77.100/24/eth0"


def check(confdir, tmp_path, *lines):
    """check -c CONFDIR for prime with haresources = the tutorial's first line followed by LINES
    (so LINES start at line 2); (result, haresources path)."""
    path = write(confdir, "haresources", f"prime {VIP} apache2\n" + "".join(f"{line}\n" for line in lines))
    return run("check", *common(confdir, tmp_path)), path


def refused_at(result, path, line, *words, located=True):
    """A non-zero exit, with a PATH:LINE: message naming each of WORDS, and no traceback; located: the
    message is not the one for a word that names no agent at all ("Cannot locate resource script")."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0, result.stdout
    messages = [m for m in result.stderr.splitlines() if m.startswith(f"{path}:{line}:")]
    assert messages, f"no {path}:{line}: message in:\n{result.stderr}"
    assert any(all(word in m for word in words) for m in messages), (words, messages)
    if located:
        assert not any("Cannot locate" in m or "is not a resource script name" in m for m in messages), messages


@pytest.mark.parametrize("word, named", [
    ("Filesystem::/dev/x", "Filesystem"),                      # DEVICE::DIRECTORY[::FSTYPE] wanted
    ("IPsrcaddr", "IPsrcaddr"),                                # IPsrcaddr::IP wanted
    ("SendArp", "SendArp"),                                    # SendArp::IP/NIC wanted
    ("portblock::tcp::80", "portblock"),                       # tcp::PORTS::block|unblock wanted
    ("MailTo", "MailTo"),                                      # MailTo::EMAIL wanted
])
def test_too_few_wrapper_arguments_are_refused_at_their_line(confdir, tmp_path, word, named):
    result, path = check(confdir, tmp_path, f"calc {word}")
    refused_at(result, path, 2, named)


def test_unknown_agent_is_refused(confdir, tmp_path):
    result, path = check(confdir, tmp_path, "calc ocf:heartbeat:NoSuchAgent")
    refused_at(result, path, 2, "NoSuchAgent", located=False)


def test_unknown_provider_is_refused(confdir, tmp_path):
    result, path = check(confdir, tmp_path, "calc ocf:nosuchprovider:Dummy")
    refused_at(result, path, 2, "nosuchprovider", located=False)


def test_unknown_parameter_name_is_refused(confdir, tmp_path):
    result, path = check(confdir, tmp_path, f"calc ocf:heartbeat:Dummy::state={tmp_path}/dummy.state::bogus=1")
    refused_at(result, path, 2, "bogus")


def test_missing_required_parameter_is_refused(confdir, tmp_path):
    """Filesystem's meta-data marks device, directory and fstype required."""
    result, path = check(confdir, tmp_path, "calc ocf:heartbeat:Filesystem::device=/dev/x::fstype=ext4")
    refused_at(result, path, 2, "directory")


def test_every_bad_line_is_reported_with_its_own_line_number(confdir, tmp_path):
    result, path = check(confdir, tmp_path, "calc Filesystem::/dev/x", "calc ocf:heartbeat:NoSuchAgent",
                         f"calc ocf:heartbeat:Dummy::state={tmp_path}/d.state::bogus=1", "calc IPsrcaddr")
    for line, word in ((2, "Filesystem"), (3, "NoSuchAgent"), (4, "bogus"), (5, "IPsrcaddr")):
        refused_at(result, path, line, word, located=line != 3)


def test_wrapper_and_ocf_words_that_are_right_pass(confdir, tmp_path):
    """Each form of issue 25, well formed: check says the configuration is valid (exit 0)."""
    os.makedirs(os.path.join(confdir, "conf", "OCF", "Dummy"))
    write(os.path.join(confdir, "conf", "OCF", "Dummy"), "mine", f"OCF_RESKEY_state={tmp_path}/mine.state\n")
    # a PidFile of its own: without one, apache's validate-all makes the directory of its default pid
    # file, /run/apache2-apache_<this file's path>/, on this host
    apache_conf = write(str(tmp_path), "apache.conf", f"Listen 127.0.0.1:8080\nPidFile {tmp_path}/apache.pid\n")
    result, path = check(confdir, tmp_path,
                         f"calc 192.168.77.101/24/eth0 Filesystem::/dev/x::{tmp_path}/mnt::ext4 "
                         "IPsrcaddr::192.168.77.101 SendArp::192.168.77.101/eth0 Delay::1::0 "
                         "portblock::tcp::8080::block portblock::tcp::8080::unblock "
                         f"apache::{apache_conf} MailTo::root@localhost::Failover "
                         f"ocf:heartbeat:Dummy::state={tmp_path}/dummy.state OCF::Dummy::mine")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert "configuration valid for node prime" in result.stdout
    assert not re.search(rf"^{re.escape(path)}:\d+: (?!warning:)", result.stderr, re.M), result.stderr


@pytest.mark.parametrize("word, named", [
    ("Delay::abc::0", "Delay"),                               # Delay's validate-all: not a number (exit 2)
    ("apache::/nonexistent/hbtest/httpd.conf", "apache"),     # no such configuration file (exit 5)
])
def test_failing_validate_all_is_a_warning_not_an_error(confdir, tmp_path, word, named):
    """(The brief's example, Filesystem on a device that does not exist, is not one: Filesystem's
    validate-all only logs "Couldn't find device" and exits 0.)"""
    result, path = check(confdir, tmp_path, f"calc {word}")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    warnings = [m for m in out.splitlines() if "warning:" in m.lower() and named in m]
    assert warnings, out

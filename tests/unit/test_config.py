"""Unit tests for the configuration readers: ha.cf, authkeys, haresources and the three together.

The expected behaviour is real Heartbeat 3.0.6's (shared/reference/heartbeat-v1.md, sections
(e), (f), (g)), plus heartbeat.py's documented extensions (warnings for ignored directives,
host names as IP resources). No root needed.
"""
import importlib.util
import gzip
import os
import re
import shutil

import pytest

import heartbeat as hb
from paths import TUTORIAL

DEBIAN_DOC = "/usr/share/doc/heartbeat"
DEBIAN_HACF = os.path.join(DEBIAN_DOC, "ha.cf.gz")

# A minimal valid ha.cf that the directive tests extend.
BASE = "node prime calc\nbcast eth0\nkeepalive 2\ndeadtime 10\nauto_failback on\n"


# ---------------------------------------------------------------- helpers

def write(directory, name, text, mode=0o600):
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


def hacf(tmp_path, text):
    return hb.parse_hacf(write(tmp_path, "ha.cf", text))


def hacf_errors(tmp_path, text):
    """(lineno, message) of every error parse_hacf reports for TEXT."""
    path = write(tmp_path, "ha.cf", text)
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_hacf(path)
    for err in info.value.errors:
        assert isinstance(err, hb.ConfigError)
        assert err.path == path
    return [(e.lineno, e.message) for e in info.value.errors]


def authkeys(tmp_path, text, mode=0o600):
    return hb.parse_authkeys(write(tmp_path, "authkeys", text, mode))


def authkeys_errors(tmp_path, text, mode=0o600):
    path = write(tmp_path, "authkeys", text, mode)
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_authkeys(path)
    assert all(e.path == path for e in info.value.errors)
    return [(e.lineno, e.message) for e in info.value.errors]


def make_script(directory, name, mode=0o755):
    os.makedirs(str(directory), exist_ok=True)
    return write(directory, name, "#!/bin/sh\nexit 0\n", mode)


@pytest.fixture
def script_dirs(tmp_path):
    """[resource.d, init.d] in a tmp dir: apache2 and hbdummy in resource.d, dummysvc in init.d."""
    rd, initd = tmp_path / "resource.d", tmp_path / "init.d"
    make_script(rd, "apache2")
    make_script(rd, "hbdummy")
    make_script(initd, "dummysvc")
    return [str(rd), str(initd)]


def haresources(tmp_path, text, script_dirs, nodes=("prime", "calc")):
    return hb.parse_haresources(write(tmp_path, "haresources", text), list(nodes), script_dirs)


def haresources_errors(tmp_path, text, script_dirs, nodes=("prime", "calc")):
    path = write(tmp_path, "haresources", text)
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_haresources(path, list(nodes), script_dirs)
    assert all(e.path == path for e in info.value.errors)
    return [(e.lineno, e.message) for e in info.value.errors]


def warning_lines(cfg, word):
    return [w.lineno for w in cfg.warnings if word in w.message]


# ---------------------------------------------------------------- parse_time_ms / parse_bool

@pytest.mark.parametrize("text, ms", [
    ("2", 2000), ("10", 10000), ("0.5", 500), ("1.5", 1500), (".5", 500), ("2.", 2000),
    ("1500ms", 1500), ("1500 ms", 1500), ("500000us", 500), ("500000usec", 500),
    ("250000 us", 250), (" 3 ", 3000), ("0", 0),
])
def test_parse_time_ms_accepts_heartbeat_times(text, ms):
    assert hb.parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["2s", "2 s", "2sec", "", "ms", "-1", "1e3", "two", "1.2.3", "2m", "0x10", "1,5"])
def test_parse_time_ms_refuses_other_forms(text):
    with pytest.raises(ValueError):
        hb.parse_time_ms(text)


@pytest.mark.parametrize("word", ["true", "on", "yes", "y", "1", "TRUE", "On", "YES", "Y"])
def test_parse_bool_true_words(word):
    assert hb.parse_bool(word) is True


@pytest.mark.parametrize("word", ["false", "off", "no", "n", "0", "FALSE", "Off", "NO", "N"])
def test_parse_bool_false_words(word):
    assert hb.parse_bool(word) is False


@pytest.mark.parametrize("word", ["maybe", "", "2", "enable", "onn", "t", "f"])
def test_parse_bool_refuses_other_words(word):
    with pytest.raises(ValueError):
        hb.parse_bool(word)


# ---------------------------------------------------------------- ha.cf: every directive

def _medium(cfg, kind, iface):
    return [m for m in cfg.media if m.kind == kind and m.iface == iface]


# name -> (value written after the name, check on the parsed HaCf). Ignored, CRM-only and refused
# directives are checked by their support class below; every entry of DIRECTIVES must be here.
ACCEPTED = {
    "node": ("alpha", lambda c: c.nodes == ["prime", "calc", "alpha"]),
    "bcast": ("eth1", lambda c: len(_medium(c, "bcast", "eth1")) == 1),
    "mcast": ("eth1 225.0.0.1 694 1 0",
              lambda c: [(m.group, m.port, m.ttl, m.loop) for m in _medium(c, "mcast", "eth1")]
              == [("225.0.0.1", 694, 1, False)]),
    "ucast": ("eth1 10.0.0.2", lambda c: [m.peers for m in _medium(c, "ucast", "eth1")] == [("10.0.0.2",)]),
    "ucast6": ("eth1 FE80:0::2", lambda c: [m.peers for m in _medium(c, "ucast6", "eth1")] == [("fe80::2",)]),
    "mcast6": ("eth1 ff12::1:2:3:4 694 1 0",
               lambda c: [(m.group, m.port, m.ttl, m.loop) for m in _medium(c, "mcast6", "eth1")]
               == [("ff12::1:2:3:4", 694, 1, False)]),
    "keepalive": ("1500ms", lambda c: c.keepalive_ms == 1500),
    "deadtime": ("20", lambda c: c.deadtime_ms == 20000),
    "warntime": ("6", lambda c: c.warntime_ms == 6000),
    "initdead": ("30", lambda c: c.initdead_ms == 30000),
    "udpport": ("695", lambda c: c.udpport == 695),
    "auto_failback": ("off", lambda c: c.auto_failback == "off"),
    "nice_failback": ("on", lambda c: c.auto_failback == "legacy"),
    "logfile": ("/var/log/ha-log", lambda c: c.logfile == "/var/log/ha-log"),
    "debugfile": ("/var/log/ha-debug", lambda c: c.debugfile == "/var/log/ha-debug"),
    "logfacility": ("daemon", lambda c: c.logfacility == "daemon"),
    "debug": ("3", lambda c: c.debug == 3),
    "syslogmsgfmt": ("false", lambda c: c.syslogmsgfmt is False),
    "cluster": ("web", lambda c: c.cluster == "web"),
    "hopfudge": ("2", lambda c: c.hopfudge == 2),
    "msgfmt": ("netstring", lambda c: c.msgfmt == "netstring"),
    "log_badpack": ("off", lambda c: c.log_badpack is False),
    "hbgenmethod": ("time", lambda c: c.hbgenmethod == "time"),
    "uuidfrom": ("nodename", lambda c: c.uuidfrom == "nodename"),
    "autojoin": ("other", lambda c: c.autojoin == "other"),
    "max_rexmit_delay": ("500", lambda c: c.max_rexmit_delay_ms == 500),
    "env": ("HA_SITE=north", lambda c: c.env == {"HA_SITE": "north"}),
    "watchdog": ("/dev/watchdog", lambda c: c.watchdog == "/dev/watchdog"),    # parsed, not opened
    # accepted with a warning: no effect in heartbeat.py
    "deadping": ("30", lambda c: c.deadping_ms == 30000),
    "realtime": ("off", lambda c: c.realtime is False),
    "rtprio": ("5", lambda c: c.rtprio == 5),
    "coredumps": ("off", None),
    "coreroot": ("/var/lib/heartbeat/cores", None),
    "memreserve": ("1000", None),
    "compression": ("bz2", None),
    "compression_threshold": ("2", None),
    "traditional_compression": ("no", None),
    "use_logd": ("yes", None),
    "conn_logd_time": ("60", None),
    "baud": ("19200", None),
    "ping": ("10.10.10.254", lambda c: [(p.name, p.addresses) for p in c.ping_nodes]
             == [("10.10.10.254", ("10.10.10.254",))]),
    "ping6": ("2001:db8::fe", lambda c: [(p.name, p.addresses) for p in c.ping_nodes]
              == [("2001:db8::fe", ("2001:db8::fe",))]),
    "ping_group": ("group1 10.10.10.254 10.10.10.253", lambda c: [(p.name, p.addresses, p.group) for p in c.ping_nodes]
                   == [("group1", ("10.10.10.254", "10.10.10.253"), True)]),
    "respawn": ("hacluster /usr/lib/heartbeat/ipfail", lambda c: c.ipfail),
    "apiauth": ("ipfail gid=haclient uid=hacluster", None),
    "failfast": ("hacluster", None),
    "stonith": ("baytech /etc/ha.d/conf/stonith.baytech", lambda c: [(s.host, s.plugin, s.config_file)
                for s in c.stonith_lines] == [("*", "baytech", "/etc/ha.d/conf/stonith.baytech")]),
    "stonith_host": ("* baytech 10.0.0.3 mylogin mysecretpassword", lambda c: [(s.host, s.plugin, s.params)
                     for s in c.stonith_lines] == [("*", "baytech", "10.0.0.3 mylogin mysecretpassword")]),
    # CRM: off is fine, the others only warn
    "crm": ("off", None),
    "pacemaker": ("off", None),
    "use_apphbd": ("yes", None),
    "quorum_server": ("quorum.example.com", None),
    "crm_daemon_dir": ("/usr/lib/pacemaker", None),
    "crmd_spawns_pengine": ("yes", None),
    "record_config_changes": ("on", None),
    "record_pengine_inputs": ("on", None),
    "enable_config_writes": ("on", None),
    # refused media / features: an error at their line
    "serial": ("/dev/ttyS0", None),
    "hbaping": ("fc-card-name", None),
    "openais": ("/etc/ais/openais.conf", None),
}


def test_accepted_table_covers_every_directive():
    assert set(ACCEPTED) == set(hb.DIRECTIVE_BY_NAME)
    assert len(hb.DIRECTIVE_BY_NAME) == len(hb.DIRECTIVES)


@pytest.mark.parametrize("directive", [d for d in hb.DIRECTIVES if d.support == "yes"], ids=lambda d: d.name)
def test_supported_directive_accepted(tmp_path, directive):
    value, check = ACCEPTED[directive.name]
    cfg = hacf(tmp_path, BASE + f"{directive.name} {value}\n")
    assert check(cfg), (directive.name, cfg)
    assert cfg.lines[directive.name] == 6
    if directive.name in ("stonith", "stonith_host"):      # a device's password is no HA_* variable
        assert directive.name not in cfg.values
    else:
        assert cfg.values[directive.name] == value


@pytest.mark.parametrize("directive", [d for d in hb.DIRECTIVES if d.support == "ignored"], ids=lambda d: d.name)
def test_ignored_directive_warns_at_its_line(tmp_path, directive):
    value, _ = ACCEPTED[directive.name]
    cfg = hacf(tmp_path, BASE + f"{directive.name} {value}\n")
    assert warning_lines(cfg, f"'{directive.name}'") == [6]
    assert all(w.message.startswith("warning: ") for w in cfg.warnings)


@pytest.mark.parametrize("directive", [d for d in hb.DIRECTIVES if d.support == "crm"
                                       and d.name not in ("crm", "pacemaker")], ids=lambda d: d.name)
def test_crm_only_directive_warns(tmp_path, directive):
    value, _ = ACCEPTED[directive.name]
    cfg = hacf(tmp_path, BASE + f"{directive.name} {value}\n")
    lines = [w.lineno for w in cfg.warnings if directive.name in w.message and "CRM" in w.message]
    assert lines == [6]


@pytest.mark.parametrize("line", ["crm off", "crm no", "crm false", "crm 0", "pacemaker off", "pacemaker no"])
def test_crm_off_is_fine(tmp_path, line):
    cfg = hacf(tmp_path, BASE + line + "\n")
    assert not [w for w in cfg.warnings if "crm" in w.message.lower() or "pacemaker" in w.message.lower()]


@pytest.mark.parametrize("line", ["crm on", "crm yes", "crm respawn", "crm true", "pacemaker on", "pacemaker respawn"])
def test_crm_on_is_an_error(tmp_path, line):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert len(errors) == 1
    assert errors[0][0] == 6
    assert line.split()[0] in errors[0][1] and "off" in errors[0][1]


@pytest.mark.parametrize("directive", [d for d in hb.DIRECTIVES if d.support == "refused"], ids=lambda d: d.name)
def test_refused_directive_is_an_error(tmp_path, directive):
    value, _ = ACCEPTED[directive.name]
    errors = hacf_errors(tmp_path, BASE + f"{directive.name} {value}\n")
    assert len(errors) == 1 and errors[0][0] == 6
    assert directive.name in errors[0][1]


@pytest.mark.parametrize("name", ["serial", "hbaping"])
def test_refused_media_are_refused(name):
    assert hb.DIRECTIVE_BY_NAME[name].support == "refused"


@pytest.mark.parametrize("line, message", [
    ("ucast6 eth0", "ucast6 [eth0] missing ucast6 address"),
    ("ucast6 eth0 10.0.0.2", "not an IPv6 address"),
    ("ucast6 eth0 ff02::1", "multicast, unspecified and loopback cannot be peers"),
    ("ucast6 eth0 ::1", "multicast, unspecified and loopback cannot be peers"),
    ("ucast6 eth0 fe80::2%eth1", "the scope must be the device (eth0)"),
    ("mcast6 eth0 ff12::1:2:3:4 694 1", "mcast6 takes five values"),
    ("mcast6 eth0 ff0e::1:2 694 1 0", "is not a multicast address of link-, admin-, site- or organization-local"),
    ("mcast6 eth0 ff11::1:2 694 1 0", "is not a multicast address of link-"),          # interface-local
    ("mcast6 eth0 ff32::1:2 694 1 0", "is not a multicast address of link-"),          # flags 3.0.6 refuses
    ("mcast6 eth0 ff12:: 694 1 0", "is not a multicast address of link-"),             # all zeros after scope
    ("mcast6 eth0 fd00::1 694 1 0", "is not a multicast address"),
    ("mcast6 eth0 ff12::1:2 694 5 0", "bad hops [5]: a number from 0 to 4"),
    ("mcast6 eth0 ff12::1:2 nosuchservice 1 0", "neither a number nor a UDP service name"),
    ("mcast6 eth0 ff12::1:2 694 1 2", "mcast6 loop '2' must be 0 or 1"),
])
def test_ipv6_media_refused_as_3_0_6_refuses_them(tmp_path, line, message):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert len(errors) == 1 and errors[0][0] == 6 and message in errors[0][1], errors


def test_ucast6_takes_one_peer_and_ignores_the_rest_with_a_warning(tmp_path):
    cfg = hacf(tmp_path, BASE + "ucast6 eth0 fd00::2 fd00::3\n")
    assert [m.peers for m in cfg.media if m.kind == "ucast6"] == [("fd00::2",)]
    assert any("fd00::3 ignored" in w.message for w in cfg.warnings)


def test_refused_medium_does_not_count_as_a_medium(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nserial /dev/ttyS0\n")
    assert [line for line, _ in errors] == [2, 0]
    assert "No heartbeat media defined" in errors[1][1]


# ---------------------------------------------------------------- ha.cf: grammar

def test_unknown_directive(tmp_path):
    errors = hacf_errors(tmp_path, BASE + "frobnicate 3\n")
    assert errors == [(6, "Illegal directive [frobnicate]")]


@pytest.mark.parametrize("name", ["Keepalive", "KEEPALIVE", "Node", "BCAST"])
def test_directive_names_are_case_sensitive_with_a_hint(tmp_path, name):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\n" + f"{name} 1\n")
    assert len(errors) == 1 and errors[0][0] == 3
    assert errors[0][1].startswith(f"Illegal directive [{name}]")
    assert f"'{name.lower()}'" in errors[0][1] and "case-sensitive" in errors[0][1]


@pytest.mark.parametrize("directive", ["keepalive", "deadtime", "warntime", "initdead", "deadping"])
@pytest.mark.parametrize("value", ["2s", "two", "-1", "0"])
def test_bad_time_values(tmp_path, directive, value):
    errors = hacf_errors(tmp_path, BASE + f"{directive} {value}\n")
    assert [line for line, _ in errors if line == 6] == [6]
    assert any(directive in msg or value in msg for line, msg in errors if line == 6)


@pytest.mark.parametrize("line, bound", [("keepalive 3601", "keepalive must be more than 0 and at most 3600 seconds"),
                                         ("deadtime 86401", "deadtime must be more than 0 and at most 86400 seconds"),
                                         ("warntime 86400001ms", "warntime must be more than 0 and at most 86400 s"),
                                         ("initdead 90000", "initdead must be more than 0 and at most 86400 seconds"),
                                         ("deadping 86401", "deadping must be more than 0 and at most 86400 seconds"),
                                         ("deadtime 99999999999999999999999", "more than a year"),
                                         ("keepalive " + "9" * 400, "is more than a year"),
                                         ("deadtime " + "9" * 400 + "ms", "'99999999999999999999...' is more")],
                         ids=lambda value: value[:30])
def test_times_past_their_bound_are_errors_at_their_line(tmp_path, line, bound):
    """3.0.6 takes any positive time that fits a C long (its glib timers wrap at 49.7 days): no
    working cluster waits that long; past the float range it was an OverflowError traceback here."""
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert len(errors) == 1 and errors[0][0] == 6 and bound in errors[0][1], errors


def test_times_at_their_bound_are_accepted(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 3600\ndeadtime 86400\nwarntime 86400000ms\n"
                         "initdead 86400\ndeadping 86400\n")
    assert (cfg.keepalive_ms, cfg.deadtime_ms, cfg.initdead_ms) == (3600000, 86400000, 86400000)


@pytest.mark.parametrize("line", ["udpport " + "9" * 5000, "debug " + "1" * 19, "max_rexmit_delay " + "9" * 400],
                         ids=lambda line: line[:30])
def test_ints_too_long_for_a_number_are_errors_at_their_line(tmp_path, line):
    """Python's int() refuses more than 4300 digits with its own words: the directive's bound is said."""
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert len(errors) == 1 and errors[0][0] == 6 and "must be a whole number from" in errors[0][1], errors


@pytest.mark.parametrize("args", ["eth0 225.0.0.1 " + "6" * 5000 + " 1 0", "eth0 225.0.0.1 694 " + "1" * 5000 + " 0"],
                         ids=["port", "ttl"])
def test_mcast_numbers_too_long_are_errors_not_a_crash(tmp_path, args):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\n" + f"mcast {args}\n")
    assert [e[0] for e in errors] == [3]


def test_time_forms_in_hacf(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 500ms\ndeadtime 2.5\nwarntime 1500000us\ninitdead 10\n")
    assert (cfg.keepalive_ms, cfg.deadtime_ms, cfg.warntime_ms, cfg.initdead_ms) == (500, 2500, 1500, 10000)


@pytest.mark.parametrize("line", ["syslogmsgfmt maybe", "log_badpack 2", "realtime sometimes",
                                  "coredumps enable", "nice_failback perhaps", "auto_failback maybe"])
def test_bad_booleans(tmp_path, line):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert [e[0] for e in errors] == [6]


@pytest.mark.parametrize("line", ["udpport 0", "udpport 65536", "udpport abc", "udpport -1", "debug 256",
                                  "debug -1", "hopfudge 256", "max_rexmit_delay 0", "rtprio 100",
                                  "compression_threshold 0", "udpport 69.4"])
def test_out_of_range_ints(tmp_path, line):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert [e[0] for e in errors] == [6]
    assert line.split()[0] in errors[0][1]


@pytest.mark.parametrize("line", ["udpport 1", "udpport 65535", "debug 0", "debug 255", "hopfudge 0",
                                  "hopfudge 255", "max_rexmit_delay 1"])
def test_int_bounds_accepted(tmp_path, line):
    name, value = line.split()
    cfg = hacf(tmp_path, BASE + line + "\n")
    assert getattr(cfg, hb.DIRECTIVE_BY_NAME[name].field) == int(value)


def test_every_directive_in_ms_reaches_its_ms_field(tmp_path):
    """A time, or a number of milliseconds, is stored in the HaCf field named with _ms."""
    in_ms = [d for d in hb.DIRECTIVES if d.kind == "time" or d.in_ms]
    assert "max_rexmit_delay" in [d.name for d in in_ms]
    for directive in in_ms:
        value = 60 if directive.name == "initdead" else 3          # initdead is at least deadtime
        cfg = hacf(tmp_path, f"node prime calc\nbcast eth0\nkeepalive 1\ndeadtime 30\n{directive.name} {value}\n")
        assert directive.field == directive.name + "_ms"
        assert getattr(cfg, directive.field) == value * (1 if directive.kind == "int" else 1000), directive.name


def test_a_directive_in_ms_without_its_field_stops_the_table_being_built():
    """Before, _apply_value dropped the value of a time directive without a NAME_ms field."""
    fields = {field.name for field in hb.dataclasses.fields(hb.HaCf)}
    hb.check_directive_fields(hb.DIRECTIVES, fields)
    for directive in (hb.Directive("resend", "time", "1s", "new"),
                      hb.Directive("max_rexmit_delay", "int", "250", "ms", low=1, high=60000, in_ms=True)):
        with pytest.raises(AssertionError, match=f"HaCf has no field {directive.name}_ms"):
            hb.check_directive_fields([directive], fields - {"max_rexmit_delay_ms"})


@pytest.mark.parametrize("line", ["logfacility local8", "msgfmt xml", "hbgenmethod random", "uuidfrom disk",
                                  "autojoin some", "autojoin any"])
def test_bad_choices(tmp_path, line):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert [e[0] for e in errors] == [6]


@pytest.mark.parametrize("facility", hb.SYSLOG_FACILITIES)
def test_every_syslog_facility(tmp_path, facility):
    assert hacf(tmp_path, BASE + f"logfacility {facility}\n").logfacility == facility


@pytest.mark.parametrize("args, word", [
    ("eth0 225.0.0.1 694 1", "five values"),
    ("eth0 225.0.0.1 694 1 0 7", "five values"),
    ("eth0", "five values"),
    ("eth0 10.0.0.1 694 1 0", "multicast"),
    ("eth0 240.0.0.1 694 1 0", "multicast"),
    ("eth0 225.0.0 694 1 0", "IPv4"),
    ("eth0 mcastgroup 694 1 0", "IPv4"),
    ("eth0 225.0.0.1 0 1 0", "port"),
    ("eth0 225.0.0.1 65536 1 0", "port"),
    ("eth0 225.0.0.1 http 1 0", "port"),
    ("eth0 225.0.0.1 694 0 0", "ttl"),
    ("eth0 225.0.0.1 694 256 0", "ttl"),
    ("eth0 225.0.0.1 694 x 0", "ttl"),
    ("eth0 225.0.0.1 694 1 2", "loop"),
    ("eth0 225.0.0.1 694 1 yes", "loop"),
])
def test_mcast_errors(tmp_path, args, word):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\n" + f"mcast {args}\n")
    assert [e[0] for e in errors] == [3]
    assert word in errors[0][1]


@pytest.mark.parametrize("args", ["eth0 225.0.0.1 \u00b2 1 0", "eth0 225.0.0.1 694 \u00b2 0"])
def test_mcast_non_ascii_digit_is_a_config_error(tmp_path, args):
    """'\u00b2' (superscript two) passes str.isdigit() but is no number: a config error, not a crash."""
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\n" + f"mcast {args}\n")
    assert [e[0] for e in errors] == [3]


def test_mcast_every_bad_value_reported(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nmcast eth0 10.0.0.1 0 0 9\n")
    assert [e[0] for e in errors] == [3, 3, 3, 3]
    text = " ".join(m for _, m in errors)
    for word in ("multicast", "port", "ttl", "loop"):
        assert word in text


def test_mcast_valid_with_loop(tmp_path):
    cfg = hacf(tmp_path, "node prime\nmcast eth1 239.255.0.9 6940 32 1\n")
    (medium,) = cfg.media
    assert (medium.kind, medium.iface, medium.group, medium.port, medium.ttl, medium.loop) == \
        ("mcast", "eth1", "239.255.0.9", 6940, 32, True)


def test_ucast_without_peer(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nucast eth1\n")
    assert [e[0] for e in errors] == [3]
    assert "peer" in errors[0][1]


def test_ucast_with_peer_name(tmp_path):
    cfg = hacf(tmp_path, "node prime calc\nucast eth1 calc\n")
    assert [(m.kind, m.iface, m.peers) for m in cfg.media] == [("ucast", "eth1", ("calc",))]


def test_bcast_bad_interface_name(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0/1\n")
    assert errors[0][0] == 2 and "interface" in errors[0][1]


def test_nice_failback_is_legacy_with_warning(tmp_path):
    cfg = hacf(tmp_path, "node prime calc\nbcast eth0\nnice_failback on\n")
    assert cfg.auto_failback == "legacy"
    assert warning_lines(cfg, "nice_failback") == [3]
    assert "auto_failback" in [w for w in cfg.warnings if w.lineno == 3][0].message


def test_nice_failback_off_is_legacy_too(tmp_path):
    cfg = hacf(tmp_path, "node prime calc\nbcast eth0\nnice_failback off\n")
    assert cfg.auto_failback == "legacy"
    assert warning_lines(cfg, "nice_failback") == [3]


@pytest.mark.parametrize("value, expected", [
    ("on", "on"), ("off", "off"), ("legacy", "legacy"), ("ON", "on"), ("Legacy", "legacy"),
    ("true", "on"), ("yes", "on"), ("y", "on"), ("1", "on"), ("TRUE", "on"),
    ("false", "off"), ("no", "off"), ("n", "off"), ("0", "off"), ("No", "off"),
])
def test_auto_failback_boolean_synonyms(tmp_path, value, expected):
    assert hacf(tmp_path, f"node prime\nbcast eth0\nauto_failback {value}\n").auto_failback == expected


def test_auto_failback_default_legacy_warns(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\n")
    assert cfg.auto_failback == "legacy"
    assert any("legacy" in w.message for w in cfg.warnings)


def test_auto_failback_on_does_not_warn_about_legacy(tmp_path):
    cfg = hacf(tmp_path, BASE)
    assert not any("legacy" in w.message for w in cfg.warnings)


def test_several_nodes_per_line_commas_and_case(tmp_path):
    cfg = hacf(tmp_path, "node Prime calc\nnode sigma,delta\tepsilon , zeta\nbcast eth0\n")
    assert cfg.nodes == ["prime", "calc", "sigma", "delta", "epsilon", "zeta"]


def test_duplicate_node_warns_once(tmp_path):
    cfg = hacf(tmp_path, "node prime calc\nnode PRIME\nbcast eth0\n")
    assert cfg.nodes == ["prime", "calc"]
    assert warning_lines(cfg, "prime") == [2]


def test_bcast_several_interfaces_are_several_media(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0 eth1\nbcast eth2,eth3\n")
    assert [(m.kind, m.iface, m.lineno) for m in cfg.media] == [
        ("bcast", "eth0", 2), ("bcast", "eth1", 2), ("bcast", "eth2", 3), ("bcast", "eth3", 3)]


def test_scalar_last_value_wins(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 3 2\ndeadtime 30\ndeadtime 20\n")
    assert cfg.keepalive_ms == 2000
    assert cfg.deadtime_ms == 20000


def test_comments_anywhere_on_a_line(tmp_path):
    cfg = hacf(tmp_path, (
        "# leading comment\n"
        "   # indented comment\n"
        "node prime#calc\n"
        "node calc   # the peer\n"
        "bcast eth0# eth1\n"
        "keepalive 2#000\n"
        "deadtime 10 # seconds\n"
        "auto_failback on#off\n"
        "logfile /var/log/ha-log#x\n"
        "\n"
        "\t\n"
        "#keepalive 5\n"
    ))
    assert cfg.nodes == ["prime", "calc"]
    assert [m.iface for m in cfg.media] == ["eth0"]
    assert (cfg.keepalive_ms, cfg.deadtime_ms) == (2000, 10000)
    assert cfg.auto_failback == "on"
    assert cfg.logfile == "/var/log/ha-log"


def test_tabs_crlf_and_leading_whitespace(tmp_path):
    cfg = hacf(tmp_path, "\tnode\tprime\r\n  bcast\teth0\r\nkeepalive\t2\r\ndeadtime 10\r\n")
    assert cfg.nodes == ["prime"] and [m.iface for m in cfg.media] == ["eth0"]
    assert (cfg.keepalive_ms, cfg.deadtime_ms) == (2000, 10000)


def test_directive_without_value(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nkeepalive\n")
    assert [e[0] for e in errors] == [3]


@pytest.mark.parametrize("line", ["env NOEQUALS", "env 1X=2", "env =value"])
def test_env_needs_name_equals_value(tmp_path, line):
    assert [e[0] for e in hacf_errors(tmp_path, BASE + line + "\n")] == [6]


# ---------------------------------------------------------------- ha.cf: timers

def test_deadtime_must_exceed_twice_keepalive(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nkeepalive 2\ndeadtime 4\n")
    assert len(errors) == 1 and errors[0][0] == 4
    assert "Dead time [4000] is too small compared to keepalive [2000]" in errors[0][1]


def test_deadtime_just_above_twice_keepalive_is_fine(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 2\ndeadtime 4001ms\n")
    assert cfg.deadtime_ms == 4001


def test_deadtime_check_uses_keepalive_line_when_deadtime_is_default(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nkeepalive 15\n")
    assert len(errors) == 1 and errors[0][0] == 3
    assert "Dead time [30000]" in errors[0][1]


def test_initdead_smaller_than_deadtime(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\nbcast eth0\nkeepalive 2\ninitdead 5\ndeadtime 10\n")
    assert errors == [(4, "Initial dead time [5000] is smaller than deadtime [10000]")]


def test_initdead_below_ten_seconds_only_warns(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 1\ndeadtime 3\ninitdead 5\n")
    assert cfg.initdead_ms == 5000
    assert warning_lines(cfg, "Initial dead time") == [5]


@pytest.mark.parametrize("keepalive, deadtime, initdead_ms", [
    ("1", "30", 30000),        # > 10 s: deadtime itself
    ("1", "11", 11000),
    ("1", "10001ms", 10001),
    ("2", "10", 20000),        # 6..10 s: twice deadtime
    ("1", "8", 16000),
    ("1", "6", 12000),
    ("1", "5999ms", 12000),    # < 6 s: 12 s
    ("2", "5", 12000),
    ("1", "3", 12000),
    ("100ms", "1", 12000),
])
def test_initdead_default_rule(tmp_path, keepalive, deadtime, initdead_ms):
    cfg = hacf(tmp_path, f"node prime\nbcast eth0\nkeepalive {keepalive}\ndeadtime {deadtime}\n")
    assert cfg.initdead_ms == initdead_ms


def test_initdead_default_with_default_deadtime(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\n")
    assert (cfg.keepalive_ms, cfg.deadtime_ms, cfg.warntime_ms, cfg.initdead_ms) == (1000, 30000, 15000, 30000)


@pytest.mark.parametrize("deadtime, warntime_ms", [("10", 5000), ("7", 3500), ("15", 7500), ("3001ms", 1500)])
def test_warntime_default_is_half_deadtime(tmp_path, deadtime, warntime_ms):
    cfg = hacf(tmp_path, f"node prime\nbcast eth0\nkeepalive 1\ndeadtime {deadtime}\n")
    assert cfg.warntime_ms == warntime_ms


def test_explicit_warntime_kept(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 1\ndeadtime 10\nwarntime 7\n")
    assert cfg.warntime_ms == 7000
    assert not cfg.warnings or not warning_lines(cfg, "warntime")


def test_warntime_not_below_deadtime_warns(tmp_path):
    cfg = hacf(tmp_path, "node prime\nbcast eth0\nkeepalive 1\ndeadtime 10\nwarntime 12\n")
    assert warning_lines(cfg, "warntime") == [5]


# ---------------------------------------------------------------- ha.cf: whole-file errors

def test_no_nodes(tmp_path):
    errors = hacf_errors(tmp_path, "bcast eth0\n")
    assert len(errors) == 1 and errors[0][0] == 0 and errors[0][1].startswith("no nodes defined")


def test_no_media(tmp_path):
    errors = hacf_errors(tmp_path, "node prime\n")
    assert len(errors) == 1 and errors[0][0] == 0 and errors[0][1].startswith("No heartbeat media defined")


def test_empty_file(tmp_path):
    errors = hacf_errors(tmp_path, "")
    assert sorted(m.split(" (")[0] for _, m in errors) == ["No heartbeat media defined", "no nodes defined"]


def test_missing_hacf(tmp_path):
    path = str(tmp_path / "ha.cf")
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_hacf(path)
    (err,) = info.value.errors
    assert (err.path, err.lineno) == (path, 0)
    assert str(err).startswith(path + ": ")


def test_all_errors_of_a_file_at_once(tmp_path):
    text = (
        "# a file with one problem on most lines\n"   # 1
        "node prime calc\n"                             # 2
        "Keepalive 2\n"                                 # 3
        "keepalive 2s\n"                                # 4
        "bcast eth0\n"                                  # 5
        "udpport 0\n"                                   # 6
        "mcast eth0 225.0.0.1 694 1\n"                  # 7
        "\n"                                            # 8
        "ucast eth1\n"                                  # 9
        "auto_failback maybe   # comment\n"             # 10
        "serial /dev/ttyS0\n"                           # 11
        "crm on\n"                                      # 12
        "frob\n"                                        # 13
        "deadtime 10\n"                                 # 14
        "initdead 5\n"                                  # 15
    )
    errors = hacf_errors(tmp_path, text)
    assert [line for line, _ in errors] == [3, 4, 6, 7, 9, 10, 11, 12, 13, 15]
    messages = dict(errors)
    assert "Keepalive" in messages[3]
    assert "2s" in messages[4]
    assert "Initial dead time" in messages[15]


def test_config_error_str_format(tmp_path):
    path = write(tmp_path, "ha.cf", "node prime\nbcast eth0\nfrob\n")
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_hacf(path)
    assert str(info.value.errors[0]) == f"{path}:3: Illegal directive [frob]"
    assert str(hb.ConfigError(path, 0, "x")) == f"{path}: x"
    assert str(info.value) == f"{path}:3: Illegal directive [frob]"


# ---------------------------------------------------------------- Debian's sample ha.cf

def _debian_hacf_text():
    if not os.path.exists(DEBIAN_HACF):
        pytest.skip("Debian's heartbeat package is not installed (apt-get install heartbeat)")
    with gzip.open(DEBIAN_HACF, "rt", encoding="utf-8") as handle:
        return handle.read()


def test_debian_sample_hacf_as_is(tmp_path):
    errors = hacf_errors(tmp_path, _debian_hacf_text())
    # Only logfacility and auto_failback are active in the sample: no node, no medium.
    assert sorted((line, msg.split(" (")[0]) for line, msg in errors) == [
        (0, "No heartbeat media defined"), (0, "no nodes defined")]


def test_debian_sample_hacf_with_node_and_medium(tmp_path):
    cfg = hacf(tmp_path, _debian_hacf_text() + "node prime calc\nbcast eth0\n")
    assert cfg.logfacility == "local0" and cfg.auto_failback == "on"
    assert (cfg.keepalive_ms, cfg.deadtime_ms, cfg.warntime_ms, cfg.initdead_ms) == (1000, 30000, 15000, 30000)


# Words that appear as `#word value` in the sample without being ha.cf directives, with the reason.
# (None today: every such line of Debian's 3.0.6 sample is a commented-out directive.)
SAMPLE_NON_DIRECTIVES = {}
SAMPLE_EXAMPLE_RE = re.compile(r"^#([a-z_]+)\s")


def test_debian_sample_commented_directives_are_known():
    names = {m.group(1) for m in map(SAMPLE_EXAMPLE_RE.match, _debian_hacf_text().splitlines()) if m}
    # sanity: the regex does find the sample's examples
    assert {"keepalive", "deadtime", "serial", "bcast", "mcast", "ucast", "apiauth", "compression"} <= names
    unknown = names - set(hb.DIRECTIVE_BY_NAME) - set(SAMPLE_NON_DIRECTIVES)
    assert not unknown


def test_debian_sample_examples_are_not_illegal_directives(tmp_path):
    """Uncommenting any example line must never give 'Illegal directive' (values may be placeholders)."""
    for line in _debian_hacf_text().splitlines():
        match = SAMPLE_EXAMPLE_RE.match(line)
        if not match or match.group(1) in SAMPLE_NON_DIRECTIVES:
            continue
        path = write(tmp_path, "ha.cf", "node prime\nbcast eth0\n" + line[1:] + "\n")
        try:
            hb.parse_hacf(path)
        except hb.ConfigErrors as err:
            assert not [e for e in err.errors if "Illegal directive" in e.message], line


# ---------------------------------------------------------------- authkeys

def test_authkeys_valid(tmp_path):
    keys = authkeys(tmp_path, "# comment\nauth 2\n1 crc\n2 sha1 test-ha\n3 md5 Hello!\n")
    assert keys.active == 2 and keys.method == "sha1"
    assert keys.methods == {1: ("crc", ""), 2: ("sha1", "test-ha"), 3: ("md5", "Hello!")}
    assert keys.warnings == []


def test_authkeys_index_zero_and_fifteen(tmp_path):
    keys = authkeys(tmp_path, "auth 0\n0 md5 a\n15 sha1 b\n")
    assert keys.methods == {0: ("md5", "a"), 15: ("sha1", "b")}


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_authkeys_owner_only_modes_accepted(tmp_path, mode):
    assert authkeys(tmp_path, "auth 1\n1 sha1 k\n", mode).active == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602])
def test_authkeys_readable_or_writable_by_others_refused(tmp_path, mode):
    errors = authkeys_errors(tmp_path, "auth 1\n1 sha1 k\n", mode)
    assert len(errors) == 1 and errors[0][0] == 0
    assert "chmod 600" in errors[0][1] and "permission" in errors[0][1].lower()


def test_authkeys_mode_check_can_be_skipped(tmp_path):
    path = write(tmp_path, "authkeys", "auth 1\n1 sha1 k\n", 0o644)
    assert hb.parse_authkeys(path, check_mode=False).active == 1


def test_authkeys_read_from_one_descriptor(tmp_path, monkeypatch):
    path = write(tmp_path, "authkeys", "auth 1\n1 sha1 k\n")

    def by_path(*_args, **_kwargs):
        raise AssertionError("authkeys looked up by path twice: check and read must share one descriptor")
    monkeypatch.setattr(hb.os, "stat", by_path)
    monkeypatch.setattr(hb.os, "lstat", by_path)
    assert hb.parse_authkeys(path).active == 1


def give_away(path, monkeypatch, uid=65534):
    """Make PATH another user's: chown as root, else pretend we run as someone else."""
    if os.geteuid() == 0:
        os.chown(path, uid, -1)
    else:
        monkeypatch.setattr(hb.os, "geteuid", lambda: os.stat(path).st_uid + 1)


def test_authkeys_owned_by_another_user_refused(tmp_path, monkeypatch):
    path = write(tmp_path, "authkeys", "auth 1\n1 sha1 k\n")
    give_away(path, monkeypatch)
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_authkeys(path)
    (err,) = info.value.errors
    assert err.lineno == 0 and "Bad owner of keyfile" in err.message and f"chown root {path}" in err.message


def test_authkeys_owned_by_the_user_running_us_accepted(tmp_path, monkeypatch):
    path = write(tmp_path, "authkeys", "auth 1\n1 sha1 k\n")
    if os.geteuid() == 0:
        os.chown(path, 65534, -1)
        monkeypatch.setattr(hb.os, "geteuid", lambda: 65534)
    assert hb.parse_authkeys(path).active == 1


def test_authkeys_owner_check_can_be_skipped(tmp_path, monkeypatch):
    path = write(tmp_path, "authkeys", "auth 1\n1 sha1 k\n")
    give_away(path, monkeypatch)
    assert hb.parse_authkeys(path, check_mode=False).active == 1


def test_authkeys_symlink_refused(tmp_path):
    target = write(tmp_path, "real-authkeys", "auth 1\n1 sha1 k\n")
    os.symlink(target, tmp_path / "authkeys")
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_authkeys(str(tmp_path / "authkeys"))
    (err,) = info.value.errors
    assert err.lineno == 0 and "symbolic link" in err.message


def test_authkeys_missing_file(tmp_path):
    path = str(tmp_path / "authkeys")
    with pytest.raises(hb.ConfigErrors) as info:
        hb.parse_authkeys(path)
    assert [(e.path, e.lineno) for e in info.value.errors] == [(path, 0)]
    assert "keygen" in info.value.errors[0].message


def test_authkeys_no_auth_line(tmp_path):
    errors = authkeys_errors(tmp_path, "1 sha1 k\n")
    assert len(errors) == 1 and errors[0][0] == 0 and "Missing auth directive" in errors[0][1]


def test_authkeys_auth_names_missing_index(tmp_path):
    errors = authkeys_errors(tmp_path, "auth 4\n2 sha1 k\n")
    assert errors == [(1, "Auth Key [4] not found in keyfile")]


@pytest.mark.parametrize("line", ["auth", "auth two", "authx 1", "a 1", "auth -1"])
def test_authkeys_invalid_auth_line(tmp_path, line):
    errors = authkeys_errors(tmp_path, f"1 sha1 k\n{line}\n")
    assert errors[0][0] == 2 and "Invalid auth line" in errors[0][1]


def test_authkeys_non_ascii_digit_auth_index(tmp_path):
    errors = authkeys_errors(tmp_path, "auth \u00b2\n1 crc\n")
    assert errors[0][0] == 1


def test_authkeys_unknown_method(tmp_path):
    errors = authkeys_errors(tmp_path, "auth 2\n2 sha512 " + "k" * 64 + "\n")
    assert errors[0] == (2, "Invalid authtype: Heartbeat knows sha1, md5 and crc; heartbeat.py also sha256 "
                            "and aes256gcm")


@pytest.mark.parametrize("method", ["sha256", "aes256gcm"])
def test_authkeys_new_methods_with_a_long_key(tmp_path, method):
    if method == "aes256gcm" and importlib.util.find_spec("cryptography") is None:
        pytest.skip("no cryptography here")
    keys = authkeys(tmp_path, f"auth 3\n1 sha1 old\n3 {method} " + "k" * 32 + "\n")
    assert keys.method == method and keys.methods[1] == ("sha1", "old")


@pytest.mark.parametrize("method", ["sha256", "aes256gcm"])
def test_authkeys_new_methods_refuse_a_key_shorter_than_32_bytes(tmp_path, method):
    errors = authkeys_errors(tmp_path, f"auth 1\n1 sha1 old\n2 {method} " + "k" * 31 + "\n")
    assert errors[0] == (3, f"the {method} key of index 2 is 31 bytes: it needs 32 or more; make one with: "
                            f"heartbeat.py keygen --method {method} --force")
    assert "k" * 31 not in errors[0][1]


def test_authkeys_short_keys_of_heartbeats_methods_still_accepted(tmp_path):
    """3.0.6 takes any sha1 key: a mixed cluster keeps working with the key it has."""
    assert authkeys(tmp_path, "auth 1\n1 sha1 k\n2 md5 m\n").methods == {1: ("sha1", "k"), 2: ("md5", "m")}


@pytest.mark.parametrize("method", ["sha1", "md5"])
def test_authkeys_method_without_key(tmp_path, method):
    errors = authkeys_errors(tmp_path, f"auth 2\n2 {method}\n")
    assert errors[0] == (2, f"Auth method [{method}] requires a key")


def test_authkeys_crc_with_key(tmp_path):
    errors = authkeys_errors(tmp_path, "auth 1\n1 crc secret\n")
    assert errors[0][0] == 2 and "doesn't use a key" in errors[0][1]


@pytest.mark.parametrize("index", ["16", "99", "-1"])
def test_authkeys_index_out_of_range(tmp_path, index):
    errors = authkeys_errors(tmp_path, f"auth 1\n1 sha1 k\n{index} sha1 k\n")
    assert errors == [(3, f"Invalid authnum [{index}]: use 0 to 15")]


@pytest.mark.parametrize("line", ["hello world", "sha1 key", "1", "x1 sha1 k"])
def test_authkeys_garbage_line(tmp_path, line):
    errors = authkeys_errors(tmp_path, f"auth 1\n1 sha1 k\n{line}\n")
    assert errors[0][0] == 3 and errors[0][1].startswith("Auth line is invalid: write 'N method [key]'")


MARKER = "s3cr3t-M4RK"


@pytest.mark.parametrize("line", [
    f"auth {MARKER}", f"a{MARKER}", f"auth{MARKER} 1", f"{MARKER}", f"{MARKER} sha1 x", f"1 {MARKER}",
    f"1 {MARKER} {MARKER}", f"1 crc {MARKER}", f"16 sha1 {MARKER}", f"-1 md5 {MARKER}", f"x1 sha1 {MARKER}",
    f"1 sha256 {MARKER}", f"2 SHA1 {MARKER}", f"\u00b2 sha1 {MARKER}", f"1sha1 {MARKER}", f"1,sha1,{MARKER}",
])
def test_authkeys_no_message_quotes_a_key(tmp_path, line):
    for text in (f"auth 1\n{line}\n", f"{line}\nauth 3\n"):
        path = write(tmp_path, "authkeys", text, 0o644)
        with pytest.raises(hb.ConfigErrors) as info:
            hb.parse_authkeys(path)
        assert MARKER not in str(info.value), text
        assert all(MARKER not in str(e) and MARKER not in e.message for e in info.value.errors), text


def test_authkeys_key_is_first_token_only(tmp_path):
    keys = authkeys(tmp_path, "auth 2\n2 sha1 test ha\n3 md5 abc#def # not a comment\n")
    assert keys.methods[2] == ("sha1", "test")
    assert keys.methods[3] == ("md5", "abc#def")


def test_authkeys_comment_lines(tmp_path):
    keys = authkeys(tmp_path, "#auth 9\n   # 1 sha1 x\n\nauth 1\n1 sha1 k\n")
    assert keys.active == 1 and keys.methods == {1: ("sha1", "k")}


def test_authkeys_auth_after_its_key_line_warns(tmp_path):
    keys = authkeys(tmp_path, "1 crc\n2 sha1 k\nauth 2\n")
    assert keys.active == 2
    assert [(w.lineno, "auth 2" in w.message) for w in keys.warnings] == [(3, True)]
    assert keys.warnings[0].message.startswith("warning: ")


def test_authkeys_auth_before_its_key_line_does_not_warn(tmp_path):
    assert authkeys(tmp_path, "1 crc\nauth 2\n2 sha1 k\n").warnings == []


def test_authkeys_all_errors_at_once(tmp_path):
    errors = authkeys_errors(tmp_path, "hello\nauth 3\n1 sha1\n2 crc k\n16 md5 x\n3 rot13 y\n", mode=0o644)
    assert [line for line, _ in errors] == [0, 1, 3, 4, 5, 6, 2]


def test_authkeys_debian_sample_has_no_auth(tmp_path):
    sample = os.path.join(DEBIAN_DOC, "authkeys")
    if not os.path.exists(sample):
        pytest.skip("Debian's heartbeat package is not installed")
    with open(sample, encoding="utf-8") as handle:
        errors = authkeys_errors(tmp_path, handle.read())
    assert len(errors) == 1 and "Missing auth directive" in errors[0][1]


# ---------------------------------------------------------------- haresources: IP resources

@pytest.mark.parametrize("spec, ip, prefix, iface, bcast", [
    ("10.0.0.5", "10.0.0.5", None, None, None),
    ("10.0.0.5/24", "10.0.0.5", 24, None, None),
    ("10.0.0.5/24/eth0", "10.0.0.5", 24, "eth0", None),
    ("10.0.0.5/24/eth0/10.0.0.255", "10.0.0.5", 24, "eth0", "10.0.0.255"),
    ("10.0.0.5/24/10.0.0.255", "10.0.0.5", 24, None, "10.0.0.255"),
    ("10.0.0.5/32/eth0:1", "10.0.0.5", 32, "eth0:1", None),
    ("192.168.1.100/16/br-lan", "192.168.1.100", 16, "br-lan", None),
])
def test_ip_resource_forms(tmp_path, script_dirs, spec, ip, prefix, iface, bcast):
    for agent, token in (("IPaddr", spec), ("IPaddr", f"IPaddr::{spec}"), ("IPaddr2", f"IPaddr2::{spec}")):
        (group,) = haresources(tmp_path, f"prime {token}\n", script_dirs)
        (res,) = group.resources
        assert isinstance(res, hb.IPResource)
        assert (res.ip, res.prefix, res.iface, res.broadcast, res.agent) == (ip, prefix, iface, bcast, agent)
        if token == spec:
            assert (res.spec, group.key) == (spec, spec)


@pytest.mark.parametrize("token, word", [
    ("300.1.1.1", "not an IPv4 address"),
    ("10.0.0.256/24", "not an IPv4 address"),
    ("10.0.0.5/33", "netmask bits"),
    ("10.0.0.5/0", "netmask bits"),
    ("10.0.0.5/ab", "netmask bits"),
    ("10.0.0.5/24/eth0/10.0.0.999", "broadcast"),
    ("10.0.0.5/24/eth0/bcast", "broadcast"),
    ("10.0.0.5/24/eth0/10.0.0.255/x", "too many"),
    ("10.0.0.5/24/bad iface", None),
    ("10.0.0.5/24/averyveryverylongifacename", "interface"),
    ("IPaddr::nonsense", "not an IPv4 address"),
    ("IPaddr2::10.0.0.5/40", "netmask bits"),
    ("IPaddr::10.0.0.5::extra", "one argument"),
    ("IPaddr", "one argument"),
    ("IPaddr2", "one argument"),
])
def test_bad_ip_resources(tmp_path, script_dirs, token, word):
    errors = haresources_errors(tmp_path, f"# c\nprime {token}\n", script_dirs)
    assert errors and all(line == 2 for line, _ in errors)
    if word:
        assert word in errors[0][1]


# ---------------------------------------------------------------- haresources: scripts

def test_script_with_args(tmp_path, script_dirs):
    (group,) = haresources(tmp_path, "prime hbdummy::alpha::beta\n", script_dirs)
    (res,) = group.resources
    assert isinstance(res, hb.ScriptResource)
    assert (res.spec, res.name, res.args, res.path, res.lsb) == (
        "hbdummy::alpha::beta", "hbdummy", ["alpha", "beta"], os.path.join(script_dirs[0], "hbdummy"), False)


def test_script_lookup_order_resource_d_before_init_d(tmp_path, script_dirs):
    make_script(script_dirs[1], "apache2")           # in both: resource.d wins
    groups = haresources(tmp_path, "prime apache2 dummysvc\n", script_dirs)
    apache, dummy = groups[0].resources
    assert (apache.path, apache.lsb) == (os.path.join(script_dirs[0], "apache2"), False)
    assert (dummy.path, dummy.lsb) == (os.path.join(script_dirs[1], "dummysvc"), True)


def test_non_executable_script_is_not_found(tmp_path, script_dirs):
    make_script(script_dirs[0], "noexec", mode=0o644)
    errors = haresources_errors(tmp_path, "prime noexec\n", script_dirs)
    assert len(errors) == 1 and errors[0][0] == 1
    assert "Cannot locate resource script noexec" in errors[0][1]


def test_non_executable_in_resource_d_falls_back_to_init_d(tmp_path, script_dirs):
    make_script(script_dirs[0], "svc", mode=0o644)
    make_script(script_dirs[1], "svc")
    (group,) = haresources(tmp_path, "prime svc\n", script_dirs)
    assert (group.resources[0].path, group.resources[0].lsb) == (os.path.join(script_dirs[1], "svc"), True)


def test_directory_is_not_a_script(tmp_path, script_dirs):
    os.mkdir(os.path.join(script_dirs[0], "adir"))
    errors = haresources_errors(tmp_path, "prime adir\n", script_dirs)
    assert "Cannot locate resource script adir" in errors[0][1]


def test_localhost_resolves_as_an_ip_resource(tmp_path, script_dirs):
    (group,) = haresources(tmp_path, "prime localhost apache2\n", script_dirs)
    res = group.resources[0]
    assert isinstance(res, hb.IPResource)
    assert (res.spec, res.ip) == ("localhost", "127.0.0.1")
    assert group.key == "localhost"


def test_script_found_before_host_name(tmp_path, script_dirs):
    make_script(script_dirs[0], "localhost")
    (group,) = haresources(tmp_path, "prime localhost\n", script_dirs)
    assert isinstance(group.resources[0], hb.ScriptResource)


def test_unresolvable_name(tmp_path, script_dirs):
    errors = haresources_errors(tmp_path, "prime no-such-script-or-host.invalid\n", script_dirs)
    assert len(errors) == 1 and errors[0][0] == 1
    assert "Cannot locate resource script no-such-script-or-host.invalid" in errors[0][1]


@pytest.mark.parametrize("token", ["../apache2", "/bin/sh", ".hidden", "a;b"])
def test_bad_script_names(tmp_path, script_dirs, token):
    errors = haresources_errors(tmp_path, f"prime {token}\n", script_dirs)
    assert len(errors) == 1 and errors[0][0] == 1


# ---------------------------------------------------------------- haresources: lines and groups

def test_continuation_lines_keep_the_starting_line(tmp_path, script_dirs):
    text = ("# header\n"                       # 1
            "\n"                               # 2
            "prime 10.0.0.5/24/eth0 \\\n"      # 3
            "      hbdummy::a \\\n"            # 4
            "      apache2\n"                  # 5
            "calc 10.0.0.6 \\\n"               # 6
            "   dummysvc\n")                   # 7
    groups = haresources(tmp_path, text, script_dirs)
    assert [(g.home, g.lineno, [r.spec for r in g.resources]) for g in groups] == [
        ("prime", 3, ["10.0.0.5/24/eth0", "hbdummy::a", "apache2"]),
        ("calc", 6, ["10.0.0.6", "dummysvc"])]


def test_continuation_error_reported_at_starting_line(tmp_path, script_dirs):
    text = "# x\nprime 10.0.0.5 \\\n   no_such_script\ncalc no_such2\n"
    errors = haresources_errors(tmp_path, text, script_dirs)
    assert [line for line, _ in errors] == [2, 4]


def test_comments_and_whitespace(tmp_path, script_dirs):
    text = "   # indented\nprime\t10.0.0.5   apache2 # a comment\n\n"
    (group,) = haresources(tmp_path, text, script_dirs)
    assert [r.spec for r in group.resources] == ["10.0.0.5", "apache2"]


def test_home_node_lowercased(tmp_path, script_dirs):
    (group,) = haresources(tmp_path, "PRIME apache2\n", script_dirs)
    assert group.home == "prime"


def test_home_node_not_in_hacf(tmp_path, script_dirs):
    errors = haresources_errors(tmp_path, "prime apache2\nsigma 10.0.0.9\n", script_dirs)
    assert len(errors) == 1 and errors[0][0] == 2
    assert "sigma" in errors[0][1] and "not a node" in errors[0][1]


def test_group_without_resources(tmp_path, script_dirs):
    errors = haresources_errors(tmp_path, "prime apache2\ncalc\n", script_dirs)
    assert [line for line, _ in errors] == [2]


@pytest.mark.parametrize("first, second", [
    ("apache2", "apache2"),
    ("10.0.0.5", "10.0.0.5/24"),
    ("10.0.0.5/24/eth0", "IPaddr::10.0.0.5"),
    ("hbdummy::a", "hbdummy::a"),
])
def test_duplicate_resource_across_groups(tmp_path, script_dirs, first, second):
    errors = haresources_errors(tmp_path, f"prime {first}\n\ncalc {second}\n", script_dirs)
    assert len(errors) == 1 and errors[0][0] == 3
    assert "line 1" in errors[0][1]


def test_same_script_different_args_is_not_a_duplicate(tmp_path, script_dirs):
    groups = haresources(tmp_path, "prime hbdummy::a\ncalc hbdummy::b\n", script_dirs)
    assert [g.key for g in groups] == ["hbdummy::a", "hbdummy::b"]


def test_group_key_is_first_resource_verbatim(tmp_path, script_dirs):
    text = ("prime IPaddr::10.0.0.5/24/eth0 apache2\n"
            "calc 10.0.0.6/24/eth0/10.0.0.255 dummysvc\n"
            "prime hbdummy::x::y\n")
    assert [g.key for g in haresources(tmp_path, text, script_dirs)] == [
        "IPaddr::10.0.0.5/24/eth0", "10.0.0.6/24/eth0/10.0.0.255", "hbdummy::x::y"]


def test_empty_haresources(tmp_path, script_dirs):
    assert haresources(tmp_path, "# nothing\n\n", script_dirs) == []


def test_all_haresources_errors_at_once(tmp_path, script_dirs):
    text = "prime 300.0.0.1 apache2\nsigma apache2\ncalc no_such 10.0.0.5/99\n"
    errors = haresources_errors(tmp_path, text, script_dirs)
    assert [line for line, _ in errors] == [1, 2, 2, 3, 3]


# ---------------------------------------------------------------- load_config

HACF = "keepalive 2\ndeadtime 10\nbcast eth0\nnode prime\nnode calc\nauto_failback on\n"
AUTHKEYS = "auth 2\n2 sha1 my-own-secret\n"


def make_config_dir(path, hacf_text=HACF, authkeys_text=AUTHKEYS, haresources_text="prime apache2\n",
                    authkeys_mode=0o600):
    write(path, "ha.cf", hacf_text, 0o644)
    write(path, "authkeys", authkeys_text, authkeys_mode)
    write(path, "haresources", haresources_text, 0o644)
    make_script(os.path.join(str(path), "resource.d"), "apache2")
    return str(path)


def load(directory, node="prime"):
    return hb.load_config(directory, node, [os.path.join(directory, "resource.d"), os.path.join(directory, "init.d")])


def test_load_config_valid(tmp_path):
    directory = make_config_dir(tmp_path)
    config = load(directory)
    assert config.node == "prime" and config.config_dir == directory
    assert config.hacf.nodes == ["prime", "calc"]
    assert config.authkeys.methods == {2: ("sha1", "my-own-secret")}
    assert [g.key for g in config.groups] == ["apache2"]


def test_load_config_aggregates_errors_of_all_three_files(tmp_path):
    directory = make_config_dir(tmp_path, hacf_text=HACF + "keepalive 2s\nfrob\n",
                                authkeys_text="auth 2\n2 sha1\n", authkeys_mode=0o644,
                                haresources_text="prime apache2\ncalc no_such\n")
    with pytest.raises(hb.ConfigErrors) as info:
        load(directory)
    where = [(os.path.basename(e.path), e.lineno) for e in info.value.errors]
    assert where == [("ha.cf", 7), ("ha.cf", 8), ("authkeys", 0), ("authkeys", 2), ("authkeys", 1),
                     ("haresources", 2)]
    assert all(os.path.dirname(e.path) == directory for e in info.value.errors)


def test_load_config_local_node_missing(tmp_path):
    directory = make_config_dir(tmp_path)
    with pytest.raises(hb.ConfigErrors) as info:
        load(directory, node="zeta")
    (err,) = info.value.errors
    assert (err.path, err.lineno) == (os.path.join(directory, "ha.cf"), 0)
    assert "Current node [zeta] not in configuration" in err.message


def test_load_config_node_override_lowercased(tmp_path):
    assert load(make_config_dir(tmp_path), node="CALC").node == "calc"


def test_load_config_nodeinfo(tmp_path):
    directory = make_config_dir(tmp_path)
    write(directory, "nodeinfo", "Calc\nignored\n", 0o644)
    assert load(directory, node=None).node == "calc"
    assert load(directory, node="prime").node == "prime"      # --node wins over nodeinfo
    assert hb.local_node_name(directory) == "calc"


def test_load_config_empty_nodeinfo_falls_back_to_uname(tmp_path):
    directory = make_config_dir(tmp_path)
    write(directory, "nodeinfo", "\n", 0o644)
    assert hb.local_node_name(directory) == os.uname().nodename.lower()


def test_load_config_without_nodeinfo_uses_uname(tmp_path):
    assert hb.local_node_name(str(tmp_path)) == os.uname().nodename.lower()


def test_load_config_missing_files(tmp_path):
    with pytest.raises(hb.ConfigErrors) as info:
        load(str(tmp_path))
    assert sorted(os.path.basename(e.path) for e in info.value.errors) == ["authkeys", "ha.cf", "haresources"]
    assert all(e.lineno == 0 for e in info.value.errors)


def test_load_config_collects_warnings(tmp_path):
    directory = make_config_dir(tmp_path, hacf_text=HACF + "coredumps off\n",
                                authkeys_text="2 sha1 k\nauth 2\n")
    config = load(directory)
    assert [(os.path.basename(w.path), w.lineno) for w in config.warnings] == [("ha.cf", 7), ("authkeys", 2)]


@pytest.mark.parametrize("line", ["2 sha1 test-ha", "2 md5 Hello!"])
def test_load_config_refuses_a_public_key_without_printing_it(tmp_path, line):
    directory = make_config_dir(tmp_path, authkeys_text=f"auth 1\n1 sha1 mine\n{line}\n")
    with pytest.raises(hb.ConfigErrors) as info:
        load(directory)
    (err,) = info.value.errors
    assert (err.path, err.lineno) == (os.path.join(directory, "authkeys"), 3)
    assert "key 2 is public" in err.message and "heartbeat.py keygen --force" in err.message
    assert line.split()[2] not in str(info.value)


def test_public_keys_are_the_tutorials_and_the_samples():
    with open(os.path.join(os.path.dirname(hb.__file__), "ha.d", "authkeys"), encoding="utf-8") as handle:
        sample = re.findall(r"^#?\d+ (sha1|md5) (\S+)$", handle.read(), re.M)
    assert set(sample) == hb.PUBLIC_KEYS


def test_crc_warnings_name_each_crc_line():
    keys = hb.AuthKeys("/etc/ha.d/authkeys", 2, {1: ("crc", ""), 2: ("sha1", "k"), 4: ("crc", "")},
                       lines={1: 3, 2: 5, 4: 7})
    assert [str(w) for w in hb.crc_warnings(keys)] == [
        f"/etc/ha.d/authkeys:{line}: warning: key {index} uses crc: anyone on the network can forge "
        "heartbeat packets; use sha1 (heartbeat.py keygen --force)" for index, line in ((1, 3), (4, 7))]
    assert hb.crc_warnings(hb.AuthKeys("k", 2, {2: ("sha1", "k")}, lines={2: 1})) == []


def test_load_config_warns_about_crc(tmp_path):
    directory = make_config_dir(tmp_path, authkeys_text="auth 2\n1 crc\n2 sha1 mine\n")
    config = load(directory)
    assert [(os.path.basename(w.path), w.lineno, "crc" in w.message) for w in config.warnings] == [
        ("authkeys", 2, True)]


# ---------------------------------------------------------------- the tutorial's files

def _tutorial_block(lines, first, last):
    start = lines.index(first)
    end = lines.index(last, start)
    return "\n".join(lines[start:end + 1]) + "\n"


def test_tutorial_files_parse(tmp_path):
    with open(TUTORIAL, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    hacf_text = _tutorial_block(lines, "debugfile /var/log/ha-debug", "auto_failback on")
    authkeys_text = _tutorial_block(lines, "auth 2", "#3 md5 Hello!")
    haresources_text = _tutorial_block(lines, "prime apache2", "prime apache2")
    assert hacf_text.count("\n") == 10 and authkeys_text.count("\n") == 4
    directory = make_config_dir(tmp_path, hacf_text, authkeys_text, haresources_text)
    shutil.rmtree(os.path.join(directory, "resource.d"))
    make_script(os.path.join(directory, "resource.d"), "apache2")

    with pytest.raises(hb.ConfigErrors) as info:          # its key is public: refused, at its line
        hb.load_config(directory, "prime")                 # default script dirs: DIR/resource.d first
    (err,) = info.value.errors                             # the only error: node prime and the rest are fine
    assert (os.path.basename(err.path), err.lineno) == ("authkeys", 3) and "keygen --force" in err.message

    cf = hb.parse_hacf(os.path.join(directory, "ha.cf"))       # ha.cf and haresources: accepted unchanged
    authkeys = hb.parse_authkeys(os.path.join(directory, "authkeys"))
    groups = hb.parse_haresources(os.path.join(directory, "haresources"), cf.nodes,
                                  hb.default_script_dirs(directory))
    assert (cf.keepalive_ms, cf.deadtime_ms, cf.warntime_ms, cf.initdead_ms) == (2000, 10000, 5000, 20000)
    assert cf.udpport == 694
    assert cf.nodes == ["prime", "calc"]
    assert cf.auto_failback == "on"
    assert [(m.kind, m.iface) for m in cf.media] == [("bcast", "eth0")]
    assert (cf.logfile, cf.debugfile, cf.logfacility) == ("/var/log/ha-log", "/var/log/ha-debug", "local0")
    assert cf.values["keepalive"] == "2" and cf.values["deadtime"] == "10"
    assert authkeys.active == 2
    assert authkeys.methods == {2: ("sha1", "test-ha")}
    (group,) = groups
    assert (group.home, group.key, group.lineno) == ("prime", "apache2", 1)
    (res,) = group.resources
    assert (res.path, res.lsb, res.args) == (os.path.join(directory, "resource.d", "apache2"), False, [])


# ---------------------------------------------------------------- ping nodes, ping groups, ipfail

def test_ping_lines_make_pseudo_nodes_and_deadping_defaults_to_deadtime(tmp_path):
    cfg = hacf(tmp_path, BASE + "ping 10.0.0.1 10.0.0.2\nping_group Uplink 10.0.1.1 10.0.1.2\n")
    assert [(p.name, p.addresses, p.group, p.lineno) for p in cfg.ping_nodes] == [
        ("10.0.0.1", ("10.0.0.1",), False, 6), ("10.0.0.2", ("10.0.0.2",), False, 6),
        ("uplink", ("10.0.1.1", "10.0.1.2"), True, 7)]
    assert cfg.deadping_ms == cfg.deadtime_ms == 10000
    assert not cfg.ipfail and not warning_lines(cfg, "ping")


@pytest.mark.parametrize("line, words", [
    ("ping", "one or more"), ("ping 10.0.0.300", "'10.0.0.300'"), ("ping_group uplink", "name and one or more"),
    ("ping 10.0.0.1 10.0.0.1", "already a ping node"), ("ping_group g 10.0.0.1\nping_group G 10.0.0.2", "'g'"),
    ("ping_group calc 10.0.0.9", "also a cluster node"), ("deadping 4", "too small compared to keepalive"),
    ("respawn hacluster", "a user and a program")])
def test_bad_ping_lines_are_errors_at_their_line(tmp_path, line, words):
    errors = hacf_errors(tmp_path, BASE + line + "\n")
    assert errors and all(lineno >= 6 for lineno, _ in errors), errors
    assert any(words in message for _, message in errors), errors


def test_respawn_ipfail_turns_the_builtin_ipfail_on_and_other_programs_warn(tmp_path):
    cfg = hacf(tmp_path, BASE + "respawn hacluster /usr/lib/heartbeat/ipfail\nrespawn root /usr/bin/mydaemon\n")
    assert cfg.ipfail
    assert warning_lines(cfg, "ipfail") == [7] and warning_lines(cfg, "mydaemon") == [7]


def test_ping6_nodes_are_ipv6_addresses(tmp_path):
    cfg = hacf(tmp_path, BASE + "ping6 2001:DB8::1 fd00::fe\n")
    assert [(p.name, p.addresses) for p in cfg.ping_nodes] == [("2001:db8::1", ("2001:db8::1",)),
                                                               ("fd00::fe", ("fd00::fe",))]
    errors = hacf_errors(tmp_path, BASE + "ping6 10.0.0.1\nping6 fe80::1\nping 2001:db8::1\n")
    assert [line for line, _ in errors] == [6, 7, 8]
    assert "not an IPv6 address" in errors[0][1] and "link-local" in errors[1][1]
    assert "not an IPv4 address" in errors[2][1]

"""Property tests: whatever is in ha.cf, authkeys or haresources, the readers either return a
valid result or raise ConfigErrors (each error naming the file and a line in it) - never any
other exception. And `check` exits 0 or 6, never with a traceback."""
import os
import subprocess
import sys
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import heartbeat as hb
from paths import HEARTBEAT

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
CLI = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEPARATORS = st.sampled_from([" ", "  ", "\t", ",", ", ", ""])
ODD = ["#", "\\", "=", "::", "/", "\r", "\x00", "\u00b2", "\u0661", "\u00e9", "\ufeff", "-", ".", "%", "'", '"']


def joined(words, max_size=7):
    """A few WORDS, each followed by a config-ish separator."""
    return st.lists(st.tuples(words, SEPARATORS), max_size=max_size).map(lambda ws: "".join(w + s for w, s in ws))


def lines_of(words):
    """Text of 0-12 lines, each a few WORDS joined by config-ish separators."""
    line = joined(words)
    return st.lists(line, max_size=12).map("\n".join) | st.lists(line, max_size=12).map("\r\n".join)


HACF_WORDS = st.one_of(
    st.sampled_from(sorted(hb.DIRECTIVE_BY_NAME)),
    st.sampled_from(["Keepalive", "NODE", "frob", "mcast", "bcast", "node", "keepalive", "deadtime", "initdead"]),
    st.sampled_from(["prime", "calc", "eth0", "eth1", "lo", "225.0.0.1", "10.0.0.2", "694", "0", "1", "255",
                     "256", "65536", "2", "2s", "1500ms", "500000us", "0.5", ".", "on", "off", "legacy", "yes",
                     "maybe", "local0", "none", "classic", "netstring", "any", "X=1", "-1", "1e3", "99999999999999"]),
    st.sampled_from(ODD),
    st.text(max_size=6),
)
KEY_MARKER = "s3cr3t-M4RK"      # no authkeys message may quote it
AUTH_WORDS = st.one_of(
    st.sampled_from(["auth", "a", "Auth", "authx", "0", "1", "2", "3", "15", "16", "-1", "007", "sha1", "md5", "crc",
                     "sha256", "SHA1", "secret", "test-ha", "Hello!", KEY_MARKER]),
    st.sampled_from(ODD),
    st.text(max_size=6),
)
# Resource words. Unknown names are spelt with '_' (never a host name) so that the properties do
# not wait on DNS: parse_resource looks up any other unknown word as a host name.
RESOURCE_WORDS = st.one_of(
    st.sampled_from(["apache2", "hbdummy", "dummysvc", "localhost", "no_such", "10.0.0.5", "10.0.0.5/24",
                     "10.0.0.5/24/eth0", "10.0.0.5/24/eth0/10.0.0.255", "10.0.0.5/24/10.0.0.255", "300.1.1.1",
                     "10.0.0.5/33", "IPaddr::10.0.0.6", "IPaddr2::10.0.0.7/24", "IPaddr::", "IPaddr", "IPaddr2::x",
                     "hbdummy::a::b", "apache2::", "//", "../x", "_x.y", "a;b"]),
    st.sampled_from(ODD),
    st.builds("{}{}".format, st.sampled_from(["10.0.0.5/", "1.2.3.4/", "999.0.0.1/", "IPaddr::", "IPaddr2::",
                                              "apache2::", "hbdummy::", "_"]),
              st.text(alphabet="0123456789./:_abeth\u00b2", max_size=14)),
)
HOME_WORDS = st.sampled_from(["prime", "calc", "PRIME", "Calc", "sigma", "\\", "#", "10.0.0.5", "\u00e9", ""])
HARES_TEXT = st.lists(
    st.builds("{}{}{}".format, HOME_WORDS, SEPARATORS, joined(RESOURCE_WORDS, max_size=6)), max_size=10,
).map("\n".join)


def _write(directory, name, data, mode=0o600):
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    os.chmod(path, mode)
    return path


def _line_count(path):
    with open(path, "rb") as handle:
        return handle.read().count(b"\n") + 1


def _check_errors(err, path):
    assert err.errors, "ConfigErrors without errors"
    limit = _line_count(path)
    for error in err.errors:
        assert isinstance(error, hb.ConfigError)
        assert error.path == path
        assert 0 <= error.lineno <= limit
        assert error.message and str(error).startswith(path)
    str(err)


def _hacf_property(data):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "ha.cf", data, 0o644)
        try:
            cfg = hb.parse_hacf(path)
        except hb.ConfigErrors as err:
            _check_errors(err, path)
            return
        assert cfg.nodes and cfg.media
        assert cfg.deadtime_ms > 2 * cfg.keepalive_ms
        assert cfg.initdead_ms >= cfg.deadtime_ms and cfg.warntime_ms > 0
        assert 1 <= cfg.udpport <= 65535
        assert cfg.auto_failback in ("on", "off", "legacy")
        assert all(n == n.lower() for n in cfg.nodes)


def _authkeys_property(data, mode=0o600):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "authkeys", data, mode)
        try:
            keys = hb.parse_authkeys(path)
        except hb.ConfigErrors as err:
            _check_errors(err, path)
            assert KEY_MARKER not in str(err)
            return
        assert mode & 0o077 == 0
        assert keys.active in keys.methods
        for index, (method, key) in keys.methods.items():
            assert 0 <= index <= 15
            assert method in ("sha1", "md5", "crc")
            assert bool(key) == (method != "crc")
            assert key == "" or not any(c.isspace() for c in key)


def _haresources_property(data):
    with tempfile.TemporaryDirectory() as directory:
        dirs = [os.path.join(directory, "resource.d"), os.path.join(directory, "init.d")]
        for folder, script in zip(dirs, ("apache2", "dummysvc")):
            os.mkdir(folder)
            _write(folder, script, "#!/bin/sh\n", 0o755)
        _write(dirs[0], "hbdummy", "#!/bin/sh\n", 0o755)
        path = _write(directory, "haresources", data, 0o644)
        try:
            groups = hb.parse_haresources(path, ["prime", "calc"], dirs)
        except hb.ConfigErrors as err:
            _check_errors(err, path)
            return
        keys = [g.key for g in groups]
        assert len(keys) == len(set(keys))
        for group in groups:
            assert group.home in ("prime", "calc") and group.resources
            for res in group.resources:
                assert isinstance(res, (hb.IPResource, hb.ScriptResource))
                if isinstance(res, hb.ScriptResource):
                    assert os.access(res.path, os.X_OK)


# ---------------------------------------------------------------- ha.cf

@FAST
@given(st.binary(max_size=600))
@example(b"node prime\nbcast eth0\nmcast eth0 225.0.0.1 \xc2\xb2 1 0\n")     # superscript two as the port
@example(b"node prime\nbcast eth0\nmcast eth0 225.0.0.1 694 \xc2\xb2 0\n")   # ... as the ttl
@example(b"\xff\xfe\x00n\x00o\x00d\x00e")
def test_hacf_random_bytes(data):
    _hacf_property(data)


@FAST
@given(lines_of(HACF_WORDS))
def test_hacf_token_soup(text):
    _hacf_property(text)


@FAST
@given(st.lists(st.sampled_from([
    "node prime calc", "node prime", "bcast eth0", "keepalive 2", "deadtime 10", "deadtime 4", "warntime 5",
    "initdead 20", "initdead 5", "keepalive 500ms", "deadtime 1", "auto_failback on", "nice_failback on",
    "udpport 694", "mcast eth0 225.0.0.1 694 1 0", "ucast eth1 10.0.0.2", "crm off", "realtime off",
]), max_size=10).map("\n".join))
def test_hacf_plausible_files(text):
    _hacf_property(text)


# ---------------------------------------------------------------- authkeys

@FAST
@given(st.binary(max_size=400))
@example(b"auth \xc2\xb2\n1 crc\n")          # superscript two as the auth index
@example(b"auth 1\n1 crc\n")
def test_authkeys_random_bytes(data):
    _authkeys_property(data)


@FAST
@given(lines_of(AUTH_WORDS), st.sampled_from([0o600, 0o400, 0o640, 0o644, 0o700]))
def test_authkeys_token_soup(text, mode):
    _authkeys_property(text, mode)


# ---------------------------------------------------------------- haresources

@FAST
@given(st.binary(max_size=400))
def test_haresources_random_bytes(data):
    _haresources_property(data)


@FAST
@given(HARES_TEXT)
@example("prime 10.0.0.5/\u00b2\n")
@example("prime \\\n")
@example("\\\n\\")
def test_haresources_token_soup(text):
    _haresources_property(text)


# ---------------------------------------------------------------- through the CLI

def _run_check(hacf, authkeys, haresources, authkeys_mode=0o600):
    with tempfile.TemporaryDirectory() as directory:
        _write(directory, "ha.cf", hacf, 0o644)
        _write(directory, "authkeys", authkeys, authkeys_mode)
        _write(directory, "haresources", haresources, 0o644)
        os.mkdir(os.path.join(directory, "resource.d"))
        _write(os.path.join(directory, "resource.d"), "apache2", "#!/bin/sh\n", 0o755)
        result = subprocess.run([sys.executable, HEARTBEAT, "check", "-c", directory, "--node", "prime"],
                                capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode in (0, 6), result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@CLI
@given(st.binary(max_size=300), lines_of(AUTH_WORDS), HARES_TEXT)
@example(b"node prime\nbcast eth0\nmcast eth0 225.0.0.1 \xc2\xb2 1 0\n", "auth 1\n1 crc\n", "prime apache2\n")
@example(b"node prime calc\nbcast eth0\nauto_failback on\n", "auth \u00b2\n1 crc\n", "prime apache2\n")
@example(b"node prime calc\nbcast eth0\nauto_failback on\n", "auth 1\n1 crc\n", "prime apache2\n")
def test_cli_check_never_tracebacks(hacf, authkeys, haresources):
    _run_check(hacf, authkeys, haresources)


@CLI
@given(lines_of(HACF_WORDS))
def test_cli_check_hacf_token_soup(hacf):
    _run_check(hacf, "auth 1\n1 sha1 k\n", "prime apache2\n")

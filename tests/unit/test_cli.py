"""The command line, run as a real subprocess: check, keygen, --version and the common options."""
import importlib.util
import os
import pathlib
import re
import selectors
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

import heartbeat as hb
from fakes import common, restart, run, write
from paths import HEARTBEAT, TUTORIAL

SUBCOMMAND_OPTIONS = ["-c", "--config-dir", "--node", "--state-dir", "--run-dir"]


def snapshot(directory):
    """Every file and directory under DIRECTORY with its mode, size and mtime."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, directory)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


# ---------------------------------------------------------------- check

def test_check_valid_config(confdir, tmp_path):
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert f"{confdir}: configuration valid for node prime" in out
    assert re.search(r"nodes:\s+prime calc$", out, re.M)
    assert "keepalive 2000 ms, deadtime 10000 ms, warntime 5000 ms, initdead 20000 ms" in out
    assert re.search(r"groups:\s+2$", out, re.M)
    assert "auto_failback on" in out
    assert "sha1" in out
    resource_d = os.path.join(confdir, "resource.d")
    assert f"apache2: {os.path.join(resource_d, 'apache2')} (resource.d script)" in out
    assert f"hbdummy::alpha::beta: {os.path.join(resource_d, 'hbdummy')} (resource.d script) with alpha beta" in out
    assert "192.168.77.100/24" in out and "on eth0" in out and "broadcast 192.168.77.255" in out
    assert re.search(r"prime \(line 1\):", out) and re.search(r"calc \(line 2\):", out)


def test_check_shows_ping_nodes_and_ipfail(confdir, tmp_path):
    with open(os.path.join(confdir, "ha.cf"), "a") as handle:
        handle.write("ping 10.9.9.1\nping_group uplink 10.9.8.1 10.9.8.2\ndeadping 20\n"
                     "respawn hacluster /usr/lib/heartbeat/ipfail\n")
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"ping:\s+10.9.9.1; uplink \(10.9.8.1 10.9.8.2\), deadping 20000 ms, ipfail on$",
                     result.stdout, re.M)


def test_check_shows_the_stonith_device_and_its_parameter_names_not_values(confdir, tmp_path):
    result = run("check", *common(confdir, tmp_path))
    assert "stonith:   no STONITH device: shared disks are not protected" in result.stdout
    with open(os.path.join(confdir, "ha.cf"), "a") as handle:
        handle.write("stonith_host * null prime calc\n")
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"stonith:\s+null \(hostlist; run by (cluster-glue|builtin)\), ha.cf line \d+$",
                     result.stdout, re.M), result.stdout


def test_check_reports_lsb_script_in_init_d(confdir, tmp_path):
    initd = hb.INITD_DIR
    scripts = sorted(n for n in os.listdir(initd) if os.access(os.path.join(initd, n), os.X_OK)
                     and os.path.isfile(os.path.join(initd, n))
                     and not os.path.exists(os.path.join(confdir, "resource.d", n))
                     and re.fullmatch(r"[a-z][a-z0-9_.-]*", n)) if os.path.isdir(initd) else []
    if not scripts:
        pytest.skip(f"no executable script in {initd} to look up")
    write(confdir, "haresources", f"prime apache2 {scripts[0]}\n")
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{scripts[0]}: {os.path.join(initd, scripts[0])} (LSB init script)" in result.stdout


def test_check_long_config_dir_option(confdir, tmp_path):
    result = run("check", "--config-dir", confdir, "--node", "calc")
    assert result.returncode == 0, result.stderr
    assert "configuration valid for node calc" in result.stdout


def test_check_node_option_lowercased(confdir):
    result = run("check", "-c", confdir, "--node", "PRIME")
    assert result.returncode == 0, result.stderr
    assert "configuration valid for node prime" in result.stdout


def test_check_unknown_node_is_a_config_error(confdir):
    result = run("check", "-c", confdir, "--node", "zeta")
    assert result.returncode == 6
    assert re.search(rf"^{re.escape(os.path.join(confdir, 'ha.cf'))}: Current node \[zeta\]", result.stderr, re.M)


def test_check_tutorial_files(tmp_path):
    with open(TUTORIAL, encoding="utf-8") as handle:
        lines = handle.read().splitlines()

    def block(first, last):
        start = lines.index(first)
        return "\n".join(lines[start:lines.index(last, start) + 1]) + "\n"

    directory = str(tmp_path)
    write(directory, "ha.cf", block("debugfile /var/log/ha-debug", "auto_failback on"))
    write(directory, "authkeys", block("auth 2", "#3 md5 Hello!"), 0o600)
    write(directory, "haresources", "prime apache2\n")
    os.mkdir(os.path.join(directory, "resource.d"))
    write(os.path.join(directory, "resource.d"), "apache2", "#!/bin/sh\n", 0o755)
    result = run("check", "-c", directory, "--node", "prime")
    assert result.returncode == 6                  # the tutorial's key is public: only authkeys is refused
    assert result.stderr.splitlines()[:-1] == [
        f"{directory}/authkeys:3: key 2 is public (the tutorial's sample): anyone can forge heartbeat packets "
        "with it; make a secret one with: heartbeat.py keygen --force"]
    assert "test-ha" not in result.stderr
    assert keygen(directory, "--force").returncode == 0
    result = run("check", "-c", directory, "--node", "prime")
    assert result.returncode == 0, result.stderr
    assert "keepalive 2000 ms, deadtime 10000 ms, warntime 5000 ms, initdead 20000 ms" in result.stdout


def test_daemon_refuses_the_shipped_sample_key(confdir, tmp_path):
    with open(os.path.join(os.path.dirname(HEARTBEAT), "ha.d", "authkeys"), encoding="utf-8") as handle:
        write(confdir, "authkeys", handle.read(), 0o600)
    result = run("daemon", "--foreground", *common(confdir, tmp_path))
    assert result.returncode == 6
    assert f"{confdir}/authkeys:15: key 2 is public" in result.stderr and "keygen --force" in result.stderr
    assert "test-ha" not in result.stderr
    assert not os.path.exists(tmp_path / "run")

def test_check_warns_about_crc(confdir, tmp_path):
    write(confdir, "authkeys", "auth 1\n1 crc\n", 0o600)
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{confdir}/authkeys:2: warning: key 1 uses crc: anyone on the network can forge" in result.stderr
    assert "index 1, crc: anyone on the network can forge" in result.stdout


BROKEN_HACF = (
    "node prime calc\n"          # 1
    "Keepalive 2\n"              # 2
    "keepalive 2s\n"             # 3
    "bcast eth0\n"               # 4
    "mcast eth0 225.0.0.1 694\n"  # 5
    "# fine\n"                   # 6
    "udpport 70000\n"            # 7
    "deadtime 10\n"              # 8
    "initdead 4\n"               # 9
)
BROKEN_AUTHKEYS = "auth 3\nhello world\n3 sha1\n"
BROKEN_HARESOURCES = "prime apache2\n\nsigma 10.0.0.1/40\ncalc no_such_script\n"


def test_check_broken_config_lists_every_error(confdir, tmp_path):
    write(confdir, "ha.cf", BROKEN_HACF)
    write(confdir, "authkeys", BROKEN_AUTHKEYS, 0o644)
    write(confdir, "haresources", BROKEN_HARESOURCES)
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 6
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("heartbeat.py: ")          # the closing summary
    paths = {name: os.path.join(confdir, name) for name in ("ha.cf", "authkeys", "haresources")}
    pattern = re.compile(r"^(?P<path>{})(?::(?P<line>\d+))?: \S".format(
        "|".join(re.escape(p) for p in paths.values())))
    where = []
    for line in lines[:-1]:
        match = pattern.match(line)
        assert match, f"stderr line without PATH:LINE: prefix: {line!r}"
        where.append((os.path.basename(match.group("path")), int(match.group("line") or 0)))
    assert where == [
        ("ha.cf", 2), ("ha.cf", 3), ("ha.cf", 5), ("ha.cf", 7), ("ha.cf", 9),
        ("authkeys", 0), ("authkeys", 2), ("authkeys", 3), ("authkeys", 1),
        ("haresources", 3), ("haresources", 4),   # (home nodes are not checked while ha.cf is broken)
    ]


def test_check_missing_config_dir(tmp_path):
    missing = str(tmp_path / "nowhere")
    result = run("check", "-c", missing, "--node", "prime")
    assert result.returncode == 6
    assert "Traceback" not in result.stderr
    for name in ("ha.cf", "authkeys", "haresources"):
        assert re.search(rf"^{re.escape(os.path.join(missing, name))}: ", result.stderr, re.M)
    assert not os.path.exists(missing)


@pytest.mark.parametrize("broken", [False, True])
def test_check_changes_nothing(confdir, tmp_path, broken):
    if broken:
        write(confdir, "ha.cf", BROKEN_HACF)
    before = snapshot(confdir)
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == (6 if broken else 0)
    assert snapshot(confdir) == before
    assert not os.path.exists(tmp_path / "state") and not os.path.exists(tmp_path / "run")


# ---------------------------------------------------------------- keygen

def keygen(directory, *extra):
    return run("keygen", "-c", directory, "--node", "prime", *extra)


def parsed_key(directory):
    keys = hb.parse_authkeys(os.path.join(directory, "authkeys"))
    assert keys.active == 1
    return keys.methods[keys.active]


@pytest.mark.parametrize("method", ["sha1", "md5", "sha256",
                                    pytest.param("aes256gcm", marks=pytest.mark.skipif(
                                        importlib.util.find_spec("cryptography") is None, reason="no cryptography"))])
def test_keygen_writes_a_private_authkeys(tmp_path, method):
    directory = str(tmp_path)
    result = keygen(directory, *([] if method == "sha1" else ["--method", method]))
    assert result.returncode == 0, result.stderr
    path = os.path.join(directory, "authkeys")
    assert os.stat(path).st_mode & 0o7777 == 0o600
    used, key = parsed_key(directory)
    assert used == method
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert os.listdir(directory) == ["authkeys"]           # no temp file left behind
    assert path in result.stdout


def test_keygen_crc_has_no_key(tmp_path):
    result = keygen(str(tmp_path), "--method", "crc")
    assert result.returncode == 0, result.stderr
    assert parsed_key(str(tmp_path)) == ("crc", "")
    with open(tmp_path / "authkeys", encoding="utf-8") as handle:
        assert re.search(r"^1 crc$", handle.read(), re.M)


def test_keygen_unknown_method_refused(tmp_path):
    result = keygen(str(tmp_path), "--method", "sha512")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_keygen_refuses_existing_file(tmp_path):
    path = write(str(tmp_path), "authkeys", "auth 1\n1 sha1 old-key\n", 0o600)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = snapshot(str(tmp_path))
    result = keygen(str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--force" in result.stderr
    assert snapshot(str(tmp_path)) == before
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == "auth 1\n1 sha1 old-key\n"


def test_keygen_never_replaces_an_authkeys_made_meanwhile_without_force(tmp_path, monkeypatch):
    """The file may appear between the check and the write: it is kept, and keygen says so."""
    path = str(tmp_path / "authkeys")
    written = hb.write_file_atomic

    def someone_first(target, data, mode, replace=True):
        write(str(tmp_path), "authkeys", "auth 1\n1 sha1 theirs\n", 0o600)
        written(target, data, mode, replace)
    monkeypatch.setattr(hb, "write_file_atomic", someone_first)
    with pytest.raises(hb.HAError, match="cannot write .*authkeys: File exists"):
        hb.write_authkeys(path, "sha1", force=False)
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == "auth 1\n1 sha1 theirs\n"
    assert os.listdir(tmp_path) == ["authkeys"]


def test_keygen_force_replaces(tmp_path):
    path = write(str(tmp_path), "authkeys", "auth 1\n1 sha1 old-key\n", 0o644)
    result = keygen(str(tmp_path), "--force")
    assert result.returncode == 0, result.stderr
    assert os.stat(path).st_mode & 0o7777 == 0o600
    method, key = parsed_key(str(tmp_path))
    assert method == "sha1" and key != "old-key" and re.fullmatch(r"[0-9a-f]{64}", key)
    assert os.listdir(tmp_path) == ["authkeys"]


def test_keygen_gives_a_new_key_each_time(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    os.mkdir(first)
    os.mkdir(second)
    assert keygen(first).returncode == 0
    assert keygen(second).returncode == 0
    assert parsed_key(first) != parsed_key(second)
    key = parsed_key(first)
    assert keygen(first, "--force").returncode == 0
    assert parsed_key(first) != key
    assert os.listdir(first) == ["authkeys"]


def test_keygen_output_passes_check(confdir, tmp_path):
    assert keygen(confdir, "--force").returncode == 0
    result = run("check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "index 1, sha1" in result.stdout


def test_keygen_into_missing_directory(tmp_path):
    missing = str(tmp_path / "no" / "such")
    result = keygen(missing)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("heartbeat.py: ")
    assert missing in result.stderr
    assert not os.path.exists(tmp_path / "no")


# ---------------------------------------------------------------- --version and common options

def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert "heartbeat.py" in result.stdout and hb.__version__ in result.stdout
    assert hb.HEARTBEAT_VERSION in result.stdout


def test_no_command_is_a_usage_error():
    result = run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def _subcommands():
    parser = hb.build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(sub.choices)


def test_subcommands_include_check_and_keygen():
    assert {"check", "keygen"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_takes_the_common_options(command):
    result = run(command, "--help")
    assert result.returncode == 0
    for option in SUBCOMMAND_OPTIONS:
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", result.stdout), (command, option)


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_parses_the_common_options(command, tmp_path):
    positionals = {"setup": ["calc"], "meatclient": ["calc"], "hash-password": ["prom"]}.get(command, [])  # required
    args = hb.build_parser().parse_known_args(
        [command, *positionals, "-c", str(tmp_path), "--node", "Prime", "--state-dir", str(tmp_path / "s"),
         "--run-dir", str(tmp_path / "r")])[0]
    assert (args.config_dir, args.node, args.state_dir, args.run_dir) == (
        str(tmp_path), "Prime", str(tmp_path / "s"), str(tmp_path / "r"))


def test_check_and_keygen_accept_all_common_options(confdir, tmp_path):
    assert run("check", *common(confdir, tmp_path)).returncode == 0
    fresh = str(tmp_path / "fresh")
    os.mkdir(fresh)
    result = run("keygen", "--config-dir", fresh, "--node", "prime", "--state-dir", str(tmp_path / "s"),
                 "--run-dir", str(tmp_path / "r"), "--method", "md5")
    assert result.returncode == 0, result.stderr
    assert parsed_key(fresh)[0] == "md5"


def test_daemon_restarts_from_bytecode_kept_in_the_state_dir(tmp_path):
    copy_dir, state = tmp_path / "sbin", tmp_path / "state"
    copy_dir.mkdir()
    source = pathlib.Path(HEARTBEAT).read_text()
    (copy_dir / "heartbeat.py").write_text(source)
    first = restart(copy_dir, state)
    assert first.returncode == 0 and first.stdout.startswith("heartbeat.py "), first
    assert "still running from source" not in first.stdout      # exec'd: same pid, new program
    cached = state / hb.BYTECODE_NAME
    assert cached.read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    # An upgraded heartbeat.py is compiled again, not served from the stale bytecode.
    (copy_dir / "heartbeat.py").write_text(source.replace(f'__version__ = "{hb.__version__}"',
                                                          '__version__ = "9.9.9-upgraded"'))
    os.utime(copy_dir / "heartbeat.py", (1, 1))
    second = restart(copy_dir, state)
    assert second.stdout.startswith("heartbeat.py 9.9.9-upgraded"), second


def test_daemon_runs_from_source_when_the_state_dir_cannot_hold_bytecode(tmp_path):
    copy_dir = tmp_path / "sbin"
    copy_dir.mkdir()
    (copy_dir / "heartbeat.py").write_text(pathlib.Path(HEARTBEAT).read_text())
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state dir should be\n")
    result = restart(copy_dir, not_a_dir)
    assert result.returncode == 0 and result.stdout.strip() == "still running from source", result


def test_meatclient_without_a_daemon_says_so(tmp_path):
    result = run("meatclient", "calc", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 3 and "heartbeat.py:" in result.stderr


def test_prometheus_status_without_a_daemon_is_heartbeat_up_0_and_valid(tmp_path):
    """A textfile-collector cron job keeps working while the daemon is stopped: heartbeat_up 0."""
    parser = pytest.importorskip("prometheus_client.parser")
    result = run("status", "--format", "prometheus", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 3
    samples = [s for family in parser.text_string_to_metric_families(result.stdout) for s in family.samples]
    assert [(s.name, s.value) for s in samples] == [("heartbeat_up", 0.0)]


@pytest.fixture()
def denied_run_dir(tmp_path):
    """A running daemon's control socket this test's client may not open, and the argv prefix that runs
    heartbeat.py as that client. As root: the daemon's own socket (root's only, from ControlServer) in a
    world-searchable run dir, asked by nobody through setpriv. As a user, who may always open a socket
    of their own: the same socket with mode 0, as a socket of root's is to them."""
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv (util-linux) runs the client as nobody")
        run_dir = tempfile.mkdtemp(prefix="hb-denied-", dir="/tmp")       # tmp_path's parents are root's only
        os.chmod(run_dir, 0o755)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    else:
        run_dir, prefix = str(tmp_path), []
    path = os.path.join(run_dir, hb.SOCKET_NAME)
    selector = selectors.DefaultSelector()
    control = hb.ControlServer(path, selector, hb.Timers(), lambda request: {"ok": True})
    if prefix:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    else:
        os.chmod(path, 0)
    yield run_dir, path, prefix
    control.close()
    selector.close()
    if prefix:
        shutil.rmtree(run_dir)


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--format", "prometheus"]], ids=["text", "json", "prometheus"])
def test_status_that_may_not_open_the_socket_says_permission_denied(denied_run_dir, fmt):
    """It said `heartbeat_up 0` (and "stopped") for a daemon that runs: a scrape by the wrong user
    would page someone for a cluster that is fine."""
    run_dir, path, prefix = denied_run_dir
    result = subprocess.run([*prefix, sys.executable, HEARTBEAT, "status", *fmt, "--run-dir", run_dir],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == hb.EXIT_STATUS_UNKNOWN, result
    assert result.stdout == "" and "heartbeat_up" not in result.stdout
    assert result.stderr.startswith(f"heartbeat.py: permission denied on {path}"), result.stderr


def test_standby_that_may_not_open_the_socket_says_permission_denied(denied_run_dir):
    run_dir, path, prefix = denied_run_dir
    result = subprocess.run([*prefix, sys.executable, HEARTBEAT, "standby", "--run-dir", run_dir],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == hb.EXIT_GENERIC, result
    assert result.stderr.startswith(f"heartbeat.py: permission denied on {path}"), result.stderr


TOOL_MODULES = {"html", "shlex", "subprocess", "tempfile", "logging.handlers", "xml.etree.ElementTree", "psutil"}


def test_status_and_check_import_no_module_only_other_subcommands_need(confdir, tmp_path):
    """What the status page, the exports, setup, scripts and log files need is imported where they are
    used: not compiled, loaded and kept by every `heartbeat.py status` (nor by a daemon that never
    uses them)."""
    probe = ("import sys\nsys.path.insert(0, sys.argv[1])\nbare = set(sys.modules)\nimport heartbeat\n"
             "try:\n    heartbeat.main(sys.argv[2:])\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(set(sys.modules) - bare)))\n")
    for subcommand in ("status", "check"):
        result = subprocess.run([sys.executable, "-c", probe, os.path.dirname(HEARTBEAT), subcommand,
                                 *common(confdir, tmp_path)], capture_output=True, text=True, timeout=60, check=False)
        imported = set(result.stdout.split("\n")[-2].split())
        assert "heartbeat" in imported and not imported & TOOL_MODULES, (subcommand, imported & TOOL_MODULES)

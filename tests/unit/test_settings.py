"""heartbeat.py.cf, the settings Heartbeat never had: parsing by the SETTINGS table, defaults, every
error at its PATH:LINE:, `check`, `directives`, the README's table and `setup` (no root needed)."""
import os
import re

import pytest

import heartbeat as hb
from paths import ROOT
from fakes import run, write

HACF = "keepalive 1\ndeadtime 5\nbcast eth0\nnode prime calc\nauto_failback on\n"
HARESOURCES = ("prime 10.9.0.1/24/eth0 webserver::8080::/tmp apache\n"
               "calc IPaddr::10.9.0.2/24 Filesystem::/dev/sdb1::/data Filesystem::/dev/sdc1::/logs\n")
DEFAULTS = dict(interval_ms=10000, timeout_ms=20000, fall=1, migration_threshold=3, failure_timeout_ms=600000)


@pytest.fixture()
def confdir(tmp_path):
    directory = str(tmp_path / "ha.d")
    os.makedirs(os.path.join(directory, "resource.d"))
    write(directory, "ha.cf", HACF)
    write(directory, "authkeys", "auth 1\n1 sha1 a-secret-of-ours\n", 0o600)
    write(directory, "haresources", HARESOURCES)
    for script in ("webserver", "apache", "Filesystem"):
        write(os.path.join(directory, "resource.d"), script, "#!/bin/sh\nexit 0\n", 0o755)
    return directory


def load(confdir, text=None):
    if text is not None:
        write(confdir, hb.SETTINGS_FILE, text)
    return hb.load_config(confdir, "prime").settings


def errors(confdir, text):
    with pytest.raises(hb.ConfigErrors) as caught:
        load(confdir, text)
    return [str(e) for e in caught.value.errors]


def values(monitor):
    return {k: getattr(monitor, k) for k in DEFAULTS}


# ---------------------------------------------------------------- the file and its defaults

def test_absent_file_means_defaults_and_no_monitor(confdir):
    settings = load(confdir)
    assert not settings.present and settings.monitors == []
    assert settings.path == os.path.join(confdir, "heartbeat.py.cf")


def test_monitor_defaults_are_pacemaker_like(confdir):
    (monitor,) = load(confdir, "monitor webserver\n").monitors
    assert values(monitor) == DEFAULTS
    assert (monitor.name, monitor.resource, monitor.group, monitor.lineno) == \
        ("webserver", "webserver::8080::/tmp", "10.9.0.1/24/eth0", 1)


def test_defaults_come_from_the_table(confdir):
    table = {o.name: o.default for o in hb.SETTING_BY_NAME["monitor"].options}
    assert table == {"interval": "10s", "timeout": "20s", "fall": "1", "migration-threshold": "3",
                     "failure-timeout": "10min", "OCF_CHECK_LEVEL": "0", "process": "", "cmdline": "no",
                     "quorum": "1", "quorum_max": "INFINITY", "delay": "0"}


def test_a_status_monitor_watches_no_process(confdir):
    (monitor,) = load(confdir, "monitor webserver\n").monitors
    assert (monitor.process, monitor.cmdline, monitor.quorum, monitor.quorum_max, monitor.delay_ms) == \
        ("", False, 1, 0, 0)


def test_a_process_watch_and_its_options(confdir):
    web, apache = load(confdir, "monitor webserver process=nginx quorum=2 quorum_max=8 delay=1500ms\n"
                                "monitor apache process=/usr/sbin/apache2 cmdline=yes interval=30s\n").monitors
    assert (web.process, web.cmdline, web.quorum, web.quorum_max, web.delay_ms) == ("nginx", False, 2, 8, 1500)
    assert (apache.process, apache.cmdline, apache.quorum, apache.quorum_max, apache.interval_ms) == \
        ("/usr/sbin/apache2", True, 1, 0, 30000)
    assert web.describe() == ("monitor webserver process=nginx quorum=2 quorum_max=8 delay=1500ms interval=10s "
                              "timeout=20s migration-threshold=3 failure-timeout=10min")
    assert apache.describe().startswith("monitor apache process=/usr/sbin/apache2 cmdline=yes quorum=1 "
                                        "quorum_max=INFINITY delay=0 interval=30s")


@pytest.mark.parametrize("line, message", [
    ("monitor webserver process=", "monitor webserver: process= needs a name (e.g. process=nginx)"),
    ("monitor webserver quorum=2", "monitor webserver: quorum only go(es) with process=NAME"),
    ("monitor webserver cmdline=yes delay=1s", "cmdline, delay only go(es) with process=NAME"),
    ("monitor webserver process=nginx fall=2", "monitor webserver: fall belong(s) to status checks; a process "
                                               "watch (process=nginx) runs none"),
    ("monitor webserver process=nginx OCF_CHECK_LEVEL=10", "OCF_CHECK_LEVEL belong(s) to status checks"),
    ("monitor webserver process=/usr/sbin/nginx", "monitor webserver: process=/usr/sbin/nginx: /proc/PID/comm "
                                                  "holds a name without its directory; write process=nginx, or "
                                                  "add cmdline=yes"),
    ("monitor webserver process=a-very-long-daemon-name", "the kernel keeps 15 characters of a process name "
                                                          "(/proc/PID/comm): write process=a-very-long-dae"),
    ("monitor webserver process=nginx quorum=0", "quorum must be a whole number from 1 to 100000"),
    ("monitor webserver process=nginx quorum=3 quorum_max=2", "quorum_max (2) is less than quorum (3)"),
    ("monitor webserver process=nginx quorum_max=0", "quorum_max must be a whole number from 1 to 100000 or "
                                                     "INFINITY"),
    ("monitor webserver process=nginx cmdline=maybe", "cmdline must be yes or no"),
    ("monitor webserver process=nginx delay=2h", "delay must be from 0 to 1h"),
])
def test_each_process_watch_error_names_the_file_and_line(confdir, line, message):
    found = errors(confdir, "# settings\n" + line + "\n")
    assert len(found) == 1 and found[0].startswith(f"{confdir}/heartbeat.py.cf:2: "), found
    assert message in found[0], found


def test_quorum_max_infinity_is_no_maximum(confdir):
    (monitor,) = load(confdir, "monitor webserver process=nginx quorum_max=INFINITY\n").monitors
    assert monitor.quorum_max == 0


def test_every_option_comments_and_blank_lines(confdir):
    text = ("# heartbeat.py's own settings\n\n"
            "monitor webserver interval=1s timeout=1500ms fall=2 migration-threshold=5 failure-timeout=1h  # web\n"
            "   monitor apache interval=0.5 migration-threshold=INFINITY failure-timeout=0\n")
    web, apache = load(confdir, text).monitors
    assert values(web) == dict(interval_ms=1000, timeout_ms=1500, fall=2, migration_threshold=5,
                               failure_timeout_ms=3600000)
    assert web.lineno == 3 and apache.lineno == 4
    assert (apache.interval_ms, apache.migration_threshold, apache.failure_timeout_ms) == (500, 0, 0)
    assert apache.describe() == ("monitor apache interval=500ms timeout=20s fall=1 migration-threshold=INFINITY "
                                 "failure-timeout=0 (never)")


@pytest.mark.parametrize("text, ms", [("2", 2000), ("0.5", 500), ("1500ms", 1500), ("500000us", 500),
                                      ("10s", 10000), ("10sec", 10000), ("5min", 300000), ("2m", 120000),
                                      ("1h", 3600000), ("1hr", 3600000), ("0", 0)])
def test_times_take_heartbeats_syntax_and_pacemakers_suffixes(text, ms):
    assert hb.parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "s", "-1", "10x", "ten", "1e3", "１０s"])
def test_what_is_not_a_time(text):
    with pytest.raises(ValueError):
        hb.parse_duration_ms(text)


def test_ha_cf_times_stay_heartbeats(confdir):
    """10s is heartbeat.py.cf's syntax only: ha.cf must stay readable by Heartbeat 3.0.6."""
    with pytest.raises(ValueError):
        hb.parse_time_ms("10s")


def test_the_whole_resource_word_picks_one_of_two_scripts_of_one_name(confdir):
    (monitor,) = load(confdir, "monitor Filesystem::/dev/sdc1::/logs\n").monitors
    assert monitor.resource == "Filesystem::/dev/sdc1::/logs" and monitor.group == "IPaddr::10.9.0.2/24"


# ---------------------------------------------------------------- errors at PATH:LINE:

@pytest.mark.parametrize("line, message", [
    ("bogus 1", "Unknown directive [bogus]: heartbeat.py.cf knows link_watch, fence_delay, monitor"),
    ("deadtime 10", "'deadtime' is a ha.cf directive: it belongs in ha.cf"),
    ("node calc", "'node' is a ha.cf directive: it belongs in ha.cf"),
    ("monitor", "monitor needs a RESOURCE first"),
    ("monitor interval=1s", "monitor needs a RESOURCE first"),
    ("monitor nosuch", "monitor nosuch: haresources has no resource nosuch (its script resources: "
                       "Filesystem, apache, webserver)"),
    ("monitor 10.9.0.1", "monitor 10.9.0.1: 10.9.0.1 is an IP address resource (haresources line 1)"),
    ("monitor 10.9.0.1/24/eth0", "is an IP address resource"),
    ("monitor IPaddr", "monitor IPaddr: IPaddr is an IP address resource (haresources line 2)"),
    ("monitor 10.9.0.2", "is an IP address resource"),
    ("monitor Filesystem", "Filesystem is several resources in haresources (Filesystem::/dev/sdb1::/data, "
                           "Filesystem::/dev/sdc1::/logs): write the one to watch as it stands there"),
    ("monitor webserver interval=10x", "monitor webserver: interval: '10x' is not a time"),
    ("monitor webserver interval=50ms", "monitor webserver: interval must be from 100ms to 24h"),
    ("monitor webserver timeout=0", "monitor webserver: timeout must be from 100ms to 24h"),
    ("monitor webserver fall=0", "monitor webserver: fall must be a whole number from 1 to 100"),
    ("monitor webserver fall=two", "fall must be a whole number from 1 to 100"),
    ("monitor webserver migration-threshold=0", "migration-threshold must be a whole number from 1 to 1000000 "
                                                "or INFINITY"),
    ("monitor webserver failure-timeout=-1", "failure-timeout: '-1' is not a time"),
    ("monitor webserver bogus=1", "monitor webserver: 'bogus=1' is not one of monitor's options: interval=10s, "
                                  "timeout=20s, fall=1, migration-threshold=3, failure-timeout=10min"),
    ("monitor webserver interval", "'interval' is not one of monitor's options"),
    ("monitor webserver interval=1s interval=2s", "monitor webserver: interval is given twice"),
])
def test_each_error_names_the_file_and_line(confdir, line, message):
    found = errors(confdir, "# settings\n" + line + "\n")
    path = os.path.join(confdir, "heartbeat.py.cf")
    assert len(found) == 1 and found[0].startswith(f"{path}:2: "), found
    assert message in found[0], found


def test_a_resource_monitored_twice(confdir):
    found = errors(confdir, "monitor webserver\nmonitor webserver::8080::/tmp interval=1s\n")
    assert found == [f"{confdir}/heartbeat.py.cf:2: monitor webserver::8080::/tmp: webserver::8080::/tmp is "
                     "monitored already at line 1"]


def test_every_problem_of_the_file_at_once(confdir):
    found = errors(confdir, "monitor webserver fall=0 timeout=x\nkeepalive 2\nmonitor apache\nmonitor ghost\n")
    assert [e.split(": ", 1)[0].rsplit(":", 1)[1] for e in found] == ["1", "1", "2", "4"]


def test_a_broken_haresources_is_reported_without_follow_on_monitor_errors(confdir):
    write(confdir, "haresources", "prime nosuchscript\n")
    found = errors(confdir, "monitor webserver\nmonitor webserver fall=0\n")
    assert any("haresources:1: Cannot locate resource script nosuchscript" in e for e in found)
    assert [e for e in found if "heartbeat.py.cf" in e] == \
        [f"{confdir}/heartbeat.py.cf:2: monitor webserver: fall must be a whole number from 1 to 100"]


def test_an_unreadable_settings_file_is_an_error(confdir):
    os.mkdir(os.path.join(confdir, hb.SETTINGS_FILE))
    with pytest.raises(hb.ConfigErrors) as caught:
        load(confdir)
    assert str(caught.value).startswith(f"{confdir}/heartbeat.py.cf: cannot open")


def test_binary_garbage_is_a_line_error_not_a_crash(confdir):
    with open(os.path.join(confdir, hb.SETTINGS_FILE), "wb") as handle:
        handle.write(b"monitor \xff\xfe\x00\n")
    found = errors(confdir, None)
    assert found and found[0].startswith(f"{confdir}/heartbeat.py.cf:1: monitor ")


# ---------------------------------------------------------------- check, directives, README, setup

def mtimes(directory):
    """The mtime of each file of DIRECTORY (test_cli's snapshot() walks the whole tree)."""
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in sorted(os.listdir(directory))}


def test_check_shows_the_monitors(confdir):
    write(confdir, hb.SETTINGS_FILE, "monitor webserver interval=1s\n")
    result = run("check", "-c", confdir, "--node", "prime")
    assert result.returncode == 0, result.stderr
    assert f"settings:  {confdir}/heartbeat.py.cf" in result.stdout
    assert ("monitor webserver interval=1s timeout=20s fall=1 migration-threshold=3 failure-timeout=10min "
            "(line 1; webserver::8080::/tmp of group 10.9.0.1/24/eth0)") in result.stdout


def test_check_shows_a_process_watch(confdir):
    write(confdir, hb.SETTINGS_FILE, "monitor webserver process=python3 quorum=1 delay=500ms\n")
    result = run("check", "-c", confdir, "--node", "prime")
    assert result.returncode == 0, result.stderr
    assert ("monitor webserver process=python3 quorum=1 quorum_max=INFINITY delay=500ms interval=10s timeout=20s "
            "migration-threshold=3 failure-timeout=10min (line 1; webserver::8080::/tmp of group") in result.stdout


def test_check_without_the_file(confdir):
    result = run("check", "-c", confdir, "--node", "prime")
    assert result.returncode == 0 and "no heartbeat.py.cf: defaults, no service monitoring" in result.stdout


def test_check_refuses_a_broken_file_and_changes_nothing(confdir):
    write(confdir, hb.SETTINGS_FILE, "monitor webserver\nmonitor apache interval=fast\n")
    before = mtimes(confdir)
    result = run("check", "-c", confdir, "--node", "prime")
    assert result.returncode == hb.EXIT_NOT_CONFIGURED
    assert result.stderr.splitlines() == [
        f"{confdir}/heartbeat.py.cf:2: monitor apache: interval: 'fast' is not a time (write e.g. 10s, 1500ms, "
        "5min or 1h)",
        "heartbeat.py: configuration error, nothing was changed"]
    assert mtimes(confdir) == before


def test_directives_lists_the_settings_after_hacf():
    result = run("directives")
    assert result.returncode == 0
    hacf, settings = result.stdout.split("\nheartbeat.py.cf (heartbeat.py's own settings; Heartbeat 3.0.6 never "
                                         "reads this file):\n")
    assert "| `deadtime` |" in hacf and "monitor" not in hacf
    assert settings.strip() == hb.settings_table()
    assert "| | `migration-threshold=` | 3 |" in settings


def test_readme_carries_both_generated_tables():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for marker, table in (("directives", hb.directives_table()), ("settings", hb.settings_table())):
        block = re.search(rf"<!-- {marker}: generated by \./heartbeat\.py directives -->\n(.*?)\n<!-- /{marker} -->",
                          readme, re.S)
        assert block and block.group(1) == table, f"README's {marker} table differs from `heartbeat.py directives`"


def test_setup_copies_the_settings_file_with_the_rest(confdir):
    write(confdir, hb.SETTINGS_FILE, "monitor webserver\n")
    config = hb.load_config(confdir, "prime")
    calls = []

    def fake_run(argv, timeout_s):
        calls.append(argv)
        return hb.CommandResult(0, "calc\n")
    done = hb.setup_peer(config, "calc", None, "root", [], keys=False, dry_run=False, run=fake_run)
    scp = [argv for argv in calls if argv[0] == "scp"]
    assert len(scp) == 1 and scp[0][-2] == os.path.abspath(confdir) and "-r" in scp[0]
    assert "heartbeat.py.cf" in done[-1]


# ---------------------------------------------------------------- link_watch

def test_link_watch_is_on_by_default_and_can_be_turned_off(confdir):
    assert load(confdir).link_watch
    assert not load(confdir, "link_watch off\n").link_watch
    assert load(confdir, "link_watch yes\n").link_watch


@pytest.mark.parametrize("first, second", [("link_watch no", "link_watch yes"), ("fence_delay 5s", "fence_delay 0"),
                                           ("http_listen 9694", "http_listen 0.0.0.0:9100"),
                                           ("notify_timeout 30s", "notify_timeout 30s")])
def test_a_single_valued_setting_given_twice_is_refused_at_the_second_line(confdir, first, second):
    """Before, the second line silently won: an http_listen added at the end of the file moved /metrics."""
    name = first.split()[0]
    (error,) = errors(confdir, f"{first}\nmonitor webserver\n{second}\n")
    assert error == (f"{confdir}/heartbeat.py.cf:3: {name} is given twice (first at line 1): keep one {name} line")


@pytest.mark.parametrize("line, words", [("link_watch", "needs a on|off first"),
                                         ("link_watch maybe", "'maybe' is not a boolean"),
                                         ("link_watch off now", "takes one value")])
def test_bad_link_watch_lines_are_errors_at_their_line(confdir, line, words):
    (error,) = errors(confdir, "monitor webserver\n" + line + "\n")
    assert error.startswith(f"{confdir}/heartbeat.py.cf:2: ") and words in error, error


def test_fence_delay_takes_a_time(confdir):
    assert load(confdir).fence_delay_ms == 0
    assert load(confdir, "fence_delay 5s\n").fence_delay_ms == 5000
    assert load(confdir, "fence_delay 10min\n").fence_delay_ms == hb.MAX_FENCE_DELAY_MS == 600000
    (error,) = errors(confdir, "fence_delay soon\n")
    assert error.startswith(f"{confdir}/heartbeat.py.cf:1: fence_delay: 'soon' is not a time"), error


# ---------------------------------------------------------------- http_listen and notify_timeout

@pytest.mark.parametrize("text, address", [
    ("9694", ("127.0.0.1", 9694)), ("0.0.0.0:9694", ("0.0.0.0", 9694)), ("[::]:80", ("::", 80)),
    ("[::1]:9694", ("::1", 9694)), ("192.168.1.1:9100", ("192.168.1.1", 9100)), ("off", None)])
def test_http_listen_takes_a_port_an_address_and_port_or_off(confdir, text, address):
    assert load(confdir, f"http_listen {text}\n").http_listen == address
    assert load(confdir, "").http_listen is None                     # off unless told
    assert load(confdir, "").notify_timeout_ms == 30000


@pytest.mark.parametrize("line, message", [
    ("http_listen 99999", "is not [ADDRESS:]PORT with a port from 1 to 65535"),
    ("http_listen prime:9694", "'prime' is not an IP address"),
    ("http_listen", "http_listen needs a [ADDRESS:]PORT|off first"),
    ("notify_timeout soon", "notify_timeout: 'soon' is not a time"),
    ("notify_timeout 5s 6s", "notify_timeout takes one value"),
    ("notify_timeout 0", "notify_timeout: '0' must be from 1s to 10min (a hook needs a moment to start"),
    ("notify_timeout 999ms", "notify_timeout: '999ms' must be from 1s to 10min"),
    ("notify_timeout 601s", "notify_timeout: '601s' must be from 1s to 10min"),
    ("notify_timeout 99999999999999999999999h", "notify_timeout: '99999999999999999999...' is more than a year"),
    ("notify_timeout " + "9" * 400, "is more than a year"),
    ("fence_delay 10min1ms", "fence_delay: '10min1ms' is not a time"),
    ("fence_delay 601s", "fence_delay: '601s' must be from 0 to 10min (until then a node that holds no group "
                         "neither fences nor takes over)"),
    ("fence_delay 99999999999999h", "fence_delay: '99999999999999h' is more than a year"),
    ("http_listen " + "9" * 5000, "is not [ADDRESS:]PORT with a port from 1 to 65535"),
    ("monitor webserver interval=" + "9" * 400 + "ms", "webserver: interval: '99999999999999999999...' is more"),
    ("monitor webserver fall=" + "1" * 5000, "monitor webserver: fall must be a whole number from 1 to 100"),
], ids=lambda value: value[:40])
def test_bad_listen_and_timeout_lines_name_the_file_and_line(confdir, line, message):
    [error] = errors(confdir, f"# mine\n{line}\n")
    assert error.startswith(os.path.join(confdir, hb.SETTINGS_FILE) + ":2: ") and message in error, error


def test_notify_timeout_bounds_are_accepted(confdir):
    assert load(confdir, "notify_timeout 1s\n").notify_timeout_ms == hb.MIN_NOTIFY_TIMEOUT_MS == 1000
    assert load(confdir, "notify_timeout 10min\n").notify_timeout_ms == hb.MAX_NOTIFY_TIMEOUT_MS == 600000


def test_check_refuses_numbers_without_bounds_and_changes_nothing(confdir):
    """`check` accepted notify_timeout 99999999999999999999999h, shown as 359999999999999976196217503744ms."""
    write(confdir, hb.SETTINGS_FILE, "notify_timeout 99999999999999999999999h\nfence_delay 99999999999999h\n"
                                     "http_listen 9694\nhttp_listen 9100\n")
    write(confdir, "ha.cf", HACF.replace("deadtime 5", "deadtime " + "9" * 400))
    before = mtimes(confdir)
    result = run("check", "-c", confdir, "--node", "prime")
    assert result.returncode == hb.EXIT_NOT_CONFIGURED and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        f"{confdir}/ha.cf:2: '99999999999999999999...' is more than a year: no time here may be that long",
        f"{confdir}/heartbeat.py.cf:1: notify_timeout: '99999999999999999999...' is more than a year: no time here "
        "may be that long",
        f"{confdir}/heartbeat.py.cf:2: fence_delay: '99999999999999h' is more than a year: no time here may be "
        "that long",
        f"{confdir}/heartbeat.py.cf:4: http_listen is given twice (first at line 3): keep one http_listen line",
        "heartbeat.py: configuration error, nothing was changed"]
    assert mtimes(confdir) == before

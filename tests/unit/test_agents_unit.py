"""OCF resource agents without root: 3.0.6's resource.d names mapped to the agents' parameters,
OCF::TYPE::INSTANCE, ocf:PROVIDER:AGENT, the environment an agent gets, its exit codes, its monitor.

The real agents of resource-agents run here where they can run as any user (Dummy keeps its state
in a file); a recording agent in an OCF root of the test's own shows what an agent is given."""
import os
import textwrap

import pytest

import heartbeat as hb

REAL_AGENTS = os.path.isdir(os.path.join(hb.OCF_ROOT, "resource.d", "heartbeat"))
needs_agents = pytest.mark.skipif(not REAL_AGENTS, reason="resource-agents is not installed")

RECORDER_METADATA = """<?xml version="1.0"?>
<resource-agent name="recorder" version="1.0">
<parameters>
<parameter name="target" required="1"><content type="string"/></parameter>
<parameter name="note"><content type="string"/></parameter>
</parameters>
<actions>
<action name="start" timeout="7s"/><action name="stop" timeout="8s"/>
<action name="monitor" timeout="9s" interval="10s"/><action name="validate-all" timeout="5s"/>
<action name="meta-data" timeout="5s"/>
</actions>
</resource-agent>
"""
# Writes its environment to $target.ACTION.env; exits with the code in $target.ACTION.rc if there is one
# (printing an exit reason as Pacemaker's agents do), else 0 (monitor: 7 until started).
RECORDER = textwrap.dedent("""\
    #!/bin/sh
    if [ "$1" = meta-data ]; then cat "$(dirname "$0")/recorder.xml"; exit 0; fi
    env > "$OCF_RESKEY_target.$1.env"
    echo "recorder $1 for $OCF_RESOURCE_INSTANCE" >&2
    if [ -f "$OCF_RESKEY_target.$1.rc" ]; then
        echo "${OCF_EXIT_REASON_PREFIX}$1 was told to fail" >&2; exit "$(cat "$OCF_RESKEY_target.$1.rc")"
    fi
    case "$1" in
        start) touch "$OCF_RESKEY_target" ;;
        stop) rm -f "$OCF_RESKEY_target" ;;
        monitor) [ -f "$OCF_RESKEY_target" ] || exit 7 ;;
    esac
    exit 0
    """)


class Lines:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda message, *a: self.lines.append(f"{level}: {message}")


@pytest.fixture
def ocf_root(tmp_path, monkeypatch):
    """An OCF root of the test's own with ocf:test:recorder in it."""
    root = tmp_path / "ocf"
    agents = root / "resource.d" / "test"
    agents.mkdir(parents=True)
    (agents / "recorder.xml").write_text(RECORDER_METADATA)
    (agents / "recorder").write_text(RECORDER)
    (agents / "recorder").chmod(0o755)
    monkeypatch.setattr(hb, "OCF_ROOT", str(root))
    return root


def confdir(tmp_path, haresources, settings=""):
    directory = tmp_path / "ha.d"
    (directory / "resource.d").mkdir(parents=True)
    (directory / "ha.cf").write_text("keepalive 1\ndeadtime 5\nbcast lo\nnode prime calc\nauto_failback on\n"
                                     "logfacility none\n")
    (directory / "authkeys").write_text("auth 1\n1 sha1 key\n")
    os.chmod(directory / "authkeys", 0o600)
    (directory / "haresources").write_text(haresources)
    if settings:
        (directory / "heartbeat.py.cf").write_text(settings)
    return directory


def problems(directory):
    with pytest.raises(hb.ConfigErrors) as caught:
        hb.load_config(str(directory), "prime")
    return [str(error) for error in caught.value.errors]


# ---------------------------------------------------------------- 3.0.6's names, as its wrappers map them

@needs_agents
@pytest.mark.parametrize("word, params, instance", [
    ("Filesystem::/dev/drbd0::/data::ext4", {"device": "/dev/drbd0", "directory": "/data", "fstype": "ext4"},
     "Filesystem_/dev/drbd0"),
    ("Filesystem::srv:/data1::/data1::nfs::ro", {"device": "srv:/data1", "directory": "/data1", "fstype": "nfs",
                                                "options": "ro"}, "Filesystem_srv:/data1"),
    ("MailTo::root@localhost", {"email": "root@localhost"}, "MailTo"),
    ("MailTo::root@localhost::Failover", {"email": "root@localhost", "subject": "Failover"}, "MailTo"),
    ("IPsrcaddr::10.9.0.5", {"ipaddress": "10.9.0.5"}, "IPsrcaddr"),
    ("SendArp::10.9.0.5/eth0", {"ip": "10.9.0.5", "nic": "eth0"}, "SendArp_10.9.0.5"),
    ("Delay", {}, "Delay_10"),
    ("Delay::1::0", {"startdelay": "1", "stopdelay": "0"}, "Delay_1"),
    ("portblock::tcp::80,443::block", {"protocol": "tcp", "portno": "80,443", "action": "block"},
     "portblock_tcp_80,443_block"),
    ("apache", {}, "apache_"),
    ("apache::/etc/apache2/apache2.conf", {"configfile": "/etc/apache2/apache2.conf"},
     "apache_/etc/apache2/apache2.conf"),
    ("WinPopup", {"hostfile": "hosts"}, "WinPopup"),
    ("AudibleAlarm::prime::calc", {"nodelist": "prime calc"}, "AudibleAlarm"),
    ("WAS::9080", {"port": "9080"}, "WAS"),
])
def test_a_306_name_runs_its_agent_with_the_parameters_its_wrapper_set(tmp_path, word, params, instance):
    res = hb.parse_resource(word, [str(tmp_path / "resource.d")], str(tmp_path))
    assert isinstance(res, hb.AgentResource)
    assert (res.kind, res.params, res.instance) == (f"ocf:heartbeat:{word.partition('::')[0]}", params, instance)
    assert res.path == os.path.join(hb.OCF_ROOT, "resource.d", "heartbeat", word.partition("::")[0])


@needs_agents
def test_a_script_of_that_name_still_wins(tmp_path):
    """A node with Heartbeat's own resource.d (or drbd-utils' drbddisk) behaves as before."""
    scripts = tmp_path / "resource.d"
    scripts.mkdir()
    (scripts / "Filesystem").write_text("#!/bin/sh\nexit 0\n")
    (scripts / "Filesystem").chmod(0o755)
    res = hb.parse_resource("Filesystem::/dev/drbd0::/data::ext4", [str(scripts)], str(tmp_path))
    assert isinstance(res, hb.ScriptResource) and res.path == str(scripts / "Filesystem")


@needs_agents
def test_check_refuses_what_the_wrapper_or_the_agent_refuses_at_path_line(tmp_path):
    directory = confdir(tmp_path, "prime Filesystem::/dev/x\n"
                                  "prime IPsrcaddr\n"
                                  "calc SendArp::10.9.0.5\n"
                                  "calc ocf:heartbeat:NoSuchAgent\n"
                                  "calc ocf:heartbeat:Dummy::bogus=1\n"
                                  "calc ocf:heartbeat:Filesystem::device=/dev/x\n"
                                  "calc ocf:heartbeat:Dummy::state\n")
    found = problems(directory)
    where = str(directory / "haresources")
    assert found == [
        f"{where}:1: Filesystem takes Filesystem::DEVICE::DIRECTORY[::FSTYPE[::OPTIONS]] (1 argument given; "
        "3.0.6's resource.d/Filesystem refuses it too)",
        f"{where}:2: IPsrcaddr takes IPsrcaddr::IPADDRESS (0 arguments given; 3.0.6's resource.d/IPsrcaddr "
        "refuses it too)",
        f"{where}:3: SendArp takes SendArp::IP/INTERFACE: '10.9.0.5' has no /INTERFACE",
        f"{where}:4: ocf:heartbeat:NoSuchAgent: there is no OCF agent {hb.OCF_ROOT}/resource.d/heartbeat/NoSuchAgent "
        f"(see ls {hb.OCF_ROOT}/resource.d/heartbeat)",
        f"{where}:5: ocf:heartbeat:Dummy::bogus=1: ocf:heartbeat:Dummy has no parameter bogus (its parameters: "
        "state, fake)",
        f"{where}:6: ocf:heartbeat:Filesystem::device=/dev/x: ocf:heartbeat:Filesystem requires directory, fstype",
        f"{where}:7: 'state' in ocf:heartbeat:Dummy::state is not name=value (write "
        "ocf:heartbeat:Dummy::name=value::name=value)",
    ]


def test_without_resource_agents_the_message_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(hb, "OCF_ROOT", str(tmp_path / "nothing"))
    found = problems(confdir(tmp_path, "prime MailTo::root@localhost\n"))
    assert len(found) == 1 and "install the resource-agents package" in found[0]
    assert found[0].startswith(f"{tmp_path}/ha.d/haresources:1: MailTo (3.0.6's resource.d/MailTo) needs the "
                               f"OCF agent {tmp_path}/nothing/resource.d/heartbeat/MailTo")


def test_ocf_type_instance_reads_its_instance_file_and_runs_no_shell_code(tmp_path, ocf_root):
    directory = confdir(tmp_path, "prime OCF::recorder::one\n")
    conf = directory / "conf" / "OCF" / "recorder"
    conf.mkdir(parents=True)
    (conf / "one").write_text("# 3.0.6 sources this file\nOCF_RESKEY_target='/tmp/a b'  # quoted\n"
                              'OCF_RESKEY_note="x"\n')
    res = hb.load_config(str(directory), "prime").groups[0].resources[0]
    assert (res.kind, res.params, res.instance) == ("ocf:test:recorder", {"target": "/tmp/a b", "note": "x"}, "one")
    (conf / "one").write_text("OCF_RESKEY_target=/tmp/x\nrm -rf /tmp/nothing\n")
    assert problems(directory) == [f"{directory}/haresources:1: OCF::recorder::one: {conf}/one:2: write one "
                                   "OCF_RESKEY_name=value per line (heartbeat.py runs no shell code from "
                                   "instance files)"]


def test_ocf_words_warn_that_306_cannot_run_them_and_secrets_belong_in_instance_files(tmp_path, ocf_root):
    directory = confdir(tmp_path, "prime ocf:test:recorder::target=/tmp/t::note=n\n"
                                  "calc OCF::recorder::two\n")
    conf = directory / "conf" / "OCF" / "recorder"
    conf.mkdir(parents=True)
    (conf / "two").write_text("OCF_RESKEY_target=/tmp/u\n")
    warnings = [str(w) for w in hb.load_config(str(directory), "prime").warnings]
    assert warnings == [f"{directory}/haresources:1: warning: ocf:test:recorder::target=/tmp/t::note=n: Heartbeat "
                        "3.0.6 cannot run ocf:test:recorder (it knows its resource.d names and OCF::TYPE::INSTANCE): "
                        "every node of this cluster must run heartbeat.py"]


# ---------------------------------------------------------------- running them

def started(tmp_path, haresources, settings=""):
    config = hb.load_config(str(confdir(tmp_path, haresources, settings)), "prime")
    lines = Lines()
    return config, lines, hb.Resources(config, lines, rsctmp_dir=str(tmp_path / "rsctmp"))


def environment(path):
    return dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)


def test_an_agent_gets_what_pacemaker_gives_it_and_no_ha_cf_value(tmp_path, ocf_root, monkeypatch):
    monkeypatch.setenv("HA_keepalive", "leaked from the caller")
    target = tmp_path / "held"
    config, lines, resources = started(tmp_path, f"prime ocf:test:recorder::target={target}::note=a,b\n")
    group = config.groups[0]
    assert resources.acquire_group(group) is None and target.exists()
    env = environment(f"{target}.start.env")
    assert {k: v for k, v in env.items() if k.startswith(("OCF_", "HA_"))} == {
        "OCF_ROOT": str(ocf_root), "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "0",
        "OCF_RESOURCE_INSTANCE": f"recorder_{target}", "OCF_RESOURCE_TYPE": "recorder",
        "OCF_RESOURCE_PROVIDER": "test", "OCF_RESKEY_target": str(target), "OCF_RESKEY_note": "a,b",
        "OCF_RESKEY_CRM_meta_timeout": "120000", "OCF_EXIT_REASON_PREFIX": "ocf-exit-reason:",
        "HA_RSCTMP": str(tmp_path / "rsctmp"), "HA_LOGFACILITY": "none", "HA_LOGFILE": "", "HA_DEBUGLOG": "",
        "HA_DATEFMT": "%Y/%m/%d_%T "}
    assert environment(f"{target}.monitor.env")["OCF_CHECK_LEVEL"] == "0"     # the probe before start
    assert f"info: recorder(recorder_{target})[start]: recorder start for recorder_{target}" in lines.lines
    assert resources.release_group(group) is True and not target.exists()


def test_a_failed_start_names_the_ocf_code_and_the_agents_exit_reason(tmp_path, ocf_root):
    target = tmp_path / "held"
    (tmp_path / "held.start.rc").write_text("5\n")
    config, lines, resources = started(tmp_path, f"prime ocf:test:recorder::target={target}\n")
    error = resources.acquire_group(config.groups[0])
    assert error == f"ocf:test:recorder::target={target}: start returned 5 (OCF_ERR_INSTALLED): start was told to fail"
    assert f"error: ocf:test:recorder start of recorder_{target} returned 5 (OCF_ERR_INSTALLED): " \
           "start was told to fail" in lines.lines
    assert os.path.exists(f"{target}.stop.env")       # what was started is stopped again


def test_only_a_monitor_saying_7_is_surely_stopped(tmp_path, ocf_root):
    """0 running, 7 cleanly stopped; any other code says nothing sure (a failed stop stays a failure)."""
    target = tmp_path / "held"
    config, lines, resources = started(tmp_path, f"prime ocf:test:recorder::target={target}\n")
    res = config.groups[0].resources[0]
    assert resources.is_stopped(res) and not resources.is_running(res)
    target.touch()
    assert resources.is_running(res) and not resources.is_stopped(res)
    (tmp_path / "held.monitor.rc").write_text("1\n")
    assert not resources.is_running(res) and not resources.is_stopped(res)
    result = resources.run_script(res, "status", timeout_s=2, quiet=True, check_level=20)
    assert hb.check_result_word(res, result) == "failed (1 (OCF_ERR_GENERIC))"
    assert environment(f"{target}.monitor.env")["OCF_CHECK_LEVEL"] == "20"
    assert environment(f"{target}.monitor.env")["OCF_RESKEY_CRM_meta_timeout"] == "2000"


@needs_agents
def test_the_real_dummy_agent_starts_answers_and_stops(tmp_path):
    state = tmp_path / "dummy.state"
    config, lines, resources = started(tmp_path, f"prime ocf:heartbeat:Dummy::state={state}\n")
    res = config.groups[0].resources[0]
    assert hb.check_result_word(res, resources.run_script(res, "status")) == "stopped"
    assert resources.acquire_group(config.groups[0]) is None and state.exists()
    assert hb.check_result_word(res, resources.run_script(res, "status")) == "running"
    assert resources.release_group(config.groups[0]) is True and not state.exists()
    assert f"info: Running {res.path} start (ocf:heartbeat:Dummy::state={state})" in lines.lines


# ---------------------------------------------------------------- monitor lines and check

def test_a_monitor_of_an_agent_takes_the_timeout_it_advertises_and_a_check_level(tmp_path, ocf_root):
    settings = "monitor ocf:test:recorder interval=2s OCF_CHECK_LEVEL=10\n"
    config, _, _ = started(tmp_path, "prime ocf:test:recorder::target=/tmp/t\n", settings)
    monitor, = config.settings.monitors
    assert (monitor.interval_ms, monitor.timeout_ms, monitor.ocf_check_level) == (2000, 9000, 10)
    config, _, _ = started(tmp_path / "again", "prime ocf:test:recorder::target=/tmp/t\n",
                           "monitor ocf:test:recorder timeout=3s\n")
    assert config.settings.monitors[0].timeout_ms == 3000        # given: it wins


def test_check_level_is_refused_for_a_script(tmp_path):
    directory = confdir(tmp_path, "prime first\n", "monitor first OCF_CHECK_LEVEL=10\n")
    (directory / "resource.d" / "first").write_text("#!/bin/sh\necho running\n")
    (directory / "resource.d" / "first").chmod(0o755)
    assert problems(directory) == [f"{directory}/heartbeat.py.cf:1: monitor first: OCF_CHECK_LEVEL is for OCF "
                                   "agents; first is a script"]


def test_check_reports_a_failed_validate_all_as_a_warning(tmp_path, ocf_root):
    target = tmp_path / "held"
    (tmp_path / "held.validate-all.rc").write_text("6\n")
    config, _, _ = started(tmp_path, f"prime ocf:test:recorder::target={target}\n")
    assert [str(w) for w in hb.validate_agents(config)] == [
        f"{config.config_dir}/haresources:1: warning: ocf:test:recorder::target={target}: validate-all returned "
        "6 (OCF_ERR_CONFIGURED): validate-all was told to fail (this may be fine on a node that does not hold "
        "the group now)"]
    assert not target.exists()


def test_the_readme_lists_every_306_name_as_check_spells_it():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    missing = [w.usage for w in hb.HEARTBEAT_WRAPPERS.values() if f"`{w.usage.replace('|', chr(92) + '|')}`"
               not in readme]
    assert missing == []

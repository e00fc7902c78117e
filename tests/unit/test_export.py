"""export-pacemaker: golden files for the three formats, checked by Pacemaker's own tools."""
import os
import re
import shutil
import subprocess
import sys

import pytest

import heartbeat as hb
from fakes import pcs_applied_to_a_cib_file
from paths import GOLDEN, HEARTBEAT

FIXED_DIR = "/etc/ha.d"

TUTORIAL = {
    "ha.cf": "debugfile /var/log/ha-debug\nlogfile /var/log/ha-log\nlogfacility     local0\nkeepalive 2\n"
             "deadtime 10\nudpport 694\nbcast     eth0\nnode    prime\nnode    calc\nauto_failback on\n",
    "haresources": "prime 192.168.1.100 apache2\n",
    "init.d": ["apache2"],
    "resource.d": [],
}
RICH = {
    "ha.cf": "keepalive 500ms\ndeadtime 5\nudpport 694\nbcast eth0 eth1\nucast eth2 10.0.0.2\nnode prime\n"
             "node calc\nauto_failback off\nping 10.0.0.254\nstonith_host * baytech 10.0.0.3 login secret\n",
    "haresources": "prime 192.168.1.100 IPaddr2::10.0.0.5/24/eth0/10.0.0.255 Filesystem::/dev/sdb1::/data::ext4 \\\n"
                   "      apache2\ncalc 192.168.1.101/24 mysql\n",
    "init.d": ["apache2", "mysql"],
    "resource.d": ["Filesystem"],
}

DUAL_STACK = dict(TUTORIAL, **{
    "ha.cf": TUTORIAL["ha.cf"].replace("bcast     eth0", "ucast6 eth0 fd00::2\nmcast6 eth1 ff12::1:2:3:4 694 1 0"),
    "haresources": "prime 192.168.1.100 IPv6addr::2001:db8:0:0:0:0:0:100/64/eth0 IPv6addr::2001:db8::101 apache2\n",
})

IPFAIL = dict(TUTORIAL, **{
    "ha.cf": TUTORIAL["ha.cf"] + "ping 10.0.0.254 10.0.0.253\nping_group uplink 10.0.1.1 10.0.1.2\n"
                                 "deadping 20\nrespawn hacluster /usr/lib/heartbeat/ipfail\n",
})

MONITORED = dict(IPFAIL, **{
    "heartbeat.py.cf": "monitor apache2 interval=5s timeout=30s fall=2 migration-threshold=2 failure-timeout=2min\n",
})

IPMI_PASSWORD = "S3cr$t;pw'x"      # noqa: S105 - a test device's, with shell characters
FENCED_IPMI = dict(TUTORIAL, **{        # external/ipmi: hostname ipaddr userid passwd interface
    "ha.cf": TUTORIAL["ha.cf"] + f"stonith_host * external/ipmi calc 10.0.0.12 admin {IPMI_PASSWORD} lanplus\n",
    "heartbeat.py.cf": "fence_delay 5s\n",
})
FENCED_PEERS = dict(TUTORIAL, **{
    "ha.cf": TUTORIAL["ha.cf"] + "stonith_host prime null calc\nstonith_host calc null prime\n",
})
needs_ipmi_plugin = pytest.mark.skipif(
    not (shutil.which("stonith") or os.access("/usr/lib/stonith/plugins/external/ipmi", os.X_OK)),
    reason="cluster-glue's external/ipmi is not installed")


def make(tmp_path, files):
    conf, initd = tmp_path / "ha.d", tmp_path / "init.d"
    (conf / "resource.d").mkdir(parents=True)
    initd.mkdir()
    (conf / "ha.cf").write_text(files["ha.cf"])
    (conf / "authkeys").write_text("auth 1\n1 sha1 secret\n")
    os.chmod(conf / "authkeys", 0o600)
    (conf / "haresources").write_text(files["haresources"])
    if "heartbeat.py.cf" in files:
        (conf / "heartbeat.py.cf").write_text(files["heartbeat.py.cf"])
    for directory, names in ((initd, files["init.d"]), (conf / "resource.d", files["resource.d"])):
        for name in names:
            (directory / name).write_text("#!/bin/sh\necho running\n")
            os.chmod(directory / name, 0o755)
    return hb.load_config(str(conf), "prime", [str(conf / "resource.d"), str(initd)]), str(tmp_path)


def normalised(text, tmp):
    return text.replace(os.path.join(tmp, "ha.d"), FIXED_DIR).replace(os.path.join(tmp, "init.d"), "/etc/init.d")


@pytest.mark.parametrize("name, files", [("tutorial", TUTORIAL), ("rich", RICH), ("ipfail", IPFAIL),
                                         pytest.param("fenced_ipmi", FENCED_IPMI, marks=needs_ipmi_plugin),
                                         ("fenced_peers", FENCED_PEERS)])
@pytest.mark.parametrize("fmt", ["pcs", "crm", "xml"])
def test_golden(tmp_path, name, files, fmt):
    config, tmp = make(tmp_path, files)
    text, warnings, wrappers = hb.export_pacemaker(config, fmt, unit_dirs=())
    rendered = normalised(text, tmp)
    for wrapper, script in sorted(wrappers.items()):
        rendered += f"\n#### wrapper {wrapper}\n" + normalised(script, tmp)
    rendered += "\n#### warnings\n" + "\n".join(normalised(str(w), tmp) for w in warnings) + "\n"
    path = os.path.join(GOLDEN, f"{name}.{fmt}")
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w") as handle:
            handle.write(rendered)
    with open(path) as handle:
        assert rendered == handle.read()


def test_ipv6_addresses_are_exported_as_ipaddr2(tmp_path):
    config, _ = make(tmp_path, DUAL_STACK)
    text, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive ip_2001_db8__100 ocf:heartbeat:IPaddr2 params ip=2001:db8::100 cidr_netmask=64 nic=eth0" in text
    assert "primitive ip_2001_db8__101 ocf:heartbeat:IPaddr2 params ip=2001:db8::101 op" in text
    assert "group grp_prime_1 ip_192_168_1_100 ip_2001_db8__100 ip_2001_db8__101 svc_apache2" in text
    assert [w.message for w in warnings if "ucast6" in w.message or "mcast6" in w.message] == [
        "warning: ucast6 specifics (group, ttl, peers) are not needed by knet; only the link is exported",
        "warning: mcast6 specifics (group, ttl, peers) are not needed by knet; only the link is exported"]


def test_mapping_rules(tmp_path):
    config, _ = make(tmp_path, RICH)
    text, warnings, wrappers = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive ip_10_0_0_5 ocf:heartbeat:IPaddr2 params ip=10.0.0.5 cidr_netmask=24 nic=eth0 " \
           "broadcast=10.0.0.255" in text
    assert "group grp_prime_1 ip_192_168_1_100 ip_10_0_0_5 hb-Filesystem svc_apache2" in text
    assert "location loc_grp_prime_1_prime grp_prime_1 100: prime" in text
    assert "rsc_defaults resource-stickiness=200" in text          # auto_failback off: above the home score
    assert "lsb:apache2" in text and "stonith-enabled=true" in text            # stonith_host: a fence device
    assert list(wrappers) == ["hb-Filesystem"]
    assert "'/dev/sdb1' '/data' 'ext4'" in wrappers["hb-Filesystem"] or "/dev/sdb1 /data ext4" in \
        wrappers["hb-Filesystem"]
    lines = {(os.path.basename(w.path), w.lineno) for w in warnings}
    assert ("ha.cf", 9) in lines and ("haresources", 1) in lines and ("ha.cf", 10) not in lines
    units = tmp_path / "units"
    units.mkdir()
    (units / "apache2.service").write_text("[Service]\n")
    text, _, _ = hb.export_pacemaker(config, "crm", unit_dirs=(str(units),))
    assert "primitive svc_apache2 systemd:apache2" in text and "lsb:mysql" in text


def test_tutorial_stickiness_is_below_the_home_preference(tmp_path):
    config, _ = make(tmp_path, TUTORIAL)
    text, _, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    assert "resource-stickiness=50" in text and "prefers prime=100" in text
    assert "totem token=10000" in text and "two_node=1" in text


ODD_NAMES = dict(TUTORIAL, **{
    "ha.cf": "keepalive 2\ndeadtime 10\nbcast eth0\ncluster $(touch${IFS}pwned)\nnode prime\nnode it's;calc\n",
    "haresources": "it's;calc 192.168.1.100 apache2\n",
})


def test_pcs_quotes_node_and_cluster_names(tmp_path):
    config, _ = make(tmp_path, ODD_NAMES)
    assert (config.hacf.cluster, config.hacf.nodes) == ("$(touch${IFS}pwned)", ["prime", "it's;calc"])
    text, _, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    script = tmp_path / "cluster.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], timeout=10).returncode == 0
    assert "pcs cluster setup '$(touch${IFS}pwned)' prime " in text
    assert "prefers 'it'\"'\"'s;calc'=100" in text
    # Run the pcs lines with the <...> placeholders filled in and pcs recording its arguments.
    calls = tmp_path / "calls"
    commands = "\n".join(re.sub(r"<[^>]*>", "ADDR", line) for line in text.splitlines() if line.startswith("pcs "))
    stub = f'pcs() {{ printf "%s|" "$@" >> {calls}; echo >> {calls}; }}\n'
    result = subprocess.run(["sh", "-e", "-c", stub + commands], cwd=tmp_path, capture_output=True, text=True,
                            timeout=10, env=dict(os.environ, CIB="cib.xml"))
    assert result.returncode == 0, result.stderr
    recorded = calls.read_text().splitlines()
    assert "cluster|setup|$(touch${IFS}pwned)|prime|addr=ADDR|it's;calc|addr=ADDR|transport|" in recorded[0]
    assert recorded[-1].endswith("|prefers|it's;calc=100|")
    assert not (tmp_path / "pwned").exists()


def test_crm_quotes_node_names_as_crmsh_splits_its_lines(tmp_path):
    """Issue 26: the crm export wrote node names as they are; crmsh splits a line as a shell does."""
    import shlex
    config, _ = make(tmp_path, ODD_NAMES)
    text, _, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    nodes = [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("node ")]
    assert nodes == [["prime"], ["it's;calc"]]
    locations = [shlex.split(line) for line in text.splitlines() if line.startswith("location ")]
    assert [words[-1] for words in locations if words[-2].endswith(":")] == ["it's;calc"]


def test_cli_writes_wrappers_next_to_the_output_and_keeps_config_errors(tmp_path):
    config, tmp = make(tmp_path, RICH)
    for name in RICH["init.d"]:                      # the CLI looks in /etc/init.d: use resource.d instead
        shutil.copy(tmp_path / "init.d" / name, tmp_path / "ha.d" / "resource.d" / name)
    out = tmp_path / "out" / "cluster.sh"
    out.parent.mkdir()
    result = subprocess.run([sys.executable, HEARTBEAT, "export-pacemaker", "-c", config.config_dir, "-o", str(out)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(out, os.X_OK) and os.access(out.parent / "hb-Filesystem", os.X_OK)
    assert os.stat(out).st_mode & 0o777 == 0o700            # stonith_host: the device's password is in it
    assert f"{config.config_dir}/ha.cf:9: warning: 'ping' is not exported" in result.stderr
    assert subprocess.run(["sh", "-n", str(out)], timeout=10).returncode == 0
    (tmp_path / "ha.d" / "ha.cf").write_text(RICH["ha.cf"] + "deadtime 1s\n")
    broken = subprocess.run([sys.executable, HEARTBEAT, "export-pacemaker", "-c", config.config_dir],
                            capture_output=True, text=True, timeout=30)
    assert broken.returncode == 6 and f"{config.config_dir}/ha.cf:11: " in broken.stderr


def test_output_temporary_file_is_created_exclusively_never_through_a_planted_symlink(tmp_path, monkeypatch):
    out, victim = tmp_path / "cluster.sh", tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(hb.os, "urandom", lambda n: b"\xab" * n)
    planted = [tmp_path / f"cluster.sh.{os.getpid()}.tmp", tmp_path / f"cluster.sh.{'ab' * 8}.tmp"]
    for link in planted:                          # the old predictable name, and the one urandom now gives
        link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        hb.write_file_atomic(str(out), b"new\n", 0o755)
    assert victim.read_text() == "precious\n" and not out.exists() and all(p.is_symlink() for p in planted)
    monkeypatch.undo()
    hb.write_file_atomic(str(out), b"new\n", 0o755)
    assert out.read_text() == "new\n" and victim.read_text() == "precious\n" and not out.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cluster.sh", "victim"] + [p.name for p in planted])


def test_a_failed_write_leaves_no_temporary_file_and_export_names_the_path(tmp_path, monkeypatch, capsys):
    def no_space(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(hb.os, "fsync", no_space)
    with pytest.raises(OSError):
        hb.write_file_atomic(str(tmp_path / "out"), b"data", 0o644)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    config, _ = make(tmp_path, TUTORIAL)
    shutil.copy(tmp_path / "init.d" / "apache2", tmp_path / "ha.d" / "resource.d" / "apache2")
    missing = tmp_path / "no-such-dir" / "cluster.sh"
    assert hb.main(["export-pacemaker", "-c", config.config_dir, "-o", str(missing)]) == 1
    err = capsys.readouterr().err                # the first file it writes there: the wrapper hb-apache2
    assert f"heartbeat.py: cannot write {missing.parent}/hb-apache2: No such file or directory" in err


def test_lsb_wrapper_runs_the_script_with_its_arguments(tmp_path):
    script = tmp_path / "fs"
    log = tmp_path / "calls"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$4" = status ] && echo "fs is not running"\nexit 0\n')
    os.chmod(script, 0o755)
    res = hb.ScriptResource("fs::/dev/sdb1::/data::ext4", "fs", ["/dev/sdb1", "/data", "ext4"], str(script), False)
    wrapper = tmp_path / "hb-fs"
    wrapper.write_text(hb.lsb_wrapper("hb-fs", res))
    os.chmod(wrapper, 0o755)
    assert subprocess.run([str(wrapper), "start"], timeout=10).returncode == 0
    assert subprocess.run([str(wrapper), "status"], timeout=10).returncode == 3
    assert log.read_text().splitlines() == ["/dev/sdb1 /data ext4 start", "/dev/sdb1 /data ext4 status"]


def test_lsb_wrapper_gives_the_script_the_node_name(tmp_path):
    """Heartbeat's scripts get HA_CURHOST; under Pacemaker the wrapper sets it to uname -n."""
    script = tmp_path / "who"
    script.write_text('#!/bin/sh\necho "$HA_CURHOST"\n')
    os.chmod(script, 0o755)
    wrapper = tmp_path / "hb-who"
    wrapper.write_text(hb.lsb_wrapper("hb-who", hb.ScriptResource("who", "who", [], str(script), False)))
    os.chmod(wrapper, 0o755)
    env = {k: v for k, v in os.environ.items() if k != "HA_CURHOST"}
    out = subprocess.run([str(wrapper), "start"], capture_output=True, text=True, timeout=10, env=env).stdout
    assert out.strip() == os.uname().nodename


@pytest.mark.skipif(not shutil.which("crm_verify"), reason="crm_verify (pacemaker-cli-utils) is not installed")
@pytest.mark.parametrize("files", [TUTORIAL, RICH, IPFAIL, MONITORED, DUAL_STACK,
                                   pytest.param(FENCED_IPMI, marks=needs_ipmi_plugin), FENCED_PEERS])
def test_crm_verify_accepts_the_xml(tmp_path, files):
    config, _ = make(tmp_path, files)
    text, _, _ = hb.export_pacemaker(config, "xml", unit_dirs=())
    if 'name="stonith-enabled" value="true"' in text:
        # With fencing on, nodes that have never been seen (an empty status) are to be fenced at start-up,
        # which crm_verify warns about: check the configuration as the cluster sees it once both are up.
        members = "".join(f'<node_state id="{n}" uname="{name}" in_ccm="true" crmd="online" join="member" '
                          f'expected="member"/>' for n, name in enumerate(config.hacf.nodes, 1))
        text = text.replace("<cib ", '<cib have-quorum="1" dc-uuid="1" ').replace("<status />",
                                                                                f"<status>{members}</status>")
        assert text.count("<node_state ") == len(config.hacf.nodes)
    path = tmp_path / "cib.xml"
    path.write_text(text)
    result = subprocess.run(["crm_verify", "--xml-file", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


@pytest.mark.skipif(not (shutil.which("pcs") and shutil.which("cibadmin") and shutil.which("crm_verify")),
                    reason="pcs and pacemaker-cli-utils are not installed")
@pytest.mark.parametrize("files", [TUTORIAL, RICH, IPFAIL, MONITORED, DUAL_STACK,
                                   pytest.param(FENCED_IPMI, marks=needs_ipmi_plugin), FENCED_PEERS])
def test_pcs_applies_the_script_to_a_cib_file(tmp_path, files):
    config, _ = make(tmp_path, files)
    text, _, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    cib = pcs_applied_to_a_cib_file(text, tmp_path)
    configured = cib.read_text()
    for group in config.groups:
        for res in group.resources:
            if isinstance(res, hb.IPResource):
                assert f'value="{res.ip}"' in configured
    fenced = "true" if config.hacf.stonith_lines else "false"
    assert f'name="stonith-enabled" value="{fenced}"' in configured


def test_ipfail_is_exported_as_ping_clones_and_location_rules(tmp_path):
    config, _ = make(tmp_path, IPFAIL)
    text, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive ping_nodes ocf:pacemaker:ping params host_list='10.0.0.254 10.0.0.253' name=pingd " \
           "multiplier=1000 dampen=4s op monitor interval=10s" in text
    assert "clone ping_nodes-clone ping_nodes" in text and "clone ping_uplink-clone ping_uplink" in text
    assert "location loc_grp_prime_1_pingd grp_prime_1 rule pingd: defined pingd" in text
    assert "location loc_grp_prime_1_ping_uplink grp_prime_1 rule 1000: ping_uplink gt 0" in text
    assert not [w for w in warnings if "ping" in w.message or "respawn" in w.message]
    without, warnings, _ = hb.export_pacemaker(make(tmp_path / "plain", RICH)[0], "crm", unit_dirs=())
    assert "ocf:pacemaker:ping" not in without
    assert [w.message for w in warnings if "'ping'" in w.message] == [
        "warning: 'ping' is not exported: ping nodes move nothing without ipfail (respawn ... ipfail)"]


def test_monitor_settings_become_the_op_monitor_and_its_meta_attributes(tmp_path):
    config, _ = make(tmp_path, MONITORED)
    text, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive svc_apache2 lsb:apache2 op monitor interval=5s timeout=30s " \
           "meta migration-threshold=2 failure-timeout=2min" in text
    assert "primitive ip_192_168_1_100 ocf:heartbeat:IPaddr2 params ip=192.168.1.100 op monitor interval=10s " \
           "timeout=20s\n" in text                        # not monitored: the export's default, no meta
    assert [(os.path.basename(w.path), w.lineno) for w in warnings if "fall=2" in w.message] == \
        [("heartbeat.py.cf", 1)]
    xml, _, _ = hb.export_pacemaker(config, "xml", unit_dirs=())
    assert '<nvpair id="svc_apache2-meta_attributes-migration-threshold" name="migration-threshold" ' \
           'value="2" />' in xml
    pcs, _, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    assert "op monitor interval=5s timeout=30s meta migration-threshold=2 failure-timeout=2min --group" in pcs


@needs_ipmi_plugin
def test_external_ipmi_becomes_fence_ipmilan_that_avoids_the_node_it_fences(tmp_path):
    config, _ = make(tmp_path, FENCED_IPMI)
    crm, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    quoted = "'S3cr$t;pw'\"'\"'x'"
    assert (f"primitive fence_ipmi_calc stonith:fence_ipmilan params ip=10.0.0.12 username=admin "
            f"password={quoted} lanplus=1 pcmk_host_list=calc op monitor interval=60s timeout=20s") in crm
    assert "location loc_fence_ipmi_calc_calc fence_ipmi_calc -inf: calc" in crm
    assert "property stonith-enabled=true priority-fencing-delay=5s" in crm      # fence_delay 5s
    assert "rsc_defaults resource-stickiness=50 priority=1" in crm
    assert "Fencing is OFF" not in crm and "stonith-enabled=false" not in crm
    pcs, pcs_warnings, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    assert (f'pcs -f "$CIB" stonith create fence_ipmi_calc fence_ipmilan ip=10.0.0.12 username=admin '
            f"password={quoted} lanplus=1 pcmk_host_list=calc op monitor") in pcs
    assert 'pcs -f "$CIB" constraint location fence_ipmi_calc avoids calc' in pcs
    assert 'pcs -f "$CIB" property set stonith-enabled=true' in pcs and "stonith-enabled=false" not in pcs
    xml, xml_warnings, _ = hb.export_pacemaker(config, "xml", unit_dirs=())
    assert '<primitive id="fence_ipmi_calc" class="stonith" type="fence_ipmilan">' in xml
    assert 'name="password" value="S3cr$t;pw\'x"' in xml.replace("&apos;", "\'")
    assert '<rsc_location id="loc_fence_ipmi_calc_calc" rsc="fence_ipmi_calc" node="calc" score="-INFINITY" />' in xml
    for listed in (warnings, pcs_warnings, xml_warnings):
        assert not [w for w in listed if "stonith" in w.message]
        assert not [w for w in listed if "S3cr" in str(w) or "admin" in str(w)]
    # The script runs the password through the shell unchanged.
    calls = tmp_path / "calls"
    line = next(x for x in pcs.splitlines() if "stonith create" in x)
    stub = f'pcs() {{ printf "%s|" "$@" >> {calls}; }}\n'
    assert subprocess.run(["sh", "-e", "-c", stub + line], timeout=10, env=dict(os.environ, CIB="c")).returncode == 0
    assert f"|password={IPMI_PASSWORD}|" in calls.read_text()


def test_stonith_host_per_node_devices_fence_the_peer_and_run_on_the_node_that_used_them(tmp_path):
    config, _ = make(tmp_path, FENCED_PEERS)
    crm, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive fence_null_calc stonith:null params hostlist=calc pcmk_host_list=calc op monitor" in crm
    assert "primitive fence_null_prime stonith:null params hostlist=prime pcmk_host_list=prime op monitor" in crm
    assert "location loc_fence_null_calc_calc fence_null_calc -inf: calc" in crm          # prime fences calc
    assert "location loc_fence_null_prime_prime fence_null_prime -inf: prime" in crm      # calc fences prime
    assert "property stonith-enabled=true\n" in crm and "priority-fencing-delay" not in crm
    assert not [w for w in warnings if "stonith" in w.message]


def test_devices_no_node_uses_are_warned_and_none_left_keeps_fencing_off(tmp_path, monkeypatch):
    files = dict(TUTORIAL, **{"ha.cf": TUTORIAL["ha.cf"] + "stonith_host prime null calc\n"
                                                           "stonith_host * null prime calc\n"
                                                           "stonith_host nosuchnode null calc\n"})
    config, _ = make(tmp_path, files)
    crm, warnings, _ = hb.export_pacemaker(config, "crm", unit_dirs=())
    assert "primitive fence_null_prime_calc stonith:null params hostlist='prime calc' " \
           "pcmk_host_list='prime calc'" in crm
    assert "fence_null_calc " not in crm and " -inf: " not in crm     # fences both: runs anywhere
    assert [(w.lineno, w.message) for w in warnings if "device" in w.message] == [
        (11, "warning: this null device is not exported: no node of ha.cf uses it "
             "(a later line for the same node wins)"),
        (13, "warning: this null device is not exported: no node of ha.cf uses it "
             "(a later line for the same node wins)")]
    # Without an exportable device the export stays as without STONITH lines, warnings included.
    def unknown(plugin):
        raise ValueError(f"Invalid Stonith type [{plugin}]")
    monkeypatch.setattr(hb, "stonith_config_names", unknown)
    pcs, warnings, _ = hb.export_pacemaker(config, "pcs", unit_dirs=())
    assert "stonith-enabled=false" in pcs and "Fencing is OFF" in pcs and "stonith create fence_" not in pcs
    messages = "\n".join(w.message for w in warnings)
    assert "warning: 'stonith_host' is not exported" in messages
    assert "warning: this null device is not exported: Invalid Stonith type [null]" in messages


@pytest.mark.parametrize("fmt", ["pcs", "crm", "xml"])
def test_the_fence_devices_are_found_once_per_export(tmp_path, monkeypatch, fmt):
    """Finding a device's parameters may run cluster-glue's `stonith -n`: once per device and export."""
    config, _ = make(tmp_path, FENCED_PEERS)
    asked, names = [], hb.stonith_config_names

    def counted(plugin):
        asked.append(plugin)
        return names(plugin)
    monkeypatch.setattr(hb, "stonith_config_names", counted)
    text, _, _ = hb.export_pacemaker(config, fmt, unit_dirs=())
    assert "fence_null_calc" in text and asked == ["null", "null"]

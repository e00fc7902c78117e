"""export-pacemaker of a DRBD-era group run through resource-agents (issue 25): Pacemaker's own tools
accept it, and each 3.0.6 wrapper word becomes its ocf:heartbeat agent with the wrapper's parameters.
Also what such a line may hold: whatever 3.0.6's wrapper runs.

The line is the one test_mixed_agents.py runs on a live mixed cluster. No script of those names is in
the node's resource.d or init.d here, so heartbeat.py maps them itself, as 3.0.6's wrappers in
/etc/ha.d/resource.d do: Filesystem::DEV::DIR::FSTYPE::OPTIONS -> device, directory, fstype, options;
MailTo::EMAIL -> email; IPsrcaddr::IP -> ipaddress.
"""
import os
import re
import shutil
import subprocess

import pytest

import heartbeat as hb
from fakes import pcs_applied_to_a_cib_file

HACF = ("keepalive 500ms\ndeadtime 3\nudpport 694\nbcast eth0\nnode prime\nnode calc\nauto_failback on\n")
LINE = ("prime IPaddr2::10.77.0.100/24/eth0 Filesystem::/srv/disk.img::/srv/data::ext4::loop "
        "MailTo::root@localhost IPsrcaddr::10.77.0.100 apache2\n")
EXPECTED = {             # agent -> the parameters it must get
    "ocf:heartbeat:Filesystem": {"device": "/srv/disk.img", "directory": "/srv/data", "fstype": "ext4",
                                 "options": "loop"},
    "ocf:heartbeat:MailTo": {"email": "root@localhost"},
    "ocf:heartbeat:IPsrcaddr": {"ipaddress": "10.77.0.100"},
}
AGENTS = "/usr/lib/ocf/resource.d/heartbeat"
needs_agents = pytest.mark.skipif(not all(os.path.exists(f"{AGENTS}/{name}") for name in
                                          ("Filesystem", "MailTo", "IPsrcaddr", "IPaddr2")),
                                  reason="resource-agents is not installed")


def config(tmp_path, line=LINE):
    conf, initd = tmp_path / "ha.d", tmp_path / "init.d"
    (conf / "resource.d").mkdir(parents=True)
    initd.mkdir()
    (conf / "ha.cf").write_text(HACF)
    (conf / "authkeys").write_text("auth 1\n1 sha1 secret\n")
    os.chmod(conf / "authkeys", 0o600)
    (conf / "haresources").write_text(line)
    (initd / "apache2").write_text("#!/bin/sh\necho running\n")
    os.chmod(initd / "apache2", 0o755)
    return hb.load_config(str(conf), "prime", [str(conf / "resource.d"), str(initd)])


def primitives(cib_text):
    """{agent "class:provider:type": {param: value}} of the CIB's primitives (one of each agent here)."""
    found = {}
    for match in re.finditer(r'<primitive ([^>]*)>(.*?)</primitive>', cib_text, re.S):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        agent = ":".join(x for x in (attrs.get("class"), attrs.get("provider"), attrs.get("type")) if x)
        inst = re.search(r"<instance_attributes[^>]*>(.*?)</instance_attributes>", match.group(2), re.S)
        params = dict(re.findall(r'<nvpair [^>]*name="([^"]*)" value="([^"]*)"', inst.group(1))) if inst else {}
        found[agent] = params
    return found


def order_of(cib_text):
    """The agents of the group's members, in the group's order."""
    group = re.search(r"<group [^>]*>(.*?)</group>", cib_text, re.S).group(1)
    return [":".join(x for x in re.search(r'class="([^"]*)"(?: provider="([^"]*)")? type="([^"]*)"', m).groups()
                     if x) for m in re.findall(r"<primitive [^>]*>", group)]


def test_the_wrapper_words_become_ocf_heartbeat_agents_with_the_wrappers_parameters(tmp_path):
    text, _warnings, _ = hb.export_pacemaker(config(tmp_path), "xml", unit_dirs=())
    found = primitives(text)
    for agent, params in EXPECTED.items():
        assert agent in found, (agent, sorted(found))
        assert {k: v for k, v in found[agent].items() if k in params} == params, (agent, found[agent])
    assert found["ocf:heartbeat:IPaddr2"]["ip"] == "10.77.0.100"
    assert order_of(text) == ["ocf:heartbeat:IPaddr2", "ocf:heartbeat:Filesystem", "ocf:heartbeat:MailTo",
                              "ocf:heartbeat:IPsrcaddr", "lsb:apache2"]
    crm, _, _ = hb.export_pacemaker(config(tmp_path / "crm"), "crm", unit_dirs=())
    assert re.search(r"primitive \S+ ocf:heartbeat:Filesystem params device=/srv/disk.img directory=/srv/data "
                     r"fstype=ext4 options=loop", crm), crm


@needs_agents
@pytest.mark.skipif(not shutil.which("crm_verify"), reason="crm_verify (pacemaker-cli-utils) is not installed")
def test_crm_verify_accepts_the_xml(tmp_path):
    text, _, _ = hb.export_pacemaker(config(tmp_path), "xml", unit_dirs=())
    path = tmp_path / "cib.xml"
    path.write_text(text)
    result = subprocess.run(["crm_verify", "--xml-file", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


@needs_agents
@pytest.mark.skipif(not (shutil.which("pcs") and shutil.which("cibadmin") and shutil.which("crm_verify")),
                    reason="pcs and pacemaker-cli-utils are not installed")
def test_pcs_applies_the_script_to_a_cib_file(tmp_path):
    """pcs checks each `resource create` of an OCF agent against the agent's meta-data: an unknown or
    missing parameter is refused (the export forces only the LSB script, which is not installed here)."""
    text, _, _ = hb.export_pacemaker(config(tmp_path), "pcs", unit_dirs=())
    creates = [line for line in text.splitlines() if " resource create " in line and " ocf:" in line]
    assert len(creates) == 4 and not [line for line in creates if "--force" in line], creates
    cib = pcs_applied_to_a_cib_file(text, tmp_path)
    found = primitives(cib.read_text())
    for agent, params in EXPECTED.items():
        assert {k: v for k, v in found.get(agent, {}).items() if k in params} == params, (agent, found.get(agent))


@needs_agents
def test_filesystem_without_fstype_is_accepted_as_3_0_6_runs_it(tmp_path):
    """3.0.6's resource.d/Filesystem takes DEVICE::DIRECTORY[::FSTYPE[::OPTIONS]] and runs the agent
    without OCF_RESKEY_fstype; the agent then mounts with mount's own detection (seen: start 0,
    monitor 0, stop 0 with device, directory and options=loop only), although its meta-data marks
    fstype required="1"."""
    res = config(tmp_path, "prime 10.77.0.100 Filesystem::/dev/drbd0::/data apache2\n").groups[0].resources[1]
    assert (res.instance, res.params) == ("Filesystem_/dev/drbd0", {"device": "/dev/drbd0", "directory": "/data"})

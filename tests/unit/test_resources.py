"""Resources without root: the ip(8) fallback's argv, rtnetlink requests, ARP and NA frames, script
calling conventions."""
import ipaddress
import os
import re
import signal
import socket
import struct
import time

import pytest

import heartbeat as hb
from fakes import scripts_config


class FakeRun:
    """Records argv and answers `ip -o addr show` from a fixed table of addresses (the ip(8)
    fallback, used where rtnetlink cannot be opened)."""

    def __init__(self, addresses):
        self.addresses = list(addresses)      # (iface, "address/prefix", label)
        self.calls = []

    def __call__(self, argv, timeout_s, env=None):
        self.calls.append(argv)
        if argv == ["ip", "-o", "addr", "show"]:
            lines = [f"{i + 2}: {iface}    inet6 {addr} scope global nodad \\       valid_lft forever"
                     if ":" in addr else
                     f"{i + 2}: {iface}    inet {addr} brd 10.0.0.255 scope global {label}\\       valid_lft forever"
                     for i, (iface, addr, label) in enumerate(self.addresses)]
            return hb.CommandResult(0, "\n".join(lines) + "\n")
        if argv[2:4] == ["addr", "add"]:
            label = argv[argv.index("label") + 1] if "label" in argv else argv[argv.index("dev") + 1]
            self.addresses.append((argv[argv.index("dev") + 1], argv[4], label))
            return hb.CommandResult(0, "")
        if argv[2:4] == ["addr", "del"]:
            self.addresses = [a for a in self.addresses if a[1] != argv[4]]
            return hb.CommandResult(0, "")
        return hb.CommandResult(0, "")


class NoProbe:
    """Stands in for ConflictProbe: no frame leaves this machine from a test without namespaces."""

    def __init__(self, held, current):
        self.held, self.problems = held, []

    def conflicts(self):
        return {}

    def close(self):
        pass


def make(addresses):
    run = FakeRun(addresses)
    ips = hb.IPAddresses(run, kernel=hb.IpCommand(run), prober=NoProbe)
    ips.announce = lambda held, rounds=None: run.calls.append(["announce", *held])
    return run, ips


def adds(run):
    return [c for c in run.calls if c[2:4] == ["addr", "add"]]


def test_interface_found_by_subnet_and_label_is_next_alias():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0"), ("eth0", "10.0.0.50/24", "eth0:0"),
                     ("eth1", "192.168.5.1/24", "eth1")])
    assert ips.add([hb.parse_ip_spec("10.0.0.100")])[0] == []
    assert adds(run) == [["ip", "-4", "addr", "add", "10.0.0.100/24", "dev", "eth0", "label", "eth0:1"]]
    assert ["announce", ("eth0", "10.0.0.100")] in run.calls


def test_explicit_prefix_iface_and_broadcast_are_used():
    run, ips = make([("eth1", "192.168.5.1/24", "eth1")])
    ips.add([hb.parse_ip_spec("192.168.5.9/25/eth1/192.168.5.127")])
    assert adds(run) == [["ip", "-4", "addr", "add", "192.168.5.9/25", "brd", "192.168.5.127", "dev", "eth1",
                          "label", "eth1:0"]]


def test_ipv6_interface_found_by_prefix_and_added_without_dad():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0"), ("eth0", "fe80::1/64", "eth0"),
                     ("eth1", "2001:db8:5::1/64", "eth1")])
    res = hb.parse_resource("IPv6addr::2001:db8:5::10", [])
    assert ips.add([res])[0] == []
    assert adds(run) == [["ip", "-6", "addr", "add", "2001:db8:5::10/64", "dev", "eth1", "nodad"]]
    assert ["announce", ("eth1", "2001:db8:5::10")] in run.calls
    assert ips.held(res) == "eth1"


def test_a_batch_adds_each_label_once_and_reports_each_failure():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0"), ("eth0", "2001:db8::1/64", "eth0")])
    batch = [hb.parse_ip_spec("10.0.0.100"), hb.parse_resource("IPv6addr::2001:db8::100/64", []),
             hb.parse_ip_spec("172.16.0.5"), hb.parse_ip_spec("10.0.0.101")]
    failed, probe = ips.add(batch)
    assert [(res.ip, "no interface has a subnet containing 172.16.0.5" in why) for res, why in failed] == \
        [("172.16.0.5", True)]
    assert [argv[4] for argv in adds(run)] == ["10.0.0.100/24", "2001:db8::100/64", "10.0.0.101/24"]
    assert [argv[-1] for argv in adds(run) if "label" in argv] == ["eth0:0", "eth0:1"]
    assert run.calls.count(["announce", ("eth0", "10.0.0.100"), ("eth0", "2001:db8::100"),
                            ("eth0", "10.0.0.101")]) == 1


class CountingKernel:
    """The kernel's address table in memory; `read` counts the entries its dumps hand out as the
    caller goes through them: the work of a batch, whatever the machine's speed."""

    def __init__(self, addresses):
        self.entries = [hb.AddressEntry(iface, ipaddress.ip_interface(address), label)
                        for iface, address, label in addresses]
        self.read = 0

    def dump(self):
        kernel = self

        class Dump(list):
            def __iter__(self):
                for entry in list.__iter__(self):
                    kernel.read += 1
                    yield entry
        return Dump(self.entries)

    def change(self, kind, changes):
        if kind == hb.RTM_NEWADDR:
            self.entries += [hb.AddressEntry(c.iface, c.address, c.label or c.iface) for c in changes]
        else:
            gone = {(c.iface, c.address) for c in changes}
            self.entries = [e for e in self.entries if (e.iface, e.address) not in gone]
        return [""] * len(changes)


def vips(first, count):
    return [hb.parse_ip_spec(f"10.77.{n // 250 + 1}.{n % 250 + 1}/16/eth0") for n in range(first, first + count)]


def test_a_batch_goes_through_the_addresses_once_not_once_per_address():
    """A group of N addresses on a machine with M: O(N + M) entries read, not N x M (1,000 VIPs
    took 1.15 s to move, the release going through all of the machine's addresses for each)."""
    kernel = CountingKernel([("lo", "127.0.0.1/8", "lo"), ("eth0", "10.77.0.1/24", "eth0")])
    ips = hb.IPAddresses(kernel=kernel, prober=NoProbe)
    ips.announce = lambda held, rounds=None: None
    mine, theirs = vips(0, 400), vips(400, 400)
    assert ips.add(mine)[0] == []
    kernel.read = 0
    assert ips.add(theirs)[0] == []                         # the peer's group, beside ours
    assert kernel.read <= 2 * (len(kernel.entries) + len(theirs)), kernel.read
    kernel.read = 0
    ips.remove(mine)
    assert kernel.read <= 2 * (len(kernel.entries) + len(mine)), kernel.read
    assert sorted(str(e.address.ip) for e in kernel.entries if e.iface == "eth0")[:2] == ["10.77.0.1", "10.77.2.151"]
    assert len(kernel.entries) == 2 + len(theirs)


def test_over_a_thousand_ipv4_addresses_on_one_interface_each_get_a_label():
    """The lowest free alias each (eth0:0, eth0:1, ...), beyond eth0:999 too."""
    kernel = CountingKernel([("eth0", "10.77.0.1/24", "eth0"), ("eth0", "10.77.0.2/24", "eth0:1")])
    ips = hb.IPAddresses(kernel=kernel, prober=NoProbe)
    ips.announce = lambda held, rounds=None: None
    assert ips.add(vips(0, 1100))[0] == []
    labels = [e.label for e in kernel.entries[2:]]
    assert labels == ["eth0:0"] + [f"eth0:{n}" for n in range(2, 1101)]


def test_address_already_present_is_not_added_twice():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0"), ("eth0", "10.0.0.100/24", "eth0:0")])
    assert ips.add([hb.parse_ip_spec("10.0.0.100/24")]) == ([], None)
    assert not adds(run)


def test_release_of_a_missing_address_is_not_an_error():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0")])
    ips.remove([hb.parse_ip_spec("10.0.0.100")])
    assert not [c for c in run.calls if c[2:4] == ["addr", "del"]]


def test_release_deletes_with_the_configured_prefix():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0"), ("eth0", "10.0.0.100/24", "eth0:0"),
                     ("eth0", "2001:db8::100/64", "eth0")])
    ips.remove([hb.parse_ip_spec("10.0.0.100"), hb.parse_resource("IPv6addr::2001:db8::100", [])])
    assert ["ip", "-4", "addr", "del", "10.0.0.100/24", "dev", "eth0"] in run.calls
    assert ["ip", "-6", "addr", "del", "2001:db8::100/64", "dev", "eth0"] in run.calls


def test_no_matching_subnet_is_a_clear_error():
    run, ips = make([("eth0", "10.0.0.1/24", "eth0")])
    [(_, why)], probe = ips.add([hb.parse_ip_spec("172.16.0.5")])
    assert probe is None
    assert "no interface has a subnet containing 172.16.0.5" in why


def test_address_requests_are_acknowledged_and_create_only():
    new = hb.address_request(hb.RTM_NEWADDR, 7, 3, ipaddress.ip_interface("10.0.0.100/24"), "eth0:0", "10.0.0.255")
    length, kind, flags, seq, _ = hb.NLMSGHDR.unpack_from(new)
    assert (length, kind, seq) == (len(new), hb.RTM_NEWADDR, 7)
    assert flags == hb.NLM_F_REQUEST | hb.NLM_F_ACK | hb.NLM_F_CREATE | hb.NLM_F_EXCL   # never replaces
    family, prefixlen, ifa_flags, _, index = hb.IFADDRMSG.unpack_from(new, hb.NLMSGHDR.size)
    assert (family, prefixlen, ifa_flags, index) == (socket.AF_INET, 24, 0, 3)
    attrs = hb.netlink_attributes(new, hb.NLMSGHDR.size + hb.IFADDRMSG.size)
    assert attrs[hb.IFA_LOCAL] == attrs[hb.IFA_ADDRESS] == bytes([10, 0, 0, 100])
    assert attrs[hb.IFA_BROADCAST] == bytes([10, 0, 0, 255]) and attrs[hb.IFA_LABEL] == b"eth0:0\0"
    six = hb.address_request(hb.RTM_NEWADDR, 8, 3, ipaddress.ip_interface("2001:db8::100/64"))
    family, prefixlen, ifa_flags, _, _ = hb.IFADDRMSG.unpack_from(six, hb.NLMSGHDR.size)
    assert (family, prefixlen, ifa_flags) == (socket.AF_INET6, 64, hb.IFA_F_NODAD)   # serves at once
    gone = hb.address_request(hb.RTM_DELADDR, 9, 3, ipaddress.ip_interface("10.0.0.100/24"), "eth0:0")
    assert hb.NLMSGHDR.unpack_from(gone)[2] == hb.NLM_F_REQUEST | hb.NLM_F_ACK
    assert hb.IFA_LABEL not in hb.netlink_attributes(gone, hb.NLMSGHDR.size + hb.IFADDRMSG.size)


def test_netlink_acknowledgements_and_errors_are_read_per_request():
    ack = struct.pack("=IHHII", 36, hb.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", 0) + b"\0" * 16
    refused = struct.pack("=IHHII", 36, hb.NLMSG_ERROR, 0, 6, 0) + struct.pack("=i", -17) + b"\0" * 16
    events = hb.parse_netlink(ack + refused)
    assert [(e.kind, e.seq, e.ifindex) for e in events] == [("error", 5, 0), ("error", 6, 17)]


def test_unsolicited_neighbour_advertisement():
    mac = bytes.fromhex("020000aabbcc")
    na = hb.neighbour_advertisement(mac, "2001:db8::100")
    assert len(na) == 32
    kind, code, checksum, flags = struct.unpack("!BBHI", na[:8])
    assert (kind, code, checksum) == (136, 0, 0)                     # the kernel fills the checksum
    assert flags == 0x20000000                                       # override; not solicited, not router
    assert na[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::100")
    assert na[24:26] == bytes([2, 1]) and na[26:32] == mac           # target link-layer address option


def test_consecutive_addresses_form_one_step():
    ip1, ip2, ip3 = hb.parse_ip_spec("10.0.0.1"), hb.parse_resource("IPv6addr::2001:db8::1", []), \
        hb.parse_ip_spec("10.0.0.3")
    script = hb.ScriptResource("web", "web", [], "/bin/true", lsb=False)
    assert hb.in_steps([ip1, ip2, script, ip3]) == [[ip1, ip2], [script], [ip3]]


def test_gratuitous_arp_frames():
    mac = bytes.fromhex("020000aabbcc")
    request = hb.arp_frame(mac, "10.0.0.100", reply=False)
    reply = hb.arp_frame(mac, "10.0.0.100", reply=True)
    for frame, op in ((request, 1), (reply, 2)):
        assert len(frame) == 42
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, opcode = struct.unpack("!HHBBH", frame[14:22])
        assert (htype, ptype, hlen, plen, opcode) == (1, 0x0800, 6, 4, op)
        assert frame[22:28] == mac
        assert frame[28:32] == frame[38:42] == bytes([10, 0, 0, 100])   # sender IP = target IP
    assert request[32:38] == b"\0" * 6
    assert reply[32:38] == b"\xff" * 6


def test_script_argument_order():
    heartbeat_style = hb.ScriptResource("Filesystem::/dev/sdb1::/data", "Filesystem", ["/dev/sdb1", "/data"],
                                        "/etc/ha.d/resource.d/Filesystem", lsb=False)
    lsb = hb.ScriptResource("apache2", "apache2", [], "/etc/init.d/apache2", lsb=True)
    assert hb.script_argv(heartbeat_style, "start") == ["/etc/ha.d/resource.d/Filesystem", "/dev/sdb1", "/data",
                                                         "start"]
    assert hb.script_argv(lsb, "stop") == ["/etc/init.d/apache2", "stop"]


@pytest.mark.parametrize("lsb, code, output, running", [
    (False, 0, "webserver is running\n", True),
    (False, 1, "Running OK", True),
    (False, 0, "webserver is not running", False),
    (False, 0, "stopped", False),
    (False, 0, "", False),
    (True, 0, "apache2 is running.", True),
    (True, 3, "apache2 is not running.", False),
    (True, 0, "", True),
    (True, 3, "", False),
])
def test_status_output_rules(lsb, code, output, running):
    res = hb.ScriptResource("x", "x", [], "/x", lsb=lsb)
    assert hb.says_running(res, hb.CommandResult(code, output)) is running


def write_script(path, body):
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)


@pytest.fixture()
def config(tmp_path):
    (tmp_path / "resource.d").mkdir()
    (tmp_path / "ha.cf").write_text("keepalive 1\ndeadtime 5\nbcast lo\nnode prime calc\nauto_failback on\n")
    (tmp_path / "authkeys").write_text("auth 1\n1 sha1 key\n")
    os.chmod(tmp_path / "authkeys", 0o600)
    log = tmp_path / "calls.log"
    for name in ("first", "second"):
        write_script(tmp_path / "resource.d" / name,
                     f'echo "{name} $* HA_CURHOST=$HA_CURHOST" >> {log}\n'
                     f'[ "$2" = status ] && {{ grep -q "{name} $1 start" {log} && echo running || echo stopped; }}\n'
                     f'[ "$1" = fail ] && [ "$2" = start ] && exit 1\nexit 0\n')
    (tmp_path / "haresources").write_text("prime first::a second::b\ncalc second::fail\n")
    return hb.load_config(str(tmp_path), "prime"), log


class Lines:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda message, *a: self.lines.append(f"{level}: {message}")


def test_group_starts_in_order_and_stops_in_reverse_with_the_ha_environment(config):
    cfg, log = config
    resources = hb.Resources(cfg, Lines(), addresses=make([])[1])
    assert resources.acquire_group(cfg.groups[0]) is None
    assert resources.release_group(cfg.groups[0]) is True
    calls = [line.split(" HA_")[0] for line in log.read_text().splitlines()]
    assert calls == ["first a status", "first a start", "second b status", "second b start",
                     "second b stop", "first a stop"]
    assert all("HA_CURHOST=prime" in line for line in log.read_text().splitlines())


def test_failed_start_stops_what_was_started_and_reports_the_output(config):
    cfg, log = config
    lines = Lines()
    resources = hb.Resources(cfg, lines, addresses=make([])[1])
    error = resources.acquire_group(cfg.groups[1])
    assert error and "second::fail" in error
    calls = [line.split(" HA_")[0] for line in log.read_text().splitlines()]
    assert calls[-1] == "second fail stop"
    assert any(line.startswith("error: Return code 1 from") for line in lines.lines)
    assert any("Giving up resources due to failure of second::fail" in line for line in lines.lines)


def alive(pid):
    """True while pid runs (a zombie has finished running)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def gone(pid, timeout=3.0):
    """True once /proc has no pid at all (reaped), within timeout."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return not os.path.exists(f"/proc/{pid}")


def kill_if_alive(pid):
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_command_is_done_when_it_exits_though_it_left_a_child_running(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = hb.run_command(["sh", "-c", 'sleep 300 & echo $! > "$1"; echo started', "sh", str(pidfile)], 5)
    took = time.monotonic() - started
    child = int(pidfile.read_text())
    try:
        assert (result.returncode, result.output) == (0, "started\n")
        assert took < 0.5
        assert alive(child)                        # `daemon &` is what a start script is for
    finally:
        kill_if_alive(child)


def test_a_command_past_its_timeout_is_killed_with_its_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = 'sleep 300 & echo $! > "$1"; echo waiting; wait'
    started = time.monotonic()
    result = hb.run_command(["sh", "-c", script, "sh", str(pidfile)], 0.5)
    took = time.monotonic() - started
    child = int(pidfile.read_text())
    try:
        assert result.returncode == 124 and took < 2
        assert result.output == "waiting\n\n(timed out after 0.5 s)"
        deadline = time.monotonic() + 2
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(child)
    finally:
        kill_if_alive(child)


def test_a_missing_command_is_127():
    result = hb.run_command(["/nonexistent/command"], 5)
    assert result.returncode == 127 and "cannot run /nonexistent/command" in result.output


# ---------------------------------------------------------------- a stop that fails

STUCK = """#!/bin/sh
# stuck ARG start|stop|status: starts, never stops, says it runs (or hangs in status with ARG=hang)
echo "stuck $*" >> "$(dirname "$0")/stuck.log"
case "$2" in
start) exit 0 ;;
stop) echo "cannot stop: device busy"; exit 1 ;;
status) [ "$1" = hang ] && sleep 30; [ "$1" = gone ] && { echo stopped; exit 3; }; echo running ;;
esac
"""


class Rebooter:
    """Stands in for /sbin/reboot: records the call and answers with returncode."""

    def __init__(self, returncode):
        self.returncode, self.calls = returncode, []

    def __call__(self, argv, timeout_s, env=None):
        if argv[0] == "/sbin/reboot":
            self.calls.append(argv)
            return hb.CommandResult(self.returncode, "" if self.returncode == 0 else "reboot: Operation not permitted")
        return hb.run_command(argv, timeout_s, env)


class Exited(Exception):
    pass


@pytest.fixture()
def stuck(config, monkeypatch):
    cfg, _ = config
    write_script(os.path.join(cfg.config_dir, "resource.d", "stuck"), STUCK.split("\n", 1)[1])
    sleeps = []
    monkeypatch.setattr(hb.time, "sleep", sleeps.append)

    def exit_now(code):
        raise Exited(code)
    monkeypatch.setattr(hb.os, "_exit", exit_now)

    def group(arg="x"):
        return hb.ResourceGroup("prime", [hb.parse_resource("first::a", cfg.script_dirs()),
                                          hb.parse_resource(f"stuck::{arg}", cfg.script_dirs())], 1)
    return cfg, group, sleeps


def test_a_stop_that_keeps_failing_is_retried_ten_times_then_the_machine_reboots(stuck):
    cfg, group, sleeps = stuck
    lines, reboot = Lines(), Rebooter(0)
    resources = hb.Resources(cfg, lines, run=reboot, addresses=make([])[1])
    with pytest.raises(Exited) as exited:
        resources.release_group(group())
    assert exited.value.args == (hb.EXIT_GENERIC,)
    assert reboot.calls == [["/sbin/reboot", "-nf"]]
    with open(os.path.join(cfg.config_dir, "resource.d", "stuck.log")) as handle:
        assert handle.read().count("stuck x stop") == 11               # HA_STOPRETRYMAX 10: 1 + 10 retries
    assert sleeps.count(1) == 10                                       # 1 s between tries
    assert sum("Retrying failed stop operation [stuck::x]" in line for line in lines.lines) == 10
    assert "crit: Resource STOP failure. Reboot required!" in lines.lines
    assert "crit: Killing heartbeat ungracefully!" in lines.lines


@pytest.mark.parametrize("arg", ["x", "hang"])
def test_when_the_reboot_cannot_be_done_the_group_stays_held(stuck, arg, monkeypatch):
    cfg, group, _ = stuck
    monkeypatch.setattr(hb, "STATUS_TIMEOUT_S", 0.5)     # a status that hangs says nothing: still running
    lines, reboot = Lines(), Rebooter(1)
    resources = hb.Resources(cfg, lines, run=reboot, addresses=make([])[1])
    stuck_group = group(arg)
    assert resources.release_group(stuck_group) is False
    assert resources.stuck == {stuck_group.key}
    assert any(line.startswith("crit: Unable to force reboot.") for line in lines.lines)
    assert not os.path.exists(os.path.join(cfg.config_dir, "calls.log"))   # first::a was left as it is


def test_a_failed_stop_of_a_stopped_resource_is_only_a_warning(stuck):
    cfg, group, _ = stuck
    lines, reboot = Lines(), Rebooter(0)
    resources = hb.Resources(cfg, lines, run=reboot, addresses=make([])[1])
    assert resources.release_group(group("gone")) is True
    assert reboot.calls == []
    assert "error: Resource script for stuck::gone probably not LSB-compliant." in lines.lines
    assert "warn: Machine reboot narrowly avoided!" in lines.lines


def test_a_release_keeps_within_its_budget(stuck, monkeypatch):
    cfg, group, _ = stuck
    monkeypatch.setattr(hb, "STOP_BUDGET_S", 0.0)
    lines, reboot = Lines(), Rebooter(1)
    resources = hb.Resources(cfg, lines, run=reboot, addresses=make([])[1])
    assert resources.release_group(group()) is False
    assert any("No time left to stop stuck::x" in line for line in lines.lines)
    with open(os.path.join(cfg.config_dir, "resource.d", "stuck.log")) as handle:
        assert "stuck x stop" not in handle.read()


def test_the_whole_stop_fits_in_the_service_managers_stop_timeouts():
    """SIGKILL halfway through a release would leave half a group: the daemon's worst case (the
    release budget, the final status check, the reboot) must end before systemd or the init
    script give up."""
    from paths import ROOT as root
    with open(os.path.join(root, "init", "heartbeat.service")) as handle:
        systemd_s = int(re.search(r"^TimeoutStopSec=(\d+)$", handle.read(), re.M).group(1))
    with open(os.path.join(root, "init", "heartbeat")) as handle:
        init_s = int(re.search(r"STOP_TIMEOUT=\$\{STOP_TIMEOUT:-(\d+)\}", handle.read()).group(1))
    worst_s = hb.STOP_BUDGET_S + hb.STATUS_TIMEOUT_S + hb.REBOOT_TIMEOUT_S + 1
    assert worst_s < systemd_s and worst_s < init_s, (worst_s, systemd_s, init_s)


# ---------------------------------------------------------------- another host has the address

def test_arp_probe_and_neighbour_solicitation_frames():
    mac = bytes.fromhex("020000aabbcc")
    probe = hb.arp_probe(mac, "10.0.0.100")
    assert len(probe) == 42 and probe[:6] == b"\xff" * 6 and probe[6:12] == mac
    assert struct.unpack("!H", probe[20:22])[0] == 1                   # a request
    assert probe[28:32] == b"\0" * 4 and probe[38:42] == bytes([10, 0, 0, 100])   # RFC 5227: sender 0.0.0.0
    ns = hb.neighbour_solicitation(mac, "2001:db8::100")
    assert ns[0] == 135 and ns[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::100")
    assert ns[24:26] == bytes([1, 1]) and ns[26:32] == mac
    assert hb.solicited_node("2001:db8::12:3456") == "ff02::1:ff12:3456"


def test_an_answer_from_another_mac_is_a_conflict_and_ours_is_not():
    ours, theirs = bytes.fromhex("020000aabbcc"), bytes.fromhex("0200001122dd")
    held = {"10.0.0.100": ours, "2001:db8::100": ours}
    reply = hb.arp_frame(theirs, "10.0.0.100", reply=True)
    assert hb.answer_from_elsewhere(reply, held) == ("10.0.0.100", theirs)
    assert hb.answer_from_elsewhere(hb.arp_frame(ours, "10.0.0.100", reply=True), held) is None
    assert hb.answer_from_elsewhere(hb.arp_frame(theirs, "10.0.0.101", reply=True), held) is None
    assert hb.answer_from_elsewhere(hb.neighbour_advertisement(theirs, "2001:db8::100"), held) == \
        ("2001:db8::100", theirs)
    assert hb.answer_from_elsewhere(hb.neighbour_advertisement(ours, "2001:db8::100"), held) is None
    assert hb.answer_from_elsewhere(hb.neighbour_solicitation(theirs, "2001:db8::100"), held) is None
    for cut in range(len(reply)):                                     # short or garbage: never raises
        hb.answer_from_elsewhere(reply[:cut], held)


def test_icmp6_filter_passes_one_type_only():
    words = struct.unpack("=8I", hb.icmp6_filter_passing(136))
    blocked = [kind for kind in range(256) if words[kind >> 5] & (1 << (kind & 31))]
    assert 136 not in blocked and len(blocked) == 255


def test_a_killed_command_stuck_in_the_kernel_is_not_waited_for_without_end(monkeypatch):
    """Issue 26: after its timeout run_command killed the command and waited for it without limit; a
    process in uninterruptible sleep (a hung NFS or disk) held the caller (the resource worker) for
    good. A process in D state cannot be made here, so the wait that follows the kill never ends."""
    import subprocess
    real_wait = subprocess.Popen.wait
    calls = []

    def wait(self, timeout=None):
        calls.append(timeout)
        if len(calls) > 1:                       # the wait after SIGKILL: the process stays
            raise subprocess.TimeoutExpired(self.args, timeout)
        return real_wait(self, timeout)
    monkeypatch.setattr(subprocess.Popen, "wait", wait)
    monkeypatch.setattr(hb, "KILLED_WAIT_S", 0.2)
    started = time.monotonic()
    result = hb.run_command(["sleep", "30"], 0.2)
    assert time.monotonic() - started < 5 and calls == [0.2, 0.2]
    assert result.returncode == hb.EXIT_TIMED_OUT and "still there 0.2 s after SIGKILL" in result.output


SERVICE_SCRIPT = """pidfile="$(dirname "$0")/../$1.pid"
case "$2" in
start) sleep 300 & echo $! > "$pidfile" ;;
stop) [ -f "$pidfile" ] && kill "$(cat "$pidfile")"; rm -f "$pidfile" ;;
status) [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && echo running || echo stopped ;;
esac
exit 0
"""


def test_a_started_resource_keeps_the_session_its_script_left_the_service_in_until_it_stops(tmp_path):
    """`sleep 300 &` in a start script is the service: it runs on in the script's session, whose id
    (the script's pid) Resources keeps for the group's accounting; a stop forgets it."""
    cfg = scripts_config(tmp_path, {"service": "#!/bin/sh\n" + SERVICE_SCRIPT}, "prime service::web\n")
    resources = hb.Resources(cfg, Lines(), addresses=make([])[1])
    pidfile = tmp_path / "web.pid"
    service = 0
    try:
        assert resources.acquire_group(cfg.groups[0]) is None
        service = int(pidfile.read_text())
        assert resources.sessions == {"service::web": os.getsid(service)}
        assert os.getsid(service) not in (os.getsid(0), service)     # the script's session, not ours nor its own
        assert resources.release_group(cfg.groups[0]) is True
        assert resources.sessions == {}
        assert gone(service)
    finally:
        if service:
            kill_if_alive(service)

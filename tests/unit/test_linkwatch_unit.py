"""The address and link watch without root: rtnetlink messages built with struct, parsed and
applied; the cluster policy's answers to a lost address and a lost carrier, with a fake clock."""
import errno
import ipaddress
import os
import random
import socket
import struct

import pytest

import heartbeat as hb
from fakes import Calc, Clock, InlineWorker, Recorder, advance, sent

IFF_UP, IFF_RUNNING = 0x1, 0x40


def rtattr(kind, value):
    data = struct.pack("=HH", 4 + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def nlmsg(kind, body, seq=0, flags=0):
    data = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
    return data + b"\0" * (-len(data) % 4)


def link(index, name, carrier=True, kind=hb.RTM_NEWLINK, seq=0):
    flags = IFF_UP | (IFF_RUNNING | hb.IFF_LOWER_UP if carrier else 0)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0xFFFFFFFF)
    return nlmsg(kind, body + rtattr(1, b"\0" * 6) + rtattr(hb.IFLA_IFNAME, name.encode() + b"\0"), seq)


def address(index, ip, prefixlen=24, kind=hb.RTM_NEWADDR, local=True, family=socket.AF_INET, seq=0):
    body = struct.pack("=BBBBI", family, prefixlen, 0x80, 0, index)
    raw = socket.inet_aton(ip) if family == socket.AF_INET else socket.inet_pton(family, ip)
    attrs = rtattr(hb.IFA_ADDRESS, raw) + (rtattr(hb.IFA_LOCAL, raw) if local else b"")
    return nlmsg(kind, body + attrs + rtattr(3, b"eth0:0\0"), seq)


# -- parsing -----------------------------------------------------------------------------------

def test_a_link_message_gives_the_name_and_the_carrier():
    assert hb.parse_netlink(link(2, "eth0")) == [hb.NetlinkEvent("link", 0, 2, "eth0", True)]
    assert hb.parse_netlink(link(3, "eth1", carrier=False)) == [hb.NetlinkEvent("link", 0, 3, "eth1", False)]
    assert hb.parse_netlink(link(3, "eth1", kind=hb.RTM_DELLINK))[0].kind == "link gone"


def test_address_messages_and_several_in_one_datagram():
    data = address(2, "10.77.0.100") + address(2, "10.77.0.100", kind=hb.RTM_DELADDR) + \
        address(4, "192.168.1.7", prefixlen=16, local=False)
    assert hb.parse_netlink(data) == [
        hb.NetlinkEvent("address", 0, 2, ip="10.77.0.100", prefixlen=24, label="eth0:0"),
        hb.NetlinkEvent("address gone", 0, 2, ip="10.77.0.100", prefixlen=24, label="eth0:0"),
        hb.NetlinkEvent("address", 0, 4, ip="192.168.1.7", prefixlen=16, label="eth0:0")]


def test_ipv6_done_error_and_unknown_messages():
    assert hb.parse_netlink(address(2, "2001:DB8:0::10", 64, family=socket.AF_INET6)) == [
        hb.NetlinkEvent("address", 0, 2, ip="2001:db8::10", prefixlen=64, label="eth0:0")]
    assert hb.parse_netlink(address(2, "2001:db8::10", 129, family=socket.AF_INET6)) == []
    four_bytes = nlmsg(hb.RTM_NEWADDR, struct.pack("=BBBBI", socket.AF_INET6, 24, 0, 0, 2)
                       + rtattr(hb.IFA_LOCAL, socket.inet_aton("10.0.0.1")))
    assert hb.parse_netlink(four_bytes) == []                      # an IPv6 address has 16
    assert hb.parse_netlink(nlmsg(hb.NLMSG_DONE, struct.pack("=i", 0), seq=7)) == [hb.NetlinkEvent("done", 7)]
    error = nlmsg(hb.NLMSG_ERROR, struct.pack("=i", -errno.EBUSY) + b"\0" * 16, seq=8)
    assert hb.parse_netlink(error) == [hb.NetlinkEvent("error", 8, errno.EBUSY)]
    assert hb.parse_netlink(nlmsg(24, b"\0" * 12) + link(2, "eth0"))[0].ifname == "eth0"     # RTM_NEWROUTE


def test_truncated_and_malformed_messages_are_skipped_never_raised():
    good = link(2, "eth0") + address(2, "10.77.0.100")
    for end in range(len(good)):
        events = hb.parse_netlink(good[:end])
        assert all(isinstance(event, hb.NetlinkEvent) for event in events)
    assert hb.parse_netlink(struct.pack("=IHHII", 8, hb.RTM_NEWLINK, 0, 0, 0) + good) == []   # length < header
    short_body = nlmsg(hb.RTM_NEWADDR, b"\x02\x18")
    assert hb.parse_netlink(short_body + link(2, "eth0")) == [hb.NetlinkEvent("link", 0, 2, "eth0", True)]
    bad_attr = nlmsg(hb.RTM_NEWADDR, struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 2) + struct.pack("=HH", 200, 2))
    assert hb.parse_netlink(bad_attr) == []
    too_long_prefix = nlmsg(hb.RTM_NEWADDR, struct.pack("=BBBBI", socket.AF_INET, 40, 0, 0, 2)
                            + rtattr(hb.IFA_LOCAL, socket.inet_aton("10.0.0.1")))
    assert hb.parse_netlink(too_long_prefix) == []
    rng = random.Random(15)  # noqa: S311 - reproducible, not secret
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        hb.parse_netlink(bytes(data))


def test_dump_requests():
    header = struct.unpack_from("=IHHII", hb.netlink_dump_request(hb.RTM_GETLINK, 5))
    assert header == (32, hb.RTM_GETLINK, hb.NLM_F_REQUEST | hb.NLM_F_DUMP, 5, 0)
    request = hb.netlink_dump_request(hb.RTM_GETADDR, 6)
    assert len(request) == 24 and request[16] == socket.AF_UNSPEC         # both families


# -- LinkWatch over a fake socket ------------------------------------------------------------------

class FakeSocket:
    def __init__(self, replies=()):
        self.replies, self.sent, self.closed = list(replies), [], False

    def settimeout(self, _):
        pass

    def setblocking(self, _):
        pass

    def send(self, data):
        self.sent.append(struct.unpack_from("=IHHII", data))

    def recv(self, _):
        if not self.replies:
            raise BlockingIOError()
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply(self) if callable(reply) else reply

    def close(self):
        self.closed = True


def done_for(kind):
    """The end of the last dump of that kind that was asked for."""
    return lambda sock: nlmsg(hb.NLMSG_DONE, b"\0" * 4, seq=[s for s in sock.sent if s[1] == kind][-1][3])


def dumped(kind, *messages):
    seq = lambda sock: [s for s in sock.sent if s[1] == kind][-1][3]   # noqa: E731
    return lambda sock: b"".join(m(seq(sock)) for m in messages)


def opened(replies):
    sock = FakeSocket([
        dumped(hb.RTM_GETLINK, lambda seq: link(1, "lo", seq=seq), lambda seq: link(2, "eth0", seq=seq),
               lambda seq: link(3, "eth1", carrier=False, seq=seq)),
        done_for(hb.RTM_GETLINK),
        dumped(hb.RTM_GETADDR, lambda seq: address(2, "10.77.0.1", seq=seq)),
        done_for(hb.RTM_GETADDR), *replies])
    rec = Recorder()
    watch = hb.LinkWatch(rec, rec, opener=lambda: sock)
    assert watch.open()
    return watch, sock, rec


def test_open_reads_links_and_addresses_then_reports_changes_only():
    watch, sock, rec = opened([])
    assert [s[1] for s in sock.sent] == [hb.RTM_GETLINK, hb.RTM_GETADDR]
    assert watch.carrier == {"lo": True, "eth0": True, "eth1": False}
    assert watch.addresses == {"10.77.0.1": ("eth0", 24)}
    assert watch.current() == [hb.AddressEntry("eth0", ipaddress.IPv4Interface("10.77.0.1/24"), "eth0")]
    assert watch.view(["eth0", "eth1", "eth9"]) == {"eth0": "up", "eth1": "no carrier", "eth9": "unknown"}
    events = []
    rec.on_carrier = lambda *a: events.append(("carrier", *a))
    rec.on_address = lambda *a: events.append(("address", *a))
    watch.handle(link(2, "eth0") + link(2, "eth0", carrier=False) + link(2, "eth0", carrier=False)
                 + address(2, "10.77.0.100") + address(2, "10.77.0.100", kind=hb.RTM_DELADDR)
                 + link(3, "eth1") + link(3, "eth1", kind=hb.RTM_DELLINK))
    assert events == [("carrier", "eth0", False), ("address", "eth0", "10.77.0.100", True),
                      ("address", "eth0", "10.77.0.100", False), ("carrier", "eth1", True),
                      ("carrier", "eth1", False)]
    assert "eth1" not in watch.carrier


def test_the_first_dump_is_where_the_watch_starts_not_a_change():
    """The listener is given to the constructor, so it is there while open() reads the first
    dump: the addresses found then are the starting point and are reported to nobody (the
    cluster policy has no watch to ask yet)."""
    told = []

    class Listener:
        def on_carrier(self, *args):
            told.append(("carrier", *args))

        def on_address(self, *args):
            told.append(("address", *args))
    sock = FakeSocket([dumped(hb.RTM_GETLINK, lambda seq: link(1, "lo", seq=seq), lambda seq: link(2, "eth0", seq=seq)),
                       done_for(hb.RTM_GETLINK),
                       dumped(hb.RTM_GETADDR, lambda seq: address(2, "10.77.0.1", seq=seq)),
                       done_for(hb.RTM_GETADDR)])
    watch = hb.LinkWatch(Recorder(), Listener(), opener=lambda: sock)
    assert watch.open() and watch.addresses == {"10.77.0.1": ("eth0", 24)}
    assert told == []
    watch.handle(address(2, "10.77.0.100"))
    assert told == [("address", "eth0", "10.77.0.100", True)]


def test_an_overrun_dumps_again_and_reports_what_changed_unseen():
    watch, sock, rec = opened([OSError(errno.ENOBUFS, "No buffer space available")])
    events = []
    rec.on_carrier = lambda *a: events.append(("carrier", *a))
    rec.on_address = lambda *a: events.append(("address", *a))
    watch.read()
    assert watch.overruns == 1 and sock.sent[-1][1] == hb.RTM_GETLINK and rec.has("rtnetlink overrun")
    sock.replies = [dumped(hb.RTM_GETLINK, lambda seq: link(2, "eth0", carrier=False, seq=seq)),
                    done_for(hb.RTM_GETLINK),
                    dumped(hb.RTM_GETADDR, lambda seq: address(2, "10.77.0.9", seq=seq)),
                    done_for(hb.RTM_GETADDR)]
    watch.read()
    assert events == [("carrier", "eth0", False), ("address", "eth0", "10.77.0.1", False),
                      ("address", "eth0", "10.77.0.9", True)]
    assert watch.addresses == {"10.77.0.9": ("eth0", 24)} and not watch.dumping


def test_a_refused_dump_and_other_errors_end_quietly():
    watch, sock, rec = opened([OSError(errno.EBADF, "bad")])
    watch.read()                                   # returns; the loop goes on
    watch.request_dump("link")
    watch.handle(nlmsg(hb.NLMSG_ERROR, struct.pack("=i", -errno.EBUSY), seq=watch.seq))
    assert not watch.dumping and rec.has("dump of links refused")


def test_without_rtnetlink_it_says_so_once_and_runs_without():
    rec = Recorder()

    def opener():
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    watch = hb.LinkWatch(rec, rec, opener=opener)
    assert not watch.open() and watch.sock is None
    assert len(rec.lines) == 1 and "address and link watch off" in rec.lines[0]


# -- the cluster policy's answers --------------------------------------------------------------

VIP, CALC_VIP = "10.77.0.100", "10.77.0.101"


class FakeWatch:
    def __init__(self):
        self.carrier = {"eth0": True, "eth1": True}
        self.addresses = {"10.77.0.1": ("eth0", 24)}

    def has_carrier(self, name):
        return self.carrier.get(name)

    def current(self):
        return [hb.AddressEntry(n, ipaddress.ip_interface(f"{ip}/{p}"), n) for ip, (n, p) in self.addresses.items()]

    def view(self, names):
        return {n: "up" if self.carrier.get(n) else "no carrier" for n in names}


class FakeAddresses:
    def __init__(self, watch, rec):
        self.watch, self.rec = watch, rec

    def held(self, res):
        return self.watch.addresses.get(res.ip, (None,))[0]

    def plan(self, res, current, subnets=None):
        return hb.AddressPlan(res.iface or "eth0", res.prefix or 24, None)

    def remove(self, resources):
        for res in resources:
            self.rec.events.append(("remove", res.ip))
            self.watch.addresses.pop(res.ip, None)


class FakeAddressResources:
    """Addresses come and go in the fake watch's table, as the kernel would report them."""
    stuck = set()
    conflicted = set()

    def __init__(self, watch, rec):
        self.watch, self.rec = watch, rec
        self.addresses = FakeAddresses(watch, rec)

    def start(self, res):
        if not isinstance(res, hb.IPResource):
            self.rec.events.append(("start", res.spec))
            return
        self.rec.events.append(("add", res.ip))
        self.watch.addresses[res.ip] = (res.iface, res.prefix)

    def stop_all(self, resources):
        self.rec.events.extend(("stop", res.spec) for res in reversed(resources))
        return True

    def announce_group(self, group):
        self.rec.events.append(("announce", group.key))

    def acquire_group(self, group):
        for res in group.resources:
            self.start(res)

    def release_group(self, group):
        self.addresses.remove(group.resources)
        return True


@pytest.fixture()
def cluster(tmp_path):
    return started_cluster(tmp_path, f"{VIP}/24/eth0")


@pytest.fixture()
def cluster_with_disk(tmp_path):
    """prime's group holds a resource beyond its address: a disk (a resource.d script)."""
    (tmp_path / "resource.d").mkdir()
    (tmp_path / "resource.d" / "disk").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "resource.d" / "disk").chmod(0o755)
    return started_cluster(tmp_path, f"{VIP}/24/eth0 disk")


def started_cluster(tmp_path, prime_group):
    (tmp_path / "ha.cf").write_text("keepalive 1000ms\ndeadtime 5000ms\ninitdead 10000ms\nbcast eth0\nbcast eth1\n"
                                    "node prime calc\nauto_failback on\n")
    (tmp_path / "authkeys").write_text("auth 2\n2 sha1 secret\n")
    os.chmod(tmp_path / "authkeys", 0o600)
    (tmp_path / "haresources").write_text(f"prime {prime_group}\ncalc {CALC_VIP}/24/eth0\n")
    config = hb.load_config(str(tmp_path), "prime")
    clock, rec = Clock(), Recorder()
    timers = hb.Timers(clock)
    router = hb.DecisionRouter()
    membership = hb.Membership(config, hb.Identity("prime", b"P" * 16, 0x100), timers, rec, rec.sent.append, router)
    watch = FakeWatch()
    policy = hb.ClusterPolicy(config, membership, FakeAddressResources(watch, rec), InlineWorker(pass_errors=True), rec)
    policy.links.use_watch(watch)
    router.route_to(policy, None)
    membership.start()
    calc = Calc(config)
    world = (membership, clock, timers, rec, config)
    for media in ("eth0", "eth1"):
        membership.receive(calc.status(), media)
    membership.receive(calc.packet(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "1")),
                       "eth0")                     # the answer to our `starting`: we take our group
    assert policy.state[f"{VIP}/24/eth0"] == "running" and ("add", VIP) in rec.events
    return policy, watch, calc, world


def heartbeats(world, calc, seconds, media=("eth0", "eth1")):
    for _ in range(int(seconds * 10)):
        for name in media:
            world[0].receive(calc.status(seq=calc.seq + 1 if name == media[0] else calc.seq), name)
        advance(world, 0.1)


def asked(rec):
    return [(m.get("rsc_hold"), m.get("info")) for m in sent(rec) if m.get("t") == "ask_resources"]


def test_a_vip_removed_while_held_is_added_back_and_our_own_removals_are_not(cluster):
    policy, watch, calc, world = cluster
    rec = world[3]
    del watch.addresses[VIP]
    policy.links.on_address("eth0", VIP, False)
    assert rec.events[-1] == ("add", VIP) and VIP in watch.addresses
    assert rec.has(f"warn: IPaddr {VIP} disappeared from eth0 while held: added back")
    policy.release(["local"], reason="test")            # its own removal, state stopping
    policy.links.on_address("eth0", VIP, False)
    assert rec.events[-1] == ("remove", VIP) and VIP not in watch.addresses


def test_carrier_lost_takes_the_vip_down_and_offers_the_group_to_a_peer_heard_elsewhere(cluster):
    policy, watch, calc, world = cluster
    rec = world[3]
    watch.carrier["eth0"] = False
    policy.links.on_carrier("eth0", False)
    assert rec.events[-1] == ("remove", VIP) and VIP not in watch.addresses
    assert rec.has("crit: Link eth0: no carrier: taking 10.77.0.100 down")
    assert policy.snapshot()[0]["state"] == "fault (eth0 no carrier)" and policy.snapshot()[0]["owner"] == "prime"
    assert asked(rec) == [("local", "me")]
    world[0].receive(calc.packet(("t", "ask_resources"), ("rsc_hold", "local"), ("info", "other")), "eth1")
    assert policy.state[f"{VIP}/24/eth0"] == "stopped" and asked(rec)[-1] == ("local", "done")
    watch.carrier["eth0"] = True
    policy.links.on_carrier("eth0", True)
    heartbeats(world, calc, 3)
    assert rec.events[-1] == ("remove", VIP) and policy.rsc_hold() == "none"     # nothing comes back


def test_without_a_second_medium_the_fault_waits_and_the_vip_returns_once_the_peer_had_its_say(cluster):
    policy, watch, calc, world = cluster
    rec = world[3]
    watch.carrier["eth1"] = False
    policy.links.on_carrier("eth1", False)
    watch.carrier["eth0"] = False
    policy.links.on_carrier("eth0", False)
    advance(world, 2)
    assert asked(rec) == [] and policy.state[f"{VIP}/24/eth0"] is hb.GroupState.FAULT
    assert policy.links.faults[f"{VIP}/24/eth0"].reason == "eth0 no carrier"
    watch.carrier.update(eth0=True, eth1=True)
    policy.links.on_carrier("eth0", True)
    policy.links.on_carrier("eth1", True)
    advance(world, 0.5)
    assert rec.events[-1] == ("remove", VIP)                # not before calc is heard again
    heartbeats(world, calc, 0.5)
    assert rec.events[-1] == ("remove", VIP)                # nor before our next heartbeat had its answer
    heartbeats(world, calc, 1.5)
    assert rec.events[-1] == ("add", VIP) and policy.state[f"{VIP}/24/eth0"] == "running"
    assert rec.has("Link eth0: carrier back and resource group 10.77.0.100/24/eth0 still ours")


def test_a_fault_the_peer_cannot_hear_stops_the_rest_of_the_group_before_the_peer_takes_it(cluster_with_disk):
    """Found by make demo with a Filesystem in the group: prime's cable pulled, its VIP went down but its
    disk stayed mounted while calc, hearing nothing, took the group and mounted it too. At half the
    peer's deadtime (2.5 s of 5) the rest of the group stops; when the carrier is back and the group
    is still ours, the whole group starts again."""
    policy, watch, calc, world = cluster_with_disk
    rec, key = world[3], f"{VIP}/24/eth0"
    watch.carrier.update(eth0=False, eth1=False)
    policy.links.on_carrier("eth1", False)
    policy.links.on_carrier("eth0", False)
    advance(world, 2.2)
    assert rec.events[-1] == ("remove", VIP) and ("stop", "disk") not in rec.events
    advance(world, 1)
    assert rec.events[-1] == ("stop", "disk") and policy.state[key] is hb.GroupState.FAULT
    assert rec.has(f"Link eth0: no carrier for 2.5 s and no peer heard on another link: stopping the rest of "
                   f"resource group {key}")
    advance(world, 3)
    assert rec.events.count(("stop", "disk")) == 1
    watch.carrier.update(eth0=True, eth1=True)
    policy.links.on_carrier("eth0", True)
    policy.links.on_carrier("eth1", True)
    heartbeats(world, calc, 2)
    assert rec.events[-2:] == [("add", VIP), ("start", "disk")] and policy.state[key] is hb.GroupState.RUNNING
    assert rec.has(f"Link eth0: carrier back and resource group {key} still ours: starting it again")


def test_carrier_back_while_the_peer_holds_the_group_waits_for_it_to_let_go(cluster):
    policy, watch, calc, world = cluster
    membership, rec = world[0], world[3]
    watch.carrier.update(eth0=False, eth1=False)
    policy.links.on_carrier("eth0", False)
    policy.links.on_carrier("eth1", False)
    watch.carrier.update(eth0=True, eth1=True)
    policy.links.on_carrier("eth0", True)
    policy.links.on_carrier("eth1", True)
    membership.receive(calc.packet(("t", "resource"), ("rsc_hold", "all"), ("rtype", "full"), ("isstable", "1")),
                       "eth0")
    heartbeats(world, calc, 3)
    assert VIP not in watch.addresses and rec.has("Both machines own our resources!")
    old = calc.packet(("t", "resource"), ("rsc_hold", "all"), ("rtype", "full"), ("isstable", "0"))
    membership.receive(calc.packet(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")),
                       "eth0")
    membership.receive(old, "eth0")                        # retransmitted late: what calc held long ago
    assert policy.peer_holds["calc"] == ("local", True)
    heartbeats(world, calc, 1.5)
    assert VIP in watch.addresses and policy.state[f"{VIP}/24/eth0"] == "running"


def test_an_offer_is_refused_while_our_carrier_for_it_is_down(cluster):
    policy, watch, calc, world = cluster
    membership, rec = world[0], world[3]
    watch.carrier["eth0"] = False
    membership.receive(calc.packet(("t", "ask_resources"), ("rsc_hold", "local"), ("info", "me")), "eth1")
    assert asked(rec) == [] and rec.has("standby message [me] from calc ignored: eth0 has no carrier here")
    watch.carrier["eth0"] = True
    membership.receive(calc.packet(("t", "ask_resources"), ("rsc_hold", "local"), ("info", "me")), "eth1")
    assert asked(rec) == [("local", "other")]


def test_the_interfaces_of_a_group_read_the_watch_once_not_once_per_address(cluster):
    """A group of short-form VIPs (no interface written): the watch's addresses are read once for the
    group, whether the address is here already or planned from the subnets there are."""
    policy, watch, calc, world = cluster
    policy.resources.addresses = hb.IPAddresses(kernel=object())
    reads = []
    current = watch.current
    watch.current = lambda: reads.append(1) or current()
    group = hb.ResourceGroup("prime", [hb.parse_ip_spec(f"10.77.0.{n}") for n in range(10, 210)], 1)
    for res in group.resources[::2]:
        watch.addresses[res.ip] = ("eth1", 24)
    assert policy.links.addresses_of(group) == [(res, "eth1" if n % 2 == 0 else "eth0")
                                          for n, res in enumerate(group.resources)]
    assert len(reads) == 1
    assert policy.links.vip_iface(group.resources[0]) == "eth1" and policy.links.vip_iface(group.resources[1]) == "eth0"


def test_status_shows_the_carrier_of_media_and_address_interfaces(cluster):
    policy, watch, calc, world = cluster
    watch.carrier["eth1"] = False
    assert policy.links.watched_links() == {"eth0": "up", "eth1": "no carrier"}
    policy.links.use_watch(None)
    assert policy.links.watched_links() is None
    report = {"node": "prime", "status": "active", "pid": 1, "uptime_s": 1.0, "generation": 1,
              "auto_failback": "on", "nodes": {}, "counters": {}, "links_watched": {"eth0": "no carrier"},
              "groups": [{"key": "g", "home": "prime", "owner": "prime", "state": "fault (eth0 no carrier)",
                          "fault": "eth0 no carrier",
                          "failures": 0}]}
    text = hb.format_status(report)
    assert "group g (home prime): held by prime [fault (eth0 no carrier)]" in text
    assert "carrier: eth0 no carrier" in text
    assert "address and link watch: off" in hb.format_status(dict(report, links_watched=None))


def test_a_restarted_peer_announcements_count_again_from_seq_1(cluster):
    policy, watch, calc, world = cluster
    membership = world[0]
    heartbeats(world, calc, 1)
    restarted = Calc(world[4], generation=calc.generation + 1)
    membership.receive(restarted.status(), "eth0")
    membership.receive(restarted.packet(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"),
                                        ("isstable", "1")), "eth0")
    assert policy.peer_holds["calc"] == ("local", True)


def test_a_vip_gone_while_its_group_was_starting_is_added_back_once_started(cluster):
    policy, watch, calc, world = cluster
    rec = world[3]
    adds = rec.events.count(("add", VIP))
    del watch.addresses[VIP]                              # deleted before the group was "running": no event then
    policy.after_change()
    assert rec.events.count(("add", VIP)) == adds         # the watch's table may lag behind: not at once
    advance(world, hb.ADDRESS_CHECK_DELAY_S + 0.05)
    assert rec.events.count(("add", VIP)) == adds + 1 and VIP in watch.addresses
    assert rec.has(f"IPaddr {VIP} disappeared from eth0 while held: added back")


def test_an_overrun_during_a_dump_dumps_again_once_it_ends():
    enobufs = OSError(errno.ENOBUFS, "No buffer space available")
    watch, sock, rec = opened([enobufs, enobufs])
    watch.read()                                   # two overruns: one dump now, one more after it
    assert watch.overruns == 2 and watch.dump_again and [s[1] for s in sock.sent[2:]] == [hb.RTM_GETLINK]
    sock.replies = [done_for(hb.RTM_GETLINK)]
    watch.read()
    assert [s[1] for s in sock.sent[2:]] == [hb.RTM_GETLINK, hb.RTM_GETLINK] and not watch.dump_again
    sock.replies = [done_for(hb.RTM_GETLINK), done_for(hb.RTM_GETADDR)]
    watch.read()
    assert [s[1] for s in sock.sent[2:]] == [hb.RTM_GETLINK, hb.RTM_GETLINK, hb.RTM_GETADDR]
    assert not watch.dumping and len([line for line in rec.lines if "overrun" in line]) == 1


class QueueWorker:
    """Jobs wait until run_one(): the daemon's worker, one step at a time."""

    def __init__(self):
        self.jobs = []

    @property
    def busy(self):
        return bool(self.jobs)

    def submit(self, job, done=None):
        self.jobs.append((job, done))

    def run_one(self):
        job, done = self.jobs[0]
        result = job()
        self.jobs.pop(0)
        if done:
            done(result)


def test_our_release_queued_while_the_group_was_starting_is_not_undone(cluster):
    policy, watch, calc, world = cluster
    rec = world[3]
    policy.worker = QueueWorker()
    key = f"{VIP}/24/eth0"
    policy.state[key] = "starting"                # standby asked while the acquisition still ran
    policy.release(["local"], reason="standby")
    assert policy.state[key] == "starting"
    policy.state[key] = "running"                 # the acquisition's result comes in after that
    adds = rec.events.count(("add", VIP))
    release, done = policy.worker.jobs[0]         # the kernel tells of the removal while the job runs
    policy.worker.jobs[0] = (lambda: (release(), policy.links.on_address("eth0", VIP, False))[0], done)
    for _ in range(10):
        if policy.worker.busy:
            policy.worker.run_one()
        advance(world, 0.1)
    assert rec.events.count(("add", VIP)) == adds and policy.state[key] == "stopped" and VIP not in watch.addresses


def test_carrier_back_serves_as_soon_as_the_peer_says_it_let_go(cluster):
    """Issue 26: after a cable pull calc released the group 0.15 s after the carrier came back, but
    prime added its address only once its settle time was over (0.52 s): clients waited 0.4 s. The
    peer's announcement without the group, made after the carrier returned, is the word waited for."""
    policy, watch, calc, world = cluster
    membership = world[0]
    watch.carrier.update(eth0=False, eth1=False)
    policy.links.on_carrier("eth0", False)
    policy.links.on_carrier("eth1", False)
    advance(world, 1)
    watch.carrier.update(eth0=True, eth1=True)
    policy.links.on_carrier("eth0", True)
    policy.links.on_carrier("eth1", True)
    membership.receive(calc.packet(("t", "resource"), ("rsc_hold", "all"), ("rtype", "full"), ("isstable", "1")),
                       "eth0")
    advance(world, 0.1)
    assert VIP not in watch.addresses
    membership.receive(calc.packet(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")),
                       "eth0")
    advance(world, 0.05)                                   # far less than keepalive + FAULT_SETTLE_S
    assert VIP in watch.addresses and policy.state[f"{VIP}/24/eth0"] == "running"

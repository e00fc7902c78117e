"""Someone else on the heartbeat segment, run inside a lab namespace: capture, replay, forge.

    python3 hostile.py capture SECONDS FILE       keep every heartbeat datagram heard (hex lines)
    python3 hostile.py replay FILE SECONDS GAP    send them all again every GAP seconds
    python3 hostile.py garbage FILE COUNT         COUNT unauthenticated datagrams: mutations of the
                                                  captured ones, random bytes, broken framing
    python3 hostile.py signed KEY COUNT           COUNT correctly signed (sha1 KEY) but hostile
                                                  messages: random types, generations, seqs, fields

Everything goes to the lab's broadcast address, port 694 (with HB_MCAST6=GROUP in the environment:
to that IPv6 multicast group on eth0, as for an mcast6 cluster), and stops by itself.
"""
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import heartbeat as hb  # noqa: E402

BROADCAST = ("10.77.0.255", 694)
MCAST6 = os.environ.get("HB_MCAST6")
TYPES = ["status", "resource", "starting", "ask_resources", "hb_takeover", "shutdone", "reqnodes", "repnodes",
         "NS_ackmsg", "NS_rexmit", "NS_nak_rexmit", "ip-request", "ip-request-resp", hb.CHALLENGE,
         hb.CHALLENGE_REPLY, "query-cstatus", "stonith", "", "x" * 300, "status\n"]
FIELDS = ["seq", "hg", "ts", "st", "dt", "rsc_hold", "info", "dest", "nonce", "firstseq", "lastseq", "ackseq",
          "isstable", "protocol", "srcuuid", "nodelist"]
VALUES = ["", "0", "-1", "1", "ffffffffffffffff", "1" * 40, "all", "local", "foreign", "none", "me", "other",
          "done", "active", "dead", "init", "up", "\n\x00\x1b[2J", "prime", "calc", "ghost", "%%%\n", "###\n",
          "a" * 5000]


def sender():
    if MCAST6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("eth0"))
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    return sock


def send(sock, datagram):
    try:
        sock.sendto(datagram, (MCAST6, 694, 0, socket.if_nametoindex("eth0")) if MCAST6 else BROADCAST)
    except OSError:
        time.sleep(0.001)        # a full send buffer: a moment, and on


def capture(seconds, path):
    sock = socket.socket(socket.AF_INET6 if MCAST6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::" if MCAST6 else "", 694))
    if MCAST6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.inet_pton(socket.AF_INET6, MCAST6)
                        + socket.if_nametoindex("eth0").to_bytes(4, sys.byteorder))
    sock.settimeout(0.2)
    end, kept = time.monotonic() + seconds, []
    while time.monotonic() < end:
        try:
            kept.append(sock.recv(65536))
        except socket.timeout:
            pass
    with open(path, "w") as handle:
        handle.write("".join(d.hex() + "\n" for d in kept))


def load(path):
    with open(path) as handle:
        return [bytes.fromhex(line) for line in handle.read().split()]


def replay(path, seconds, gap):
    datagrams, sock = load(path), sender()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for datagram in datagrams:
            send(sock, datagram)
        time.sleep(gap)


def mutate(rng, datagram):
    data = bytearray(datagram)
    for _ in range(rng.randint(1, 8)):
        choice, at = rng.random(), rng.randrange(len(data) or 1)
        if choice < 0.4 and data:
            data[at] = rng.randrange(256)
        elif choice < 0.6:
            del data[at:at + rng.randint(1, 50)]
        elif choice < 0.8:
            data[at:at] = rng.choice([b"99999999999:", b"0:", b"-5:", b"%%%\n", b"###\n", b",", b"(1)a=", b"\x00"])
        else:
            data = data[:at] + data[at:] * 2
    return bytes(data)


def garbage(path, count):
    rng, datagrams, sock = random.Random(1), load(path), sender()  # noqa: S311 - reproducible, not secret
    for number in range(count):
        if number % 10 == 0:
            datagram = os.urandom(rng.randint(0, 2000))
        elif number % 10 == 1:
            datagram = b"###\n" + os.urandom(rng.randint(0, 500)) + b"%%%\n"
        else:
            datagram = mutate(rng, rng.choice(datagrams))
        send(sock, datagram)


def signed(key, count):
    rng, sock = random.Random(2), sender()  # noqa: S311 - reproducible, not secret
    keys = hb.AuthKeys("lab", 1, {1: ("sha1", key)})
    for _ in range(count):
        msg = hb.Message(("t", rng.choice(TYPES)), ("src", rng.choice(["prime", "calc", "ghost", ""])))
        for name in rng.sample(FIELDS, rng.randint(0, len(FIELDS))):
            if rng.random() < 0.5:
                msg.add(name, format(rng.getrandbits(rng.choice([4, 16, 32, 64])), "x"))
            elif rng.random() < 0.8:
                msg.add(name, rng.choice(VALUES))
            else:
                msg.add(name, os.urandom(rng.randint(0, 40)), hb.FIELD_BINARY)
        if rng.random() < 0.1:
            msg.add("nested", hb.encode_message(hb.Message(("t", "status")), keys), hb.FIELD_BINARY)
        send(sock, hb.encode_message(msg, keys, rng.choice(["classic", "netstring"])))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "capture":
        capture(float(args[0]), args[1])
    elif mode == "replay":
        replay(args[0], float(args[1]), float(args[2]))
    elif mode == "garbage":
        garbage(args[0], int(args[1]))
    elif mode == "signed":
        signed(args[0], int(args[1]))

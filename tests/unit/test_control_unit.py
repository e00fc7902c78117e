"""The control socket is served from the event loop without blocking it: a client that sends
`status` and then does not read must hold back neither the timers (heartbeats) nor other clients."""
import json
import os
import selectors
import socket
import time

import heartbeat as hb

BIG_STATUS = {"ok": True, "events": [{"kind": "group-acquired", "detail": "x" * 200}] * 20000}   # ~5 MB


def serve(selector, timers, until, budget_s):
    """Run the loop as Daemon.run() does until until() is true; the slowest callback's time."""
    slowest, deadline = 0.0, time.monotonic() + budget_s
    while not until() and time.monotonic() < deadline:
        for key, _ in selector.select(0.02):
            started = time.monotonic()
            key.data(key.fileobj)
            slowest = max(slowest, time.monotonic() - started)
        timers.run_due()
    return slowest


def client(path, request, rcvbuf=None):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(path)
    sock.sendall(json.dumps(request).encode() + b"\n")
    return sock


def read_line(sock, timeout_s=5.0):
    sock.settimeout(timeout_s)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_client_that_does_not_read_holds_back_neither_timers_nor_other_clients(tmp_path):
    path = os.path.join(str(tmp_path), hb.SOCKET_NAME)
    selector, timers = selectors.DefaultSelector(), hb.Timers()
    control = hb.ControlServer(path, selector, timers,
                               lambda request: BIG_STATUS if request.get("cmd") == "status" else {"ok": True})
    stuck = client(path, {"cmd": "status"}, rcvbuf=4096)       # never reads its answer
    other = client(path, {"cmd": "standby"})
    try:
        asked, fired = time.monotonic(), []
        timers.call_later(0.05, lambda: fired.append(time.monotonic()))
        slowest = serve(selector, timers, lambda: False, 0.5)
        assert read_line(other, 0.1) == b'{"ok": true}\n'
        assert fired and fired[0] - asked < 0.3
        assert slowest < 0.2
        other.close()
    finally:
        stuck.close()
        control.close()
        selector.close()
    assert not os.path.exists(path)


def test_the_stuck_client_is_dropped_after_the_exchange_timeout(tmp_path):
    path = os.path.join(str(tmp_path), hb.SOCKET_NAME)
    now = [1000.0]
    selector, timers = selectors.DefaultSelector(), hb.Timers(clock=lambda: now[0])
    control = hb.ControlServer(path, selector, timers, lambda request: BIG_STATUS)
    stuck = client(path, {"cmd": "status"}, rcvbuf=4096)
    try:
        serve(selector, timers, lambda: control.clients and next(iter(control.clients.values())).reply, 2.0)
        assert len(control.clients) == 1
        now[0] += hb.CONTROL_TIMEOUT_S
        timers.run_due()
        assert control.clients == {}
    finally:
        stuck.close()
        control.close()
        selector.close()


def test_requests_are_answered_as_before(tmp_path):
    """A reply line to a request line; none to a request too long to be one."""
    path = os.path.join(str(tmp_path), hb.SOCKET_NAME)
    selector, timers = selectors.DefaultSelector(), hb.Timers()
    control = hb.ControlServer(path, selector, timers, lambda request: {"ok": True, "echo": request})
    try:
        answers = {}
        for name, data in (("json", b'{"cmd": "status"}\n'), ("bad", b"not json\n"), ("list", b"[1]\n"),
                           ("too long", b"x" * hb.MAX_CONTROL_REQUEST)):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(data)
            serve(selector, timers, lambda: False, 0.1)
            answers[name] = read_line(sock, 1.0)
            sock.close()
        assert answers == {"json": b'{"ok": true, "echo": {"cmd": "status"}}\n',
                           "bad": b'{"ok": false, "error": "bad request"}\n',
                           "list": b'{"ok": true, "echo": {}}\n', "too long": b""}
    finally:
        control.close()
        selector.close()

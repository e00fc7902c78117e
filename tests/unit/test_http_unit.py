"""The HTTP listener (http_listen) with real sockets on 127.0.0.1, its loop driven here as Daemon.run()
drives it: idle connections cannot keep a scrape out, a request must arrive within
HTTP_REQUEST_TIMEOUT_S, a body is made at most once per HTTP_CACHE_S, and every answer says what the
browser may do with it. No root needed."""
import selectors
import socket
import time

import pytest

import heartbeat as hb

REPORT = {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active", "pid": 1,
          "auto_failback": "on", "nodes": {}, "links": [], "counters": {}, "groups": [], "events": []}


class Reports:
    """The daemon's status() stand-in: counts its calls and the arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return dict(REPORT)


class Served:
    """An HTTPListener on 127.0.0.1 (any free port), a selector and timers, the loop run on demand."""

    def __init__(self, clock=time.monotonic, settings=None):
        self.selector, self.timers, self.reports = selectors.DefaultSelector(), hb.Timers(clock), Reports()
        self.http = hb.HTTPListener(("127.0.0.1", 0), self.selector, self.timers, self.reports,
                                    settings or hb.Settings())
        self.port = self.http.sock.getsockname()[1]

    def serve(self, until=lambda: False, budget_s=0.3):
        deadline = time.monotonic() + budget_s
        while not until() and time.monotonic() < deadline:
            for key, _ in self.selector.select(0.01):
                key.data(key.fileobj)
            self.timers.run_due()

    def connect(self, request=b""):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if request:
            sock.sendall(request)
        return sock

    def get(self, path="/metrics", head=b""):
        sock = self.connect(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + head + b"\r\n")
        answer = b""
        sock.setblocking(False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            self.serve(budget_s=0.02)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            answer += chunk
        sock.close()
        return answer

    def close(self):
        self.http.close()
        self.selector.close()


@pytest.fixture()
def served():
    server = Served()
    yield server
    server.close()


def test_sixteen_idle_connections_from_one_host_do_not_keep_a_scrape_out(served):
    """One host reopening 16 idle connections every 5 s took every slot: each scrape was closed unanswered."""
    idle = [served.connect() for _ in range(hb.HTTP_MAX_CLIENTS)]
    served.serve(budget_s=0.2)
    answer = served.get()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"heartbeat_up 1" in answer
    assert len(served.http.clients) <= hb.HTTP_MAX_PER_SOURCE
    for sock in idle:
        sock.close()


def test_a_client_that_says_nothing_is_closed_after_the_request_timeout():
    now = [1000.0]
    served = Served(clock=lambda: now[0])
    try:
        idle = served.connect()
        served.serve(lambda: served.http.clients, 1.0)
        assert len(served.http.clients) == 1
        now[0] += hb.HTTP_REQUEST_TIMEOUT_S - 0.1
        served.timers.run_due()
        assert len(served.http.clients) == 1
        now[0] += 0.1
        served.timers.run_due()
        assert served.http.clients == {}
        idle.settimeout(1)
        assert idle.recv(100) == b""
        idle.close()
    finally:
        served.close()
    assert 1.0 <= hb.HTTP_REQUEST_TIMEOUT_S <= 2.0


def test_a_body_is_made_once_a_second_at_most_and_the_page_asks_for_its_events_only():
    """GET / built the whole report, 500 events, in the loop, for every request."""
    now = [1000.0]
    served = Served(clock=lambda: now[0])
    try:
        for _ in range(3):
            assert served.get("/").startswith(b"HTTP/1.1 200 OK")
            assert served.get("/metrics").startswith(b"HTTP/1.1 200 OK")
        assert served.reports.calls == [{"last_events": hb.EVENTS_ON_PAGE}, {"events": False}]
        now[0] += hb.HTTP_CACHE_S
        served.get("/metrics")
        assert len(served.reports.calls) == 3
    finally:
        served.close()


def test_every_answer_forbids_sniffing_and_everything_the_page_does_not_use(served):
    for path in ("/", "/metrics", "/nothing"):
        head = served.get(path).split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        assert "X-Content-Type-Options: nosniff" in head
        assert ("Content-Security-Policy: default-src 'none'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'") in head

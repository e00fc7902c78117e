"""The HTTP listener (http_listen) with real sockets on 127.0.0.1, its loop driven here as Daemon.run()
drives it: idle connections cannot keep a scrape out, a request must arrive within
HTTP_REQUEST_TIMEOUT_S, a body is made at most once per HTTP_CACHE_S, and every answer says what the
browser may do with it. No root needed."""
import base64
import os
import selectors
import shutil
import socket
import subprocess
import sys
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
        """The whole answer to one GET; b"" when the connection is closed without one."""
        try:
            return self.exchange(path, head)
        except ConnectionResetError:
            return b""

    def exchange(self, path, head):
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


# ---------------------------------------------------------------- http_allow, TLS and basic auth (heartbeat.py.cf)

from fakes import tutorial_confdir, write  # noqa: E402


def settings_of(tmp_path, text):
    tmp_path.mkdir(parents=True, exist_ok=True)
    confdir = tutorial_confdir(tmp_path)
    write(confdir, hb.SETTINGS_FILE, text)
    return confdir, hb.load_config(confdir, "prime").settings


def errors_of(tmp_path, text):
    with pytest.raises(hb.ConfigErrors) as caught:
        settings_of(tmp_path, text)
    return [str(e) for e in caught.value.errors]


def test_http_allow_answers_only_its_networks(tmp_path):
    _, settings = settings_of(tmp_path, "http_listen 9694\nhttp_allow 10.0.0.0/8, ::1\n".replace(", ", ","))
    assert [str(n) for n in settings.http_allow] == ["10.0.0.0/8", "::1/128"]
    assert hb.source_allowed("10.1.2.3", settings.http_allow) and hb.source_allowed("::ffff:10.1.2.3",
                                                                                     settings.http_allow)
    assert not hb.source_allowed("127.0.0.1", settings.http_allow) and hb.source_allowed("127.0.0.1", ())
    served = Served(settings=settings)
    try:
        assert served.get() == b""                                 # closed unanswered
        assert served.http.refused == {"not allowed": 1}
        served.http.configure(hb.Settings(http_allow=hb.parse_networks("127.0.0.0/8")))     # a reload
        assert served.get().startswith(b"HTTP/1.1 200 OK")
    finally:
        served.close()
    (error,) = errors_of(tmp_path / "bad", "http_allow 10.0.0.0/8,lan\n")
    assert error.endswith("heartbeat.py.cf:1: http_allow: 'lan' is not a network or an address (write e.g. "
                          "10.0.0.0/8,192.168.1.5,::1, or any)")


def make_cert(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: no self-signed certificate to test TLS with")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def test_tls_serves_https_and_refuses_plain_http(tmp_path):
    import ssl
    cert, key = make_cert(tmp_path)
    _, settings = settings_of(tmp_path, f"http_listen 9694\nhttp_tls_cert {cert}\nhttp_tls_key {key}\n")
    served = Served(settings=settings)
    try:
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", served.port), timeout=2)
        raw.setblocking(False)
        tls = context.wrap_socket(raw, do_handshake_on_connect=False)
        while True:                                                # the handshake, the loop run in between
            served.serve(budget_s=0.02)
            try:
                tls.do_handshake()
                break
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        for _ in range(200):
            served.serve(budget_s=0.01)
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            if not chunk:
                break
            answer += chunk
        tls.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"heartbeat_up 1" in answer
        assert served.get() == b"" and served.http.refused == {"tls handshake": 1}     # plain HTTP: no answer
    finally:
        served.close()


def test_check_refuses_a_tls_key_others_can_read_and_half_a_tls_pair(tmp_path):
    cert, key = make_cert(tmp_path)
    os.chmod(key, 0o644)
    (error,) = errors_of(tmp_path / "a", f"http_tls_cert {cert}\nhttp_tls_key {key}\n")
    assert error.endswith(f"heartbeat.py.cf:2: http_tls_key: {key} is readable by every user (mode 644): a private "
                          f"key must be root's alone; chmod 600 {key}")
    os.chmod(key, 0o600)
    (error,) = errors_of(tmp_path / "b", f"http_tls_cert {cert}\n")
    assert error.endswith("heartbeat.py.cf:1: http_tls_cert needs http_tls_key too (TLS takes both)")
    (error,) = errors_of(tmp_path / "c", f"http_tls_cert {key}\nhttp_tls_key {key}\n")
    assert f"heartbeat.py.cf:1: http_tls_cert: cannot use {key} with {key}" in error


def basic(user, password):
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def test_basic_auth_answers_its_user_only_checks_passwords_off_the_loop_and_remembers(tmp_path):
    hashed = hb.password_hash("right horse", iterations=hb.MIN_PBKDF2_ITERATIONS)
    _, settings = settings_of(tmp_path, f"http_listen 9694\nhttp_basic_auth prom:{hashed}\n")
    assert settings.http_basic_auth == ("prom", hashed) and "right horse" not in repr(settings)
    pending = []
    served = Served(settings=settings)
    served.http.post = pending.append
    real_serve = served.serve

    def serve(until=lambda: False, budget_s=0.3):              # the loop also runs what threads post
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            real_serve(until, 0.01)
            while pending:
                pending.pop(0)()
    served.serve = serve
    try:
        answer = served.get()
        assert answer.startswith(b"HTTP/1.1 401 Unauthorized") and b'WWW-Authenticate: Basic realm="heartbeat.py"' \
            in answer and b"heartbeat_up" not in answer
        assert served.get(head=basic("prom", "wrong")).startswith(b"HTTP/1.1 401")
        assert served.get(head=basic("other", "right horse")).startswith(b"HTTP/1.1 401")
        assert served.get(head=basic("prom", "right horse")).startswith(b"HTTP/1.1 200 OK")
        calls = []
        real = hb.password_matches
        hb.password_matches = lambda *a: calls.append(a) or real(*a)
        try:
            assert served.get(head=basic("prom", "right horse")).startswith(b"HTTP/1.1 200 OK")
            assert served.get(head=basic("prom", "wrong")).startswith(b"HTTP/1.1 401")
        finally:
            hb.password_matches = real
        assert calls == []                                         # both known: no second PBKDF2
    finally:
        served.close()


def test_a_password_written_in_clear_is_refused_and_never_quoted(tmp_path):
    for n, text in enumerate(("http_basic_auth prom:s3cret-horse\n", "http_basic_auth prom s3cret-horse\n",
                              "http_basic_auth prom:pbkdf2_sha256$100$salt$s3cret-horse\n")):
        (error,) = errors_of(tmp_path / str(n), text)
        assert "s3cret-horse" not in error and "hash-password" in error or "iterations" in error, error


def test_hash_password_prints_a_line_for_heartbeat_py_cf(tmp_path):
    result = subprocess.run([sys.executable, hb.__file__, "hash-password", "prom", "--iterations", "10000"],
                            input="right horse\n", capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("http_basic_auth prom:pbkdf2_sha256$10000$") and "right horse" not in line
    user, hashed = hb.parse_basic_auth(line.split()[1])
    assert user == "prom" and hb.password_matches("right horse", hashed)
    assert not hb.password_matches("wrong horse", hashed)

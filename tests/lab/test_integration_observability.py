"""Metrics, notify hooks, the event history and the status page, on a running cluster in
namespaces (root only): Prometheus' own promtool and prometheus_client's parser read the metrics,
lynx reads the page, a hook's record shows what it was told and in which order."""
import os
import shutil
import subprocess
import sys
import time

import pytest

import heartbeat as hb
from netns import VIP, WEBSERVER_SCRIPT, Node, hacf, have_root_net, holders, page, wait
from netns import WEB_PORT as PORT

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

HTTP_PORT = 9694
HOOK = """#!/bin/sh
# records each call: its arguments, then the HA_EVENT* variables it got
echo "$*|$HA_EVENT|$HA_EVENT_NODE|$HA_EVENT_GROUP|$HA_EVENT_DURATION_MS|$HA_CURHOST" >> "$(dirname "$0")/../../hook.log"
"""
SLOW_HOOK = "#!/bin/sh\nexec sleep 30\n"
GET = """
import sys, urllib.request
reply = urllib.request.urlopen(sys.argv[1], timeout=5)
sys.stdout.write(reply.headers["Content-Type"] + "\\n" + reply.read().decode())
"""


def cluster(lab, settings="", hooks=None):
    text = hacf(keepalive="200ms", deadtime="1", initdead="3")
    nodes = []
    for name in ("prime", "calc"):
        node = Node(lab, name, text, haresources=f"prime {VIP}/24/eth0 webserver::{PORT}::{lab.tmp}\n",
                    resource_scripts={"webserver": WEBSERVER_SCRIPT})
        node.write("heartbeat.py.cf", f"http_listen {HTTP_PORT}\n{settings}")
        os.makedirs(os.path.join(node.config_dir, "notify.d"))
        for hook, body in (hooks or {"record": HOOK}).items():
            node.write(os.path.join("notify.d", hook), body, mode=0o755)
        node.write(os.path.join("notify.d", "record.sample"), HOOK, mode=0o755)   # not a hook name: never run
        node.start()
        nodes.append(node)
    return nodes


def hook_log(node):
    path = os.path.join(node.root, "hook.log")
    with open(path) if os.path.exists(path) else open(os.devnull) as handle:
        return [line.rstrip("\n").split("|") for line in handle]


def fetch(lab, node, path):
    """(content type, body) of GET http://127.0.0.1:9694/path in node's namespace."""
    out = lab.exec(node.name, [sys.executable, "-c", GET, f"http://127.0.0.1:{HTTP_PORT}{path}"])
    kind, _, body = out.stdout.partition("\n")
    return kind, body


def metric_value(families, name, **labels):
    for family in families:
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def hard_failover(lab, prime, calc):
    wait(lambda: holders(lab) == ["prime"] and page(lab) == "prime", 15)
    for node in (prime, calc):              # past the first 5 s, when deadtime is 2 s longer
        node.wait_for(lambda s: s["uptime_s"] >= 6.0, 15)
    cut = time.monotonic()
    lab.cut("prime")
    wait(lambda: holders(lab, ["calc"]) == ["calc"] and page(lab) == "calc", 10, interval=0.02)
    return time.monotonic() - cut


def test_after_a_failover_the_events_hooks_metrics_and_page_tell_what_happened(lab):
    prime, calc = cluster(lab)
    took = hard_failover(lab, prime, calc)
    # the page answers before the acquisition is over (the services start while the addresses' probe
    # waits for an answer): the events come when it is
    calc.wait_for(lambda s: "active" in [e["kind"] for e in s["events"]], 5)
    events = calc.status()["events"]
    kinds = [e["kind"] for e in events]
    for kind in ("node-up", "node-dead", "link-dead", "group-starting", "addresses-added", "group-acquired", "active"):
        assert kind in kinds, kinds
    dead = next(e for e in events if e["kind"] == "node-dead")
    acquired = next(e for e in events if e["kind"] == "group-acquired")
    assert dead["node"] == "prime" and "last heard" in dead["detail"]
    assert acquired["group"] == f"{VIP}/24/eth0" and acquired["duration_ms"] is not None
    assert acquired["detail"].startswith("down here ") and "prime last heard at" in acquired["detail"]
    assert kinds.index("node-dead") < kinds.index("group-starting") < kinds.index("addresses-added") < \
        kinds.index("group-acquired")
    added = next(e for e in events if e["kind"] == "addresses-added")
    assert added["detail"] == VIP and added["duration_ms"] < acquired["duration_ms"]
    text = lab.exec("calc", calc.argv("status", "--events")).stdout
    print(f"\ncalc's event history after prime's cable was cut (calc served after {took:.2f} s):\n{text}")
    assert "node-dead         node=prime: last heard" in text and " ms): down here" in text

    wait(lambda: [c[1] for c in hook_log(calc)].count("group-acquired") == 1, 5)
    calls = hook_log(calc)
    told = [c[1] for c in calls]
    assert told.index("node-dead") < told.index("group-starting") < told.index("group-acquired") < \
        told.index("active")
    acquired_call = calls[told.index("group-acquired")]
    assert acquired_call[0].startswith(f"group-acquired calc {VIP}/24/eth0  down here ")   # EVENT NODE GROUP LINK
    assert acquired_call[3] == f"{VIP}/24/eth0" and acquired_call[4].isdigit() and acquired_call[5] == "calc"

    metrics = lab.exec("calc", calc.argv("status", "--format", "prometheus")).stdout
    kind, served = fetch(lab, calc, "/metrics")
    assert kind == "text/plain; version=0.0.4; charset=utf-8"
    assert served.splitlines()[:6] == metrics.splitlines()[:6]
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=served, capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    parser = pytest.importorskip("prometheus_client.parser")
    families = list(parser.text_string_to_metric_families(served))
    assert metric_value(families, "heartbeat_node_status", node="prime", status="dead") == 1
    assert metric_value(families, "heartbeat_node_status", node="prime", status="active") == 0
    assert metric_value(families, "heartbeat_link_status", node="prime", link="eth0", status="dead") == 1
    assert metric_value(families, "heartbeat_group_owner", group=f"{VIP}/24/eth0", node="calc") == 1
    assert metric_value(families, "heartbeat_group_state", group=f"{VIP}/24/eth0", state="running") == 1
    assert metric_value(families, "heartbeat_group_takeovers_total", group=f"{VIP}/24/eth0") == 1
    assert 0 < metric_value(families, "heartbeat_group_last_takeover_duration_seconds", group=f"{VIP}/24/eth0") < 5
    assert metric_value(families, "heartbeat_node_last_heard_seconds", node="prime") > 1
    assert metric_value(families, "heartbeat_events_total", kind="node-dead") == 1

    if shutil.which("lynx"):
        out = lab.exec("calc", ["lynx", "-dump", "-nolist", f"http://127.0.0.1:{HTTP_PORT}/"]).stdout
        print(out)
        assert "heartbeat.py on calc: active" in out
        assert f"{VIP}/24/eth0" in out and "prime" in out and "node-dead" in out
        row = next(line for line in out.splitlines() if f"{VIP}/24/eth0" in line and "running" in line)
        assert "calc" in row.split(f"{VIP}/24/eth0", 1)[1]      # held by calc
    assert not any(c[0].startswith("record.sample") for c in calls)


def test_a_hung_hook_delays_no_takeover_and_is_killed(lab):
    prime, calc = cluster(lab, settings="notify_timeout 1s\n", hooks={"a-slow": SLOW_HOOK, "record": HOOK})
    took = hard_failover(lab, prime, calc)
    print(f"\nwith a hook that hangs on every event, calc served {took:.2f} s after the cut (deadtime 1 s)")
    assert took < 3.0
    wait(lambda: "notify hook" in calc.log() and "a-slow" in calc.log(), 10)
    assert "exit 124" in calc.log()
    wait(lambda: "group-acquired" in [c[1] for c in hook_log(calc)], 20)      # told, in order, after the slow one


PROBE = """
import socket, sys, time
port = int(sys.argv[1])

def closed(socks):
    count = 0
    for s in socks:
        s.setblocking(False)
        try:
            count += s.recv(1) == b""
        except BlockingIOError:
            pass
    return count

def ask(request):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(request)
    s.settimeout(5)
    return s.recv(200).split(b"\\r\\n")[0].decode()

idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]   # connect, never speak
time.sleep(0.5)
print("closed at once", closed(idle))
for s in idle:
    s.close()
time.sleep(0.3)
print(ask(b"POST /metrics HTTP/1.0\\r\\n\\r\\n"))
print(ask(b"GET /nothing HTTP/1.0\\r\\n\\r\\n"))
print(ask(b"GET /" + b"a" * 20000))
silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
time.sleep(2.5)
print("closed after 2 s", closed(silent))
"""


def test_the_listener_is_bounded_and_never_stops_the_daemon(lab):
    prime, calc = cluster(lab)
    wait(lambda: holders(lab) == ["prime"], 15)
    lines = lab.exec("calc", [sys.executable, "-c", PROBE, str(HTTP_PORT)], timeout=30).stdout.splitlines()
    assert lines == ["closed at once 16",                    # 20 from one address: its newest 4 kept
                     "HTTP/1.1 405 Method Not Allowed",      # read-only
                     "HTTP/1.1 404 Not Found",
                     "HTTP/1.1 400 Bad Request",             # 20 KB without an end: answered after 8 KB
                     "closed after 2 s 3"]                   # HTTP_REQUEST_TIMEOUT_S
    assert calc.status()["running"]
    assert fetch(lab, calc, "/metrics")[1].startswith("# HELP heartbeat_up")


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) is not installed")
def test_the_readme_alert_rules_are_valid_prometheus_rules(tmp_path):
    from paths import ROOT
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    rules = readme.split("```yaml\n# rules.yml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "rules.yml").write_text(rules)
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and "SUCCESS: 2 rules found" in check.stdout, check.stdout + check.stderr


@pytest.mark.parametrize("lab", [("prime", "calc")], indirect=True)
def test_sighup_opens_moves_and_closes_the_listener(lab):
    import signal
    node = Node(lab, "prime", hacf(keepalive="200ms", deadtime="1", initdead="3"))
    node.start()
    node.wait_for(lambda s: s["http_listen"] is None, 10)
    listening = lambda port: f":{port} " in lab.exec("prime", ["ss", "-Htln"]).stdout     # noqa: E731
    for text, port, gone in (("http_listen 9694\n", 9694, None), ("http_listen 127.0.0.1:9695\n", 9695, 9694),
                             ("", None, 9695)):
        node.write("heartbeat.py.cf", text)
        node.proc.send_signal(signal.SIGHUP)
        if port:
            wait(lambda port=port: listening(port), 5)
            assert node.status()["http_listen"] == f"127.0.0.1:{port}"
        if gone:
            wait(lambda gone=gone: not listening(gone), 5)
    assert node.status()["http_listen"] is None


SERVICE_SCRIPT = """#!/bin/sh
# service NAME start|stop|status: start leaves three sleeps running in its session (the service)
pids="$(dirname "$0")/../../$1.pids"
case "$2" in
start) for i in 1 2 3; do sleep 300 & echo $! >> "$pids"; done ;;
stop) [ -f "$pids" ] && kill $(cat "$pids") 2>/dev/null; rm -f "$pids" ;;
status) [ -f "$pids" ] && echo running || echo stopped ;;
esac
exit 0
"""


def serving_alone(lab, python=sys.executable):
    """prime alone, holding the group `service::web` (three sleeps), /metrics on HTTP_PORT."""
    node = Node(lab, "prime", hacf(keepalive="200ms", deadtime="1", initdead="2"),
                haresources="prime service::web\n", resource_scripts={"service": SERVICE_SCRIPT}, python=python)
    node.write("heartbeat.py.cf", f"http_listen {HTTP_PORT}\n")
    node.start()
    node.wait_for(lambda s: s["groups"][0]["owner"] == "prime" and s["groups"][0]["state"] == "running", 20)
    return node


@pytest.mark.parametrize("lab", [("prime", "calc")], indirect=True)
def test_with_psutil_status_and_metrics_count_the_processes_the_start_script_left(lab):
    pytest.importorskip("psutil")
    prime = serving_alone(lab)
    with open(os.path.join(prime.root, "web.pids")) as handle:
        pids = sorted(int(word) for word in handle.read().split())
    group = prime.status()["groups"][0]
    assert group["processes"]["pids"] == pids and group["processes"]["count"] == 3, group
    assert group["processes"]["rss_bytes"] > 0 and group["processes"]["open_fds"] >= 9
    text = lab.exec("prime", prime.argv("status")).stdout
    assert f"  3 service process(es) (pid {' '.join(map(str, pids))}): CPU " in text, text
    _, served = fetch(lab, prime, "/metrics")
    assert 'heartbeat_group_processes{group="service::web"} 3' in served.splitlines()
    assert 'heartbeat_group_process_cpu_seconds_total{group="service::web"} ' in served
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=served, capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("lab", [("prime", "calc")], indirect=True)
def test_without_psutil_the_daemon_runs_as_before_and_status_says_how_to_get_the_numbers(lab):
    """A Python without psutil: a venv of the tests' own, without its site-packages."""
    bare = os.path.join(lab.tmp, "bare-python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", bare], check=True, timeout=60)
    python = os.path.join(bare, "bin", "python")
    assert subprocess.run([python, "-c", "import psutil"], capture_output=True, timeout=30).returncode == 1
    prime = serving_alone(lab, python=python)
    status = prime.status()
    assert status["psutil"] is None and "processes" not in status["groups"][0]
    text = lab.exec("prime", prime.argv("status")).stdout
    assert f"service processes: not counted (needs psutil: {hb.PSUTIL_INSTALL})" in text.splitlines(), text
    _, served = fetch(lab, prime, "/metrics")
    assert "heartbeat_group_process" not in served and 'heartbeat_group_state{group="service::web",state="running"} 1' \
        in served.splitlines()

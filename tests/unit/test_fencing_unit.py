"""STONITH with a fake clock and a recording device: when a dead peer is reset before takeover,
when not, the retries every 5 s, the T_STONITH messages, fence_delay, and the device's argv."""
import re
import time

import pytest

import heartbeat as hb
from fakes import IPFailCluster, ipfail_config


class Device:
    """run_command's stand-in for the device: answers from a script of results, records argv."""

    def __init__(self, *codes):
        self.codes, self.calls = list(codes), []

    def __call__(self, argv, timeout_s, env=None):
        self.calls.append(argv)
        return hb.CommandResult(self.codes.pop(0) if self.codes else 0, "")


class Fenced(IPFailCluster):
    """prime, its policy and a Fencer whose resets are answered by `device`."""

    def __init__(self, config, device):
        super().__init__(config)
        self.posted, self.device = [], device
        if config.stonith:
            self.policy.fencer = hb.Fencer(config.stonith, self.timers, self.posted.append, self.rec,
                                           self.membership.send, self.alive, run=device)

    def alive(self, node):
        return self.membership.peers[node].status != "dead"

    def settle(self):
        """Let the device's thread answer, then run what it posted, as the loop would."""
        for _ in range(200):
            if self.posted:
                self.posted.pop(0)()
                return
            time.sleep(0.01)
        raise AssertionError("the device never answered")

    def silence(self, seconds=6):
        """calc stops beating: declared dead after deadtime (5 s)."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.now = min(end, self.clock.now + 0.05)
            self.timers.run_due()

    def results(self):
        return [(m.get("node"), m.get("result")) for m in self.sent("stonith")]


def fenced(tmp_path, device, extra="stonith_host * null prime calc\n", settings=""):
    if settings:
        (tmp_path / "heartbeat.py.cf").write_text(settings)
    return Fenced(ipfail_config(tmp_path, extra=extra), device)


def calc_holds(world, hold):
    world.receive(world.calc.packet(("t", "resource"), ("rsc_hold", hold), ("rtype", "full"), ("isstable", "1")))


def test_stonith_host_lines_for_other_nodes_are_skipped_and_the_last_one_counts(tmp_path):
    config = ipfail_config(tmp_path, extra="stonith_host calc null a b\nstonith_host prime null calc\n"
                                  "stonith_host * null prime calc\n")
    assert config.stonith.params == {"hostlist": "prime calc"} and config.stonith.lineno == 12
    argv, env = hb.stonith_argv(config.stonith, "reset", "calc")
    assert argv == ["stonith", "-t", "null", "-E", "-T", "reset", "calc"] and env["hostlist"] == "prime calc"


def test_the_devices_password_is_in_no_argv_and_no_log_line(tmp_path):
    device = hb.StonithDevice("external/ipmi", {"hostname": "calc", "passwd": "s3cret-pw"}, 11,  # noqa: S106
                              "cluster-glue")
    argv, env = hb.stonith_argv(device, "reset", "calc")
    assert "s3cret-pw" not in " ".join(argv) and env["passwd"] == "s3cret-pw"  # noqa: S105
    assert hb.stonith_argv(device, "status")[0] == ["stonith", "-t", "external/ipmi", "-E", "-S"]
    world = fenced(tmp_path, Device())
    fencer = hb.Fencer(device, world.timers, world.posted.append, world.rec, world.membership.send,
                       run=lambda argv, timeout_s, env=None: hb.CommandResult(1, "ipmitool -P s3cret-pw: refused"))
    fencer.fence("calc", lambda: None)
    world.settle()
    assert world.rec.has("stonith: ipmitool -P ***: refused")
    assert not any("s3cret-pw" in line for line in world.rec.lines)


@pytest.mark.parametrize("line, words", [("stonith_host * no-such-type x", "Invalid Stonith type [no-such-type]"),
                                         ("stonith_host prime", "takes the node using the device"),
                                         ("stonith null /nonexistent/file", "Invalid Stonith config file")])
def test_bad_stonith_lines_are_errors_at_their_line(tmp_path, line, words):
    with pytest.raises(hb.ConfigErrors) as caught:
        ipfail_config(tmp_path, extra=line + "\n")
    (error,) = caught.value.errors
    assert error.lineno == 10 and words in error.message, error


def test_a_peer_dead_by_silence_is_reset_before_its_groups_are_taken_and_retried_every_5_s(tmp_path):
    device = Device(1, 1, 0)
    world = fenced(tmp_path, device)
    calc_holds(world, "local")
    world.silence()
    assert world.membership.peers["calc"].status == "dead"
    for attempt in range(3):
        world.settle()
        if attempt < 2:
            assert not world.policy.holds["foreign"], "nothing is taken over before the reset succeeds"
            assert world.rec.has("STONITH of calc failed.  Retrying...")
            world.silence(hb.STONITH_RETRY_S - 0.1)
            assert len(device.calls) == attempt + 1
            world.silence(0.2)
    assert len(device.calls) == 3 and world.rec.has("node calc now reset.")
    assert world.policy.rsc_hold() == "all"
    order = [line for line in world.rec.lines if "now reset." in line or "Resources being acquired" in line]
    assert order == ["info: node calc now reset.", "info: Resources being acquired from calc."]   # 3.0.6's order
    assert world.results() == [("calc", "bad"), ("calc", "bad"), ("calc", "OK")]


def test_a_peer_known_to_hold_nothing_is_not_reset(tmp_path):
    device = Device()
    world = fenced(tmp_path, device)
    calc_holds(world, "none")
    world.silence()
    assert device.calls == [] and world.policy.rsc_hold() == "all"
    assert world.rec.has("Dead node calc gave up resources.") and world.results() == [("calc", "unneeded")]


def test_a_graceful_shutdown_needs_no_reset(tmp_path):
    device = Device()
    world = fenced(tmp_path, device)
    calc_holds(world, "local")
    world.receive(world.calc.packet(("t", "shutdone"), ("st", "dead")))
    assert device.calls == [] and world.policy.rsc_hold() == "all"


def test_without_a_device_it_says_so_once_and_takes_over(tmp_path):
    world = fenced(tmp_path, Device(), extra="")
    calc_holds(world, "local")
    world.silence()
    assert world.policy.rsc_hold() == "all"
    assert world.rec.has("No STONITH device configured.") and world.rec.has("Shared disks are not protected.")
    assert world.results() == [("calc", "n_stnth")]


def test_a_peer_heard_again_is_not_reset(tmp_path):
    device = Device(1)
    world = fenced(tmp_path, device)
    calc_holds(world, "local")
    world.silence()
    world.settle()
    world.receive(world.calc.status())
    world.advance(hb.STONITH_RETRY_S + 1)                   # calc beats all along
    assert len(device.calls) == 1 and world.rec.has("STONITH of calc cancelled: it is alive again")


def test_fence_delay_holds_back_the_reset_of_a_node_that_holds_nothing(tmp_path):
    device = Device()
    world = fenced(tmp_path, device, settings="fence_delay 3s\n")
    calc_holds(world, "all")                                # calc serves both groups: prime holds nothing
    assert world.policy.rsc_hold() == "none"
    world.silence()
    assert device.calls == [] and world.rec.has("STONITH of calc in 3 s (fence_delay")
    world.silence(3.1)
    world.settle()
    assert len(device.calls) == 1 and world.policy.rsc_hold() == "all"


def test_builtin_meatware_waits_for_the_operators_word(tmp_path):
    world = fenced(tmp_path, Device())
    device = hb.StonithDevice("meatware", {"hostlist": "prime calc"}, 11, "builtin")
    world.policy.fencer = hb.Fencer(device, world.timers, world.posted.append, world.rec, world.membership.send,
                                    world.alive)
    calc_holds(world, "local")
    assert world.policy.fencer.confirm("calc") == "no reset of calc is waiting for a confirmation"
    world.silence()
    for _ in range(2):                              # the two CRIT lines, posted from the device's thread
        world.settle()
    assert world.rec.has("OPERATOR INTERVENTION REQUIRED to reset calc.")
    time.sleep(0.2)
    assert world.posted == [] and not world.policy.holds["foreign"], "nothing happens without the operator"
    assert world.policy.fencer.confirm("calc") == ""
    world.settle()
    assert world.policy.holds["foreign"] and world.results() == [("calc", "OK")]


def test_without_cluster_glue_an_external_plugin_runs_directly_with_its_calling_convention(tmp_path):
    """PLUGIN reset HOST, the parameters in its environment, exit 0 = success (README.external)."""
    record = tmp_path / "calls"
    plugin = tmp_path / "recorder"
    plugin.write_text(f'#!/bin/sh\necho "$1 $2 hostlist=$hostlist" >> {record}\n[ "$2" = calc ]\n')
    plugin.chmod(0o755)
    device = hb.StonithDevice("external/recorder", {"hostlist": "prime calc"}, 11, "external", str(plugin))
    world = fenced(tmp_path, Device())
    fencer = hb.Fencer(device, world.timers, world.posted.append, world.rec, world.membership.send)
    assert fencer.reset("calc").returncode == 0 and fencer.reset("sigma").returncode != 0
    assert record.read_text().splitlines() == ["reset calc hostlist=prime calc", "reset sigma hostlist=prime calc"]


class BrokenDevice(Device):
    """A device whose first reset hits a bug (an exception in the reset's thread), then works."""

    def __call__(self, argv, timeout_s, env=None):
        if not self.calls:
            self.calls.append(argv)
            raise RuntimeError("a bug in the plugin's call")
        return super().__call__(argv, timeout_s, env)


def test_a_bug_in_the_reset_thread_is_a_failed_attempt_and_the_next_one_resets(tmp_path):
    """The reset runs in a thread of its own: an exception there must still come back to the loop
    as a failed attempt (logged, T_STONITH bad, retried), never leave the takeover waiting."""
    device = BrokenDevice()
    world = fenced(tmp_path, device)
    calc_holds(world, "local")
    world.silence()
    world.settle()
    assert world.rec.has("internal error: RuntimeError") and world.rec.has("STONITH of calc failed.  Retrying...")
    assert not world.policy.holds["foreign"]
    world.silence(hb.STONITH_RETRY_S + 0.1)
    world.settle()
    assert world.rec.has("node calc now reset.") and world.policy.rsc_hold() == "all"
    assert world.results() == [("calc", "bad"), ("calc", "OK")]


# ---------------------------------------------------------------- the device's secrets: files and output

def test_redacted_masks_a_secret_in_its_base64_url_encoded_and_quoted_forms_too():
    """Only exact copies were masked: curl -v's `Authorization: Basic YWRtaW46czNjcmV0LXB3`, a
    URL-encoded password in a redfish URL or a JSON-quoted one went to the log as they were."""
    import base64
    import json
    import shlex
    import urllib.parse
    secret, user = 'p@ss w"rd/1', "admin"
    secrets = {"userid": user, "passwd": secret, "ipaddr": "10.0.0.12"}
    forms = [secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret), urllib.parse.quote(secret),
             json.dumps(secret), shlex.quote(secret), repr(secret),
             base64.b64encode(secret.encode()).decode(), base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
             base64.b64encode(f"{user}:{secret}".encode()).decode(),
             base64.b64encode(b"{'token': 'x', 'pw': '" + secret.encode() + b"'}").decode()]     # inside a blob
    for form in forms:
        out = hb.redacted(f"sent [{form}] to the device", secrets.values())
        assert out.startswith("sent [") and "***" in out, (form, out)
        leftover = out.replace("***", "")
        assert secret not in leftover and form not in leftover, (form, out)
    assert hb.redacted("pw abc ok", ["abc"]) == "pw abc ok"            # under 4 characters: too common to mask
    assert hb.redacted("the host 10.0.0.12 answers", []) == "the host 10.0.0.12 answers"


def stonith_world(tmp_path, extra, hacf_mode=0o644):
    ipfail_config(tmp_path, extra=extra)
    import os
    os.chmod(tmp_path / "ha.cf", hacf_mode)
    return hb.load_config(str(tmp_path), "prime")


def test_check_warns_when_a_file_with_device_parameters_is_readable_by_others(tmp_path):
    """ha.cf ships 0644; `check` checked only authkeys, while a stonith_host line or a `stonith`
    config file holds the device's password."""
    import os
    warned = [str(w) for w in stonith_world(tmp_path, "stonith_host * null prime calc\n").warnings]
    assert not any("STONITH" in w for w in warned)                      # null's hostlist is no secret
    (tmp_path / "device.cf").write_text("prime calc\n")
    os.chmod(tmp_path / "device.cf", 0o640)
    warned = [str(w) for w in hb.stonith_secret_warnings(hb.HaCf(path=str(tmp_path / "ha.cf"), stonith_lines=[
        hb.StonithLine(10, "*", "external/ipmi", "calc 10.0.0.12 admin s3cret lanplus"),
        hb.StonithLine(11, "*", "external/ipmi", "", config_file=str(tmp_path / "device.cf"))]))]
    ha_cf = str(tmp_path / "ha.cf")
    assert warned[0] == (f"{ha_cf}:10: warning: the STONITH device's parameters (its password, if it has one) are "
                         f"readable by every user: ha.cf is mode 644; chmod 600 {ha_cf} (heartbeat.py runs as root)")
    if os.geteuid() == 0:                      # a user's own group is no root group: as root, check the group bit
        os.chown(tmp_path / "device.cf", -1, 65534)
        warned = [str(w) for w in hb.stonith_secret_warnings(hb.HaCf(path=ha_cf, stonith_lines=[
            hb.StonithLine(11, "*", "external/ipmi", "", config_file=str(tmp_path / "device.cf"))]))]
        assert warned == [f"{ha_cf}:11: warning: the STONITH device's parameters (its password, if it has one) are "
                          f"readable by group 65534: {tmp_path / 'device.cf'} is mode 640; chmod 600 "
                          f"{tmp_path / 'device.cf'} (heartbeat.py runs as root)"]
    os.chmod(ha_cf, 0o600)
    os.chmod(tmp_path / "device.cf", 0o600)
    assert hb.stonith_secret_warnings(hb.HaCf(path=ha_cf, stonith_lines=[
        hb.StonithLine(10, "*", "external/ipmi", "calc 10.0.0.12 admin s3cret lanplus"),
        hb.StonithLine(11, "*", "external/ipmi", "", config_file=str(tmp_path / "device.cf"))])) == []


def test_check_prints_the_warning(tmp_path):
    from fakes import run
    ipfail_config(tmp_path, extra="stonith_host * null prime calc\nstonith_host calc external/ipmi prime x y z\n")
    result = run("check", "-c", str(tmp_path), "--node", "prime")
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}/ha.cf:11: warning: the STONITH device's parameters" in result.stderr


# ---------------------------------------------------------------- fencing tells hooks and /metrics

def test_fencing_records_events_and_metrics_so_a_held_back_takeover_is_seen(tmp_path):
    device = Device(1, 1, 0)
    world = fenced(tmp_path, device)
    events = hb.EventLog()
    world.policy.fencer.events = events
    calc_holds(world, "local")
    world.silence()
    world.settle()
    kinds = [(e["kind"], e.get("node"), e["detail"]) for e in events.snapshot()]
    assert kinds[0] == ("fence-started", "calc", "null: before calc's groups are taken over")
    assert kinds[1][:2] == ("fence-failed", "calc") and kinds[1][2].startswith("attempt 1: exit 1")
    snapshot = world.policy.fencer.snapshot()
    assert snapshot["fencing"] == ["calc"] and snapshot["failures"] == {"calc": 1}
    world.silence(hb.STONITH_RETRY_S + 0.1)
    world.settle()                                             # the second failure, 5 s later: no event
    assert [e["kind"] for e in events.snapshot()] == ["fence-started", "fence-failed"]
    report = dict(REPORT, stonith=world.policy.fencer.snapshot())
    metrics = hb.prometheus_text(report).splitlines()
    assert 'heartbeat_stonith_failures_total{node="calc"} 2' in metrics
    assert 'heartbeat_stonith_fencing{node="calc"} 1' in metrics
    assert re.search(r"^STONITH: calc being reset with null for \d+ s, 2 failed attempt\(s\) so far; its groups wait "
                     r"for it$", hb.format_status(report), re.M)
    (seconds,) = [float(line.split()[-1]) for line in metrics if line.startswith("heartbeat_stonith_fencing_seconds")]
    assert hb.STONITH_RETRY_S < seconds < hb.STONITH_RETRY_S + 2
    world.silence(hb.STONITH_RETRY_S + 0.1)
    world.settle()
    done = events.snapshot()[-1]
    assert (done["kind"], done["node"], done["detail"]) == ("fence-done", "calc", "null: after 3 attempts")
    assert 2 * hb.STONITH_RETRY_S * 1000 < done["duration_ms"] < (2 * hb.STONITH_RETRY_S + 2) * 1000
    metrics = hb.prometheus_text(dict(REPORT, stonith=world.policy.fencer.snapshot())).splitlines()
    assert 'heartbeat_stonith_resets_total{node="calc"} 1' in metrics
    assert 'heartbeat_stonith_fencing{node="calc"} 0' in metrics
    assert "STONITH: calc being reset" not in hb.format_status(dict(REPORT, stonith=world.policy.fencer.snapshot()))


def test_a_cancelled_reset_is_an_event_too(tmp_path):
    world = fenced(tmp_path, Device(1))
    events = hb.EventLog()
    world.policy.fencer.events = events
    calc_holds(world, "local")
    world.silence()
    world.settle()
    world.receive(world.calc.status())
    assert [e["kind"] for e in events.snapshot()] == ["fence-started", "fence-failed", "fence-cancelled"]


REPORT = {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active", "pid": 1,
          "auto_failback": "on", "nodes": {}, "links": [], "counters": {}, "groups": []}

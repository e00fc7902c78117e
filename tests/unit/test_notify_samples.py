"""The notify.d samples shipped in ha.d/ (no root needed): called as heartbeat.py calls a hook,
with `logger` and `sendmail` replaced by recorders on PATH, they say what happened."""
import os
import subprocess

import pytest

from paths import ROOT

SAMPLES = os.path.join(ROOT, "ha.d", "notify.d")
RECORDER = '#!/bin/sh\necho "$0 $*" >> "$RECORD"\ncat >> "$RECORD"\n'


def call(tmp_path, sample, event, *subjects, duration="", tools=("logger", "sendmail")):
    """Run a sample as the daemon's Notifier does: arguments, HA_EVENT* variables, a small PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        (bindir / tool).write_text(RECORDER)
        os.chmod(bindir / tool, 0o755)
    record = tmp_path / "record"
    node, group, link, detail = (list(subjects) + ["", "", "", ""])[:4]
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "RECORD": str(record), "HA_CURHOST": "calc", "HA_EVENT": event,
           "HA_EVENT_NODE": node, "HA_EVENT_GROUP": group, "HA_EVENT_LINK": link, "HA_EVENT_DETAIL": detail,
           "HA_EVENT_DURATION_MS": duration, "HA_EVENT_TIME": "2026-12-02T03:12:00+0000"}
    result = subprocess.run(["sh", os.path.join(SAMPLES, sample), event, node, group, link, detail],
                            capture_output=True, text=True, timeout=10, env=env)
    return result, record.read_text() if record.exists() else ""


def test_samples_are_shipped_off():
    for name in ("syslog", "mail"):
        assert not os.access(os.path.join(SAMPLES, name), os.X_OK), f"{name} must be off until chmod +x"


def test_syslog_sample_logs_one_line_per_event(tmp_path):
    result, record = call(tmp_path, "syslog", "group-acquired", "calc", "10.0.0.100", "", "down here 3.1 s",
                          duration="312")
    assert result.returncode == 0, result.stderr
    assert record.splitlines()[0].endswith("logger -t heartbeat-event -p daemon.notice -- "
                                           "group-acquired node=calc group=10.0.0.100 (312 ms): down here 3.1 s")
    _, record = call(tmp_path, "syslog", "link-dead", "prime", "", "eth1")
    assert record.splitlines()[-1].endswith("-- link-dead node=prime link=eth1")


def test_mail_sample_mails_what_needs_a_person_with_sendmail_t(tmp_path):
    result, record = call(tmp_path, "mail", "node-dead", "prime", "", "", "last heard 3.0 s ago")
    assert result.returncode == 0, result.stderr
    lines = record.splitlines()
    assert lines[0].endswith("sendmail -oi -t")
    assert "To: root" in lines and "Subject: [heartbeat.py on calc] node-dead node=prime" in lines
    assert "detail:   last heard 3.0 s ago" in lines
    (tmp_path / "record").unlink()
    _, record = call(tmp_path, "mail", "link-up", "prime", "", "eth0")
    assert record == ""                                             # not worth a mail


def test_mail_sample_without_sendmail_says_so_and_does_not_fail(tmp_path):
    if os.path.exists("/usr/sbin/sendmail"):
        pytest.skip("an MTA is installed here")
    result, record = call(tmp_path, "mail", "group-failed", "calc", "g1", tools=())
    assert result.returncode == 0 and "sendmail is not installed" in result.stderr and record == ""


@pytest.mark.parametrize("node, group, detail", [
    ("calc\nBcc: victim@example.com", "g1", "x"),
    ("calc", "g1\r\nBcc: victim@example.com", "x"),
    ("calc\\nBcc: victim@example.com", "g1", "x"),                 # dash's echo turned \\n into a newline
    ("calc", "g1", "lost\n.\nBcc: victim@example.com"),            # a lone dot ended the mail without -oi
], ids=["newline", "crlf", "backslash-n", "dot"])
def test_mail_sample_keeps_a_peers_words_out_of_the_headers(tmp_path, node, group, detail):
    """Node, group and detail can come from the peer: each stays on its own line, in the Subject or
    the body, and can neither add a header (Bcc:) nor end the mail early."""
    result, record = call(tmp_path, "mail", "group-failed", node, group, "", detail)
    assert result.returncode == 0, result.stderr
    argv, mail = record.split("\n", 1)
    headers, _, body = mail.partition("\n\n")
    assert [line.split(":")[0] for line in headers.splitlines()] == ["To", "Subject"], headers
    assert "Bcc: victim@example.com" in mail                         # the words are kept, made harmless
    assert not [line for line in body.splitlines() if line.startswith("Bcc") or line == "."], body
    assert "\r" not in mail
    assert argv.endswith("sendmail -oi -t")

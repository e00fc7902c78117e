"""Reporting of the authkeys keys (received per index, last seen, which key each peer signs with)
and of the optional extras: status text, status --json's fields and the Prometheus metrics."""
import os

import pytest

import heartbeat as hb

KEYS = [{"index": 1, "method": "sha1", "configured": True, "signing": False, "received": 1234, "last_seen_s": 2.25},
        {"index": 2, "method": "sha256", "configured": True, "signing": True, "received": 56, "last_seen_s": 0.1},
        {"index": 3, "method": "aes256gcm", "configured": True, "signing": False, "received": 0,
         "last_seen_s": None}]
REPORT = {"node": "prime", "version": hb.__version__, "generation": 1, "uptime_s": 1.0, "status": "active", "pid": 1,
          "auto_failback": "on", "links": [], "counters": {}, "groups": [], "events": [],
          "nodes": {"prime": {"status": "active", "links": {}, "last_heard_s": 0.0, "self": True},
                    "calc": {"status": "active", "links": {"eth0": "up"}, "last_heard_s": 0.1, "auth_index": 1}},
          "auth_keys": KEYS, "extras": {"cryptography": "48.0.0", "psutil": None}}


def test_status_text_shows_each_key_and_the_extras():
    lines = hb.format_status(REPORT).splitlines()
    assert ("authkeys: 1 sha1: 1234 received, last 2.2 s ago, by calc; 2 sha256 (signing): 56 received, "
            "last 0.1 s ago; 3 aes256gcm: none received") in lines
    assert "extras: cryptography 48.0.0, psutil absent" in lines


def test_a_key_no_longer_configured_is_named_so():
    report = dict(REPORT, auth_keys=[dict(KEYS[0], method=None, configured=False)])
    assert "authkeys: 1 (no longer configured): 1234 received, last 2.2 s ago, by calc" in \
        hb.format_status(report).splitlines()


def test_metrics_of_the_keys_and_extras():
    text = hb.prometheus_text(REPORT).splitlines()
    assert 'heartbeat_auth_key_received_total{index="1",method="sha1"} 1234' in text
    assert 'heartbeat_auth_key_received_total{index="3",method="aes256gcm"} 0' in text
    assert 'heartbeat_auth_key_last_seen_seconds{index="1"} 2.25' in text
    assert not any(line.startswith('heartbeat_auth_key_last_seen_seconds{index="3"}') for line in text)
    assert 'heartbeat_auth_key_signing{index="2",method="sha256"} 1' in text
    assert 'heartbeat_auth_key_signing{index="1",method="sha1"} 0' in text
    assert 'heartbeat_extra_info{extra="cryptography",version="48.0.0"} 1' in text
    assert 'heartbeat_extra_info{extra="psutil",version=""} 0' in text
    parser = pytest.importorskip("prometheus_client.parser")
    names = {family.name for family in parser.text_string_to_metric_families(hb.prometheus_text(REPORT))}
    assert {"heartbeat_auth_key_received", "heartbeat_auth_key_last_seen_seconds", "heartbeat_auth_key_signing",
            "heartbeat_extra_info"} <= names


def test_extra_version_finds_an_installed_package_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "hbfakeextra"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise SystemExit('imported')\n")
    (tmp_path / "site" / "hbfakeextra-1.2.3.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert hb.extra_version("hbfakeextra") == "1.2.3"
    assert hb.extra_version("hb_no_such_extra") is None
    assert hb.extras_text({"a": "1.0", "b": None}) == "a 1.0, b absent"


def test_the_readme_documents_the_key_metrics_status_fields_and_the_wire_format():
    from paths import ROOT
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for name in ("heartbeat_auth_key_received_total", "heartbeat_auth_key_last_seen_seconds",
                 "heartbeat_auth_key_signing", "heartbeat_extra_info"):
        assert f"| `{name}` |" in readme, name
    for field in ("`auth_keys`", "`nodes.NAME.auth_index`", "`extras`", "#### Key rotation", "## Optional extras"):
        assert field in readme, field
    assert f"`{hb.SEALED_MAGIC.decode()}` ({len(hb.SEALED_MAGIC)} bytes)" in readme
    assert f"info\n`{hb.AEAD_KEY_INFO.decode()}`" in readme or f"info `{hb.AEAD_KEY_INFO.decode()}`" in readme

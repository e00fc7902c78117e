"""The authkeys methods heartbeat.py adds to Heartbeat's (protocol layer): sha256 (HMAC-SHA256, the
standard library) and aes256gcm (AES-256-GCM sealed datagrams, with the optional `cryptography`);
and `cryptography` hidden from a heartbeat.py run in a subprocess."""
import hashlib
import importlib.util
import hmac
import os
import subprocess
import sys

import pytest

import heartbeat as hb
from fakes import common, write
from paths import HEARTBEAT

SHA1_KEY, SHA256_KEY, GCM_KEY, OTHER_GCM_KEY = "s" * 40, "2" * 64, "a" * 64, "b" * 64
METHODS = {1: ("sha1", SHA1_KEY), 2: ("sha256", SHA256_KEY), 3: ("aes256gcm", GCM_KEY),
           4: ("aes256gcm", OTHER_GCM_KEY)}

needs_cryptography = pytest.mark.skipif(importlib.util.find_spec("cryptography") is None, reason="no cryptography here")


def keys(active, methods=None):
    return hb.AuthKeys("authkeys", active, dict(methods or METHODS))


def status(seq=1):
    return hb.Message(("t", "status"), ("st", "active"), ("src", "calc"), ("seq", format(seq, "x")),
                      ("hg", "200"), ("ts", "6b05d22a")).add("srcuuid", b"C" * 16, hb.FIELD_BINARY)


# ---------------------------------------------------------------- sha256

def test_sha256_is_rfc_4231_hmac_sha256():
    """RFC 4231 test case 2, and a key longer than the block (hashed first) against the stdlib's hmac."""
    assert hb.auth_digest("sha256", "Jefe", b"what do ya want for nothing?") == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    long_key = "k" * 100
    assert hb.auth_digest("sha256", long_key, b"123456789") == \
        hmac.new(long_key.encode(), b"123456789", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("msgfmt", ["classic", "netstring"])
def test_sha256_datagram_keeps_heartbeats_form_and_says_its_index(msgfmt):
    data = hb.encode_message(status(), keys(2), msgfmt)
    assert data.startswith(hb.NETSTRING_START)
    stop = data.rfind(hb.NETSTRING_END) + len(hb.NETSTRING_END)
    assert data[stop:] == b"%d:2 %s," % (66, hb.auth_digest("sha256", SHA256_KEY, data[:stop]).encode())
    msg = hb.decode_message(data, keys(1))            # we sign with 1; every listed key is accepted
    assert msg.get("st") == "active" and msg.auth_index == 2


def test_each_index_is_verified_with_its_own_key():
    """3.0.6 verifies with the key of its own `auth N` (a quirk); heartbeat.py with the key of the
    received index, so a peer signing with a new key during a rotation is heard."""
    data = hb.encode_message(status(), keys(2))
    assert hb.decode_message(data, keys(1)).auth_index == 2
    with pytest.raises(hb.BadPacket, match="authentication"):
        hb.decode_message(data, keys(1, {1: ("sha1", SHA1_KEY), 2: ("sha256", "x" * 64)}))


def test_a_digest_under_an_aes256gcm_index_is_refused():
    """An unsealed datagram whose trailer names an aes256gcm index: no digest is computed with it."""
    body = hb.NETSTRING_START + hb.netstring_fields(status().fields) + hb.NETSTRING_END
    token = f"3 {hb.auth_digest('sha256', GCM_KEY, body)}".encode()
    with pytest.raises(hb.BadPacket, match="authentication"):
        hb.decode_message(body + b"%d:%s," % (len(token), token), keys(3))


# ---------------------------------------------------------------- aes256gcm

@needs_cryptography
def test_sealed_datagram_layout_and_round_trip():
    data = hb.encode_message(status(), keys(3))
    header = hb.SEALED_MAGIC + bytes([3])
    assert data.startswith(header) and not data.startswith((hb.NETSTRING_START, hb.CLASSIC_START))
    nonce, sealed = data[len(header):len(header) + 12], data[len(header) + 12:]
    aead = hb.extra_module("cryptography", "hazmat.primitives.ciphers.aead")
    plaintext = aead.AESGCM(hb.aead_key(GCM_KEY)).decrypt(nonce, sealed, header)
    assert plaintext == hb.NETSTRING_START + hb.netstring_fields(status().fields) + hb.NETSTRING_END
    assert b"auth=" not in plaintext                      # the tag authenticates: no digest inside
    assert len(data) == len(plaintext) + len(header) + 12 + 16
    msg = hb.decode_message(data, keys(1))
    assert msg.fields == status().fields and msg.auth_index == 3


@needs_cryptography
def test_aead_key_is_hkdf_sha256_of_the_authkeys_key():
    """RFC 5869 done with the standard library, against aead_key's (cryptography's HKDF)."""
    prk = hmac.new(bytes(32), GCM_KEY.encode(), hashlib.sha256).digest()
    okm = hmac.new(prk, hb.AEAD_KEY_INFO + b"\x01", hashlib.sha256).digest()
    assert hb.aead_key(GCM_KEY) == okm
    assert okm != bytes.fromhex(GCM_KEY) and okm != hashlib.sha256(GCM_KEY.encode()).digest()


@needs_cryptography
def test_each_datagram_has_its_own_nonce():
    first, second = (hb.encode_message(status(), keys(3)) for _ in range(2))
    assert first[9:21] != second[9:21] and first[21:] != second[21:]


@needs_cryptography
@pytest.mark.parametrize("where", ["magic", "index", "nonce", "ciphertext", "tag"])
def test_a_changed_byte_anywhere_is_refused(where):
    data = bytearray(hb.encode_message(status(), keys(3)))
    position = {"magic": 2, "index": 8, "nonce": 12, "ciphertext": 30, "tag": len(data) - 1}[where]
    data[position] ^= 1 if where != "index" else 7        # index 3 -> 4: another aes256gcm key
    with pytest.raises(hb.BadPacket):
        hb.decode_message(bytes(data), keys(3))


@needs_cryptography
def test_sealed_with_another_key_or_an_unknown_index_is_refused():
    data = hb.encode_message(status(), keys(3))
    with pytest.raises(hb.BadPacket, match="does not open with key 3"):
        hb.decode_message(data, keys(3, {3: ("aes256gcm", OTHER_GCM_KEY)}))
    with pytest.raises(hb.BadPacket, match="not an aes256gcm key here"):
        hb.decode_message(data, keys(1, {1: ("sha1", SHA1_KEY)}))
    with pytest.raises(hb.BadPacket, match="not an aes256gcm key here"):
        hb.decode_message(data, keys(1, {1: ("sha1", SHA1_KEY), 3: ("sha256", GCM_KEY)}))


@needs_cryptography
def test_the_index_is_bound_in_the_associated_data():
    """Index 4 sealed with index 3's key (a header rewritten to another key's index) does not open."""
    data = hb.encode_message(status(), keys(3, {3: ("aes256gcm", GCM_KEY), 4: ("aes256gcm", GCM_KEY)}))
    moved = data[:8] + bytes([4]) + data[9:]
    with pytest.raises(hb.BadPacket, match="does not open"):
        hb.decode_message(moved, keys(3, {3: ("aes256gcm", GCM_KEY), 4: ("aes256gcm", GCM_KEY)}))


@needs_cryptography
@pytest.mark.parametrize("cut", [0, 9, 20, 36])
def test_short_sealed_datagrams_are_refused(cut):
    data = hb.encode_message(status(), keys(3))
    with pytest.raises(hb.BadPacket):
        hb.decode_message(hb.SEALED_MAGIC + data[len(hb.SEALED_MAGIC):len(hb.SEALED_MAGIC) + cut], keys(3))


@needs_cryptography
def test_nothing_is_parsed_before_the_tag_is_checked(monkeypatch):
    parsed = []
    monkeypatch.setattr(hb, "_netstring_fields", lambda *a: parsed.append(a))
    data = bytearray(hb.encode_message(status(), keys(3)))
    data[-1] ^= 1
    with pytest.raises(hb.BadPacket):
        hb.decode_message(bytes(data), keys(3))
    assert parsed == []


@needs_cryptography
def test_a_sealed_message_that_is_not_a_heartbeat_message_is_refused():
    header, nonce = hb.SEALED_MAGIC + bytes([3]), os.urandom(12)
    sealed = hb.aead_for(GCM_KEY).encrypt(nonce, b">>>\nt=status\n<<<\n", header)
    with pytest.raises(hb.BadPacket, match="without a ###"):
        hb.decode_message(header + nonce + sealed, keys(3))


@needs_cryptography
def test_without_the_magic_an_aes256gcm_only_node_accepts_nothing():
    """A datagram without the magic is a Heartbeat message, and must carry a digest of a digest
    method's key: a node with only aes256gcm keys refuses it whatever it says."""
    only = keys(3, {3: ("aes256gcm", GCM_KEY)})
    for data in (hb.encode_message(status(), keys(1)), hb.encode_message(status(), keys(2)),
                 hb.encode_message(status(), keys(3))[len(hb.SEALED_MAGIC):]):
        with pytest.raises(hb.BadPacket):
            hb.decode_message(data, only)


@needs_cryptography
def test_a_replayed_sealed_datagram_opens_and_is_dropped_by_the_sequence_checks(world):
    membership, clock, timers, rec, config = world
    config.authkeys = keys(3, {3: ("aes256gcm", GCM_KEY)})
    membership.start()
    data = hb.encode_message(status(), config.authkeys)
    membership.receive(data, "eth0")
    assert membership.peers["calc"].last_heard is not None
    membership.receive(data, "eth0")
    assert membership.counters["dropped_duplicate"] == 1
    assert membership.counters["dropped_bad_auth"] == 0


@needs_cryptography
def test_a_node_sealing_sends_only_sealed_datagrams(world):
    membership, clock, timers, rec, config = world
    config.authkeys = keys(3, {3: ("aes256gcm", GCM_KEY)})
    membership.start()
    membership.send(hb.Message(("t", "ask_resources"), ("rsc_hold", "all")))
    assert rec.sent and all(d.startswith(hb.SEALED_MAGIC + b"\x03") for d in rec.sent)
    assert [hb.decode_message(d, config.authkeys).get("t") for d in rec.sent] == ["status", "status", "ask_resources"]


# ---------------------------------------------------------------- without cryptography

# A sitecustomize that makes `import cryptography` fail, as on a machine without the package.
HIDE = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("hidden by the test: no cryptography here")
        return None
sys.meta_path.insert(0, Hide())
"""


def without_cryptography(tmp_path, *args):
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(HIDE)
    env = dict(os.environ, PYTHONPATH=str(shim))
    return subprocess.run([sys.executable, HEARTBEAT, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def test_without_cryptography_aes256gcm_is_refused_naming_the_package(confdir, tmp_path):
    path = write(confdir, "authkeys", f"auth 1\n1 sha1 {SHA1_KEY}\n2 aes256gcm {GCM_KEY}\n", 0o600)
    for command in ("check", "daemon"):
        result = without_cryptography(tmp_path, command, *common(confdir, tmp_path))
        assert result.returncode == hb.EXIT_NOT_CONFIGURED, (command, result.stderr)
        assert f"{path}:3: aes256gcm needs the package cryptography" in result.stderr
        assert "python3-cryptography" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run" / "heartbeat.pid")
    result = without_cryptography(tmp_path, "keygen", "-c", str(tmp_path / "new"), "--method", "aes256gcm")
    assert result.returncode != 0 and "python3-cryptography" in result.stderr
    assert not os.path.exists(tmp_path / "new" / "authkeys")


@pytest.mark.parametrize("method", ["sha1", "sha256"])
def test_without_cryptography_sha1_and_sha256_work(confdir, tmp_path, method):
    write(confdir, "authkeys", f"auth 1\n1 {method} {SHA256_KEY}\n", 0o600)
    result = without_cryptography(tmp_path, "check", *common(confdir, tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"auth:      index 1, {method}" in result.stdout
    assert "extras:    cryptography absent" in result.stdout
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import heartbeat as hb; "
             f"k = hb.AuthKeys('a', 1, {{1: ('{method}', '{SHA256_KEY}')}}); "
             "m = hb.decode_message(hb.encode_message(hb.Message(('t', 'status')), k), k); "
             "print(m.get('t'), 'cryptography' in sys.modules)")
    shim = tmp_path / "shim"
    done = subprocess.run([sys.executable, "-c", probe, os.path.dirname(HEARTBEAT)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(shim)), timeout=60, check=False)
    assert done.stdout.split() == ["status", "False"], done.stderr


def test_sha1_users_never_import_cryptography_or_hashlib(confdir, tmp_path):
    """The daemon's memory for sha1 users must not grow: loading the configuration and signing and
    verifying a packet imports neither cryptography nor hashlib (OpenSSL)."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import heartbeat as hb; "
             "c = hb.load_config(sys.argv[2], 'prime'); "
             "hb.decode_message(hb.encode_message(hb.Message(('t', 'status')), c.authkeys), c.authkeys); "
             "hb.extra_version('cryptography'); "
             "print(sorted(m for m in ('cryptography', 'hashlib', '_hashlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-I", "-c", probe, os.path.dirname(HEARTBEAT), confdir], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.stdout.strip() == "[]", done.stderr

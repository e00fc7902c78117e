"""Wire format and auth against the real Heartbeat 3.0.6 packets in tests/data/samples (a copy of
shared/reference/samples)."""
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heartbeat as hb
from paths import SAMPLES

METHODS = {1: ("crc", ""), 2: ("sha1", "test-ha"), 3: ("md5", "Hello!")}
with open(os.path.join(SAMPLES, "vectors.json")) as _handle:
    VECTORS = json.load(_handle)
UUIDS = {"prime": bytes.fromhex("8b4de76233e047f2bb495782a915801a"),
         "calc": bytes.fromhex("45bfd8cc672b400487abc7346cf0ed82")}


def keys(active=2, methods=None):
    return hb.AuthKeys("authkeys", active, dict(methods or METHODS))


def datagram(vector):
    with open(os.path.join(SAMPLES, vector["file"]), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("vector", VECTORS, ids=[v["file"] for v in VECTORS])
def test_real_packet_decodes_and_re_encodes_byte_for_byte(vector):
    data = datagram(vector)
    msg = hb.decode_message(data, keys(vector["auth_index"]))
    assert msg.get("t") == vector["type"]
    assert msg.get("auth") == vector["inner_auth"]
    assert hb.classic_text(msg.without("auth")).decode() == vector["inner_auth_input"]
    method, key = METHODS[vector["auth_index"]]
    assert hb.auth_digest(method, key, vector["inner_auth_input"].encode()) == vector["expected_inner_digest"]
    assert msg.get_bytes("srcuuid") == UUIDS[msg.get("src")]
    if vector["format"] == "netstring":
        start, end = vector["trailer_covers_bytes"]
        assert hb.auth_digest(method, key, data[start:end]) == vector["expected_trailer_digest"]
        assert hb.encode_message(msg, keys(vector["auth_index"])) == data


def test_crc_constants_and_no_leading_zeros():
    assert hb.crc_digest(b"123456789") == "765e7680"
    assert hb.crc_digest(b"") == "ffffffff"
    short = [v for v in VECTORS if v["file"].startswith("22-")][0]
    assert short["expected_inner_digest"] == "5e7bdbf"
    found = next(bytes([a, b]) for a in range(256) for b in range(256)
                 if hb.crc_digest(bytes([a, b])).__len__() < 8)
    assert hb.crc_digest(found) == format(int(hb.crc_digest(found), 16), "x")


def test_hmac_constants():
    assert hb.auth_digest("sha1", "test-ha", b"123456789") == "6f51c56f52c839fc73f5c90e9572d3992db46c70"
    assert hb.auth_digest("md5", "Hello!", b"123456789") == "224ac6e62db1c2a80128d9dfa732217b"


def test_sign_uses_the_auth_index_and_verify_accepts_any_configured_index():
    data = b"payload"
    assert hb.sign(keys(3), data) == "3 " + hb.auth_digest("md5", "Hello!", data)
    for index in (1, 2, 3):
        assert hb.verify(keys(2), hb.sign(keys(index), data), data)
    assert not hb.verify(keys(2, {2: METHODS[2]}), hb.sign(keys(3), data), data)     # index 3 not configured
    assert not hb.verify(keys(2), "2 " + "0" * 40, data)
    assert not hb.verify(keys(2), "", data)
    assert not hb.verify(keys(2), "x y", data)
    assert not hb.verify(keys(2), "²" + " abc", data)


def test_netstring_and_classic_formats():
    msg = hb.Message(("t", "status"), ("st", "active"), ("src", "prime"))
    msg.add("srcuuid", b"a,b:c=d\ne\0f" + bytes(5), hb.FIELD_BINARY)
    classic = hb.encode_message(msg, keys(), "classic")
    netstring = hb.encode_message(msg, keys(), "netstring")
    assert b"(0)auth=2 " in classic and b"(0)auth=" not in netstring
    assert classic.index(b"(0)auth=") > classic.index(b"srcuuid")
    for data in (classic, netstring):
        back = hb.decode_message(data, keys())
        assert back.get_bytes("srcuuid") == b"a,b:c=d\ne\0f" + bytes(5)
        assert back.get("st") == "active"


def test_classic_text_datagram_is_accepted_only_with_a_good_inner_auth():
    synthetic = [v for v in VECTORS if v["format"] != "netstring"][0]
    data = datagram(synthetic)
    assert hb.decode_message(data, keys(synthetic["auth_index"])).get("t") == "status"
    with pytest.raises(hb.BadPacket):
        hb.decode_message(data.replace(b"st=active", b"st=activx"), keys())


SMALL = datagram([v for v in VECTORS if v["file"].startswith("20-")][0])


@pytest.mark.parametrize("position", range(0, len(SMALL)))
def test_any_flipped_byte_is_refused(position):
    mutated = bytearray(SMALL)
    mutated[position] ^= 0x01
    with pytest.raises(hb.BadPacket):
        hb.decode_message(bytes(mutated), keys(1))


def test_truncations_missing_trailer_wrong_key_and_trailing_bytes_are_refused():
    good = datagram(VECTORS[0])
    for length in range(len(good)):
        with pytest.raises(hb.BadPacket):
            hb.decode_message(good[:length], keys())
    with pytest.raises(hb.BadPacket):
        hb.decode_message(good[:good.index(b"%%%\n") + 4], keys())
    with pytest.raises(hb.BadPacket):
        hb.decode_message(good, keys(2, {2: ("sha1", "other")}))
    with pytest.raises(hb.BadPacket):
        hb.decode_message(good + b"x", keys())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_badpacket(data):
    try:
        hb.decode_message(data, keys())
    except hb.BadPacket:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SMALL) - 1), st.integers(0, 12), st.binary(max_size=12))
def test_mutated_real_packets_only_ever_raise_badpacket(start, cut, insert):
    data = SMALL[:start] + insert + SMALL[start + cut:]
    try:
        hb.decode_message(data, keys(1))
    except hb.BadPacket:
        return
    assert data == SMALL

"""Membership with a fake clock: every timer edge, every drop rule, the membership messages."""
import os

import pytest

import heartbeat as hb
from fakes import DEADTIME_MS, INITDEAD_MS, KEEPALIVE_MS, Calc, Recorder, advance, sent

def test_start_announces_init_then_up_with_deadtime_plus_2s_for_5s(world):
    membership, clock, timers, rec, _ = world
    membership.start()
    first = sent(rec)
    assert [m.get("st") for m in first] == ["init", "up"]
    assert {m.get("dt") for m in first} == {format(DEADTIME_MS + 2000, "x")}
    assert [m.get("seq") for m in first] == ["1", "2"]
    assert all(m.get("protocol") == "1" and m.get("hg") == "100" and m.get("ttl") == "3" for m in first)
    advance(world, 6)
    assert sent(rec)[-1].get("dt") == format(DEADTIME_MS, "x")


@pytest.mark.parametrize("msgfmt", ["classic", "netstring"])
def test_status_messages_are_byte_for_byte_what_the_generic_encoder_makes(world, msgfmt):
    """send_status keeps its fixed fields encoded; the result must not differ by one byte."""
    membership, clock, timers, rec, config = world
    config.hacf.msgfmt = msgfmt
    membership.start()
    for status in ("active", "up", "active", "dead"):
        for _ in range(3):           # ts is in seconds: try again if one ticked in between
            seq = membership.seq
            fast = membership.send_status(status)
            membership.seq = seq
            generic = membership.send(hb.Message(("t", "status"), ("st", status),
                                                 ("dt", format(membership.announced_deadtime_ms(), "x")),
                                                 ("protocol", "1")))
            if fast == generic:
                break
        assert fast == generic
        assert hb.decode_message(fast, config.authkeys).get("st") == status


def test_status_messages_count_a_node_added_by_sighup_in_their_ttl(world, tmp_path):
    membership, clock, timers, rec, config = world
    membership.start()
    membership.send_status("active")
    assert sent(rec)[-1].get("ttl") == "3"
    (tmp_path / "ha.cf").write_text((tmp_path / "ha.cf").read_text() + "node sigma\n")
    membership.reconfigure(hb.load_config(str(tmp_path), "prime"))
    membership.send_status("active")
    assert sent(rec)[-1].get("ttl") == "4"


def test_peer_checks_do_not_wake_us_while_heartbeats_come_and_still_fire_at_deadtime(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    checks, check_peer = [], membership.check_peer
    membership.check_peer = lambda peer: (checks.append(clock.now), check_peer(peer))
    for _ in range(30):
        membership.receive(calc.status(), "eth0")
        advance(world, KEEPALIVE_MS / 1000)
    assert checks == []
    last_heard = membership.peers["calc"].last_heard
    advance(world, DEADTIME_MS / 1000 + 1)
    assert membership.peers["calc"].status == "dead"
    assert abs(checks[-1] - (last_heard + DEADTIME_MS / 1000)) < 0.011     # the fake clock's step


def test_keepalive_period_is_exact(world):
    membership, clock, timers, rec, _ = world
    membership.start()
    stamps = []
    before = len(rec.sent)
    for _ in range(550):
        clock.now += 0.01
        timers.run_due()
        if len(rec.sent) != before:
            stamps.append(round(clock.now, 2))
            before = len(rec.sent)
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(abs(i - KEEPALIVE_MS / 1000) <= 0.011 for i in intervals), intervals
    assert len(stamps) == 5


def test_a_late_wake_up_does_not_shift_the_following_heartbeats(world):
    membership, clock, timers, rec, _ = world
    membership.start()
    clock.now += 1.3                       # the loop was held up for 300 ms
    timers.run_due()
    assert len(rec.sent) == 3
    clock.now += 0.69
    timers.run_due()
    assert len(rec.sent) == 3
    clock.now += 0.02
    timers.run_due()
    assert len(rec.sent) == 4              # at 2.0 s after start, not 2.3 s


def statuses_sent(rec):
    return [m for m in sent(rec) if m.get("t") == "status"]


def started_with_calc_heard(world):
    """Start prime and let calc's first heartbeat bring communication up: ours are then due
    at +1.0 s, +2.0 s, ... after start, and init, up and active have been sent."""
    membership, _, _, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    assert [m.get("st") for m in statuses_sent(rec)] == ["init", "up", "active"]
    return calc


def test_peer_heartbeat_pulls_ours_forward_when_due_within_half_a_keepalive(world):
    membership, clock, timers, rec, _ = world
    calc = started_with_calc_heard(world)
    clock.now += 0.6                       # ours is due in 0.4 s (< half of 1 s): send it now
    membership.receive(calc.status(), "eth0")
    assert len(statuses_sent(rec)) == 4
    clock.now += 0.45                      # the old due time passes: nothing more is sent
    timers.run_due()
    assert len(statuses_sent(rec)) == 4
    clock.now += 0.55                      # a keepalive after the early one: the peer's beat is due
    timers.run_due()                       # now, ours waits an eighth more for it to pull ours
    assert len(statuses_sent(rec)) == 4
    clock.now += 0.125                     # it did not come: ours goes out by its own timer
    timers.run_due()
    assert len(statuses_sent(rec)) == 5


def test_a_peer_beating_with_jitter_keeps_pulling_ours(world):
    """Once in step, every one of our beats is pulled by the peer's (sent at the instant it
    arrives), although the peer's interval wanders 2% either side of a keepalive. With our
    timer at exactly a keepalive after the pulled beat, a late peer beat loses the race and the
    nodes fall out of step: each then wakes twice a keepalive."""
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    pulled, peer_due = 0, 1000.7           # ours is due at 1001.0: the first peer beat pulls it
    for beat in range(40):
        while clock.now < peer_due:
            clock.now = round(clock.now + 0.001, 3)
            timers.run_due()
        before = len(statuses_sent(rec))
        membership.receive(calc.status(), "eth0")
        pulled += len(statuses_sent(rec)) - before
        peer_due = round(peer_due + (1.02 if beat % 2 else 0.98), 3)
    assert pulled >= 39


def test_peer_heartbeat_does_not_pull_ours_from_more_than_half_a_keepalive_away(world):
    membership, clock, timers, rec, _ = world
    calc = started_with_calc_heard(world)
    clock.now += 0.3                       # ours is due in 0.7 s: keep the timer
    membership.receive(calc.status(), "eth0")
    assert len(statuses_sent(rec)) == 3
    clock.now += 0.7
    timers.run_due()
    assert len(statuses_sent(rec)) == 4


def test_in_step_with_a_peer_our_heartbeats_are_never_later_than_keepalive(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    stamps, before = [], len(statuses_sent(rec))
    peer_due = 0.37                        # calc beats every 1 s at another phase
    for _ in range(1000):
        clock.now = round(clock.now + 0.01, 2)
        if clock.now - 1000.0 >= peer_due:
            membership.receive(calc.status(), "eth0")
            peer_due += 1.0
        timers.run_due()
        if len(statuses_sent(rec)) != before:
            stamps.append(clock.now)
            before = len(statuses_sent(rec))
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    assert intervals and max(intervals) <= KEEPALIVE_MS / 1000 + 0.011, intervals
    assert len(stamps) >= 9                # about one per keepalive: none skipped, none doubled
    assert len(stamps) <= 11


def test_peer_declared_dead_exactly_at_its_announced_deadtime(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(dt=4000), "eth0")
    assert membership.peers["calc"].status == "active"
    assert ("comm_up",) in rec.events
    advance(world, 3.99, step=0.001)
    assert membership.peers["calc"].status == "active"
    advance(world, 0.011, step=0.001)
    assert membership.peers["calc"].status == "dead"
    assert rec.has("WARN: node calc: is dead") or rec.has("warn: node calc: is dead")
    assert ("status", "calc", "active", "dead") in rec.events


def test_initdead_declares_a_silent_peer_dead_and_brings_comm_up(world):
    membership, clock, timers, rec, _ = world
    membership.start()
    advance(world, INITDEAD_MS / 1000 - 0.05)
    assert membership.peers["calc"].status == "init" and membership.status == "up"
    advance(world, 0.1)
    assert membership.peers["calc"].status == "dead"
    assert membership.status == "active" and ("comm_up",) in rec.events
    assert sent(rec)[-1].get("st") == "active"


def test_late_heartbeat_warnings(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    clock.now += 3.5
    membership.receive(calc.status(), "eth0")
    assert rec.has("warn: Late heartbeat: Node calc: interval 3500 ms")
    advance(world, 4.9)
    membership.receive(calc.status(), "eth0")
    assert not rec.has("(> deadtime)")
    clock.now += 6
    timers.run_due()
    membership.receive(calc.status(), "eth0")
    assert rec.has("crit: Late heartbeat: Node calc: interval")
    assert rec.has("(> deadtime)")


def test_one_silent_link_goes_dead_while_the_node_stays_alive(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    first = calc.status()
    membership.receive(first, "eth0")
    membership.receive(first, "eth1")
    assert rec.has("Link calc:eth0 up.") and rec.has("Link calc:eth1 up.")
    for _ in range(8):
        advance(world, 1)
        membership.receive(calc.status(), "eth0")
    assert rec.has("Link calc:eth1 dead.") and not rec.has("Link calc:eth0 dead.")
    assert membership.peers["calc"].status == "active"
    assert membership.snapshot()["calc"]["links"] == {"eth0": "up", "eth1": "dead"}


def test_duplicate_on_a_second_medium_counts_once(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    packet = calc.packet(("t", "custom"))
    membership.receive(packet, "eth0")
    membership.receive(packet, "eth1")
    assert [e for e in rec.events if e[0] == "message"] == [("message", "calc", "custom")]
    assert membership.counters["dropped_duplicate"] == 1


@pytest.mark.parametrize("case", ["wrong_key", "unknown_node", "garbage", "no_seq"])
def test_bad_packets_are_dropped_counted_and_change_nothing(world, case):
    membership, clock, timers, rec, config = world
    membership.start()
    packet = {
        "wrong_key": lambda: Calc(config, key="other").status(),
        "unknown_node": lambda: Calc(config).status(name="ghost"),
        "garbage": lambda: b"###\n99999999999:(0)t=x,%%%\n",
        "no_seq": lambda: hb.encode_message(hb.Message(("t", "status"), ("src", "calc"), ("ts", "1")),
                                            config.authkeys),
    }[case]()
    for _ in range(3):
        membership.receive(packet, "eth0")
    assert membership.peers["calc"].last_heard is None and membership.peers["calc"].status == "init"
    assert "ghost" not in membership.peers
    assert sum(v for k, v in membership.counters.items() if k.startswith("dropped_")) == 3
    assert not [e for e in rec.events if e[0] != "comm_up"]


def test_generations_replays_and_restarts(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=0x200)
    membership.start()
    for _ in range(5):
        membership.receive(calc.status(), "eth0")
    membership.receive(calc.status(generation=0x1ff), "eth0")
    assert membership.counters["dropped_replay"] == 1 and rec.has("attempted replay attack [calc]")
    old = calc.status(seq=1)
    membership.receive(old, "eth0")
    assert membership.counters["dropped_duplicate"] == 1
    restarted = Calc(config, generation=0x201)
    membership.receive(restarted.status(st="init"), "eth0")
    assert rec.has("Heartbeat restart on node calc")
    assert membership.peers["calc"].generation == 0x201 and membership.peers["calc"].max_seq == 1


def test_seq_far_below_the_window_is_a_replay(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    for seq in range(1, hb.SEQ_WINDOW + 30):
        membership.receive(calc.status(seq=seq), "eth0")
    membership.receive(calc.status(seq=5), "eth0")
    assert membership.counters["dropped_replay"] == 1


def test_gap_asks_for_retransmission_a_bounded_number_of_times(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(seq=1), "eth0")
    membership.receive(calc.status(seq=4), "eth0")
    assert rec.has("warn: 2 lost packet(s) for [calc] [1:4]")
    for _ in range(40):
        advance(world, 0.25)
        membership.receive(calc.status(), "eth0")
    requests = [m for m in sent(rec) if m.get("t") == "NS_rexmit"]
    assert {(m.get("firstseq"), m.get("lastseq")) for m in requests} == {("2", "2"), ("3", "3")}
    assert len(requests) == 2 * hb.MAX_REXMIT_REQUESTS
    assert rec.has("Irretrievably lost packet: node calc seq 2")


def test_late_packet_fills_the_gap(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    packets = [calc.status() for _ in range(3)]
    membership.receive(packets[0], "eth0")
    membership.receive(packets[2], "eth0")
    membership.receive(packets[1], "eth0")
    assert rec.has("No pkts missing from calc!")


def test_rexmit_request_gets_the_same_bytes_or_a_nak(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    original = rec.sent[0]
    membership.receive(calc.packet(("t", "NS_rexmit"), ("dest", "prime"), ("firstseq", "1"), ("lastseq", "1")),
                       "eth0")
    assert rec.sent[-1] == original
    membership.receive(calc.packet(("t", "NS_rexmit"), ("dest", "prime"), ("firstseq", "900"),
                                   ("lastseq", "900")), "eth0")
    nak = sent(rec)[-1]
    assert nak.get("t") == "NS_nak_rexmit" and nak.get("dest") == "calc" and nak.get("firstseq") == "384"


def test_reqnodes_is_answered_with_repnodes_in_the_real_field_order(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    membership.receive(calc.packet(("t", "reqnodes"), ("dest", "prime")), "eth0")
    reply = sent(rec)[-1]
    assert [f[0] for f in reply.fields] == ["dest", "t", "nodelist", "delnodelist", "destuuid", "src", "srcuuid",
                                            "seq", "hg", "ts", "ld", "ttl", "auth"]
    assert (reply.get("dest"), reply.get("nodelist"), reply.get("delnodelist")) == ("calc", "prime calc ", " ")
    assert reply.get_bytes("destuuid") == b"C" * 16


def test_messages_for_another_node_are_not_delivered(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.packet(("t", "custom"), ("dest", "other")), "eth0")
    assert not [e for e in rec.events if e[0] == "message"]


def test_shutdone_means_dead_at_once_and_later_status_does_not_revive(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    membership.receive(calc.packet(("t", "shutdone"), ("st", "dead")), "eth0")
    assert membership.peers["calc"].status == "dead" and rec.has("Received shutdown notice from 'calc'.")
    membership.receive(calc.status(), "eth0")
    assert membership.peers["calc"].status == "dead"
    restarted = Calc(config, generation=0x300)
    membership.receive(restarted.status(st="init"), "eth0")
    assert membership.peers["calc"].status == "init"


def test_return_after_silence_with_the_same_generation_is_a_partition(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    advance(world, 6)
    assert membership.peers["calc"].status == "dead"
    membership.receive(calc.status(), "eth0")
    assert rec.has("Cluster node calc returning after partition.")
    assert membership.peers["calc"].partition_healed


def test_ack_every_tenth_message_of_a_protocol_1_peer(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    for _ in range(31):         # the ack phase is random per peer; seq 1 sets the protocol, 2..31 span 30
        membership.receive(calc.status(), "eth0")
    acks = [m for m in sent(rec) if m.get("t") == "NS_ackmsg"]
    assert len(acks) == 3 and all(m.get("dest") == "calc" for m in acks)
    ackseqs = [int(m.get("ackseq"), 16) for m in acks]
    assert ackseqs[1] - ackseqs[0] == ackseqs[2] - ackseqs[1] == 10
    assert all(m.get("seq") is None and m.get("ld") is None for m in acks)


@pytest.mark.parametrize("vector_file, peer", [("02-status-active-sha1.bin", "calc"),
                                               ("30-status-active-md5.bin", "calc")])
def test_real_heartbeat_packets_are_accepted(world, vector_file, peer):
    from paths import SAMPLES
    membership, clock, timers, rec, config = world
    config.authkeys.methods.update({2: ("sha1", "test-ha"), 3: ("md5", "Hello!")})
    membership.start()
    with open(os.path.join(SAMPLES, vector_file), "rb") as handle:
        membership.receive(handle.read(), "eth0")
    assert membership.peers[peer].status == "active"
    assert membership.peers[peer].deadtime_ms == 10000      # the real node announced dt=2710


# ---------------------------------------------------------------- hardening: what counts as life


def test_replayed_packets_of_any_type_do_not_keep_a_silent_peer_alive(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    captured = [calc.status(), calc.packet(("t", "resource"), ("rsc_hold", "all")),
                calc.packet(("t", "NS_ackmsg"), ("dest", "prime"), ("ackseq", "1")),
                calc.packet(("t", "NS_rexmit"), ("dest", "prime"), ("firstseq", "1"), ("lastseq", "1")),
                calc.packet(("t", "NS_nak_rexmit"), ("dest", "prime"), ("firstseq", "1")), calc.status()]
    for packet in captured:
        membership.receive(packet, "eth0")
    last_status = clock.now
    assert membership.peers["calc"].status == "active"
    while clock.now - last_status < DEADTIME_MS / 1000 + 0.5:     # replays at 10 x keepalive rate
        for packet in captured:
            membership.receive(packet, "eth0")
            membership.receive(packet, "eth1")
        advance(world, 0.1)
    assert membership.peers["calc"].status == "dead"
    assert ("status", "calc", "active", "dead") in rec.events
    assert membership.snapshot()["calc"]["links"] == {"eth0": "dead", "eth1": "dead"}


def test_a_status_replayed_on_another_link_does_not_bring_that_link_up(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    old = calc.status()
    membership.receive(old, "eth0")
    for _ in range(5):
        membership.receive(calc.status(), "eth0")
    membership.receive(old, "eth1")                    # a copy of an old one: no evidence for eth1
    assert not rec.has("Link calc:eth1 up.")


def test_a_reload_keeps_the_heartbeat_schedule(world):
    membership, clock, timers, rec, config = world
    membership.start()
    start, before = clock.now, len(rec.sent)
    while clock.now - start < 9.5:                     # SIGHUP every 0.1 s, until just before initdead
        membership.reconfigure(config)
        advance(world, 0.1)
    assert len(rec.sent) - before == 9                 # keepalive 1 s: not one beat lost


def test_a_reload_with_a_shorter_keepalive_brings_the_next_beat_forward(world, tmp_path):
    membership, clock, timers, rec, config = world
    membership.start()
    (tmp_path / "ha.cf").write_text((tmp_path / "ha.cf").read_text().replace(f"keepalive {KEEPALIVE_MS}ms",
                                                                              "keepalive 300ms"))
    membership.reconfigure(hb.load_config(str(tmp_path), "prime"))
    before = len(rec.sent)
    advance(world, 0.31)
    assert len(rec.sent) == before + 1


@pytest.mark.parametrize("dt_ms", [1, 2 * KEEPALIVE_MS - 1, 10 * DEADTIME_MS + 1, 0xFFFFFFFF])
def test_a_peer_deadtime_outside_the_sane_range_is_ignored_and_logged(world, dt_ms):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(dt=DEADTIME_MS), "eth0")
    membership.receive(calc.status(dt=dt_ms), "eth0")
    assert membership.peers["calc"].deadtime_ms == DEADTIME_MS
    assert rec.has(f"announces a deadtime of {dt_ms} ms")
    membership.receive(calc.status(dt=2 * DEADTIME_MS), "eth0")
    assert membership.peers["calc"].deadtime_ms == 2 * DEADTIME_MS


def test_peer_strings_reach_log_lines_escaped():
    msg = hb.Message(("info", "a\nFAKE: node calc: is dead\x1b[2J"))
    assert msg.get("info") == "a\\nFAKE: node calc: is dead\\x1b[2J"
    assert hb.Message(("ld", "0.00 0.01 0.05 1/123 4567")).get("ld") == "0.00 0.01 0.05 1/123 4567"


# ---------------------------------------------------------------- hardening: generations


def challenges(rec, keys=None):
    return [m for m in sent(rec) if m.get("t") == hb.CHALLENGE]


def reply_to(calc, challenge, generation=None):
    return calc.packet(("t", hb.CHALLENGE_REPLY), ("dest", "prime"), ("nonce", challenge.get("nonce")),
                       generation=generation)


@pytest.mark.parametrize("forged", ["high generation", "high seq"])
def test_a_forged_generation_or_seq_is_undone_by_a_signed_answer_to_a_fresh_nonce(world, forged):
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=0x200)
    membership.start()
    for _ in range(3):
        membership.receive(calc.status(), "eth0")
    if forged == "high generation":
        membership.receive(calc.status(generation=0x7FFFFFFF), "eth0")
    else:
        membership.receive(Calc(config, generation=0x200).status(seq=0xFFFFFFF), "eth0")
    real_seq = calc.seq
    for _ in range(4):                                  # the real node's packets are now "replays"
        membership.receive(calc.status(), "eth0")
        advance(world, 0.4)
    assert membership.counters["dropped_replay"] >= 4
    assert not challenges(rec)                          # heard 1.6 s ago: not yet
    for _ in range(5):
        membership.receive(calc.status(), "eth0")
        advance(world, 0.2)
    asked = challenges(rec)
    assert len(asked) == 1 and asked[0].get("dest") == "calc"     # once per keepalive, not per packet
    membership.receive(calc.packet(("t", hb.CHALLENGE_REPLY), ("dest", "prime"), ("nonce", "0" * 32)), "eth0")
    assert membership.peers["calc"].generation != 0x200 or forged == "high seq"
    known = int(asked[0].get("curgen"), 16)
    assert known == (0x7FFFFFFF if forged == "high generation" else 0x200)
    calc.generation = known + 1                         # calc moves past what we know, then answers
    membership.receive(reply_to(calc, asked[0]), "eth0")
    assert rec.has(f"Node calc proved generation {known + 1}")
    assert membership.peers["calc"].generation == known + 1
    heard = membership.peers["calc"].last_heard
    advance(world, 0.5)
    membership.receive(calc.status(), "eth0")
    assert membership.peers["calc"].last_heard > heard
    replay = Calc(config, generation=0x200).status(seq=real_seq + 1)       # one from before the proof
    before = membership.counters["dropped_replay"]
    membership.receive(replay, "eth0")
    assert membership.counters["dropped_replay"] == before + 1


def test_an_old_answer_to_another_nonce_proves_nothing(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=0x200)
    membership.start()
    membership.receive(calc.status(), "eth0")
    membership.receive(calc.status(generation=0x300), "eth0")
    advance(world, 2.5)
    membership.receive(calc.status(), "eth0")
    assert challenges(rec)
    for nonce in ("f" * 32, "", "x"):
        membership.receive(calc.packet(("t", hb.CHALLENGE_REPLY), ("dest", "prime"), ("nonce", nonce)), "eth0")
    assert membership.peers["calc"].generation == 0x300 and not rec.has("proved generation")


def test_a_lower_generation_is_never_adopted_and_an_old_capture_at_it_stays_out(world):
    """calc known at 12 comes back at 11 (a VM snapshot restored its hb_generation) and answers
    the challenge still at 11: not adopted. A capture from calc's earlier life at 11 with seq 3000
    must not lift max_seq, or calc's real packets would be dropped from then on."""
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=12)
    membership.start()
    membership.receive(calc.status(), "eth0")
    old_life = Calc(config, generation=11).status(seq=3000)
    calc.generation, calc.seq = 11, 0
    advance(world, 2.5)
    membership.receive(calc.status(), "eth0")
    asked = challenges(rec)
    assert len(asked) == 1 and asked[0].get("curgen") == "c"       # the generation we know calc at
    membership.receive(reply_to(calc, asked[0]), "eth0")
    assert membership.peers["calc"].generation == 12 and not rec.has("proved generation")
    assert rec.has("Node calc answered our challenge at generation 11, not above 12")
    membership.receive(old_life, "eth0")
    assert membership.peers["calc"].max_seq < 3000
    calc.generation = 13                                           # calc moved past 12, as it must
    membership.receive(reply_to(calc, asked[0]), "eth0")
    assert membership.peers["calc"].generation == 13
    membership.receive(old_life, "eth0")
    heard = membership.peers["calc"].last_heard
    advance(world, 0.5)
    membership.receive(calc.status(), "eth0")
    assert membership.peers["calc"].last_heard > heard and membership.peers["calc"].max_seq < 3000


def test_a_challenged_node_at_or_below_the_known_generation_moves_past_it_on_disk_first(world, tmp_path):
    """Both ends for real: calc restored to generation 11 answers prime, which knew it at 12, at
    13, written to hb_generation before the answer leaves; prime then hears calc again."""
    membership, clock, timers, rec, config = world
    state = tmp_path / "calc-state"
    state.mkdir()
    (state / "hb_generation").write_text(f"{11:>15}\n")
    calc_config = hb.load_config(str(tmp_path), "calc")
    on_disk = []

    def transmit(datagram):
        on_disk.append((hb.decode_message(datagram, config.authkeys).get("t"), (state / "hb_generation").read_text()))
        membership.receive(datagram, "eth0")

    calc = hb.Membership(calc_config, hb.Identity("calc", b"C" * 16, 11, str(state)), timers, Recorder(),
                         transmit, Recorder())
    membership.start()
    membership.receive(Calc(config, generation=12).status(), "eth0")
    calc.start()
    assert membership.peers["calc"].generation == 12 and membership.counters["dropped_replay"] >= 1
    rec.sent.clear()
    advance(world, 2.5)                     # calc's beats are dropped: prime challenges
    asked = challenges(rec)
    assert asked and asked[-1].get("curgen") == "c"
    for datagram in list(rec.sent):
        calc.receive(datagram, "eth0")
    assert calc.identity.generation == 13
    assert (hb.CHALLENGE_REPLY, f"{13:>15}\n") in on_disk              # on disk before it was sent
    assert membership.peers["calc"].generation == 13
    heard = membership.peers["calc"].last_heard
    advance(world, 1.5)
    assert membership.peers["calc"].last_heard > heard


def test_a_challenge_naming_a_lower_generation_moves_nothing(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=0x200)
    membership.start()
    membership.receive(calc.status(), "eth0")
    membership.receive(calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", "ab" * 16), ("curgen", "ff")),
                       "eth0")
    assert membership.identity.generation == 0x100 and not rec.has("our generation is now")
    advance(world, KEEPALIVE_MS / 1000 + 0.1)                         # one answer per keepalive
    membership.receive(calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", "cd" * 16),
                                   ("curgen", "f" * 16)), "eth0")     # past MAX_GENERATION: only forged
    assert membership.identity.generation == 0x100 and not rec.has("our generation is now")
    replies = [m for m in sent(rec) if m.get("t") == hb.CHALLENGE_REPLY]
    assert [(m.get("nonce"), m.get("hg")) for m in replies] == [("ab" * 16, "100"), ("cd" * 16, "100")]


def test_a_challenge_is_answered_even_when_its_sender_looks_like_a_replay(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config, generation=0x200)
    membership.start()
    membership.receive(calc.status(generation=0x900), "eth0")       # we now expect 0x900 from calc
    challenge = calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", "ab" * 16))
    membership.receive(challenge, "eth0")
    membership.receive(challenge, "eth0")                              # a replay: answered once
    replies = [m for m in sent(rec) if m.get("t") == hb.CHALLENGE_REPLY]
    assert len(replies) == 1 and replies[0].get("nonce") == "ab" * 16 and replies[0].get("dest") == "calc"
    assert replies[0].get("hg") == "100"


def test_replayed_challenges_get_one_answer_per_keepalive_at_most(world):
    """1,000 replays of two old challenges made 1,000 signed replies on every medium (and pushed
    our retransmission history out): now one per keepalive."""
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    old = [calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", nonce * 16), ("curgen", "1"))
           for nonce in ("ab", "cd")]
    for i in range(1000):
        membership.receive(old[i % 2], "eth0")
        if i % 100 == 0:
            membership.receive(calc.status(), "eth0")
        advance(world, 0.002)                            # 2 s in all
    replies = [m for m in sent(rec) if m.get("t") == hb.CHALLENGE_REPLY]
    assert 1 <= len(replies) <= 2 * KEEPALIVE_MS / 1000 + 1, len(replies)
    assert membership.counters["challenges_unanswered_limit"] >= 490     # the other half: the nonce just answered


def test_a_challenge_with_a_stale_ts_is_not_answered(world):
    """ts against the sender's own clock, as its accepted heartbeats tell it (no clock sync needed)."""
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    base = 0x6b05d22a
    membership.start()
    membership.receive(calc.status(ts=format(base, "x")), "eth0")
    captured = calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", "ab" * 16), ts=format(base, "x"))
    for second in range(1, 10):
        advance(world, 1)
        membership.receive(calc.status(ts=format(base + second, "x")), "eth0")
    membership.receive(captured, "eth0")
    assert not [m for m in sent(rec) if m.get("t") == hb.CHALLENGE_REPLY]
    assert membership.counters["challenges_unanswered_stale"] == 1
    fresh = calc.packet(("t", hb.CHALLENGE), ("dest", "prime"), ("nonce", "cd" * 16), ts=format(base + 9, "x"))
    membership.receive(fresh, "eth0")
    assert [m.get("nonce") for m in sent(rec) if m.get("t") == hb.CHALLENGE_REPLY] == ["cd" * 16]


def wired_pair(world, tmp_path):
    """prime (the world's) and calc, two Memberships on one fake clock, each hearing the other."""
    membership, clock, timers, rec, config = world
    state = tmp_path / "calc-state"
    state.mkdir()
    calc_rec = Recorder()
    calc = hb.Membership(hb.load_config(str(tmp_path), "calc"), hb.Identity("calc", b"C" * 16, 0x200, str(state)),
                         timers, calc_rec, calc_rec.sent.append, calc_rec)
    membership.start()
    calc.start()
    calc.transmit = lambda datagram: membership.receive(datagram, "eth0")
    membership.transmit = lambda datagram: (rec.sent.append(datagram), calc.receive(datagram, "eth0"))
    advance(world, 3)
    assert membership.peers["calc"].status == "active" and calc.peers["prime"].status == "active"
    return calc


def forged(config, name, generation, ts, seq=1):
    """A status signed with the key, as someone who holds it may send: any generation, any ts."""
    msg = hb.Message(("t", "status"), ("st", "active"), ("dt", format(DEADTIME_MS, "x")), ("protocol", "1"),
                     ("src", name), ("seq", format(seq, "x")), ("hg", format(generation, "x")), ("ts", format(ts, "x")))
    return hb.encode_message(msg, config.authkeys)


@pytest.mark.parametrize("generation", [0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF])
def test_a_pair_blinded_by_forged_generations_and_clocks_hears_itself_again(world, tmp_path, generation):
    """Both nodes told by a key holder that the other runs at a far generation, with a far clock:
    the challenges and their answers bring them back, whatever the forged values."""
    membership, clock, timers, rec, config = world
    calc = wired_pair(world, tmp_path)
    far_ts = 0xFFFFFFFFFF
    membership.receive(forged(config, "calc", generation, far_ts), "eth0")
    calc.receive(forged(config, "prime", generation, far_ts), "eth0")
    advance(world, 2 * DEADTIME_MS / 1000)
    heard = membership.peers["calc"].last_heard, calc.peers["prime"].last_heard
    advance(world, 1)
    assert membership.peers["calc"].last_heard > heard[0] and calc.peers["prime"].last_heard > heard[1]
    assert membership.peers["calc"].status == "active" and calc.peers["prime"].status == "active"


def test_a_forged_shutdone_does_not_blind_us_to_a_node_that_keeps_beating(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    membership.receive(calc.packet(("t", "shutdone"), ("st", "dead")), "eth0")
    assert membership.peers["calc"].status == "dead"
    for _ in range(int(DEADTIME_MS / KEEPALIVE_MS) + 2):
        advance(world, 1)
        membership.receive(calc.status(), "eth0")
    assert membership.peers["calc"].status == "active"
    assert rec.has("still sends heartbeats a deadtime after its shutdown notice")


# ---------------------------------------------------------------- hardening: our own name


def prime_clone_packet(config, uuid=b"Q" * 16, generation=0x100, seq=1):
    msg = hb.Message(("t", "status"), ("st", "active"), ("src", "prime"))
    msg.add("srcuuid", uuid, hb.FIELD_BINARY)
    msg.add("seq", format(seq, "x")).add("hg", format(generation, "x")).add("ts", "6b05d22a")
    return hb.encode_message(msg, config.authkeys)


@pytest.mark.parametrize("clone", [dict(uuid=b"Q" * 16), dict(uuid=b"P" * 16, generation=0x101),
                                   dict(uuid=b"P" * 16, seq=999)])
def test_a_signed_packet_with_our_name_from_elsewhere_is_a_name_conflict(world, clone):
    membership, clock, timers, rec, config = world
    membership.start()
    membership.receive(prime_clone_packet(config, **clone), "eth0", "10.77.0.9")
    assert rec.has("crit: Another node uses our name prime")
    assert rec.has("from 10.77.0.9")
    assert membership.name_conflict["sender"] == "10.77.0.9"
    assert membership.counters["dropped_name_conflict"] == 1
    advance(world, DEADTIME_MS / 1000 - 1)
    membership.receive(prime_clone_packet(config, **clone), "eth0", "10.77.0.9")
    advance(world, DEADTIME_MS / 1000 - 0.5)
    assert membership.name_conflict is not None
    advance(world, 1)
    assert membership.name_conflict is None and rec.has("name conflict over")


def test_our_own_packets_and_their_replays_are_no_name_conflict(world):
    membership, clock, timers, rec, config = world
    membership.start()
    advance(world, 3)
    for datagram in list(rec.sent):                    # looped back on a second medium, or replayed
        membership.receive(datagram, "eth1")
    old_run = prime_clone_packet(config, uuid=b"P" * 16, generation=0xFF, seq=7)
    membership.receive(old_run, "eth0")
    assert membership.name_conflict is None and not rec.has("Another node uses our name")


def test_replays_beside_a_live_node_are_dropped_without_a_challenge(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    old = [calc.status() for _ in range(3)]
    for _ in range(hb.SEQ_WINDOW + 10):
        calc.status()
    for packet in old + [calc.status()]:
        membership.receive(packet, "eth0")
    for _ in range(20):
        membership.receive(calc.status(), "eth0")
        for packet in old:
            membership.receive(packet, "eth0")
        advance(world, 0.5)
    assert membership.counters["dropped_replay"] >= 40 and not challenges(rec)
    assert membership.peers["calc"].status == "active"


# ---------------------------------------------------------------- events

def test_a_peer_heard_then_dead_gives_node_and_link_events_with_when_it_went_silent(world):
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.start()
    membership.receive(calc.status(), "eth0")
    advance(world, 0.5)
    membership.receive(calc.status(), "eth0")
    advance(world, DEADTIME_MS / 1000 + 3)
    kinds = [(e.kind, e.subjects) for e in membership.events.events]
    assert sorted(kinds[:2]) == [("link-up", {"node": "calc", "link": "eth0"}), ("node-up", {"node": "calc"})]
    assert ("node-dead", {"node": "calc"}) in kinds and ("link-dead", {"node": "calc", "link": "eth0"}) in kinds
    dead = next(e for e in membership.events.events if e.kind == "node-dead")
    assert dead.detail.startswith(f"last heard {DEADTIME_MS / 1000:.1f}") and " s ago, at " in dead.detail
    assert membership.events.counts["node-up"] == 1      # a later status from the same peer is no new event
    membership.receive(calc.status(), "eth0")
    assert membership.events.counts["node-up"] == 2      # back after being dead


def test_a_burst_of_bad_packets_is_one_event_per_reason_per_interval_with_the_count(world):
    membership, clock, timers, rec, config = world
    membership.start()
    for _ in range(50):
        membership.receive(b"garbage that is not a heartbeat message", "eth0")
    dropped = [e for e in membership.events.events if e.kind == "packets-dropped"]
    assert len(dropped) == 1 and dropped[0].subjects == {"reason": "malformed"}
    assert dropped[0].detail.startswith("1 dropped (malformed) since the start")
    advance(world, hb.DROP_EVENT_INTERVAL_S + 0.1)
    membership.receive(b"garbage that is not a heartbeat message", "eth0")
    dropped = [e for e in membership.events.events if e.kind == "packets-dropped"]
    assert len(dropped) == 2 and dropped[1].detail.startswith("50 dropped (malformed) since 10 s ago")
    for _ in range(3):                                    # our own echo and duplicates are normal: no event
        membership.drop("own")
    assert membership.events.counts["packets-dropped"] == 2


def test_autojoin_other_joins_a_bounded_number_of_names(world):
    """Issue 26: with `autojoin other` every signed src name added a peer, without bound."""
    membership, clock, timers, rec, config = world
    config.hacf.autojoin = "other"
    membership.start()
    calc = Calc(config)
    for n in range(hb.AUTOJOIN_MAX_PEERS + 10):
        membership.receive(calc.status(name=f"joiner{n}"), "eth0", "10.0.0.9")
    assert len(membership.peers) == hb.AUTOJOIN_MAX_PEERS
    assert membership.counters["dropped_unknown_node"] == 11          # calc, listed in ha.cf, counts too


# ---------------------------------------------------------------- authkeys keys: counts and rotation

def rotated(config, active, methods):
    config.authkeys = hb.AuthKeys(config.authkeys.path, active, methods)


def test_each_key_counts_what_it_authenticated_and_when(world):
    membership, clock, timers, rec, config = world
    rotated(config, 2, {2: ("sha1", "secret"), 3: ("sha256", "n" * 64)})
    membership.start()
    calc = Calc(config)
    for _ in range(3):
        membership.receive(calc.status(), "eth0")
    advance(world, 2)
    calc.keys = hb.AuthKeys("k", 3, config.authkeys.methods)
    membership.receive(calc.status(), "eth0")
    advance(world, 0.5)
    assert membership.key_snapshot() == [
        {"index": 2, "method": "sha1", "configured": True, "signing": True, "received": 3, "last_seen_s": 2.5},
        {"index": 3, "method": "sha256", "configured": True, "signing": False, "received": 1, "last_seen_s": 0.5}]
    assert membership.snapshot()["calc"]["auth_index"] == 3
    calc.keys = hb.AuthKeys("k", 2, {2: ("sha1", "wrong")})
    membership.receive(calc.status(), "eth0")
    assert membership.counters["dropped_bad_auth"] == 1
    assert [k["received"] for k in membership.key_snapshot()] == [3, 1]


def test_a_key_no_longer_configured_stays_in_the_counts(world):
    membership, clock, timers, rec, config = world
    membership.start()
    membership.receive(Calc(config).status(), "eth0")
    rotated(config, 3, {3: ("sha256", "n" * 64)})
    assert [(k["index"], k["method"], k["configured"], k["received"]) for k in membership.key_snapshot()] == \
        [(2, None, False, 1), (3, "sha256", True, 0)]


def test_a_packet_under_an_unknown_key_is_counted_and_no_sign_of_life(world):
    membership, clock, timers, rec, config = world
    membership.start()
    calc = Calc(config)
    calc.keys = hb.AuthKeys("k", 5, {5: ("sha1", "secret")})
    for _ in range(3):
        membership.receive(calc.status(), "eth0")
    assert membership.counters["dropped_bad_auth"] == 3
    assert membership.peers["calc"].last_heard is None and membership.key_snapshot()[0]["received"] == 0


def test_a_peer_on_another_key_for_more_than_a_deadtime_is_warned_once(world):
    membership, clock, timers, rec, config = world
    rotated(config, 2, {2: ("sha1", "secret"), 3: ("sha256", "n" * 64)})
    membership.start()
    calc = Calc(config)
    calc.keys = hb.AuthKeys("k", 3, config.authkeys.methods)
    warning = "node calc signs with authkeys key 3, this node with key 2, for more than deadtime"
    for _ in range(int(DEADTIME_MS / KEEPALIVE_MS)):
        membership.receive(calc.status(), "eth0")
        advance(world, KEEPALIVE_MS / 1000)
    assert not rec.has(warning)
    for _ in range(20):
        membership.receive(calc.status(), "eth0")
        advance(world, KEEPALIVE_MS / 1000)
    assert len([line for line in rec.lines if warning in line]) == 1
    assert [line for line in rec.lines if warning in line][0].startswith("warn: ")
    assert membership.peers["calc"].status != "dead"
    rotated(config, 3, config.authkeys.methods)           # the rotation finished: no more warnings
    for _ in range(20):
        membership.receive(calc.status(), "eth0")
        advance(world, KEEPALIVE_MS / 1000)
    assert len([line for line in rec.lines if warning in line]) == 1
    assert membership.peers["calc"].other_key_since is None


def test_a_rotation_finished_within_a_deadtime_is_not_warned(world):
    membership, clock, timers, rec, config = world
    rotated(config, 2, {2: ("sha1", "secret"), 3: ("sha256", "n" * 64)})
    membership.start()
    calc = Calc(config)
    calc.keys = hb.AuthKeys("k", 3, config.authkeys.methods)
    for beat in range(30):
        if beat == 3:
            rotated(config, 3, config.authkeys.methods)
        membership.receive(calc.status(), "eth0")
        advance(world, KEEPALIVE_MS / 1000)
    assert not rec.has("signs with authkeys key")

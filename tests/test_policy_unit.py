"""Cluster policy with a fake clock: exchanges with the peer that are never completed time out."""
import pytest

import heartbeat as hb
from test_membership_unit import Calc, advance, sent, world  # noqa: F401 - world is a fixture


class InlineWorker:
    """Runs each resource job at once, in the caller's thread."""
    busy = False

    def submit(self, job, done=None):
        result = job()
        if done:
            done(result)


class NoResources:
    stuck = set()

    def acquire_group(self, group):
        return None

    def release_group(self, group):
        return True


@pytest.fixture()
def policy(world):  # noqa: F811 - the fixture imported above
    membership, clock, timers, rec, config = world
    policy = hb.ClusterPolicy(config, membership, NoResources(), InlineWorker(), rec)
    membership.listener = policy
    membership.start()
    return policy


@pytest.mark.parametrize("info", ["me", "other"])
def test_a_standby_exchange_the_peer_never_completes_is_forgotten(world, policy, info):  # noqa: F811
    membership, clock, timers, rec, config = world
    calc = Calc(config)
    membership.receive(calc.status(), "eth0")
    if info == "other":                      # we asked, calc said it would take them, then silence
        assert policy.standby() == ""
    membership.receive(calc.packet(("t", "ask_resources"), ("rsc_hold", "all"), ("info", info)), "eth0")
    assert policy.busy()
    for _ in range(int(hb.STANDBY_DONE_TIMEOUT_S) + 2):
        membership.receive(calc.status(), "eth0")
        advance(world, 1, step=0.5)
    assert not policy.busy()
    assert rec.has("standby offer cancelled") or rec.has("Standby request cancelled")


def test_no_group_is_taken_while_another_node_uses_our_name(world, policy):  # noqa: F811
    membership, clock, timers, rec, config = world
    clone = hb.Message(("t", "status"), ("st", "active"), ("src", "prime"))
    clone.add("srcuuid", b"Q" * 16, hb.FIELD_BINARY).add("seq", "1").add("hg", "100").add("ts", "6b05d22a")
    membership.receive(hb.encode_message(clone, config.authkeys), "eth0", "10.77.0.9")
    policy.acquire(["local", "foreign"], reason="test")
    assert policy.rsc_hold() == "none" and rec.has("Not acquiring [local foreign] resources")
    advance(world, 6)                        # deadtime 5 s of silence from the other 'prime'
    assert membership.name_conflict is None
    advance(world, 5)                        # initdead: comm up, alone
    assert policy.rsc_hold() == "all"
    assert [m.get("rsc_hold") for m in sent(rec) if m.get("t") == "resource"][-1] == "all"

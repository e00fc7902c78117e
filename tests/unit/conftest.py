"""The unit tests' shared fixtures (their fakes are in fakes.py)."""
import pytest

from fakes import membership_world, tutorial_confdir


@pytest.fixture()
def world(tmp_path):
    """prime's Membership on a fake clock: (membership, clock, timers, rec, config)."""
    return membership_world(tmp_path)


@pytest.fixture()
def confdir(tmp_path):
    """The tutorial's configuration directory (tmp_path/ha.d)."""
    return tutorial_confdir(tmp_path)

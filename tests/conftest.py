"""Shared test set-up: heartbeat.py (the repository root) and the kits (tests/kits) on the path; the
namespace lab fixture."""
import os
import sys

import pytest

KITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kits")
if KITS not in sys.path:
    sys.path.insert(0, KITS)
import paths  # noqa: E402,F401 - puts the repository (heartbeat.py) on the path


def pytest_configure(config):
    # pytest-xdist's mark, known to plain pytest too (a run without -n ignores it)
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker as the group's other tests")


@pytest.fixture()
def lab(request):
    """Network namespaces prime, calc and client on one bridge (or the hosts given as the
    fixture's parameter), removed after the test whatever happens."""
    from netns import Lab
    lab = Lab(getattr(request, "param", ("prime", "calc", "client")))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture()
def lab6():
    """The lab on an IPv6-only link: prime, calc and client with fd77::INDEX/64 and no IPv4 at all."""
    from netns import Lab
    lab = Lab(("prime", "calc", "client"), family="ipv6")
    try:
        yield lab
    finally:
        lab.close()

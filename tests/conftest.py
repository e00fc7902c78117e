"""Shared test set-up: import heartbeat.py from the repository root; the namespace lab fixture."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HEARTBEAT = os.path.join(ROOT, "heartbeat.py")
SAMPLES = os.path.join(SHARED, "reference", "samples")
TUTORIAL = os.path.join(SHARED, "seed", "heartbeat-tutorial.txt")


@pytest.fixture()
def lab(request):
    """Network namespaces prime, calc and client on one bridge (or the hosts given as the
    fixture's parameter), removed after the test whatever happens."""
    from netns import Lab          # netns imports this module: import it only when a test needs it
    lab = Lab(getattr(request, "param", ("prime", "calc", "client")))
    try:
        yield lab
    finally:
        lab.close()

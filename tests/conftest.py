"""Shared test set-up: import heartbeat.py from the repository root."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
HEARTBEAT = os.path.join(ROOT, "heartbeat.py")
SAMPLES = os.path.join(SHARED, "reference", "samples")
TUTORIAL = os.path.join(SHARED, "seed", "heartbeat-tutorial.txt")

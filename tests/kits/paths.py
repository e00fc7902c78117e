"""Where things are: the repository, heartbeat.py, and the data the tests read (tests/data). Importing
it puts the repository on sys.path, so that `import heartbeat` finds heartbeat.py."""
import os
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)                                   # the repository: heartbeat.py, ha.d/, init/
HEARTBEAT = os.path.join(ROOT, "heartbeat.py")
DATA = os.path.join(TESTS, "data")
SAMPLES = os.path.join(DATA, "samples")                         # packets captured from real Heartbeat 3.0.6
TUTORIAL = os.path.join(DATA, "heartbeat-tutorial.txt")         # the tutorial's ha.cf, haresources, authkeys
GOLDEN = os.path.join(DATA, "golden")                           # export-pacemaker's expected outputs
KITS = os.path.join(TESTS, "kits")
HOSTILE = os.path.join(KITS, "hostile.py")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

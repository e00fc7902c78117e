#!/usr/bin/env python3
"""heartbeat.py - a Heartbeat-compatible two-node failover daemon in one file.

A drop-in for Linux-HA Heartbeat 3.0.6 in its classic haresources ("v1") mode:
the same /etc/ha.d files (ha.cf, authkeys, haresources), the same log lines and
the same UDP packets on port 694 (IPv4 and IPv6), so a cluster can be upgraded one
node at a time. What Heartbeat never had (service monitors, the HTTP listener for
/metrics, notify hook timeouts) lives in /etc/ha.d/heartbeat.py.cf; hooks in
/etc/ha.d/notify.d. Standard library only: nothing to install but Python 3.9 or newer; two optional
extras, imported only when used: cryptography (aes256gcm in authkeys) and psutil.

Quick start (as root, on both nodes):
    ./heartbeat.py keygen            # write /etc/ha.d/authkeys with a fresh key
    ./heartbeat.py check             # validate ha.cf, authkeys and haresources
    ./heartbeat.py setup calc        # copy /etc/ha.d to the peer over scp
    ./heartbeat.py daemon            # run it (or: service heartbeat start)
    ./heartbeat.py status            # who is up, who holds what

The map. The file reads top to bottom in eleven layers, each under a banner of its own; a layer
uses only the layers above it, and a call back up (sensing telling deciding what changed) goes
through a small typing.Protocol handed to the constructor. tests/unit/test_layers.py holds this map
to the banners and to the names each layer uses.
    1. foundations   errors, exit codes, the optional extras, time and text, Timers, run_command,
                     Worker, atomic writes, the event history (every layer records into it)
    2. config        ha.cf (DIRECTIVES), authkeys, haresources (3.0.6's resource.d names and OCF
                     agents: HEARTBEAT_WRAPPERS), heartbeat.py.cf (SETTINGS), STONITH lines,
                     load_config()
    3. protocol      Heartbeat's message format, the authkeys digests and aes256gcm sealing,
                     identity and control fields
    4. kernel I/O    UDP media, ICMP echo, rtnetlink, ARP and neighbour discovery, real-time
                     scheduling and locked memory, the watchdog, /proc and pidfds
    5. acting        addresses (IPAddresses), OCF agents, resource scripts and groups (Resources),
                     Fencer
    6. sensing       Membership, PingNodes, LinkWatch, ServiceMonitor and its ProcessWatch
    7. deciding      ClusterPolicy (who holds which group), IPFail
    8. reporting     notify.d hooks, service accounting (with psutil, if installed), status text and
                     JSON, Prometheus metrics, the HTML page
    9. daemon        logging, the HTTP listener, the control socket, Daemon (the event loop)
   10. tools         check, keygen, setup, export-pacemaker
   11. CLI           the subcommands, build_parser(), main()

Where to start:
    a new ha.cf directive          DIRECTIVES (config); a setting Heartbeat never had: SETTINGS
    a new kind of resource         parse_resource (config), then Resources (acting)
    a new wire message type        Message (protocol), then the dispatch table of who hears it
    a new health check             sensing, telling ClusterPolicy through its Protocol (ServiceMonitor's
                                   failure path: restart in place, then hand over)
    who takes over, and when       ClusterPolicy (deciding)
    what status and /metrics show  reporting
    a new subcommand               build_parser (CLI), its work in tools
"""

import argparse
import base64
import collections
import dataclasses
import enum
import errno
import fcntl
import gc
import heapq
import importlib
import ipaddress
import itertools
import json
import logging
import os
import queue
import re
import selectors
import shutil
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, NamedTuple, Optional, Protocol, Tuple, Union

__version__ = "0.1.0"
HEARTBEAT_VERSION = "3.0.6"     # the version whose wire protocol we speak


# ==================================================================================================
# 1. FOUNDATIONS: errors, constants, time and text, timers, commands, the worker, files, the event history
# ==================================================================================================


# #### Foundations: constants and exit codes #######################################################

DEFAULT_CONFIG_DIR = "/etc/ha.d"
DEFAULT_STATE_DIR = "/var/lib/heartbeat"
DEFAULT_RUN_DIR = "/var/run/heartbeat"
INITD_DIR = "/etc/init.d"
DEFAULT_UDPPORT = 694
MAX_AUTH_INDEX = 15             # authkeys indexes are 0..15
AUTH_METHODS_NEEDING_KEY = {"sha1": True, "md5": True, "crc": False, "sha256": True, "aes256gcm": True}
HEARTBEAT_AUTH_METHODS = ("sha1", "md5", "crc")  # what 3.0.6 knows: it refuses to start on any other
NEW_KEY_MIN_BYTES = 32          # of a sha256 or aes256gcm key: 256 bits of secret at the least
IFNAMSIZ = 16                   # the kernel's interface name buffer, NUL included: names (and
                                # address labels) are at most IFNAMSIZ - 1 characters

# LSB exit codes (the init script and `status` use them too).
EXIT_OK = 0
EXIT_GENERIC = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_STATUS_UNKNOWN = 4         # `status` may not ask the daemon (LSB: "program or service status is unknown")
EXIT_NOT_CONFIGURED = 6


# #### Foundations: errors #########################################################################

class HAError(Exception):
    """Every error heartbeat.py reports to a person; main() prints it."""


class ConfigError(HAError):
    """One problem in one configuration file, at one line (0: the whole file)."""

    def __init__(self, path: str, lineno: int, message: str):
        super().__init__(message)
        self.path, self.lineno, self.message = path, lineno, message

    def __str__(self):
        where = f"{self.path}:{self.lineno}" if self.lineno else self.path
        return f"{where}: {self.message}"


class ConfigErrors(HAError):
    """All the problems found in the configuration, reported together."""

    def __init__(self, errors: List[ConfigError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


# #### Foundations: time and text ##################################################################

def format_duration(ms: int) -> str:
    """The shortest exact way to write ms back in heartbeat.py.cf's syntax."""
    for unit, scale in (("h", 3600000), ("min", 60000), ("s", 1000)):
        if ms and ms % scale == 0:
            return f"{ms // scale}{unit}"
    return f"{ms}ms"


def wall_text(wall: float, date: bool = False) -> str:
    """A time.time() value as local [YYYY-MM-DD ]HH:MM:SS.mmm."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(wall)) + \
        f".{int(wall % 1 * 1000):03d}"


def wall_time(moment: float, now: float) -> str:
    """A moment of a monotonic clock whose reading now is `now`, as wall-clock HH:MM:SS.mmm."""
    return wall_text(time.time() - (now - moment))


def hex_number(text: Optional[str]) -> int:
    """A hex field (seq, hg, ts, dt): 1 to 16 hex digits and nothing else; -1 when it is not one."""
    if not text or len(text) > 16 or not text.isalnum() or not text.isascii():
        return -1
    try:
        return int(text, 16)
    except ValueError:
        return -1


SECRET_MIN_CHARS = 4             # a shorter value (a port, `on`) is too common a word to mask
BASE64_INSIDE_MIN_CHARS = 8      # of a secret's base64 inside a longer blob: shorter runs match by chance
MASK = "***"


def secret_forms(secret: str, others=()) -> List[str]:
    """The ways a secret shows in a tool's output: as it is, URL-encoded, quoted or escaped (JSON,
    shell, Python, HTML), in base64 (standard and URL-safe, alone, as `other:secret` of HTTP basic
    auth, and the run of characters it always makes inside a longer base64 blob, at each of the
    three byte offsets it may sit at)."""
    import html
    import json
    import shlex
    import urllib.parse
    raw = secret.encode()
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret), urllib.parse.quote_plus(secret),
             json.dumps(secret)[1:-1], repr(secret)[1:-1], shlex.quote(secret), html.escape(secret)}
    for data in [raw] + [f"{other}:{secret}".encode() for other in others if other != secret]:
        for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
            forms.update((encoded, encoded.rstrip("=")))
    for offset in range(3):          # inside a blob: the characters made of the secret's bits alone
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        inside = encoded[(8 * offset + 5) // 6:8 * (offset + len(raw)) // 6]
        if len(inside) >= BASE64_INSIDE_MIN_CHARS:
            forms.update((inside, inside.translate(str.maketrans("+/", "-_"))))
    return [form for form in forms if len(form) >= SECRET_MIN_CHARS]


def redacted(text: str, secrets) -> str:
    """text without any of the secrets (of SECRET_MIN_CHARS or more) in any of their secret_forms:
    a STONITH plugin's output, with the device's password among its parameters."""
    secrets = [value for value in secrets if value]
    forms = {form for value in secrets if len(value) >= SECRET_MIN_CHARS for form in secret_forms(value, secrets)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


# #### Foundations: the optional extras ############################################################

# heartbeat.py needs nothing but the standard library; these packages, when installed, add what
# their line says and nothing changes without them. None is imported unless its feature is used.
EXTRAS = {"cryptography": "aes256gcm in authkeys (AES-256-GCM sealed heartbeats)",
          "psutil": "CPU and memory of each group's processes"}
EXTRA_PACKAGES = {"cryptography": ("python3-cryptography", "python3-cryptography"),   # Debian/Ubuntu, RHEL
                  "psutil": ("python3-psutil", "python3-psutil")}


def extra_install_hint(name: str) -> str:
    debian, rhel = EXTRA_PACKAGES[name]
    return (f"install the Python package {name} for {sys.executable} (Debian/Ubuntu: apt install {debian}; "
            f"RHEL: dnf install {rhel}; or pip install {name})")


def extra_module(name: str, attribute: str = ""):
    """An extra's module (or one of its submodules), imported at its first use; None when this
    Python cannot import it."""
    try:
        return importlib.import_module(f"{name}.{attribute}" if attribute else name)
    except ImportError:
        return None


def extra_version(name: str) -> Optional[str]:
    """An extra's version when this Python can import it, None when not; found without importing
    it (the daemon of a cluster that does not use it must not grow): from the module when loaded,
    else from the name of its installed metadata (NAME-VERSION.dist-info or .egg-info)."""
    module = sys.modules.get(name)
    if module is not None:
        return str(getattr(module, "__version__", "unknown version"))
    try:
        spec = importlib.import_module("importlib.util").find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    try:
        entries = os.listdir(site)
    except OSError:
        entries = []
    for entry in sorted(entries):
        found = re.fullmatch(re.escape(name) + r"-([^-]+?)(?:-py[0-9.]+)?\.(?:dist|egg)-info", entry, re.I)
        if found:
            return found.group(1)
    return "unknown version"


def extras_text(versions: Dict[str, Optional[str]]) -> str:
    return ", ".join(f"{name} {version}" if version else f"{name} absent" for name, version in versions.items())


# #### Foundations: timers and rate-limited complaints #############################################

@dataclasses.dataclass(order=True)
class Timer:
    """One deadline: the heap orders by due time, then by the order timers were set."""
    due: float                                   # on the Timers' monotonic clock
    order: int
    callback: Optional[Callable[[], None]] = dataclasses.field(compare=False)   # None once cancelled

    @property
    def pending(self) -> bool:
        return self.callback is not None


class Timers:
    """Deadlines on a monotonic clock, in a heap; the event loop sleeps until the next one."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.heap, self.counter = clock, [], itertools.count()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay_s), next(self.counter), callback)
        heapq.heappush(self.heap, timer)
        return timer

    @staticmethod
    def cancel(timer: Optional[Timer]) -> None:
        if timer:
            timer.callback = None

    def next_delay(self) -> Optional[float]:
        while self.heap and not self.heap[0].pending:
            heapq.heappop(self.heap)
        return max(0.0, self.heap[0].due - self.clock()) if self.heap else None

    def run_due(self) -> None:
        now = self.clock()
        while self.heap and self.heap[0].due <= now:
            callback = heapq.heappop(self.heap).callback
            if callback:
                callback()


class RateLimitedLog:
    """Log a repeated complaint at most once per interval, saying how many were held back."""

    def __init__(self, log, clock, interval_s: float = 10.0):
        self.log, self.clock, self.interval_s = log, clock, interval_s
        self.last: Dict[str, float] = {}
        self.held: Dict[str, int] = {}

    def __call__(self, reason: str, message: str, level: str = "error") -> None:
        now = self.clock()
        if reason in self.last and now - self.last[reason] < self.interval_s:
            self.held[reason] = self.held.get(reason, 0) + 1
            return
        held = self.held.pop(reason, 0)
        self.last[reason] = now
        getattr(self.log, level)(message + (f" ({held} more like it since the last report)" if held else ""))


# #### Foundations: running commands and the worker thread #########################################

OUTPUT_KEPT_BYTES = 64 * 1024   # of a command's output, the end
# How much a message quotes of a command's output (its end) or of a text (its start): enough to
# show the error in one line. One length per kind of message, as each has always been.
QUOTED_CHARS = 200              # in a log line or an error: a plugin's, reboot's, a restart's, a peer's key
HOOK_OUTPUT_CHARS = 300         # a notify hook's failure
SETUP_OUTPUT_CHARS = 400        # ssh or scp failing in `setup`
START_OUTPUT_CHARS = 500        # a resource script's failed start


# run_command's own exit codes, those of coreutils `timeout` and of the shell, so a script's
# author reads them as usual: 124 timed out, 126 found but not executable, 127 not found.
EXIT_TIMED_OUT = 124
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_COULD_NOT_RUN = (EXIT_TIMED_OUT, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND)   # the command said nothing
KILLED_WAIT_S = 5.0     # a killed command still there then is stuck in the kernel: the caller goes on
                        # (subprocess reaps it whenever it ends)


@dataclasses.dataclass
class CommandResult:
    returncode: int
    output: str
    pid: int = 0                # the process run (with own_session, its session id too); 0: none started


def run_command(argv: List[str], timeout_s: float, env: Optional[dict] = None,
                own_session: bool = True) -> CommandResult:
    """Run argv (never through a shell); stdout and stderr together. Done when the process itself
    exits: the output goes to a file, so a child it left running (`daemon &`) holds nothing open.
    On timeout EXIT_TIMED_OUT, and its whole process group is killed (own_session=False keeps our terminal,
    where ssh asks for a password, and kills only the process)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=own_session)
        except OSError as err:
            return CommandResult(EXIT_NOT_FOUND, f"cannot run {argv[0]}: {err.strerror}")
        try:
            returncode, note = proc.wait(timeout_s), ""
        except subprocess.TimeoutExpired:
            if own_session:
                os.killpg(proc.pid, signal.SIGKILL)     # not reaped yet, so the group id is still its own
            else:
                proc.kill()
            returncode, note = EXIT_TIMED_OUT, f"\n(timed out after {timeout_s} s)"
            try:
                proc.wait(KILLED_WAIT_S)
            except subprocess.TimeoutExpired:            # in uninterruptible sleep (D): a hung disk or NFS
                note += f"; still there {KILLED_WAIT_S:g} s after SIGKILL (hung in the kernel?): not waited for"
        out.seek(max(0, out.seek(0, os.SEEK_END) - OUTPUT_KEPT_BYTES))
        return CommandResult(returncode, out.read().decode(errors="replace") + note, proc.pid)


def scheduled_like_the_daemon() -> None:
    """Called first in each thread of the daemon: it runs as the main thread does. With ha.cf's
    `realtime` the main thread runs SCHED_RR with SCHED_RESET_ON_FORK, so that the scripts, agents
    and hooks it starts are normal processes; the flag gives new threads the normal policy too,
    and a thread left there could hold the GIL back from the loop."""
    policy = os.sched_getscheduler(os.getpid())
    if policy & ~os.SCHED_RESET_ON_FORK != os.SCHED_OTHER:
        try:
            os.sched_setscheduler(0, policy, os.sched_getparam(os.getpid()))
        except OSError:
            pass                     # as the main thread's own failure: logged there, runs on


class Worker:
    """One thread that runs resource actions in order; results come back to the event loop."""

    def __init__(self, post):
        self.post = post
        self.jobs: queue.Queue = queue.Queue()
        self.pending = 0
        self.thread = threading.Thread(target=self.serve, name="resources", daemon=True)
        self.thread.start()

    def submit(self, job, done=None) -> None:
        self.pending += 1
        self.jobs.put((job, done))

    def serve(self) -> None:
        scheduled_like_the_daemon()
        while True:
            job, done = self.jobs.get()
            try:
                result = job()
            except Exception as err:     # a bug in one action must not kill the thread
                result = err
            self.post(lambda done=done, result=result: self.finished(done, result))

    def finished(self, done, result) -> None:
        self.pending -= 1
        if done:
            done(result)

    @property
    def busy(self) -> bool:
        return self.pending > 0


def in_thread(name: str, job: Callable[[], object], post: Callable[[Callable[[], None]], None],
              done: Callable[[object], None]) -> None:
    """job() in a thread of its own, then done(result) in the loop through post: for work that
    must not wait behind the resource worker (a reset, a device's status, a monitor's check, a
    reload). An exception in job is its result, as with Worker: done() reports it as a failure,
    so a bug never leaves the loop waiting for an answer."""
    def run() -> None:
        scheduled_like_the_daemon()
        try:
            result = job()
        except Exception as err:
            result = err
        post(lambda: done(result))
    threading.Thread(target=run, name=name, daemon=True).start()



# #### Foundations: files written whole ############################################################

def write_file_atomic(path: str, data: bytes, mode: int, replace: bool = True) -> None:
    """Write path through a temporary file and rename, so a crash never leaves half a file.
    The temporary name is random and created exclusively: nobody can plant a symlink there
    in advance to make us write elsewhere (the directory may be /tmp or the current one).
    replace=False: FileExistsError if path exists, even one created meanwhile (a link, not a rename)."""
    temp = f"{path}.{os.urandom(8).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
            os.unlink(temp)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# #### Foundations: the event history (every layer records, reporting shows) #######################

# Every transition the log reports is also an Event: kept in memory (the last EVENTS_KEPT), shown
# by `status --events` and `status --json`, and handed to the notify.d hooks (see Notify hooks).
EVENTS_KEPT = 500
EVENT_DETAIL_CHARS = 300         # of an error quoted in an event (a failed start's first line)
NORMAL_DROPS = ("dropped_own", "dropped_duplicate", "dropped_not_for_us")   # normal traffic: no event, not shown
DROP_EVENT_INTERVAL_S = 10.0     # a burst of dropped packets: one event per reason this often at most
EVENT_KINDS = {
    "node-up": "a peer or ping node is heard (again)",
    "node-dead": "a peer or ping node was silent for deadtime (deadping); detail: when it went silent",
    "link-up": "a heartbeat link from a peer carries heartbeats (again)",
    "link-dead": "a heartbeat link from a peer was silent for deadtime",
    "group-starting": "this node begins to take a group; detail: why",
    "addresses-added": "a group's addresses are up here (its services start next); duration: since its start began",
    "group-acquired": "a group runs here; duration: its start; detail: the outage seen here when a peer died",
    "group-failed": "a group failed to start here; detail: the error",
    "group-stopping": "this node begins to give a group up; detail: why",
    "group-released": "a group is stopped here; duration: its stop",
    "group-stop-failed": "a group would not stop here",
    "active": "this node holds a group (it held none)",
    "standby": "this node holds no group any more",
    "split-brain": "both nodes held a group; detail: which one keeps it",
    "packets-dropped": "packets dropped as bad, replayed or unknown; detail: how many since the last such event",
    "fence-started": "this node begins to reset a peer through its STONITH device before taking its groups; "
                     "detail: the device",
    "fence-failed": "a reset failed: retried every 5 s, and the peer's groups are not taken meanwhile (one event "
                    "a minute at most); detail: the attempt and the device's answer",
    "fence-done": "the peer is reset: its groups are taken next; duration: since fence-started",
    "fence-cancelled": "the peer was heard again before a reset succeeded: not reset",
    "internal-error": "a bug: a thread or a handler of the loop raised, and went on; detail: where and the "
                      "exception (the log has the traceback)",
}


@dataclasses.dataclass
class Event:
    """One transition: when (wall clock and monotonic), what, about what, and how long it took."""
    kind: str
    wall: float
    mono: float
    subjects: Dict[str, str]         # node, link, group, reason: what it is about
    detail: str = ""
    duration_ms: Optional[int] = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "time": round(self.wall, 3), "monotonic": round(self.mono, 3), **self.subjects,
                "detail": self.detail, "duration_ms": self.duration_ms}


class EventLog:
    """The last EVENTS_KEPT events, oldest first. Each listener hears every event as it is
    recorded, in order, from the loop or the resource thread alike (a lock)."""

    def __init__(self, kept: int = EVENTS_KEPT):
        self.events: collections.deque = collections.deque(maxlen=kept)
        self.counts: Dict[str, int] = collections.Counter()     # since the start, by kind
        self.listeners: list = []
        self.lock = threading.Lock()

    def record(self, kind: str, detail: str = "", duration_ms: Optional[float] = None, **subjects: str) -> None:
        event = Event(kind, time.time(), time.monotonic(), {k: v for k, v in subjects.items() if v}, detail,
                      None if duration_ms is None else int(round(duration_ms)))
        with self.lock:
            self.events.append(event)
            self.counts[kind] += 1
            for listener in self.listeners:
                listener(event)

    def snapshot(self, last: Optional[int] = None) -> List[dict]:
        """Every event kept, or the last ones."""
        with self.lock:
            kept = self.events if last is None else itertools.islice(self.events, max(0, len(self.events) - last), None)
            return [event.as_dict() for event in kept]


FAULT_EVENT_INTERVAL_S = 10.0    # a bug that repeats: one internal-error event per place this often at most


class Faults:
    """Exceptions caught where a thread or the loop goes on with its next piece of work: each is
    logged with its traceback (a repeat once per interval, RateLimitedLog), counted by where it
    happened (status, heartbeat_internal_errors_total) and recorded as an internal-error event, at
    most one per place per FAULT_EVENT_INTERVAL_S. Called from any thread."""

    def __init__(self, log, events: Optional[EventLog] = None, clock=time.monotonic):
        self.events, self.clock = events, clock
        self.said = RateLimitedLog(log, clock, FAULT_EVENT_INTERVAL_S)
        self.counts: Dict[str, int] = collections.Counter()
        self.last_event: Dict[str, float] = {}
        self.held: Dict[str, int] = collections.Counter()     # where -> faults since its last event
        self.lock = threading.Lock()

    def __call__(self, where: str, err: BaseException, event: bool = True) -> None:
        """event=False: count and log only (the hooks thread, serving an internal-error event)."""
        trace = "".join(traceback.format_exception(type(err), err, err.__traceback__)).strip()
        now = self.clock()
        with self.lock:
            self.counts[where] += 1
            due = event and self.events is not None and \
                (where not in self.last_event or now - self.last_event[where] >= FAULT_EVENT_INTERVAL_S)
            held = self.held.pop(where, 0) if due else 0
            if due:
                self.last_event[where] = now
            elif event:
                self.held[where] += 1
        self.said(f"{where} {type(err).__name__}", f"internal error in {where} (please report): "
                  + trace.replace("\n", " | "))
        if due:
            more = f" ({held} more since the last event)" if held else ""
            detail = f"{where}: {type(err).__name__}: {err}"[:EVENT_DETAIL_CHARS] + more
            self.events.record("internal-error", detail.replace("\0", "\\0"), reason=where)


# ==================================================================================================
# 2. CONFIG: ha.cf, authkeys, haresources, heartbeat.py.cf, STONITH lines
# ==================================================================================================


# #### Config: ha.cf ###############################################################################

TRUE_WORDS = ("true", "on", "yes", "y", "1")
FALSE_WORDS = ("false", "off", "no", "n", "0")
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7", "none")
TIME_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|msec|us|usec)?$", re.ASCII)
# Bounds of times and counts. 3.0.6 takes any positive time that fits a C long; no cluster works
# past these, so a larger value is a typo (a unit or a few zeros too many), refused at its line.
MAX_TIME_MS = 365 * 86400000        # any time in any file: a year (past the float range: no number)
MAX_KEEPALIVE_MS = 3600000          # a heartbeat less often than hourly tells a dead peer hours late
MAX_DEADTIME_MS = 86400000          # deadtime, warntime, initdead, deadping: a failover a day late is none
MAX_NUMBER_DIGITS = 18              # a count fits a C long (3.0.6's); int() refuses past 4300 digits
IFACE_RE = re.compile(rf"^[A-Za-z0-9_.:@-]{{1,{IFNAMSIZ - 1}}}$")


def whole_ms(number: str, scale: float, text: str) -> int:
    """A time's number times its unit's ms, rounded; ValueError past MAX_TIME_MS (which also keeps
    an endless row of digits, a float of inf, from int()'s OverflowError)."""
    ms = float(number) * scale
    if not ms <= MAX_TIME_MS:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise ValueError(f"'{shown}' is more than a year: no time here may be that long")
    return int(round(ms))


def parse_time_ms(text: str) -> int:
    """Heartbeat's time syntax: seconds (`2`, `0.5`), or `1500ms`, or `500000us`."""
    match = TIME_RE.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a time (write 2, 0.5, 1500ms or 500000us)")
    scale = {"s": 1000.0, "ms": 1.0, "msec": 1.0, "us": 0.001, "usec": 0.001}[match.group(2) or "s"]
    return whole_ms(match.group(1), scale, text)


def is_number(text: str) -> bool:
    """Plain ASCII digits only (`int()` refuses some characters that str.isdigit() accepts), at most
    MAX_NUMBER_DIGITS of them: no count is longer, and int() would refuse 4300 in words of its own."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_DIGITS


def parse_bool(text: str) -> bool:
    """Heartbeat's booleans: true/false, on/off, yes/no, y/n, 1/0, any case."""
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"'{text}' is not a boolean (use on or off)")


@dataclasses.dataclass(frozen=True)
class Directive:
    """One ha.cf directive: how it is read, its default, and whether we act on it.

    support: "yes" (implemented), "ignored" (accepted with a warning: it has no
    effect here), "crm" (meaningful only with the CRM: warning, or error when it
    turns the CRM on), "refused" (an error: e.g. a medium we do not implement).
    """
    name: str
    kind: str            # time bool int choice text nodes media line
    default: Optional[str]
    meaning: str
    support: str = "yes"
    choices: Tuple[str, ...] = ()
    low: int = 0
    high: int = 0        # a "time"'s, in ms (0: MAX_TIME_MS)
    in_ms: bool = False  # an "int" that is a number of milliseconds (a "time" always is)

    @property
    def field(self) -> str:
        """The HaCf field it sets: one in milliseconds says so in its name."""
        return self.name + "_ms" if self.kind == "time" or self.in_ms else self.name


DIRECTIVES = [
    Directive("node", "nodes", None, "cluster member names (uname -n), several per line allowed"),
    Directive("bcast", "media", None, "UDP broadcast heartbeats on each named interface"),
    Directive("mcast", "media", None, "UDP multicast: mcast DEV GROUP PORT TTL LOOP"),
    Directive("ucast", "media", None, "UDP unicast: ucast DEV PEER [PEER...]"),
    Directive("mcast6", "media", None, "UDP/IPv6 multicast: mcast6 DEV GROUP PORT HOPS LOOP"),
    Directive("ucast6", "media", None, "UDP/IPv6 unicast: ucast6 DEV PEER (udpport)"),
    Directive("keepalive", "time", "1000ms", "interval between heartbeats (at most 3600 s)", high=MAX_KEEPALIVE_MS),
    Directive("deadtime", "time", "30000ms", "silence after which a node is declared dead (at most 86400 s)",
              high=MAX_DEADTIME_MS),
    Directive("warntime", "time", None, "lateness that logs a 'Late heartbeat' warning (deadtime/2)",
              high=MAX_DEADTIME_MS),
    Directive("initdead", "time", None, "deadtime used at start-up, while the network settles",
              high=MAX_DEADTIME_MS),
    Directive("udpport", "int", "694", "UDP port for bcast and ucast", low=1, high=65535),
    Directive("auto_failback", "choice", "legacy",
              "move groups back to their home node when it returns",
              choices=("on", "off", "legacy")),
    Directive("nice_failback", "bool", None, "obsolete; read as auto_failback legacy"),
    Directive("logfile", "text", None, "file for non-debug log lines"),
    Directive("debugfile", "text", None, "file for all log lines, debug included"),
    Directive("logfacility", "choice", None, "syslog facility, or none",
              choices=SYSLOG_FACILITIES),
    Directive("debug", "int", "0", "debug level", low=0, high=255),
    Directive("syslogmsgfmt", "bool", "true", "log files in syslog layout (false: Heartbeat's own)"),
    Directive("cluster", "text", "linux-ha", "cluster name"),
    Directive("hopfudge", "int", "1", "hops above cluster size (the ttl field)", low=0, high=255),
    Directive("msgfmt", "choice", "classic", "wire format: classic adds the in-message auth field",
              choices=("classic", "netstring")),
    Directive("log_badpack", "bool", "true", "log malformed and unauthenticated packets"),
    Directive("hbgenmethod", "choice", "file", "how the generation number is kept",
              choices=("file", "time")),
    Directive("uuidfrom", "choice", "file", "source of the node uuid",
              choices=("file", "nodename")),
    Directive("autojoin", "choice", "none", "accept nodes not listed in ha.cf",
              choices=("none", "other", "any")),
    Directive("max_rexmit_delay", "int", "250", "ms between retransmission requests",
              low=1, high=60000, in_ms=True),
    Directive("env", "line", None, "NAME=VALUE exported to resource scripts"),
    Directive("deadping", "time", None, "silence after which a ping node is declared dead (deadtime)",
              high=MAX_DEADTIME_MS),
    Directive("realtime", "bool", "true", "SCHED_RR scheduling and the daemon locked in memory (children run "
              "normally)"),
    Directive("rtprio", "int", None, "SCHED_RR priority (default: the lowest, 1)", low=1, high=99),
    Directive("coredumps", "bool", "true", "enable core dumps", support="ignored"),
    Directive("coreroot", "text", None, "core dump directory", support="ignored"),
    Directive("memreserve", "int", "6500", "KiB preallocated", support="ignored", low=0, high=1 << 30),
    Directive("compression", "text", "zlib", "compression plugin", support="ignored"),
    Directive("compression_threshold", "int", "2", "KiB before compression",
              support="ignored", low=1, high=1 << 20),
    Directive("traditional_compression", "bool", "no", "old compression", support="ignored"),
    Directive("use_logd", "bool", None, "log through ha_logd", support="ignored"),
    Directive("conn_logd_time", "int", "60", "logd reconnect interval", support="ignored",
              low=0, high=1 << 30),
    Directive("baud", "int", "19200", "serial line speed", support="ignored", low=1, high=1 << 30),
    Directive("watchdog", "text", None, "watchdog device, fed every keepalive; 'V' on a clean stop"),
    Directive("ping", "line", None, "ping nodes: each address its own pseudo-node, pinged every keepalive"),
    Directive("ping_group", "line", None, "ping group NAME ADDR...: one pseudo-node, up while any member answers"),
    Directive("ping6", "line", None, "IPv6 ping nodes: each address its own pseudo-node, ICMPv6 echo every keepalive"),
    Directive("respawn", "line", None, "child processes to keep running (ipfail: built in; others ignored)"),
    Directive("apiauth", "line", None, "API client permissions", support="ignored"),
    Directive("failfast", "line", None, "failfast children", support="ignored"),
    Directive("stonith", "line", None, "STONITH device: stonith TYPE CONFIGFILE"),
    Directive("stonith_host", "line", None, "STONITH device: stonith_host NODE-or-* TYPE PARAMS..."),
    Directive("crm", "text", "false", "run Pacemaker's CRM (must stay off)", support="crm"),
    Directive("pacemaker", "text", "false", "run Pacemaker (must stay off)", support="crm"),
    Directive("use_apphbd", "bool", None, "register with apphbd", support="crm"),
    Directive("quorum_server", "text", None, "quorum server", support="crm"),
    Directive("crm_daemon_dir", "text", None, "Pacemaker daemons' directory", support="crm"),
    Directive("crmd_spawns_pengine", "bool", None, "Pacemaker pengine", support="crm"),
    Directive("record_config_changes", "bool", "on", "CIB change recording", support="crm"),
    Directive("record_pengine_inputs", "bool", "on", "pengine input recording", support="crm"),
    Directive("enable_config_writes", "bool", "on", "CIB writes", support="crm"),
    Directive("serial", "line", None, "serial-line heartbeats", support="refused"),
    Directive("hbaping", "line", None, "fibre-channel ping", support="refused"),
    Directive("openais", "line", None, "openais messaging", support="refused"),
]
DIRECTIVE_BY_NAME = {d.name: d for d in DIRECTIVES}


@dataclasses.dataclass
class Medium:
    """One heartbeat path: a socket pair on one interface."""
    kind: str                        # bcast, mcast, ucast, mcast6 or ucast6
    iface: str
    lineno: int
    group: str = ""                  # mcast group
    port: int = 0                    # mcast port (bcast and ucast use udpport)
    ttl: int = 1                     # mcast6: hops
    loop: bool = False
    peers: Tuple[str, ...] = ()      # ucast destinations

    def describe(self, udpport: int) -> str:
        if self.kind == "mcast6":
            return f"mcast6 {self.iface} [{self.group}]:{self.port} hops {self.ttl} loop {int(self.loop)}"
        if self.kind == "mcast":
            return f"mcast {self.iface} {self.group}:{self.port} ttl {self.ttl} loop {int(self.loop)}"
        if self.kind in ("ucast", "ucast6"):
            return f"{self.kind} {self.iface} to {', '.join(self.peers)} port {udpport}"
        return f"bcast {self.iface} port {udpport}"


@dataclasses.dataclass
class PingNode:
    """A ping node (`ping ADDR`) or ping group (`ping_group NAME ADDR...`): a pseudo-node that is
    up ("ping") while one of its addresses answers ICMP echo."""
    name: str
    addresses: Tuple[str, ...]
    lineno: int
    group: bool = False


@dataclasses.dataclass
class StonithLine:
    """A `stonith TYPE CONFIGFILE` or `stonith_host FROM|* TYPE PARAMS...` line of ha.cf."""
    lineno: int
    host: str                        # the node that uses it, or "*" (a `stonith` line: "*")
    plugin: str
    params: str                      # positional, in the order of the plugin's getconfignames
    config_file: Optional[str] = None


@dataclasses.dataclass
class HaCf:
    """ha.cf as Heartbeat reads it, with its defaults and computed timers."""
    path: str
    nodes: List[str] = dataclasses.field(default_factory=list)
    media: List[Medium] = dataclasses.field(default_factory=list)
    keepalive_ms: int = 1000
    deadtime_ms: int = 30000
    warntime_ms: int = 0
    initdead_ms: int = 0
    udpport: int = DEFAULT_UDPPORT
    auto_failback: str = "legacy"
    logfile: Optional[str] = None
    debugfile: Optional[str] = None
    logfacility: Optional[str] = None
    debug: int = 0
    syslogmsgfmt: bool = True
    cluster: str = "linux-ha"
    hopfudge: int = 1
    msgfmt: str = "classic"
    log_badpack: bool = True
    hbgenmethod: str = "file"
    uuidfrom: str = "file"
    autojoin: str = "none"
    max_rexmit_delay_ms: int = 250
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    ping_nodes: List[PingNode] = dataclasses.field(default_factory=list)
    deadping_ms: int = 0
    ipfail: bool = False             # `respawn USER .../ipfail`: the ipfail rules, built in
    stonith_lines: List[StonithLine] = dataclasses.field(default_factory=list)
    watchdog: Optional[str] = None   # the watchdog device (opened by the daemon, not here)
    realtime: bool = True
    rtprio: Optional[int] = None
    values: Dict[str, str] = dataclasses.field(default_factory=dict)   # raw, for HA_* variables
    lines: Dict[str, int] = dataclasses.field(default_factory=dict)    # where each was set
    warnings: List[ConfigError] = dataclasses.field(default_factory=list)


def check_directive_fields(directives: List[Directive], fields) -> None:
    """Every directive in milliseconds has its HaCf field (named NAME_ms): _apply_value stores it
    there, and a missing one would read the value only to drop it without a word."""
    missing = [d.field for d in directives if (d.kind == "time" or d.in_ms) and d.field not in fields]
    if missing:
        raise AssertionError(f"HaCf has no field {', '.join(missing)}")


check_directive_fields(DIRECTIVES, {field.name for field in dataclasses.fields(HaCf)})


def config_lines(path: str, comment_anywhere: bool = True):
    """Yield (lineno, text) of a config file, comments and blank lines removed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ConfigErrors([ConfigError(path, 0, f"cannot open: {err.strerror}")]) from None
    yield from text_lines(data, comment_anywhere)


def text_lines(data: bytes, comment_anywhere: bool = True):
    """Yield (lineno, text) of config data, decoded leniently so that any garbage gives a config
    error at a line, never a UnicodeDecodeError."""
    for lineno, raw in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        text = raw.rstrip("\r")
        if comment_anywhere and "#" in text:
            text = text[:text.index("#")]
        text = text.strip()
        if text and not text.startswith("#"):
            yield lineno, text


def _warn(cfg: HaCf, lineno: int, message: str):
    cfg.warnings.append(ConfigError(cfg.path, lineno, "warning: " + message))


def _parse_media(cfg: HaCf, name: str, words: List[str], lineno: int) -> List[str]:
    """Add the media of one bcast/mcast/ucast line; return the problems found."""
    problems = []
    if not words:
        return [f"{name} needs an interface name"]
    for iface in (words if name == "bcast" else words[:1]):
        if not IFACE_RE.match(iface):
            problems.append(f"'{iface}' is not an interface name")
    if problems:
        return problems
    if name == "bcast":
        cfg.media.extend(Medium("bcast", iface, lineno) for iface in words)
    elif name in ("ucast6", "mcast6"):
        return _parse_media6(cfg, name, words, lineno)
    elif name == "ucast":
        if len(words) < 2:
            return [f"ucast {words[0]} is missing the peer's IP address or host name"]
        cfg.media.append(Medium("ucast", words[0], lineno, peers=tuple(words[1:])))
    else:
        if len(words) != 5:
            return ["mcast takes five values: mcast DEV GROUP PORT TTL LOOP "
                    "(e.g. mcast eth0 225.0.0.1 694 1 0)"]
        dev, group, port, ttl, loop = words
        try:
            if not ipaddress.IPv4Address(group).is_multicast:
                problems.append(f"mcast group {group} is not a multicast address (224.0.0.0-239.255.255.255)")
        except ValueError:
            problems.append(f"mcast group '{group}' is not an IPv4 address")
        if not is_number(port) or not 0 < int(port) < 65536:
            problems.append(f"mcast port '{port}' must be a number from 1 to 65535")
        if not is_number(ttl) or not 0 < int(ttl) < 256:
            problems.append(f"mcast ttl '{ttl}' must be a number from 1 to 255")
        if loop not in ("0", "1"):
            problems.append(f"mcast loop '{loop}' must be 0 or 1")
        if not problems:
            cfg.media.append(Medium("mcast", dev, lineno, group=group, port=int(port),
                                    ttl=int(ttl), loop=loop == "1"))
    return problems


def ipv6_heartbeat_group_problem(group: str) -> str:
    """Why 3.0.6's mcast6 refuses a group ('' when it takes it): a multicast address, no flag but
    transient, of link-, admin-, site- or organization-local scope, not all zeros after the scope."""
    try:
        packed = ipaddress.IPv6Address(group).packed
    except ValueError:
        return f"mcast6 group '{group}' is not an IPv6 address"
    if packed[0] != 0xFF or packed[1] & 0xE0 or packed[1] & 0x0F not in (0x2, 0x4, 0x5, 0x8) or not any(packed[2:]):
        return (f"mcast6 group {group} is not a multicast address of link-, admin-, site- or "
                "organization-local scope (ff12::1:2:3:4, ff15::...)")
    return ""


def _parse_media6(cfg: HaCf, name: str, words: List[str], lineno: int) -> List[str]:
    """ucast6 DEV PEER and mcast6 DEV GROUP PORT HOPS LOOP, as 3.0.6's ucast6.c and mcast6.c read them."""
    dev = words[0]
    if name == "ucast6":
        if len(words) < 2:
            return [f"ucast6 [{dev}] missing ucast6 address"]
        if len(words) > 2:
            _warn(cfg, lineno, f"ucast6 takes one peer; {' '.join(words[2:])} ignored (as 3.0.6 does)")
        address, _, scope = words[1].partition("%")
        try:
            peer = ipaddress.IPv6Address(address)
        except ValueError:
            return [f"ucast6 [{dev}] bad addr [{words[1]}]: not an IPv6 address"]
        if peer.is_multicast or peer.is_unspecified or peer.is_loopback:
            return [f"ucast6 [{dev}] bad addr [{words[1]}]: multicast, unspecified and loopback cannot be peers"]
        if scope and scope != dev:
            return [f"ucast6 [{dev}] bad addr [{words[1]}]: the scope must be the device ({dev})"]
        cfg.media.append(Medium("ucast6", dev, lineno, peers=(str(peer),)))
        return []
    if len(words) != 5:
        return ["mcast6 takes five values: mcast6 DEV GROUP PORT HOPS LOOP (e.g. mcast6 eth0 ff12::1:2:3:4 694 1 0)"]
    _, group, port, hops, loop = words
    problems = [ipv6_heartbeat_group_problem(group)]
    if not is_number(port):
        try:
            port = str(socket.getservbyname(port, "udp"))
        except OSError:
            problems.append(f"mcast6 port '{port}' is neither a number nor a UDP service name")
    if is_number(port) and not 0 < int(port) < 65536:
        problems.append(f"mcast6 port '{port}' must be a number from 1 to 65535")
    if not is_number(hops) or int(hops) > 4:
        problems.append(f"mcast6 [{dev}] bad hops [{hops}]: a number from 0 to 4")
    if loop not in ("0", "1"):
        problems.append(f"mcast6 loop '{loop}' must be 0 or 1")
    problems = [p for p in problems if p]
    if not problems:
        cfg.media.append(Medium("mcast6", dev, lineno, group=str(ipaddress.IPv6Address(group)), port=int(port),
                                ttl=int(hops), loop=loop == "1"))
    return problems


def _parse_stonith(cfg: HaCf, name: str, rest: str, lineno: int) -> Optional[str]:
    """Keep a stonith/stonith_host line (the device is chosen per node by load_config)."""
    words = rest.split()
    if name == "stonith":
        if len(words) < 2:
            return "stonith takes a device type and its config file: stonith baytech /etc/ha.d/conf/stonith.baytech"
        cfg.stonith_lines.append(StonithLine(lineno, "*", words[0], "", config_file=rest.split(None, 1)[1]))
    else:
        if len(words) < 2:
            return ("stonith_host takes the node using the device (or *), its type and its parameters: "
                    "stonith_host * external/ipmi calc 10.0.0.12 admin secret lanplus")
        cfg.stonith_lines.append(StonithLine(lineno, words[0].lower(), words[1],
                                             rest.split(None, 2)[2] if len(words) > 2 else ""))
    return None


def _parse_ping(cfg: HaCf, name: str, words: List[str], lineno: int) -> List[str]:
    """Add the ping nodes of one `ping`, `ping6` or `ping_group` line; return the problems found."""
    group, family = name == "ping_group", socket.AF_INET6 if name == "ping6" else socket.AF_INET
    kind = "IPv6" if name == "ping6" else "IPv4"
    if len(words) < (2 if group else 1):
        return ["ping_group takes a name and one or more addresses: ping_group uplink 10.0.0.1 10.0.0.2"
                if group else f"{name} takes one or more {kind} addresses or host names"]
    problems, addresses = [], []
    for word in words[1:] if group else words:
        try:
            address = str(ipaddress.IPv6Address(word) if name == "ping6" else ipaddress.IPv4Address(word))
        except ValueError:
            address = resolve_host(word, family)
        if address is None:
            problems.append(f"{name}: '{word}' is not an {kind} address nor a host name that resolves")
        elif ipaddress.ip_address(address).is_link_local:
            problems.append(f"{name}: {word} is link-local; give the ping node a global or unique local address")
        else:
            addresses.append(address)
    names = [words[0].lower()] if group else list(addresses)
    taken = {p.name for p in cfg.ping_nodes}
    for node in names:
        if node in taken:
            problems.append(f"{name}: '{node}' is already a ping node")
        taken.add(node)
    if not problems:
        if group:
            cfg.ping_nodes.append(PingNode(names[0], tuple(addresses), lineno, group=True))
        else:
            cfg.ping_nodes.extend(PingNode(a, (a,), lineno) for a in addresses)
    return problems


def _apply_value(cfg: HaCf, directive: Directive, value: str, lineno: int):
    """Set one scalar directive from one value; raise ValueError with the reason."""
    name, kind = directive.name, directive.kind
    if kind == "time":
        parsed, high = parse_time_ms(value), directive.high or MAX_TIME_MS
        if not 0 < parsed <= high:
            raise ValueError(f"{name} must be more than 0 and at most {high // 1000} seconds")
        setattr(cfg, directive.field, parsed)           # there is one: check_directive_fields
    elif kind == "bool":
        parsed = parse_bool(value)
        if name == "nice_failback":
            cfg.auto_failback = "legacy"
            _warn(cfg, lineno, "nice_failback is obsolete; Heartbeat reads it as "
                               "'auto_failback legacy'. Use 'auto_failback on' instead")
        elif hasattr(cfg, name):
            setattr(cfg, name, parsed)
    elif kind == "int":
        if not is_number(value) or not directive.low <= int(value) <= directive.high:
            raise ValueError(f"{name} must be a whole number from {directive.low} to {directive.high}")
        if directive.in_ms or hasattr(cfg, name):
            setattr(cfg, directive.field, int(value))
    elif kind == "choice":
        word = value.lower()
        if name == "auto_failback" and word not in directive.choices:
            word = "on" if parse_bool(value) else "off"
        if word not in directive.choices:
            raise ValueError(f"{name} must be one of {', '.join(directive.choices)}")
        if name == "autojoin" and word == "any":
            raise ValueError("autojoin any cannot be used with haresources (Heartbeat refuses it too)")
        setattr(cfg, name, word)
    elif hasattr(cfg, name):
        setattr(cfg, name, value)


def parse_hacf(path: str) -> HaCf:
    """Read ha.cf as Heartbeat 3.0.6 does; raise ConfigErrors listing every problem."""
    cfg = HaCf(path=path)
    errors = []
    for lineno, text in config_lines(path):
        name, _, rest = text.replace("\t", " ").partition(" ")
        directive = DIRECTIVE_BY_NAME.get(name)
        if directive is None:
            hint = ""
            if name.lower() in DIRECTIVE_BY_NAME:
                hint = f" (directive names are case-sensitive: write '{name.lower()}')"
            errors.append(ConfigError(path, lineno, f"Illegal directive [{name}]{hint}"))
            continue
        rest = rest.strip()
        words = [w for w in re.split(r"[\s,]+", rest) if w]
        if name == "watchdog" and name in cfg.lines:
            errors.append(ConfigError(path, lineno, f"Watchdog device multiply specified (first at line "
                                                    f"{cfg.lines[name]}); keep one watchdog line"))
            continue
        cfg.lines[name] = lineno
        if name not in ("stonith", "stonith_host"):      # HA_* for scripts: no device password there
            cfg.values[name] = rest
        if directive.support == "refused":
            errors.append(ConfigError(path, lineno, f"'{name}' ({directive.meaning}) is not implemented "
                                      "by heartbeat.py; remove the line or use bcast, mcast or ucast"))
            continue
        if directive.support == "ignored":
            _warn(cfg, lineno, f"'{name}' ({directive.meaning}) has no effect in heartbeat.py; ignored")
        if directive.support == "crm":
            if name in ("crm", "pacemaker") and rest.lower() not in FALSE_WORDS:
                errors.append(ConfigError(path, lineno, f"'{name} {rest}' asks for Pacemaker's CRM; "
                                          f"heartbeat.py runs haresources mode only: set '{name} off' "
                                          "(or move with 'heartbeat.py export-pacemaker')"))
            elif name not in ("crm", "pacemaker"):
                _warn(cfg, lineno, f"'{name}' only means something with the CRM (Pacemaker); ignored")
            continue
        if not words and directive.kind != "line":
            errors.append(ConfigError(path, lineno, f"{name} needs a value"))
            continue
        if directive.kind == "nodes":
            for node in (w.lower() for w in words):
                if node in cfg.nodes:
                    _warn(cfg, lineno, f"node {node} is listed twice")
                else:
                    cfg.nodes.append(node)
        elif directive.kind == "media":
            errors.extend(ConfigError(path, lineno, p) for p in _parse_media(cfg, name, words, lineno))
        elif name in ("stonith", "stonith_host"):
            problem = _parse_stonith(cfg, name, rest, lineno)
            if problem:
                errors.append(ConfigError(path, lineno, problem))
        elif name in ("ping", "ping_group", "ping6"):
            errors.extend(ConfigError(path, lineno, p) for p in _parse_ping(cfg, name, words, lineno))
        elif name == "respawn":
            if len(words) < 2:
                errors.append(ConfigError(path, lineno, "respawn takes a user and a program: "
                                                        "respawn hacluster /usr/lib/heartbeat/ipfail"))
            elif os.path.basename(words[1]) == "ipfail":
                cfg.ipfail = True
            else:
                _warn(cfg, lineno, f"respawn {words[1]}: heartbeat.py runs no other programs (only ipfail, "
                                   "built in); make it a systemd service")
        elif name == "env":
            var, eq, val = rest.partition("=")
            if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                errors.append(ConfigError(path, lineno, "env takes NAME=VALUE"))
            else:
                cfg.env[var] = val
        elif directive.kind in ("text", "line"):
            if directive.kind == "text" and len(words) > 1:
                _warn(cfg, lineno, f"{name} takes one value; using the last, '{words[-1]}'")
            _apply_value(cfg, directive, words[-1] if words else "", lineno)
        else:
            for value in words:
                try:
                    _apply_value(cfg, directive, value, lineno)
                except ValueError as err:
                    errors.append(ConfigError(path, lineno, str(err)))
    _check_hacf(cfg, errors)
    if errors:
        raise ConfigErrors(errors)
    return cfg


def _check_hacf(cfg: HaCf, errors: List[ConfigError]):
    """Heartbeat's sanity checks on the whole file, with its words and the line."""
    path, line = cfg.path, cfg.lines.get
    if not cfg.media:
        errors.append(ConfigError(path, 0, "No heartbeat media defined (add e.g. 'bcast eth0')"))
    if not cfg.nodes:
        errors.append(ConfigError(path, 0, "no nodes defined (add a 'node NAME' line per cluster member, "
                                           "named as `uname -n` prints it)"))
    if not cfg.warntime_ms:
        cfg.warntime_ms = cfg.deadtime_ms // 2
    if cfg.deadtime_ms <= 2 * cfg.keepalive_ms:
        errors.append(ConfigError(path, line("deadtime", line("keepalive", 0)),
                                  f"Dead time [{cfg.deadtime_ms}] is too small compared to keepalive "
                                  f"[{cfg.keepalive_ms}]: deadtime must be more than twice keepalive"))
    if cfg.warntime_ms >= cfg.deadtime_ms and "warntime" in cfg.lines:
        _warn(cfg, line("warntime"), f"warntime ({cfg.warntime_ms} ms) is not below deadtime "
                                     f"({cfg.deadtime_ms} ms): no 'Late heartbeat' warning will come first")
    for ping in cfg.ping_nodes:
        if ping.name in cfg.nodes:
            errors.append(ConfigError(path, ping.lineno, f"ping node '{ping.name}' is also a cluster node"))
    if not cfg.deadping_ms:
        cfg.deadping_ms = cfg.deadtime_ms
    elif cfg.deadping_ms <= 2 * cfg.keepalive_ms:
        errors.append(ConfigError(path, line("deadping"), f"Ping dead time [{cfg.deadping_ms}] is too small "
                                  f"compared to keepalive [{cfg.keepalive_ms}]: deadping must be more than "
                                  "twice keepalive"))
    if not cfg.initdead_ms:
        if cfg.deadtime_ms > 10000:
            cfg.initdead_ms = cfg.deadtime_ms
        elif cfg.deadtime_ms < 6000:
            cfg.initdead_ms = 12000
        else:
            cfg.initdead_ms = 2 * cfg.deadtime_ms
    if cfg.initdead_ms < cfg.deadtime_ms:
        errors.append(ConfigError(path, line("initdead", 0), f"Initial dead time [{cfg.initdead_ms}] is "
                                  f"smaller than deadtime [{cfg.deadtime_ms}]"))
    elif cfg.initdead_ms < 10000:
        _warn(cfg, line("initdead", line("deadtime", 0)),
              f"Initial dead time [{cfg.initdead_ms} ms] may be too small! "
              "It should be >= deadtime and >= 10 seconds, for slow network start-up")
    if cfg.auto_failback == "legacy" and "nice_failback" not in cfg.lines:
        _warn(cfg, line("auto_failback", 0), "Deprecated 'legacy' auto_failback option selected. "
                                             "Please convert to 'auto_failback on'")
    if cfg.logfacility and "logfile" not in cfg.lines and "debugfile" not in cfg.lines:
        cfg.logfile = cfg.debugfile = None


def local_node_name(config_dir: str, override: Optional[str] = None) -> str:
    """This node's cluster name: --node, else DIR/nodeinfo, else `uname -n`; lower case."""
    if override:
        return override.lower()
    try:
        with open(os.path.join(config_dir, "nodeinfo"), encoding="utf-8", errors="replace") as handle:
            first = handle.readline().strip()
            if first:
                return first.lower()
    except OSError:
        pass
    return os.uname().nodename.lower()


# #### Config: authkeys ############################################################################

# The tutorial's keys, also in the shipped sample: anyone can forge packets signed with them.
PUBLIC_KEYS = {("sha1", "test-ha"), ("md5", "Hello!")}
CRC_RISK = "anyone on the network can forge heartbeat packets; use sha1 (heartbeat.py keygen --force)"


@dataclasses.dataclass
class AuthKeys:
    """authkeys: the index we sign with, and every configured index."""
    path: str
    active: int
    methods: Dict[int, Tuple[str, str]]     # index -> (method, key)
    warnings: List[ConfigError] = dataclasses.field(default_factory=list)
    lines: Dict[int, int] = dataclasses.field(default_factory=dict)     # index -> its line

    @property
    def method(self) -> str:
        return self.methods[self.active][0]


def read_keyfile(path: str) -> Tuple[bytes, os.stat_result]:
    """authkeys' bytes and the status of the very file they came from: one descriptor, never
    through a symlink, so nobody can swap the file between the check and the read."""
    def opener(name, flags):
        return os.open(name, flags | os.O_NOFOLLOW)
    try:
        with open(path, "rb", opener=opener) as handle:
            return handle.read(), os.fstat(handle.fileno())
    except OSError as err:
        reason = "it is a symbolic link, give the file itself" if err.errno == errno.ELOOP else err.strerror
        raise ConfigErrors([ConfigError(path, 0, f"Cannot open keyfile: {reason}. "
                                        "Create one with 'heartbeat.py keygen'")]) from None


def parse_authkeys(path: str, check_mode: bool = True) -> AuthKeys:
    """Read authkeys as Heartbeat does: `auth N`, then `N method [key]` lines. No message quotes a
    line: it may hold a key, and messages go to logs and syslog."""
    errors = []
    data, info = read_keyfile(path)
    mode = stat.S_IMODE(info.st_mode)
    if check_mode and mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        errors.append(ConfigError(path, 0, f"Bad permissions on keyfile (mode {mode:03o}): group or others "
                                  f"can read or change the key; fix with: chmod 600 {path}"))
    if check_mode and info.st_uid not in (0, os.geteuid()):
        errors.append(ConfigError(path, 0, f"Bad owner of keyfile (uid {info.st_uid}, not root): that "
                                  f"account can change the key; fix with: chown root {path}"))
    active, active_line = None, 0
    methods: Dict[int, Tuple[str, str]] = {}
    method_lines: Dict[int, int] = {}
    for lineno, text in text_lines(data, comment_anywhere=False):
        words = text.split()
        if text.startswith("a"):
            if len(words) < 2 or words[0] != "auth" or not is_number(words[1]):
                errors.append(ConfigError(path, lineno, "Invalid auth line: write 'auth N'"))
            else:
                active, active_line = int(words[1]), lineno
            continue
        if len(words) < 2 or not re.fullmatch(r"-?[0-9]+", words[0]):
            errors.append(ConfigError(path, lineno, "Auth line is invalid: write 'N method [key]', "
                                      "e.g. '1 sha1 SECRET'"))
            continue
        index, method = int(words[0]), words[1]
        key = words[2] if len(words) > 2 else ""
        if not 0 <= index <= MAX_AUTH_INDEX:
            errors.append(ConfigError(path, lineno, f"Invalid authnum [{index}]: use 0 to {MAX_AUTH_INDEX}"))
        elif method not in AUTH_METHODS_NEEDING_KEY:
            errors.append(ConfigError(path, lineno, "Invalid authtype: Heartbeat knows sha1, md5 and crc; "
                                      "heartbeat.py also sha256 and aes256gcm"))
        elif AUTH_METHODS_NEEDING_KEY[method] and not key:
            errors.append(ConfigError(path, lineno, f"Auth method [{method}] requires a key"))
        elif key and not AUTH_METHODS_NEEDING_KEY[method]:
            errors.append(ConfigError(path, lineno, f"Auth method [{method}] doesn't use a key: "
                                      f"write '{index} {method}'"))
        elif method not in HEARTBEAT_AUTH_METHODS and len(key.encode()) < NEW_KEY_MIN_BYTES:
            errors.append(ConfigError(path, lineno, f"the {method} key of index {index} is "
                                      f"{len(key.encode())} bytes: it needs {NEW_KEY_MIN_BYTES} or more; "
                                      f"make one with: heartbeat.py keygen --method {method} --force"))
        elif method == "aes256gcm" and extra_module("cryptography") is None:
            errors.append(ConfigError(path, lineno, f"aes256gcm needs the package cryptography, which "
                                      f"this Python cannot import: {extra_install_hint('cryptography')}. "
                                      "Nothing falls back to a weaker method"))
        else:
            methods[index] = (method, key)
            method_lines[index] = lineno
    if active is None:
        errors.append(ConfigError(path, 0, "Missing auth directive in keyfile: add 'auth N' naming "
                                  "the key to sign with"))
    elif active not in methods and not any(e.lineno == method_lines.get(active) for e in errors):
        errors.append(ConfigError(path, active_line, f"Auth Key [{active}] not found in keyfile"))
    if errors:
        raise ConfigErrors(errors)
    keys = AuthKeys(path, active, methods, lines=method_lines)
    if method_lines[active] < active_line:
        keys.warnings.append(ConfigError(path, active_line, "warning: Heartbeat 3.0.6 only honours "
                                         f"'auth {active}' when it comes before the line of key {active}"))
    return keys


def public_key_errors(keys: AuthKeys) -> List[ConfigError]:
    """A refusal at each line whose key is published (the tutorial's): it protects nothing."""
    return [ConfigError(keys.path, keys.lines.get(index, 0), f"key {index} is public (the tutorial's "
                        "sample): anyone can forge heartbeat packets with it; make a secret one "
                        "with: heartbeat.py keygen --force")
            for index, pair in sorted(keys.methods.items()) if pair in PUBLIC_KEYS]


def crc_warnings(keys: AuthKeys) -> List[ConfigError]:
    """A warning at each crc line: the daemon logs them at start and on every reload."""
    return [ConfigError(keys.path, keys.lines.get(index, 0), f"warning: key {index} uses crc: {CRC_RISK}")
            for index, (method, _) in sorted(keys.methods.items()) if method == "crc"]


# #### Config: haresources #########################################################################

RESOLVE_TIMEOUT_S = 3.0
IP_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(/|$)", re.ASCII)


@dataclasses.dataclass
class IPResource:
    """A virtual IP address, handled by heartbeat.py itself (IPaddr/IPaddr2, IPv6addr)."""
    spec: str                  # as written in haresources
    ip: str                    # normalised: IPv6 in its compressed form
    prefix: Optional[int] = None
    iface: Optional[str] = None
    broadcast: Optional[str] = None
    agent: str = "IPaddr"

    @property
    def version(self) -> int:
        return 6 if ":" in self.ip else 4

    def describe(self) -> str:
        parts = [f"{self.ip}/{self.prefix}" if self.prefix is not None else self.ip]
        parts.append(f"on {self.iface}" if self.iface else "interface found by subnet")
        if self.broadcast:
            parts.append(f"broadcast {self.broadcast}")
        return f"{self.agent} " + ", ".join(parts)


@dataclasses.dataclass
class ScriptResource:
    """A resource script: resource.d style (args then op) or LSB init.d (op then args)."""
    spec: str
    name: str
    args: List[str]
    path: str
    lsb: bool

    def describe(self) -> str:
        style = "LSB init script" if self.lsb else "resource.d script"
        args = (" with " + " ".join(self.args)) if self.args else ""
        return f"{self.path} ({style}){args}"


@dataclasses.dataclass
class ResourceGroup:
    """One haresources line: its home node and its resources, started in order."""
    home: str
    resources: list
    lineno: int

    @property
    def key(self) -> str:
        """Heartbeat's group key: the first resource, verbatim."""
        return self.resources[0].spec


def parse_ip_spec(spec: str, agent: str = "IPaddr") -> IPResource:
    """`a.b.c.d[/nn[/iface[/bcast]]]`, or `a.b.c.d/nn/bcast` (third part a number)."""
    parts = spec.split("/")
    if len(parts) > 4:
        raise ValueError(f"'{spec}' has too many '/' parts: write a.b.c.d/nn/iface/broadcast")
    try:
        ip = str(ipaddress.IPv4Address(parts[0]))
    except ValueError:
        raise ValueError(f"'{parts[0]}' is not an IPv4 address") from None
    res = IPResource(spec=spec, ip=ip, agent=agent)
    if len(parts) > 1 and parts[1]:
        if not is_number(parts[1]) or not 1 <= int(parts[1]) <= 32:
            raise ValueError(f"netmask bits '{parts[1]}' in '{spec}' must be a number from 1 to 32")
        res.prefix = int(parts[1])
    rest = parts[2:]
    if rest and rest[0] and is_number(rest[0][0]) and len(rest) == 1:
        rest = ["", rest[0]]             # a.b.c.d/nn/bcast
    if rest and rest[0]:
        if not IFACE_RE.match(rest[0]):
            raise ValueError(f"'{rest[0]}' in '{spec}' is not an interface name")
        res.iface = rest[0]
    if len(rest) > 1 and rest[1]:
        try:
            res.broadcast = str(ipaddress.IPv4Address(rest[1]))
        except ValueError:
            raise ValueError(f"broadcast '{rest[1]}' in '{spec}' is not an IPv4 address") from None
    return res


def parse_ipv6_spec(spec: str) -> IPResource:
    """IPv6addr's argument, split as 3.0.6's resource.d/IPv6addr wrapper splits it:
    `ADDR[/PREFIX[/IFACE]]` (the OCF agent's ipv6addr, cidr_netmask and nic)."""
    parts = spec.split("/")
    if len(parts) > 3:
        raise ValueError(f"'{spec}' has too many '/' parts: write IPv6addr::ADDR/PREFIX/IFACE")
    try:
        address = ipaddress.IPv6Address(parts[0])
    except ValueError:
        raise ValueError(f"'{parts[0]}' is not an IPv6 address") from None
    if address.is_multicast or address.is_unspecified or address.is_loopback or address.is_link_local:
        raise ValueError(f"{address} cannot be a virtual address (multicast, unspecified, loopback or link-local)")
    res = IPResource(spec=spec, ip=str(address), agent="IPv6addr")
    if len(parts) > 1 and parts[1] and parts[1] != "0":     # 0: the OCF agent's "from the matching address"
        if not is_number(parts[1]) or not 1 <= int(parts[1]) <= 128:
            raise ValueError(f"prefix length '{parts[1]}' in '{spec}' must be a number from 0 to 128")
        res.prefix = int(parts[1])
    if len(parts) > 2 and parts[2]:
        if not IFACE_RE.match(parts[2]):
            raise ValueError(f"'{parts[2]}' in '{spec}' is not an interface name")
        res.iface = parts[2]
    return res


def find_script(name: str, script_dirs: List[str]) -> Optional[str]:
    """Heartbeat's lookup: DIR/resource.d/NAME, then /etc/init.d/NAME, executable."""
    for directory in script_dirs:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def resolve_host(name: str, family: int = socket.AF_INET) -> Optional[str]:
    """The IPv4 (or with family AF_INET6, IPv6) address of a host name (e.g. the tutorial's
    `sigma`), or None."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", name):
        return None
    answer: List[Optional[str]] = [None]

    def lookup():
        try:
            answer[0] = str(ipaddress.ip_address(socket.getaddrinfo(name, None, family)[0][4][0]))
        except (OSError, UnicodeError, IndexError, ValueError):
            pass
    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)          # a dead DNS server must not hang `check`
    return answer[0]


def parse_resource(token: str, script_dirs: List[str], config_dir: str = ""):
    """One haresources word to an IPResource, a ScriptResource or an AgentResource (config_dir: where
    OCF::TYPE::INSTANCE finds conf/OCF); ValueError if none."""
    name, _, argtext = token.partition("::")
    args = argtext.split("::") if argtext else []
    if IP_RE.match(token):
        return parse_ip_spec(token)
    if name in ("IPaddr", "IPaddr2"):
        if len(args) != 1:
            raise ValueError(f"{name} takes one argument: {name}::a.b.c.d[/nn[/iface[/broadcast]]]")
        res = parse_ip_spec(args[0], agent=name)
        res.spec = token
        return res
    if name == "IPv6addr":           # 3.0.6 would split 2001:db8::10 at its "::" (see ipv6_warnings)
        if not argtext:
            raise ValueError("IPv6addr takes one argument: IPv6addr::ADDR/PREFIX[/IFACE]")
        res = parse_ipv6_spec(argtext)
        res.spec = token
        return res
    script_name = re.fullmatch(r"[A-Za-z0-9_.+@-]+", name) and not name.startswith(".")
    path = find_script(name, script_dirs) if script_name else None
    if path:             # a script wins: Heartbeat's own resource.d, drbd-utils' drbddisk, an init script
        return ScriptResource(token, name, args, path, lsb=os.path.dirname(path) != script_dirs[0])
    agent = agent_resource(token, config_dir)
    if agent:
        return agent
    if not script_name:
        raise ValueError(f"'{name}' is not a resource script name")
    address = None if args else resolve_host(name)
    if address:
        res = parse_ip_spec(address)
        res.spec = token
        return res
    raise ValueError(f"Cannot locate resource script {name} (looked in {' and '.join(script_dirs)}; "
                     "it is not an IP address or a host name that resolves either)")


def ipv6_without_gaps(ip: str) -> str:
    """2001:db8::10 as 2001:db8:0:0:0:0:0:10: the form Heartbeat 3.0.6's haresources can carry."""
    return ":".join(f"{int(group, 16):x}" for group in ipaddress.IPv6Address(ip).exploded.split(":"))


def ipv6_warnings(path: str, groups: List[ResourceGroup]) -> List[ConfigError]:
    """Heartbeat 3.0.6 splits a resource's arguments at every "::", so it passes IPv6addr::2001:db8::10/64
    to its IPv6addr script as two arguments and the start fails; heartbeat.py reads it whole. For a
    cluster with a 3.0.6 node the address must be written without "::" (2001:db8:0:0:0:0:0:10)."""
    return [ConfigError(path, group.lineno, f"warning: {res.spec}: Heartbeat 3.0.6 splits arguments at '::' "
                        f"and cannot start it; write {ipv6_without_gaps(res.ip)} (no '::') "
                        "if a 3.0.6 node shares this file")
            for group in groups for res in group.resources
            if isinstance(res, IPResource) and res.agent == "IPv6addr" and "::" in res.spec.partition("::")[2]]


def parse_haresources(path: str, nodes: List[str], script_dirs: List[str]) -> List[ResourceGroup]:
    """Read haresources: `home resource...` per line, `\\` continues a line."""
    errors, groups, logical = [], [], []
    pending, start = "", 0
    for lineno, text in config_lines(path):
        if not pending:
            start = lineno
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        logical.append((start, pending + text))
        pending = ""
    if pending.strip():
        logical.append((start, pending))
    seen: Dict[str, int] = {}
    for lineno, text in logical:
        words = text.split()
        home = words[0].lower()
        if nodes and home not in nodes:
            errors.append(ConfigError(path, lineno, f"home node '{home}' is not a node in ha.cf "
                                      f"(nodes: {', '.join(nodes)})"))
        if len(words) < 2:
            errors.append(ConfigError(path, lineno, f"group for {home} lists no resources"))
            continue
        resources = []
        for token in words[1:]:
            try:
                resource = parse_resource(token, script_dirs, os.path.dirname(path))
            except ValueError as err:
                errors.append(ConfigError(path, lineno, str(err)))
                continue
            ident = resource.ip if isinstance(resource, IPResource) else token
            if ident in seen:
                errors.append(ConfigError(path, lineno, f"{token} is already a resource at line {seen[ident]}: "
                                          "a resource can belong to one group only"))
            seen[ident] = lineno
            resources.append(resource)
        if len(resources) == len(words) - 1:
            groups.append(ResourceGroup(home, resources, lineno))
    if errors:
        raise ConfigErrors(errors)
    return groups


# #### Config: OCF resource agents (3.0.6's resource.d names, OCF::TYPE::INSTANCE, ocf:) ############
# Heartbeat 3.0.6 ran most of its resource.d scripts as thin wrappers (sourcing hto-mapfuncs) around
# the OCF agents of resource-agents: each maps its positional `::` arguments to OCF_RESKEY_ names,
# sets OCF_RESOURCE_INSTANCE and runs /usr/lib/ocf/resource.d/heartbeat/NAME. heartbeat.py does the
# same mapping itself, so those haresources words keep working without Heartbeat's package.

OCF_ROOT = "/usr/lib/ocf"
RESOURCE_AGENTS_HINT = ("install the resource-agents package (Debian, Ubuntu: apt install resource-agents; "
                        "RHEL, Fedora: dnf install resource-agents)")
METADATA_TIMEOUT_S = 10.0
OCF_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)           # a provider or an agent
OCF_PARAMETER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
RESKEY_PREFIX = "OCF_RESKEY_"
SECRET_NAME_RE = re.compile(r"pass(wd|word)?|secret|token|(^|_)key$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Wrapper:
    """One of 3.0.6's resource.d wrappers, read from its script: which OCF_RESKEY_ names its
    arguments fill, in order; how many arguments it accepts; the OCF_RESOURCE_INSTANCE it sets
    ({name}: that parameter's value, empty when absent); what it gives the agent when an argument is
    left out (defaults), and what it only names the instance with (instance_defaults)."""
    params: Tuple[str, ...]
    counts: Tuple[int, ...]         # argument counts it accepts; empty: any
    instance: str
    usage: str
    defaults: Tuple[Tuple[str, str], ...] = ()
    instance_defaults: Tuple[Tuple[str, str], ...] = ()


HEARTBEAT_WRAPPERS = {      # IPaddr, IPaddr2 and IPv6addr are heartbeat.py's own; OCF is OCF::TYPE::INSTANCE
    "AudibleAlarm": Wrapper(("nodelist",), (), "AudibleAlarm", "AudibleAlarm[::NODE...]"),
    "Delay": Wrapper(("startdelay", "stopdelay"), (0, 1, 2), "Delay_{startdelay}",      # 10 unexported: the
                     "Delay[::STARTDELAY[::STOPDELAY]]", instance_defaults=(("startdelay", "10"),)),  # agent's 20
    "Filesystem": Wrapper(("device", "directory", "fstype", "options"), (2, 3, 4), "Filesystem_{device}",
                          "Filesystem::DEVICE::DIRECTORY[::FSTYPE[::OPTIONS]]"),
    "ICP": Wrapper(("driveid", "device"), (2,), "ICP_{driveid}", "ICP::DRIVEID::DEVICE"),
    "IPsrcaddr": Wrapper(("ipaddress",), (1,), "IPsrcaddr", "IPsrcaddr::IPADDRESS"),
    "LVM": Wrapper(("volgrpname",), (1,), "LVM", "LVM::VOLUMEGROUP"),
    "LinuxSCSI": Wrapper(("scsi",), (1,), "LinuxSCSI_{scsi}", "LinuxSCSI::HOST:CHANNEL:TARGET[:LUN]"),
    "MailTo": Wrapper(("email", "subject"), (1, 2), "MailTo", "MailTo::EMAIL[::SUBJECT]"),
    "Raid1": Wrapper(("raidconf", "raiddev"), (2,), "Raid1_{raidconf}", "Raid1::RAIDCONF::MDDEVICE"),
    "SendArp": Wrapper(("ip", "nic"), (1,), "SendArp_{ip}", "SendArp::IP/INTERFACE"),
    "ServeRAID": Wrapper(("serveraid", "mergegroup"), (2,), "ServeRAID_{serveraid}",
                         "ServeRAID::ADAPTER::MERGEGROUP"),
    "WAS": Wrapper(("config", "port"), (0, 1), "WAS", "WAS[::CONFIGFILE or ::PORT]"),
    "WinPopup": Wrapper(("hostfile",), (0, 1), "WinPopup", "WinPopup[::HOSTFILE]",
                        defaults=(("hostfile", "hosts"),)),
    "Xinetd": Wrapper(("service",), (1,), "Xinetd", "Xinetd::SERVICE"),
    "apache": Wrapper(("configfile",), (0, 1), "apache_{configfile}", "apache[::CONFIGFILE]"),
    "db2": Wrapper(("instance",), (1,), "db2_{instance}", "db2::INSTANCE_OWNER"),
    "ids": Wrapper(("informixdir", "informixserver", "onconfig"), (0, 3), "ids_{informixserver}",
                   "ids[::INFORMIXDIR::INFORMIXSERVER::ONCONFIG]"),
    "portblock": Wrapper(("protocol", "portno", "action"), (3,), "portblock_{protocol}_{portno}_{action}",
                         "portblock::tcp|udp::PORTS::block|unblock"),
}


@dataclasses.dataclass(frozen=True)
class AgentMetadata:
    """What an agent's `meta-data` says: its parameters (name -> required), its actions and the
    timeouts it advertises for them."""
    parameters: Dict[str, bool]
    actions: Tuple[str, ...]
    timeouts_ms: Dict[str, int]


@dataclasses.dataclass
class AgentResource:
    """A resource run by an OCF agent of resource-agents: a 3.0.6 resource.d name
    (Filesystem::/dev/drbd0::/data::ext4), OCF::TYPE::INSTANCE or ocf:PROVIDER:AGENT::name=value."""
    spec: str
    name: str                   # the word before "::", which a `monitor` line names
    provider: str
    agent: str                  # OCF_RESOURCE_TYPE
    params: Dict[str, str]      # without the OCF_RESKEY_ prefix, in the order given
    instance: str               # OCF_RESOURCE_INSTANCE
    path: str
    metadata: AgentMetadata

    @property
    def kind(self) -> str:
        return f"ocf:{self.provider}:{self.agent}"

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"OCF agent {self.path} (instance {self.instance})" + (f" with {params}" if params else "")


ServiceResource = Union[ScriptResource, AgentResource]     # what a `monitor` line can watch


def agent_path(provider: str, agent: str) -> str:
    return os.path.join(OCF_ROOT, "resource.d", provider, agent)


def read_agent_metadata(path: str) -> AgentMetadata:
    """Run the agent's meta-data action and read its XML; ValueError saying what went wrong."""
    import xml.etree.ElementTree as ElementTree
    result = run_command([path, "meta-data"], METADATA_TIMEOUT_S, dict(os.environ, OCF_ROOT=OCF_ROOT))
    start = result.output.find("<?xml")
    start = result.output.find("<resource-agent") if start < 0 else start
    if result.returncode != 0 or start < 0:
        raise ValueError(f"{path} meta-data failed (exit {result.returncode}): "
                         f"{result.output.strip()[-QUOTED_CHARS:]}")
    try:
        root = ElementTree.fromstring(result.output[start:])   # noqa: S314 - from an agent we run as root anyway
    except ElementTree.ParseError as err:
        raise ValueError(f"{path} meta-data is not XML ({err})") from None
    parameters = {p.get("name", ""): p.get("required", "0") == "1" for p in root.iter("parameter")}
    timeouts = {}
    for action in root.iter("action"):
        try:
            timeouts.setdefault(action.get("name", ""), parse_duration_ms(action.get("timeout", "")))
        except ValueError:
            pass                    # no timeout advertised: ours applies
    return AgentMetadata(parameters, tuple(a.get("name", "") for a in root.iter("action")), timeouts)


def installed_agent(provider: str, agent: str, why: str) -> Tuple[str, AgentMetadata]:
    """The agent's path and meta-data; ValueError naming the package when it is missing."""
    path = agent_path(provider, agent)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path, read_agent_metadata(path)
    if not os.path.isdir(os.path.dirname(agent_path("heartbeat", agent))):
        raise ValueError(f"{why} needs the OCF agent {path}, which is not installed: {RESOURCE_AGENTS_HINT}")
    raise ValueError(f"{why}: there is no OCF agent {path} (see ls {os.path.dirname(path)})")


def wrapper_params(name: str, wrapper: Wrapper, args: List[str]) -> Dict[str, str]:
    """The agent's parameters from a 3.0.6 resource.d name's arguments, as its wrapper sets them."""
    if wrapper.counts and len(args) not in wrapper.counts:
        given = f"{len(args)} argument{'' if len(args) == 1 else 's'}"
        raise ValueError(f"{name} takes {wrapper.usage} ({given} given; 3.0.6's resource.d/{name} refuses it too)")
    params = dict(wrapper.defaults)
    if name == "AudibleAlarm":              # every argument: one node of the list (empty: none)
        params["nodelist"] = " ".join(args)
    elif name == "SendArp":                 # IP/INTERFACE, one argument
        ip, _, nic = args[0].partition("/")
        if not ip or not nic:
            raise ValueError(f"SendArp takes {wrapper.usage}: '{args[0]}' has no /INTERFACE")
        params.update(ip=ip, nic=nic)
    elif name == "WAS" and args:            # a configuration file, or else a port number
        is_file = os.path.isfile(args[0])
        if not is_file and not is_number(args[0]):
            raise ValueError(f"WAS: {args[0]} is neither a WAS configuration file nor a valid port number")
        params["config" if is_file else "port"] = args[0]
    else:
        params.update((key, value) for key, value in zip(wrapper.params, args) if value)
    return params


def wrapper_instance(wrapper: Wrapper, params: Dict[str, str]) -> str:
    """The wrapper's OCF_RESOURCE_INSTANCE: Filesystem_{device} -> Filesystem_/dev/drbd0."""
    values = {**dict(wrapper.instance_defaults), **params}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), ""), wrapper.instance)


def instance_file_params(path: str) -> Dict[str, str]:
    """DIR/conf/OCF/TYPE/INSTANCE: `OCF_RESKEY_name=value` lines (shell quoting, # comments), which
    3.0.6's resource.d/OCF sources and exports; heartbeat.py reads them and runs no shell code."""
    import shlex
    params: Dict[str, str] = {}
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ValueError(f"cannot read the instance file {path}: {err.strerror}") from None
    for lineno, text in text_lines(data):
        try:
            words = shlex.split(text, comments=True)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
        name, eq, value = words[0].partition("=") if len(words) == 1 else ("", "", "")
        if not eq or not name.startswith(RESKEY_PREFIX) or not OCF_PARAMETER_RE.fullmatch(name):
            raise ValueError(f"{path}:{lineno}: write one OCF_RESKEY_name=value per line "
                             "(heartbeat.py runs no shell code from instance files)")
        params[name[len(RESKEY_PREFIX):]] = value
    return params


def agent_resource(token: str, config_dir: str) -> Optional[AgentResource]:
    """An OCF agent for a haresources word: a 3.0.6 resource.d name, OCF::TYPE::INSTANCE or
    ocf:PROVIDER:AGENT::name=value...; None when the word is none of them; ValueError if it is one,
    badly written or with its agent missing."""
    name, _, argtext = token.partition("::")
    args = argtext.split("::") if argtext else []
    if name in HEARTBEAT_WRAPPERS:
        wrapper = HEARTBEAT_WRAPPERS[name]
        params = wrapper_params(name, wrapper, args)
        path, metadata = installed_agent("heartbeat", name, f"{name} (3.0.6's resource.d/{name})")
        return checked_agent(AgentResource(token, name, "heartbeat", name, params,
                                           wrapper_instance(wrapper, params), path, metadata))
    if name == "OCF":
        if len(args) != 2 or not all(OCF_NAME_RE.fullmatch(a) for a in args):
            raise ValueError("OCF takes OCF::TYPE::INSTANCE (the agent, and the name of its instance file "
                             "in conf/OCF/TYPE/)")
        agent, instance = args
        providers = sorted(p for p in os.listdir(os.path.join(OCF_ROOT, "resource.d"))
                           if os.access(agent_path(p, agent), os.X_OK)) \
            if os.path.isdir(os.path.join(OCF_ROOT, "resource.d")) else []
        # 3.0.6 looks in ${OCF_AGENTS}/*/TYPE, with OCF_AGENTS a provider's directory: one level too deep
        path, metadata = installed_agent(providers[0] if providers else "heartbeat", agent, token)
        try:
            params = instance_file_params(os.path.join(config_dir, "conf", "OCF", agent, instance))
        except ValueError as err:
            raise ValueError(f"{token}: {err}") from None
        return checked_agent(AgentResource(token, name, os.path.basename(os.path.dirname(path)), agent,
                                           params, instance, path, metadata))
    if name.startswith("ocf:"):
        _, provider, agent = (name.split(":") + ["", ""])[:3]
        if name.count(":") != 2 or not OCF_NAME_RE.fullmatch(provider) or not OCF_NAME_RE.fullmatch(agent):
            raise ValueError(f"'{name}' is not ocf:PROVIDER:AGENT (e.g. ocf:heartbeat:Filesystem)")
        params = {}
        for arg in args:
            key, eq, value = arg.partition("=")
            if not eq or not OCF_PARAMETER_RE.fullmatch(key):
                raise ValueError(f"'{arg}' in {token} is not name=value (write {name}::name=value::name=value)")
            if key in params:
                raise ValueError(f"{key} is given twice in {token}")
            params[key] = value
        path, metadata = installed_agent(provider, agent, name)
        instance = f"{agent}_{next(iter(params.values()))}" if params else agent
        return checked_agent(AgentResource(token, name, provider, agent, params, instance, path, metadata))
    return None


def checked_agent(res: AgentResource) -> AgentResource:
    """The resource if its parameters are the agent's, with the required ones given; ValueError if not.
    A 3.0.6 resource.d name is held to its wrapper's argument counts instead: Filesystem's wrapper
    leaves FSTYPE optional, the agent's meta-data says required, and the agent mounts without it."""
    known = res.metadata.parameters
    unknown = [key for key in res.params if key not in known]
    if unknown:
        raise ValueError(f"{res.spec}: {res.kind} has no parameter {', '.join(unknown)} "
                         f"(its parameters: {', '.join(known) or 'none'})")
    if res.name in HEARTBEAT_WRAPPERS:
        return res
    missing = [key for key, required in known.items() if required and key not in res.params]
    if missing:
        raise ValueError(f"{res.spec}: {res.kind} requires {', '.join(missing)}")
    return res


def agent_warnings(path: str, groups: List[ResourceGroup]) -> List[ConfigError]:
    """What a 3.0.6 peer cannot run, and secrets written where the log and `status` show them."""
    found = []
    for group in groups:
        for res in group.resources:
            if not isinstance(res, AgentResource):
                continue
            if res.name.startswith("ocf:"):
                found.append(ConfigError(path, group.lineno, f"warning: {res.spec}: Heartbeat 3.0.6 cannot run "
                                         f"{res.name} (it knows its resource.d names only): every node of this "
                                         "cluster must run heartbeat.py"))
            if res.name == "OCF":
                found.append(ConfigError(path, group.lineno, f"warning: {res.spec}: Heartbeat 3.0.6 as Debian "
                                         "ships it cannot run OCF::TYPE::INSTANCE (its resource.d/OCF looks for "
                                         "the agent one directory too deep and sets no OCF_ROOT): every node of "
                                         "this cluster must run heartbeat.py"))
            secrets = [key for key in res.params if SECRET_NAME_RE.search(key)]
            if secrets and res.name != "OCF":
                found.append(ConfigError(path, group.lineno, f"warning: {res.spec}: haresources words appear "
                                         f"in the log and in status; put {', '.join(secrets)} in an "
                                         f"OCF::TYPE::INSTANCE file (conf/OCF/{res.agent}/NAME, mode 0600) instead"))
            instance_file = os.path.join(os.path.dirname(path), "conf", "OCF", res.agent, res.instance)
            if secrets and res.name == "OCF" and os.stat(instance_file).st_mode & 0o077:
                found.append(ConfigError(instance_file, 0, f"warning: it holds {', '.join(secrets)} and others can "
                                         f"read it: chmod 600 {instance_file}"))
    return found


# #### Config: heartbeat.py.cf, the settings Heartbeat never had ###################################

SETTINGS_FILE = "heartbeat.py.cf"      # beside ha.cf; Heartbeat 3.0.6 never reads it
DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|msec|us|usec|s|sec|m|min|h|hr)?$", re.ASCII)
DURATION_UNITS_MS = {"ms": 1.0, "msec": 1.0, "us": 0.001, "usec": 0.001, "s": 1000.0, "sec": 1000.0,
                     "m": 60000.0, "min": 60000.0, "h": 3600000.0, "hr": 3600000.0}
INFINITY_WORDS = ("infinity", "inf")


def parse_duration_ms(text: str) -> int:
    """Heartbeat's times (2, 0.5, 1500ms) and Pacemaker's suffixes (10s, 5min, 1h)."""
    match = DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a time (write e.g. 10s, 1500ms, 5min or 1h)")
    return whole_ms(match.group(1), DURATION_UNITS_MS[match.group(2) or "s"], text)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One heartbeat.py.cf directive: `name OPERAND [option=value]...`. Each option is a
    Directive (kind time or int; low/high bound the value, in ms for times; an int option with
    choices=INFINITY_WORDS also takes INFINITY, read as 0)."""
    name: str
    operand: str
    meaning: str
    options: Tuple[Directive, ...] = ()
    secret: bool = False          # no message quotes its words: one may be a password written by mistake


MIN_PBKDF2_ITERATIONS = 10000       # below, a stolen hash is cheap to crack
MAX_PBKDF2_ITERATIONS = 10000000    # above, one check takes seconds of a core
PBKDF2_DEFAULT_ITERATIONS = 600000  # OWASP's 2023 advice for PBKDF2-HMAC-SHA256
PBKDF2_PREFIX = "pbkdf2_sha256"

MAX_PROCESS_QUORUM = 100000       # processes of one name a watch may ask for (pid_max is 4194304 at most)
MAX_PROCESS_DELAY_MS = 3600000    # a process watch's delay: a service may be short of processes that long
TASK_COMM_CHARS = 15              # the kernel's TASK_COMM_LEN (16), NUL included: /proc/PID/comm's length

MONITOR_OPTIONS = (
    Directive("interval", "time", "10s", "time between two status checks", low=100, high=86400000),
    Directive("timeout", "time", "20s", "a status check still running then is killed and counts as failed",
              low=100, high=86400000),
    Directive("fall", "int", "1", "consecutive failed checks that make one failure", low=1, high=100),
    Directive("migration-threshold", "int", "3", "failures here that move the group to the peer (below it: "
              "restarted in place; INFINITY: never moved)", low=1, high=1000000, choices=INFINITY_WORDS),
    Directive("failure-timeout", "time", "10min", "quiet time after which the failure count clears "
              "(0: never)", low=0, high=86400000 * 365),
    Directive("OCF_CHECK_LEVEL", "int", "0", "an OCF agent's monitor depth, as in Pacemaker (0, 10, 20: "
              "deeper checks where the agent has them)", low=0, high=1000),
    Directive("process", "text", "", "instead of running `status`: watch the processes of this name (as keepalived's "
              "track_process: /proc/PID/comm, at most 15 characters), each through a pidfd, acted on the moment "
              "one exits; interval is then a safety rescan of /proc, timeout how long one may sit in D state "
              "(uninterruptible, not switching) before it counts as hung"),
    Directive("cmdline", "bool", "no", "with process: match the command as run (argv[0] of /proc/PID/cmdline, e.g. "
              "/usr/sbin/nginx, not cut to 15 characters) instead of comm"),
    Directive("quorum", "int", "1", "with process: fewer matching processes than this (zombies and hung ones not "
              "counted) is a failure", low=1, high=MAX_PROCESS_QUORUM),
    Directive("quorum_max", "int", "INFINITY", "with process: more matching processes than this is a failure too",
              low=1, high=MAX_PROCESS_QUORUM, choices=INFINITY_WORDS),
    Directive("delay", "time", "0", "with process: how long the count may stay outside quorum..quorum_max before "
              "that is a failure (a supervisor that respawns a worker in time is no failure)", low=0,
              high=MAX_PROCESS_DELAY_MS),
)
SETTINGS = [
    Setting("link_watch", "on|off", "watch this node's links and addresses through rtnetlink (default on): "
            "a held address that disappears is added back, one whose interface loses carrier goes to the peer"),
    Setting("fence_delay", "TIME", "with STONITH: how long a node that holds no group waits (at most 10min) before it "
            "resets its peer (default 0), so that in a partition the active node wins the race and keeps serving"),
    Setting("monitor", "RESOURCE", "watch a script or OCF agent resource of haresources (its name, the word "
            "before `::`): its `status` (an agent's `monitor`, timeout by default the one the agent advertises) "
            "every interval, or with process=NAME its processes (the kernel tells of each exit through a pidfd), "
            "restarted in place on failure, its group moved to the peer after migration-threshold failures",
            MONITOR_OPTIONS),
    Setting("http_listen", "[ADDRESS:]PORT|off", "serve /metrics (Prometheus) and a read-only status page on "
            "this address (default off; a bare port listens on 127.0.0.1 only; [::1]:PORT for IPv6)"),
    Setting("notify_timeout", "TIME", "how long a notify.d hook may run before it is killed (default 30s; 1s to "
            "10min); hooks are the executables in DIR/notify.d, called on every event"),
    Setting("http_allow", "NETWORK[,NETWORK...]|any", "the addresses http_listen answers (default any): networks "
            "and addresses, e.g. 10.0.0.0/8,192.168.1.5,::1; a connection from any other is closed unanswered"),
    Setting("http_tls_cert", "FILE", "serve http_listen over TLS with this certificate chain (PEM; with "
            "http_tls_key; default off: plain HTTP)"),
    Setting("http_tls_key", "FILE", "the certificate's private key (PEM), a file no user but root may read"),
    Setting("http_basic_auth", "USER:HASH", "answer only USER with the password of HASH, a PBKDF2-SHA256 hash "
            "made by `heartbeat.py hash-password USER` (pbkdf2_sha256$ITERATIONS$SALT$HASH, Django's format; "
            f"{MIN_PBKDF2_ITERATIONS} to {MAX_PBKDF2_ITERATIONS} iterations); never the password itself", secret=True),
]
SETTING_BY_NAME = {s.name: s for s in SETTINGS}


def parse_listen(text: str) -> Optional[Tuple[str, int]]:
    """`off`, `PORT` (127.0.0.1), `ADDRESS:PORT` or `[IPv6]:PORT` -> (address, port) or None."""
    if text.lower() in FALSE_WORDS:
        return None
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not is_number(port) or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not [ADDRESS:]PORT with a port from 1 to 65535 (e.g. 127.0.0.1:9694)")
    try:
        address = str(ipaddress.ip_address(host or "127.0.0.1"))
    except ValueError:
        raise ValueError(f"'{host}' is not an IP address (write 0.0.0.0:{port} for every IPv4 address, "
                         f"[::]:{port} for every address)") from None
    return address, int(port)


def parse_networks(text: str) -> tuple:
    """`any` or NETWORK[,NETWORK...] (an address is a network of one) -> the networks; () for any."""
    if text.lower() == "any":
        return ()
    networks = []
    for word in text.split(","):
        try:
            networks.append(ipaddress.ip_network(word.strip(), strict=False))
        except ValueError:
            raise ValueError(f"'{word}' is not a network or an address (write e.g. 10.0.0.0/8,192.168.1.5,::1, "
                             "or any)") from None
    return tuple(networks)


def source_allowed(source: str, networks: tuple) -> bool:
    """Whether an address (an IPv4 one as [::]'s socket shows it, ::ffff:a.b.c.d, too) is in networks."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def pem_file(text: str, private: bool = False) -> str:
    """A certificate's or (private) a key's file: it must be there, and a key readable by root alone."""
    try:
        info = os.stat(text)
    except OSError as err:
        raise ValueError(f"cannot read {text}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{text} is not a file")
    if private and (info.st_mode & stat.S_IROTH or info.st_mode & stat.S_IRGRP and info.st_gid != 0):
        who = "every user" if info.st_mode & stat.S_IROTH else f"group {info.st_gid}"
        raise ValueError(f"{text} is readable by {who} (mode {stat.S_IMODE(info.st_mode):03o}): a private key must "
                         f"be root's alone; chmod 600 {text}")
    return text


def parse_basic_auth(text: str) -> Tuple[str, str]:
    """USER:pbkdf2_sha256$ITERATIONS$SALT$HASH -> (user, hash). No message quotes the text: a
    password written there by mistake must not reach a log."""
    user, colon, hashed = text.partition(":")
    how = "write USER:HASH with a HASH from `heartbeat.py hash-password USER`, never the password itself"
    if not user or not colon:
        raise ValueError(how)
    fields = hashed.split("$")
    if len(fields) != 4 or fields[0] != PBKDF2_PREFIX or not fields[2]:
        raise ValueError(f"the value after {user}: is not a {PBKDF2_PREFIX}$ITERATIONS$SALT$HASH hash; {how}")
    if not is_number(fields[1]) or not MIN_PBKDF2_ITERATIONS <= int(fields[1]) <= MAX_PBKDF2_ITERATIONS:
        raise ValueError(f"the hash's iterations must be from {MIN_PBKDF2_ITERATIONS} to {MAX_PBKDF2_ITERATIONS}")
    try:
        if len(base64.b64decode(fields[3], validate=True)) != 32:
            raise ValueError
    except ValueError:
        raise ValueError(f"the hash's last field is not 32 bytes of base64; {how}") from None
    return user, hashed


def password_hash(password: str, iterations: int = PBKDF2_DEFAULT_ITERATIONS, salt: str = "") -> str:
    """pbkdf2_sha256$ITERATIONS$SALT$HASH of a password (Django's format)."""
    import hashlib
    salt = salt or base64.b64encode(os.urandom(12)).decode().replace("+", ".").replace("/", "_")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{PBKDF2_PREFIX}${iterations}${salt}${base64.b64encode(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    """Whether password is the one of a parse_basic_auth hash (slow on purpose: run it off the loop)."""
    import hmac
    _, iterations, salt, _ = hashed.split("$")
    return hmac.compare_digest(password_hash(password, int(iterations), salt), hashed)


def tls_context(cert: str, key: str):
    """The server's ssl.SSLContext (TLS 1.2 at least) for a certificate chain and its key; ValueError why not."""
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"cannot use {cert} with {key}: {getattr(err, 'reason', None) or err.strerror or err}") \
            from None
    return context


MAX_FENCE_DELAY_MS = 600000         # a node holding nothing waits that long to fence, and only then takes over
MIN_NOTIFY_TIMEOUT_MS = 1000        # a hook needs time to start at all: 0 killed every hook as it began
MAX_NOTIFY_TIMEOUT_MS = 600000      # hooks run one at a time: one stuck that long holds back the next events


def duration_within(low_ms: int, high_ms: int, why: str) -> Callable[[str], int]:
    """A parser of one heartbeat.py.cf time from low_ms to high_ms: ValueError outside, saying why."""
    def parse(text: str) -> int:
        ms = parse_duration_ms(text)
        if not low_ms <= ms <= high_ms:
            raise ValueError(f"'{text}' must be from {format_duration(low_ms) if low_ms else 0} to "
                             f"{format_duration(high_ms)} ({why})")
        return ms
    return parse


SINGLE_VALUE_SETTINGS = {                                    # name -> (Settings field, parser); each once a file
    "link_watch": ("link_watch", parse_bool),
    "fence_delay": ("fence_delay_ms", duration_within(0, MAX_FENCE_DELAY_MS, "until then a node that holds no group "
                                                      "neither fences nor takes over")),
    "http_listen": ("http_listen", parse_listen),
    "notify_timeout": ("notify_timeout_ms", duration_within(MIN_NOTIFY_TIMEOUT_MS, MAX_NOTIFY_TIMEOUT_MS,
                                                            "a hook needs a moment to start; hooks run one at a "
                                                            "time, so a stuck one holds back the next events")),
    "http_allow": ("http_allow", parse_networks),
    "http_tls_cert": ("http_tls_cert", pem_file),
    "http_tls_key": ("http_tls_key", lambda text: pem_file(text, private=True)),
    "http_basic_auth": ("http_basic_auth", parse_basic_auth)}


def option_value(option: Directive, text: str) -> Union[int, str, bool]:
    """One option=value of a heartbeat.py.cf line as a number (ms for times), a word or a boolean;
    ValueError why not."""
    if option.kind == "text":
        return text
    if option.kind == "bool":
        try:
            return parse_bool(text)
        except ValueError:
            raise ValueError(f"{option.name} must be yes or no") from None
    if option.kind == "time":
        try:
            ms = parse_duration_ms(text)
        except ValueError as err:
            raise ValueError(f"{option.name}: {err}") from None
        if not option.low <= ms <= option.high:
            raise ValueError(f"{option.name} must be from {format_duration(option.low) if option.low else 0} "
                             f"to {format_duration(option.high)}")
        return ms
    if text.lower() in option.choices:
        return 0
    if not is_number(text) or not option.low <= int(text) <= option.high:
        also = " or INFINITY" if option.choices else ""
        raise ValueError(f"{option.name} must be a whole number from {option.low} to {option.high}{also}")
    return int(text)


def option_field(option: Directive) -> str:
    """The attribute an option fills: `failure-timeout` -> failure_timeout_ms, OCF_CHECK_LEVEL -> ocf_check_level."""
    return option.name.replace("-", "_").lower() + ("_ms" if option.kind == "time" else "")


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """A `monitor` line: which resource, in which group, and its MONITOR_OPTIONS."""
    name: str                 # as written in heartbeat.py.cf
    resource: str             # the resource as written in haresources (e.g. webserver::8080)
    group: str                # its group's key
    lineno: int
    interval_ms: int
    timeout_ms: int
    fall: int
    migration_threshold: int  # 0: INFINITY, never moved
    failure_timeout_ms: int   # 0: failures never clear by themselves
    ocf_check_level: int      # an OCF agent's monitor depth
    process: str = ""         # a process watch: the processes' name (comm, or argv[0] with cmdline); "": status
    cmdline: bool = False
    quorum: int = 1
    quorum_max: int = 0       # 0: INFINITY, no maximum
    delay_ms: int = 0

    def describe(self) -> str:
        threshold = self.migration_threshold or "INFINITY"
        clears = format_duration(self.failure_timeout_ms) if self.failure_timeout_ms else "0 (never)"
        depth = f" OCF_CHECK_LEVEL={self.ocf_check_level}" if self.ocf_check_level else ""
        if self.process:
            return (f"monitor {self.name} process={self.process}{' cmdline=yes' if self.cmdline else ''} "
                    f"quorum={self.quorum} quorum_max={self.quorum_max or 'INFINITY'} "
                    f"delay={format_duration(self.delay_ms) if self.delay_ms else 0} "
                    f"interval={format_duration(self.interval_ms)} timeout={format_duration(self.timeout_ms)} "
                    f"migration-threshold={threshold} failure-timeout={clears}")
        return (f"monitor {self.name} interval={format_duration(self.interval_ms)} "
                f"timeout={format_duration(self.timeout_ms)} fall={self.fall} "
                f"migration-threshold={threshold} failure-timeout={clears}{depth}")


@dataclasses.dataclass
class Settings:
    """heartbeat.py.cf: absent means every default (and no monitor)."""
    path: str = ""
    present: bool = False
    link_watch: bool = True
    fence_delay_ms: int = 0
    monitors: List[MonitorSettings] = dataclasses.field(default_factory=list)
    http_listen: Optional[Tuple[str, int]] = None
    notify_timeout_ms: int = 30000
    http_allow: tuple = ()                         # networks; () answers any address
    http_tls_cert: str = ""
    http_tls_key: str = ""
    http_basic_auth: Optional[Tuple[str, str]] = dataclasses.field(default=None, repr=False)   # (user, hash)


def find_monitored(name: str, groups: List[ResourceGroup]) -> Tuple[ResourceGroup, ServiceResource]:
    """The script or agent resource a `monitor` line names: the word before `::`, or the whole word."""
    found = []
    for group in groups:
        for res in group.resources:
            word = res.spec.partition("::")[0]
            if name not in (res.spec, word) and not (isinstance(res, IPResource) and name == res.ip):
                continue
            if isinstance(res, IPResource):
                raise ValueError(f"{name} is an IP address resource (haresources line {group.lineno}): heartbeat.py "
                                 "watches its addresses itself; monitor a script resource")
            found.append((group, res))
    if len(found) > 1 and not any(res.spec == name for _, res in found):
        raise ValueError(f"{name} is several resources in haresources ({', '.join(r.spec for _, r in found)}): "
                         "write the one to watch as it stands there")
    if found:
        return next(((g, r) for g, r in found if r.spec == name), found[0])
    scripts = sorted({r.spec.partition("::")[0] for g in groups for r in g.resources if not isinstance(r, IPResource)})
    raise ValueError(f"haresources has no resource {name} (its script resources: {', '.join(scripts) or 'none'})")


def parse_setting_words(setting: Setting, words: List[str]) -> Tuple[str, Dict[str, Union[int, str, bool]], List[str]]:
    """`OPERAND option=value...` by the table: (operand, {field: value} with defaults, problems)."""
    problems: List[str] = []
    operand = words[0] if words and ("=" not in words[0] or not setting.options) else ""    # base64 ends in =
    if not operand:
        example = f"{setting.name} apache {setting.options[0].name}={setting.options[0].default}" \
            if setting.options else f"{setting.name} {setting.operand.split('|')[0]}"
        problems.append(f"{setting.name} needs a {setting.operand} first (e.g. {example})")
    options = {o.name: o for o in setting.options}
    values = {option_field(o): option_value(o, o.default) for o in setting.options}
    given = set()
    for word in words[1:] if operand else words:
        key, eq, text = word.partition("=")
        option = options.get(key)
        if not eq or option is None:
            problems.append(f"'{word}' is not one of {setting.name}'s options: "
                            + ", ".join(f"{o.name}={o.default}" for o in setting.options) if setting.options
                            else f"{setting.name} takes one value, {setting.operand}; '{word}' is one too many")
            continue
        if key in given:
            problems.append(f"{key} is given twice")
        given.add(key)
        try:
            values[option_field(option)] = option_value(option, text)
        except ValueError as err:
            problems.append(str(err))
    return operand, values, problems


PROCESS_ONLY_OPTIONS = ("cmdline", "quorum", "quorum_max", "delay")
STATUS_ONLY_OPTIONS = ("fall", "OCF_CHECK_LEVEL")


def process_watch_problem(values: Dict[str, object], given) -> str:
    """What is wrong with a `monitor` line's process watch options ("" when nothing is)."""
    name = values["process"]
    if not name:
        if "process" in given:
            return "process= needs a name (e.g. process=nginx)"
        extra = [option for option in PROCESS_ONLY_OPTIONS if option in given]
        return f"{', '.join(extra)} only go(es) with process=NAME" if extra else ""
    extra = [option for option in STATUS_ONLY_OPTIONS if option in given]
    if extra:
        return f"{', '.join(extra)} belong(s) to status checks; a process watch (process={name}) runs none"
    if not name.isprintable():
        return f"process={name!r}: the name has a character that is not printable"
    if not values["cmdline"]:
        if "/" in name:
            return (f"process={name}: /proc/PID/comm holds a name without its directory; write "
                    f"process={name.rstrip('/').rpartition('/')[2][:TASK_COMM_CHARS]}, or add cmdline=yes to match "
                    "the command as run")
        if len(name) > TASK_COMM_CHARS:
            return (f"process={name}: the kernel keeps {TASK_COMM_CHARS} characters of a process name "
                    f"(/proc/PID/comm): write process={name[:TASK_COMM_CHARS]}, or add cmdline=yes to match the "
                    "whole command as run")
    if values["quorum_max"] and values["quorum_max"] < values["quorum"]:
        return f"quorum_max ({values['quorum_max']}) is less than quorum ({values['quorum']}): no count is right"
    return ""


def parse_settings(path: str, groups: Optional[List[ResourceGroup]]) -> Settings:
    """Read heartbeat.py.cf (absent: defaults); groups None (haresources is broken) skips the checks
    against haresources. Raise ConfigErrors listing every problem."""
    settings = Settings(path=path)
    if not os.path.lexists(path):
        return settings
    settings.present = True
    errors: List[ConfigError] = []
    watched: Dict[str, int] = {}
    given_at: Dict[str, int] = {}          # a single-valued setting's line
    for lineno, text in config_lines(path):
        name, *words = text.split()
        setting = SETTING_BY_NAME.get(name)
        if name in given_at:
            errors.append(ConfigError(path, lineno, f"{name} is given twice (first at line {given_at[name]}): "
                                                    f"keep one {name} line"))
            continue
        if name in SINGLE_VALUE_SETTINGS:
            given_at[name] = lineno
        if setting is None:
            if name in DIRECTIVE_BY_NAME:
                message = (f"'{name}' is a ha.cf directive: it belongs in ha.cf, where Heartbeat reads it "
                           f"(this file holds heartbeat.py's own settings: {', '.join(SETTING_BY_NAME)})")
            else:
                message = (f"Unknown directive [{name}]: heartbeat.py.cf knows {', '.join(SETTING_BY_NAME)} "
                           "(see 'heartbeat.py directives')")
            errors.append(ConfigError(path, lineno, message))
            continue
        operand, values, problems = parse_setting_words(setting, words)
        if setting.secret and problems:
            operand, problems = "", [f"{name} takes one value, {setting.operand}, with a HASH from `heartbeat.py "
                                     f"hash-password USER` (the words are not shown: one may be a password)"]
        errors.extend(ConfigError(path, lineno, f"{name} {operand}: {p}" if operand else p) for p in problems)
        if name in SINGLE_VALUE_SETTINGS:
            field, parse = SINGLE_VALUE_SETTINGS[name]
            try:
                if not problems:
                    setattr(settings, field, parse(operand))
            except ValueError as err:
                errors.append(ConfigError(path, lineno, f"{name}: {err}"))
            continue
        if problems or groups is None:
            continue
        try:
            group, res = find_monitored(operand, groups)
        except ValueError as err:
            errors.append(ConfigError(path, lineno, f"monitor {operand}: {err}"))
            continue
        if res.spec in watched:
            errors.append(ConfigError(path, lineno, f"monitor {operand}: {res.spec} is monitored already "
                                      f"at line {watched[res.spec]}"))
            continue
        given = {word.partition("=")[0] for word in words[1:]}
        problem = process_watch_problem(values, given)
        if problem:
            errors.append(ConfigError(path, lineno, f"monitor {operand}: {problem}"))
            continue
        if isinstance(res, AgentResource) and "timeout" not in given and "monitor" in res.metadata.timeouts_ms \
                and not values["process"]:
            values["timeout_ms"] = res.metadata.timeouts_ms["monitor"]      # what the agent advertises
        if not isinstance(res, AgentResource) and "OCF_CHECK_LEVEL" in given:
            errors.append(ConfigError(path, lineno, f"monitor {operand}: OCF_CHECK_LEVEL is for OCF agents; "
                                      f"{res.spec} is a script"))
            continue
        watched[res.spec] = lineno
        settings.monitors.append(MonitorSettings(operand, res.spec, group.key, lineno, **values))
    if bool(settings.http_tls_cert) != bool(settings.http_tls_key) and not errors:
        given, missing = ("http_tls_cert", "http_tls_key") if settings.http_tls_cert else \
            ("http_tls_key", "http_tls_cert")
        errors.append(ConfigError(path, given_at[given], f"{given} needs {missing} too (TLS takes both)"))
    elif settings.http_tls_cert and not errors:
        try:
            tls_context(settings.http_tls_cert, settings.http_tls_key)
        except ValueError as err:
            errors.append(ConfigError(path, given_at["http_tls_cert"], f"http_tls_cert: {err}"))
    if errors:
        raise ConfigErrors(errors)
    return settings


# #### Config: STONITH devices #####################################################################

STONITH_COMMAND = "stonith"                       # cluster-glue's: runs every plugin it has
STONITH_EXTERNAL_DIR = "/usr/lib/stonith/plugins/external"
BUILTIN_STONITH = {"null": ("hostlist",),         # without cluster-glue: a device that resets nothing,
                   "meatware": ("hostlist",)}     # and an operator who power-cycles the node by hand
STONITH_QUERY_TIMEOUT_S = 10


@dataclasses.dataclass
class StonithDevice:
    """The device this node fences its peer with: the last stonith/stonith_host line for it or *.
    `how` says what runs it: "cluster-glue" (its stonith command), "external" (the plugin script
    with cluster-glue's calling convention) or "builtin"."""
    plugin: str
    params: Dict[str, str]
    lineno: int
    how: str
    path: str = ""                   # the external plugin script

    def describe(self) -> str:
        names = ", ".join(self.params) or "no parameters"
        return f"{self.plugin} ({names}; run by {self.how})"


def stonith_config_names(plugin: str) -> Tuple[Tuple[str, ...], str, str]:
    """(parameter names in getconfignames order, how it runs, script path); ValueError when
    nothing here can run that type."""
    import subprocess
    script = os.path.join(STONITH_EXTERNAL_DIR, plugin.partition("/")[2]) if plugin.startswith("external/") else ""
    if shutil.which(STONITH_COMMAND):
        argv, how = [STONITH_COMMAND, "-t", plugin, "-n"], "cluster-glue"
    elif script and os.access(script, os.X_OK):
        argv, how = [script, "getconfignames"], "external"
    elif plugin in BUILTIN_STONITH:
        return BUILTIN_STONITH[plugin], "builtin", ""
    else:
        raise ValueError(f"Invalid Stonith type [{plugin}]: cluster-glue's {STONITH_COMMAND} command is not "
                         f"installed and no {STONITH_EXTERNAL_DIR}/{plugin.partition('/')[2] or plugin} script "
                         f"exists (built in: {', '.join(BUILTIN_STONITH)})")
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=STONITH_QUERY_TIMEOUT_S,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"Invalid Stonith type [{plugin}]: {' '.join(argv)}: {err}") from None
    names = tuple(result.stdout.split())
    if result.returncode != 0 or not names:
        raise ValueError(f"Invalid Stonith type [{plugin}] ({' '.join(argv)}: "
                         f"{(result.stderr or result.stdout).strip()[-QUOTED_CHARS:] or 'no parameter names'})")
    return names, how, script


def stonith_params(names: Tuple[str, ...], text: str) -> Dict[str, str]:
    """cluster-glue's positional reading: a word per name, the last name takes the rest."""
    values, rest = {}, text.strip()
    for index, name in enumerate(names):
        if not rest:
            raise ValueError(f"missing {', '.join(names[index:])} (parameters, in order: {' '.join(names)})")
        if index == len(names) - 1:
            values[name], rest = rest, ""
        else:
            word, _, rest = rest.partition(" ")
            values[name], rest = word, rest.strip()
    return values


def stonith_line_for(hacf: HaCf, node: str) -> Optional[StonithLine]:
    """The line in effect for `node`: 3.0.6 keeps the last one for it or *."""
    lines = [line for line in hacf.stonith_lines if line.host in ("*", node)]
    return lines[-1] if lines else None


def stonith_line_params(line: StonithLine) -> Tuple[Dict[str, str], str, str]:
    """(parameters by name, how it runs, script path) of a line, from its words or the first line
    of its config file; OSError (the file) or ValueError (type, parameters) when it cannot be."""
    names, how, script = stonith_config_names(line.plugin)
    text = line.params
    if line.config_file is not None:
        with open(line.config_file, encoding="utf-8", errors="replace") as handle:
            text = next((raw.strip() for raw in handle if raw.strip() and not raw.startswith("#")), "")
    return stonith_params(names, text), how, script


def stonith_device(hacf: HaCf, node: str) -> Optional[StonithDevice]:
    """The device in effect for `node`, validated; ConfigError at its line when the type is
    unknown, parameters are missing or its config file cannot be read."""
    line = stonith_line_for(hacf, node)
    if line is None:
        return None
    try:
        params, how, script = stonith_line_params(line)
        return StonithDevice(line.plugin, params, line.lineno, how, script)
    except OSError as err:
        raise ConfigError(hacf.path, line.lineno, f"Invalid Stonith config file [{line.config_file}]: "
                                                  f"{err.strerror or err}") from None
    except ValueError as err:
        raise ConfigError(hacf.path, line.lineno, f"{line.plugin}: {err}") from None


def readable_by_others(info: os.stat_result) -> str:
    """Who besides root may read a file ("" nobody): every user, or the group it belongs to."""
    if info.st_mode & stat.S_IROTH:
        return "every user"
    if info.st_mode & stat.S_IRGRP and info.st_gid != 0:
        return f"group {info.st_gid}"
    return ""


def stonith_secret_warnings(hacf: HaCf) -> List[ConfigError]:
    """A warning at each STONITH line whose parameters (a device's password, often) others can read:
    in ha.cf itself (0644 as shipped) or in the `stonith` line's config file. A warning, not an
    error as for authkeys: Heartbeat 3.0.6 reads the same files as they are."""
    warnings = []
    for line in hacf.stonith_lines:
        if line.plugin in BUILTIN_STONITH or (line.config_file is None and not line.params):
            continue                                  # a host list is no secret
        path = line.config_file or hacf.path
        try:
            info = os.stat(path)
        except OSError:
            continue                                  # stonith_device says so, as an error
        who = readable_by_others(info)
        if who:
            name = os.path.basename(path) if path == hacf.path else path
            warnings.append(ConfigError(hacf.path, line.lineno, "warning: the STONITH device's parameters (its "
                                        f"password, if it has one) are readable by {who}: {name} is mode "
                                        f"{stat.S_IMODE(info.st_mode):03o}; chmod 600 {path} (heartbeat.py runs "
                                        "as root)"))
    return warnings


# #### Config: the four files together #############################################################

@dataclasses.dataclass
class Config:
    """The whole /etc/ha.d as one validated object."""
    config_dir: str
    node: str
    hacf: HaCf
    authkeys: AuthKeys
    groups: List[ResourceGroup]
    warnings: List[ConfigError]
    settings: Settings = dataclasses.field(default_factory=Settings)
    stonith: Optional[StonithDevice] = None

    def script_dirs(self) -> List[str]:
        return default_script_dirs(self.config_dir)


def default_script_dirs(config_dir: str) -> List[str]:
    return [os.path.join(config_dir, "resource.d"), INITD_DIR]


def load_config(config_dir: str, node: Optional[str] = None,
                script_dirs: Optional[List[str]] = None) -> Config:
    """Parse ha.cf, authkeys, haresources and heartbeat.py.cf; raise ConfigErrors with every problem
    in all four."""
    errors: List[ConfigError] = []
    hacf = authkeys = None
    groups: List[ResourceGroup] = []
    hacf_path = os.path.join(config_dir, "ha.cf")
    try:
        hacf = parse_hacf(hacf_path)
    except ConfigErrors as err:
        errors.extend(err.errors)
    try:
        authkeys = parse_authkeys(os.path.join(config_dir, "authkeys"))
        errors.extend(public_key_errors(authkeys))
    except ConfigErrors as err:
        errors.extend(err.errors)
    nodes = hacf.nodes if hacf else []
    haresources_ok = False
    try:
        groups = parse_haresources(os.path.join(config_dir, "haresources"), nodes,
                                   script_dirs or default_script_dirs(config_dir))
        haresources_ok = True
    except ConfigErrors as err:
        errors.extend(err.errors)
    settings = Settings()
    try:
        settings = parse_settings(os.path.join(config_dir, SETTINGS_FILE), groups if haresources_ok else None)
    except ConfigErrors as err:
        errors.extend(err.errors)
    me = local_node_name(config_dir, node)
    if hacf and hacf.nodes and me not in hacf.nodes:
        errors.append(ConfigError(hacf_path, 0, f"Current node [{me}] not in configuration! Cluster nodes "
                                  "are named by `uname -n` and must be declared with a 'node' directive "
                                  "(or give --node NAME)"))
    device = None
    if hacf:
        try:
            device = stonith_device(hacf, me)
        except ConfigError as err:
            errors.append(err)
    if errors:
        raise ConfigErrors(errors)
    haresources = os.path.join(config_dir, "haresources")
    warnings = hacf.warnings + authkeys.warnings + crc_warnings(authkeys) + \
        ipv6_warnings(haresources, groups) + agent_warnings(haresources, groups) + stonith_secret_warnings(hacf)
    return Config(config_dir, me, hacf, authkeys, groups, warnings, settings, device)


# ==================================================================================================
# 3. PROTOCOL: Heartbeat's message format, its digests, this node's identity
# ==================================================================================================


# #### Protocol: the digests of authkeys' methods ##################################################

def _crc_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


CRC_TABLE = _crc_table()


def crc_digest(data: bytes) -> str:
    """Heartbeat's `crc`: CRC-32 poly 0x04C11DB7, MSB first, init 0, inverted, printed %lx."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[(crc >> 24) ^ byte]
    return format(crc ^ 0xFFFFFFFF, "x")


def hash_constructor(name: str):
    """sha1/md5/sha256 from CPython's built-in modules (_sha256 until 3.11, _sha2 since 3.12):
    importing hashlib (or hmac, or secrets) loads OpenSSL, which costs a resident daemon about
    4 MB for two small hashes."""
    for module in ("_" + name, "_sha2"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return getattr(importlib.import_module("hashlib"), name)


HASHES = {"sha1": hash_constructor("sha1"), "md5": hash_constructor("md5")}    # sha256: at its first use
HMAC_BLOCK = 64                  # sha1, md5 and sha256 all work on 64-byte blocks
HMAC_PADS: Dict[Tuple[str, str], tuple] = {}    # (method, key) -> keyed inner and outer states


def hmac_hexdigest(method: str, key: str, data: bytes) -> str:
    """HMAC (RFC 2104) with the built-in sha1/md5/sha256. The keyed inner and outer hash states
    are made once per authkeys key and copied for each packet: ten of them a second at 100 ms."""
    pads = HMAC_PADS.get((method, key))
    if pads is None:
        new = HASHES.get(method) or HASHES.setdefault(method, hash_constructor(method))
        raw = key.encode()
        block = (new(raw).digest() if len(raw) > HMAC_BLOCK else raw).ljust(HMAC_BLOCK, b"\0")
        pads = HMAC_PADS[(method, key)] = (new(bytes(k ^ 0x36 for k in block)),
                                           new(bytes(k ^ 0x5C for k in block)))
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(data)
    outer.update(inner.digest())
    return outer.hexdigest()


def auth_digest(method: str, key: str, data: bytes) -> str:
    """The digest Heartbeat writes after the authkeys index."""
    if method == "crc":
        return crc_digest(data)
    return hmac_hexdigest(method, key, data)


# Constant-time comparison: hmac.compare_digest is this very function, without the hmac import.
compare_digest = importlib.import_module("_operator")._compare_digest


def random_below(limit: int) -> int:
    return int.from_bytes(os.urandom(4), "big") % limit


def sign(keys: AuthKeys, data: bytes) -> str:
    """The `IDX DIGEST` token for data, with the key `auth N` names."""
    method, key = keys.methods[keys.active]
    return f"{keys.active} {auth_digest(method, key, data)}"


def verified_index(keys: AuthKeys, token: str, data: bytes) -> Optional[int]:
    """The index of a valid `IDX DIGEST` token for data, None when it is not one. Any configured
    index of a digest method is accepted (3.0.6 too accepts every listed index), each checked
    with its own key; an aes256gcm index never signs a digest: only a sealed datagram uses it."""
    index, _, digest = token.partition(" ")
    if not is_number(index) or int(index) not in keys.methods:
        return None
    method, key = keys.methods[int(index)]
    if method == "aes256gcm":
        return None
    return int(index) if compare_digest(auth_digest(method, key, data).encode(), digest.encode()) else None


def verify(keys: AuthKeys, token: str, data: bytes) -> bool:
    """True when token is a valid `IDX DIGEST` for data under a configured index."""
    return verified_index(keys, token, data) is not None


# #### Protocol: aes256gcm, sealed datagrams #######################################################

class BadPacket(HAError):
    """A datagram we drop: it does not parse, or its authentication is wrong."""


# With `auth N` naming an aes256gcm key, each datagram is the message in its usual netstring form
# (`###\n` fields `%%%\n`, without the two digests: the GCM tag authenticates every byte of it, a
# digest inside would be a second MAC under the same secret), sealed with AES-256-GCM:
#     SEALED_MAGIC (8 bytes) | N (1 byte) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
# The magic and N are the associated data: authenticated, not encrypted. The magic starts with
# neither `###` nor `>>>`, so no Heartbeat parses a sealed datagram as a message. The message inside
# keeps its seq, hg and ts: a replayed datagram opens fine and is dropped by the same checks.
SEALED_MAGIC = b"HBPY-GCM"
GCM_NONCE_BYTES = 12             # 96 bits, random for each datagram (2**32 datagrams per key is
                                 # about 13 years at 10 a second: far below the birthday bound's risk)
GCM_TAG_BYTES = 16
SEALED_HEADER_BYTES = len(SEALED_MAGIC) + 1
AEAD_KEY_BYTES = 32
AEAD_KEY_INFO = b"heartbeat.py authkeys aes256gcm key"    # HKDF's info: this key is for this use only
AEADS: Dict[str, object] = {}    # authkeys key -> its AESGCM (derived once per key)


def aead_key(key: str) -> bytes:
    """The AES-256 key of an authkeys key: HKDF-SHA256 (RFC 5869), no salt, info AEAD_KEY_INFO.
    An extract-and-expand KDF, not the key itself: an authkeys key is text of any length (keygen's is
    64 hex digits), and the label makes the AES key unrelated to any other use of the same text (a
    sha256 line with that key, the ICMP echo tokens)."""
    hkdf = extra_module("cryptography", "hazmat.primitives.kdf.hkdf")
    hashes = extra_module("cryptography", "hazmat.primitives.hashes")
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=AEAD_KEY_BYTES, salt=None,
                     info=AEAD_KEY_INFO).derive(key.encode())


def aead_for(key: str):
    cipher = AEADS.get(key)
    if cipher is None:
        aead = extra_module("cryptography", "hazmat.primitives.ciphers.aead")
        if aead is None:         # parse_authkeys refuses such a file: only a package removed meanwhile
            raise HAError(f"aes256gcm needs the package cryptography: {extra_install_hint('cryptography')}")
        cipher = AEADS[key] = aead.AESGCM(aead_key(key))
    return cipher


def seal_datagram(keys: AuthKeys, plaintext: bytes) -> bytes:
    """A message sealed with the aes256gcm key `auth N` names."""
    header = SEALED_MAGIC + bytes([keys.active])
    nonce = os.urandom(GCM_NONCE_BYTES)
    return header + nonce + aead_for(keys.methods[keys.active][1]).encrypt(nonce, plaintext, header)


def open_datagram(keys: AuthKeys, data: bytes) -> Tuple[bytes, int]:
    """The message in a sealed datagram and the index it was sealed with; BadPacket when it does
    not open (nothing of it is read but the header before the tag has been checked)."""
    if len(data) < SEALED_HEADER_BYTES + GCM_NONCE_BYTES + GCM_TAG_BYTES:
        raise BadPacket("authentication failed: sealed datagram too short")
    index = data[len(SEALED_MAGIC)]
    method, key = keys.methods.get(index, ("", ""))
    if method != "aes256gcm":
        raise BadPacket(f"authentication failed: sealed with index {index}, not an aes256gcm key here")
    header, nonce = data[:SEALED_HEADER_BYTES], data[SEALED_HEADER_BYTES:SEALED_HEADER_BYTES + GCM_NONCE_BYTES]
    try:
        return aead_for(key).decrypt(nonce, data[SEALED_HEADER_BYTES + GCM_NONCE_BYTES:], header), index
    except Exception:            # cryptography's InvalidTag: wrong key, or changed on the way
        raise BadPacket(f"authentication failed: sealed datagram does not open with key {index} "
                        "(aes256gcm): another key, or damaged or forged") from None


# #### Protocol: Heartbeat's message format ########################################################

FIELD_STRING, FIELD_BINARY = 0, 1
NETSTRING_START, NETSTRING_END = b"###\n", b"%%%\n"
CLASSIC_START, CLASSIC_END = b">>>\n", b"<<<\n"
MAX_DATAGRAM = 256 * 1024
UDP_MAX_DATAGRAM = 65536         # what one UDP read can return (IPv4 payload at most 65507 bytes)
FIELD_TYPES = (b"(0)", b"(1)")    # on the wire, by FIELD_STRING and FIELD_BINARY


class Message:
    """An ordered list of (name, type, value) fields, as Heartbeat keeps them, and the first
    value of each string field by name (a packet is looked up a dozen times on its way in)."""

    def __init__(self, *pairs: Tuple[str, str]):
        self.fields: List[Tuple[str, int, bytes]] = []
        self.strings: Dict[str, bytes] = {}
        self.auth_index: Optional[int] = None      # of a received message: the authkeys key that signed it
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value, ftype: int = FIELD_STRING) -> "Message":
        raw = value if isinstance(value, bytes) else str(value).encode()
        self.fields.append((name, ftype, raw))
        if ftype == FIELD_STRING and name not in self.strings:
            self.strings[name] = raw
        return self

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """A string field as text a log line can carry: a peer's newlines and control characters
        come out escaped (no field Heartbeat sends has any)."""
        value = self.strings.get(name)
        if value is None:
            return default
        text = value.decode("utf-8", "replace")
        return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")

    def get_bytes(self, name: str) -> Optional[bytes]:
        for fname, _, value in self.fields:
            if fname == name:
                return value
        return None

    def without(self, name: str) -> List[Tuple[str, int, bytes]]:
        return [f for f in self.fields if f[0] != name]

    def __repr__(self):
        return "Message(" + ", ".join(f"{n}={v!r}" for n, _, v in self.fields) + ")"


def classic_text(fields) -> bytes:
    """The text the in-message `auth` field signs: `name=value\\n`, binary as base64."""
    return b"".join(b"(1)%s=%s\n" % (name.encode(), base64.b64encode(value)) if ftype == FIELD_BINARY
                    else b"%s=%s\n" % (name.encode(), value) for name, ftype, value in fields)


def netstring_fields(fields) -> bytes:
    """`LEN:(TYPE)NAME=VALUE,` for each field, as the netstring format carries them."""
    return b"".join([b"%d:(%d)%s=%s," % (len(name) + len(value) + 4, ftype, name.encode(), value)
                     for name, ftype, value in fields])


def seal(classic: bytes, body: bytes, keys: AuthKeys, msgfmt: str = "classic") -> bytes:
    """The datagram from its fields, both as classic text and as netstrings: the inner auth field
    (msgfmt classic), the ###/%%% frame and the auth trailer over all of it; with an aes256gcm
    key, the frame sealed instead."""
    if keys.method == "aes256gcm":
        return seal_datagram(keys, NETSTRING_START + body + NETSTRING_END)
    if msgfmt == "classic":
        token = sign(keys, classic).encode()
        body += b"%d:(0)auth=%s," % (len(token) + 8, token)
    data = NETSTRING_START + body + NETSTRING_END
    token = sign(keys, data).encode()
    return data + b"%d:" % len(token) + token + b","


def encode_message(msg: Message, keys: AuthKeys, msgfmt: str = "classic") -> bytes:
    """A datagram as 3.0.6 sends it: netstring fields, inner auth (classic), auth trailer."""
    fields = msg.without("auth")
    return seal(classic_text(fields) if msgfmt == "classic" else b"", netstring_fields(fields), keys, msgfmt)


def _peel_netstring(data: bytes, pos: int) -> Tuple[bytes, int]:
    """One `LEN:payload,` at pos; return (payload, next position)."""
    colon = data.find(b":", pos, pos + 11)
    length = data[pos:colon]
    if colon <= pos or not length.isdigit():
        raise BadPacket(f"bad netstring length at byte {pos}")
    end = colon + 1 + int(length)
    if data[end:end + 1] != b",":
        raise BadPacket(f"netstring at byte {pos} overruns the datagram")
    return data[colon + 1:end], end + 1


def decode_message(data: bytes, keys: AuthKeys) -> Message:
    """Parse and authenticate one datagram; raise BadPacket (never anything else)."""
    if len(data) > MAX_DATAGRAM:
        raise BadPacket("datagram too large")
    if data.startswith(NETSTRING_START):
        return _decode_netstring(data, keys)
    if data.startswith(CLASSIC_START):
        return _decode_classic(data.rstrip(b"\0"), keys)
    if data.startswith(SEALED_MAGIC):
        plaintext, index = open_datagram(keys, data)
        if not (plaintext.startswith(NETSTRING_START) and plaintext.endswith(NETSTRING_END)):
            raise BadPacket("sealed datagram without a ###/%%% message inside")
        return _netstring_fields(plaintext, len(plaintext) - len(NETSTRING_END), index)
    raise BadPacket("not a Heartbeat message (no ### or >>> header)")


def _decode_netstring(data: bytes, keys: AuthKeys) -> Message:
    """Authenticate first (the trailer signs everything up to the last %%%), then read the
    fields."""
    stop = data.rfind(NETSTRING_END)
    if stop < len(NETSTRING_START):
        raise BadPacket("message without %%% end")
    token, end = _peel_netstring(data, stop + len(NETSTRING_END))
    if end != len(data):
        raise BadPacket("trailing bytes after the auth trailer")
    index = verified_index(keys, token.decode("ascii", "replace"), data[:stop + len(NETSTRING_END)])
    if index is None:
        raise BadPacket("authentication failed")
    return _netstring_fields(data, stop, index)


def _netstring_fields(data: bytes, stop: int, index: int) -> Message:
    """The fields `LEN:(TYPE)NAME=VALUE,` (TYPE 0 string, 1 binary) between `###\n` and stop, of a
    datagram authenticated with key `index`."""
    msg, pos = Message(), len(NETSTRING_START)
    msg.auth_index = index
    while pos < stop:
        item, pos = _peel_netstring(data, pos)
        equals = item.find(b"=", 3)
        if pos > stop or equals < 0 or item[:3] not in FIELD_TYPES:
            raise BadPacket("bad field in message")
        msg.add(item[3:equals].decode("ascii", "replace"), item[equals + 1:], FIELD_TYPES.index(item[:3]))
    return msg


def _decode_classic(data: bytes, keys: AuthKeys) -> Message:
    if not data.endswith(CLASSIC_END):
        raise BadPacket("classic message without <<< end")
    msg = Message()
    for line in data[len(CLASSIC_START):-len(CLASSIC_END)].split(b"\n"):
        if not line:
            continue
        name, eq, value = line.partition(b"=")
        if not eq:
            raise BadPacket("classic line without '='")
        if name.startswith(b"(1)"):
            try:
                msg.add(name[3:].decode("ascii", "replace"), base64.b64decode(value, validate=True), FIELD_BINARY)
            except ValueError:
                raise BadPacket("bad base64 in binary field") from None
        else:
            msg.add(name.decode("ascii", "replace"), value)
    token = msg.get("auth")
    msg.auth_index = None if token is None else verified_index(keys, token, classic_text(msg.without("auth")))
    if msg.auth_index is None:
        raise BadPacket("authentication failed")
    return msg


def stonith_message(node: str, result: str) -> Message:
    """3.0.6's T_STONITH: every node learns what became of a reset of `node` (OK, bad, badhost;
    unneeded or n_stnth when none was done)."""
    return Message(("t", "stonith"), ("node", node), ("result", result))


# #### Protocol: identity and control fields #######################################################

NS_TYPES = ("NS_ackmsg", "NS_rexmit", "NS_nak_rexmit")   # no seq, no ld
HISTORY_SIZE = 500

# The control fields a status message ends with (seq, hg, ts, ld, ttl), as classic_text() and
# netstring_fields() write them: the netstring length is len("(0)NAME=") + len(value).
STATUS_CONTROL_CLASSIC = b"seq=%s\nhg=%s\nts=%s\nld=%s\nttl=%s\n"
STATUS_CONTROL_NETSTRING = b"%d:(0)seq=%s,%d:(0)hg=%s,%d:(0)ts=%s,%d:(0)ld=%s,%d:(0)ttl=%s,"


MAX_GENERATION = (1 << 40) - 1   # the highest generation a node moves to when a peer knows it higher: far past
                                 # any real one (3.0.6 and we start near the Unix time, 2^31, and add one per start)


@dataclasses.dataclass
class Identity:
    """This node on the wire: name, uuid and this run's generation (hg), kept in state_dir."""
    name: str
    uuid: bytes
    generation: int
    state_dir: Optional[str] = None       # where hb_generation lives (None: kept in memory only)

    def move_past(self, generation: int) -> None:
        """A peer knows us at `generation` or higher (this machine's hb_generation was restored
        from a snapshot or a backup): run at generation + 1 from now on, written to hb_generation
        first, so that no later start can use again a generation this run has sent.
        OSError when the file cannot be written (the generation is then left as it was)."""
        if self.state_dir:
            save_generation(self.state_dir, generation + 1)
        self.generation = generation + 1


def save_generation(state_dir: str, generation: int) -> None:
    """hb_generation as 3.0.6 writes it (decimal right-aligned in 15 columns), synced with its directory."""
    write_file_atomic(os.path.join(state_dir, "hb_generation"), f"{generation:>15}\n".encode(), 0o644)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)                      # the rename too survives a crash
    finally:
        os.close(fd)


def load_identity(state_dir: str, node: str, hacf: HaCf, log=None) -> Identity:
    """Read or create hb_uuid, and bump hb_generation, as Heartbeat does at every start."""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    if hacf.uuidfrom == "nodename":
        uuid = hash_constructor("md5")(node.encode()).digest()
    else:
        uuid_path = os.path.join(state_dir, "hb_uuid")
        try:
            with open(uuid_path, "rb") as handle:
                uuid = handle.read(17)
        except OSError:
            uuid = b""
        if len(uuid) != 16:
            if log:
                log.info("No uuid found for current node - generating a new uuid.")
            uuid = os.urandom(16)
            write_file_atomic(uuid_path, uuid, 0o644)
    gen_path = os.path.join(state_dir, "hb_generation")
    try:
        with open(gen_path, "rb") as handle:
            previous = int(handle.read(64).strip() or b"0")
    except (OSError, ValueError):
        previous = 0
    if hacf.hbgenmethod == "time" or previous <= 0:
        generation = max(previous + 1, int(time.time()) + 1)
        if previous <= 0 and log:
            log.warn(f"No Previous generation - starting at {generation}")
    else:
        generation = previous + 1
    save_generation(state_dir, generation)
    if log:
        log.info(f"Heartbeat generation: {generation}")
    return Identity(node, uuid, generation, state_dir)


_loadavg = {"fd": -1, "read_at": -1e9, "text": b""}


def load_average() -> bytes:
    """The `ld` field: /proc/loadavg without its newline, read at most once a second from the
    file kept open (one call instead of nine)."""
    now = time.monotonic()
    if now - _loadavg["read_at"] >= 1.0:
        try:
            if _loadavg["fd"] < 0:
                _loadavg["fd"] = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
            _loadavg["text"] = os.pread(_loadavg["fd"], 128, 0).strip()
        except OSError:
            _loadavg["text"] = b"0.00 0.00 0.00 1/1 1"
        _loadavg["read_at"] = now
    return _loadavg["text"]


# ==================================================================================================
# 4. KERNEL I/O: UDP media, ICMP, rtnetlink, ARP and neighbour discovery, the watchdog device, /proc and pidfds
# ==================================================================================================


# #### Kernel I/O: bcast, mcast, ucast, mcast6 and ucast6 sockets ##################################

SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def interface_ipv4(iface: str, request: int = SIOCGIFADDR) -> Optional[str]:
    """An interface's IPv4 address (or, with SIOCGIFBRDADDR or SIOCGIFNETMASK, its broadcast
    address or netmask), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(probe.fileno(), request, struct.pack("256s", iface.encode()[:IFNAMSIZ - 1]))
        return socket.inet_ntoa(raw[20:24])
    except OSError:
        return None
    finally:
        probe.close()


def broadcast_address(iface: str, local: str) -> Tuple[str, str]:
    """(broadcast, warning): the interface's broadcast address, or when it has none (an
    address added without `brd +`), the one computed from its address and prefix, with a
    warning to log. A /31 or /32 has no broadcast address: HAError."""
    broadcast = interface_ipv4(iface, SIOCGIFBRDADDR)
    if broadcast and broadcast != "0.0.0.0":
        return broadcast, ""
    netmask = interface_ipv4(iface, SIOCGIFNETMASK) or "255.255.255.255"
    network = ipaddress.IPv4Network(f"{local}/{netmask}", strict=False)
    if network.prefixlen >= 31:
        raise HAError(f"Get broadcast for interface {iface} failed: its address {local}/{network.prefixlen} "
                      "has no broadcast address; give it a shorter prefix, or use ucast or mcast on it")
    computed = str(network.broadcast_address)
    return computed, (f"interface {iface} has no broadcast address set: sending bcast heartbeats to "
                      f"{computed}, computed from {local}/{network.prefixlen}")


SO_ATTACH_FILTER = 26
SKF_NET_OFF = 0xFFF00000         # classic BPF: offsets from the IP header


def drop_own_broadcasts(sock: socket.socket, own_ip: str) -> bool:
    """A kernel filter on the receive socket that drops datagrams sent from our own address:
    our broadcasts come back to us, and each would wake the daemon for nothing."""
    try:
        import ctypes
    except ImportError:
        return False
    program = b"".join([
        struct.pack("HBBI", 0x20, 0, 0, SKF_NET_OFF + 12),                    # A = source address
        struct.pack("HBBI", 0x15, 0, 1, int.from_bytes(socket.inet_aton(own_ip), "big")),
        struct.pack("HBBI", 0x06, 0, 0, 0),                                   # ours: drop
        struct.pack("HBBI", 0x06, 0, 0, 0x40000),                             # anyone else: keep
    ])
    buffer = ctypes.create_string_buffer(program)      # the kernel copies it during setsockopt
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer)))
    except OSError:
        return False
    return True


class Link:
    """One medium's sockets: where we send, and where we listen."""

    def __init__(self, medium: Medium, udpport: int):
        self.medium, self.name = medium, medium.iface
        self.port = medium.port if medium.kind in ("mcast", "mcast6") else udpport
        self.destinations: List[tuple] = []        # (host, port), or (host, port, flowinfo, scope) for IPv6
        self.send_sock: Optional[socket.socket] = None
        self.recv_sock: Optional[socket.socket] = None
        self.send_errors = 0
        self.warnings: List[str] = []            # from open(), for the daemon to log

    def open(self) -> None:
        """Create the sockets; raise HAError naming the interface when it cannot work."""
        if self.medium.kind in ("ucast6", "mcast6"):
            self.open6()
            return
        medium = self.medium
        local = interface_ipv4(medium.iface)
        if not local:
            raise HAError(f"IP interface [{medium.iface}] does not exist or has no IPv4 address "
                          f"(ha.cf line {medium.lineno}: {medium.kind} {medium.iface})")
        send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for sock in (send, recv):
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, medium.iface.encode())
            recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if medium.kind == "bcast":
                broadcast, warning = broadcast_address(medium.iface, local)
                if warning:
                    self.warnings.append(warning)
                send.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                send.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
                self.destinations = [(broadcast, self.port)]
                recv.bind(("", self.port))
                drop_own_broadcasts(recv, local)
            elif medium.kind == "ucast":
                self.destinations = [(socket.gethostbyname(peer), self.port) for peer in medium.peers]
                recv.bind(("", self.port))
            else:
                send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
                send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, medium.ttl)
                send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(medium.loop))
                recv.bind((medium.group, self.port))
                recv.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(medium.group) + socket.inet_aton(local))
                self.destinations = [(medium.group, self.port)]
            send.bind(("", 0))
        except (OSError, HAError) as err:
            send.close()
            recv.close()
            if isinstance(err, HAError):
                raise
            raise HAError(f"cannot open {medium.kind} on {medium.iface} port {self.port}: "
                          f"{err.strerror or err}") from None
        send.setblocking(False)
        recv.setblocking(False)
        self.send_sock, self.recv_sock = send, recv

    def open6(self) -> None:
        """ucast6 and mcast6 as 3.0.6 opens them: the receiving socket on [::]:port (ucast6 bound to
        the device, mcast6 joined to the group on it), the sending one bound to the device (ucast6)
        or sending its multicast out of it with the hop limit and loop of the line. Ours take IPv6
        only, so that a ucast on the same port and device keeps its IPv4 datagrams to itself."""
        medium = self.medium
        try:
            index = socket.if_nametoindex(medium.iface)
        except OSError:
            raise HAError(f"{medium.kind} device [{medium.iface}] is invalid or not set up properly "
                          f"(ha.cf line {medium.lineno}: {medium.kind} {medium.iface})") from None
        send = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        recv = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            recv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if medium.kind == "ucast6":
                for sock in (send, recv):
                    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, medium.iface.encode())
                peer = ipaddress.IPv6Address(medium.peers[0])
                self.destinations = [(str(peer), self.port, 0, index if peer.is_link_local else 0)]
                recv.bind(("::", self.port))
            else:
                send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, medium.ttl)
                send.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(medium.loop))
                recv.bind(("::", self.port))
                recv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                socket.inet_pton(socket.AF_INET6, medium.group) + struct.pack("=I", index))
                self.destinations = [(medium.group, self.port, 0, index)]
        except OSError as err:
            send.close()
            recv.close()
            raise HAError(f"cannot open {medium.kind} on {medium.iface} port {self.port}: "
                          f"{err.strerror or err}") from None
        send.setblocking(False)
        recv.setblocking(False)
        self.send_sock, self.recv_sock = send, recv

    def send(self, datagram: bytes) -> bool:
        ok = True
        for destination in self.destinations:
            try:
                self.send_sock.sendto(datagram, destination)
            except OSError:
                self.send_errors += 1
                ok = False
        return ok

    def close(self) -> None:
        for sock in (self.send_sock, self.recv_sock):
            if sock:
                sock.close()
        self.send_sock = self.recv_sock = None


# #### Kernel I/O: ICMP echo #######################################################################

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
ICMP6_FILTER = 1                 # the socket option: which ICMPv6 types a raw socket receives
SOL_RAW, ICMP_FILTER = 255, 1    # the same for ICMP (IPv4): a 32-bit mask, a set bit blocks its type
PING_PAYLOAD = b"heartbeat.py ping"
PING_TOKEN_BYTES = 8


def icmp_filter_passing(kind: int) -> bytes:
    """An ICMP_FILTER that blocks every ICMP type but kind (the kernel passes types past 31)."""
    return struct.pack("=I", 0xFFFFFFFF & ~(1 << kind))


def echo_token(key: str, address: str, seq: int) -> bytes:
    """What an echo to address with seq carries, and its reply must carry back: a keyed hash of
    both under a key made at each start. A reply counts only from the address the echo went to
    and for that echo: one echo seen on the wire tells nothing of the token of any other."""
    data = ipaddress.ip_address(address.split("%")[0]).packed + seq.to_bytes(2, "big")
    return bytes.fromhex(hmac_hexdigest("sha1", key, data)[:2 * PING_TOKEN_BYTES])


def icmp6_filter_passing(kind: int) -> bytes:
    """An ICMP6_FILTER that blocks every ICMPv6 type but kind (a set bit blocks its type)."""
    words = [0xFFFFFFFF] * 8
    words[kind >> 5] &= ~(1 << (kind & 31))
    return struct.pack("=8I", *words)


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's complement sum of 16-bit words, as ICMP wants it."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, token: bytes, version: int = 4) -> bytes:
    """An ICMP echo request, or with version 6 an ICMPv6 one (its checksum is the kernel's: it
    covers the IPv6 addresses)."""
    kind = ICMP6_ECHO_REQUEST if version == 6 else ICMP_ECHO_REQUEST
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    body = token + PING_PAYLOAD
    checksum = 0 if version == 6 else internet_checksum(header + body)
    return struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + body


def parse_echo_reply(packet: bytes, ident: int, version: int = 4) -> Optional[Tuple[int, bytes]]:
    """The sequence number and token of an echo reply with our ident, else None. The type and the
    ident first (another process's ping costs no checksum), then for IPv4 the checksum (IP header
    included in packet); IPv6: the ICMPv6 message alone, its checksum checked by the kernel."""
    if version == 4:
        if len(packet) < 20:
            return None
        packet = packet[(packet[0] & 0x0F) * 4:]
    if len(packet) < 8 + PING_TOKEN_BYTES:
        return None
    kind, _, _, reply_ident, seq = struct.unpack("!BBHHH", packet[:8])
    if kind != (ICMP6_ECHO_REPLY if version == 6 else ICMP_ECHO_REPLY) or reply_ident != ident:
        return None
    if version == 4 and internet_checksum(packet) != 0:
        return None
    return seq, packet[8:8 + PING_TOKEN_BYTES]


# #### Kernel I/O: rtnetlink #######################################################################

IP_TIMEOUT_S = 10

# A takeover's addresses go to the kernel as one batch of rtnetlink requests, each acknowledged
# on its own (an error names its address), and are announced from one raw socket per family in
# one pass: no process per address, so a hundred addresses move about as fast as one. `ip` is
# used only where rtnetlink cannot be opened.
NETLINK_ROUTE = 0
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100   # broadcasts the link watch reads
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x200, 0x400
IFF_LOWER_UP = 0x10000          # the carrier: a cable in, the switch port up
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST = 1, 2, 3, 4
IFA_F_NODAD = 0x02
NLMSGHDR = struct.Struct("=IHHII")      # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")           # length, type
NETLINK_RCVBUF = 1024 * 1024
NETLINK_BATCH_BYTES = 32 * 1024         # requests per send(); the kernel reads a batch in one go
NETLINK_READ_BYTES = 64 * 1024          # one recv(): the kernel's netlink datagrams are at most 32 KB


class NetlinkEvent(NamedTuple):
    """One rtnetlink message that matters to us. kind: "link" (carrier up or not), "link gone",
    "address", "address gone", "done" (end of a dump), "error" (an answer to a request:
    ifindex holds the errno, 0 for an acknowledgement)."""
    kind: str
    seq: int = 0
    ifindex: int = 0
    ifname: str = ""
    carrier: bool = False
    ip: str = ""
    prefixlen: int = 0
    label: str = ""


def netlink_attributes(data: bytes, offset: int) -> Dict[int, bytes]:
    """rtattr type -> value from offset to the end; a malformed one ends the list."""
    attrs: Dict[int, bytes] = {}
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > len(data):
            break
        attrs.setdefault(kind, data[offset + RTATTR.size:offset + length])
        offset += (length + 3) & ~3
    return attrs


def netlink_attribute(kind: int, value: bytes) -> bytes:
    return RTATTR.pack(RTATTR.size + len(value), kind) + value + b"\0" * (-len(value) % 4)


def parse_netlink_message(kind: int, seq: int, body: bytes) -> Optional[NetlinkEvent]:
    """One message's body -> an event, or None for what we do not follow (or cannot read)."""
    if kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= IFINFOMSG.size:
        _, _, index, flags, _ = IFINFOMSG.unpack_from(body)
        name = netlink_attributes(body, IFINFOMSG.size).get(IFLA_IFNAME, b"").split(b"\0", 1)[0]
        return NetlinkEvent("link" if kind == RTM_NEWLINK else "link gone", seq, index,
                            name.decode(errors="replace"), bool(flags & IFF_LOWER_UP))
    if kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= IFADDRMSG.size:
        family, prefixlen, _, _, index = IFADDRMSG.unpack_from(body)
        attrs = netlink_attributes(body, IFADDRMSG.size)
        address = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS, b""))
        if (family, len(address)) not in ((socket.AF_INET, 4), (socket.AF_INET6, 16)) or \
                prefixlen > 8 * len(address):
            return None
        label = attrs.get(IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace")
        return NetlinkEvent("address" if kind == RTM_NEWADDR else "address gone", seq, index,
                            ip=str(ipaddress.ip_address(address)), prefixlen=prefixlen, label=label)
    if kind == NLMSG_DONE:
        return NetlinkEvent("done", seq)
    if kind == NLMSG_ERROR and len(body) >= 4:
        return NetlinkEvent("error", seq, -struct.unpack_from("=i", body)[0])
    return None


def parse_netlink(data: bytes) -> List[NetlinkEvent]:
    """The messages in one datagram, as events; a truncated message ends it, one we cannot
    read is skipped. Never raises."""
    events, offset = [], 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            break
        event = parse_netlink_message(kind, seq, data[offset + NLMSGHDR.size:offset + length])
        if event:
            events.append(event)
        offset += (length + 3) & ~3
    return events


def netlink_dump_request(kind: int, seq: int) -> bytes:
    """RTM_GETLINK (every interface) or RTM_GETADDR (every address of both families) as a dump."""
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) if kind == RTM_GETLINK else \
        IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def address_request(kind: int, seq: int, ifindex: int, address, label: str = "",
                    broadcast: Optional[str] = None) -> bytes:
    """RTM_NEWADDR (create, never replace) or RTM_DELADDR for one address/prefix (an
    ipaddress.IPv4Interface or IPv6Interface), acknowledged. IPv6 addresses skip duplicate address
    detection: they serve at once, as a configured address must."""
    packed = address.ip.packed
    attrs = netlink_attribute(IFA_LOCAL, packed) + netlink_attribute(IFA_ADDRESS, packed)
    if broadcast and kind == RTM_NEWADDR:
        attrs += netlink_attribute(IFA_BROADCAST, socket.inet_aton(broadcast))
    if label and kind == RTM_NEWADDR:
        attrs += netlink_attribute(IFA_LABEL, label.encode() + b"\0")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    flags = IFA_F_NODAD if address.version == 6 else 0
    body = IFADDRMSG.pack(family, address.network.prefixlen, flags, 0, ifindex) + attrs
    request_flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if kind == RTM_NEWADDR else 0)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, request_flags, seq, 0) + body


def open_rtnetlink(groups: int = 0) -> socket.socket:
    """A routing socket; groups: the broadcasts to subscribe to (none for requests)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NETLINK_RCVBUF)
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


class AddressEntry(NamedTuple):
    """One address configured on this machine."""
    iface: str
    address: Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
    label: str


class AddressChange(NamedTuple):
    """One address to add (with its label and broadcast) or delete."""
    iface: str
    address: Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
    label: str = ""
    broadcast: Optional[str] = None


class Rtnetlink:
    """Address dumps and batches of address changes, straight to the kernel."""

    def __init__(self, opener=open_rtnetlink):
        self.opener = opener

    def dump(self) -> List[AddressEntry]:
        sock = self.opener()
        try:
            sock.settimeout(IP_TIMEOUT_S)
            sock.send(netlink_dump_request(RTM_GETADDR, 1))
            found, names = [], {}           # interface index -> name: looked up once, not once an address
            while True:
                for event in parse_netlink(sock.recv(NETLINK_READ_BYTES)):
                    if event.kind == "done" and event.seq == 1:
                        return found
                    if event.kind == "error" and event.seq == 1:
                        raise OSError(event.ifindex, os.strerror(event.ifindex))
                    if event.kind == "address" and event.seq == 1:
                        if event.ifindex not in names:
                            names[event.ifindex] = interface_name(event.ifindex)
                        iface = names[event.ifindex]
                        found.append(AddressEntry(iface, ipaddress.ip_interface(f"{event.ip}/{event.prefixlen}"),
                                                  event.label or iface))
        finally:
            sock.close()

    def change(self, kind: int, changes: List[AddressChange]) -> List[str]:
        """Send every change (RTM_NEWADDR or RTM_DELADDR) in as few datagrams as fit, then collect
        one acknowledgement each: the error of each change, "" for success, in order."""
        results = [""] * len(changes)
        sock = self.opener()
        try:
            sock.settimeout(IP_TIMEOUT_S)
            batch, waiting = b"", set()
            for seq, change in enumerate(changes, 1):
                try:
                    index = socket.if_nametoindex(change.iface.split(":")[0])
                except OSError:
                    results[seq - 1] = f"interface {change.iface} does not exist"
                    continue
                request = address_request(kind, seq, index, change.address, change.label, change.broadcast)
                if len(batch) + len(request) > NETLINK_BATCH_BYTES:
                    sock.send(batch)
                    batch = b""
                batch += request
                waiting.add(seq)
            if batch:
                sock.send(batch)
            while waiting:
                try:
                    data = sock.recv(NETLINK_READ_BYTES)
                except socket.timeout:
                    for seq in waiting:
                        results[seq - 1] = f"no answer from the kernel in {IP_TIMEOUT_S} s"
                    break
                for event in parse_netlink(data):
                    if event.kind == "error" and event.seq in waiting:
                        waiting.discard(event.seq)
                        results[event.seq - 1] = os.strerror(event.ifindex) if event.ifindex else ""
            return results
        finally:
            sock.close()


def interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


class IpCommand:
    """The same as Rtnetlink with ip(8), one process per address: where rtnetlink cannot be opened."""

    def __init__(self, run):
        self.run = run

    def dump(self) -> List[AddressEntry]:
        out = self.run(["ip", "-o", "addr", "show"], IP_TIMEOUT_S)
        found = []
        for line in out.output.splitlines():
            match = re.match(r"\d+:\s+(\S+?)(?:@\S+)?\s+inet6?\s+(\S+)(.*)", line)
            if match:
                rest = match.group(3).split("\\")[0].split()
                label = rest[-1] if rest and " inet " in line else match.group(1)    # IPv4 labels end the line
                found.append(AddressEntry(match.group(1), ipaddress.ip_interface(match.group(2)), label))
        return found

    def change(self, kind: int, changes: List[AddressChange]) -> List[str]:
        results = []
        for change in changes:
            family = "-6" if change.address.version == 6 else "-4"
            argv = ["ip", family, "addr", "add" if kind == RTM_NEWADDR else "del", str(change.address)]
            if kind == RTM_NEWADDR and change.broadcast:
                argv += ["brd", change.broadcast]
            argv += ["dev", change.iface.split(":")[0]]
            if kind == RTM_NEWADDR and change.label:
                argv += ["label", change.label]
            if kind == RTM_NEWADDR and change.address.version == 6:
                argv.append("nodad")
            result = self.run(argv, IP_TIMEOUT_S)
            results.append("" if result.returncode == 0 else f"{' '.join(argv)}: {result.output.strip()}")
        return results


READS_PER_WAKEUP = 64   # datagrams read from one socket (netlink, ICMP, ARP) per wake-up: then the
                        # loop serves heartbeats (or the ARP probe its deadline) before reading on
NETLINK_START_S = 2.0                   # for the first dump of links and addresses


def open_watch_socket() -> socket.socket:
    """A routing socket subscribed to link changes and to the addresses of both families."""
    return open_rtnetlink(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)


# #### Kernel I/O: ARP and neighbour discovery #####################################################

SIOCGIFHWADDR = 0x8927
ETH_P_ARP = 0x0806
ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT, ND_NA_FLAG_OVERRIDE = 135, 136, 0x20000000
ND_OPT_SOURCE_LINKADDR, ND_OPT_TARGET_LINKADDR = 1, 2
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
ALL_NODES = "ff02::1"


def interface_mac(iface: str) -> bytes:
    """The interface's hardware address (SIOCGIFHWADDR)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(probe.fileno(), SIOCGIFHWADDR, struct.pack("256s", iface.encode()[:IFNAMSIZ - 1]))
        return raw[18:24]
    finally:
        probe.close()


def arp_frame(mac: bytes, ip: str, reply: bool) -> bytes:
    """A broadcast gratuitous ARP frame: 'who-has IP tell IP', or 'IP is-at MAC'."""
    addr = socket.inet_aton(ip)
    target_mac = b"\xff" * 6 if reply else b"\0" * 6
    return (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2 if reply else 1)
            + mac + addr + target_mac + addr)


def neighbour_advertisement(mac: bytes, ip: str) -> bytes:
    """An unsolicited neighbour advertisement for ip (RFC 4861 7.2.6): override flag set, not
    solicited, with the target link-layer address option. The kernel fills in the checksum."""
    return (struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, ND_NA_FLAG_OVERRIDE) + socket.inet_pton(socket.AF_INET6, ip)
            + struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac)


def open_advertiser() -> socket.socket:
    """A raw ICMPv6 socket that only sends: hop limit 255 (receivers drop anything less), no input."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    except OSError:
        sock.close()
        raise
    return sock


def announce_addresses(held: List[Tuple[str, str]]) -> List[str]:
    """One round for every (interface, address): a gratuitous ARP request and reply for IPv4, an
    unsolicited neighbour advertisement to all nodes, from the address itself, for IPv6. One raw
    socket per family. Returns the failures, one line each."""
    failures, macs, sockets = [], {}, {}
    try:
        for iface, ip in held:
            device = iface.split(":")[0]
            try:
                if device not in macs:
                    macs[device] = interface_mac(device)
                version = 6 if ":" in ip else 4
                if version not in sockets:
                    sockets[version] = open_advertiser() if version == 6 else \
                        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
                sock = sockets[version]
                if version == 6:
                    index = socket.if_nametoindex(device)
                    pktinfo = socket.inet_pton(socket.AF_INET6, ip) + struct.pack("=I", index)
                    sock.sendmsg([neighbour_advertisement(macs[device], ip)],
                                 [(socket.IPPROTO_IPV6, IPV6_PKTINFO, pktinfo)], 0, (ALL_NODES, 0, 0, index))
                else:
                    for reply in (False, True):
                        sock.sendto(arp_frame(macs[device], ip, reply), (device, ETH_P_ARP))
            except OSError as err:
                failures.append(f"{'neighbour advertisement' if ':' in ip else 'gratuitous ARP'} for {ip} "
                                f"on {device} failed: {err.strerror or err}")
    finally:
        for sock in sockets.values():
            sock.close()
    return failures


def arp_probe(mac: bytes, ip: str) -> bytes:
    """An ARP probe (RFC 5227): 'who-has IP' from sender 0.0.0.0. A host that has IP answers it,
    and neither proxy ARP nor a host's own defence gets in the way."""
    return (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + b"\0" * 4
            + b"\0" * 6 + socket.inet_aton(ip))


def neighbour_solicitation(mac: bytes, ip: str) -> bytes:
    """'Who has IP?' with our link-layer address; the kernel fills in the checksum."""
    return (struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, ip)
            + struct.pack("!BB", ND_OPT_SOURCE_LINKADDR, 1) + mac)


def solicited_node(ip: str) -> str:
    """The solicited-node multicast group of an IPv6 address (ff02::1:ffXX:XXXX)."""
    return str(ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + ipaddress.IPv6Address(ip).packed[13:]))


def answer_from_elsewhere(packet: bytes, ours: Dict[str, bytes]) -> Optional[Tuple[str, bytes]]:
    """(address, MAC) when packet says another machine has one of our addresses: an ARP frame whose
    sender is that address, or a neighbour advertisement for it, from a MAC not ours; else None."""
    if len(packet) >= 32 and packet[12:14] == b"\x08\x06":
        ip, mac = socket.inet_ntoa(packet[28:32]), packet[22:28]
    elif len(packet) >= 32 and packet[0] == ND_NEIGHBOR_ADVERT:
        ip, mac = str(ipaddress.IPv6Address(packet[8:24])), b""
        offset = 24
        while offset + 8 <= len(packet) and packet[offset + 1]:
            if packet[offset] == ND_OPT_TARGET_LINKADDR:
                mac = packet[offset + 2:offset + 8]
            offset += 8 * packet[offset + 1]
    else:
        return None
    if ip in ours and mac != ours[ip]:
        return ip, mac
    return None


# #### Kernel I/O: real-time scheduling and locked memory ##########################################

MCL_CURRENT, MCL_FUTURE = 1, 2            # mlockall(2)'s flags (<sys/mman.h>, Linux)
LOCKED_THREAD_STACK_BYTES = 512 << 10     # a thread's stack, locked whole: 512 KiB rather than glibc's 8 MiB


def make_realtime(priority: Optional[int], log) -> None:
    """ha.cf's `realtime` (on by default), as 3.0.6's cl_make_realtime does it: SCHED_RR at `rtprio`
    (by default the lowest, 1; clamped to the highest) and the process locked in memory, so that a
    runaway process or a memory squeeze does not hold heartbeats back. 3.0.6 locks what it maps
    after it grew its heap (MCL_FUTURE); a Python process has mapped most of itself by now, so both.
    SCHED_RESET_ON_FORK, and memory locks never being inherited, make scripts, agents and hooks run
    as normal processes. A failure is logged in 3.0.6's words and the daemon runs on. Threads made
    afterwards set it again (scheduled_like_the_daemon); their stacks are made smaller, since a
    locked stack is all in RAM."""
    low, high = os.sched_get_priority_min(os.SCHED_RR), os.sched_get_priority_max(os.SCHED_RR)
    chosen = min(max(priority or low, low), high)
    try:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(chosen))
    except OSError as err:
        log.error(f"Unable to set scheduler parameters.: {err.strerror}")
    threading.stack_size(LOCKED_THREAD_STACK_BYTES)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.error(f"Unable to lock pid {os.getpid()} in memory: {os.strerror(ctypes.get_errno())}")
    else:
        log.info(f"pid {os.getpid()} locked in memory.")


# #### Kernel I/O: the watchdog device #############################################################

WDIOC_SETTIMEOUT = 0xC0045706      # _IOWR('W', 6, int) of linux/watchdog.h
WATCHDOG_FEED = b"\0"              # 3.0.6 writes "" with a length of 1: its terminating NUL
WATCHDOG_MAGIC_CLOSE = b"V"        # before close(2): the driver stops its timer instead of resetting


class WatchdogError(HAError):
    """The watchdog device of ha.cf cannot be opened: the daemon does not start."""


class Watchdog:
    """`watchdog DEVICE` in ha.cf, driven as Heartbeat 3.0.6 drives it: opened at start, its
    timer set to deadtime + 10 ms in whole seconds (when it is a character device), a byte
    written every keepalive by the event loop (a loop that hangs stops feeding it, and the
    kernel resets the node), 'V' written before close on a clean stop so that the machine is
    not reset. A crash closes it without 'V'. A FIFO or a plain file can stand in for it."""

    def __init__(self, path: str, log, clock=time.monotonic, ioctl=fcntl.ioctl):
        self.path, self.log, self.clock, self.ioctl = path, log, clock, ioctl
        self.fd = -1
        self.timeout_s: Optional[int] = None
        self.last_fed: Optional[float] = None
        self.feeds = 0

    def open(self, deadtime_ms: int) -> None:
        """Open (never create) the device and feed it once; WatchdogError if it cannot be opened.
        O_NONBLOCK: a fake device that is full must not block the loop (a real one never blocks)."""
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise WatchdogError(f"Cannot open watchdog device: {self.path} ({err.strerror}); heartbeat not "
                                "started: load its driver (e.g. modprobe softdog) or remove the watchdog "
                                "line from ha.cf") from None
        self.log.notice(f"Using watchdog device: {self.path}")
        self.retime(deadtime_ms)
        self.feed()

    def retime(self, deadtime_ms: int) -> None:
        """Its timer, deadtime + 10 ms in whole seconds: at open, and again when SIGHUP changes the
        deadtime (shorter: the node must reset within it; longer: a longer keepalive must not
        outlast the timer between two feeds)."""
        if self.fd >= 0 and stat.S_ISCHR(os.fstat(self.fd).st_mode):
            self.set_timeout((deadtime_ms + 10 + 999) // 1000)

    def set_timeout(self, seconds: int) -> None:
        self.log.debug(f"Set watchdog timer to {seconds} seconds.")
        try:
            answer = self.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
            self.timeout_s = struct.unpack("i", answer)[0]       # what the driver chose
        except OSError as err:
            self.log.error(f"WDIOC_SETTIMEOUT: Failed to set watchdog timer to {seconds} seconds.: "
                           f"{err.strerror}")

    def feed(self) -> None:
        """One byte; on a write failure 3.0.6 gives the device up (with 'V') and runs on."""
        if self.fd < 0:
            return
        try:
            written, reason = os.write(self.fd, WATCHDOG_FEED), ""
        except OSError as err:
            written, reason = 0, f": {err.strerror}"
        if written != 1:
            self.log.error(f"Watchdog write failure: closing {self.path}!{reason}")
            self.close()
            return
        self.last_fed = self.clock()
        self.feeds += 1

    def close(self) -> None:
        """The magic close: 'V', then close(2). Only for a clean stop."""
        if self.fd < 0:
            return
        try:
            if os.write(self.fd, WATCHDOG_MAGIC_CLOSE) != 1:
                raise OSError(0, "short write")
            self.log.debug("Successful watchdog 'V' write")
        except OSError as err:
            self.log.error(f"Watchdog write magic character failure: closing {self.path}!: {err.strerror}")
        try:
            os.close(self.fd)
            self.log.debug("Successful watchdog close")
        except OSError as err:
            self.log.error(f"Watchdog close(2) failed.: {err.strerror}")
        self.fd = -1

    def snapshot(self) -> dict:
        return {"device": self.path, "open": self.fd >= 0, "timeout_s": self.timeout_s, "feeds": self.feeds,
                "last_fed_s": None if self.last_fed is None else round(self.clock() - self.last_fed, 3)}


def watchdog_problem(path: str) -> Optional[str]:
    """What `check` says of the watchdog device: the daemon refuses a path it cannot open, and
    writes to anything else that is not a character device without effect."""
    try:
        info = os.stat(path)
    except OSError as err:
        return (f"watchdog device {path}: {err.strerror}; the daemon will not start "
                "(load the watchdog driver, e.g. modprobe softdog)")
    if not stat.S_ISCHR(info.st_mode):
        return f"watchdog device {path} is not a character device: feeding it resets nothing"
    return None


# #### Kernel I/O: processes (/proc and pidfds) ####################################################

PROC_DIR = "/proc"
PROC_STAT_READ_BYTES = 1024        # /proc/PID/stat is one line of 52 numbers and a 15-character name
PROC_CMDLINE_READ_BYTES = 4096     # argv[0] of a path up to PATH_MAX, and its NUL
PROC_STATUS_READ_BYTES = 16384     # /proc/PID/status, 1.5 KB today; its ctxt_switches lines come last
PROC_STARTTIME_FIELD = 19          # starttime (field 22 of proc(5)), counted after the state (field 3) as 0


class ProcStat(NamedTuple):
    """One process as /proc/PID/stat shows it. A pid may be used again once its process is gone;
    (pid, starttime) may not: it says which process a pid was."""
    pid: int
    comm: str                      # its name, at most TASK_COMM_CHARS
    state: str                     # R running, S sleeping, D uninterruptible (I/O), Z zombie, T stopped...
    starttime: int                 # clock ticks after boot


def parse_proc_stat(pid: int, data: bytes) -> Optional[ProcStat]:
    """/proc/PID/stat's line; the name sits between the first '(' and the last ')' (it may hold both)."""
    head, paren, tail = data.rpartition(b")")
    opened = head.find(b"(")
    fields = tail.split()
    if not paren or opened < 0 or len(fields) <= PROC_STARTTIME_FIELD or not fields[PROC_STARTTIME_FIELD].isdigit():
        return None
    return ProcStat(pid, os.fsdecode(head[opened + 1:]), fields[0].decode("ascii", "replace"),
                    int(fields[PROC_STARTTIME_FIELD]))


def read_small_file(path: str, limit: int) -> Optional[bytes]:
    """The first `limit` bytes of a /proc file, or None when it is gone (the process exited) or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


class ProcTable:
    """The processes of this pid namespace as /proc shows them, and pidfds that the kernel makes readable
    when their process exits (pidfd_open(2): Linux 5.3 and Python 3.9). The process watch reaches the
    kernel through it alone, so tests can wrap it."""

    def __init__(self, root: str = PROC_DIR):
        self.root = root

    def pids(self) -> List[int]:
        try:
            return [int(name) for name in os.listdir(self.root) if name.isdigit()]
        except OSError:
            return []

    def stat(self, pid: int) -> Optional[ProcStat]:
        data = read_small_file(f"{self.root}/{pid}/stat", PROC_STAT_READ_BYTES)
        return parse_proc_stat(pid, data) if data else None

    def argv0(self, pid: int) -> Optional[str]:
        """The command as it was run (argv[0] of /proc/PID/cmdline); None for a kernel thread, a zombie or a
        process gone."""
        data = read_small_file(f"{self.root}/{pid}/cmdline", PROC_CMDLINE_READ_BYTES)
        return os.fsdecode(data.split(b"\0", 1)[0]) if data else None

    def switches(self, pid: int) -> Optional[int]:
        """How many times it has been switched out (voluntary + nonvoluntary, /proc/PID/status): a process
        in D state whose count stands still is not waking at all (the kernel's hung-task test)."""
        data = read_small_file(f"{self.root}/{pid}/status", PROC_STATUS_READ_BYTES)
        if not data:
            return None
        counts = [int(line.split()[1]) for line in data.splitlines()
                  if line.startswith((b"voluntary_ctxt_switches:", b"nonvoluntary_ctxt_switches:"))]
        return sum(counts) if counts else None

    def open_pidfd(self, pid: int) -> int:
        """A pidfd for pid (close-on-exec); OSError: ESRCH when it is gone, ENOSYS without pidfd_open."""
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None:
            raise OSError(errno.ENOSYS, "this Python has no os.pidfd_open (Python 3.9 and Linux 5.3 have it)")
        return pidfd_open(pid)

# ==================================================================================================
# 5. ACTING: addresses, resource scripts and groups, fencing
# ==================================================================================================


# #### Acting: addresses ###########################################################################

GARP_ROUNDS_S = (0.0, 0.25, 1.0, 2.0, 4.0)   # when to announce a taken address again
CONFLICT_WAIT_S = 0.3           # for another host's answer to our probes: milliseconds on a LAN


class ConflictProbe:
    """Asks the LAN, right after the addresses were added, whether another host has them too:
    an ARP probe per IPv4 address, a neighbour solicitation per IPv6 one, then the answers are
    read until CONFLICT_WAIT_S after the start. The addresses serve meanwhile; the caller waits
    for the verdict only once the rest of the group has started."""

    def __init__(self, held: List[Tuple[str, str]], current: List[AddressEntry]):
        self.deadline = time.monotonic() + CONFLICT_WAIT_S
        self.ours: Dict[str, bytes] = {}
        self.sockets: List[socket.socket] = []
        self.problems: List[str] = []
        link_local = {entry.iface: str(entry.address.ip) for entry in current
                      if entry.address.version == 6 and entry.address.ip.is_link_local}
        try:
            arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            self.sockets.append(arp)
            icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            self.sockets.append(icmp6)
            icmp6.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter_passing(ND_NEIGHBOR_ADVERT))
            icmp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            icmp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            for sock in self.sockets:
                sock.setblocking(False)
            macs: Dict[str, bytes] = {}
            for iface, ip in held:
                device = iface.split(":")[0]
                if device not in macs:
                    macs[device] = interface_mac(device)
                mac = self.ours[ip] = macs[device]
                if ":" not in ip:
                    arp.sendto(arp_probe(mac, ip), (device, ETH_P_ARP))
                elif device in link_local:       # from our link-local address: the answer comes back to it
                    index = socket.if_nametoindex(device)
                    pktinfo = socket.inet_pton(socket.AF_INET6, link_local[device]) + struct.pack("=I", index)
                    icmp6.sendmsg([neighbour_solicitation(mac, ip)], [(socket.IPPROTO_IPV6, IPV6_PKTINFO, pktinfo)],
                                  0, (solicited_node(ip), 0, 0, index))
        except OSError as err:
            self.problems.append(f"cannot ask whether another host has these addresses: {err.strerror or err}")

    def conflicts(self) -> Dict[str, bytes]:
        """Wait out the window; the addresses another host answered for, with its MAC."""
        found: Dict[str, bytes] = {}
        if not self.sockets:
            return found
        try:
            with selectors.DefaultSelector() as selector:
                for sock in self.sockets:
                    selector.register(sock, selectors.EVENT_READ)
                while time.monotonic() < self.deadline:
                    for key, _ in selector.select(max(0.0, self.deadline - time.monotonic())):
                        for _ in range(READS_PER_WAKEUP):
                            try:
                                answer = answer_from_elsewhere(key.fileobj.recv(2048), self.ours)
                            except (BlockingIOError, InterruptedError):
                                break
                            if answer:
                                found.setdefault(*answer)
        finally:
            self.close()
        return found

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


@dataclasses.dataclass
class AddressPlan:
    """Where an IPResource goes: interface, prefix, broadcast."""
    iface: str
    prefix: int
    broadcast: Optional[str]


class IPAddresses:
    """Virtual IPs of both families: planned from the addresses there are, added and deleted in
    batches, announced by gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6)."""

    def __init__(self, run=run_command, log=None, kernel=None, prober=ConflictProbe):
        self.log, self.prober = log, prober
        self.kernel = kernel or self.open_kernel(run)

    def open_kernel(self, run):
        """rtnetlink, or ip(8) where it cannot be opened (said once in the log)."""
        try:
            open_rtnetlink().close()
            return Rtnetlink()
        except OSError as err:
            if self.log:
                self.log.warn(f"rtnetlink: {err.strerror or err}: addresses are changed with ip(8), one process each")
            return IpCommand(run)

    def change(self, kind: int, changes: List[AddressChange]) -> List[str]:
        """The kernel's answer to each change; when it cannot be asked at all, that for each."""
        try:
            return self.kernel.change(kind, changes) if changes else []
        except OSError as err:
            return [f"rtnetlink: {err.strerror or err}"] * len(changes)

    def addresses(self) -> List[AddressEntry]:
        """Every address of both families on this machine."""
        try:
            return self.kernel.dump()
        except OSError as err:
            raise ResourceError(f"cannot read this machine's addresses: {err.strerror or err}") from None

    def plan(self, res: IPResource, current=None, subnets=None) -> AddressPlan:
        """Fill in what haresources left out, from the addresses already configured: the interface
        with an address whose subnet holds the VIP (as IPaddr and IPv6addr look for it). subnets:
        those of current for res (see subnets), when already worked out for another address."""
        vip = ipaddress.ip_address(res.ip)
        for iface, network, ip in subnets if subnets is not None else \
                self.subnets(res, current if current is not None else self.addresses()):
            if ip != vip and vip in network:
                return AddressPlan(iface, network.prefixlen, res.broadcast)
        if res.iface and res.prefix is not None:
            return AddressPlan(res.iface, res.prefix, res.broadcast)
        bits = "PREFIX" if vip.version == 6 else "BITS"
        raise ResourceError(f"no interface has a subnet containing {res.ip}: write {res.ip}/{bits}/IFACE "
                            "in haresources")

    @staticmethod
    def subnets(res: IPResource, current: List[AddressEntry]) -> list:
        """(interface, subnet, address) for each address of current whose subnet could take res's
        VIP, in order, by the rules of plan; the same for every VIP with res's family, interface
        and prefix, so that a batch works them out once for all its addresses, not once each."""
        found = []
        for iface, address, _ in current:
            if address.version != res.version or address.network.prefixlen == address.max_prefixlen or \
                    address.ip.is_link_local or (res.iface and iface != res.iface):
                continue
            network = address.network if res.prefix is None else \
                ipaddress.ip_interface(f"{address.ip}/{res.prefix}").network
            found.append((iface, network, address.ip))
        return found

    @staticmethod
    def holders(current: List[AddressEntry]) -> Dict[str, str]:
        """Address -> the interface that carries it (the first, as holder_iface), for a whole batch."""
        found: Dict[str, str] = {}
        for entry in current:
            found.setdefault(str(entry.address.ip), entry.iface)
        return found

    @staticmethod
    def holder_iface(res: IPResource, current: List[AddressEntry]) -> Optional[str]:
        """The interface that carries res.ip in current, or None."""
        for entry in current:
            if str(entry.address.ip) == res.ip:
                return entry.iface
        return None

    def held(self, res: IPResource) -> Optional[str]:
        """The interface that carries res.ip now, or None."""
        return self.holder_iface(res, self.addresses())

    def add(self, resources: List[IPResource]) -> Tuple[List[Tuple[IPResource, str]], Optional[ConflictProbe]]:
        """Add the addresses not there yet in one batch, ask whether another host has them and
        announce them all. Returns those that could not be added, each with the reason (the others
        stay, for the caller to release with the group), and the probe whose verdict is awaited
        later. Every millisecond here is a millisecond of failover: one dump, one batch."""
        current = self.addresses()
        labels = {entry.label for entry in current}
        holders, subnets = self.holders(current), {}
        changes, wanted, failed = [], [], []
        next_alias: Dict[str, int] = {}       # interface -> the first alias number not looked at yet
        for res in resources:
            if holders.get(res.ip):
                continue
            key = (res.version, res.iface, res.prefix)
            if key not in subnets:
                subnets[key] = self.subnets(res, current)
            try:
                plan = self.plan(res, current, subnets[key])
            except ResourceError as err:
                failed.append((res, str(err)))
                continue
            label = ""
            if res.version == 4:              # the lowest free alias: those below it were taken already
                first = next_alias.get(plan.iface, 0)
                n = next(n for n in range(first, first + len(labels) + 1) if f"{plan.iface}:{n}" not in labels)
                next_alias[plan.iface] = n + 1
                label = f"{plan.iface}:{n}"
                labels.add(label)
            address = ipaddress.ip_interface(f"{res.ip}/{plan.prefix}")
            changes.append(AddressChange(plan.iface, address, label if len(label) < IFNAMSIZ else "", plan.broadcast))
            wanted.append(res)
        results = self.change(RTM_NEWADDR, changes)
        added = []
        for res, change, error in zip(wanted, changes, results):
            if error:
                failed.append((res, f"cannot add {change.address} on {change.iface}: {error}"))
                continue
            added.append((change.iface, str(change.address.ip)))
            if self.log:
                self.log.info(f"{res.agent}: added {change.address} on {change.iface}"
                              + (f" ({change.label})" if change.label else ""))
        probe = self.prober(added, current) if added else None
        if added:
            self.announce(added)
        return failed, probe

    def announce(self, held: List[Tuple[str, str]], rounds=GARP_ROUNDS_S) -> None:
        """Announce from a thread of its own: now, and again over a few seconds (a lost frame must
        not strand clients), each address as long as it is still ours."""
        threading.Thread(target=self.announce_rounds, args=(held, rounds), name="announce", daemon=True).start()

    def announce_rounds(self, held: List[Tuple[str, str]], rounds) -> None:
        scheduled_like_the_daemon()
        started = time.monotonic()
        for n, due in enumerate(rounds):
            time.sleep(max(0.0, started + due - time.monotonic()))
            if n:
                try:
                    now = {(entry.iface, str(entry.address.ip)) for entry in self.addresses()}
                except ResourceError:
                    return
                held = [pair for pair in held if pair in now]
            for failure in announce_addresses(held):
                if self.log:
                    self.log.warn(failure)

    def remove(self, resources: List[IPResource]) -> None:
        """Delete those of the addresses that are here, in one batch; ResourceError names each
        address still here afterwards."""
        carriers: Dict[str, List[AddressEntry]] = {}       # address -> its entries, in current's order
        for entry in self.addresses():
            carriers.setdefault(str(entry.address.ip), []).append(entry)
        changes = [AddressChange(entry.iface, entry.address) for res in resources for entry in carriers.get(res.ip, [])]
        results = self.change(RTM_DELADDR, changes)
        problems = []
        for change, error in zip(changes, results):
            name = "IPv6addr" if change.address.version == 6 else "IPaddr"
            if error and error != os.strerror(errno.EADDRNOTAVAIL):      # not there any more: removed
                problems.append(f"cannot remove {change.address} from {change.iface}: {error}")
            elif self.log:
                self.log.info(f"{name}: removed {change.address} from {change.iface}")
        if problems:
            raise ResourceError("; ".join(problems))


# #### Acting: OCF resource agents ##################################################################

OCF_SUCCESS = 0                 # the OCF exit codes an agent answers with (OCF Resource Agent API 1.0)
OCF_NOT_RUNNING = 7             # a monitor's "cleanly stopped"; any other code but 0 is an error
OCF_EXIT_NAMES = {0: "OCF_SUCCESS", 1: "OCF_ERR_GENERIC", 2: "OCF_ERR_ARGS", 3: "OCF_ERR_UNIMPLEMENTED",
                  4: "OCF_ERR_PERM", 5: "OCF_ERR_INSTALLED", 6: "OCF_ERR_CONFIGURED", 7: "OCF_NOT_RUNNING",
                  EXIT_TIMED_OUT: "timed out"}
AGENT_ACTIONS = {"start": "start", "stop": "stop", "status": "monitor", "validate-all": "validate-all"}
EXIT_REASON_PREFIX = "ocf-exit-reason:"     # Pacemaker's: an agent prints why it failed after it
RSCTMP_DEFAULT = "/run/resource-agents"     # HA_RSCTMP where nobody gives one: resource-agents' own
RSCTMP_DIR = "rsctmp"           # the daemon's HA_RSCTMP, in its run directory: gone at reboot, one per node
AGENT_DATE_RE = re.compile(r"^\d{4}/\d\d/\d\d_\d\d:\d\d:\d\d ")   # hadate on an agent's stderr lines


def ocf_exit_text(code: int) -> str:
    return f"{code} ({OCF_EXIT_NAMES[code]})" if code in OCF_EXIT_NAMES else str(code)


def exit_reason(output: str) -> str:
    """The agent's own word on why it failed (ocf_exit_reason), or its output's end."""
    reasons = [line[len(EXIT_REASON_PREFIX):].strip() for line in output.splitlines()
               if line.startswith(EXIT_REASON_PREFIX)]
    return reasons[-1] if reasons else output.strip()[-START_OUTPUT_CHARS:]


def agent_environment(res: AgentResource, action: str, timeout_s: float, rsctmp_dir: str,
                      logging_env: Dict[str, str], check_level: int = 0) -> Dict[str, str]:
    """What Pacemaker's executor gives an agent: the OCF_ variables and its parameters as
    OCF_RESKEY_*; of Heartbeat's HA_ variables only where to log (no other ha.cf value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "OCF_"))}
    env.update(logging_env)
    env.update({"OCF_ROOT": OCF_ROOT, "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "0",
                "OCF_RESOURCE_INSTANCE": res.instance, "OCF_RESOURCE_TYPE": res.agent,
                "OCF_RESOURCE_PROVIDER": res.provider, "OCF_EXIT_REASON_PREFIX": EXIT_REASON_PREFIX,
                "OCF_RESKEY_CRM_meta_timeout": str(int(timeout_s * 1000)), "HA_RSCTMP": rsctmp_dir})
    env.update({RESKEY_PREFIX + key: value for key, value in res.params.items()})
    if action == "monitor":
        env["OCF_CHECK_LEVEL"] = str(check_level)
    return env


# #### Acting: scripts and groups ##################################################################

SCRIPT_TIMEOUT_S = 120          # start/stop of one resource script
STATUS_TIMEOUT_S = 30
STOP_RETRIES = 10               # Heartbeat's HA_STOPRETRYMAX: a failed stop is retried, 1 s apart
STOP_BUDGET_S = 240             # one release, retries included; with the final status check and the
                                # reboot it stays inside the service managers' stop timeout (300 s)
REBOOT_ARGV = ["/sbin/reboot", "-nf"]   # what Heartbeat runs when a resource will not stop
REBOOT_TIMEOUT_S = 10


class ResourceError(HAError):
    """A resource could not be started or stopped; specs: which ones, when several were tried at once;
    conflict: another host answered for an address."""

    def __init__(self, message: str, specs: Optional[List[str]] = None, conflict: bool = False):
        super().__init__(message)
        self.specs, self.conflict = specs or [], conflict


def script_argv(res: ScriptResource, operation: str) -> List[str]:
    """resource.d scripts take their arguments first (Heartbeat), LSB scripts the operation first."""
    return [res.path, operation, *res.args] if res.lsb else [res.path, *res.args, operation]


def says_running(res: ServiceResource, result: CommandResult) -> bool:
    """Heartbeat reads `status` output: 'running' (not 'not running') or 'OK'; LSB adds exit 0; an
    OCF agent's monitor says it with 0."""
    if isinstance(res, AgentResource):
        return result.returncode == OCF_SUCCESS
    text = result.output.lower()
    if "not running" in text or "stopped" in text:
        return False
    if res.lsb:
        return result.returncode == 0
    return "running" in text or "OK" in result.output


def in_steps(resources: list) -> List[list]:
    """A group's resources in start order, consecutive addresses together: each run of addresses
    is added (and removed) as one batch."""
    steps: List[list] = []
    for res in resources:
        if isinstance(res, IPResource) and steps and isinstance(steps[-1][0], IPResource):
            steps[-1].append(res)
        else:
            steps.append([res])
    return steps


class Resources:
    """Start and stop resource groups; called from the worker thread, never from the loop."""

    def __init__(self, config: Config, log, run=run_command, addresses: Optional[IPAddresses] = None,
                 events: Optional[EventLog] = None, rsctmp_dir: str = RSCTMP_DEFAULT):
        self.config, self.log, self.run, self.rsctmp_dir = config, log, run, rsctmp_dir
        self.addresses = addresses or IPAddresses(run, log)
        self.stuck: set = set()      # keys of groups with a resource that would not stop
        self.conflicted: set = set()  # keys of groups whose last start met another host's answer for an address
        self.events = events if events is not None else EventLog()
        # spec -> the session of its last successful start script: what that left running (`daemon &`)
        # is the service (run_command gives each script a session of its own); written by the worker
        self.sessions: Dict[str, int] = {}

    def environment(self, operation: str) -> dict:
        """What Heartbeat exports to scripts: HA_<directive>, HA_CURHOST, HA_DIR and friends."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HA_")}
        hacf = self.config.hacf
        env.update({f"HA_{name}": value for name, value in hacf.values.items()})
        env.update(hacf.env)
        env.update({"HA_CURHOST": self.config.node, "HA_DIR": self.config.config_dir,
                    "HA_RESOURCEDIR": os.path.join(self.config.config_dir, "resource.d"),
                    "HA_LOGFILE": hacf.logfile or "", "HA_DEBUGLOG": hacf.debugfile or "",
                    "HA_LOGFACILITY": hacf.logfacility or "", "HA_DATEFMT": "%Y/%m/%d_%T ",
                    "HA_NICEFAILBACK": "no" if hacf.auto_failback == "legacy" else "yes",
                    "HA_keepalive": f"{hacf.keepalive_ms}ms", "HA_deadtime": f"{hacf.deadtime_ms}ms",
                    "HA_warntime": f"{hacf.warntime_ms}ms", "HA_initdead": f"{hacf.initdead_ms}ms",
                    "HA_OPERATION": operation})
        return env

    def logging_environment(self) -> Dict[str, str]:
        """Where an agent logs, as Heartbeat told its scripts: ha.cf's logfacility, logfile, debugfile."""
        hacf = self.config.hacf
        return {"HA_LOGFACILITY": hacf.logfacility or "", "HA_LOGFILE": hacf.logfile or "",
                "HA_DEBUGLOG": hacf.debugfile or "", "HA_DATEFMT": "%Y/%m/%d_%T "}

    def run_agent(self, res: AgentResource, operation: str, timeout_s: float, quiet: bool,
                  check_level: int) -> CommandResult:
        """One Heartbeat operation as the agent's action (status: monitor); its output in the log line
        by line under the agent's tag, TYPE(INSTANCE), as its own log lines have it."""
        action = AGENT_ACTIONS[operation]
        (self.log.debug if quiet else self.log.info)(f"Running {res.path} {action} ({res.spec})")
        try:
            os.makedirs(self.rsctmp_dir, mode=0o755, exist_ok=True)
        except OSError as err:
            return CommandResult(EXIT_NOT_FOUND, f"cannot make HA_RSCTMP {self.rsctmp_dir}: {err.strerror}")
        env = agent_environment(res, action, timeout_s, self.rsctmp_dir, self.logging_environment(), check_level)
        result = self.run([res.path, action], timeout_s, env)
        for line in result.output.splitlines():
            (self.log.debug if operation == "status" else self.log.info)(
                f"{res.agent}({res.instance})[{action}]: {AGENT_DATE_RE.sub('', line)}")
        healthy = (OCF_SUCCESS, OCF_NOT_RUNNING) if operation == "status" else (OCF_SUCCESS,)
        if result.returncode not in healthy and not quiet:
            why = exit_reason(result.output).splitlines()
            (self.log.warn if operation == "status" else self.log.error)(
                f"{res.kind} {action} of {res.instance} returned {ocf_exit_text(result.returncode)}"
                + (f": {why[-1]}" if why else ""))
        return result

    def run_script(self, res: ServiceResource, operation: str, timeout_s: Optional[float] = None,
                   quiet: bool = False, check_level: int = 0) -> CommandResult:
        """One operation of a script or an agent, within timeout_s (default 120 s, status 30 s);
        quiet: the "Running" line in debug only (a monitor's status checks); check_level: an agent
        monitor's OCF_CHECK_LEVEL."""
        if timeout_s is None:
            timeout_s = STATUS_TIMEOUT_S if operation == "status" else SCRIPT_TIMEOUT_S
        if isinstance(res, AgentResource):
            return self.run_agent(res, operation, timeout_s, quiet, check_level)
        argv = script_argv(res, operation)
        (self.log.debug if quiet else self.log.info)(f"Running {res.path} {' '.join(res.args)} {operation}")
        result = self.run(argv, timeout_s, self.environment(operation))
        for line in result.output.splitlines():     # start/stop output in the log, status chatter in debug
            (self.log.debug if operation == "status" else self.log.info)(f"{res.name}[{operation}]: {line}")
        if result.returncode != 0 and operation != "status":
            self.log.error(f"Return code {result.returncode} from {res.path}")
        return result

    def is_running(self, res) -> bool:
        if isinstance(res, IPResource):
            return self.addresses.held(res) is not None
        return says_running(res, self.run_script(res, "status"))

    def start_addresses(self, resources: List[IPResource]) -> Optional[ConflictProbe]:
        """Add addresses in one batch; ResourceError naming those that failed. Returns the probe
        for addresses another host may have too (see conflicts)."""
        failed, probe = self.addresses.add(resources)
        for res, reason in failed:
            self.log.error(f"{res.agent} {res.spec}: {reason}")
        if failed:
            if probe:
                probe.close()
            raise ResourceError("; ".join(f"{res.spec}: {reason}" for res, reason in failed),
                                [res.spec for res, _ in failed])
        return probe

    def conflicts(self, resources: List[IPResource], probe: Optional[ConflictProbe]) -> None:
        """The probe's verdict: ResourceError naming each address another host answered for."""
        if not probe:
            return
        for problem in probe.problems:
            self.log.warn(problem)
        taken = probe.conflicts()
        failed = [res for res in resources if res.ip in taken]
        for res in failed:
            mac = ":".join(f"{octet:02x}" for octet in taken[res.ip])
            self.log.error(f"{res.agent} {res.spec}: {res.ip} is in use by another host ({mac} answered for it)")
        if failed:
            raise ResourceError("; ".join(f"{res.spec}: {res.ip} is in use by another host" for res in failed),
                                [res.spec for res in failed], conflict=True)

    def start(self, res) -> None:
        if isinstance(res, IPResource):
            self.conflicts([res], self.start_addresses([res]))
            return
        if self.is_running(res):
            self.log.info(f"Resource {res.spec} is already running")
            return
        result = self.run_script(res, "start")
        if result.returncode == 0 and result.pid:
            self.sessions[res.spec] = result.pid
        if result.returncode != 0:
            code = ocf_exit_text(result.returncode) if isinstance(res, AgentResource) else result.returncode
            raise ResourceError(f"{res.spec}: start returned {code}: {exit_reason(result.output)}")

    def stop(self, res, deadline: float) -> bool:
        """Stop one resource as Heartbeat does: retried 1 s apart, STOP_RETRIES times, each try
        within what is left before deadline. False when it still runs afterwards."""
        for attempt in range(STOP_RETRIES + 1):
            if attempt:
                time.sleep(1)
                self.log.info(f"Retrying failed stop operation [{res.spec}]")
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                self.log.error(f"No time left to stop {res.spec} ({STOP_BUDGET_S} s for a release)")
                break
            try:
                if isinstance(res, IPResource):
                    self.addresses.remove([res])
                    return True
                if self.run_script(res, "stop", timeout_s=min(SCRIPT_TIMEOUT_S, left_s)).returncode == 0:
                    return True
            except ResourceError as err:
                self.log.error(str(err))
        if self.is_stopped(res):
            self.log.error(f"Resource script for {res.spec} probably not LSB-compliant.")
            self.log.warn(f"it ({res.spec}) MUST succeed on a stop when already stopped")
            self.log.warn("Machine reboot narrowly avoided!")
            return True
        return False

    def is_stopped(self, res) -> bool:
        """Surely stopped: a status that hangs or cannot run says nothing, so it counts as running."""
        if isinstance(res, IPResource):
            return self.addresses.held(res) is None
        result = self.run_script(res, "status")
        if isinstance(res, AgentResource):
            return result.returncode == OCF_NOT_RUNNING
        return result.returncode not in EXIT_COULD_NOT_RUN and not says_running(res, result)

    def stop_all(self, resources: list) -> bool:
        """Stop resources in reverse order. One that will not stop leaves the machine in a state
        only a reboot cures (Heartbeat's RecoverFromFailedStop); the rest are left as they are."""
        deadline = time.monotonic() + STOP_BUDGET_S
        for step in reversed(in_steps(resources)):
            if isinstance(step[0], IPResource):
                try:
                    self.addresses.remove(step)         # one batch; on an error, one by one with retries
                    continue
                except ResourceError as err:
                    self.log.error(str(err))
            for res in reversed(step):
                if not self.stop(res, deadline):
                    self.recover_from_failed_stop(res)
                    return False
                self.sessions.pop(res.spec, None)
        return True

    def recover_from_failed_stop(self, res) -> None:
        """Reboot now, as Heartbeat 3.0.6 does: the peer takes the group over after deadtime, from a
        machine that surely runs nothing. When the reboot cannot be done, this node keeps the group
        and says so: telling the peer it is released would start a second copy."""
        self.log.crit("Resource STOP failure. Reboot required!")
        result = self.run(REBOOT_ARGV, REBOOT_TIMEOUT_S)
        if result.returncode == 0:
            self.log.crit("Killing heartbeat ungracefully!")
            os._exit(EXIT_GENERIC)          # as 3.0.6's kill -9: no release announced, no shutdone
        self.log.crit(f"Unable to force reboot. ({' '.join(REBOOT_ARGV)}: {result.output.strip()[-QUOTED_CHARS:]})")
        if self.peer_can_fence():
            self.log.crit("Killing heartbeat ungracefully! The peer resets this node (STONITH) before it takes "
                          f"the group: {res.spec} cannot run on two nodes")
            os._exit(EXIT_GENERIC)
        self.log.crit(f"{res.spec} may still run here: its group stays held by this node")

    def peer_can_fence(self) -> bool:
        """A stonith line for the peer (or *): it resets a node that went silent holding groups."""
        return any(line.host != self.config.node for line in self.config.hacf.stonith_lines)

    def acquire_group(self, group: ResourceGroup) -> Optional[str]:
        """Start the group's resources in order; on a failure stop what was started. None = success."""
        self.log.info(f"Acquiring resource group: {group.home} {' '.join(r.spec for r in group.resources)}")
        started, probes, began = 0, [], time.monotonic()
        try:
            for step in in_steps(group.resources):
                started += len(step)
                if isinstance(step[0], IPResource):
                    probes.append((step, self.start_addresses(step)))
                    self.events.record("addresses-added", " ".join(res.ip for res in step),
                                       duration_ms=(time.monotonic() - began) * 1000, group=group.key,
                                       node=self.config.node)
                else:
                    self.start(step[0])
            for addresses, probe in probes:      # the services started meanwhile: no time lost
                self.conflicts(addresses, probe)
        except ResourceError as err:
            for _, probe in probes:
                if probe:
                    probe.close()
            failed = err.specs or [group.resources[started - 1].spec]
            self.log.crit(f"Giving up resources due to failure of {' '.join(failed)}")
            (self.conflicted.add if err.conflict else self.conflicted.discard)(group.key)
            if not self.stop_all(group.resources[:started]):
                self.stuck.add(group.key)
            return str(err)
        self.stuck.discard(group.key)
        self.conflicted.discard(group.key)
        return None

    def release_group(self, group: ResourceGroup) -> bool:
        """Stop the group's resources in reverse order; False if one would not stop."""
        self.log.info(f"Releasing resource group: {group.home} {' '.join(r.spec for r in group.resources)}")
        if self.stop_all(group.resources):
            self.stuck.discard(group.key)
            return True
        self.stuck.add(group.key)
        return False

    def announce_group(self, group: ResourceGroup) -> None:
        """Announce the group's addresses again (clients may have the other MAC)."""
        holders = self.addresses.holders(self.addresses.addresses())
        held = [(holders[res.ip], res.ip) for res in group.resources if isinstance(res, IPResource)
                and holders.get(res.ip)]
        if held:
            self.addresses.announce(held, rounds=GARP_ROUNDS_S[:1])

    def release_stale_addresses(self) -> None:
        """At start: an address of ours left by a crash must not answer from two machines."""
        holders = self.addresses.holders(self.addresses.addresses())
        stale = [res for group in self.config.groups for res in group.resources
                 if isinstance(res, IPResource) and holders.get(res.ip)]
        for res in stale:
            self.log.warn(f"Address {res.ip} was already configured here (left by a crash?): "
                          "releasing it before joining the cluster")
        if stale:
            self.addresses.remove(stale)


# #### Acting: fencing (STONITH before takeover) ###################################################

STONITH_RETRY_S = 5.0           # 3.0.6 retries a failed reset every 5 s, and takes nothing over meanwhile
STONITH_RESET_TIMEOUT_S = 120.0
MEATWARE_TIMEOUT_S = 600.0      # cluster-glue's meatware waits this long for `meatclient -c HOST`
STONITH_STATUS_INTERVAL_S = 3600.0   # while holding groups, the device is checked every hour
STONITH_BADHOST = 4             # cluster-glue's S_BADHOST: "this device cannot reset that host"
FENCE_FAILED_EVENT_INTERVAL_S = 60.0   # a device failing every 5 s: a fence-failed event this often at most


def stonith_argv(device: StonithDevice, operation: str, host: str = "") -> Tuple[List[str], Optional[dict]]:
    """How to run one operation (reset, status) on the device: argv and environment. The
    parameters travel in the environment (cluster-glue's -E, and its convention for external
    plugins), never in argv, where every user of ps would read the device's password."""
    if device.how == "cluster-glue":
        argv = [STONITH_COMMAND, "-t", device.plugin, "-E"]
        env = dict(os.environ, HA_logfacility="none", HA_logfile="/dev/stderr", **device.params)  # its log: to us
        return argv + (["-T", operation, host] if operation == "reset" else ["-S"]), env
    if device.how == "external":
        return [device.path, operation] + ([host] if host else []), dict(os.environ, **device.params)
    return [], None


class Fencer:
    """Resets a node through the configured device before its groups are taken over. Each attempt
    runs in a thread (a reset can take tens of seconds); the result comes back to the loop, which
    retries every STONITH_RETRY_S until it succeeds, as Heartbeat 3.0.6 does. Each fencing is told
    as events (fence-started, fence-failed, fence-done or fence-cancelled) and counted, so hooks and
    /metrics see a takeover held back by a failing device."""

    def __init__(self, device: StonithDevice, timers: Timers, post, log, send, alive=None, run=run_command,
                 events: Optional[EventLog] = None):
        self.device, self.timers, self.post, self.log, self.send, self.run = device, timers, post, log, send, run
        self.alive = alive or (lambda node: False)        # heard again: not to be reset
        self.events = events
        self.pending: Dict[str, object] = {}          # node -> what to do once it is reset
        self.started: Dict[str, float] = {}           # node -> when its fencing began (timers' clock)
        self.attempts: Dict[str, int] = collections.Counter()     # of the fencing under way
        self.failed_told: Dict[str, float] = {}       # node -> when its last fence-failed event was
        self.retry_timers: Dict[str, list] = {}
        self.resets: Dict[str, int] = collections.Counter()
        self.failures: Dict[str, int] = collections.Counter()    # failed attempts since the start
        self.last_status: Optional[bool] = None
        self.confirmations: Dict[str, threading.Event] = {}     # built-in meatware: node -> operator said so

    def fence(self, node: str, then, delay_s: float = 0.0) -> None:
        """Reset `node` (after delay_s: see fence_delay), then call then(); nothing else happens to
        it meanwhile."""
        first = node not in self.pending
        self.pending[node] = then
        if first:
            self.started[node], self.attempts[node] = self.timers.clock(), 0
            self.failed_told.pop(node, None)
            self.record("fence-started", node, f"{self.device.plugin}: before {node}'s groups are taken over"
                        + (f", in {delay_s:g} s (fence_delay)" if delay_s > 0 else ""))
        if first and delay_s > 0:
            self.log.info(f"STONITH of {node} in {delay_s:g} s (fence_delay: this node holds no group)")
            self.retry_timers[node] = self.timers.call_later(delay_s, lambda: self.attempt(node))
        elif first:
            self.attempt(node)

    def cancel(self, node: str) -> None:
        """The node is heard again: it was not dead, and a reset now would take down a live peer."""
        if self.pending.pop(node, None) is not None:
            self.timers.cancel(self.retry_timers.pop(node, None))
            self.log.warn(f"STONITH of {node} cancelled: it is alive again")
            self.record("fence-cancelled", node, f"{node} is alive again: not reset", self.took_ms(node))

    def record(self, kind: str, node: str, detail: str, duration_ms: Optional[float] = None) -> None:
        if self.events:
            self.events.record(kind, detail, duration_ms, node=node)

    def took_ms(self, node: str) -> Optional[float]:
        """Since the fencing of node began (and forget when)."""
        started = self.started.pop(node, None)
        return None if started is None else (self.timers.clock() - started) * 1000

    def attempt(self, node: str) -> None:
        self.retry_timers.pop(node, None)
        if node not in self.pending:
            return
        if self.alive(node):
            self.cancel(node)
            return
        self.attempts[node] += 1
        self.log.info(f"Resetting node {node} with [{self.device.plugin}]")
        self.confirmations[node] = threading.Event()      # meatware: the operator's word, for this attempt
        in_thread("stonith", lambda: self.reset(node), self.post, lambda result: self.finished(node, result))

    def reset(self, node: str) -> CommandResult:
        """In the device's thread: one reset, and its result."""
        argv, env = stonith_argv(self.device, "reset", node)
        if self.device.plugin == "meatware":
            command = f"meatclient -c {node}" if argv else f"heartbeat.py meatclient {node}"
            self.post(lambda: self.log.crit(f"OPERATOR INTERVENTION REQUIRED to reset {node}."))
            self.post(lambda: self.log.crit(f"Run \"{command}\" AFTER power-cycling the machine."))
        if self.device.plugin == "meatware" and not argv:
            return self.wait_for_operator(node)
        if not argv:                                    # the built-in null device
            return CommandResult(0, f"{self.device.plugin}: {node} reset (a null device touches nothing)")
        timeout_s = MEATWARE_TIMEOUT_S + 60 if self.device.plugin == "meatware" else STONITH_RESET_TIMEOUT_S
        return self.run(argv, timeout_s, env)

    def wait_for_operator(self, node: str) -> CommandResult:
        """meatware, built in: a person power-cycles the node and says so (`heartbeat.py meatclient
        NODE`, as cluster-glue's `meatclient -c NODE`)."""
        if self.confirmations[node].wait(MEATWARE_TIMEOUT_S):
            return CommandResult(0, f"node {node} Met.")
        return CommandResult(1, f"no confirmation that {node} was power-cycled in {MEATWARE_TIMEOUT_S:g} s")

    def confirm(self, node: str) -> str:
        """The operator's word that `node` was power-cycled; an error when nothing waits for it."""
        event = self.confirmations.get(node)
        if node not in self.pending or event is None:
            return f"no reset of {node} is waiting for a confirmation"
        self.log.info(f"meatclient: the operator confirms that {node} was power-cycled")
        event.set()
        return ""

    def finished(self, node: str, result: Union[CommandResult, Exception]) -> None:
        then = self.pending.get(node)
        if then is None:
            return                                      # cancelled meanwhile
        if isinstance(result, Exception):               # a bug: this attempt failed, the next one retries
            result = CommandResult(EXIT_GENERIC, f"internal error: {result!r}")
        for line in result.output.strip().splitlines()[-5:]:
            self.log.info(f"stonith: {self.redacted(line)}")
        if result.returncode == 0:
            self.log.info(f"node {node} now reset.")
            self.send_result(node, "OK")
            self.resets[node] += 1
            del self.pending[node]
            attempts = self.attempts.pop(node, 1)
            self.record("fence-done", node, f"{self.device.plugin}: after {attempts} attempt{'s' * (attempts > 1)}",
                        self.took_ms(node))
            then()
            return
        self.failures[node] += 1
        now = self.timers.clock()
        if node not in self.failed_told or now - self.failed_told[node] >= FENCE_FAILED_EVENT_INTERVAL_S:
            self.failed_told[node] = now
            last = result.output.strip().splitlines()[-1:] or [""]
            said = f": {self.redacted(last[0])[:QUOTED_CHARS]}" if last[0] else ""
            self.record("fence-failed", node, f"attempt {self.attempts[node]}: exit {result.returncode}{said}; "
                        f"retried every {STONITH_RETRY_S:g} s, nothing taken over meanwhile")
        if result.returncode == STONITH_BADHOST and self.device.how == "cluster-glue":
            self.log.error(f"Device {self.device.plugin} cannot reset host {node}.")
            self.send_result(node, "badhost")
        else:
            self.log.error(f"Host {node} not reset!")
            self.send_result(node, "bad")
        self.log.error(f"STONITH of {node} failed.  Retrying...")
        self.retry_timers[node] = self.timers.call_later(STONITH_RETRY_S, lambda: self.attempt(node))

    def redacted(self, text: str) -> str:
        """A plugin's output without the device's parameter values (a password may be among them)."""
        return redacted(text, self.device.params.values())

    def send_result(self, node: str, result: str) -> None:
        """3.0.6's T_STONITH message: every node learns what became of the reset."""
        self.send(stonith_message(node, result))

    def check_status(self) -> None:
        """The device's own status, in a thread; logged when it is not operational."""
        argv, env = stonith_argv(self.device, "status")
        if not argv:
            return
        self.log.info(f"Checking status of STONITH device [{self.device.plugin}]")
        in_thread("stonith-status", lambda: self.run(argv, STONITH_RESET_TIMEOUT_S, env), self.post,
                  self.status_known)

    def status_known(self, result: Union[CommandResult, Exception]) -> None:
        self.last_status = not isinstance(result, Exception) and result.returncode == 0
        if not self.last_status:
            self.log.error(f"STONITH device {self.device.plugin} not operational!")
            self.log.error("STONITH status operation failed.")
            self.log.info("This may mean that the STONITH device has failed!")

    def snapshot(self) -> dict:
        now = self.timers.clock()
        return {"device": self.device.plugin, "run_by": self.device.how, "fencing": sorted(self.pending),
                "resets": dict(self.resets), "device_ok": self.last_status, "failures": dict(self.failures),
                "fencing_s": {node: round(now - self.started[node], 1) for node in sorted(self.pending)
                              if node in self.started}}


# ==================================================================================================
# 6. SENSING: membership, ping nodes, links and addresses, service monitors and process watches
# ==================================================================================================


# #### Sensing: membership (heartbeats, sequence numbers, deadtime) ################################

@dataclasses.dataclass
class Peer:
    """What we know of another node, from its packets."""
    name: str
    deadtime_ms: int
    status: str = "init"                  # init, up, active, dead
    uuid: Optional[bytes] = None
    generation: int = 0
    max_seq: int = 0
    seen: set = dataclasses.field(default_factory=set)
    missing: Dict[int, int] = dataclasses.field(default_factory=dict)   # seq -> requests sent
    last_heard: Optional[float] = None
    last_status: Optional[float] = None
    links: Dict[str, float] = dataclasses.field(default_factory=dict)   # link -> last heard
    link_up: Dict[str, bool] = dataclasses.field(default_factory=dict)
    link_seq: Dict[str, int] = dataclasses.field(default_factory=dict)  # link -> newest status seq on it
    protocol: bool = False
    newest_ts: int = 0                    # the sender's clock (ts) on its newest status
    ack_trigger: int = 0
    shutting_down: bool = False           # sent shutdone: its status ignored until it restarts (or beats on)
    declared_dead_alive: bool = False     # declared dead by silence, not by a shutdown notice
    partition_healed: bool = False        # came back with the same generation: a partition
    restarted: bool = False               # a new generation seen, not yet followed by a status
    shutdone: Tuple[int, float] = (0, 0.0)   # seq and arrival of its shutdown notice
    challenge: Optional[Tuple[str, float]] = None   # (nonce, sent at): asked to prove its generation
    answered: str = ""                    # the last nonce of its we signed
    answered_at: Optional[float] = None   # when we last signed one
    status_clock: Tuple[int, float] = (0, 0.0)   # its ts on the newest accepted status, and our clock then
    check_timer: Optional[Timer] = None
    rexmit_timer: Optional[Timer] = None
    auth_index: Optional[int] = None      # the authkeys key its newest accepted message was signed with
    other_key_since: Optional[float] = None   # since when it signs with another key than ours
    other_key_warned: bool = False


@dataclasses.dataclass
class KeyUse:
    """The datagrams that one authkeys key authenticated (any sender), and when the last came."""
    received: int = 0
    last_seen: Optional[float] = None


KEY_MISMATCH_WARNING_INTERVAL_S = 3600.0   # a peer on another key than ours: warned once a deadtime
                                           # after it began, again at most this often per peer
SEQ_WINDOW = 200           # sequence numbers remembered per peer, for duplicates and replays
LINK_SEQ_SLACK = 2         # a status is evidence for a link only when it is among the peer's newest
STARTUP_GRACE_S = 5.0      # 3.0.6 announces a longer deadtime (dt) in its first 5 s after start,
STARTUP_EXTRA_DEADTIME_MS = 2000   # 2 s longer, so a peer gives a node still starting up some slack
CHALLENGE, CHALLENGE_REPLY = "hbpy-challenge", "hbpy-challenge-reply"   # proof of a generation
TS_RESOLUTION_S = 1        # ts is whole seconds
API_CLIENT_STATUS = "hbapi-clstat"     # a client (ipfail) signed on or off at a node
PULLED_BEAT_SLACK = 1.125  # after a beat pulled by a peer's, ours is due this many keepalives later
MAX_MISSING = 50           # a gap larger than this is not chased by retransmission requests
MAX_REXMIT_REQUESTS = 10   # then the packet is given up as lost


MessageHandler = Callable[[Peer, Message], None]


class MembershipListener(Protocol):
    """What membership tells the layer above: node and link changes, and every message whose
    type is not membership's own."""

    def on_node_status(self, peer: Peer, old: str, new: str) -> None: ...

    def on_comm_up(self) -> None: ...

    def on_name_conflict(self, active: bool) -> None: ...

    def on_link_change(self, node: str, link: str, status: str) -> None: ...

    def on_message(self, peer: Peer, msg: Message) -> None: ...


AUTOJOIN_MAX_PEERS = 16     # autojoin other: names signed with our key join up to this many (a haresources
                            # cluster has two nodes); past it a name is one more thing to track, never a node


class Membership:
    """Who is alive. Sends our heartbeats, accepts or drops every packet, and declares
    peers dead after deadtime. It tells `listener` what changed."""

    def __init__(self, config: Config, identity: Identity, timers: Timers, log, transmit,
                 listener: MembershipListener, events: Optional[EventLog] = None):
        self.config, self.hacf, self.identity = config, config.hacf, identity
        self.timers, self.clock, self.log = timers, timers.clock, log
        self.transmit, self.listener = transmit, listener
        self.status = "init"
        self.seq = 0
        self.history: Dict[int, bytes] = {}
        self.own_recent: collections.deque = collections.deque(maxlen=8)
        self.resent_at: Dict[int, float] = {}
        self.peers: Dict[str, Peer] = {}
        self.counters: Dict[str, int] = collections.Counter()
        self.complain = RateLimitedLog(log, self.clock)
        self.key_use: Dict[int, KeyUse] = {}
        self.key_complaint = RateLimitedLog(log, self.clock, KEY_MISMATCH_WARNING_INTERVAL_S)
        self.handlers = {"status": self.on_status, "shutdone": self.on_shutdone, "reqnodes": self.on_reqnodes,
                         "repnodes": self.on_repnodes, "NS_ackmsg": self.on_NS_ackmsg,
                         "NS_rexmit": self.on_NS_rexmit, "NS_nak_rexmit": self.on_NS_nak_rexmit}
        self.keepalive_timer: Optional[Timer] = None
        self.status_fields: Tuple[tuple, bytes, bytes] = ((), b"", b"")
        self.comm_up = False
        self.startup_grace = True
        self.name_conflict: Optional[dict] = None       # another node that uses our name
        self.events = events if events is not None else EventLog()
        self.drops_told: Dict[str, Tuple[float, int]] = {}
        for name in self.hacf.nodes:
            if name != identity.name:
                self.add_peer(name)

    # -- peers and timers --------------------------------------------------

    def add_peer(self, name: str) -> Peer:
        peer = Peer(name, self.hacf.deadtime_ms, ack_trigger=random_below(10))
        self.peers[name] = peer
        return peer

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: take the new timers and node list, keep what we know of the peers."""
        self.config, self.hacf = config, config.hacf
        for name in config.hacf.nodes:
            if name != self.identity.name and name not in self.peers:
                self.add_peer(name)
        for name in [n for n in self.peers if n not in config.hacf.nodes]:
            self.timers.cancel(self.peers.pop(name).check_timer)
        timer = self.keepalive_timer      # the heartbeat schedule goes on: a reload never delays a beat
        sooner = self.clock() + self.hacf.keepalive_ms / 1000
        if timer and timer.pending and sooner < timer.due:
            self.timers.cancel(timer)
            self.keepalive_timer = self.timers.call_later(sooner - self.clock(), self.send_heartbeat)

    def start(self) -> None:
        """Announce ourselves (st=init, then up) and start the clocks."""
        self.send_status("init")
        self.set_status("up")
        self.keepalive_timer = self.timers.call_later(self.hacf.keepalive_ms / 1000, self.send_heartbeat)
        self.timers.call_later(STARTUP_GRACE_S, self.end_startup_grace)
        self.timers.call_later(self.hacf.initdead_ms / 1000, self.initdead_expired)
        if not self.peers:
            self.timers.call_later(0, self.check_comm_up)

    def stop(self) -> None:
        self.timers.cancel(self.keepalive_timer)
        for peer in self.peers.values():
            self.timers.cancel(peer.check_timer)

    def end_startup_grace(self) -> None:
        self.startup_grace = False

    def announced_deadtime_ms(self) -> int:
        """`dt`: our deadtime, plus STARTUP_EXTRA_DEADTIME_MS for STARTUP_GRACE_S after start (as 3.0.6 announces)."""
        return self.hacf.deadtime_ms + (STARTUP_EXTRA_DEADTIME_MS if self.startup_grace else 0)

    def initdead_expired(self) -> None:
        for peer in self.peers.values():
            if peer.last_heard is None and peer.status != "dead":
                self.declare_dead(peer)
        self.check_comm_up(force=True)

    def schedule_check(self, peer: Peer) -> None:
        """Wake up when the peer, or one of its links, would pass its deadtime."""
        self.timers.cancel(peer.check_timer)
        heard = [t for link, t in peer.links.items() if peer.link_up.get(link)]
        if peer.status != "dead" and peer.last_heard is not None:
            heard.append(peer.last_heard)
        if heard:
            when = min(heard) + peer.deadtime_ms / 1000 - self.clock()
            peer.check_timer = self.timers.call_later(when, lambda: self.check_peer(peer))

    def check_peer(self, peer: Peer) -> None:
        peer.check_timer = None
        now = self.clock()
        deadtime_s = peer.deadtime_ms / 1000
        if peer.status != "dead" and peer.last_heard is not None and now - peer.last_heard >= deadtime_s:
            self.declare_dead(peer)
        for link, heard in peer.links.items():
            if peer.link_up.get(link) and now - heard >= deadtime_s:
                self.link_changed(peer, link, False)
        self.schedule_check(peer)

    def declare_dead(self, peer: Peer, reason: str = "") -> None:
        old = peer.status
        peer.declared_dead_alive = peer.last_heard is not None and not peer.shutting_down
        peer.status = "dead"
        peer.missing.clear()
        if reason:
            self.log.info(reason)
        else:
            self.log.warn(f"node {peer.name}: is dead")
        silent = "" if peer.last_heard is None else \
            f"last heard {self.clock() - peer.last_heard:.3f} s ago, at {wall_time(peer.last_heard, self.clock())}"
        self.events.record("node-dead", reason or silent, node=peer.name)
        for link in peer.links:
            if peer.link_up.get(link):
                self.link_changed(peer, link, False)
        if old != "dead" and self.listener:
            self.listener.on_node_status(peer, old, "dead")

    # -- our status --------------------------------------------------------

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.log.info(f"Local status now set to: '{status}'")
        self.send_status(status)

    def send_status(self, status: str) -> bytes:
        """Status messages are the heartbeat, ten a second at keepalive 100ms and nearly all the
        daemon does when idle. Their fixed fields (t, st, dt, protocol, src, srcuuid) are encoded
        once per value; each packet puts the control fields into the two templates below. The
        same bytes as send() would make: a test holds it to that."""
        dt = self.announced_deadtime_ms()
        if self.status_fields[0] != (status, dt):
            fixed = Message(("t", "status"), ("st", status), ("dt", format(dt, "x")), ("protocol", "1"),
                            ("src", self.identity.name)).add("srcuuid", self.identity.uuid, FIELD_BINARY)
            self.status_fields = ((status, dt), classic_text(fixed.fields), netstring_fields(fixed.fields))
        _, classic, body = self.status_fields
        self.seq += 1
        seq, hg, ts, ld, ttl = (value for _, value in self.control_fields(sequenced=True))
        if self.hacf.msgfmt == "classic":
            classic += STATUS_CONTROL_CLASSIC % (seq, hg, ts, ld, ttl)
        body += STATUS_CONTROL_NETSTRING % (len(seq) + 7, seq, len(hg) + 6, hg, len(ts) + 6, ts,
                                            len(ld) + 6, ld, len(ttl) + 7, ttl)
        return self.sent(seal(classic, body, self.config.authkeys, self.hacf.msgfmt), sequenced=True)

    def send_heartbeat(self) -> None:
        """Every keepalive, at a fixed rate: a late wake-up does not shift the following ones."""
        self.send_status(self.status)
        due = self.keepalive_timer.due + self.hacf.keepalive_ms / 1000
        self.keepalive_timer = self.timers.call_later(max(due - self.clock(), 0.0), self.send_heartbeat)

    def send_heartbeat_early(self) -> None:
        """Awake anyway for a peer's heartbeat: when ours is due within half a keepalive, send
        it now. The nodes' heartbeats fall into step: the node whose beat is pulled wakes once a
        keepalive instead of twice (1.5 times per node on average, an idle cost). Our own timer
        is then set an eighth of a keepalive past the peer's next beat, so that the peer's beat
        keeps pulling ours although both clocks jitter; when it does not come, ours goes out
        that eighth late, once."""
        timer = self.keepalive_timer
        if timer and timer.pending and timer.due - self.clock() < self.hacf.keepalive_ms / 2000:
            self.timers.cancel(timer)
            self.send_status(self.status)
            self.keepalive_timer = self.timers.call_later(self.hacf.keepalive_ms * PULLED_BEAT_SLACK / 1000,
                                                          self.send_heartbeat)

    def check_comm_up(self, force: bool = False) -> None:
        """Communication is up once every peer was heard from, or initdead has passed."""
        if self.comm_up or self.status == "dead":
            return
        if force or all(p.last_heard is not None or p.status == "dead" for p in self.peers.values()):
            self.comm_up = True
            self.log.info("Comm_now_up(): updating status to active")
            self.set_status("active")
            self.listener.on_comm_up()

    # -- sending -------------------------------------------------------------

    def send(self, msg: Message, dest: Optional[str] = None) -> bytes:
        """Add the control fields (src, srcuuid, seq, hg, ts, ld, ttl), sign and transmit."""
        mtype = msg.get("t", "")
        if dest:
            if msg.get("dest") is None:
                msg.add("dest", dest)
            peer = self.peers.get(dest)
            if peer and peer.uuid:
                msg.add("destuuid", peer.uuid, FIELD_BINARY)
        if msg.get("src") is None:       # an API client's message (ipfail) names its sender earlier
            msg.add("src", self.identity.name)
        msg.add("srcuuid", self.identity.uuid, FIELD_BINARY)
        sequenced = mtype not in NS_TYPES
        if sequenced:
            self.seq += 1
        for name, value in self.control_fields(sequenced):
            msg.add(name, value)
        return self.sent(encode_message(msg, self.config.authkeys, self.hacf.msgfmt), sequenced)

    def control_fields(self, sequenced: bool) -> List[Tuple[str, bytes]]:
        """What every message ends with: seq, hg, ts, ld, ttl (NS_ messages: no seq, no ld)."""
        fields = [("seq", b"%x" % self.seq)] if sequenced else []
        fields += [("hg", b"%x" % self.identity.generation), ("ts", b"%x" % int(time.time()))]
        if sequenced:
            fields.append(("ld", load_average()))
        fields.append(("ttl", b"%d" % (self.hacf.hopfudge + len(self.hacf.nodes))))
        return fields

    def sent(self, datagram: bytes, sequenced: bool) -> bytes:
        """Transmit; keep sequenced datagrams for retransmission, and ours to know them looped back."""
        if sequenced:
            self.history[self.seq] = datagram
            self.history.pop(self.seq - HISTORY_SIZE, None)
        self.own_recent.append(datagram)
        self.counters["sent"] += 1
        self.transmit(datagram)
        return datagram

    # -- receiving -----------------------------------------------------------

    def drop(self, reason: str, message: str = "", log: bool = True) -> None:
        self.counters["dropped_" + reason] += 1
        if message and log and self.hacf.log_badpack:
            self.complain(reason, message)
        if "dropped_" + reason not in NORMAL_DROPS:
            self.note_drops(reason)

    def note_drops(self, reason: str) -> None:
        """A burst of drops is one event per reason per DROP_EVENT_INTERVAL_S, saying how many."""
        now, total = self.clock(), self.counters["dropped_" + reason]
        last = self.drops_told.get(reason)
        if last is None or now - last[0] >= DROP_EVENT_INTERVAL_S:
            self.drops_told[reason] = (now, total)
            self.events.record("packets-dropped", f"{total - (last[1] if last else 0)} dropped ({reason}) "
                               f"since {'the start' if last is None else f'{now - last[0]:.0f} s ago'}",
                               reason=reason)

    def receive(self, datagram: bytes, link: str, sender: str = "?") -> None:
        """Handle one datagram; a bad one is dropped and counted, never raised."""
        self.counters["received"] += 1
        if datagram in self.own_recent:   # our own broadcast, looped back: no need to parse it
            return self.drop("own", log=False)
        try:
            msg = decode_message(datagram, self.config.authkeys)
        except BadPacket as err:
            reason = "bad_auth" if "authentication" in str(err) else "malformed"
            return self.drop(reason, f"dropped packet from {sender} on {link}: {err}")
        except Exception as err:    # a parser bug must cost one packet, not the daemon
            return self.drop("malformed", f"dropped packet from {sender} on {link}: {err!r}")
        use = self.key_use.get(msg.auth_index)
        if use is None:
            use = self.key_use[msg.auth_index] = KeyUse()
        use.received += 1
        use.last_seen = self.clock()
        try:
            self.accept(msg, link, sender, datagram)
        except (ValueError, KeyError, TypeError) as err:
            self.drop("malformed", f"dropped packet from {sender} on {link}: bad field: {err}")

    def accept(self, msg: Message, link: str, sender: str, datagram: bytes = b"") -> None:
        """Checks in Heartbeat's order: fields, sender, generation, sequence, destination. Only a
        status message that passed them all is a sign of life: anything else can be replayed."""
        mtype, src, ts = msg.get("t"), msg.get("src"), msg.get("ts")
        if not mtype or not src or hex_number(ts) <= 0:
            return self.drop("malformed", f"dropped packet from {sender}: missing t, src or ts")
        sequenced = mtype not in NS_TYPES
        seq = hex_number(msg.get("seq"))
        if sequenced and seq <= 0:
            return self.drop("malformed", f"dropped {mtype} from {src}: missing seq")
        if src == self.identity.name:
            return self.own_name_seen(msg, sender, seq, datagram)
        peer = self.peers.get(src)
        if peer is None:
            if self.hacf.autojoin == "none":
                return self.drop("unknown_node", f"process_status_message: bad node [{src}] in message "
                                                 f"(from {sender}; not a node in ha.cf)")
            if len(self.peers) >= AUTOJOIN_MAX_PEERS:
                return self.drop("unknown_node", f"node [{src}] not joined (from {sender}): {len(self.peers)} "
                                                 f"nodes known already, at most {AUTOJOIN_MAX_PEERS} with autojoin")
            peer = self.add_peer(src)
            self.log.info(f"Node {src} joined (autojoin {self.hacf.autojoin})")
        generation = max(hex_number(msg.get("hg")), 0)
        if msg.get("dest") == self.identity.name:
            if mtype == CHALLENGE:
                self.answer_challenge(peer, msg)
            elif mtype == CHALLENGE_REPLY and self.is_proof(peer, msg):
                self.adopt_generation(peer, generation, seq)
        if generation < peer.generation:
            self.challenge(peer)
            return self.drop("replay", f"should_drop_message: attempted replay attack [{src}]? "
                                       f"[gen = {generation}, curgen = {peer.generation}]")
        if generation > peer.generation:
            if peer.generation:
                peer.restarted = True
                if peer.status != "dead":
                    self.log.info(f"Heartbeat restart on node {src}")
                self.forget_sequence(peer)
            peer.generation = generation
            peer.shutting_down = False
        uuid = msg.get_bytes("srcuuid")
        if uuid and len(uuid) == 16:
            peer.uuid = uuid
        now = self.clock()
        if sequenced:
            if seq <= peer.max_seq - SEQ_WINDOW:
                self.challenge(peer)
                return self.drop("replay", f"dropped old packet seq {seq} from {src} (replayed?)")
            if mtype == "status" and peer.link_seq.get(link, 0) < seq and seq + LINK_SEQ_SLACK >= peer.max_seq:
                peer.link_seq[link] = seq       # new on this link: a second medium's copy counts for it
                self.heard_on_link(peer, link, now)
            if seq in peer.seen:
                return self.drop("duplicate", log=False)
            self.track_seq(peer, seq)
        self.note_signing_key(peer, msg.auth_index, now)
        dest = msg.get("dest")
        if dest and dest != self.identity.name:
            return self.drop("not_for_us", log=False)
        if mtype == "status":
            self.heard_from(peer, msg, seq, now)
        handler = self.handlers.get(mtype)
        if handler:
            handler(peer, msg)
        else:
            self.listener.on_message(peer, msg)

    def note_signing_key(self, peer: Peer, index: Optional[int], now: float) -> None:
        """Which key the peer signs with. Another than ours for more than a deadtime is a key rotation
        left half done: warned once (until it ends), the next time at most hourly."""
        if index is None:
            return
        peer.auth_index, ours = index, self.config.authkeys.active
        if index == ours:
            peer.other_key_since, peer.other_key_warned = None, False
        elif peer.other_key_since is None:
            peer.other_key_since = now
        elif not peer.other_key_warned and now - peer.other_key_since > self.hacf.deadtime_ms / 1000:
            peer.other_key_warned = True
            self.key_complaint(f"key {peer.name}", f"node {peer.name} signs with authkeys key {index}, this node "
                               f"with key {ours}, for more than deadtime ({now - peer.other_key_since:.0f} s): "
                               "finish the key rotation (the same 'auth N' in authkeys on both nodes, then a "
                               "reload)", level="warn")

    def key_snapshot(self) -> List[dict]:
        """Each authkeys key, configured or heard: its method, whether we sign with it, the
        datagrams it authenticated and how long ago the last."""
        now, keys = self.clock(), self.config.authkeys
        indexes = sorted(set(keys.methods) | {i for i in self.key_use if i is not None})
        return [{"index": index, "method": keys.methods.get(index, ("", ""))[0] or None,
                 "configured": index in keys.methods, "signing": index == keys.active,
                 "received": self.key_use.get(index, KeyUse()).received,
                 "last_seen_s": None if self.key_use.get(index, KeyUse()).last_seen is None
                 else round(now - self.key_use[index].last_seen, 3)}
                for index in indexes]

    def forget_sequence(self, peer: Peer) -> None:
        peer.max_seq = 0
        peer.seen.clear()
        peer.missing.clear()
        peer.link_seq.clear()

    def heard_on_link(self, peer: Peer, link: str, now: float) -> None:
        peer.links[link] = now
        if not peer.link_up.get(link):
            self.link_changed(peer, link, True)
            self.schedule_check(peer)

    def link_changed(self, peer: Peer, link: str, up: bool) -> None:
        """Heartbeat's link status: logged, and told to whoever watches links (ipfail)."""
        peer.link_up[link] = up
        self.log.info(f"Link {peer.name}:{link} {'up' if up else 'dead'}.")
        self.events.record("link-up" if up else "link-dead", node=peer.name, link=link)
        self.listener.on_link_change(peer.name, link, "up" if up else "dead")

    def heard_from(self, peer: Peer, msg: Message, seq: int, now: float) -> None:
        """A new status message: the peer is alive (unless it told us it is stopping)."""
        restarted, peer.restarted = peer.restarted, False
        peer.newest_ts = max(peer.newest_ts, hex_number(msg.get("ts")))
        peer.status_clock = (hex_number(msg.get("ts")), now)
        if peer.shutting_down and seq > peer.shutdone[0] and now - peer.shutdone[1] > peer.deadtime_ms / 1000 \
                and msg.get("st") in ("init", "up", "active"):
            # 3.0.6 sends a status or two after shutdone while it stops; one still beating a deadtime
            # later did not stop (a forged or replayed shutdone): believe the heartbeats
            self.log.warn(f"node {peer.name} still sends heartbeats a deadtime after its shutdown notice: "
                          "it is alive")
            peer.shutting_down = False
        if peer.last_heard is None:
            self.events.record("node-up", f"first heard, status {msg.get('st')}", node=peer.name)
        peer.last_heard = now
        if peer.status == "dead" and not peer.shutting_down:
            peer.partition_healed = not restarted and peer.declared_dead_alive
            if peer.partition_healed:
                self.log.crit(f"Cluster node {peer.name} returning after partition.")
            new = msg.get("st")
            peer.status = new if new in ("init", "up", "active") else "up"
            self.log.info(f"Status update for node {peer.name}: status {peer.status}")
            self.events.record("node-up", f"status {peer.status}", node=peer.name)
            self.schedule_check(peer)
            self.listener.on_node_status(peer, "dead", peer.status)
        elif peer.check_timer is None or peer.check_timer.due - now < 2 * self.hacf.keepalive_ms / 1000:
            self.schedule_check(peer)    # the deadline moves ahead while heartbeats come: no wake-up
        self.check_comm_up()

    # -- a generation proved by a live peer -----------------------------------------

    def challenge(self, peer: Peer) -> None:
        """Packets from peer are dropped as replays (a lower generation, or a sequence number far
        behind): it restarted with an older generation file, or someone sent a forged high one.
        Ask it to sign a fresh nonce; only a live node holding the key can answer. Only while
        its heartbeats have not come for two keepalives (replays beside a live node change
        nothing), and once per keepalive at most: a flood of replays makes no flood of challenges."""
        now, keepalive_s = self.clock(), self.hacf.keepalive_ms / 1000
        if peer.last_heard is not None and now - peer.last_heard < 2 * keepalive_s:
            return
        if peer.challenge and now - peer.challenge[1] < keepalive_s:
            return
        nonce = os.urandom(16).hex()
        peer.challenge = (nonce, now)
        self.send(Message(("t", CHALLENGE), ("dest", peer.name), ("nonce", nonce),
                          ("curgen", format(peer.generation, "x"))), dest=peer.name)

    def answer_challenge(self, peer: Peer, msg: Message) -> None:
        """Answered before any replay check: the challenger may be dropping our packets too. It
        names the generation it knows us at (curgen); at or below it, we were restored from a
        snapshot or a backup and move past it (on disk first) before we answer: the challenger
        never has to take a lower generation, under which packets of our earlier life would pass."""
        nonce = msg.get("nonce", "")
        if not re.fullmatch(r"[0-9a-f]{32}", nonce) or nonce == peer.answered:
            return      # the same challenge on another medium: answered already
        if self.is_stale_challenge(peer, msg):
            self.counters["challenges_unanswered_stale"] += 1
            return self.complain("challenge_stale", f"Not answering a challenge from {peer.name} sent "
                                                    "before its last deadtime (replayed?)")
        now = self.clock()
        if peer.answered_at is not None and now - peer.answered_at < self.hacf.keepalive_ms / 1000:
            self.counters["challenges_unanswered_limit"] += 1
            return self.complain("challenge_limit", f"Not answering another challenge from {peer.name} "
                                                    "within a keepalive (replayed?)")
        known = hex_number(msg.get("curgen"))     # -1: an older heartbeat.py, which names none
        if self.identity.generation <= known < MAX_GENERATION:
            try:
                self.identity.move_past(known)
            except OSError as err:
                return self.complain("curgen", f"Node {peer.name} knows us at generation {known}, ours is "
                                               f"{self.identity.generation}, and hb_generation cannot be written "
                                               f"({err.strerror or err}): not answered", level="error")
            self.log.warn(f"Node {peer.name} knows us at generation {known}, higher than ours (restored from "
                          f"a snapshot?): our generation is now {self.identity.generation}")
        peer.answered, peer.answered_at = nonce, now
        self.send(Message(("t", CHALLENGE_REPLY), ("dest", peer.name), ("nonce", nonce)), dest=peer.name)

    def is_stale_challenge(self, peer: Peer, msg: Message) -> bool:
        """Sent (its ts) longer ago than the deadtime the sender waits for an answer, by our clock
        and by the sender's own, as its newest accepted heartbeat showed it: a replay is old by
        both, a fresh challenge new by at least one whether the clocks agree or not, even after
        a key holder forged a heartbeat with a far ts."""
        ts, window_s = hex_number(msg.get("ts")), peer.deadtime_ms / 1000 + TS_RESOLUTION_S
        if time.time() - ts <= window_s:
            return False
        status_ts, heard_at = peer.status_clock
        return status_ts <= 0 or status_ts + (self.clock() - heard_at) - ts > window_s

    def is_proof(self, peer: Peer, msg: Message) -> bool:
        return (peer.challenge is not None and msg.get("nonce") == peer.challenge[0]
                and self.clock() - peer.challenge[1] < peer.deadtime_ms / 1000)

    def adopt_generation(self, peer: Peer, generation: int, seq: int) -> None:
        """The reply to our nonce is signed now by the peer: its generation and sequence number are
        the live ones. Every earlier sequence number counts as seen, so no replay gets in. Never a
        lower generation, nor the same: packets captured in the peer's earlier life under it would
        be fresh again (the peer moves past the one we know before it answers). Unless the one we
        know is past MAX_GENERATION: only a forged packet can have told us that, and no node moves past it."""
        if generation <= peer.generation < MAX_GENERATION:
            peer.challenge = None
            self.log.warn(f"Node {peer.name} answered our challenge at generation {generation}, not above "
                          f"{peer.generation}: not adopted")
            return
        self.log.warn(f"Node {peer.name} proved generation {generation} at seq {seq} "
                      f"(we had {peer.generation} at seq {peer.max_seq}): adopting it")
        peer.challenge = None
        peer.restarted = True
        peer.generation = generation
        self.forget_sequence(peer)
        peer.max_seq = seq
        peer.seen = set(range(max(1, seq - SEQ_WINDOW + 1), seq + 1))

    # -- another node with our name -------------------------------------------------

    def own_name_seen(self, msg: Message, sender: str, seq: int, datagram: bytes) -> None:
        """A signed packet with our name. Ours looped back, or a replay of ours: our uuid and a
        generation and sequence number we have sent with these very bytes (or too old to tell).
        Anything else comes from another node that uses our name (a cloned machine): while it
        is there, this node takes no group it does not already hold."""
        uuid = msg.get_bytes("srcuuid") or b""
        generation = hex_number(msg.get("hg"))
        ours = uuid == self.identity.uuid and (generation < self.identity.generation or (
            generation == self.identity.generation and seq <= self.seq
            and self.history.get(seq, datagram) == datagram))
        if ours:
            return self.drop("own", log=False)
        self.counters["dropped_name_conflict"] += 1
        first = self.name_conflict is None
        self.name_conflict = {"uuid": uuid.hex(), "generation": generation, "sender": sender,
                              "last_seen": self.clock()}
        message = (f"Another node uses our name {self.identity.name}: uuid {uuid.hex() or '-'} generation "
                   f"{generation} from {sender} (ours: uuid {self.identity.uuid.hex()} generation "
                   f"{self.identity.generation}). Not taking over any resource group until it is gone")
        if first:
            self.log.crit(message)
            self.timers.call_later(self.hacf.deadtime_ms / 1000, self.check_name_conflict)
            self.listener.on_name_conflict(True)
        else:
            self.complain("name_conflict", message, level="crit")

    def check_name_conflict(self) -> None:
        quiet_s = self.clock() - self.name_conflict["last_seen"]
        if quiet_s < self.hacf.deadtime_ms / 1000:
            self.timers.call_later(self.hacf.deadtime_ms / 1000 - quiet_s, self.check_name_conflict)
            return
        self.log.warn(f"No packet from another node named {self.identity.name} for {quiet_s:.1f} s: "
                      "name conflict over")
        self.name_conflict = None
        self.listener.on_name_conflict(False)

    def track_seq(self, peer: Peer, seq: int) -> None:
        """Remember seq; note gaps and ask for them again (NS_rexmit)."""
        if seq > peer.max_seq + 1 and peer.max_seq and seq - peer.max_seq - 1 <= MAX_MISSING:
            self.log.warn(f"{seq - peer.max_seq - 1} lost packet(s) for [{peer.name}] [{peer.max_seq}:{seq}]")
            for lost in range(peer.max_seq + 1, seq):
                peer.missing[lost] = 0
            if not peer.rexmit_timer:
                peer.rexmit_timer = self.timers.call_later(0.05 + random_below(200) / 1000,
                                                           lambda: self.request_rexmit(peer))
        if seq in peer.missing:
            del peer.missing[seq]
            if not peer.missing:
                self.log.info(f"No pkts missing from {peer.name}!")
        peer.seen.add(seq)
        if seq > peer.max_seq:
            peer.max_seq = seq
            if len(peer.seen) > 2 * SEQ_WINDOW:      # trimmed now and then, not at every packet
                peer.seen = {s for s in peer.seen if s > seq - SEQ_WINDOW}
        if peer.protocol and not peer.missing and seq % 10 == peer.ack_trigger:
            self.send(Message(("t", "NS_ackmsg"), ("dest", peer.name), ("ackseq", format(seq, "x"))),
                      dest=peer.name)

    def request_rexmit(self, peer: Peer) -> None:
        peer.rexmit_timer = None
        if peer.status == "dead" or not peer.missing:
            return
        for seq in sorted(peer.missing):
            if peer.missing[seq] >= MAX_REXMIT_REQUESTS:
                del peer.missing[seq]
                self.log.error(f"Irretrievably lost packet: node {peer.name} seq {seq}")
                continue
            peer.missing[seq] += 1
            self.send(Message(("t", "NS_rexmit"), ("dest", peer.name), ("firstseq", str(seq)),
                              ("lastseq", str(seq))), dest=peer.name)
        if peer.missing:
            peer.rexmit_timer = self.timers.call_later(self.hacf.max_rexmit_delay_ms / 1000,
                                                       lambda: self.request_rexmit(peer))

    # -- membership messages --------------------------------------------------

    def on_status(self, peer: Peer, msg: Message) -> None:
        now = self.clock()
        if peer.last_status is not None:
            interval_ms = int((now - peer.last_status) * 1000)
            if interval_ms > peer.deadtime_ms:
                self.log.crit(f"Late heartbeat: Node {peer.name}: interval {interval_ms} ms (> deadtime)")
            elif interval_ms > self.hacf.warntime_ms:
                self.log.warn(f"Late heartbeat: Node {peer.name}: interval {interval_ms} ms")
        peer.last_status = now
        peer.protocol = msg.get("protocol") == "1"
        deadtime_ms = hex_number(msg.get("dt"))
        if deadtime_ms > 0 and deadtime_ms != peer.deadtime_ms:
            low, high = 2 * self.hacf.keepalive_ms, 10 * self.hacf.deadtime_ms
            if low <= deadtime_ms <= high:
                peer.deadtime_ms = deadtime_ms      # the sender's deadtime counts, as in 3.0.6
                self.schedule_check(peer)
            else:
                self.complain("bad_deadtime", f"Node {peer.name} announces a deadtime of {deadtime_ms} ms, "
                                              f"outside {low}-{high} ms: ignored, {peer.deadtime_ms} ms kept",
                              level="warn")
        self.send_heartbeat_early()
        status = msg.get("st", "")
        if peer.shutting_down:
            return
        if status in ("init", "up", "active") and status != peer.status:
            old, peer.status = peer.status, status
            peer.shutting_down = False
            self.log.info(f"Status update for node {peer.name}: status {status}")
            self.listener.on_node_status(peer, old, status)

    def on_reqnodes(self, peer: Peer, msg: Message) -> None:
        """A real node waits for our node list before it goes active: answer it."""
        self.send(Message(("dest", peer.name), ("t", "repnodes"),
                          ("nodelist", "".join(n + " " for n in self.hacf.nodes)), ("delnodelist", " ")),
                  dest=peer.name)

    def on_repnodes(self, peer: Peer, msg: Message) -> None:
        pass    # our node list comes from ha.cf

    def on_NS_ackmsg(self, peer: Peer, msg: Message) -> None:
        pass    # we keep a fixed-size history and never pause for acknowledgements

    def on_NS_nak_rexmit(self, peer: Peer, msg: Message) -> None:
        peer.missing.pop(hex_number(msg.get("firstseq")), None)

    def on_NS_rexmit(self, peer: Peer, msg: Message) -> None:
        """Re-send the byte-identical datagram, or say it is gone."""
        first, last = int(msg.get("firstseq", "0")), int(msg.get("lastseq", "0"))
        now = self.clock()
        for seq in range(first, min(last, first + 49) + 1):
            datagram = self.history.get(seq)
            if datagram is None:
                self.send(Message(("t", "NS_nak_rexmit"), ("firstseq", format(seq, "x")), ("dest", peer.name),
                                  ("info", "seqno not found")), dest=peer.name)
            elif now - self.resent_at.get(seq, -1e9) >= (self.hacf.max_rexmit_delay_ms - 10) / 1000:
                self.resent_at[seq] = now
                self.counters["retransmitted"] += 1
                self.transmit(datagram)
        if len(self.resent_at) > HISTORY_SIZE:
            self.resent_at = {s: t for s, t in self.resent_at.items() if s in self.history}

    def on_shutdone(self, peer: Peer, msg: Message) -> None:
        """A graceful stop: the peer is gone now, no need to wait for deadtime."""
        self.log.info(f"Received shutdown notice from '{peer.name}'.")
        peer.shutting_down = True
        peer.shutdone = (hex_number(msg.get("seq")), self.clock())
        self.declare_dead(peer, reason=f"node {peer.name}: is dead (shut down)")

    # -- reporting ----------------------------------------------------------------

    def snapshot(self) -> dict:
        now = self.clock()
        nodes = {self.identity.name: {"status": self.status, "links": {}, "last_heard_s": 0.0,
                                      "self": True}}
        for peer in self.peers.values():
            nodes[peer.name] = {
                "status": peer.status,
                "links": {link: "up" if peer.link_up.get(link) else "dead" for link in peer.links},
                "last_heard_s": None if peer.last_heard is None else round(now - peer.last_heard, 3),
                "generation": peer.generation,
                "deadtime_ms": peer.deadtime_ms,
                "auth_index": peer.auth_index,
            }
        return nodes


# #### Sensing: ping nodes #########################################################################

PING_SEQ_WINDOW = 64       # a reply must answer one of our last echoes: an old capture replayed is not one


@dataclasses.dataclass
class PingTarget:
    """What we know of one ping node: "init" until it first answers, "ping" while it answers,
    "dead" after deadping without an answer (Heartbeat's words)."""
    node: PingNode
    status: str = "init"
    last_reply: Optional[float] = None
    watched_since: float = 0.0
    check_timer: Optional[Timer] = None


class PingListener(Protocol):
    """What the ping nodes tell the layer above (ipfail counts them)."""

    def on_ping_status(self, name: str, old: str, new: str) -> None: ...


class PingNodes:
    """Heartbeat's ping and ping6 media: an ICMP echo to every ping node address every keepalive,
    from a raw socket per family of our own (we run as root). A node is up while replies come;
    `listener` hears every change."""

    def __init__(self, hacf: HaCf, timers: Timers, log, listener: PingListener, events: Optional[EventLog] = None):
        self.hacf, self.timers, self.clock, self.log = hacf, timers, timers.clock, log
        self.listener = listener
        self.targets: Dict[str, PingTarget] = {p.name: PingTarget(p) for p in hacf.ping_nodes}
        self.sockets: Dict[int, socket.socket] = {}       # IP version -> raw ICMP or ICMPv6 socket
        self.ident = random_below(0x10000)
        self.key = os.urandom(16).hex()                    # the echo tokens' (echo_token), this run's only
        self.seq = 0
        self.send_timer: Optional[Timer] = None
        self.counters: Dict[str, int] = collections.Counter()
        self.complain = RateLimitedLog(log, self.clock, interval_s=60.0)
        self.events = events if events is not None else EventLog()

    def open(self) -> List[socket.socket]:
        """The raw sockets the ping nodes need that are not open yet (an error is logged for one
        that cannot be had: its ping nodes will be declared dead)."""
        versions = {ipaddress.ip_address(address).version for target in self.targets.values()
                    for address in target.node.addresses}
        opened = []
        for version in sorted(versions - set(self.sockets)):
            try:
                if version == 6:
                    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, icmp6_filter_passing(ICMP6_ECHO_REPLY))
                else:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                    sock.setsockopt(SOL_RAW, ICMP_FILTER, icmp_filter_passing(ICMP_ECHO_REPLY))
            except OSError as err:
                self.log.error(f"Cannot open an {'ICMPv6' if version == 6 else 'ICMP'} socket for the ping nodes "
                               f"({err.strerror or err}): they will be declared dead (heartbeat.py must run as root)")
                continue
            sock.setblocking(False)
            self.sockets[version] = sock
            opened.append(sock)
        return opened

    def start(self) -> None:
        for target in self.targets.values():
            self.watch(target)
        self.send_echoes()

    def watch(self, target: PingTarget) -> None:
        target.watched_since = self.clock()
        self.schedule_check(target, target.watched_since)

    def stop(self) -> None:
        self.timers.cancel(self.send_timer)
        for target in self.targets.values():
            self.timers.cancel(target.check_timer)
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}

    def reconfigure(self, hacf: HaCf) -> None:
        """SIGHUP: new ping nodes start as "init", removed ones are forgotten, the rest keep their state."""
        self.hacf = hacf
        wanted = {p.name: p for p in hacf.ping_nodes}
        for name in [n for n in self.targets if n not in wanted]:
            self.timers.cancel(self.targets.pop(name).check_timer)
        for name, node in wanted.items():
            if name in self.targets:
                self.targets[name].node = node
            else:
                self.targets[name] = PingTarget(node)
                self.watch(self.targets[name])

    def send_echoes(self) -> None:
        if not self.sockets or not self.targets:
            self.send_timer = None
            return
        self.send_timer = self.timers.call_later(self.hacf.keepalive_ms / 1000, self.send_echoes)
        self.seq = (self.seq + 1) & 0xFFFF
        for target in self.targets.values():
            for address in target.node.addresses:
                version = 6 if ":" in address else 4
                if version not in self.sockets:
                    continue
                packet = echo_request(self.ident, self.seq, echo_token(self.key, address, self.seq), version)
                try:
                    self.sockets[version].sendto(packet, (address, 0))
                    self.counters["echo_sent"] += 1
                except OSError as err:
                    self.counters["echo_send_errors"] += 1
                    self.complain(f"ping {address}", f"ping {address}: {err.strerror or err}", level="warn")

    def read(self, sock: socket.socket) -> None:
        """Every ICMP echo reply to this host comes here (the socket filters out the other types):
        only a fresh answer to our own echo, from the address it went to, counts."""
        version = 6 if sock.family == socket.AF_INET6 else 4
        for _ in range(READS_PER_WAKEUP):
            try:
                packet, address = sock.recvfrom(2048)
            except OSError:
                return
            sender = address[0] if version == 4 else str(ipaddress.IPv6Address(address[0].split("%")[0]))
            reply = parse_echo_reply(packet, self.ident, version)
            if reply is None:
                self.counters["echo_replies_ignored"] += 1       # another process's, or damaged
                continue
            seq, token = reply
            if (self.seq - seq) & 0xFFFF >= PING_SEQ_WINDOW:
                self.counters["echo_replies_stale"] += 1
                continue
            if not compare_digest(token, echo_token(self.key, sender, seq)):
                self.counters["echo_replies_forged"] += 1         # not from where that echo went
                self.complain("forged echo reply", f"Echo reply from {sender} does not answer our echo to it "
                                                   "(forged?): ignored", level="warn")
                continue
            for target in self.targets.values():
                if sender in target.node.addresses:
                    self.heard(target)

    def heard(self, target: PingTarget) -> None:
        now = self.clock()
        target.last_reply = now
        self.counters["echo_replies"] += 1
        if target.status != "ping":
            old, target.status = target.status, "ping"
            name = target.node.name
            self.log.info(f"Status update for node {name}: status ping")
            self.log.info(f"Link {name}:{name} up.")
            self.events.record("node-up", "ping node answers", node=name)
            self.schedule_check(target, now)
            self.listener.on_ping_status(name, old, "ping")

    def schedule_check(self, target: PingTarget, since: float) -> None:
        self.timers.cancel(target.check_timer)
        delay = since + self.hacf.deadping_ms / 1000 - self.clock()
        target.check_timer = self.timers.call_later(delay, lambda: self.check(target))

    def check(self, target: PingTarget) -> None:
        """deadping after the last reply (or the start): the ping node is dead."""
        target.check_timer = None
        if target.node.name not in self.targets or target.status == "dead":
            return
        since = max(target.last_reply or 0.0, target.watched_since)
        if self.clock() - since < self.hacf.deadping_ms / 1000:
            return self.schedule_check(target, since)
        old, target.status = target.status, "dead"
        name = target.node.name
        self.log.warn(f"node {name}: is dead")
        self.log.info(f"Link {name}:{name} dead.")
        self.events.record("node-dead", "ping node silent for deadping" + (
            f", last answer at {wall_time(target.last_reply, self.clock())}" if target.last_reply else ""), node=name)
        self.listener.on_ping_status(name, old, "dead")

    def count_up(self) -> int:
        """ipfail's count: ping nodes answering now (a group counts once)."""
        return sum(1 for target in self.targets.values() if target.status == "ping")

    def snapshot(self) -> dict:
        now = self.clock()
        return {name: {"type": "ping", "status": target.status, "addresses": list(target.node.addresses),
                       "group": target.node.group,
                       "links": {name: "up" if target.status == "ping" else "dead"},
                       "last_heard_s": None if target.last_reply is None else round(now - target.last_reply, 3)}
                for name, target in self.targets.items()}


# #### Sensing: links and addresses ################################################################

class LinkListener(Protocol):
    """What LinkWatch tells the layer above (the cluster policy's LinkFaults)."""

    def on_carrier(self, ifname: str, up: bool) -> None: ...

    def on_address(self, ifname: str, ip: str, added: bool) -> None: ...


class LinkWatch:
    """The carrier of every interface and the IPv4 addresses on them, kept from the kernel's
    rtnetlink broadcasts: no polling, one socket in the daemon's loop. Tells `listener` what
    changed. A lost broadcast (ENOBUFS: we read too slowly) makes it dump links and addresses
    again and report what differs."""

    def __init__(self, log, listener: LinkListener, opener=open_watch_socket):
        self.log, self.listener, self.opener = log, listener, opener
        self.sock: Optional[socket.socket] = None
        self.opened = False             # open() has read the first dump
        self.carrier: Dict[str, bool] = {}
        self.names: Dict[int, str] = {}
        self.addresses: Dict[str, Tuple[str, int]] = {}     # ip -> (ifname, prefixlen)
        self.seq = 0
        self.dumping = ""               # "link" or "address" while a dump of ours is answered
        self.dumped: Dict[str, Tuple[str, int]] = {}
        self.dump_again = False         # events lost during a dump: one more once it ends
        self.overruns = 0
        self.complain = RateLimitedLog(log, time.monotonic)

    def open(self) -> bool:
        """Subscribe and read the links and addresses there are now; False (logged once) when
        rtnetlink cannot be had: the daemon then runs without the watch."""
        try:
            self.sock = self.opener()
            self.sock.settimeout(NETLINK_START_S)
            self.request_dump("link")
            deadline = time.monotonic() + NETLINK_START_S
            while self.dumping and time.monotonic() < deadline:
                try:
                    self.handle(self.sock.recv(NETLINK_READ_BYTES))
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise
                    self.overrun()
        except OSError as err:
            self.log.warn(f"address and link watch off: rtnetlink: {err.strerror or err} (a VIP removed by "
                          "hand is not added back; a lost carrier waits for deadtime)")
            self.close()
            return False
        self.sock.setblocking(False)
        self.opened = True
        return True

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def request_dump(self, what: str) -> None:
        self.seq += 1
        self.dumping = what
        if what == "address":
            self.dumped = {}
        self.sock.send(netlink_dump_request(RTM_GETLINK if what == "link" else RTM_GETADDR, self.seq))

    def read(self, _sock=None) -> None:
        """What the kernel sent since the last wake-up (a bounded number of datagrams)."""
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.sock.recv(NETLINK_READ_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    return
                self.complain("overrun", "rtnetlink overrun: events lost; reading links and addresses again", "warn")
                try:
                    self.overrun()
                except OSError:
                    self.dumping = ""
                continue
            self.handle(data)

    def overrun(self) -> None:
        """The kernel dropped broadcasts for us: dump again (after the dump under way, if any:
        the kernel answers one at a time)."""
        self.overruns += 1
        if self.dumping:
            self.dump_again = True
        else:
            self.request_dump("link")

    def handle(self, data: bytes) -> None:
        for event in parse_netlink(data):
            self.apply(event)

    def apply(self, event: NetlinkEvent) -> None:
        ours = self.dumping and event.seq == self.seq
        if event.kind in ("link", "link gone"):
            name = event.ifname or self.names.get(event.ifindex, "")
            if not name:
                return
            up = event.carrier and event.kind == "link"
            if event.kind == "link":
                self.names[event.ifindex] = name
            else:
                self.names.pop(event.ifindex, None)
            old = self.carrier.get(name)
            if event.kind == "link gone":
                self.carrier.pop(name, None)
            else:
                self.carrier[name] = up
            if old is not None and old != up:
                self.listener.on_carrier(name, up)
        elif event.kind in ("address", "address gone"):
            name = self.ifname(event.ifindex)
            if ours:
                self.dumped[event.ip] = (name, event.prefixlen)
            elif event.kind == "address":
                self.addresses[event.ip] = (name, event.prefixlen)
                self.listener.on_address(name, event.ip, True)
            else:
                self.addresses.pop(event.ip, None)
                self.listener.on_address(name, event.ip, False)
        elif ours and event.kind == "done":
            if self.dumping == "link" and not self.dump_again:
                self.request_dump("address")
            elif self.dumping == "link":
                self.dump_again = False
                self.request_dump("link")
            else:
                self.dumping = ""
                self.resync(self.dumped)
                if self.dump_again:
                    self.dump_again = False
                    self.request_dump("link")
        elif ours and event.kind == "error":
            self.log.warn(f"rtnetlink: dump of {self.dumping}s refused: {os.strerror(event.ifindex)}")
            self.dumping = ""

    def resync(self, now: Dict[str, Tuple[str, int]]) -> None:
        """After a dump: the addresses there are now; report those that came or went unseen."""
        before, self.addresses = self.addresses, dict(now)
        if not self.opened:
            return              # the first dump, in open(): where the watch starts from, not a change
        for ip, (name, _) in before.items():
            if ip not in now:
                self.listener.on_address(name, ip, False)
        for ip, (name, _) in now.items():
            if ip not in before:
                self.listener.on_address(name, ip, True)

    def ifname(self, index: int) -> str:
        if index not in self.names:
            try:
                self.names[index] = socket.if_indextoname(index)
            except OSError:
                return ""
        return self.names[index]

    def has_carrier(self, ifname: str) -> Optional[bool]:
        """True or False as the kernel last said; None for an interface we know nothing of."""
        return self.carrier.get(ifname)

    def current(self) -> List[AddressEntry]:
        """The addresses in IPAddresses.addresses()'s shape, from what the kernel told us."""
        return [AddressEntry(name, ipaddress.ip_interface(f"{ip}/{prefixlen}"), name)
                for ip, (name, prefixlen) in self.addresses.items()]

    def view(self, names: List[str]) -> Dict[str, str]:
        """For status: each interface named, "up", "no carrier" or "unknown"."""
        return {name: {True: "up", False: "no carrier"}.get(self.carrier.get(name), "unknown") for name in names}


# #### Sensing: service monitors ###################################################################

def check_result_word(res: ServiceResource, result: CommandResult) -> str:
    """A status check in one word or two, as the log and `status` show it."""
    if result.returncode == EXIT_TIMED_OUT:
        return "timed out"
    if says_running(res, result):
        return "running"
    if isinstance(res, AgentResource):
        return "stopped" if result.returncode == OCF_NOT_RUNNING else f"failed ({ocf_exit_text(result.returncode)})"
    if result.returncode in (EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND):
        return "cannot run"
    if res.lsb and result.returncode not in (0, 3):
        return f"failed (exit {result.returncode})"
    return "stopped"


@dataclasses.dataclass
class Watch:
    """One monitored resource: its settings and what its checks found."""
    settings: MonitorSettings
    res: ServiceResource
    timer: Optional[Timer] = None
    checking: bool = False          # a status check is running in its thread
    restarting: bool = False
    last_result: str = "not checked yet"
    last_checked: Optional[float] = None     # monotonic
    consecutive: int = 0            # failed checks in a row, towards `fall`
    failures: int = 0               # towards migration-threshold
    last_failure: Optional[float] = None
    restarts: int = 0
    moved_away: bool = False        # the group was handed to the peer: not started here
    procs: Optional["ProcessWatch"] = None   # a `process=` watch; None: a status check every interval


class MonitorRequests(Protocol):
    """What the service monitor asks the layer above (the cluster policy answers)."""

    def may_check(self, key: str) -> bool: ...

    def restart_resource(self, key: str, res: ServiceResource, done: Callable[[Optional[str]], None]) -> None: ...

    def move_group(self, key: str, reason: str) -> str: ...

    def allow_here(self, key: str) -> None: ...


class ProcessWatch:
    """A `monitor RESOURCE process=NAME` line's processes, watched the way keepalived's track_process
    names them (/proc/PID/comm, or argv[0] with cmdline=yes; zombies never count) but through pidfds: each
    matching process is held by one in the daemon's loop, which the kernel makes readable the moment
    that process exits, so an exit is acted on at once and nothing is polled. Processes that appear are
    found by reading /proc again (a ms or so) when an exit breaks quorum, when `delay` runs out, after a
    restart and every `interval` (the safety rescan, which also samples D state: one in D for `timeout`
    without once being switched is hung, and counts as gone). The count outside quorum..quorum_max for
    `delay` calls lost(why) once; rearm() after a restart starts afresh. Without pidfd_open (Linux before
    5.3, a seccomp filter) the rescan every interval is all there is, and the log says so once."""

    def __init__(self, settings: MonitorSettings, procs: ProcTable, selector: selectors.BaseSelector,
                 timers: Timers, log, may_watch: Callable[[], bool], lost: Callable[[str], None]):
        self.settings, self.procs, self.selector, self.timers, self.log = settings, procs, selector, timers, log
        self.may_watch, self.lost = may_watch, lost
        self.watching = False
        self.matched: Dict[int, ProcStat] = {}
        self.pidfds: Dict[int, int] = {}                  # pid -> pidfd, registered in the selector
        self.blocked: Dict[int, Tuple[float, Optional[int]]] = {}   # pid in D -> (since, its switch count)
        self.hung: set = set()
        self.ended: Dict[int, int] = {}                   # pid -> start time of one whose pidfd said it exited
        self.polling = ""                                 # why there are no pidfds ("": there are)
        self.lost_since: Optional[float] = None           # outside quorum since
        self.reported = False                             # lost() called for this outage
        self.settling = False                             # restarted: no verdict before quorum or the next interval
        self.delay_timer: Optional[Timer] = None
        self.last_change: Optional[float] = None          # when the count last changed
        self.last_scan: Optional[float] = None
        self.scans = self.exits = 0

    # -- what matches and how many -------------------------------------------

    def matches(self, found: ProcStat) -> bool:
        if found.state in ("Z", "X") or self.ended.get(found.pid) == found.starttime:
            return False
        if not self.settings.cmdline:
            return found.comm == self.settings.process
        return self.procs.argv0(found.pid) == self.settings.process

    def count(self) -> int:
        return len(self.matched) - len(self.hung)

    def in_quorum(self) -> bool:
        count, settings = self.count(), self.settings
        return settings.quorum <= count and (not settings.quorum_max or count <= settings.quorum_max)

    def result(self) -> str:
        """In the words of a status check's last_result: running, stopped, hung or out of quorum."""
        if self.in_quorum():
            return "running"
        return "hung" if self.hung and not self.count() else "stopped" if not self.count() else "out of quorum"

    def describe(self) -> str:
        """The count in words, for the log and `status`: '0 processes named nginx (quorum 1)'."""
        bounds = f"{self.settings.quorum}..{self.settings.quorum_max}" if self.settings.quorum_max \
            else f"{self.settings.quorum}"
        hung = f", {len(self.hung)} more hung in D state" if self.hung else ""
        return f"{self.count()} process{'es' if self.count() != 1 else ''} named {self.settings.process}{hung} " \
               f"(quorum {bounds})"

    # -- watching -------------------------------------------------------------

    def start(self) -> None:
        """The group runs here: find the processes and hold each by a pidfd."""
        if not self.watching:
            self.watching, self.lost_since, self.reported = True, None, False
        self.scan()

    def stop(self) -> None:
        """The group is not held here (or is being changed): watch nothing."""
        self.watching = False
        for pid in list(self.pidfds):
            self.forget(pid)
        self.matched.clear()
        self.blocked.clear()
        self.hung.clear()
        self.ended.clear()
        self.timers.cancel(self.delay_timer)
        self.delay_timer, self.lost_since, self.reported, self.settling = None, None, False, False

    def rearm(self) -> None:
        """After a restart in place: a new outage may begin. A service whose start returned before all its
        processes are up is given until the next interval (or the count in quorum) before a verdict."""
        self.timers.cancel(self.delay_timer)
        self.delay_timer, self.lost_since, self.reported = None, None, False
        self.watching, self.settling = True, True
        self.scan()

    def forget(self, pid: int) -> None:
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)

    def hold(self, found: ProcStat) -> bool:
        """A pidfd for a matching process, checked to be that process (a pid used again since the scan
        has another start time); False when it is gone already."""
        if self.polling or found.pid in self.pidfds:
            return True
        try:
            fd = self.procs.open_pidfd(found.pid)
        except OSError as err:
            if err.errno == errno.ESRCH:
                return False
            self.polling = f"pidfd_open: {err.strerror or err}"
            self.log.warn(f"monitor {self.settings.name}: {self.polling}: its processes are looked for every "
                          f"{format_duration(self.settings.interval_ms)} (interval) instead of watched")
            return True
        again = self.procs.stat(found.pid)
        if again is None or again.starttime != found.starttime:
            os.close(fd)
            return False
        self.pidfds[found.pid] = fd
        self.selector.register(fd, selectors.EVENT_READ, lambda _fd, pid=found.pid: self.exited(pid))
        return True

    def scan(self) -> None:
        """Read /proc: the matching processes now, each held; then judge the count."""
        now = self.timers.clock()
        self.scans += 1
        self.last_scan = now
        before = len(self.matched) - len(self.hung)
        matched, seen = {}, set()
        for pid in self.procs.pids():
            found = self.procs.stat(pid)
            seen.add(pid)
            if found is not None and self.matches(found) and self.hold(found):
                matched[pid] = found
        self.ended = {pid: start for pid, start in self.ended.items() if pid in seen}
        for pid in list(self.pidfds):
            if pid not in matched:
                self.forget(pid)          # it exec'd into another name, or is a zombie now
        self.matched = matched
        self.sample_blocked(now)
        if self.count() != before:
            self.last_change = now
        self.judge()

    def sample_blocked(self, now: float) -> None:
        """D state, at each scan: hung once it has been in D for `timeout` without one switch."""
        timeout_s = self.settings.timeout_ms / 1000
        for pid in list(self.blocked):
            if pid not in self.matched or self.matched[pid].state != "D":
                del self.blocked[pid]
        self.hung = set()
        for pid, found in self.matched.items():
            if found.state != "D":
                continue
            switches = self.procs.switches(pid)
            since, seen = self.blocked.get(pid, (now, switches))
            if switches != seen:
                since = now
            self.blocked[pid] = (since, switches)
            if now - since >= timeout_s:
                self.hung.add(pid)

    def exited(self, pid: int) -> None:
        """Its pidfd became readable: that process exited. Counted at once; when that leaves the count
        outside quorum, /proc is read again at once (a supervisor may have started another already); within
        it, not (a server that recycles its workers costs no read of /proc each time: the safety rescan
        counts their successors). While the group is being changed, nothing is watched any more."""
        self.exits += 1
        self.forget(pid)
        found = self.matched.pop(pid, None)
        if found is not None:
            self.ended[pid] = found.starttime
            self.blocked.pop(pid, None)
            self.hung.discard(pid)
            self.last_change = self.timers.clock()
        if not self.may_watch():
            self.stop()
            return
        if self.in_quorum():
            self.judge()
            return
        self.scan()

    # -- quorum ---------------------------------------------------------------

    def judge(self) -> None:
        if not self.watching:
            return
        if self.in_quorum():
            self.settling = False
            if self.lost_since is not None:
                self.log.info(f"Resource {self.settings.name}: {self.describe()}: back in quorum")
            self.timers.cancel(self.delay_timer)
            self.delay_timer, self.lost_since, self.reported = None, None, False
            return
        now = self.timers.clock()
        if self.lost_since is None:
            self.lost_since = now
            if self.settings.delay_ms:
                self.log.warn(f"Resource {self.settings.name}: {self.describe()}: a failure unless back within "
                              f"{format_duration(self.settings.delay_ms)} (delay)")
                self.delay_timer = self.timers.call_later(self.settings.delay_ms / 1000, self.delay_over)
                return
        if self.delay_timer is not None or self.reported or self.settling:
            return
        self.reported = True
        self.lost(self.describe())

    def delay_over(self) -> None:
        self.delay_timer = None
        if self.watching:
            self.scan()

    def tick(self) -> None:
        """Every interval while the group runs here: the safety rescan; an outage reported before (its
        restart failed) is reported again while it lasts, as a status check would find it again."""
        if not self.watching:
            self.start()
            return
        self.reported = self.settling = False
        self.scan()

    def snapshot(self, now: float) -> dict:
        return {"name": self.settings.process, "cmdline": self.settings.cmdline, "watching": self.watching,
                "matched": self.count(), "pids": sorted(set(self.matched) - self.hung), "hung": sorted(self.hung),
                "quorum": self.settings.quorum, "quorum_max": self.settings.quorum_max or None,
                "delay_ms": self.settings.delay_ms, "in_quorum": self.in_quorum() if self.watching else None,
                "last_change_s": None if self.last_change is None else round(now - self.last_change, 1),
                "events": "polling" if self.polling else "pidfd", "polling_why": self.polling or None,
                "exits": self.exits, "scans": self.scans}


class ServiceMonitor:
    """heartbeat.py.cf's `monitor` lines: each resource's `status` (an agent's monitor) every interval,
    in a thread of its own (a status that hangs is killed at its timeout and delays nothing else), while
    its group runs here and the policy is not busy. `fall` failed checks in a row are one failure; below
    migration-threshold the resource is restarted in place, at it the group goes to the peer."""

    def __init__(self, config: Config, policy: MonitorRequests, resources: Resources, timers: Timers, post, log,
                 selector: Optional[selectors.BaseSelector] = None, procs: Optional[ProcTable] = None):
        self.policy, self.resources, self.timers, self.post, self.log = policy, resources, timers, post, log
        self.selector = selector          # the daemon's loop, for process watches' pidfds (None: one of its own)
        self.procs = procs or ProcTable()
        self.watches: Dict[str, Watch] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Start, change or stop watches for the new settings; counts of a resource still watched stay."""
        wanted = {}
        for monitor in config.settings.monitors:
            found = [r for g in config.groups if g.key == monitor.group for r in g.resources
                     if r.spec == monitor.resource]
            if found:
                wanted[monitor.resource] = (monitor, found[0])
            else:
                self.log.warn(f"monitor {monitor.name}: not in the running haresources; not watched until a restart")
        for spec in list(self.watches):
            if spec not in wanted:
                watch = self.watches.pop(spec)
                self.timers.cancel(watch.timer)
                if watch.procs:
                    watch.procs.stop()
                self.policy.allow_here(watch.settings.group)
                self.log.info(f"Monitor of {spec} stopped")
        for spec, (monitor, res) in wanted.items():
            watch = self.watches.get(spec)
            if watch is None:
                watch = self.watches[spec] = Watch(monitor, res)
                self.log.info(f"Monitoring {spec}: {monitor.describe()}")
            elif watch.settings != monitor:
                self.log.info(f"Monitor of {spec} changed: {monitor.describe()}")
            changed = watch.settings.interval_ms != monitor.interval_ms
            if watch.procs and (watch.procs.settings.process, watch.procs.settings.cmdline) != \
                    (monitor.process, monitor.cmdline):
                watch.procs.stop()
                watch.procs = None
            watch.settings, watch.res = monitor, res
            if watch.procs:                          # the same processes: quorum, delay, timeout judged anew
                watch.procs.settings = monitor
                if watch.procs.watching:
                    watch.procs.scan()
            elif monitor.process:
                watch.procs = self.process_watch(watch)
                if not watch.restarting and self.policy.may_check(monitor.group):
                    watch.procs.start()
            if watch.timer is None or changed:
                self.schedule(watch)

    def heard(self, event: Event) -> None:
        """An EventLog listener (from the loop or a thread): a group that now runs here has its process
        watches started at once, not at their next interval (a process may die in between)."""
        if event.kind == "group-acquired":
            key = event.subjects.get("group", "")
            self.post(lambda: self.group_running(key))

    def group_running(self, key: str) -> None:
        for watch in self.watches.values():
            if watch.procs and watch.settings.group == key and not watch.restarting and self.policy.may_check(key):
                watch.moved_away = False
                watch.procs.start()

    def process_watch(self, watch: Watch) -> ProcessWatch:
        key = watch.settings.group
        if self.selector is None:
            self.selector = selectors.DefaultSelector()
        return ProcessWatch(watch.settings, self.procs, self.selector, self.timers, self.log,
                            may_watch=lambda: not watch.restarting and self.policy.may_check(key),
                            lost=lambda why: self.processes_lost(watch, why))

    def processes_lost(self, watch: Watch, why: str) -> None:
        """A process watch's quorum is lost past its delay: a failure, as a failed status check is."""
        if self.watches.get(watch.settings.resource) is not watch or watch.restarting:
            return
        if not self.policy.may_check(watch.settings.group):
            watch.procs.stop()
            return
        self.failed(watch, f"its process watch ({why})")

    def schedule(self, watch: Watch) -> None:
        self.timers.cancel(watch.timer)
        watch.timer = self.timers.call_later(watch.settings.interval_ms / 1000, lambda: self.tick(watch))

    def tick(self, watch: Watch) -> None:
        """Every interval: clear old failures, then check when allowed."""
        self.schedule(watch)
        self.expire(watch)
        key = watch.settings.group
        if watch.checking or watch.restarting:
            return
        if not self.policy.may_check(key):
            watch.consecutive = 0
            if watch.procs:
                watch.procs.stop()
            return
        watch.moved_away = False            # it runs here again (the peer that took it is gone)
        if watch.procs:
            watch.procs.tick()
            return
        watch.checking = True
        timeout_s, depth = watch.settings.timeout_ms / 1000, watch.settings.ocf_check_level
        in_thread(f"monitor {watch.settings.name}",
                  lambda: self.resources.run_script(watch.res, "status", timeout_s=timeout_s, quiet=True,
                                                    check_level=depth),
                  self.post, lambda result: self.checked(watch, result))

    def expire(self, watch: Watch) -> None:
        """failure-timeout: no failure for that long clears the count, and the group may run here again."""
        timeout_ms = watch.settings.failure_timeout_ms
        if not watch.failures or not timeout_ms or self.timers.clock() - watch.last_failure < timeout_ms / 1000:
            return
        self.log.info(f"Resource {watch.settings.name}: no monitor failure for {format_duration(timeout_ms)} "
                      f"(failure-timeout): failure count {watch.failures} cleared")
        self.clear(watch)

    def clear(self, watch: Watch) -> None:
        watch.failures = watch.consecutive = 0
        watch.last_failure = None
        watch.moved_away = False
        self.policy.allow_here(watch.settings.group)

    def clear_all(self) -> None:
        """`takeover`: every failure count starts again from 0."""
        for watch in self.watches.values():
            self.clear(watch)

    def checked(self, watch: Watch, result: Union[CommandResult, Exception]) -> None:
        """A status check's result, in the loop."""
        watch.checking = False
        if isinstance(result, Exception):     # a bug: a failed check, and the watch goes on
            result = CommandResult(EXIT_NOT_FOUND, f"internal error: {result!r}")
        if self.watches.get(watch.settings.resource) is not watch:
            return                        # no longer watched (reload)
        watch.last_checked = self.timers.clock()
        watch.last_result = check_result_word(watch.res, result)
        if not self.policy.may_check(watch.settings.group):
            return                        # the group moved or stopped meanwhile: this says nothing
        if watch.last_result == "running":
            watch.consecutive = 0
            return
        watch.consecutive += 1
        name, fall = watch.settings.name, watch.settings.fall
        if watch.consecutive < fall:
            self.log.warn(f"Resource {name} failed its monitor (status: {watch.last_result}): "
                          f"{watch.consecutive}/{fall} checks in a row (fall {fall})")
            return
        watch.consecutive = 0
        self.failed(watch, f"its monitor (status: {watch.last_result})")

    def failed(self, watch: Watch, why: str, restart: bool = True) -> None:
        """One failure: at migration-threshold the group moves to the peer; otherwise (or with no
        peer to take it) the resource is restarted in place, or, after a failed restart, again
        after the next check finds it down."""
        watch.failures += 1
        watch.last_failure = self.timers.clock()
        monitor = watch.settings
        threshold = monitor.migration_threshold
        head = f"Resource {monitor.name} failed {why}"
        count = f"failure {watch.failures}/{threshold or 'INFINITY'}"
        then = "restarting it in place" if restart else "trying again after the next check"
        if threshold and watch.failures >= threshold:
            error = self.policy.move_group(monitor.group, reason=f"monitor failure of {monitor.name}")
            if not error:
                watch.moved_away = True
                clears = (f" for {format_duration(monitor.failure_timeout_ms)} (failure-timeout)"
                          if monitor.failure_timeout_ms else "")
                self.log.error(f"{head}; {count}: migration-threshold reached, handing group {monitor.group} to "
                               f"the peer. It will not be started here{clears} or until 'heartbeat.py takeover'")
                return
            self.log.warn(f"{head}; {count}: migration-threshold reached, but the group cannot move ({error}): {then}")
        else:
            self.log.warn(f"{head}; {then} ({count})")
        if restart:
            self.restart(watch)

    def restart(self, watch: Watch) -> None:
        watch.restarting = True
        watch.restarts += 1
        if watch.procs:
            watch.procs.stop()              # its stop ends the processes: no event of the restart counts

        def done(error: Optional[str]) -> None:
            watch.restarting = False
            if self.watches.get(watch.settings.resource) is not watch:
                return
            if error is None:
                self.log.info(f"Resource {watch.settings.name} restarted in place")
                if watch.procs:
                    watch.procs.rearm()
                return
            watch.last_result = "restart failed"
            self.failed(watch, f"to restart ({error.splitlines()[0][:QUOTED_CHARS]})", restart=False)
        self.policy.restart_resource(watch.settings.group, watch.res, done)

    def snapshot(self) -> List[dict]:
        now = self.timers.clock()
        found = []
        for watch in self.watches.values():
            monitor = watch.settings
            if watch.procs and watch.procs.watching and watch.procs.last_scan is not None:
                watch.last_result, watch.last_checked = watch.procs.result(), watch.procs.last_scan
            clears_in = None
            if watch.failures and monitor.failure_timeout_ms:
                clears_in = round(max(0.0, watch.last_failure + monitor.failure_timeout_ms / 1000 - now), 1)
            found.append({
                "resource": monitor.name, "spec": monitor.resource, "group": monitor.group,
                "interval_ms": monitor.interval_ms, "timeout_ms": monitor.timeout_ms, "fall": monitor.fall,
                "migration_threshold": monitor.migration_threshold or None,
                "failure_timeout_ms": monitor.failure_timeout_ms,
                "last_result": watch.last_result,
                "last_checked_s": None if watch.last_checked is None else round(now - watch.last_checked, 1),
                "consecutive_failures": watch.consecutive, "failures": watch.failures, "restarts": watch.restarts,
                "failures_clear_in_s": clears_in, "moved_away": watch.moved_away,
                "process": watch.procs.snapshot(now) if watch.procs else None,
            })
        return found


# ==================================================================================================
# 7. DECIDING: the cluster policy (who holds which group), ipfail
# ==================================================================================================


# #### Deciding: the cluster policy ################################################################

MAX_START_FAILURES = 3          # per group and node; then it stays down here and says so
NEGOTIATION_ATTEMPTS = 3        # `starting` and failback requests, each a deadtime apart
STANDBY_REPLY_TIMEOUT_S = 10.0
STANDBY_DONE_TIMEOUT_S = 300.0  # a hand-over whose other side never says done is forgotten then
AUTO_FAILBACK_RETRY_S = 1.0     # 3.0.6 looks again this often while either side is in flux
ADDRESS_CHECK_DELAY_S = 0.2    # a group just started: its addresses are in the watch's table by then
FAULT_SETTLE_S = 0.25          # carrier back: after our next heartbeat, this long for the peer's word
FAULT_STOP_SHARE = 0.5         # of the peer's deadtime: then a group in fault whose peer is not heard stops
                               # the rest of its resources, done long before the peer takes it at deadtime
HOLD_NAMES = {(True, True): "all", (True, False): "local", (False, True): "foreign", (False, False): "none"}
MIRROR = {"local": "foreign", "foreign": "local", "all": "all", "none": "none"}


def classes_of(hold: str) -> List[str]:
    """rsc_hold value -> the classes it names, from the speaker's point of view."""
    return {"all": ["local", "foreign"], "local": ["local"], "foreign": ["foreign"]}.get(hold, [])


class GroupState(str, enum.Enum):
    """A group's state on this node, as status, the metrics and the events name it (a str, so
    the JSON report and comparisons with the names stay as they are)."""
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"              # would not start here (MAX_START_FAILURES in all)
    STOP_FAILED = "stop failed"    # would not stop: held here still
    FAULT = "fault"                # its interface has no carrier: the reason is in the group's Fault


@dataclasses.dataclass
class GroupStats:
    """Counts and last durations of one group on this node, for metrics."""
    takeovers: int = 0
    releases: int = 0
    start_failures: int = 0
    stop_failures: int = 0
    last_takeover_s: Optional[float] = None
    last_release_s: Optional[float] = None


@dataclasses.dataclass
class Fault:
    """A held group whose address is down because its interface lost carrier (keepalived's FAULT)."""
    iface: str
    peers: List[str]                        # who could take the group over meanwhile: alive or never heard
    since: float                            # when the carrier went (monotonic)
    carrier_back: Optional[float] = None    # when the carrier returned (monotonic)
    readd_failed: bool = False
    services_stopped: bool = False          # its other resources were stopped too (see LinkFaults.stop_the_rest)

    @property
    def reason(self) -> str:
        return f"{self.iface} no carrier"


class LinkFaults:
    """The cluster policy's side of the address and link watch, fed by LinkWatch in the loop.
    A held address that disappears is added back. An interface without carrier cannot serve:
    its held addresses go down at once (a fault, as keepalived's FAULT state) and, when the
    peer is heard on another medium, the group's class goes to it by the standby exchange.
    When the peer is not heard either, it takes the group at its deadtime: before that the rest
    of the group is stopped here, so a shared disk is never mounted on both nodes.
    When the carrier returns, the group comes back only if it is still ours once the peer has
    had time to say that it took it over meanwhile (then the split-brain rule decides)."""

    def __init__(self, policy: "ClusterPolicy"):
        self.policy = policy
        self.watch: Optional[LinkWatch] = None          # see use_watch()
        self.faults: Dict[str, Fault] = {}              # group key -> its fault
        self.fault_timer: Optional[Timer] = None
        self.address_check: Optional[Timer] = None
        self.readding: set = set()                      # addresses being added back

    def use_watch(self, watch: Optional[LinkWatch]) -> None:
        """The watch comes and goes with `link_watch` in heartbeat.py.cf (and rtnetlink being
        there); without one, nothing here does anything."""
        self.watch = watch

    def vip_iface(self, res: IPResource, current=None, holders=None, subnets=None) -> Optional[str]:
        """The interface res.ip is on, or would go on; None when unknown. current, holders and
        subnets: the watch's addresses and what was worked out from them for another address
        of the group (see addresses_of)."""
        if res.iface or not self.watch:
            return res.iface and res.iface.split(":")[0]        # eth0:1 is a label on eth0
        current = self.watch.current() if current is None else current
        holders = IPAddresses.holders(current) if holders is None else holders
        if res.ip in holders:
            return holders[res.ip]
        try:
            return self.policy.resources.addresses.plan(res, current, subnets).iface
        except (ResourceError, ValueError):
            return None

    def addresses_of(self, group: ResourceGroup) -> List[Tuple[IPResource, Optional[str]]]:
        """Each address of the group with its interface: the watch's addresses are read once for
        the group, not once for each of its addresses."""
        found, current, holders, subnets = [], None, None, {}
        for res in group.resources:
            if not isinstance(res, IPResource):
                continue
            if res.iface or not self.watch:
                found.append((res, self.vip_iface(res)))
                continue
            if current is None:
                current = self.watch.current()
                holders = IPAddresses.holders(current)
            key = (res.version, res.iface, res.prefix)
            if key not in subnets and res.ip not in holders:
                subnets[key] = IPAddresses.subnets(res, current)
            found.append((res, self.vip_iface(res, current, holders, subnets.get(key))))
        return found

    def watched_links(self) -> Optional[Dict[str, str]]:
        """For status: the carrier of the heartbeat media and of the addresses' interfaces."""
        if not self.watch:
            return None
        names = [medium.iface for medium in self.policy.config.hacf.media]
        names += [iface for group in self.policy.config.groups for _, iface in self.addresses_of(group) if iface]
        return self.watch.view(sorted(set(names)))

    def cannot_serve(self, classes: List[str]) -> str:
        """Why the groups of these classes cannot be served here now ('' when they can)."""
        for group in self.policy.groups_of(classes) if self.watch else []:
            for _, iface in self.addresses_of(group):
                if iface and self.watch.has_carrier(iface) is False:
                    return f"{iface} has no carrier here"
        return ""

    def held_and_running(self, group: ResourceGroup) -> bool:
        return self.policy.state[group.key] is GroupState.RUNNING and self.policy.holds[self.policy.class_of(group)]

    def on_address(self, iface: str, ip: str, added: bool) -> None:
        policy = self.policy
        if added:
            if self.watch.has_carrier(iface) is False:
                self.review()
            return
        if policy.busy() or policy.shutting_down:
            return          # perhaps our own release (queued while the group was starting): once quiet,
                            # after_change has review() look at the addresses again
        for group in policy.config.groups:
            if not self.held_and_running(group):
                continue
            for res in group.resources:
                if isinstance(res, IPResource) and res.ip == ip and ip not in self.readding:
                    self.add_back(res, iface)

    def add_back(self, res: IPResource, iface: str) -> None:
        self.readding.add(res.ip)
        self.policy.worker.submit(lambda: self.add_back_job(res), lambda result: self.added_back(res, iface, result))

    def add_back_job(self, res: IPResource) -> bool:
        """In the worker: False when the address is there already (nothing to do)."""
        if self.policy.resources.addresses.held(res):
            return False
        self.policy.resources.start(res)
        return True

    def added_back(self, res: IPResource, iface: str, result) -> None:
        self.readding.discard(res.ip)
        if isinstance(result, Exception):
            self.policy.log.error(f"IPaddr {res.ip} disappeared from {iface} while held: not added back: {result}")
        elif result:
            self.policy.log.warn(f"IPaddr {res.ip} disappeared from {iface} while held: added back")
        self.policy.after_change()

    def on_carrier(self, iface: str, up: bool) -> None:
        if iface in self.watched_links():
            self.policy.log.info(f"Link {iface}: carrier {'back' if up else 'lost'}")
        for fault in self.faults.values():
            if fault.iface == iface:
                fault.carrier_back, fault.readd_failed = (self.policy.timers.clock() if up else None), False
        self.review()

    def review(self) -> None:
        """Groups held on an interface without carrier go to fault; faults move on or end."""
        policy = self.policy
        if not self.watch or policy.shutting_down:
            return
        for key in [key for key in self.faults if policy.state[key] is not GroupState.FAULT]:
            del self.faults[key]
        for group in policy.config.groups:
            if self.held_and_running(group):
                down = [iface for _, iface in self.addresses_of(group)
                        if iface and self.watch.has_carrier(iface) is False]
                if down:
                    self.enter_fault(group, down[0])
                elif not self.address_check and any(res.ip not in self.watch.addresses
                                                    for res, _ in self.addresses_of(group)):
                    self.address_check = policy.timers.call_later(ADDRESS_CHECK_DELAY_S, self.check_addresses)
        now = policy.timers.clock()
        for group in [g for g in policy.config.groups if g.key in self.faults]:
            fault, cls = self.faults[group.key], policy.class_of(group)
            if policy.busy() or not policy.holds[cls]:
                continue
            if self.watch.has_carrier(fault.iface) is False:
                fault.carrier_back = None
                if self.heard_elsewhere(fault.iface):
                    policy.exchange.give_away(cls, reason=f"{fault.iface} no carrier")
                elif not fault.services_stopped and now - fault.since >= self.stop_after_s(fault):
                    self.stop_the_rest(group, fault, now)
            elif fault.carrier_back is None:
                fault.carrier_back = now
            elif not fault.readd_failed and self.may_serve_again(fault, cls, now):
                self.serve_again(group, fault)
        if self.faults and not self.fault_timer:
            self.fault_timer = policy.timers.call_later(policy.config.hacf.keepalive_ms / 1000, self.fault_tick)

    def check_addresses(self) -> None:
        """An address gone while its group was starting (no event then), or one just added whose
        event the watch had not read yet: by now it would have."""
        self.address_check = None
        if self.policy.busy() or self.policy.shutting_down:
            return          # after_change looks again once quiet
        for group in self.policy.config.groups:
            if self.held_and_running(group):
                for res, iface in self.addresses_of(group):
                    if res.ip not in self.watch.addresses and res.ip not in self.readding:
                        self.add_back(res, iface or "its interface")

    def fault_tick(self) -> None:
        self.fault_timer = None
        self.review()

    def enter_fault(self, group: ResourceGroup, iface: str) -> None:
        policy = self.policy
        policy.state[group.key] = GroupState.FAULT
        self.faults[group.key] = Fault(iface, [peer.name for peer in policy.membership.peers.values()
                                               if peer.status != "dead" or peer.last_heard is None],
                                       since=policy.timers.clock())
        gone = [res for res, name in self.addresses_of(group) if name == iface]
        policy.log.crit(f"Link {iface}: no carrier: taking {' '.join(res.ip for res in gone)} down "
                        f"(resource group {group.key} cannot be served here)")
        policy.timers.call_later(self.stop_after_s(self.faults[group.key]), self.review)    # on time, not at a tick

        def done(result):
            if isinstance(result, Exception):
                policy.log.error(f"{iface} has no carrier and its addresses could not be removed: {result}")
            policy.after_change()
        policy.worker.submit(lambda: policy.resources.addresses.remove(gone), done)

    def stop_after_s(self, fault: Fault) -> float:
        """How long after the carrier went the rest of a group in fault is stopped: a share of the
        shortest deadtime of the peers that could take it (the peer's clock runs from our last
        heartbeat, at most a keepalive before the carrier went)."""
        deadtimes = [peer.deadtime_ms for name in fault.peers
                     for peer in [self.policy.membership.peers.get(name)] if peer is not None]
        return min(deadtimes or [self.policy.config.hacf.deadtime_ms]) / 1000 * FAULT_STOP_SHARE

    def stop_the_rest(self, group: ResourceGroup, fault: Fault, now: float) -> None:
        """The peer cannot hear us: it takes the group at its deadtime. Stop the group's other
        resources now (in the worker, with every other action), so its disks are free by then."""
        policy = self.policy
        fault.services_stopped = True
        others = [res for res in group.resources if not isinstance(res, IPResource)]
        if not others:
            return
        policy.log.crit(f"Link {fault.iface}: no carrier for {now - fault.since:.1f} s and no peer heard on "
                        f"another link: stopping the rest of resource group {group.key}, which the peer takes "
                        "at its deadtime")

        def done(result) -> None:
            if result is not True:
                policy.resources.stuck.add(group.key)
                policy.log.error(f"Resource group {group.key} in fault: its resources did not all stop"
                                 + (f": {result}" if isinstance(result, Exception) else ""))
            policy.after_change()
        policy.worker.submit(lambda: policy.resources.stop_all(others), done)

    def heard_elsewhere(self, iface: str) -> Optional[str]:
        """A live peer whose heartbeats come on a medium other than iface, on a link with carrier."""
        now = self.policy.timers.clock()
        for peer in self.policy.live_peers():
            for link, heard in peer.links.items():
                if link != iface and peer.link_up.get(link) and self.watch.has_carrier(link) is not False \
                        and now - heard < peer.deadtime_ms / 1000:
                    return peer.name
        return None

    def may_serve_again(self, fault: Fault, cls: str, now: float) -> bool:
        """The carrier is back. A peer that was alive when it went (or never heard from) may have
        declared us dead and taken the group: it says so (partition healed) as soon as our next
        heartbeat reaches it. So wait until that heartbeat and the answer had time to come and the
        peer was heard again; a peer not heard within its deadtime is taken for dead. A peer we took
        for dead meanwhile says what it holds once it hears us (partition healed): that word is
        waited for (up to its deadtime), not a fixed time a loaded machine may outlast. A peer whose
        holdings came since, without the group (it released it), is waited for no longer: the
        hand-back then costs what a failback costs."""
        waited = now - fault.carrier_back
        settle_s = self.policy.config.hacf.keepalive_ms / 1000 + FAULT_SETTLE_S
        for name in fault.peers:
            peer = self.policy.membership.peers.get(name)
            if peer is None:
                continue
            hold, stable = self.policy.peer_holds.get(name, ("none", True))
            if peer.status != "dead" and MIRROR[cls] in classes_of(hold):
                return False
            if peer.status != "dead" and stable and self.policy.peer_holds_heard.get(name, -1.0) > fault.carrier_back:
                continue        # its word since the carrier came back, and it does not hold the group: at once
            if peer.status != "dead" and name not in self.policy.peer_holds and \
                    waited < peer.deadtime_ms / 1000 + settle_s:
                return False    # we took it for dead meanwhile: its holdings come as the partition heals
            heard = peer.status != "dead" and peer.last_heard is not None and peer.last_heard > fault.carrier_back
            if not heard and waited < peer.deadtime_ms / 1000 + settle_s:
                return False
            if waited < settle_s:
                return False
        return True

    def serve_again(self, group: ResourceGroup, fault: Fault) -> None:
        policy = self.policy
        addresses = [res for res, _ in self.addresses_of(group)]
        if fault.services_stopped:              # the whole group starts again, as in a takeover
            self.faults.pop(group.key, None)
            policy.state[group.key] = GroupState.STARTING
            policy.log.info(f"Link {fault.iface}: carrier back and resource group {group.key} still ours: "
                            "starting it again")
            started = policy.timers.clock()
            policy.worker.submit(lambda: {group.key: policy.resources.acquire_group(group)},
                                 lambda results: policy.acquired([group], "", None, None, started, results))
            return

        def job():
            for res in addresses:
                policy.resources.start(res)

        def done(result):
            if isinstance(result, Exception):
                fault.readd_failed = True
                policy.log.error(f"Link {fault.iface}: carrier back, but resource group {group.key}'s addresses "
                                 f"could not be added again: {result}")
            elif policy.state[group.key] is GroupState.FAULT:
                policy.state[group.key] = GroupState.RUNNING
                self.faults.pop(group.key, None)
                policy.log.info(f"Link {fault.iface}: carrier back and resource group {group.key} still ours: "
                                f"{' '.join(res.ip for res in addresses)} added again")
            policy.after_change()
        policy.worker.submit(job, done)


@dataclasses.dataclass
class StandbyStep:
    """One side of a standby exchange under way: the class handed over, with which peer, and the
    timer after which this side forgets the exchange."""
    rsc_hold: str              # in the giver's words
    peer: str
    timer: Timer


class StandbyExchange:
    """Heartbeat's standby exchange, both sides of it: the giver asks (ask_resources info=me),
    the taker agrees (info=other), the giver releases and says done, the taker acquires and says
    done. `request` is ours as the giver, `offer` the peer's as the taker; one at a time."""

    def __init__(self, policy: "ClusterPolicy"):
        self.policy = policy
        self.request: Optional[StandbyStep] = None
        self.offer: Optional[StandbyStep] = None

    @property
    def under_way(self) -> bool:
        return self.request is not None or self.offer is not None

    def forget(self, peer: str) -> None:
        """The peer is dead: no exchange with it goes on."""
        if self.request and self.request.peer == peer:
            self.policy.timers.cancel(self.request.timer)
            self.request = None
        if self.offer and self.offer.peer == peer:
            self.policy.timers.cancel(self.offer.timer)
            self.offer = None

    def give_away(self, cls: str, reason: str, request: Optional[Message] = None) -> str:
        """Start the exchange as the giver; `request` is the first message when a client (ipfail)
        sends it in its own words. An error when it cannot start."""
        policy = self.policy
        peers = policy.live_peers()
        if not peers:
            return "no live peer to take the resources"
        if self.under_way:
            return "a standby is already in progress"
        peer = peers[0].name
        policy.log.info(f"{policy.me} wants to go standby [{cls}] ({reason})")
        self.request = StandbyStep(cls, peer, policy.timers.call_later(STANDBY_REPLY_TIMEOUT_S, self.timeout))
        policy.membership.send(request or Message(("t", "ask_resources"), ("rsc_hold", cls), ("info", "me")))
        return ""

    def timeout(self) -> None:
        """No answer in time, at either step of the exchange: forget it, so that nothing stays
        busy for good (a lost packet, a peer that died, a forged request)."""
        policy = self.policy
        now = policy.timers.clock()
        if self.request and self.request.timer.due <= now:
            policy.log.warn("No reply to standby request.  Standby request cancelled.")
            if self.request.peer == policy.failback_asked and policy.failback_offers < NEGOTIATION_ATTEMPTS:
                policy.failback_to = policy.failback_asked       # the home node still waits for its groups
            self.request = None
        if self.offer and self.offer.timer.due <= now:
            policy.log.warn(f"{self.offer.peer} did not complete its standby: standby offer cancelled")
            self.offer = None
        policy.after_change()

    def on_ask_resources(self, peer: Peer, msg: Message) -> None:
        policy = self.policy
        if policy.shutting_down:
            return
        cls, info = msg.get("rsc_hold", "all"), msg.get("info", "")
        if info == "me":
            if policy.worker.busy or self.under_way:
                policy.log.warn(f"standby message [me] from {peer.name} ignored.  local resources in flux.")
                return
            unable = policy.links.cannot_serve(classes_of(MIRROR.get(cls, "all")))
            if unable:
                policy.log.warn(f"standby message [me] from {peer.name} ignored: {unable}")
                return
            policy.log.info(f"standby: acquire [{cls}] resources from {peer.name}")
            self.offer = StandbyStep(cls, peer.name, policy.timers.call_later(STANDBY_DONE_TIMEOUT_S, self.timeout))
            policy.membership.send(Message(("t", "ask_resources"), ("rsc_hold", cls), ("info", "other")))
        elif info == "other" and self.request and self.request.peer == peer.name:
            mine = self.request.rsc_hold
            policy.timers.cancel(self.request.timer)
            self.request = StandbyStep(mine, peer.name, policy.timers.call_later(STANDBY_DONE_TIMEOUT_S,
                                                                                 self.timeout))
            policy.log.info(f"standby: {peer.name} can take our {mine} resources")
            policy.failback_asked = None
            if mine in ("all", "local"):
                policy.in_standby = True
            policy.release(classes_of(mine), reason="standby", then=lambda: self.released(mine))
        elif info == "done" and self.offer and self.offer.peer == peer.name:
            theirs = self.offer.rsc_hold
            policy.in_standby = False
            policy.acquire(classes_of(MIRROR[theirs]), reason="", then=lambda: self.acquired(theirs))
        elif info == "done" and self.request and self.request.peer == peer.name:
            policy.log.info(f"Other node completed standby takeover of {self.request.rsc_hold} resources.")
            policy.timers.cancel(self.request.timer)
            self.request = None
            policy.after_change()

    def released(self, mine: str) -> None:
        """The giver's groups are stopped: say done."""
        self.policy.log.info(f"Local standby process completed [{mine}].")
        self.policy.membership.send(Message(("t", "ask_resources"), ("rsc_hold", mine), ("info", "done")))

    def acquired(self, theirs: str) -> None:
        """The taker runs the groups: say done, and the exchange is over."""
        if self.offer:
            self.policy.timers.cancel(self.offer.timer)
        self.offer = None
        self.policy.log.info(f"Standby resource acquisition done [{theirs}].")
        self.policy.membership.send(Message(("t", "ask_resources"), ("rsc_hold", theirs), ("info", "done")))

    def on_hb_takeover(self, peer: Peer, msg: Message) -> None:
        """The peer asks for resources (hb_takeover): give it the mirrored class."""
        if self.policy.shutting_down:
            return
        wanted = msg.get("rsc_hold", "all")
        error = self.give_away(MIRROR.get(wanted, "all"), reason=f"hb_takeover from {peer.name}")
        if error:
            self.policy.log.warn(f"hb_takeover from {peer.name} not honoured: {error}")


class ClusterPolicy:
    """Heartbeat's haresources rules, by resource class as on the wire: "local" groups have
    this node as home, "foreign" ones the peer. Hand-overs always release before acquiring."""

    def __init__(self, config: Config, membership: Membership, resources: Resources, worker: Worker,
                 log, on_released_all=None, events: Optional[EventLog] = None):
        self.config, self.membership, self.resources, self.worker = config, membership, resources, worker
        self.timers, self.log, self.me = membership.timers, log, config.node
        self.on_released_all = on_released_all
        self.holds = {"local": False, "foreign": False}
        self.state = {group.key: GroupState.STOPPED for group in config.groups}
        self.failures: Dict[str, int] = collections.Counter()
        self.failed_here: set = set()      # groups the monitor moved away: not started here while a peer lives
        self.peer_holds: Dict[str, Tuple[str, bool]] = {}     # peer -> (rsc_hold, isstable), its view
        self.peer_holds_stamp: Dict[str, Tuple[int, int]] = {}  # peer -> (hg, seq) of that announcement
        self.peer_holds_heard: Dict[str, float] = {}          # peer -> when that announcement came (monotonic)
        self.conflict_timer: Optional[Timer] = None            # see retry_conflicted
        self.conflict_waiting: set = set()     # groups another host's answer kept from starting while alone
        self.initial_pending: Optional[str] = None            # peer whose answer to `starting` we await
        self.initial_timer: Optional[Timer] = None
        self.starting_attempts = 0                      # `starting` sent, waiting for the peer's answer
        self.hb_takeovers_sent = 0                      # as the home node: hb_takeover asking for our groups
        self.failback_to: Optional[str] = None          # auto_failback: the returned home node, once stable
        self.failback_timer: Optional[Timer] = None
        self.failback_asked: Optional[str] = None       # the peer our auto_failback standby request went to
        self.failback_offers = 0                        # as the holder: standby requests handing them back
        self.failure_offers = 0                         # offer_failed_groups() since the last failure
        self.exchange = StandbyExchange(self)
        self.in_standby = False
        self.shutting_down = False
        self.fencer: Optional[Fencer] = None          # set by the daemon when a STONITH device is configured
        self.stonith_warned = False
        self.links = LinkFaults(self)
        self.events = events if events is not None else EventLog()
        self.stats = {group.key: GroupStats() for group in config.groups}
        self.active = False                             # holding a group (for the active/standby events)

    def reconfigure(self, config: Config) -> None:
        """A reload (SIGHUP): the daemon keeps the running groups, so only the settings change here."""
        self.config = self.resources.config = config

    # -- helpers -----------------------------------------------------------------

    def groups_of(self, classes: List[str]) -> List[ResourceGroup]:
        wanted = set(classes)
        return [g for g in self.config.groups if self.class_of(g) in wanted]

    def rsc_hold(self) -> str:
        return HOLD_NAMES[(self.holds["local"], self.holds["foreign"])]

    def live_peers(self) -> List[Peer]:
        return [p for p in self.membership.peers.values() if p.status != "dead" and p.last_heard is not None]

    def announce(self, stable: bool, info: str = "") -> None:
        msg = Message(("t", "resource"), ("rsc_hold", self.rsc_hold()), ("rtype", "full"),
                      ("isstable", "1" if stable else "0"))
        if info:
            msg.add("info", info)
        self.membership.send(msg)

    def busy(self) -> bool:
        return self.worker.busy or self.exchange.under_way

    # -- acquire and release (in the worker thread) ----------------------------------

    def acquire(self, classes: List[str], reason: str, then=None, dead_peer: Optional[Peer] = None) -> None:
        """Take the groups of these classes (dead_peer: the node whose death this is, for the
        outage the events report)."""
        classes = [c for c in classes if not self.holds[c]]
        if classes and self.membership.name_conflict:
            self.log.crit(f"Not acquiring [{' '.join(classes)}] resources: another node uses our name")
            return
        for cls in classes:
            self.holds[cls] = True
        alone = not self.live_peers()       # a group the monitor moved away beats no group at all
        groups = [g for g in self.groups_of(classes)
                  if self.failures[g.key] < MAX_START_FAILURES and (alone or g.key not in self.failed_here)]
        why = f"{dead_peer.name} is dead" if dead_peer else (reason or "the peer gave them up")
        self.start_groups(groups, why, reason, then, dead_peer)

    def start_groups(self, groups: List[ResourceGroup], why: str, reason: str, then=None,
                     dead_peer: Optional[Peer] = None) -> None:
        """Start these groups in the worker (why: the group-starting events' detail); acquired() then."""
        for group in groups:
            self.state[group.key] = GroupState.STARTING
            self.events.record("group-starting", why, group=group.key, node=self.me)
        if groups:
            self.announce(stable=False)
        started = self.timers.clock()
        self.worker.submit(lambda: {group.key: self.resources.acquire_group(group) for group in groups},
                           lambda results: self.acquired(groups, reason, then, dead_peer, started, results))

    def acquired(self, groups: List[ResourceGroup], reason: str, then, dead_peer: Optional[Peer], started: float,
                 results) -> None:
        """In the loop, once the worker has started the groups: count, record and log each one's
        result, tell the peer, and offer the peer what failed to start."""
        if isinstance(results, Exception):
            results = {group.key: f"internal error: {results!r}" for group in groups}
        failed, took = [], self.timers.clock() - started
        for key, error in results.items():
            retried = key in self.conflict_waiting
            self.conflict_waiting.discard(key)
            if error is None:
                self.state[key] = GroupState.RUNNING
                self.stats[key].takeovers += 1
                self.stats[key].last_takeover_s = took
                outage = ""
                if dead_peer and dead_peer.last_heard is not None:
                    outage = (f"down here {self.timers.clock() - dead_peer.last_heard:.3f} s: {dead_peer.name} "
                              f"last heard at {wall_time(dead_peer.last_heard, self.timers.clock())}")
                self.events.record("group-acquired", outage, duration_ms=took * 1000, group=key,
                                   node=self.me)
                continue
            self.stats[key].start_failures += 1
            self.events.record("group-failed", error.splitlines()[0][:EVENT_DETAIL_CHARS] if error else "", group=key,
                               node=self.me)
            if key in self.resources.stuck:     # half started and would not stop: it stays here
                self.state[key] = GroupState.STOP_FAILED
                self.log.crit(f"Resource group {key} failed to start and to stop: it stays held here")
                continue
            if key in self.resources.conflicted and (dead_peer or not self.live_peers()):
                self.failures[key] += 0 if retried else 1       # one failure, however long it lasts
                self.state[key] = GroupState.FAILED
                self.conflict_waiting.add(key)
                self.log.error(f"Resource group {key} failed to start here ({self.failures[key]}/{MAX_START_FAILURES}):"
                               f" {error}. Taken from a peer that is or was dead: the answer may be its copy, left "
                               "by a crash; trying again every deadtime, and when the peer is back")
                back = self.live_peers() and not retried       # back already, its stale copy gone
                self.retry_conflicted_later(0 if back else self.config.hacf.deadtime_ms / 1000)
                continue
            self.failures[key] += 1
            self.state[key] = GroupState.FAILED
            failed.append(key)
            self.log.error(f"Resource group {key} failed to start here "
                           f"({self.failures[key]}/{MAX_START_FAILURES}): {error}")
            if self.failures[key] >= MAX_START_FAILURES:
                self.log.error(f"Resource group {key} will not be started here again: it stays down "
                               "(fix it, then 'heartbeat.py takeover' or a restart retries)")
        self.log.info(f"Initial resource acquisition complete ({reason})" if reason else
                      "Resource acquisition complete")
        self.note_activity()
        self.announce(stable=True, info=reason)
        if then:
            then()
        if failed:
            self.failure_offers = 0          # a new failure: the peer is asked anew
        self.after_change()

    def waiting_on_a_conflict(self) -> List[ResourceGroup]:
        """Held groups that another host's answer for an address kept from starting while no peer
        was alive (see retry_conflicted)."""
        return [g for g in self.config.groups if g.key in self.conflict_waiting
                and self.state[g.key] is GroupState.FAILED and self.holds[self.class_of(g)]]

    def retry_conflicted_later(self, delay_s: float) -> None:
        if self.conflict_timer is None:
            self.conflict_timer = self.timers.call_later(delay_s, self.retry_conflicted)

    def retry_conflicted(self) -> None:
        """The host that answered may be the peer's stale copy, left by its crash: gone once the peer
        restarts (it removes it before it joins) or its machine reboots. Never given up for good:
        tried again every deadtime while no peer is alive; once one is, our own groups are tried at
        once, and the peer's go back to it as after any failure (offer_failed_groups)."""
        self.conflict_timer = None
        peers = self.live_peers()
        for group in self.waiting_on_a_conflict() if peers else []:
            if group.home != self.me:          # the peer's: it gets it back as after any failure
                self.conflict_waiting.discard(group.key)
        groups = [g for g in self.waiting_on_a_conflict() if not peers or g.home == self.me]
        if not groups or self.shutting_down:
            return
        if self.busy():
            self.retry_conflicted_later(self.config.hacf.keepalive_ms / 1000)
            return
        self.start_groups(groups, "trying again: an address was answered for by another host", "")

    def offer_failed_groups(self) -> None:
        """Groups that failed to start here go to a live peer by the standby exchange, as 3.0.6
        gives its resources up after a failure. A peer busy with its own start ignores that
        request ("local resources in flux") and a peer that comes later was not there to be
        asked, so, beyond 3.0.6, the peer is asked whenever both sides are quiet, until it takes
        them: NEGOTIATION_ATTEMPTS times for one failure, and again when the peer restarts."""
        failed = [g for g in self.config.groups if self.state[g.key] is GroupState.FAILED
                  and self.holds[self.class_of(g)] and g not in self.waiting_on_a_conflict()]
        peers = [p for p in self.live_peers() if self.peer_holds.get(p.name, ("none", True))[1]]
        if not failed or not peers or self.shutting_down or self.failure_offers >= NEGOTIATION_ATTEMPTS:
            return
        cls = "local" if any(g.home == self.me for g in failed) else "foreign"
        self.failure_offers += 1
        self.log.info(f"Offering [{cls}] resources to {peers[0].name} after the failure")
        self.exchange.give_away(cls, reason="start failure")

    def release(self, classes: List[str], reason: str, then=None) -> None:
        groups = list(reversed(self.groups_of(classes)))
        for group in groups:
            if self.state[group.key] is GroupState.RUNNING:
                self.state[group.key] = GroupState.STOPPING
            self.events.record("group-stopping", reason, group=group.key, node=self.me)
        if groups:
            self.announce(stable=False, info=reason)
        started = self.timers.clock()

        def job():
            return {group.key: self.resources.release_group(group) for group in groups}

        def done(results):
            stuck = [g for g in groups if isinstance(results, Exception) or not results.get(g.key)]
            took = self.timers.clock() - started
            for group in groups:
                self.state[group.key] = GroupState.STOP_FAILED if group in stuck else GroupState.STOPPED
                stats = self.stats[group.key]
                if group in stuck:
                    stats.stop_failures += 1
                    self.events.record("group-stop-failed", reason, group=group.key, node=self.me)
                else:
                    stats.releases += 1
                    stats.last_release_s = took
                    self.events.record("group-released", reason, duration_ms=took * 1000, group=group.key,
                                       node=self.me)
            for cls in classes:      # a class with a group that would not stop is still held: never say otherwise
                self.holds[cls] = any(g in stuck for g in self.groups_of([cls]))
            self.note_activity()
            self.announce(stable=True, info=reason)
            if stuck:
                self.log.crit(f"Resource group(s) {', '.join(g.key for g in stuck)} could not be released: "
                              f"held here still ({reason} not completed)")
                if self.shutting_down:
                    self.shutting_down = False
                    self.log.crit("Heartbeat shutdown cancelled: stop it again once the resource is fixed")
            elif then:
                then()
            self.after_change()

        self.worker.submit(job, done)

    def note_activity(self) -> None:
        """The `active` and `standby` events: this node came to hold a group, or holds none now."""
        active = any(self.state[g.key] not in (GroupState.STOPPED, GroupState.FAILED)
                     for g in self.groups_of(["local", "foreign"]) if self.holds[self.class_of(g)])
        if active != self.active:
            self.active = active
            self.events.record("active" if active else "standby", node=self.me)

    def after_change(self) -> None:
        """Once quiet, look again at what the peers announced: two holders must become one."""
        if not self.busy():
            for name in list(self.peer_holds):
                self.resolve_conflicts(name)
            self.links.review()
            self.perform_auto_failback()
            self.offer_failed_groups()

    # -- membership events ------------------------------------------------------------

    def negotiation_delay_s(self) -> float:
        return max(self.config.hacf.deadtime_ms / 1000, 2.0)

    def on_comm_up(self) -> None:
        peers = self.live_peers()
        if not peers:
            silent = list(self.membership.peers.values())[:1]     # never heard: it may hold anything

            def take():
                for peer in self.membership.peers.values():
                    self.log.info(f"Resources being acquired from {peer.name}.")
                self.acquire(["local", "foreign"], reason="mach_down", dead_peer=silent[0] if silent else None)
            self.take_over_from(silent[0] if silent else None, None, take)
            return
        self.initial_pending = peers[0].name
        self.starting_attempts = 0
        self.initial_timeout()

    def initial_timeout(self) -> None:
        """Send `starting`; a peer busy with a takeover ignores it (3.0.6 does), so ask again."""
        if not self.initial_pending:
            return
        if self.starting_attempts >= NEGOTIATION_ATTEMPTS:
            self.log.warn(f"No resource answer from {self.initial_pending}: deciding alone")
            self.decide_initial()
            return
        self.starting_attempts += 1
        self.membership.send(Message(("t", "starting")))
        self.initial_timer = self.timers.call_later(self.negotiation_delay_s(), self.initial_timeout)

    def decide_initial(self) -> None:
        """After `starting`: take our own groups unless the peer holds them."""
        name, self.initial_pending = self.initial_pending, None
        self.membership.timers.cancel(self.initial_timer)
        hold = self.peer_holds.get(name, ("none", True))[0] if name else "none"
        if "foreign" in classes_of(hold) and self.groups_of(["local"]):
            self.announce(stable=True)       # "we hold nothing, and are stable": 3.0.6 waits for it
            if self.config.hacf.auto_failback == "off":
                self.log.info("Initial resource acquisition complete (T_RESOURCES(them)): "
                              f"{name} keeps our groups (auto_failback off)")
                return
            self.hb_takeovers_sent = 0       # the holder should give them back: see that it does
            self.timers.call_later(self.negotiation_delay_s(), self.failback_watchdog)
            return
        self.acquire(["local"], reason="T_RESOURCES(us)")

    def failback_watchdog(self) -> None:
        """auto_failback: our groups are still on the peer; ask for them (hb_takeover local)."""
        if self.shutting_down or self.holds["local"] or self.in_standby:
            return
        peers = self.live_peers()
        if not peers:
            return
        hold = self.peer_holds.get(peers[0].name, ("none", True))[0]
        if self.busy():
            self.timers.call_later(self.negotiation_delay_s(), self.failback_watchdog)
        elif "foreign" not in classes_of(hold):
            self.acquire(["local"], reason="auto_failback")
        elif self.hb_takeovers_sent < NEGOTIATION_ATTEMPTS:
            self.hb_takeovers_sent += 1
            self.log.info(f"No failback from {peers[0].name} yet: asking for our resources (hb_takeover local)")
            self.membership.send(Message(("t", "hb_takeover"), ("rsc_hold", "local")))
            self.timers.call_later(self.negotiation_delay_s(), self.failback_watchdog)
        else:
            self.log.warn(f"{peers[0].name} keeps our resources; 'heartbeat.py takeover' moves them back")

    def on_name_conflict(self, active: bool) -> None:
        """The other node with our name is gone: take what this node would have taken."""
        if active or self.shutting_down or not self.membership.comm_up:
            return
        peers = self.live_peers()
        if not peers:
            self.acquire(["local", "foreign"], reason="name conflict over")
        elif not self.in_standby and "foreign" not in classes_of(self.peer_holds.get(peers[0].name, ("none",))[0]):
            self.acquire(["local"], reason="name conflict over")

    def on_node_status(self, peer: Peer, old: str, new: str) -> None:
        if new == "dead":
            held = self.peer_holds.pop(peer.name, None)
            self.exchange.forget(peer.name)
            if self.initial_pending == peer.name:
                self.decide_initial()
            if not self.membership.comm_up or self.shutting_down:
                return
            self.in_standby = False
            if not (self.holds["local"] and self.holds["foreign"]):
                def take():                  # after the reset, when there is one: 3.0.6's order
                    self.log.info(f"Resources being acquired from {peer.name}.")
                    self.acquire(["local", "foreign"], reason="", dead_peer=peer,
                                 then=lambda: self.log.info(f"mach_down takeover complete for node {peer.name}."))
                self.take_over_from(peer, held, take)
        elif old == "dead" and self.fencer:
            self.fencer.cancel(peer.name)
        if old == "dead" and new != "dead" and self.waiting_on_a_conflict():
            self.timers.cancel(self.conflict_timer)      # it removed its stale copy before it sent this
            self.conflict_timer = None
            self.retry_conflicted_later(0)
        if old == "dead" and new != "dead" and peer.partition_healed:
            self.log.info(f"Announcing our resources to {peer.name} after the partition")
            self.announce(stable=not self.worker.busy)

    # -- fencing: a dead peer is reset before its groups are taken (Heartbeat's rule) ----------

    def fencing_needed(self, peer: Optional[Peer], held: Optional[Tuple[str, bool]]) -> bool:
        """Not for a peer that stopped gracefully (shutdone), nor for one heard saying it holds
        nothing; a peer never heard, or one that held something, may still hold it."""
        if peer is None or peer.shutting_down:
            return False
        return not (peer.last_heard is not None and held is not None and held[0] == "none")

    def take_over_from(self, peer: Optional[Peer], held: Optional[Tuple[str, bool]], take) -> None:
        """take() now, or once the peer is reset; with no device, now, and say that disks are not safe."""
        if not self.fencing_needed(peer, held):
            if peer is not None and not peer.shutting_down:
                self.log.info(f"Dead node {peer.name} gave up resources.")
                self.membership.send(stonith_message(peer.name, "unneeded"))
            take()
        elif self.fencer:
            holding = bool(self.groups_of([c for c in ("local", "foreign") if self.holds[c]]))  # it resets first
            self.fencer.fence(peer.name, take, 0.0 if holding else self.config.settings.fence_delay_ms / 1000)
        else:
            self.membership.send(stonith_message(peer.name, "n_stnth"))
            if not self.stonith_warned:
                self.stonith_warned = True
                self.log.warn("No STONITH device configured.")
                self.log.warn("Shared disks are not protected.")
            take()

    # -- messages from the peer ---------------------------------------------------------

    def on_starting(self, peer: Peer, msg: Message) -> None:
        """The peer (re)started: tell it what we hold; with auto_failback, give back its groups that
        we hold or are taking now (not ones it hands us later by standby: those stay)."""
        if self.shutting_down:
            return
        self.peer_holds[peer.name] = ("none", False)
        self.failure_offers = 0              # what failed here may be offered to it again
        self.announce(stable=not self.worker.busy)
        if self.config.hacf.auto_failback != "off" and self.holds["foreign"] and \
                any(g.home == peer.name for g in self.config.groups):
            self.failback_to, self.failback_offers = peer.name, 0
            self.perform_auto_failback()

    def perform_auto_failback(self) -> None:
        """Ask the returned home node to take its groups back once neither side is in flux: a
        3.0.6 node ignores a standby request while it, or we, are still starting or taking over
        ("Other side is in flux"), so, as 3.0.6's PerformAutoFailback does, wait for our own
        work to end and for its stable announcement, and look again every second meanwhile."""
        name = self.failback_to
        self.timers.cancel(self.failback_timer)
        peer = self.membership.peers.get(name) if name else None
        if peer is None or peer.status == "dead" or self.shutting_down or self.config.hacf.auto_failback == "off":
            self.failback_to = None
            return
        if self.busy() or not self.peer_holds.get(name, ("none", False))[1]:
            self.failback_timer = self.timers.call_later(AUTO_FAILBACK_RETRY_S, self.perform_auto_failback)
            return
        self.failback_to = None
        if self.holds["foreign"] and self.groups_of(["foreign"]):
            self.failback_asked, self.failback_offers = name, self.failback_offers + 1
            self.exchange.give_away("foreign", reason="auto_failback")

    def on_resource(self, peer: Peer, msg: Message) -> None:
        if self.shutting_down:
            return
        stamp = (max(hex_number(msg.get("hg")), 0), hex_number(msg.get("seq")))
        if stamp < self.peer_holds_stamp.get(peer.name, (-1, -1)) <= (peer.generation, peer.max_seq):
            return      # retransmitted after a newer one: what the peer held then, not now
        self.peer_holds_stamp[peer.name] = stamp
        hold = msg.get("rsc_hold", "none")
        stable = msg.get("isstable", "1") == "1"
        self.peer_holds[peer.name] = (hold, stable)
        self.peer_holds_heard[peer.name] = self.timers.clock()
        if self.initial_pending == peer.name:
            self.decide_initial()
        elif stable and not self.busy():
            self.resolve_conflicts(peer.name)
            self.links.review()              # a group in fault may be ours to serve again now
            self.perform_auto_failback()
            self.offer_failed_groups()

    def resolve_conflicts(self, name: str) -> None:
        """Two holders of one group: its home node keeps it (and re-announces its MAC), the other
        releases it. Both sides apply the same rule, so it ends with exactly one holder."""
        hold, stable = self.peer_holds.get(name, ("none", True))
        theirs = classes_of(hold)
        if not stable or self.shutting_down:
            return
        if self.holds["foreign"] and "local" in theirs and self.groups_of(["foreign"]):
            self.log.error(f"Both machines own foreign resources! {name} is their home node: releasing them here")
            for group in self.groups_of(["foreign"]):
                self.events.record("split-brain", f"{name} is its home node and keeps it: released here",
                                   group=group.key, node=name)
            self.release(["foreign"], reason="split brain")
        if self.holds["local"] and "foreign" in theirs and self.groups_of(["local"]):
            self.log.error("Both machines own our resources! We are their home node: keeping them, "
                           "sending gratuitous ARP again")
            for group in self.groups_of(["local"]):
                self.events.record("split-brain", f"this node is its home node and keeps it; {name} releases it",
                                   group=group.key, node=name)
                self.worker.submit(lambda group=group: self.resources.announce_group(group))  # it reads the kernel
            self.announce(stable=True, info="split brain")

    # -- service monitoring (the Health section's requests) -------------------------------------

    def may_check(self, key: str) -> bool:
        """A group's resources may be checked: it runs here and nothing is being done to it."""
        return self.state.get(key) is GroupState.RUNNING and not self.busy() and not self.shutting_down

    def restart_resource(self, key: str, res, done) -> None:
        """Stop and start one resource of a running group in the worker, in line with every other
        action on resources; done(error or None) in the loop. A stop that fails is a stop failure."""
        group = next(g for g in self.config.groups if g.key == key)

        def job():
            if not self.resources.stop_all([res]):
                self.resources.stuck.add(key)
                return f"{res.spec} would not stop"
            try:
                self.resources.start(res)
            except ResourceError as err:
                return str(err)
            return None

        def finished(error):
            if isinstance(error, Exception):
                error = f"internal error: {error!r}"
            if key in self.resources.stuck and self.state[key] is GroupState.RUNNING:
                self.state[key] = GroupState.STOP_FAILED
                self.log.crit(f"Resource group {group.key} could not be restarted and will not stop: "
                              "it stays held here")
            done(error)
            self.after_change()

        self.worker.submit(job, finished)

    def move_group(self, key: str, reason: str) -> str:
        """Hand a group (with its class, as hb_standby does) to the live peer, and start it here no
        more until allow_here(key); an error when no peer can take it."""
        group = next(g for g in self.config.groups if g.key == key)
        if not self.live_peers():
            return "no live peer can take it"
        error = self.exchange.give_away(self.class_of(group), reason=reason)
        if not error:
            self.failed_here.add(key)
        return error

    def allow_here(self, key: str) -> None:
        self.failed_here.discard(key)

    def class_of(self, group: ResourceGroup, node: Optional[str] = None) -> str:
        """The group's class as `node` (this node by default) names it on the wire."""
        return "local" if group.home == (node or self.me) else "foreign"

    # -- commands and shutdown ---------------------------------------------------------------

    def standby(self) -> str:
        return self.exchange.give_away("all", reason="standby requested")

    def takeover(self) -> str:
        self.failed_here.clear()
        if not self.live_peers():
            self.in_standby = False
            self.failures.clear()
            self.acquire(["local", "foreign"], reason="takeover")
            return ""
        self.failures.clear()
        self.membership.send(Message(("t", "hb_takeover"), ("rsc_hold", "all")))
        return ""

    def shutdown(self) -> None:
        """Graceful stop: say so, release everything in reverse order, then shutdone."""
        self.shutting_down = True
        if self.exchange.request:
            self.timers.cancel(self.exchange.request.timer)
        self.membership.send(Message(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"),
                                     ("isstable", "0"), ("info", "shutdown")))
        self.log.info("Giving up all HA resources.")

        def released():
            self.log.info("All HA resources relinquished.")
            if self.on_released_all:
                self.on_released_all()
        self.release(["local", "foreign"], reason="shutdown", then=released)

    def snapshot(self) -> List[dict]:
        groups = []
        for group in self.config.groups:
            state = self.state[group.key]
            fault = self.links.faults.get(group.key) if state is GroupState.FAULT else None
            owner = None
            if self.holds[self.class_of(group)] and state in (GroupState.RUNNING, GroupState.STARTING,
                                                              GroupState.STOPPING, GroupState.FAULT):
                owner = self.me
            else:
                for name, (hold, _) in self.peer_holds.items():
                    peer = self.membership.peers.get(name)
                    if peer and peer.status != "dead" and self.class_of(group, name) in classes_of(hold):
                        owner = name
            groups.append({"key": group.key, "home": group.home, "resources": [r.spec for r in group.resources],
                           "owner": owner, "state": f"{state.value} ({fault.reason})" if fault else state.value,
                           "fault": fault.reason if fault else None, "failures": self.failures[group.key],
                           **dataclasses.asdict(self.stats[group.key])})
        return groups


# #### Deciding: ipfail (the node that sees more ping nodes serves) ################################

IPFAIL_RECHECK_S = 10.0    # ipfail's sleep(10) after the peer becomes stable, before counting again
IPFAIL_FLUX_RECHECK_S = 0.1   # a failback held back by a transition: how often to look whether it ended
IPFAIL_CLIENT = (("from_id", "ipfail"), ("to_id", "ipfail"), ("client_gen", "0"))   # what 3.0.6 adds
IPFAIL_LATE_S = 2          # a count sent this long before the sender's newest heartbeat is out of date


class IPFail:
    """Heartbeat's ipfail, built in (`respawn hacluster .../ipfail` in ha.cf turns it on). When a link
    or a ping node changes, the two nodes compare how many ping nodes each reaches, with 3.0.6's
    messages: the one that sees fewer gives its groups to the other (`ask_resources`, as
    hb_standby), after 2 x keepalive; equal counts abort a pending giveup. A real node's ipfail
    and this one understand each other."""

    def __init__(self, config: Config, membership: Membership, policy: "ClusterPolicy", pings: PingNodes, log):
        self.config, self.membership, self.policy, self.pings, self.log = config, membership, policy, pings, log
        self.timers = membership.timers
        self.enabled = False
        self.giveup_timer: Optional[Timer] = None
        self.giveup_class = ""
        self.need_standby = False
        self.peer_count: Optional[int] = None    # the peer's newest count of ping nodes
        self.failback_pending = False           # balanced while in a transition: decide once stable

    def start(self) -> None:
        """ipfail's own start-up refusals, then its sign-on, which the peer's ipfail answers."""
        self.enabled = self.refusal() is None
        if self.config.hacf.ipfail and not self.enabled:
            self.log.error(f"ipfail: {self.refusal()}: ipfail is off")
        if self.enabled:
            self.send_client_status("join", "signon")

    def stop(self) -> None:
        if self.enabled:
            self.send_client_status("leave", "signoff")

    def send_client_status(self, status: str, info: str) -> None:
        """What 3.0.6 broadcasts when ipfail signs on (the peer's ipfail then compares) or off."""
        self.membership.send(Message(("t", API_CLIENT_STATUS), ("st", status), ("from_id", "ipfail"),
                                     ("to_id", "ipfail"), ("src", self.config.node), ("info", info),
                                     ("client_gen", "0")))

    def send_to_peer(self, peer: str, *fields: Tuple[str, str]) -> None:
        """A node message from ipfail, fields in 3.0.6's order: ipfail's own, dest, then the API's."""
        self.membership.send(Message(*fields, ("dest", peer), *IPFAIL_CLIENT), dest=peer)

    def refusal(self) -> Optional[str]:
        if not self.config.hacf.ipfail:
            return "not configured"
        if not self.config.groups:
            return "No managed resources"
        if self.config.hacf.auto_failback == "legacy":
            return "auto_failback set to incompatible legacy option."
        return None

    def reconfigure(self, config: Config) -> None:
        self.config = config
        was, self.enabled = self.enabled, self.refusal() is None
        if was and not self.enabled:
            self.abort_giveup()

    def peer(self) -> Optional[str]:
        return next(iter(self.membership.peers), None)

    def stable(self) -> bool:
        """3.0.6 asks heartbeat for its resource state: anything but "transition" is stable."""
        return not self.policy.busy()

    # -- what makes ipfail count ------------------------------------------------

    def on_ping_status(self, name: str, old: str, new: str) -> None:
        if not self.enabled:
            return
        self.log.info(f"ipfail: Status update: Node {name} now has status {new}")
        if new == "ping":
            self.log.info("ipfail: A ping node just came up.")
            self.ask_ping_nodes()
        elif new == "dead":
            self.log.info("ipfail: NS: We are still alive!" if self.pings.count_up() else "ipfail: NS: We are dead. :<")
            self.on_link_change(name, name, "dead")

    def on_link_change(self, node: str, link: str, status: str) -> None:
        if not self.enabled or status != "dead":
            return
        self.log.info(f"ipfail: Link Status update: Link {node}/{link} now has status {status}")
        if self.pings.count_up():
            self.log.info("ipfail: Checking remote count of ping nodes.")
        else:
            self.log.info("ipfail: We are dead. :<")
        self.ask_ping_nodes()

    def on_client_status(self, peer: Peer, msg: Message) -> None:
        """The peer's ipfail signed on: compare counts with it."""
        if self.enabled and msg.get("st") == "join" and msg.get("from_id") == "ipfail":
            self.log.debug(f"ipfail: Got join message from another ipfail client. ({peer.name})")
            self.ask_ping_nodes()

    def on_query_client_status(self, peer: Peer, msg: Message) -> None:
        """`cl_status clientstatus NODE ipfail` on the peer: is our ipfail online?"""
        online = self.enabled and msg.get("cn") == "ipfail"
        self.membership.send(Message(("t", "respond-cstatus"), ("dest", peer.name), ("result", "OK"),
                                     ("cn", msg.get("cn", "")), ("to_id", msg.get("from_id", "")),
                                     ("cs", "online" if online else "offline")), dest=peer.name)

    # -- the exchange --------------------------------------------------------------

    def ask_ping_nodes(self) -> None:
        peer = self.peer()
        if peer is None or self.policy.shutting_down:
            return
        self.log.info("ipfail: Asking other side for ping node count.")
        self.send_to_peer(peer, ("t", "num_ping_nodes"), ("src", self.config.node),
                          ("num_ping", str(self.pings.count_up())))

    def is_late(self, peer: Peer, msg: Message) -> bool:
        """Sent during a partition and delivered after it by retransmission: the count it carries
        is history. 3.0.6 acts on it and can move groups from a node that sees its ping nodes again;
        the sender's own clock (ts) against its newest heartbeat tells, whatever our clock says."""
        age_s = peer.newest_ts - hex_number(msg.get("ts"))
        if age_s > IPFAIL_LATE_S:
            self.log.info(f"ipfail: {msg.get('t')} from {peer.name} was sent {age_s} s before its newest "
                          "heartbeat (delivered late, after a partition): ignored")
            return True
        return False

    def on_num_ping_nodes(self, peer: Peer, msg: Message) -> None:
        theirs = msg.get("num_ping", "")
        if not self.enabled or self.policy.shutting_down or not is_number(theirs) or self.is_late(peer, msg):
            return
        self.peer_count = int(theirs)
        self.compare(peer.name)

    def compare(self, peer: str) -> None:
        """3.0.6's rule on the two counts. Balanced with auto_failback while resources are in
        transition (a takeover under way), ipfail.c skips giving foreign groups back; here that
        decision waits for the transition to end and is taken then, or dropped when the counts
        differ meanwhile."""
        mine, theirs = self.pings.count_up(), self.peer_count
        if mine != theirs:
            self.failback_pending = False
        if mine > theirs:
            self.log.info("ipfail: Telling other node that we have more visible ping nodes.")
            self.send_to_peer(peer, ("t", "you_are_dead"))
        elif mine < theirs:
            self.log.info("ipfail: Giving up because we have less visible ping nodes.")
            self.delay_giveup("all")
        else:
            self.log.info("ipfail: Ping node count is balanced.")
            self.send_to_peer(peer, ("t", "abort_giveup"), ("src", self.config.node))
            if self.giveup_timer:
                self.abort_giveup()
            elif self.config.hacf.auto_failback == "on" and self.stable():
                self.failback_pending = False
                self.log.info("ipfail: Giving up foreign resources (auto_failback).")
                self.delay_giveup("foreign")
            elif self.config.hacf.auto_failback == "on" and not self.failback_pending:
                self.failback_pending = True
                self.log.info("ipfail: resources in transition: foreign resources are given up once it ends")
                self.timers.call_later(IPFAIL_FLUX_RECHECK_S, lambda: self.failback_when_stable(peer))

    def on_you_are_dead(self, peer: Peer, msg: Message) -> None:
        if self.enabled and not self.policy.shutting_down and not self.is_late(peer, msg):
            self.log.info("ipfail: Giving up because we were told that we have less ping nodes.")
            self.delay_giveup("all")

    def on_abort_giveup(self, peer: Peer, msg: Message) -> None:
        if self.enabled:
            self.abort_giveup()

    def delay_giveup(self, cls: str) -> None:
        """A newer giveup replaces an older one; it fires after 2 x keepalive."""
        delay_s = 2 * self.config.hacf.keepalive_ms / 1000
        self.log.info(f"ipfail: Delayed giveup in {int(delay_s)} seconds.")
        self.timers.cancel(self.giveup_timer)
        self.giveup_class = cls
        self.giveup_timer = self.timers.call_later(delay_s, self.giveup)

    def abort_giveup(self) -> None:
        if self.giveup_timer:
            self.log.info("ipfail: Aborted delayed giveup")
            self.timers.cancel(self.giveup_timer)
            self.giveup_timer = None
        else:
            self.log.info("ipfail: No giveup timer to abort.")

    def giveup(self) -> None:
        """Give our groups of that class to the peer (hb_standby's request), or, in a transition,
        count again once things are stable."""
        self.giveup_timer = None
        self.log.info("ipfail: giveup() called (timeout worked)")
        if self.policy.shutting_down:
            return
        if not self.stable():
            self.need_standby = True
            self.timers.call_later(IPFAIL_RECHECK_S, self.recheck)
            return
        self.need_standby = False
        if not any(self.policy.holds[cls] for cls in classes_of(self.giveup_class)):
            self.log.info(f"ipfail: no [{self.giveup_class}] resources held here: nothing to give up")
            return
        request = Message(("t", "ask_resources"), ("rsc_hold", self.giveup_class), ("src", self.config.node),
                          ("info", "me"), *IPFAIL_CLIENT)
        error = self.policy.exchange.give_away(self.giveup_class, reason="ipfail", request=request)
        if error:
            self.log.warn(f"ipfail: giving up [{self.giveup_class}] resources not possible: {error}")

    def failback_when_stable(self, peer: str) -> None:
        """The transition that held back a failback: once it is over, the counts are compared again."""
        if not self.failback_pending or not self.enabled or self.policy.shutting_down:
            self.failback_pending = False
            return
        if not self.stable():
            self.timers.call_later(IPFAIL_FLUX_RECHECK_S, lambda: self.failback_when_stable(peer))
            return
        self.failback_pending = False
        self.compare(peer)

    def recheck(self) -> None:
        """After a giveup met a transition: once stable, count again (3.0.6 waits 10 s more)."""
        if not self.need_standby or not self.enabled:
            return
        if not self.stable():
            self.timers.call_later(IPFAIL_RECHECK_S, self.recheck)
            return
        self.need_standby = False
        self.ask_ping_nodes()

    def snapshot(self) -> dict:
        return {"enabled": self.enabled, "refusal": None if self.enabled else self.refusal(),
                "ping_nodes_up": self.pings.count_up(),
                "pending_giveup": self.giveup_class if self.giveup_timer else None}


# #### Deciding: what sensing tells it, routed #####################################################


class DecisionRouter:
    """Membership's and the ping nodes' listener: node changes go to the cluster policy, link
    and ping node changes to ipfail, and each message type that is not membership's own to its
    handler, from the one table below. Sensing is built first (the policy and ipfail need
    membership and the ping nodes), so the router is made before them and routes once
    route_to() has them: membership starts after that, and nothing is heard before it does."""

    def __init__(self):
        self.policy: Optional[ClusterPolicy] = None
        self.ipfail: Optional[IPFail] = None            # None: ipfail is not built (unit tests)
        self.handlers: Dict[str, MessageHandler] = {}

    def route_to(self, policy: ClusterPolicy, ipfail: Optional[IPFail]) -> None:
        self.policy, self.ipfail = policy, ipfail
        self.handlers = {"starting": policy.on_starting, "resource": policy.on_resource,
                         "ask_resources": policy.exchange.on_ask_resources,
                         "hb_takeover": policy.exchange.on_hb_takeover}
        if ipfail:
            self.handlers.update({"num_ping_nodes": ipfail.on_num_ping_nodes, "you_are_dead": ipfail.on_you_are_dead,
                                  "abort_giveup": ipfail.on_abort_giveup, API_CLIENT_STATUS: ipfail.on_client_status,
                                  "query-cstatus": ipfail.on_query_client_status})

    def on_message(self, peer: Peer, msg: Message) -> None:
        handler = self.handlers.get(msg.get("t"))
        if handler:
            handler(peer, msg)

    def on_node_status(self, peer: Peer, old: str, new: str) -> None:
        self.policy.on_node_status(peer, old, new)

    def on_comm_up(self) -> None:
        self.policy.on_comm_up()

    def on_name_conflict(self, active: bool) -> None:
        self.policy.on_name_conflict(active)

    def on_link_change(self, node: str, link: str, status: str) -> None:
        if self.ipfail:
            self.ipfail.on_link_change(node, link, status)

    def on_ping_status(self, name: str, old: str, new: str) -> None:
        if self.ipfail:
            self.ipfail.on_ping_status(name, old, new)


# ==================================================================================================
# 8. REPORTING: notify.d hooks, status text, JSON, Prometheus metrics, the HTML page
# ==================================================================================================


# #### Reporting: notify.d hooks ###################################################################

NOTIFY_DIR = "notify.d"
NOTIFY_QUEUE_MAX = 1000
NOTIFY_DRAIN_S = 5.0             # at a clean stop, for the hooks of the last events
HOOK_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")     # run-parts' rule: no .sample, ~ or .dpkg-old copies


HOOK_RULE = ("a hook runs as this daemon's user: it and every directory above it must be root's, "
             "and writable by root alone")


def notify_hooks(directory: str) -> List[str]:
    """The hooks in a notify.d directory, in name order."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    paths = [os.path.join(directory, name) for name in names if HOOK_NAME_RE.match(name)]
    return [path for path in paths if os.path.isfile(path) and os.access(path, os.X_OK)]


def unsafe_path_problem(path: str, info: os.stat_result, uid: int) -> Optional[str]:
    """Why another user could change what path holds (None: they cannot): not root's nor uid's, or
    writable by a group other than root's or by anyone; a sticky directory (/tmp) may be, as only
    the owner of an entry in it can replace that entry. A symlink's own mode means nothing."""
    if info.st_uid not in (0, uid):
        return f"{path} belongs to uid {info.st_uid}, not to root"
    if stat.S_ISLNK(info.st_mode) or stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
        return None
    if info.st_mode & stat.S_IWOTH:
        return f"{path} is writable by other users"
    if info.st_mode & stat.S_IWGRP and info.st_gid != 0:
        return f"{path} is writable by group {info.st_gid}"
    return None


def hook_problem(path: str, uid: int) -> Optional[str]:
    """Why a notify.d hook must not run (None: it may), as keepalived's enable_script_security: the
    hook, the file a symlink leads to and every directory above either, up to /, pass
    unsafe_path_problem; uid is the daemon's (root, or the user of a test)."""
    seen = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        current = start
        while current not in seen:
            seen.add(current)
            try:
                problem = unsafe_path_problem(current, os.lstat(current), uid)
            except OSError as err:
                problem = f"cannot check {current}: {err.strerror}"
            if problem:
                return problem
            current = os.path.dirname(current)
    return None


class Notifier:
    """Calls every executable in DIR/notify.d (run-parts' names: letters, digits, _ and -) for every
    event, in the events' order, one at a time, from a thread of its own: a hook never delays a
    takeover. Each gets `EVENT NODE GROUP LINK DETAIL` as arguments (empty when not about one) and
    the same in HA_EVENT* variables; past the timeout it is killed. Failures are logged. A hook
    another user could change (hook_problem) is not run: logged once with the reason, counted. A NUL
    (which no argument or variable can hold) reaches a hook as the two characters \\0; an exception
    goes to faults (logged with its traceback, counted) and the thread goes on with the next event."""

    def __init__(self, config_dir: str, node: str, timeout_s: float, log, faults: Optional[Faults] = None):
        self.directory, self.node, self.timeout_s, self.log = os.path.join(config_dir, NOTIFY_DIR), node, timeout_s, log
        self.faults = faults or Faults(log)
        self.queue: queue.Queue = queue.Queue(NOTIFY_QUEUE_MAX)
        self.lost = 0
        self.refused: Dict[str, int] = {}       # hook -> events it was not run for
        self.told: Dict[str, str] = {}          # hook -> the reason last logged (once, until it changes)
        self.thread = threading.Thread(target=self.serve, name="notify", daemon=True)
        self.thread.start()

    def __call__(self, event: Event) -> None:
        """An EventLog listener: queue the event (never waits)."""
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.lost += 1
            if self.lost in (1, 10, 100, 1000):
                self.log.error(f"notify.d hooks are {NOTIFY_QUEUE_MAX} events behind: {self.lost} event(s) not told")

    def serve(self) -> None:
        scheduled_like_the_daemon()
        while True:
            event = self.queue.get()
            try:
                for hook in notify_hooks(self.directory):
                    if self.allowed(hook):
                        self.run(hook, event)
            except Exception as err:        # a bug costs this event's hooks, not every later event's
                self.faults("notify", err, event=event.kind != "internal-error")    # never feeds on itself
            finally:
                self.queue.task_done()

    def allowed(self, hook: str) -> bool:
        problem = hook_problem(hook, os.geteuid())
        if problem is None:
            self.told.pop(hook, None)
            return True
        self.refused[hook] = self.refused.get(hook, 0) + 1
        if self.told.get(hook) != problem:
            self.told[hook] = problem
            self.log.error(f"notify hook {hook} not run: {problem} ({HOOK_RULE})")
        return False

    def run(self, hook: str, event: Event) -> None:
        subjects = [event.subjects.get(key, "") for key in ("node", "group", "link")]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HA_CURHOST": self.node,
               "HA_EVENT": event.kind, "HA_EVENT_NODE": subjects[0], "HA_EVENT_GROUP": subjects[1],
               "HA_EVENT_LINK": subjects[2], "HA_EVENT_REASON": event.subjects.get("reason", ""),
               "HA_EVENT_DETAIL": event.detail,
               "HA_EVENT_DURATION_MS": "" if event.duration_ms is None else str(event.duration_ms),
               "HA_EVENT_TIME": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(event.wall)),
               "HA_EVENT_TIMESTAMP": f"{event.wall:.3f}"}
        env = {name: value.replace("\0", "\\0") for name, value in env.items()}
        argv = [word.replace("\0", "\\0") for word in (hook, event.kind, *subjects, event.detail)]
        result = run_command(argv, self.timeout_s, env)
        if result.returncode != 0:
            self.log.warn(f"notify hook {hook} {event.kind}: exit {result.returncode}: "
                          f"{result.output.strip()[-HOOK_OUTPUT_CHARS:]}")

    def drain(self, timeout_s: float = NOTIFY_DRAIN_S) -> None:
        """Wait (bounded) until the hooks have been told every event so far: at a clean stop."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)


# #### Reporting: service accounting (with psutil, when installed) #################################

# What each group's services use: the processes its start scripts left running (run_command gives
# each script a session of its own: `daemon &` stays in it), with their descendants. The numbers
# come from the optional extra psutil, imported at the first report (never at start-up); without it
# they are absent, `status` says how to get them, and nothing else changes.
PSUTIL_INSTALL = "apt install python3-psutil (Debian, Ubuntu) or dnf install python3-psutil (RHEL, Fedora)"
ACCOUNTING_CACHE_S = 1.0        # a collection is made at most this often: it reads /proc for every process
PSUTIL_RETRY_S = 60.0           # without psutil, how often a report tries the import again (installed meanwhile)
PIDS_SHOWN = 8                  # of a group's service processes, in `status`'s line
MIB = 1024 * 1024


def load_psutil():
    """The psutil module, or None when it is not installed (or cannot be loaded)."""
    try:
        import psutil
    except (ImportError, OSError):
        return None
    return psutil


def process_table(proc_dir: str = PROC_DIR) -> Dict[int, Tuple[int, int]]:
    """pid -> (parent pid, session id) of every process: one read of /proc/PID/stat each."""
    table = {}
    for name in os.listdir(proc_dir):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc_dir, name, "stat"), "rb") as handle:
                data = handle.read()
        except OSError:
            continue                    # gone meanwhile
        fields = data.rpartition(b")")[2].split(None, 5)     # after "PID (COMM) ": state ppid pgrp session
        if len(fields) > 3 and fields[1].isdigit() and fields[3].isdigit():    # else not a stat line: skipped
            table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def service_processes(table: Dict[int, Tuple[int, int]], sessions, pids=()) -> List[int]:
    """The processes in the sessions, the pids themselves, and every descendant of them (one that
    made a session of its own is still its parent's)."""
    found = {pid for pid, (_, sid) in table.items() if sid in sessions} | {pid for pid in pids if pid in table}
    children = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    todo = list(found)
    while todo:                         # each pid is queued once at most
        for child in children.pop(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


class ServiceRoots(NamedTuple):
    """Where a group's service processes are found: sessions (and their descendants), pids (and theirs)."""
    sessions: Tuple[int, ...]
    pids: Tuple[int, ...] = ()


class ProcessUsage(NamedTuple):
    """One service process as psutil reads it."""
    pid: int
    born: float                     # its start, wall clock
    cpu_s: float                    # its own user and system time
    rss_bytes: int
    open_fds: int


class ServiceAccounting:
    """Each group's service processes and what they use (count, CPU seconds, resident memory, open
    descriptors, age), from psutil; None without it. Made in the loop at most once per
    ACCOUNTING_CACHE_S (sooner when the groups' sessions change): a few ms for a few hundred
    processes on the host. A group's CPU seconds only grow, as a Prometheus counter must: what a
    process used stays counted after it ends (a sum over the living ones would fall)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, load=load_psutil, proc_dir: str = PROC_DIR):
        self.clock, self.load, self.proc_dir = clock, load, proc_dir
        self.psutil, self.tried_at = None, None
        self.made_at: Optional[float] = None
        self.asked: Dict[str, ServiceRoots] = {}
        self.last: Dict[str, dict] = {}
        self.ended: set = set()         # sessions found empty: a process later given that id is another's
        self.cpu_total_s: Dict[str, float] = collections.defaultdict(float)   # group -> CPU seen, ever
        self.cpu_seen: Dict[str, Dict[Tuple[int, float], float]] = {}         # group -> (pid, born) -> its CPU then

    def module(self):
        """psutil, imported at the first report; when missing, tried again every PSUTIL_RETRY_S (no restart
        needed once it is installed)."""
        now = self.clock()
        if self.psutil is None and (self.tried_at is None or now - self.tried_at >= PSUTIL_RETRY_S):
            self.psutil, self.tried_at = self.load(), now
        return self.psutil

    @property
    def version(self) -> Optional[str]:
        """psutil's version, or None when the numbers cannot be had."""
        module = self.module()
        return module.__version__ if module else None

    def groups(self, roots: Dict[str, ServiceRoots]) -> Optional[Dict[str, dict]]:
        """group key -> its processes' usage; None without psutil."""
        psutil = self.module()
        if psutil is None:
            return None
        now = self.clock()
        if self.made_at is not None and now - self.made_at < ACCOUNTING_CACHE_S and roots == self.asked:
            return self.last
        table = process_table(self.proc_dir)
        asked = {sid for root in roots.values() for sid in root.sessions}
        alive = {sid for _, sid in table.values()}
        self.ended = (self.ended | (asked - alive)) & asked
        self.last = {key: self.group_usage(key, self.usage(psutil, service_processes(
            table, set(root.sessions) - self.ended, root.pids))) for key, root in roots.items()}
        self.made_at, self.asked = now, dict(roots)
        return self.last

    @staticmethod
    def usage(psutil, pids: List[int]) -> List[ProcessUsage]:
        found = []
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times, memory, opened, born = proc.cpu_times(), proc.memory_info(), proc.num_fds(), \
                        proc.create_time()
            except psutil.Error:        # gone meanwhile, a zombie, or not ours to read
                continue
            found.append(ProcessUsage(pid, born, times.user + times.system, memory.rss, opened))
        return found

    def group_usage(self, key: str, processes: List[ProcessUsage]) -> dict:
        """The group's sums; its CPU seconds grow by what each process used since it was last seen."""
        seen, now_seen = self.cpu_seen.get(key, {}), {}
        for proc in processes:
            self.cpu_total_s[key] += max(0.0, proc.cpu_s - seen.get((proc.pid, proc.born), 0.0))
            now_seen[(proc.pid, proc.born)] = proc.cpu_s
        self.cpu_seen[key] = now_seen
        oldest = min((proc.born for proc in processes), default=None)
        return {"count": len(processes), "pids": [proc.pid for proc in processes],
                "cpu_seconds": round(self.cpu_total_s[key], 2), "rss_bytes": sum(proc.rss_bytes for proc in processes),
                "open_fds": sum(proc.open_fds for proc in processes),
                "uptime_s": None if oldest is None else round(max(0.0, time.time() - oldest), 1)}


def process_summary(usage: dict) -> str:
    """A group's service processes in a few words, for `status` and the page."""
    if not usage["count"]:
        return "no service process (none left by its start scripts, or they ended)"
    shown = " ".join(str(pid) for pid in usage["pids"][:PIDS_SHOWN]) + (" ..." if usage["count"] > PIDS_SHOWN else "")
    return (f"{usage['count']} service process(es) (pid {shown}): CPU {usage['cpu_seconds']:.2f} s, "
            f"RSS {usage['rss_bytes'] / MIB:.1f} MiB, {usage['open_fds']} open files, up {usage['uptime_s']:.0f} s")


def accounting_missing(report: dict) -> bool:
    """The daemon could not count its groups' service processes: its Python has no psutil."""
    return "psutil" in report and report["psutil"] is None and bool(report.get("groups"))


# #### Reporting: Prometheus text and the HTML page ################################################

# Both are drawn from the same report as `status --json`, so they never disagree with it. Names
# follow ha_cluster_exporter and keepalived-exporter: snake_case, one series per state with the
# value 1 or 0, `_total` for counters, `_seconds` for times.
NODE_STATES = ("init", "up", "active", "dead", "ping")
GROUP_STATES = tuple(state.value for state in GroupState)
EVENTS_ON_PAGE = 50
FLOAT_DIGITS = 15               # a float's significant digits in the text: a counter past a million seconds
                                # still moves by its hundredths (a double holds 15 digits exactly)


def group_state(group: dict) -> str:
    """A group's GroupState name from the report, whose "state" also says why for a fault."""
    return GroupState.FAULT.value if group.get("fault") else group["state"]


def prometheus_label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsText:
    """The text exposition format: a HELP and TYPE line per metric family, then its samples."""

    def __init__(self):
        self.lines: List[str] = []

    def family(self, name: str, kind: str, meaning: str, samples) -> None:
        """samples: (labels dict, value) pairs; a family without samples is left out."""
        samples = [(labels, value) for labels, value in samples if value is not None]
        if not samples:
            return
        self.lines += [f"# HELP {name} {meaning}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            text = ",".join(f'{key}="{prometheus_label(val)}"' for key, val in labels.items())
            number = f"{value:.{FLOAT_DIGITS}g}" if isinstance(value, float) else str(int(value))
            self.lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def up_metric(up: bool) -> MetricsText:
    """heartbeat_up: the first metric, and the only one when no daemon answers."""
    out = MetricsText()
    out.family("heartbeat_up", "gauge", "1: heartbeat.py runs and answered", [({}, int(up))])
    return out


def prometheus_text(report: dict) -> str:
    """A status report as Prometheus metrics (`status --format prometheus`, and /metrics)."""
    out, me = up_metric(True), report["node"]
    out.family("heartbeat_info", "gauge", "this node, its version and generation",
               [({"node": me, "version": report["version"], "generation": report["generation"]}, 1)])
    out.family("heartbeat_uptime_seconds", "gauge", "seconds since the daemon started",
               [({}, float(report["uptime_s"]))])
    nodes = report["nodes"]
    out.family("heartbeat_node_status", "gauge", "1 for the state each node (and ping node) is in, 0 for the others",
               [({"node": name, "type": node.get("type", "normal"), "status": state}, int(node["status"] == state))
                for name, node in nodes.items() for state in NODE_STATES
                if state != "ping" or node.get("type") == "ping"])
    out.family("heartbeat_node_last_heard_seconds", "gauge", "seconds since a peer (or ping node) was last heard",
               [({"node": name}, float(node["last_heard_s"])) for name, node in nodes.items()
                if not node.get("self") and node.get("last_heard_s") is not None])
    out.family("heartbeat_link_status", "gauge", "1 for the state of each node's heartbeat link",
               [({"node": name, "link": link, "status": state}, int(seen == state))
                for name, node in nodes.items() if node.get("type") != "ping"
                for link, seen in node["links"].items() for state in ("up", "dead")])
    out.family("heartbeat_link_send_errors_total", "counter", "datagrams this node could not send on a link",
               [({"link": link["name"], "kind": link["kind"]}, link["send_errors"]) for link in report["links"]])
    groups = report.get("groups", [])
    out.family("heartbeat_group_owner", "gauge", "1 for the node holding each resource group (node=\"\": nobody)",
               [({"group": g["key"], "home": g["home"], "node": g["owner"] or ""}, 1) for g in groups])
    out.family("heartbeat_group_state", "gauge", "1 for the state of each resource group on this node",
               [({"group": g["key"], "state": state}, int(group_state(g) == state))
                for g in groups for state in GROUP_STATES])
    for field, name, meaning in (
            ("takeovers", "heartbeat_group_takeovers_total", "resource group starts completed on this node"),
            ("releases", "heartbeat_group_releases_total", "resource group stops completed on this node"),
            ("start_failures", "heartbeat_group_start_failures_total", "failed starts of a group on this node"),
            ("stop_failures", "heartbeat_group_stop_failures_total", "failed stops of a group on this node")):
        out.family(name, "counter", meaning, [({"group": g["key"]}, g[field]) for g in groups])
    for field, name, meaning in (
            ("last_takeover_s", "heartbeat_group_last_takeover_duration_seconds", "how long the last start took"),
            ("last_release_s", "heartbeat_group_last_release_duration_seconds", "how long the last stop took")):
        out.family(name, "gauge", meaning, [({"group": g["key"]}, None if g[field] is None else float(g[field]))
                                            for g in groups])
    accounted = [g for g in groups if "processes" in g]           # with psutil only
    for field, name, kind, meaning in (
            ("count", "heartbeat_group_processes", "gauge",
             "service processes of each group: its start scripts' sessions and their descendants"),
            ("cpu_seconds", "heartbeat_group_process_cpu_seconds_total", "counter",
             "CPU time (user and system) the group's service processes were seen to use, those ended included"),
            ("rss_bytes", "heartbeat_group_process_resident_memory_bytes", "gauge",
             "resident memory of the group's service processes"),
            ("open_fds", "heartbeat_group_process_open_fds", "gauge",
             "file descriptors the group's service processes hold open"),
            ("uptime_s", "heartbeat_group_process_uptime_seconds", "gauge",
             "seconds since the group's oldest service process started")):
        out.family(name, kind, meaning, [({"group": g["key"]}, g["processes"][field]) for g in accounted])
    counters = report["counters"]
    out.family("heartbeat_packets_sent_total", "counter", "datagrams sent", [({}, counters.get("sent", 0))])
    out.family("heartbeat_packets_received_total", "counter", "datagrams received",
               [({}, counters.get("received", 0))])
    out.family("heartbeat_packets_dropped_total", "counter", "datagrams dropped, by reason",
               [({"reason": key[len("dropped_"):]}, value) for key, value in sorted(counters.items())
                if key.startswith("dropped_") and key not in NORMAL_DROPS])
    keys = report.get("auth_keys", [])
    out.family("heartbeat_auth_key_received_total", "counter", "datagrams each authkeys key authenticated",
               [({"index": k["index"], "method": k["method"] or ""}, k["received"]) for k in keys])
    out.family("heartbeat_auth_key_last_seen_seconds", "gauge", "seconds since a datagram signed with each "
               "authkeys key came", [({"index": k["index"]}, None if k["last_seen_s"] is None
                                      else float(k["last_seen_s"])) for k in keys])
    out.family("heartbeat_auth_key_signing", "gauge", "1 for the authkeys key this node signs with (auth N)",
               [({"index": k["index"], "method": k["method"] or ""}, int(k["signing"])) for k in keys])
    out.family("heartbeat_extra_info", "gauge", "1 when an optional package can be imported (its version), "
               "0 when not", [({"extra": name, "version": version or ""}, int(bool(version)))
                              for name, version in sorted(report.get("extras", {}).items())])
    monitors = report.get("monitors", [])
    out.family("heartbeat_monitor_failures", "gauge", "failures counted towards migration-threshold",
               [({"resource": m["resource"], "group": m["group"]}, m["failures"]) for m in monitors])
    out.family("heartbeat_monitor_restarts_total", "counter", "restarts in place by the monitor",
               [({"resource": m["resource"], "group": m["group"]}, m["restarts"]) for m in monitors])
    out.family("heartbeat_monitor_last_check_ok", "gauge", "1 when the last status check found it running",
               [({"resource": m["resource"], "group": m["group"]}, int(m["last_result"] == "running"))
                for m in monitors if m["last_result"] is not None])
    watched = [(m, m["process"]) for m in monitors if m.get("process") and m["process"]["watching"]]
    out.family("heartbeat_monitor_processes", "gauge", "processes a process watch counts (zombies and hung "
               "ones not), while its group runs here", [({"resource": m["resource"], "group": m["group"],
                                                          "process": p["name"]}, p["matched"]) for m, p in watched])
    out.family("heartbeat_monitor_processes_hung", "gauge", "processes in D state for timeout without a switch",
               [({"resource": m["resource"], "group": m["group"]}, len(p["hung"])) for m, p in watched])
    out.family("heartbeat_monitor_process_quorum", "gauge", "a process watch's bounds: fewest (min) and most (max) "
               "processes that are right", [({"resource": m["resource"], "group": m["group"], "bound": bound},
                                             p[field]) for m, p in watched
                                            for bound, field in (("min", "quorum"), ("max", "quorum_max"))])
    out.family("heartbeat_monitor_process_in_quorum", "gauge", "1 while the count is within quorum..quorum_max",
               [({"resource": m["resource"], "group": m["group"]}, int(p["in_quorum"])) for m, p in watched])
    out.family("heartbeat_monitor_process_last_change_seconds", "gauge", "seconds since the count last changed",
               [({"resource": m["resource"], "group": m["group"]}, None if p["last_change_s"] is None
                 else float(p["last_change_s"])) for m, p in watched])
    out.family("heartbeat_monitor_process_exits_total", "counter", "exits of watched processes the kernel "
               "reported through their pidfds", [({"resource": m["resource"], "group": m["group"]}, p["exits"])
                                                 for m, p in watched])
    stonith = report.get("stonith") or {}
    fenced = sorted(set(stonith.get("resets", {})) | set(stonith.get("failures", {})) | set(stonith.get("fencing", [])))
    out.family("heartbeat_stonith_device_ok", "gauge", "1 when the STONITH device's last status check passed",
               [({"device": stonith["device"]}, int(stonith["device_ok"]))] if stonith.get("device_ok") is not None
               else [])
    out.family("heartbeat_stonith_fencing", "gauge", "1 while a node is being reset: its groups wait for the reset",
               [({"node": node}, int(node in stonith["fencing"])) for node in fenced])
    out.family("heartbeat_stonith_fencing_seconds", "gauge", "how long the reset under way has been tried",
               [({"node": node}, float(seconds)) for node, seconds in stonith.get("fencing_s", {}).items()])
    out.family("heartbeat_stonith_resets_total", "counter", "nodes reset by this node",
               [({"node": node}, stonith.get("resets", {}).get(node, 0)) for node in fenced])
    out.family("heartbeat_stonith_failures_total", "counter", "failed reset attempts (each retried 5 s later)",
               [({"node": node}, stonith.get("failures", {}).get(node, 0)) for node in fenced])
    ipfail = report.get("ipfail") or {}
    if ipfail.get("enabled"):
        out.family("heartbeat_ping_nodes_up", "gauge", "ping nodes answering this node (ipfail's count)",
                   [({}, ipfail["ping_nodes_up"])])
    out.family("heartbeat_notify_hooks_refused_total", "counter", "events a notify.d hook was not run for: "
               "another user could change it", [({"hook": os.path.basename(hook)}, n)
                                                for hook, n in sorted(report.get("notify_refused", {}).items())])
    faults = sorted(report.get("internal_errors", {}).items())
    out.family("heartbeat_internal_errors_total", "counter", "exceptions a thread or the loop caught and went on "
               "after (a bug: the log has each traceback), by where", [({"where": w}, n) for w, n in faults])
    out.family("heartbeat_http_refused_total", "counter", "connections and requests the HTTP listener refused, by "
               "reason (not allowed, busy, unauthorized, tls handshake)",
               [({"reason": reason}, n) for reason, n in sorted(report.get("http_refused", {}).items())])
    counts = report.get("event_counts", {})
    out.family("heartbeat_events_total", "counter", "events since the daemon started, by kind (see status --events)",
               [({"kind": kind}, counts.get(kind, 0)) for kind in EVENT_KINDS])
    return out.text()


def html_page(report: dict) -> str:
    """The read-only status page: nodes, links, groups and the last events; no script, no form."""
    import html

    def row(cells, tag="td"):
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(cell))}</{tag}>" for cell in cells) + "</tr>"

    def table(caption, head, rows):
        return (f"<h2>{html.escape(caption)}</h2>\n<table border=\"1\">" + row(head, "th")
                + "".join(row(r) for r in rows) + "</table>\n")
    nodes = report["nodes"]
    heard = {name: "this node" if node.get("self") else "never" if node.get("last_heard_s") is None
             else f"{node['last_heard_s']:.1f} s ago" for name, node in nodes.items()}
    events = report.get("events", [])[-EVENTS_ON_PAGE:]
    body = [
        f"<h1>heartbeat.py on {html.escape(report['node'])}: {html.escape(report['status'])}</h1>",
        f"<p>version {html.escape(report['version'])}, up {report['uptime_s']} s, auto_failback "
        f"{html.escape(report['auto_failback'])}; page made at {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        table("Nodes", ["node", "type", "status", "last heard"],
              [[name, node.get("type", "normal"), node["status"], heard[name]] for name, node in nodes.items()]),
        table("Links", ["node", "link", "status"],
              [[name, link, state] for name, node in nodes.items() if node.get("type") != "ping"
               for link, state in node["links"].items()]),
        table("Resource groups", ["group", "home", "held by", "state", "takeovers here", "service processes"],
              [[g["key"], g["home"], g["owner"] or "nobody", g["state"], g["takeovers"],
                process_summary(g["processes"]) if "processes" in g else "-"] for g in report.get("groups", [])]),
        f"<p>Service processes are not counted: psutil is not installed ({html.escape(PSUTIL_INSTALL)}).</p>"
        if accounting_missing(report) else "",
        table(f"Last {len(events)} events", ["time", "event", "about", "duration", "detail"],
              [[wall_text(e["time"], date=True), e["kind"], event_subjects(e),
                "" if e["duration_ms"] is None else f"{e['duration_ms']} ms", e["detail"]] for e in events]),
    ]
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>heartbeat.py on "
            f"{html.escape(report['node'])}</title></head>\n<body>\n" + "\n".join(body) + "</body></html>\n")


def event_subjects(event: dict) -> str:
    return " ".join(f"{key}={event[key]}" for key in ("node", "group", "link", "reason") if key in event)


def format_events(report: dict) -> str:
    """`status --events`: one line per event, oldest first, durations in ms."""
    lines = []
    for event in report.get("events", []):
        took = "" if event["duration_ms"] is None else f" ({event['duration_ms']} ms)"
        detail = f": {event['detail']}" if event["detail"] else ""
        lines.append(f"{wall_text(event['time'], date=True)} {event['kind']:<17} {event_subjects(event)}{took}{detail}")
    return "\n".join(lines) if lines else "no events yet"


# #### Reporting: status text and cl_status answers ################################################

def key_text(key: dict, nodes: dict) -> str:
    """One authkeys key in `status`: `2 sha256 (signing): 1234 received, last 0.1 s ago, by prime`."""
    name = f"{key['index']} {key['method'] or '(no longer configured)'}" + (" (signing)" if key["signing"] else "")
    if not key["received"]:
        return f"{name}: none received"
    signers = [node for node, info in nodes.items() if info.get("auth_index") == key["index"]]
    return (f"{name}: {key['received']} received, last {key['last_seen_s']:.1f} s ago"
            + (f", by {' '.join(signers)}" if signers else ""))


def format_status(report: dict) -> str:
    """`status` for a person: one line per node, its links, how long since heard."""
    lines = [f"heartbeat.py on {report['node']}: {report['status']} (pid {report['pid']}, "
             f"up {report['uptime_s']} s, generation {report['generation']}, "
             f"auto_failback {report['auto_failback']})",
             f"{'NODE':<16} {'STATUS':<8} {'LAST HEARD':<14} LINKS"]
    for name, node in report["nodes"].items():
        if node.get("self"):
            heard = "(this node)"
        elif node["last_heard_s"] is None:
            heard = "never"
        else:
            heard = f"{node['last_heard_s']:.1f} s ago"
        links = " ".join(f"{link} {state}" for link, state in node["links"].items()) or "-"
        if node.get("type") == "ping":
            links = f"ping node: {' '.join(node['addresses'])}" + (" (group)" if node["group"] else "")
        lines.append(f"{name:<16} {node['status']:<8} {heard:<14} {links}")
    ipfail = report.get("ipfail") or {}
    if ipfail.get("enabled"):
        pending = f"; giving up [{ipfail['pending_giveup']}] soon" if ipfail["pending_giveup"] else ""
        lines.append(f"ipfail: on, {ipfail['ping_nodes_up']} ping node(s) answering here{pending}")
    elif ipfail.get("refusal") not in (None, "not configured"):
        lines.append(f"ipfail: off ({ipfail['refusal']})")
    watchdog = report.get("watchdog")
    if watchdog:
        fed = "never fed" if watchdog["last_fed_s"] is None else f"fed {watchdog['last_fed_s']:.1f} s ago"
        timeout = f", timeout {watchdog['timeout_s']} s" if watchdog["timeout_s"] else ""
        lines.append(f"watchdog {watchdog['device']}: " + (f"{fed}{timeout}" if watchdog["open"] else
                                                           f"closed after a write failure ({fed})"))
    conflict = report.get("name_conflict")
    if conflict:
        lines.append(f"NAME CONFLICT: another node calls itself {report['node']} (uuid {conflict['uuid']}, "
                     f"from {conflict['sender']}): no group is taken over while it is there")
    stonith = report.get("stonith") or {}
    for node in stonith.get("fencing", []):
        failed = stonith.get("failures", {}).get(node, 0)
        seconds = stonith.get("fencing_s", {}).get(node)
        lines.append(f"STONITH: {node} being reset with {stonith['device']}"
                     + (f" for {seconds:.0f} s" if seconds is not None else "")
                     + (f", {failed} failed attempt(s) so far" if failed else "") + "; its groups wait for it")
    for group in report.get("groups", []):
        owner = group["owner"] or "nobody"
        note = f" [{group['state']}, {group['failures']} start failures here]" if group["failures"] else ""
        if group.get("fault") and not note:
            note = f" [{group['state']}]"
        lines.append(f"group {group['key']} (home {group['home']}): held by {owner}{note}")
        if "processes" in group:
            lines.append(f"  {process_summary(group['processes'])}")
    if accounting_missing(report):
        lines.append(f"service processes: not counted (needs psutil: {PSUTIL_INSTALL})")
    for monitor in report.get("monitors", []):
        checked = "never checked" if monitor["last_checked_s"] is None else \
            f"{monitor['last_result']} {monitor['last_checked_s']:.1f} s ago"
        if monitor.get("process"):
            checked = process_watch_text(monitor["process"])
        threshold = monitor["migration_threshold"] or "INFINITY"
        line = (f"monitor {monitor['resource']}: {checked}; failures {monitor['failures']}/{threshold}, "
                f"restarts {monitor['restarts']}")
        clears = monitor["failures_clear_in_s"]
        if monitor["moved_away"]:
            line += ", group moved to the peer: not started here" + (f" for {clears:.0f} s more" if clears else "")
        elif clears is not None:
            line += f" (count clears in {clears:.0f} s)"
        lines.append(line)
    if report.get("http_listen"):
        lines.append(f"http: {report['http_listen']} (/metrics, status page)")
    if "links_watched" in report:
        watched = report["links_watched"]
        lines.append("carrier: " + (", ".join(f"{name} {state}" for name, state in watched.items()) or "-")
                     if watched is not None else "address and link watch: off")
    dropped = {k[len("dropped_"):]: v for k, v in report["counters"].items()
               if k.startswith("dropped_") and k not in NORMAL_DROPS}
    if dropped:
        lines.append("dropped packets: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    if report.get("auth_keys"):
        lines.append("authkeys: " + "; ".join(key_text(key, report["nodes"]) for key in report["auth_keys"]))
    if "extras" in report:
        lines.append("extras: " + extras_text(report["extras"]))
    refused = report.get("notify_refused") or {}
    if refused:
        lines.append("notify hooks not run (another user could change them; the log says why): " +
                     ", ".join(f"{os.path.basename(hook)} {n}" for hook, n in sorted(refused.items())))
    faults = report.get("internal_errors") or {}
    if faults:
        lines.append("internal errors (please report; the log has each traceback): " +
                     ", ".join(f"{where} {n}" for where, n in sorted(faults.items())))
    return "\n".join(lines)


def process_watch_text(watch: dict) -> str:
    """A process watch in `status`: '2 processes named nginx (quorum 1..4), by pidfd, changed 3.2 s ago'."""
    if not watch["watching"]:
        return f"process {watch['name']}: not watched (its group does not run here)"
    bounds = f"{watch['quorum']}..{watch['quorum_max']}" if watch["quorum_max"] else f"{watch['quorum']}"
    matched = watch["matched"]
    text = f"{matched} process{'es' if matched != 1 else ''} named {watch['name']}"
    if watch["hung"]:
        text += f" and {len(watch['hung'])} hung in D state"
    text += f" (quorum {bounds}{'' if watch['in_quorum'] else ': OUT OF QUORUM'})"
    text += ", by pidfd" if watch["events"] == "pidfd" else f", looked for every interval ({watch['polling_why']})"
    if watch["last_change_s"] is not None:
        text += f", changed {watch['last_change_s']:.1f} s ago"
    return text


CL_STATUS_QUERIES = {
    "hbstatus": 0, "listnodes": 0, "rscstatus": 0,
    "nodestatus": 1, "nodetype": 1, "listhblinks": 1, "hblinkstatus": 2,
}
CL_STATUS_PARAMETER_ERROR = 11  # cl_status's exit code for a node or link it does not know


def answer_query(report: dict, words: List[str]) -> Tuple[int, str]:
    """The questions `cl_status` answers, from a status report: (exit code, text)."""
    query, operands = words[0], words[1:]
    if query not in CL_STATUS_QUERIES or len(operands) != CL_STATUS_QUERIES[query]:
        usage = ", ".join(f"{q}{' NODE' * min(n, 1)}{' LINK' * (n == 2)}" for q, n in CL_STATUS_QUERIES.items())
        return EXIT_USAGE, f"unknown query; use one of: {usage}"
    nodes = report["nodes"]
    if query == "hbstatus":
        return EXIT_OK, "Heartbeat is running on this machine."
    if query == "listnodes":
        return EXIT_OK, "\n".join(sorted(nodes))
    if query == "rscstatus":
        busy = any(g["state"] in ("starting", "stopping") for g in report.get("groups", []))
        return EXIT_OK, "transition" if busy else report.get("rsc_hold", "none")
    node = operands[0].lower()
    if node not in nodes:
        return CL_STATUS_PARAMETER_ERROR, "Error. May be due to incorrect node name"
    if query == "nodestatus":          # cl_status: 1 for a node that is not active, up or ping
        status = nodes[node]["status"]
        return (EXIT_OK if status in ("active", "up", "ping") else EXIT_GENERIC), status
    if query == "nodetype":
        return EXIT_OK, nodes[node].get("type", "normal")
    links = nodes[node]["links"]
    if query == "listhblinks":
        return EXIT_OK, "\n".join(f"\t{link}" for link in links)
    if operands[1] not in links:
        return CL_STATUS_PARAMETER_ERROR, "Error. May be due to incorrect link name"
    return (EXIT_OK if links[operands[1]] == "up" else EXIT_GENERIC), links[operands[1]]


# ==================================================================================================
# 9. DAEMON: logging, the HTTP listener, the control socket, the event loop
# ==================================================================================================


# #### Daemon: logging #############################################################################

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
HEARTBEAT_LEVEL_NAMES = {logging.CRITICAL: "CRIT", logging.ERROR: "ERROR", logging.WARNING: "WARN",
                         NOTICE: "notice", logging.INFO: "info", logging.DEBUG: "debug"}


class HeartbeatFormatter(logging.Formatter):
    """Heartbeat's two log-file layouts (syslogmsgfmt true/false) and its syslog message."""

    def __init__(self, layout: str, entity: str = "heartbeat"):
        super().__init__()
        self.layout, self.entity = layout, entity
        self.host = os.uname().nodename

    def format(self, record: logging.LogRecord) -> str:
        level = HEARTBEAT_LEVEL_NAMES.get(record.levelno, record.levelname)
        when = time.localtime(record.created)
        text = record.getMessage()
        if self.layout == "syslog-file":
            return f"{time.strftime('%b %d %H:%M:%S', when)} {self.host} {self.entity}: [{record.process}]: " \
                   f"{level}: {text}"
        if self.layout == "heartbeat-file":
            return f"{self.entity}[{record.process}]: {time.strftime('%Y/%m/%d_%H:%M:%S', when)} {level}: {text}"
        return f"{self.entity}: [{record.process}]: {level}: {text}"      # to syslog itself


class Log:
    """Where ha.cf says: logfile, debugfile (with debug N), syslog via logfacility."""

    def __init__(self, name: str = "heartbeat.py"):
        self.logger = logging.getLogger(name)
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.debug_level = 0

    def configure(self, hacf: Optional[HaCf], to_stderr: bool) -> None:
        import logging.handlers
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
            handler.close()
        layout = "syslog-file" if hacf is None or hacf.syslogmsgfmt else "heartbeat-file"
        self.debug_level = hacf.debug if hacf else 0
        if to_stderr:
            self._add(logging.StreamHandler(sys.stderr), logging.DEBUG if self.debug_level else logging.INFO,
                      layout)
        if hacf is None:
            return
        if hacf.logfile and hacf.logfile != "/dev/null":
            self._add(logging.handlers.WatchedFileHandler(hacf.logfile), logging.INFO, layout)
        if hacf.debugfile and hacf.debugfile != "/dev/null":
            self._add(logging.handlers.WatchedFileHandler(hacf.debugfile), logging.DEBUG, layout)
        facility = hacf.logfacility
        if facility is None and not (hacf.logfile or hacf.debugfile):
            facility = "daemon"      # nothing configured: Heartbeat would use its log daemon
        if facility and facility != "none" and os.path.exists("/dev/log"):
            try:
                handler = logging.handlers.SysLogHandler(
                    "/dev/log", logging.handlers.SysLogHandler.facility_names[facility])
            except OSError:
                return               # no syslog daemon listening: files only
            handler.priority_map = dict(handler.priority_map, NOTICE="notice")
            handler.ident = ""
            self._add(handler, logging.DEBUG, "syslog")

    def _add(self, handler: logging.Handler, level: int, layout: str) -> None:
        handler.setLevel(level)
        handler.setFormatter(HeartbeatFormatter(layout))
        self.logger.addHandler(handler)

    def crit(self, message: str) -> None:
        self.logger.critical(message)

    def error(self, message: str) -> None:
        self.logger.error(message)

    def warn(self, message: str) -> None:
        self.logger.warning(message)

    def notice(self, message: str) -> None:
        self.logger.log(NOTICE, message)

    def info(self, message: str) -> None:
        self.logger.info(message)

    def debug(self, message: str, level: int = 1) -> None:
        if self.debug_level >= level:
            self.logger.debug(message)


# #### Daemon: the HTTP listener (/metrics and the status page) ####################################

HTTP_MAX_CLIENTS = 16
HTTP_MAX_PER_SOURCE = 4         # connections from one address: one host's idle ones cannot take every slot
HTTP_MAX_REQUEST = 8 * 1024
HTTP_REQUEST_TIMEOUT_S = 2.0    # from the connection to the end of the request's headers (a scraper sends at once)
HTTP_CLIENT_TIMEOUT_S = 5.0     # then to take the whole answer
HTTP_CACHE_S = 1.0              # a body is made at most this often: scrapes and reloads of the page share it
HTTP_CREDENTIALS_KEPT = 64      # Authorization headers whose verdict is remembered (then forgotten all at once)
HTTP_ACCEPT_BATCH = 64          # connections taken from the backlog in one wake-up
REQUEST_READ_BYTES = 4096       # one recv() of a request (HTTP or control socket): requests are small
HTTP_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
# The page has no script, style, image, frame or form: the browser may load or send nothing for it.
HTTP_SECURITY_HEADERS = ("X-Content-Type-Options: nosniff\r\n"
                         "Content-Security-Policy: default-src 'none'; base-uri 'none'; form-action 'none'; "
                         "frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\n")


@dataclasses.dataclass
class Exchange:
    """One connection of a OneShotServer: the request so far, the answer still to send, its deadline."""
    source: str
    since: float
    deadline: Timer
    request: bytes = b""
    reply: bytes = b""
    answered: bool = False       # the request is whole
    parked: bool = False         # out of the selector until its answer is known (respond)


class OneShotServer:
    """A listening stream socket served from the loop without ever blocking it: at most
    `max_clients` connections, `max_request` bytes of request, `request_timeout_s` for the request
    and `timeout_s` for the answer; one request, one answer written as fast as the client takes it
    (registered for EVENT_WRITE), then the connection is closed. A subclass opens `sock` and says
    when a request is whole (`complete`) and what to answer (`answer`; b"" closes without one); it
    may choose which connections to take (`admit`)."""

    max_clients = max_request = 0
    timeout_s = 0.0
    request_timeout_s = 0.0      # 0: timeout_s
    would_block: tuple = (BlockingIOError, InterruptedError)     # what says "not now" on a client socket

    def __init__(self, sock: socket.socket, selector, timers):
        self.sock, self.selector, self.timers = sock, selector, timers
        self.clients: Dict[socket.socket, Exchange] = {}
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self.accept)

    def complete(self, request: bytes) -> bool:
        raise NotImplementedError

    def answer(self, request: bytes, client: socket.socket) -> Optional[bytes]:
        raise NotImplementedError

    def admit(self, source: str) -> bool:
        """Whether to serve a new connection from source (its address; "" for a local socket)."""
        return len(self.clients) < self.max_clients

    def opened(self, client: socket.socket):
        """The socket to serve a new connection on, and what reads it first."""
        return client, self.read

    def accept(self, _sock) -> None:
        for _ in range(HTTP_ACCEPT_BATCH):      # the whole backlog: a flood is refused as fast as it comes
            try:
                client, peer = self.sock.accept()
            except OSError:
                return
            source = peer[0] if isinstance(peer, tuple) else ""
            if not self.admit(source):
                client.close()
                continue
            client.setblocking(False)
            client, first = self.opened(client)
            deadline = self.timers.call_later(self.request_timeout_s or self.timeout_s, lambda c=client: self.drop(c))
            self.clients[client] = Exchange(source, self.timers.clock(), deadline)
            self.selector.register(client, selectors.EVENT_READ, first)
            first(client)        # the request is usually there already: answered in this same wake-up

    def read(self, client: socket.socket) -> None:
        exchange = self.clients.get(client)
        if exchange is None or exchange.answered:
            return
        try:
            chunk = client.recv(REQUEST_READ_BYTES)
        except self.would_block:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.drop(client)
            return
        exchange.request += chunk
        if not self.complete(exchange.request) and len(exchange.request) < self.max_request:
            return
        exchange.answered = True
        if self.request_timeout_s:                  # the request is in: now the time to take the answer
            self.timers.cancel(exchange.deadline)
            exchange.deadline = self.timers.call_later(self.timeout_s, lambda: self.drop(client))
        reply = self.answer(exchange.request, client)
        if reply is None:
            self.selector.unregister(client)        # nothing to read or write until respond()
            exchange.parked = True
        else:
            self.respond(client, reply)

    def respond(self, client: socket.socket, reply: bytes) -> None:
        """Send reply (b"": close without one); answer() returned None and calls this later itself."""
        if client not in self.clients:
            return                                  # gone meanwhile (its deadline)
        if not reply:
            self.drop(client)
            return
        exchange = self.clients[client]
        exchange.reply = reply
        if exchange.parked:
            exchange.parked = False
            self.selector.register(client, selectors.EVENT_WRITE, self.write)
        else:
            self.selector.modify(client, selectors.EVENT_WRITE, self.write)
        self.write(client)

    def write(self, client: socket.socket) -> None:
        exchange = self.clients.get(client)
        if exchange is None:
            return
        try:
            sent = client.send(exchange.reply)
        except self.would_block:
            return
        except OSError:
            sent = len(exchange.reply)
        exchange.reply = exchange.reply[sent:]
        if not exchange.reply:
            self.drop(client)

    def drop(self, client: socket.socket) -> None:
        exchange = self.clients.pop(client, None)
        if exchange is None:
            return
        self.timers.cancel(exchange.deadline)
        if not exchange.parked:
            self.selector.unregister(client)
        client.close()

    def close(self) -> None:
        for client in list(self.clients):
            self.drop(client)
        self.selector.unregister(self.sock)
        self.sock.close()


class HTTPListener(OneShotServer):
    """The read-only HTTP listener of `http_listen`: GET /metrics (Prometheus) and GET / (the
    status page), served from the loop without ever blocking it. A new connection from an address
    that holds HTTP_MAX_PER_SOURCE already, or when every slot is taken, closes the oldest one
    still silent (a scraper sends its request at once, a slowloris never does); a request must be
    in within HTTP_REQUEST_TIMEOUT_S; a body is made at most once per HTTP_CACHE_S. With the
    settings: only addresses of http_allow, over TLS (the handshake, too, without blocking), and
    only to http_basic_auth's user, whose password is checked in a thread (PBKDF2 is slow on
    purpose), one at a time, and remembered (a keyed digest of the header, never the password)."""

    max_clients, max_request, timeout_s = HTTP_MAX_CLIENTS, HTTP_MAX_REQUEST, HTTP_CLIENT_TIMEOUT_S
    request_timeout_s = HTTP_REQUEST_TIMEOUT_S

    def __init__(self, address: Tuple[str, int], selector, timers, report, settings: Settings, post=None):
        self.address, self.report, self.post = address, report, post
        self.cache: Dict[str, Tuple[float, str]] = {}       # path -> (made at, body)
        self.tls = None                                     # the ssl.SSLContext, with http_tls_cert
        self.known: Dict[bytes, bool] = {}                  # digest of an Authorization header -> its verdict
        self.secret = os.urandom(32)                        # the key of those digests
        self.checking = False                               # a password is being checked
        self.refused = collections.Counter()                # why connections or requests were refused
        self.configure(settings)
        host, port = address
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(HTTP_MAX_CLIENTS)
        except OSError:
            sock.close()
            raise
        super().__init__(sock, selector, timers)

    def configure(self, settings: Settings) -> None:
        """At start and on reload: the allow-list, the user, and TLS (its files read again: a renewed
        certificate takes effect); ValueError when the certificate cannot be used."""
        self.tls = tls_context(settings.http_tls_cert, settings.http_tls_key) if settings.http_tls_cert else None
        if self.tls:
            import ssl
            self.would_block = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
        if settings.http_basic_auth != getattr(self, "settings", Settings()).http_basic_auth:
            self.known.clear()
        self.settings = settings

    def admit(self, source: str) -> bool:
        """Make room for a new connection: the oldest silent one of its source when it has its share,
        else the oldest silent one of all when every slot is taken; refused when none is silent, or
        when the source is not in http_allow."""
        if not source_allowed(source, self.settings.http_allow):
            self.refused["not allowed"] += 1
            return False
        for mine in (True, False):
            held = [(exchange.since, client) for client, exchange in self.clients.items()
                    if not mine or exchange.source == source]
            if len(held) < (HTTP_MAX_PER_SOURCE if mine else self.max_clients):
                continue
            silent = [(since, client) for since, client in held if not self.clients[client].answered]
            if not silent:
                self.refused["busy"] += 1
                return False
            self.drop(min(silent, key=lambda pair: pair[0])[1])
        return True

    def opened(self, client: socket.socket):
        if not self.tls:
            return client, self.read
        return self.tls.wrap_socket(client, server_side=True, do_handshake_on_connect=False), self.handshake

    def handshake(self, client) -> None:
        """One step of a TLS handshake, as the client's packets come; then the request."""
        import ssl
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(client, selectors.EVENT_READ, self.handshake)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(client, selectors.EVENT_WRITE, self.handshake)
            return
        except OSError:                            # not TLS, or nothing we share: closed
            self.refused["tls handshake"] += 1
            self.drop(client)
            return
        self.selector.modify(client, selectors.EVENT_READ, self.read)
        self.read(client)

    def complete(self, request: bytes) -> bool:
        return b"\r\n\r\n" in request or b"\n\n" in request

    def body(self, path: str) -> str:
        """The body of / or /metrics, made again when the last one is HTTP_CACHE_S old."""
        now = self.timers.clock()
        made = self.cache.get(path)
        if made is None or now - made[0] >= HTTP_CACHE_S:
            text = prometheus_text(self.report(events=False)) if path == "/metrics" else \
                html_page(self.report(last_events=EVENTS_ON_PAGE))
            made = self.cache[path] = (now, text)
        return made[1]

    def answer(self, request: bytes, client: socket.socket) -> Optional[bytes]:
        """The whole response to one request (only its first line and Authorization count); None
        when a password is being checked: respond() sends it then."""
        lines = request.split(b"\r\n" if b"\r\n" in request else b"\n")
        words = lines[0].decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return http_response(400, "text/plain", "one GET request line, then headers\n")
        method, path = words[0], words[1].split("?", 1)[0]
        if not self.settings.http_basic_auth:
            return self.resource(method, path)
        verdict = self.authorized(lines[1:], lambda ok: self.respond(client, self.resource(method, path, ok)))
        return None if verdict is None else self.resource(method, path, verdict)

    def resource(self, method: str, path: str, authorized: bool = True) -> bytes:
        if not authorized:
            return http_response(401, "text/plain", "who are you? (http_basic_auth)\n",
                                 extra='WWW-Authenticate: Basic realm="heartbeat.py", charset="UTF-8"\r\n')
        if method not in ("GET", "HEAD"):
            return http_response(405, "text/plain", "read-only: GET or HEAD\n", head=False,
                                 extra="Allow: GET, HEAD\r\n")
        if path not in ("/", "/metrics"):
            return http_response(404, "text/plain", "not found: try / or /metrics\n", head=method == "HEAD")
        kind = "text/plain; version=0.0.4; charset=utf-8" if path == "/metrics" else "text/html; charset=utf-8"
        return http_response(200, kind, self.body(path), head=method == "HEAD")

    def authorized(self, headers: List[bytes], then) -> Optional[bool]:
        """Whether the request's Authorization is http_basic_auth's user and password: known at once
        when this header was checked before; else None, checked in a thread, then(verdict) when known. One
        check at a time: another meanwhile is refused (False), so guesses cannot take every core."""
        import hmac
        given = next((line.partition(b":")[2].strip() for line in headers
                      if line.partition(b":")[0].strip().lower() == b"authorization"), b"")
        digest = hmac.new(self.secret, given, "sha256").digest()
        if digest in self.known:
            return self.known[digest]
        scheme, _, encoded = given.partition(b" ")
        try:
            user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except ValueError:
            user, colon, password = "", "", ""
        expected_user, hashed = self.settings.http_basic_auth
        if scheme.lower() != b"basic" or not colon or user != expected_user or self.checking or self.post is None:
            self.refused["unauthorized"] += 1
            return False

        def checked(verdict) -> None:
            self.checking = False
            if len(self.known) >= HTTP_CREDENTIALS_KEPT:
                self.known.clear()
            self.known[digest] = verdict is True
            if verdict is not True:
                self.refused["unauthorized"] += 1
            then(verdict is True)
        self.checking = True
        in_thread("http-auth", lambda: password_matches(password, hashed), self.post, checked)
        return None


def url_host(address: Tuple[str, int]) -> str:
    """(address, port) as it is written in a URL: 127.0.0.1:9694, [::1]:9694."""
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"


def http_response(code: int, kind: str, body: str, head: bool = False, extra: str = "") -> bytes:
    data = body.encode()
    header = (f"HTTP/1.1 {code} {HTTP_REASONS[code]}\r\nContent-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
              f"Cache-Control: no-store\r\nConnection: close\r\nServer: heartbeat.py/{__version__}\r\n"
              f"{HTTP_SECURITY_HEADERS}{extra}\r\n")
    return header.encode() + (b"" if head else data)


# #### Daemon: pid file, control socket, event loop, signals #######################################

PIDFILE_NAME = "heartbeat.pid"
SOCKET_NAME = "heartbeat.sock"
BYTECODE_NAME = "heartbeat.pyc"   # in the state dir: the daemon runs from it (see restart_from_bytecode)
MAX_CONTROL_CLIENTS = 16
MAX_CONTROL_REQUEST = 64 * 1024
CONTROL_TIMEOUT_S = 5.0         # for a whole exchange on the control socket, either side
CONTROL_READ_BYTES = 64 * 1024  # one recv() of the daemon's answer (read on to the newline)


class AlreadyRunning(HAError):
    """Another heartbeat.py holds the pid file lock."""


def acquire_pidfile(run_dir: str) -> int:
    """Lock and fill run_dir/heartbeat.pid; the lock, not the file, says we run."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    path = os.path.join(run_dir, PIDFILE_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(f"heartbeat: already running [pid {other or '?'}] ({path})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid():>10}\n".encode())
    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    return fd


class ControlServer(OneShotServer):
    """The local control socket: one JSON request line in, one JSON reply line out, served from
    the loop without ever blocking it (a `status` client that does not read holds no heartbeat back)."""

    max_clients, max_request, timeout_s = MAX_CONTROL_CLIENTS, MAX_CONTROL_REQUEST, CONTROL_TIMEOUT_S

    def __init__(self, path: str, selector, timers, handle_request):
        self.path, self.handle_request = path, handle_request
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        sock.listen(8)
        super().__init__(sock, selector, timers)

    def complete(self, request: bytes) -> bool:
        return b"\n" in request

    def answer(self, request: bytes, client: socket.socket) -> bytes:
        """The reply line; none (the connection is closed) to a request longer than MAX_CONTROL_REQUEST."""
        if b"\n" not in request:
            return b""
        try:
            parsed = json.loads(request.split(b"\n", 1)[0])
            reply = self.handle_request(parsed if isinstance(parsed, dict) else {})
        except ValueError:
            reply = {"ok": False, "error": "bad request"}
        return json.dumps(reply).encode() + b"\n"

    def close(self) -> None:
        super().close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class ControlDenied(HAError):
    """The control socket is there, but this user may not open it (it is root's only)."""


def control_request(run_dir: str, request: dict, timeout_s: float = CONTROL_TIMEOUT_S) -> dict:
    """Ask the running daemon; raise ControlDenied when this user may not, HAError when none answers."""
    path = os.path.join(run_dir, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(CONTROL_READ_BYTES)
            if not chunk:
                break
            data += chunk
    except PermissionError:
        raise ControlDenied(f"permission denied on {path}: only root may ask the daemon; run this as root") from None
    except OSError as err:
        raise HAError(f"heartbeat.py is not running (no answer on {path}: {err.strerror or err})") from None
    finally:
        sock.close()
    try:
        return json.loads(data)
    except ValueError:
        raise HAError(f"bad answer from the daemon on {path}") from None


def written_only_by_us(info: os.stat_result) -> bool:
    """Owned by our effective user (root, for the daemon) and not writable by group or others."""
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def bytecode_matches(path: str, header: bytes) -> bool:
    """path is a regular file that only we could have written, starts with header and holds code."""
    import marshal
    import types
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)     # a FIFO must not hang us
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not written_only_by_us(info):
            return False
        data = handle.read()
    if data[:len(header)] != header:
        return False
    try:
        return isinstance(marshal.loads(data[len(header):]), types.CodeType)  # noqa: S302 - the file we are about to run
    except (EOFError, ValueError, TypeError):
        return False


def usable_bytecode(source: str, state_dir: str) -> Optional[str]:
    """state_dir/heartbeat.pyc, compiled again unless it holds this very source, or None: run
    from source. Python runs a .pyc named on its command line without comparing it with any
    source, and root runs this one, so the checks are ours: a hash-checked header (PEP 552)
    with the hash of the source's bytes (size and mtime match after `cp -p` of another file),
    a body that loads as code, and a file and directory that only we can write. A state dir
    that others can write gets no bytecode at all."""
    import importlib.util
    import marshal
    try:
        with open(source, "rb") as handle:
            source_bytes = handle.read()
        header = (importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")    # flags: hash, checked
                  + importlib.util.source_hash(source_bytes))
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        if not written_only_by_us(os.stat(state_dir)):
            return None
        cached = os.path.join(state_dir, BYTECODE_NAME)
        if bytecode_matches(cached, header):
            return cached
        code = compile(source_bytes, source, "exec", dont_inherit=True)
        write_file_atomic(cached, header + marshal.dumps(code), 0o644)
        return cached
    except (OSError, SyntaxError, ValueError):
        return None


def restart_from_bytecode(state_dir: str) -> None:
    """The daemon runs for months, and compiling this file as a script leaves ~9 MB of
    fragmented heap that it would carry all that time. So the daemon starts again, with the
    same pid and arguments, from the bytecode kept in state_dir (see usable_bytecode).
    Returns, and the daemon runs from source, when that cannot be done."""
    source = os.path.abspath(sys.argv[0])
    if not source.endswith(".py") or not os.path.isfile(source):
        return                           # running from the bytecode already
    cached = usable_bytecode(source, state_dir)
    if cached:
        try:
            # -I: nothing from PYTHON* variables, user site-packages or state_dir gets imported
            os.execv(sys.executable, [sys.executable, "-I", cached, *sys.argv[1:]])  # noqa: S606 - no shell
        except OSError:
            return


class Daemon:
    """One process, one selectors loop: links, control socket, signals and timers."""

    def __init__(self, args, config: Config, log: Log):
        self.args, self.config, self.log = args, config, log
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.links: List[Link] = []
        self.control: Optional[ControlServer] = None
        self.pid_fd = -1
        self.running = False
        self.started_at = time.monotonic()   # for uptime: a step of the wall clock changes nothing
        self.identity: Optional[Identity] = None
        self.membership: Optional[Membership] = None
        self.policy: Optional[ClusterPolicy] = None
        self.pings: Optional[PingNodes] = None
        self.ipfail: Optional[IPFail] = None
        self.stonith_timer: Optional[Timer] = None
        self.monitor: Optional[ServiceMonitor] = None
        self.linkwatch: Optional[LinkWatch] = None
        self.watchdog: Optional[Watchdog] = None
        self.events = EventLog()
        self.faults = Faults(log, self.events)
        self.previous_excepthook = threading.excepthook
        self.notifier: Optional[Notifier] = None
        self.accounting = ServiceAccounting()         # psutil is imported by the first report, if at all
        self.http: Optional[HTTPListener] = None
        self.wake_r, self.wake_w = socket.socketpair()     # signals
        self.post_r, self.post_w = socket.socketpair()     # results from the resource and reload threads
        self.reloading = self.reload_again = False
        self.posted: collections.deque = collections.deque()

    # -- start and stop --------------------------------------------------------

    def open(self) -> None:
        """Everything that can fail at start, before we report success: pid lock, state files
        (hb_uuid, hb_generation), sockets, and last the watchdog (once it is open, only a clean
        stop may close it)."""
        self.pid_fd = acquire_pidfile(self.args.run_dir)
        self.log.info(f"Configuration validated. Starting heartbeat.py {__version__} "
                      f"(Heartbeat {HEARTBEAT_VERSION} protocol)")
        try:
            self.identity = load_identity(self.args.state_dir, self.config.node, self.config.hacf, self.log)
        except OSError as err:
            raise HAError(f"cannot keep hb_uuid and hb_generation in the state directory {self.args.state_dir} "
                          f"(--state-dir): {err.strerror or err}") from None
        self.open_links(self.config.hacf)
        self.control = ControlServer(os.path.join(self.args.run_dir, SOCKET_NAME), self.selector, self.timers,
                                     self.handle_request)
        if self.config.hacf.watchdog:
            self.watchdog = Watchdog(self.config.hacf.watchdog, self.log)
            self.watchdog.open(self.config.hacf.deadtime_ms)

    def open_links(self, hacf: HaCf) -> None:
        links = [Link(medium, hacf.udpport) for medium in hacf.media]
        try:
            for link in links:
                link.open()
        except HAError:
            for link in links:
                link.close()
            raise
        for link in self.links:
            self.selector.unregister(link.recv_sock)
            link.close()
        self.links = links
        for link in links:
            self.selector.register(link.recv_sock, selectors.EVENT_READ, self.make_reader(link))
            for warning in link.warnings:
                self.log.warn(warning)
            self.log.info(f"{link.medium.describe(hacf.udpport)}: heartbeat started")

    def make_reader(self, link: Link):
        """One datagram per wake-up (the selector reports the next at once), read into a buffer
        kept for the daemon's life: a fresh 256 KB one per packet cost an mmap and a munmap."""
        buffer = bytearray(UDP_MAX_DATAGRAM)
        view = memoryview(buffer)

        def read(sock: socket.socket) -> None:
            try:
                size, addr = sock.recvfrom_into(buffer)
            except OSError:
                return
            self.membership.receive(bytes(view[:size]), link.name, addr[0])
        return read

    def transmit(self, datagram: bytes) -> None:
        for link in self.links:
            if not link.send(datagram) and link.send_errors in (1, 10, 100, 1000):
                self.log.error(f"write failure on {link.medium.kind} {link.name} "
                               f"({link.send_errors} so far): is a cable unplugged?")

    def post(self, callback) -> None:
        """From the resource thread: run callback in the loop (thread-safe)."""
        self.posted.append(callback)
        try:
            self.post_w.send(b"x")
        except (BlockingIOError, OSError):
            pass                         # the loop is awake already

    def run_posted(self, sock: socket.socket) -> None:
        try:
            sock.recv(4096)
        except OSError:
            pass
        while self.posted:
            self.posted.popleft()()

    def run(self) -> int:
        """The event loop; returns the exit code after a graceful shutdown."""
        if self.config.hacf.realtime:           # before the first thread, which sets it again for itself
            make_realtime(self.config.hacf.rtprio, self.log)
        resources = Resources(self.config, self.log, events=self.events,
                              rsctmp_dir=os.path.join(self.args.run_dir, RSCTMP_DIR))
        resources.release_stale_addresses()
        for sock in (self.post_r, self.post_w):
            sock.setblocking(False)
        self.selector.register(self.post_r, selectors.EVENT_READ, self.run_posted)
        router = DecisionRouter()
        self.membership = Membership(self.config, self.identity, self.timers, self.log, self.transmit, router,
                                     self.events)
        self.policy = ClusterPolicy(self.config, self.membership, resources, Worker(self.post), self.log,
                                    on_released_all=self.finish_shutdown, events=self.events)
        self.set_stonith(self.config.stonith)
        self.pings = PingNodes(self.config.hacf, self.timers, self.log, router, self.events)
        settings = self.config.settings
        self.notifier = Notifier(self.config.config_dir, self.config.node, settings.notify_timeout_ms / 1000, self.log,
                                 self.faults)
        self.events.listeners.append(self.notifier)
        self.open_http(settings)
        self.ipfail = IPFail(self.config, self.membership, self.policy, self.pings, self.log)
        router.route_to(self.policy, self.ipfail)
        for sock in self.pings.open():
            self.selector.register(sock, selectors.EVENT_READ, self.pings.read)
        self.monitor = ServiceMonitor(self.config, self.policy, resources, self.timers, self.post, self.log,
                                      selector=self.selector)
        self.events.listeners.append(self.monitor.heard)
        if self.config.settings.link_watch:
            self.open_linkwatch()
        self.install_signals()
        self.previous_excepthook, threading.excepthook = threading.excepthook, self.thread_died
        self.running = True
        self.membership.start()
        self.pings.start()
        self.ipfail.start()
        if self.watchdog:
            self.feed_watchdog()
        gc.freeze()      # what start-up built lives as long as we do: no collection need scan it again
        while self.running:
            timeout = self.timers.next_delay()
            for key, _ in self.selector.select(timeout):
                self.guarded(key.data, key.fileobj)
            self.guarded(self.timers.run_due)
        self.close()
        return EXIT_OK

    def feed_watchdog(self) -> None:
        """Every keepalive, from the loop: a loop that hangs stops feeding the watchdog."""
        self.watchdog.feed()
        if self.watchdog.fd >= 0:
            self.timers.call_later(self.config.hacf.keepalive_ms / 1000, self.feed_watchdog)

    def open_http(self, settings: Settings) -> None:
        """The HTTP listener of http_listen, at start and on reload (the same address: its other
        settings applied, the certificate read again); a port or a certificate that cannot be had is
        logged and the daemon goes on without it (serving the cluster comes first)."""
        address = settings.http_listen
        if self.http and self.http.address == address:
            try:
                self.http.configure(settings)
                return
            except ValueError as err:
                self.log.error(f"http_tls_cert: {err}: no /metrics, no status page")
        if self.http:
            self.http.close()
            self.http = None
        if address:
            try:
                self.http = HTTPListener(address, self.selector, self.timers, self.status, settings, self.post)
                scheme = "https" if settings.http_tls_cert else "http"
                self.log.info(f"HTTP listener on {scheme}://{url_host(address)}: /metrics and the status page"
                              + (f", for {settings.http_basic_auth[0]} only" if settings.http_basic_auth else ""))
            except (OSError, ValueError) as err:
                why = getattr(err, "strerror", None) or err
                self.log.error(f"http_listen {url_host(address)}: {why}: no /metrics, no status page")

    def open_linkwatch(self) -> None:
        """The address and link watch: its socket in our loop, its events to the cluster policy.
        Without it (no rtnetlink here, or `link_watch off` in heartbeat.py.cf) the policy has no watch
        and its LinkFaults do nothing."""
        watch = LinkWatch(self.log, self.policy.links)
        if watch.open():
            self.linkwatch = watch
            self.policy.links.use_watch(watch)
            self.selector.register(watch.sock, selectors.EVENT_READ, watch.read)

    def set_stonith(self, device: Optional[StonithDevice]) -> None:
        """The fencing device, at start and on reload (a reset under way goes on with the old one)."""
        fencer = self.policy.fencer
        if fencer and fencer.pending:
            if device != fencer.device:
                self.log.warn("STONITH device changed during a reset: the new one is used from the next reset")
            fencer.device = device or fencer.device
            return
        alive = lambda node: node in self.membership.peers and self.membership.peers[node].status != "dead"  # noqa: E731
        self.policy.fencer = Fencer(device, self.timers, self.post, self.log, self.membership.send, alive,
                                    events=self.events) if device else None
        if fencer and self.policy.fencer:       # the counters outlive a reload
            self.policy.fencer.resets, self.policy.fencer.failures = fencer.resets, fencer.failures
        if device and (not fencer or fencer.device != device):
            self.log.info(f"STONITH device: {device.describe()}")
            self.timers.cancel(self.stonith_timer)
            self.stonith_timer = self.timers.call_later(0, self.check_stonith)

    def check_stonith(self) -> None:
        """At start, then hourly while this node holds groups (3.0.6's schedule)."""
        fencer = self.policy.fencer
        if not fencer or not self.running:
            return
        if fencer.last_status is None or self.policy.rsc_hold() != "none":
            fencer.check_status()
        self.stonith_timer = self.timers.call_later(STONITH_STATUS_INTERVAL_S, self.check_stonith)

    def close_linkwatch(self) -> None:
        if self.linkwatch:
            self.selector.unregister(self.linkwatch.sock)
            self.linkwatch.close()
            self.linkwatch = None
            self.policy.links.use_watch(None)

    def guarded(self, callback, *args) -> None:
        """A bug in one handler costs that event, not the node: heartbeats must keep flowing."""
        try:
            callback(*args)
        except Exception as err:
            self.faults("event loop", err)

    def thread_died(self, args) -> None:
        """threading.excepthook: a thread of ours that ends with an exception (one that does not
        catch its own, such as an address announcement's) is logged and counted like the others."""
        if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
            self.faults(f"thread {args.thread.name if args.thread else '?'}", args.exc_value)

    def install_signals(self) -> None:
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)      # the wakeup fd carries the number
        self.selector.register(self.wake_r, selectors.EVENT_READ, self.on_signals)

    def on_signals(self, sock: socket.socket) -> None:
        try:
            numbers = sock.recv(64)
        except OSError:
            return
        for signum in numbers:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown()
            elif signum == signal.SIGHUP:
                self.reload()

    def shutdown(self) -> None:
        """Graceful stop: tell the peers at once, so they need not wait for deadtime."""
        if not self.running:
            return
        if self.policy.shutting_down:
            return
        self.log.info(f"Heartbeat shutdown in progress. ({os.getpid()})")
        self.policy.shutdown()

    def finish_shutdown(self) -> None:
        self.ipfail.stop()
        notice = self.membership.send(Message(("t", "shutdone"), ("st", "dead")))
        for _ in range(2):               # the same datagram again: a lost one would cost deadtime
            self.transmit(notice)
        self.membership.stop()
        for sock in self.pings.sockets.values():
            self.selector.unregister(sock)
        self.pings.stop()
        self.log.info(f"{self.config.node} Heartbeat shutdown complete.")
        if self.watchdog:                # the stop is clean from here: hooks may take longer than its timer
            self.watchdog.close()
        self.notifier.drain()
        self.running = False

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        threading.excepthook = self.previous_excepthook
        if self.control:
            self.control.close()
        for link in self.links:
            link.close()
        self.links = []
        self.close_linkwatch()
        if self.http:
            self.http.close()
        if self.pid_fd >= 0:
            os.close(self.pid_fd)
            self.pid_fd = -1
        if self.watchdog:                # the loop ended: a clean stop, so the magic close (if not done)
            self.watchdog.close()

    def reload(self) -> None:
        """SIGHUP: read the configuration in a thread (a host name in haresources may wait on a
        dead DNS server, and heartbeats must keep flowing meanwhile), then apply it in the loop.
        A storm of signals makes one reload at a time, and one more after the last signal."""
        self.log.info("Signalled to reread config files")
        if self.reloading:
            self.reload_again = True
            return
        self.reloading = True
        in_thread("reload", lambda: load_config(self.args.config_dir, self.args.node), self.post, self.apply_config)

    def apply_config(self, config: Union[Config, Exception]) -> None:
        """The loaded configuration, or the error that refused it."""
        if isinstance(config, Exception) and not isinstance(config, (ConfigErrors, HAError)):
            trace = "".join(traceback.format_exception(type(config), config, config.__traceback__))
            config = HAError("internal error (please report): " + trace.replace("\n", " | "))  # reloads go on
        self.reloading = False
        if self.reload_again:
            self.reload_again = False
            self.reload()
        try:
            if isinstance(config, Exception):
                raise config
            if config.node != self.config.node:
                raise HAError("the node name changed; restart instead")
            if config.hacf.media != self.config.hacf.media or config.hacf.udpport != self.config.hacf.udpport:
                self.open_links(config.hacf)
        except (ConfigErrors, HAError) as err:
            for line in str(err).splitlines():
                self.log.error(f"Config error: {line}")
            self.log.error("New configuration refused; keeping the running one.")
            return
        running_watchdog = self.watchdog.path if self.watchdog else None
        if config.hacf.watchdog != running_watchdog:
            self.log.warn(f"watchdog changed: restart heartbeat.py to apply it; keeping "
                           f"{running_watchdog or 'no watchdog'}")
        if [(g.home, [r.spec for r in g.resources]) for g in config.groups] != \
                [(g.home, [r.spec for r in g.resources]) for g in self.config.groups]:
            self.log.error("haresources changed: restart heartbeat.py to apply it; keeping the running groups")
            config.groups = self.config.groups
        self.config = config
        self.log.configure(config.hacf, self.args.foreground)
        for warning in config.warnings:
            self.log.warn(str(warning))
        self.membership.reconfigure(config)
        self.policy.reconfigure(config)
        if self.watchdog:
            self.watchdog.retime(config.hacf.deadtime_ms)
        self.reconfigure_pings(config.hacf)
        self.ipfail.reconfigure(config)
        self.monitor.reconfigure(config)
        self.set_stonith(config.stonith)
        self.notifier.timeout_s = config.settings.notify_timeout_ms / 1000
        self.open_http(config.settings)
        if config.settings.link_watch and not self.linkwatch:
            self.open_linkwatch()
        elif not config.settings.link_watch and self.linkwatch:
            if self.policy.links.faults:          # only the watch would see their carrier come back
                held = ", ".join(self.policy.links.faults)
                self.log.warn(f"link_watch off: the watch stays on while group(s) {held} "
                              "wait for their carrier; reload again once they are back")
            else:
                self.close_linkwatch()
                self.log.info("Address and link watch turned off (link_watch off)")
        self.log.info("Configuration reloaded.")

    def reconfigure_pings(self, hacf: HaCf) -> None:
        """Ping nodes added by a reload may need an ICMP socket the daemon does not have yet."""
        self.pings.reconfigure(hacf)
        for sock in self.pings.open():
            self.selector.register(sock, selectors.EVENT_READ, self.pings.read)
        if self.pings.sockets and self.pings.send_timer is None:
            self.pings.send_echoes()

    # -- control requests ---------------------------------------------------

    def handle_request(self, request: dict) -> dict:
        command = request.get("cmd")
        if command == "status":
            return self.status()
        if command == "meatclient":
            fencer = self.policy.fencer
            error = fencer.confirm(str(request.get("host", "")).lower()) if fencer else "no STONITH device configured"
            return {"ok": not error, "error": error, "node": self.config.node}
        if command == "standby":
            error = self.policy.standby()
            return {"ok": not error, "error": error, "node": self.config.node}
        if command == "takeover":
            self.monitor.clear_all()
            error = self.policy.takeover()
            return {"ok": not error, "error": error, "node": self.config.node}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def service_roots(self) -> Dict[str, ServiceRoots]:
        """Where each group's service processes are: the sessions its start scripts left them in."""
        sessions = dict(self.policy.resources.sessions)          # a copy: the worker writes it
        roots = {}
        for group in self.config.groups:
            started = tuple(sessions[res.spec] for res in group.resources if res.spec in sessions)
            if started:
                roots[group.key] = ServiceRoots(started)
        return roots

    def groups_report(self) -> List[dict]:
        """The groups, each with its service processes' usage (`processes`) when psutil can tell."""
        groups = self.policy.snapshot()
        usage = self.accounting.groups(self.service_roots())
        for group in groups:
            if usage and group["key"] in usage:
                group["processes"] = usage[group["key"]]
        return groups

    def status(self, events: bool = True, last_events: Optional[int] = None) -> dict:
        """What `status` reports; events=False leaves out the history (the metrics need its counts only),
        last_events keeps its end (the status page shows EVENTS_ON_PAGE)."""
        membership = self.membership
        return {
            "ok": True,
            "node": self.config.node,
            "status": membership.status,
            "pid": os.getpid(),
            "version": __version__,
            "generation": membership.identity.generation,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "auto_failback": self.config.hacf.auto_failback,
            "timers_ms": {"keepalive": self.config.hacf.keepalive_ms, "deadtime": self.config.hacf.deadtime_ms,
                          "warntime": self.config.hacf.warntime_ms, "initdead": self.config.hacf.initdead_ms},
            "links": [{"name": link.name, "kind": link.medium.kind, "send_errors": link.send_errors}
                      for link in self.links],
            "nodes": {**membership.snapshot(), **self.pings.snapshot()},
            "ipfail": self.ipfail.snapshot(),
            "stonith": self.policy.fencer.snapshot() if self.policy.fencer else None,
            "rsc_hold": self.policy.rsc_hold(),
            "groups": self.groups_report(),
            "psutil": self.accounting.version,
            "monitors": self.monitor.snapshot(),
            "links_watched": self.policy.links.watched_links(),
            "counters": dict(membership.counters),
            "auth_keys": membership.key_snapshot(),
            "extras": {name: extra_version(name) for name in EXTRAS},
            "name_conflict": membership.name_conflict,
            "watchdog": self.watchdog.snapshot() if self.watchdog else None,
            "http_listen": url_host(self.http.address) if self.http else None,
            "http_refused": dict(self.http.refused) if self.http else {},
            "events": self.events.snapshot(last_events) if events else [],
            "event_counts": dict(self.events.counts),
            "notify_refused": dict(self.notifier.refused),
            "internal_errors": dict(self.faults.counts),
        }


def daemonize(start) -> int:
    """Double fork; the parent returns the child's start-up verdict (0, or its error)."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            verdict = pipe.read().decode(errors="replace")
        if verdict.startswith("ok"):
            return EXIT_OK
        sys.stderr.write(verdict or "heartbeat.py: the daemon died during start-up\n")
        code = re.match(r"exit (\d+)\n", verdict)
        return int(code.group(1)) if code else EXIT_GENERIC
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    return start(write_fd)


# ==================================================================================================
# 10. TOOLS: check, keygen, setup, export to Pacemaker
# ==================================================================================================


# #### Tools: keygen and check #####################################################################

AUTHKEYS_TEMPLATE = """\
# authkeys - the shared secret that signs every heartbeat packet.
# Written by `heartbeat.py keygen`. It must be identical on every node and
# readable by root only (mode 0600): copy it with `heartbeat.py setup PEER`.
# `auth N` names the line used to sign; other lines are accepted on receipt.
auth 1
1 {method}{key}
"""


def write_authkeys(path: str, method: str, force: bool) -> None:
    """Write a fresh authkeys atomically, mode 0600 from its first byte."""
    if method not in AUTH_METHODS_NEEDING_KEY:
        raise HAError(f"unknown method {method}: use sha1, md5, crc, sha256 or aes256gcm")
    if method == "aes256gcm" and extra_module("cryptography") is None:
        raise HAError(f"aes256gcm needs the package cryptography, which this Python cannot import: "
                      f"{extra_install_hint('cryptography')}")
    if os.path.lexists(path) and not force:
        raise HAError(f"{path} already exists; use --force to replace it (every node needs the new key)")
    key = " " + os.urandom(32).hex() if AUTH_METHODS_NEEDING_KEY[method] else ""
    try:
        # without --force, not over a file someone created meanwhile either
        write_file_atomic(path, AUTHKEYS_TEMPLATE.format(method=method, key=key).encode(), 0o600, replace=force)
        os.chmod(path, 0o600)        # the umask only ever took bits away: 0600 whatever it is
    except OSError as err:
        raise HAError(f"cannot write {path}: {err.strerror}") from None


def describe_config(config: Config) -> str:
    """The short human summary `check` prints."""
    cf = config.hacf
    method = config.authkeys.method
    others = ", ".join(f"{index} {name}" for index, (name, _) in sorted(config.authkeys.methods.items())
                       if index != config.authkeys.active)
    logs = [f"logfile {cf.logfile}" if cf.logfile else "",
            f"debugfile {cf.debugfile} (debug {cf.debug})" if cf.debugfile else "",
            f"syslog {cf.logfacility}" if cf.logfacility and cf.logfacility != "none" else ""]
    lines = [
        f"{config.config_dir}: configuration valid for node {config.node}",
        f"  nodes:     {' '.join(cf.nodes)}",
        "  media:     " + "; ".join(m.describe(cf.udpport) for m in cf.media),
        f"  timers:    keepalive {cf.keepalive_ms} ms, deadtime {cf.deadtime_ms} ms, "
        f"warntime {cf.warntime_ms} ms, initdead {cf.initdead_ms} ms",
        f"  failback:  auto_failback {cf.auto_failback}",
        f"  auth:      index {config.authkeys.active}, {method}"
        + ("" if method != "crc" else f": {CRC_RISK}")
        + (f" (also accepted: {others})" if others else ""),
        "  logging:   " + (", ".join(x for x in logs if x) or "none"),
        "  extras:    " + extras_text({name: extra_version(name) for name in EXTRAS}),
    ]
    newer = sorted({m for m, _ in config.authkeys.methods.values() if m not in HEARTBEAT_AUTH_METHODS})
    if newer:
        lines.append(f"    authkeys uses {' and '.join(newer)}: Heartbeat {HEARTBEAT_VERSION} does not know "
                     f"{'them' if len(newer) > 1 else 'it'} and refuses to start with this file (every node must "
                     "run heartbeat.py)")
    if cf.watchdog:
        lines.append(f"  watchdog:  {cf.watchdog}, fed every keepalive")
    if cf.ping_nodes:
        pings = "; ".join(f"{p.name} ({' '.join(p.addresses)})" if p.group else p.name for p in cf.ping_nodes)
        lines.append(f"  ping:      {pings}, deadping {cf.deadping_ms} ms, ipfail {'on' if cf.ipfail else 'off'}")
    device = config.stonith
    lines.append(f"  stonith:   {device.describe()}, ha.cf line {device.lineno}" if device else
                 "  stonith:   no STONITH device: shared disks are not protected")
    lines.append(f"  groups:    {len(config.groups)}")
    for group in config.groups:
        lines.append(f"    {group.home} (line {group.lineno}):")
        lines.extend(f"      {r.spec}: {r.describe()}" for r in group.resources)
    settings = config.settings
    lines.append(f"  settings:  {settings.path}" if settings.present else
                 f"  settings:  no {SETTINGS_FILE}: defaults, no service monitoring")
    lines.append(f"    link_watch {'on' if settings.link_watch else 'off'}, "
                 f"http_listen {url_host(settings.http_listen) if settings.http_listen else 'off'}, "
                 f"notify_timeout {format_duration(settings.notify_timeout_ms)}")
    if settings.http_listen:
        allowed = ",".join(str(network) for network in settings.http_allow) or "any address"
        tls = f"TLS ({settings.http_tls_cert})" if settings.http_tls_cert else "plain HTTP"
        user = f"basic auth for {settings.http_basic_auth[0]}" if settings.http_basic_auth else "no authentication"
        lines.append(f"    http: {tls}, {user}, from {allowed}"
                     + (" (the password crosses the network in clear: add http_tls_cert)"
                        if settings.http_basic_auth and not settings.http_tls_cert else ""))
    hooks = notify_hooks(os.path.join(config.config_dir, NOTIFY_DIR))
    refused = {h: hook_problem(h, os.geteuid()) for h in hooks}
    runs = [os.path.basename(h) for h in hooks if not refused[h]]
    lines.append(f"  notify:    {', '.join(runs)} (in {NOTIFY_DIR})" if runs else
                 f"  notify:    no hooks in {os.path.join(config.config_dir, NOTIFY_DIR)}")
    lines.extend(f"    {os.path.basename(h)} will not run: {problem} ({HOOK_RULE})" for h, problem in refused.items()
                 if problem)
    lines.extend(f"    {m.describe()} (line {m.lineno}; {m.resource} of group {m.group})" for m in settings.monitors)
    return "\n".join(lines)


VALIDATE_TIMEOUT_S = 10.0      # a cloud agent's asks its metadata service: no answer off the cloud


def validate_agents(config: Config) -> List[ConfigError]:
    """Each agent's validate-all, where it has one, as warnings: on a node that does not hold the group
    a shared device or a mount point may well be out of reach. validate-all touches no resource."""
    warnings = []
    haresources = os.path.join(config.config_dir, "haresources")
    agents = [(group, res) for group in config.groups for res in group.resources if isinstance(res, AgentResource)]
    for group, res in agents:
        if "validate-all" not in res.metadata.actions:
            continue
        env = agent_environment(res, "validate-all", VALIDATE_TIMEOUT_S, RSCTMP_DEFAULT, {})
        result = run_command([res.path, "validate-all"], VALIDATE_TIMEOUT_S, env)
        if result.returncode != OCF_SUCCESS:
            why = exit_reason(result.output).splitlines()
            warnings.append(ConfigError(haresources, group.lineno, f"warning: {res.spec}: validate-all returned "
                                        f"{ocf_exit_text(result.returncode)}" + (f": {why[-1]}" if why else "")
                                        + " (this may be fine on a node that does not hold the group now)"))
    return warnings


def missing_interfaces(config: Config) -> List[Tuple[Medium, str]]:
    """Media and addresses naming an interface this machine does not have."""
    present = {name for _, name in socket.if_nameindex()}
    found = [(m, m.iface) for m in config.hacf.media if m.iface not in present]
    for group in config.groups:
        found.extend((group, r.iface) for r in group.resources
                     if isinstance(r, IPResource) and r.iface and r.iface not in present)
    return found


# #### Tools: setup (copy /etc/ha.d to the peer, exchange ssh keys) ################################

SSH_TIMEOUT_S = 60


def run_at_terminal(argv: List[str], timeout_s: float) -> CommandResult:
    """ssh and scp may ask for a password or about a host key on our terminal."""
    return run_command(argv, timeout_s, own_session=False)


class Remote:
    """ssh and scp to one peer, with argument lists; in dry-run mode it only prints the commands."""

    def __init__(self, host: str, user: str, options: List[str], dry_run: bool, run=run_at_terminal):
        self.target = f"{user}@{host}"
        self.options = []
        for option in [*options, "ConnectTimeout=10"]:      # ssh keeps the first value given: the user's
            self.options += ["-o", option]
        self.dry_run, self.run = dry_run, run

    def ssh_argv(self, command: List[str]) -> List[str]:
        """The remote side gets one string: every word quoted, none taken from config values unquoted."""
        import shlex
        return ["ssh", *self.options, self.target, "--", " ".join(shlex.quote(word) for word in command)]

    def execute(self, argv: List[str], what: str) -> str:
        import shlex
        if self.dry_run:
            print(shlex.join(argv))
            return ""
        result = self.run(argv, SSH_TIMEOUT_S)
        if result.returncode != 0:
            raise HAError(f"{what} failed (exit {result.returncode}): {result.output.strip()[-SETUP_OUTPUT_CHARS:]}")
        return result.output

    def ssh(self, command: List[str], what: str) -> str:
        return self.execute(self.ssh_argv(command), what)

    def scp(self, source: str, destination: str) -> None:
        self.execute(["scp", "-r", "-p", "-q", *self.options, source, f"{self.target}:{destination}"],
                     f"copying {source} to {self.target}")


def local_ssh_key(home: str, dry_run: bool, run=run_at_terminal) -> str:
    """Our ed25519 public key, created if missing (DSA, as in the tutorial, is refused by OpenSSH now)."""
    import shlex
    private = os.path.join(home, ".ssh", "id_ed25519")
    if not os.path.exists(private):
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", private]
        if dry_run:
            print(shlex.join(argv))
            return "<this node's public key>"
        os.makedirs(os.path.dirname(private), mode=0o700, exist_ok=True)
        result = run(argv, SSH_TIMEOUT_S)
        if result.returncode != 0:
            raise HAError(f"ssh-keygen failed: {result.output.strip()}")
    with open(private + ".pub", encoding="ascii") as handle:
        return handle.read().strip()


def append_once(path: str, line: str) -> bool:
    """Add line to an authorized_keys file unless it is there; True when added."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            if line in (existing.strip() for existing in handle):
                return False
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")
    return True


AUTHORIZE_ONCE = ('mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh" && touch "$HOME/.ssh/authorized_keys" && '
                  'chmod 600 "$HOME/.ssh/authorized_keys" && '
                  '{ grep -qxF "$1" "$HOME/.ssh/authorized_keys" || echo "$1" >> "$HOME/.ssh/authorized_keys"; }')
PEER_KEY = ('[ -f "$HOME/.ssh/id_ed25519" ] || { mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh" && '
            'ssh-keygen -q -t ed25519 -N "" -f "$HOME/.ssh/id_ed25519"; } && cat "$HOME/.ssh/id_ed25519.pub"')

# nodeinfo names one machine: ours is not copied, the peer's own is kept
REPLACE_DIR = ('set -e; rm -rf "$3"; rm -f "$1/nodeinfo"; if [ -e "$2/nodeinfo" ]; then cp -p "$2/nodeinfo" "$1/"; fi; '
               'if [ -e "$2" ]; then mv "$2" "$3"; fi; mv "$1" "$2"; rm -rf "$3"')

# the name the peer's daemon will use: the first line of its nodeinfo, else uname -n (as local_node_name)
PEER_NAME = ('name=$(head -n 1 "$1/nodeinfo" 2>/dev/null | tr -d "[:space:]"); '
             'if [ -n "$name" ]; then echo "$name"; else uname -n; fi')


def setup_peer(config: Config, peer: str, host: Optional[str], user: str, ssh_options: List[str],
               keys: bool, dry_run: bool, run=run_at_terminal) -> List[str]:
    """The tutorial's steps 2-3: check, key exchange, copy ha.d; return what was done."""
    peer = peer.lower()
    if peer not in config.hacf.nodes:
        raise HAError(f"{peer} is not a node in {config.hacf.path} (nodes: {' '.join(config.hacf.nodes)})")
    if peer == config.node:
        raise HAError(f"{peer} is this node; name the other one")
    remote = Remote(host or peer, user, ssh_options, dry_run, run)
    done = []
    if keys:
        home = os.path.expanduser("~")
        ours = local_ssh_key(home, dry_run, run)
        remote.ssh(["sh", "-c", AUTHORIZE_ONCE, "authorize", ours], f"adding our key to {peer}")
        done.append(f"our ssh key is in {user}@{peer}'s authorized_keys")
        theirs = remote.ssh(["sh", "-c", PEER_KEY], f"reading {peer}'s ssh key").strip()
        if not dry_run:
            if not re.fullmatch(r"ssh-[a-z0-9-]+ [A-Za-z0-9+/=]+( .*)?", theirs.splitlines()[-1] if theirs else ""):
                raise HAError(f"{peer} sent no usable public key: {theirs[:QUOTED_CHARS]!r}")
            added = append_once(os.path.join(home, ".ssh", "authorized_keys"), theirs.splitlines()[-1])
            done.append(f"{peer}'s ssh key {'added to' if added else 'already in'} our authorized_keys")
    source = os.path.abspath(config.config_dir)
    reported = remote.ssh(["sh", "-c", PEER_NAME, "name", source], f"asking {peer} its name").strip().lower()
    if not dry_run and reported == config.node:
        raise HAError(f"{host or peer} would run as '{reported}', the name of this node (a cloned machine, or a "
                      f"copied {source}/nodeinfo?): two nodes with one name both take every group; "
                      "give it its own hostname")
    if not dry_run and reported != peer:
        raise HAError(f"{host or peer} says its name is '{reported}', but ha.cf calls it '{peer}': "
                      "Heartbeat would not recognise it (fix its hostname or the node line)")
    staging = f"{source}.new-{os.urandom(4).hex()}"
    old = f"{source}.old-{os.urandom(4).hex()}"
    remote.scp(source, staging)
    remote.ssh(["sh", "-c", REPLACE_DIR, "replace", staging, source, old], f"installing {source} on {peer}")
    done.append(f"copied {source} to {peer}:{source} (modes kept: authkeys stays 0600): "
                + ", ".join(sorted(os.listdir(source))))
    return done


# #### Tools: export to Pacemaker (pcs, crm and CIB XML) ###########################################

SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
STICKINESS = {"on": 50, "legacy": 50, "off": 200}    # location preference for the home node: 100
HOME_SCORE = 100
PING_SCORE = 1000      # per ping node answering: more than home preference and stickiness together


def group_stickiness(config: Config, primitives) -> Optional[int]:
    """A group's members each get this share of the stickiness (None: one primitive, the default applies).
    Pacemaker adds up the stickiness of a group's active members: with the default on each of them, a
    group of two under auto_failback on (2 x 50) would tie with its home preference and never fail back."""
    if len(primitives) < 2:
        return None
    return STICKINESS[config.hacf.auto_failback] // len(primitives)


NOT_TRANSLATED = {
    "ping": "ping nodes move nothing without ipfail (respawn ... ipfail)",
    "ping_group": "ping groups move nothing without ipfail (respawn ... ipfail)",
    "deadping": "ping nodes move nothing without ipfail (respawn ... ipfail)",
    "stonith": "STONITH devices: create fence devices with 'pcs stonith create' (fencing is off in this export)",
    "stonith_host": "STONITH devices: create fence devices with 'pcs stonith create' (fencing is off in this export)",
    "respawn": "respawned clients: make them systemd services or Pacemaker resources",
    "apiauth": "API permissions have no Pacemaker equivalent",
    "failfast": "failfast children have no Pacemaker equivalent",
    "watchdog": "a watchdog device: configure sbd instead",
    "udpport": "corosync's knet uses its own port (5405)",
    "warntime": "corosync has no late-heartbeat warning",
    "initdead": "corosync's wait_for_all (on with two_node) covers start-up",
    "keepalive": "knet's heartbeat interval is derived from the token timeout",
}


@dataclasses.dataclass
class ExportedResource:
    """One Pacemaker primitive made from one haresources word."""
    ident: str
    agent: str                       # "ocf:heartbeat:IPaddr2", "lsb:apache2", "systemd:apache2"
    params: List[Tuple[str, str]]
    note: str = ""
    monitor: Optional[MonitorSettings] = None     # heartbeat.py.cf's monitor line for it
    monitor_timeout: str = "20s"                  # without one: an agent's advertised timeout, or this

    def monitor_op(self, interval_s: int) -> Tuple[str, str]:
        """(interval, timeout) of its `op monitor`: heartbeat.py.cf's, or the export's default."""
        if self.monitor:
            return format_duration(self.monitor.interval_ms), format_duration(self.monitor.timeout_ms)
        return f"{interval_s}s", self.monitor_timeout

    def monitor_depth(self) -> List[Tuple[str, str]]:
        """The monitor op's OCF_CHECK_LEVEL, where heartbeat.py.cf asks for a deeper check."""
        return [("OCF_CHECK_LEVEL", str(self.monitor.ocf_check_level))] \
            if self.monitor and self.monitor.ocf_check_level else []

    def meta(self) -> List[Tuple[str, str]]:
        """What heartbeat.py.cf's monitor line means to Pacemaker beyond the op itself."""
        if not self.monitor:
            return []
        return [("migration-threshold", str(self.monitor.migration_threshold or "INFINITY")),
                ("failure-timeout", format_duration(self.monitor.failure_timeout_ms)
                 if self.monitor.failure_timeout_ms else "0")]


@dataclasses.dataclass
class ExportedPing:
    """ipfail's rule in Pacemaker's words: an ocf:pacemaker:ping clone sets a node attribute from the
    ping nodes it reaches, and a location rule scores each group by it, so the node that reaches
    more ping nodes serves and equal counts move nothing."""
    ident: str
    attribute: str
    hosts: Tuple[str, ...]
    group: bool                      # a ping_group: counts once when any member answers


def export_pings(config: Config) -> List[ExportedPing]:
    hacf = config.hacf
    if not hacf.ipfail:
        return []
    plain = tuple(a for p in hacf.ping_nodes if not p.group for a in p.addresses)
    pings = [ExportedPing("ping_nodes", "pingd", plain, False)] if plain else []
    pings += [ExportedPing(pacemaker_id(f"ping_{p.name}"), pacemaker_id(f"ping_{p.name}"), p.addresses, True)
              for p in hacf.ping_nodes if p.group]
    return pings


def ping_params(config: Config, ping: ExportedPing) -> List[Tuple[str, str]]:
    """dampen: ipfail waits 2 x keepalive before it gives up; the monitor looks twice per deadping."""
    hacf = config.hacf
    return [("host_list", " ".join(ping.hosts)), ("name", ping.attribute),
            ("multiplier", "1" if ping.group else str(PING_SCORE)),
            ("dampen", f"{max(1, -(-2 * hacf.keepalive_ms // 1000))}s")]


def ping_monitor_interval_s(config: Config) -> int:
    return max(1, config.hacf.deadping_ms // 2000)


@dataclasses.dataclass
class ExportedFence:
    """A STONITH line of ha.cf as a Pacemaker fence device. `targets`: the nodes it fences
    (pcmk_host_list; empty: Pacemaker asks the device); `banned`: the nodes it must not run on
    (-INFINITY), those it fences, so that the node that used it under Heartbeat is the one that runs it."""
    ident: str
    agent: str                       # "stonith:fence_ipmilan", "stonith:external/ssh", "stonith:null"
    params: List[Tuple[str, str]]
    targets: Tuple[str, ...]
    banned: Tuple[str, ...]
    line: StonithLine


FENCE_MONITOR = ("60s", "20s")
STONITH_HOST_PARAMS = ("hostname", "hostlist")    # the cluster-glue parameters naming the nodes a device resets
IPMI_TO_FENCE_IPMILAN = {"ipaddr": "ip", "ipport": "ipport", "userid": "username", "passwd": "password"}


def fence_agent_params(plugin: str, values: Dict[str, str]) -> Tuple[str, List[Tuple[str, str]]]:
    """external/ipmi becomes fence-agents' fence_ipmilan (its parameter names); every other
    cluster-glue plugin stays itself (Pacemaker's stonith class runs them through fence_legacy)."""
    if plugin != "external/ipmi":
        return f"stonith:{plugin}", list(values.items())
    params = [(IPMI_TO_FENCE_IPMILAN[k], v) for k, v in values.items() if k in IPMI_TO_FENCE_IPMILAN and v]
    if values.get("interface"):
        params.append(("lanplus", "1" if values["interface"].lower() == "lanplus" else "0"))
    return "stonith:fence_ipmilan", params


def export_fences(config: Config) -> Tuple[List[ExportedFence], List[ConfigError]]:
    """The device lines in effect (3.0.6: the last line for a node or *, per node) as fence devices;
    a warning (never with the parameters: they hold passwords) for every line left out."""
    hacf, fences, warnings, used = config.hacf, [], [], set()
    effective = {}                   # line -> the nodes that use it
    for node in hacf.nodes:
        line = stonith_line_for(hacf, node)
        if line:
            effective.setdefault(id(line), []).append(node)
    for line in hacf.stonith_lines:
        users = effective.get(id(line))
        if not users:
            warnings.append(ConfigError(hacf.path, line.lineno, f"warning: this {line.plugin} device is not "
                                        "exported: no node of ha.cf uses it (a later line for the same node wins)"))
            continue
        try:
            values, _, _ = stonith_line_params(line)
        except OSError as err:
            warnings.append(ConfigError(hacf.path, line.lineno, f"warning: this {line.plugin} device is not "
                                        f"exported: {line.config_file}: {err.strerror or err}"))
            continue
        except ValueError as err:
            warnings.append(ConfigError(hacf.path, line.lineno, f"warning: this {line.plugin} device is not "
                                        f"exported: {err}"))
            continue
        named = [w for k in STONITH_HOST_PARAMS if k in values for w in values[k].replace(",", " ").split()]
        peers = [n for n in hacf.nodes if n not in users]
        targets = tuple(named or peers)                    # a device all nodes use: ask it (dynamic list)
        allowed = [n for n in users if n not in targets] or users
        banned = tuple(n for n in hacf.nodes if n not in allowed)
        agent, params = fence_agent_params(line.plugin, values)
        if targets and not any(k == "pcmk_host_list" for k, _ in params):
            params.append(("pcmk_host_list", " ".join(targets)))
        base = pacemaker_id(f"fence_{line.plugin.rpartition('/')[2]}_{'_'.join(targets) or 'all'}")
        ident, n = base, 1
        while ident in used:
            n += 1
            ident = f"{base}_{n}"
        used.add(ident)
        fences.append(ExportedFence(ident, agent, params, targets, banned, line))
    return fences, warnings


def pacemaker_id(text: str) -> str:
    """A valid XML/Pacemaker id from free text."""
    ident = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    return ident if re.match(r"[A-Za-z_]", ident) else "r_" + ident


def export_model(config: Config, unit_dirs=SYSTEMD_UNIT_DIRS):
    """Groups of primitives, wrappers to write, the warnings and the fence devices, shared by the
    three formats (the devices found once: each may run cluster-glue's `stonith -n`)."""
    warnings, wrappers, groups, used = [], {}, [], set()
    hacf, haresources = config.hacf, os.path.join(config.config_dir, "haresources")
    fences, fence_warnings = export_fences(config)
    warnings += fence_warnings
    for name, reason in NOT_TRANSLATED.items():
        if name in hacf.lines and not (hacf.ipfail and name in ("ping", "ping_group", "deadping", "respawn")) \
                and not (fences and name in ("stonith", "stonith_host")):
            warnings.append(ConfigError(hacf.path, hacf.lines[name], f"warning: '{name}' is not exported: {reason}"))
    if hacf.auto_failback == "legacy":
        warnings.append(ConfigError(hacf.path, hacf.lines.get("auto_failback", 0),
                                    "warning: auto_failback legacy is exported like 'on'"))
    for medium in hacf.media:
        if medium.kind != "bcast":
            warnings.append(ConfigError(hacf.path, medium.lineno, f"warning: {medium.kind} specifics (group, "
                                        "ttl, peers) are not needed by knet; only the link is exported"))

    def unique(ident):
        base, n = ident, 1
        while ident in used:
            n += 1
            ident = f"{base}_{n}"
        used.add(ident)
        return ident

    monitors = {m.resource: m for m in config.settings.monitors}
    for number, group in enumerate(config.groups, 1):
        primitives = []
        for res in group.resources:
            if isinstance(res, IPResource):
                params = [("ip", res.ip)]
                if res.prefix is not None:
                    params.append(("cidr_netmask", str(res.prefix)))
                if res.iface:
                    params.append(("nic", res.iface))
                if res.broadcast:
                    params.append(("broadcast", res.broadcast))
                primitives.append(ExportedResource(unique(pacemaker_id("ip_" + re.sub(r"[.:]", "_", res.ip))),
                                                   "ocf:heartbeat:IPaddr2", params))     # IPv6 too, nodad
            elif isinstance(res, AgentResource):     # the same agent with the same parameters
                advertised = res.metadata.timeouts_ms.get("monitor")
                primitives.append(ExportedResource(unique(pacemaker_id(res.instance)), res.kind,
                                                   list(res.params.items()),
                                                   monitor_timeout=format_duration(advertised) if advertised
                                                   else "20s"))
            elif res.lsb and not res.args:
                has_unit = any(os.path.exists(os.path.join(d, res.name + ".service")) for d in unit_dirs)
                primitives.append(ExportedResource(unique(pacemaker_id("svc_" + res.name)),
                                                   f"{'systemd' if has_unit else 'lsb'}:{res.name}", []))
            else:
                wrapper = unique(pacemaker_id("hb-" + res.name)).replace("_", "-")
                wrappers[wrapper] = lsb_wrapper(wrapper, res)
                primitives.append(ExportedResource(pacemaker_id(wrapper), f"lsb:{wrapper}", [],
                                                   note=f"needs /etc/init.d/{wrapper} (written by this export)"))
                warnings.append(ConfigError(haresources, group.lineno, f"warning: {res.spec} has no Pacemaker "
                                            f"class: exported as lsb:{wrapper}, a wrapper this export writes; "
                                            f"install it as /etc/init.d/{wrapper} on every node"))
            monitor = monitors.get(res.spec)
            if monitor:
                primitives[-1].monitor = monitor
                if monitor.fall > 1:
                    warnings.append(ConfigError(config.settings.path, monitor.lineno, f"warning: monitor "
                                                f"{monitor.name} fall={monitor.fall} is not exported: in "
                                                "Pacemaker one failed monitor is a failure"))
        ident = unique(f"grp_{pacemaker_id(group.home)}_{number}") if len(primitives) > 1 else None
        groups.append((group, ident, primitives))
    return groups, wrappers, warnings, fences


def lsb_wrapper(name: str, res: ScriptResource) -> str:
    """An LSB init script that runs a Heartbeat resource.d script with its arguments."""
    import shlex
    call = " ".join(shlex.quote(word) for word in [res.path, *res.args])
    return f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Short-Description: {res.spec} (Heartbeat resource.d script) for Pacemaker
### END INIT INFO
# Written by heartbeat.py export-pacemaker: Pacemaker 2 has no class for Heartbeat's
# resource.d scripts with arguments; this LSB wrapper runs {res.name} with them, and with
# the node's name in HA_CURHOST as Heartbeat gave it (Pacemaker's node name is uname -n).
HA_CURHOST="${{HA_CURHOST:-$(uname -n)}}"; export HA_CURHOST
case "$1" in
    start|stop) {call} "$1" ;;
    status)
        out=$({call} status 2>&1)
        case "$out" in
            *"not running"*|*stopped*) exit 3 ;;
            *running*|*OK*) exit 0 ;;
            *) exit 3 ;;
        esac ;;
    *) echo "Usage: $0 {{start|stop|status}}"; exit 2 ;;
esac
"""


def monitor_interval_s(config: Config) -> int:
    return max(10, round(config.hacf.deadtime_ms / 1000))


def export_pcs(config: Config, groups, wrappers, fences: List[ExportedFence]) -> str:
    import shlex
    hacf = config.hacf
    lines = ["#!/bin/sh",
             f"# Pacemaker/Corosync configuration made by heartbeat.py export-pacemaker from {config.config_dir}.",
             "# Read it before you run it. It builds the cluster, then the resources in a CIB file that it",
             "# pushes at the end.", "set -e", "",
             "# 1. The cluster: corosync 3 with one knet link per heartbeat medium. Heartbeat names",
             "#    interfaces, corosync needs addresses: replace every <...> with that node's address",
             "#    on that link.",
             f"#    deadtime {hacf.deadtime_ms} ms becomes the totem token timeout."]
    setup = ["pcs", "cluster", "setup", shlex.quote(hacf.cluster)]
    for node in hacf.nodes:              # names are words from ha.cf: quoted, as any config value
        setup.append(shlex.quote(node))
        setup += [f"addr=<{shlex.quote(node)}-{m.iface}-address>" for m in hacf.media]
    setup += ["transport", "knet", "totem", f"token={hacf.deadtime_ms}"]
    lines.append(" ".join(setup))
    if len(hacf.nodes) == 2:
        lines.append("pcs quorum update two_node=1 wait_for_all=1      # quorum { two_node: 1 } in corosync.conf")
    lines.append("pcs cluster start --all --wait")
    lines += ["", "# 2. The resources, in a CIB file first.", 'CIB="${CIB:-heartbeat-export.cib.xml}"',
              '[ -n "$EXPORT_SKIP_CLUSTER" ] || pcs cluster cib "$CIB"', ""]
    if not fences:
        lines += ["# !!! Fencing is OFF, as it was under Heartbeat without STONITH. A production cluster",
                  "# !!! needs fencing: create fence devices ('pcs stonith create ...') and turn it on.",
                  'pcs -f "$CIB" property set stonith-enabled=false']
    else:
        lines += ["# Fencing: ha.cf's STONITH devices. This file holds their passwords: keep it private.",
                  "# Test each device (pcs stonith fence NODE) before the cluster serves.",
                  'pcs -f "$CIB" property set stonith-enabled=true']
        if config.settings.fence_delay_ms:
            lines.append(f'pcs -f "$CIB" property set priority-fencing-delay='
                         f"{format_duration(config.settings.fence_delay_ms)}   # fence_delay: the node that "
                         "holds resources wins")
        for fence in fences:
            lines.append(f"# ha.cf line {fence.line.lineno}: {fence.line.plugin}"
                         f"{', fences ' + ' '.join(fence.targets) if fence.targets else ''}")
            params = " ".join(f"{k}={shlex.quote(v)}" for k, v in fence.params)
            lines.append(f'pcs -f "$CIB" stonith create {fence.ident} {fence.agent.partition(":")[2]}'
                         f'{" " + params if params else ""} op monitor interval={FENCE_MONITOR[0]} '
                         f"timeout={FENCE_MONITOR[1]} --force")       # the agent may live only on the nodes
            lines += [f'pcs -f "$CIB" constraint location {fence.ident} avoids {shlex.quote(node)}'
                      for node in fence.banned]
    lines += [f'pcs -f "$CIB" resource defaults update resource-stickiness={STICKINESS[hacf.auto_failback]}'
              f"   # auto_failback {hacf.auto_failback}: {'below' if hacf.auto_failback != 'off' else 'above'}"
              f" the home preference ({HOME_SCORE})"]
    if fences and config.settings.fence_delay_ms:
        lines.append('pcs -f "$CIB" resource defaults update priority=1   # for priority-fencing-delay')
    for ping in export_pings(config):
        params = " ".join(f"{k}={shlex.quote(v)}" for k, v in ping_params(config, ping))
        lines.append(f"# ipfail: every node pings {', '.join(ping.hosts)}; groups prefer the node that reaches more")
        lines.append(f'pcs -f "$CIB" resource create {ping.ident} ocf:pacemaker:ping {params} '
                     f"op monitor interval={ping_monitor_interval_s(config)}s timeout=60s clone")
    interval = monitor_interval_s(config)
    for group, ident, primitives in groups:
        lines.append(f"# haresources line {group.lineno}: {group.home} {' '.join(r.spec for r in group.resources)}")
        for prim in primitives:
            if prim.note:
                lines.append(f"# {prim.note}")
            params = " ".join(f"{k}={shlex.quote(v)}" for k, v in prim.params)
            force = "" if prim.agent.startswith("ocf:") else " --force"    # the script may live only on the nodes
            every, timeout = prim.monitor_op(interval)
            meta = " meta " + " ".join(f"{k}={v}" for k, v in prim.meta()) if prim.meta() else ""
            depth = "".join(f" {k}={v}" for k, v in prim.monitor_depth())
            lines.append(f'pcs -f "$CIB" resource create {prim.ident} {prim.agent}{" " + params if params else ""}'
                         f" op monitor interval={every} timeout={timeout}{depth}{meta}"
                         f"{' --group ' + ident if ident else ''}{force}")
        target = ident or primitives[0].ident
        share = group_stickiness(config, primitives)
        if share is not None:
            lines.append(f'pcs -f "$CIB" resource meta {ident} resource-stickiness={share}   # per member: '
                         "a group's stickiness is the sum of its members'")
        lines.append(f'pcs -f "$CIB" constraint location {target} prefers {shlex.quote(group.home)}={HOME_SCORE}')
        for ping in export_pings(config):
            rule = (f"score={PING_SCORE} {ping.attribute} gt 0" if ping.group else
                    f"score-attribute={ping.attribute} defined {ping.attribute}")
            lines.append(f'pcs -f "$CIB" constraint location {target} rule {rule}')
    lines += ["", '[ -n "$EXPORT_SKIP_CLUSTER" ] || pcs cluster cib-push "$CIB"']
    if wrappers:
        lines += ["", "# Before starting the cluster, install these LSB wrappers (written next to this file)",
                  "# as /etc/init.d/NAME on every node: " + " ".join(sorted(wrappers))]
    return "\n".join(lines) + "\n"


def export_crm(config: Config, groups, wrappers, fences: List[ExportedFence]) -> str:
    import shlex
    hacf = config.hacf
    lines = [f"# crmsh configuration made by heartbeat.py export-pacemaker from {config.config_dir}.",
             "# Load it with: crm configure load update FILE"]
    lines.append("# Fencing: ha.cf's STONITH devices. This file holds their passwords: keep it private." if fences
                 else "# !!! Fencing is OFF, as it was under Heartbeat without STONITH; production needs fencing.")
    lines += [f"node {shlex.quote(node)}" for node in hacf.nodes]      # crmsh splits its lines as a shell does
    interval = monitor_interval_s(config)
    for group, ident, primitives in groups:
        for prim in primitives:
            params = (" params " + " ".join(f"{k}={shlex.quote(v)}" for k, v in prim.params)) if prim.params else ""
            every, timeout = prim.monitor_op(interval)
            meta = " meta " + " ".join(f"{k}={v}" for k, v in prim.meta()) if prim.meta() else ""
            depth = "".join(f" {k}={v}" for k, v in prim.monitor_depth())
            lines.append(f"primitive {prim.ident} {prim.agent}{params} op monitor interval={every} "
                         f"timeout={timeout}{depth}{meta}")
        if ident:
            lines.append(f"group {ident} {' '.join(p.ident for p in primitives)} meta resource-stickiness="
                         f"{group_stickiness(config, primitives)}")
        target = ident or primitives[0].ident
        lines.append(f"location loc_{target}_{pacemaker_id(group.home)} {target} {HOME_SCORE}: "
                     f"{shlex.quote(group.home)}")
        for ping in export_pings(config):
            rule = (f"{PING_SCORE}: {ping.attribute} gt 0" if ping.group else
                    f"{ping.attribute}: defined {ping.attribute}")
            lines.append(f"location loc_{target}_{ping.attribute} {target} rule {rule}")
    for ping in export_pings(config):
        params = " ".join(f"{k}={shlex.quote(v)}" for k, v in ping_params(config, ping))
        lines.append(f"primitive {ping.ident} ocf:pacemaker:ping params {params} "
                     f"op monitor interval={ping_monitor_interval_s(config)}s timeout=60s")
        lines.append(f"clone {ping.ident}-clone {ping.ident}")
    for fence in fences:
        params = " ".join(f"{k}={shlex.quote(v)}" for k, v in fence.params)
        lines.append(f"primitive {fence.ident} {fence.agent}{' params ' + params if params else ''} "
                     f"op monitor interval={FENCE_MONITOR[0]} timeout={FENCE_MONITOR[1]}")
        lines += [f"location loc_{fence.ident}_{pacemaker_id(node)} {fence.ident} -inf: {node}"
                  for node in fence.banned]
    delay = config.settings.fence_delay_ms if fences else 0
    lines += [f"property stonith-enabled={'true' if fences else 'false'}"
              + (f" priority-fencing-delay={format_duration(delay)}" if delay else ""),
              f"rsc_defaults resource-stickiness={STICKINESS[hacf.auto_failback]}" + (" priority=1" if delay else "")]
    if wrappers:
        lines.append("# install the LSB wrappers as /etc/init.d/NAME on every node: " + " ".join(sorted(wrappers)))
    return "\n".join(lines) + "\n"


def export_xml(config: Config, groups, wrappers, fences: List[ExportedFence]) -> str:
    import xml.etree.ElementTree as ET  # noqa: N817 - only the export needs XML
    hacf = config.hacf

    def nvpairs(parent, tag: str, owner: str, pairs) -> None:
        """An instance_attributes or meta_attributes block of nvpairs, with ids as pcs makes them."""
        block = ET.SubElement(parent, tag, {"id": f"{owner}-{tag}"})
        for key, value in pairs:
            ET.SubElement(block, "nvpair", {"id": f"{owner}-{tag}-{key}", "name": key, "value": value})

    cib = ET.Element("cib", {"validate-with": "pacemaker-3.0", "epoch": "1", "num_updates": "0",
                             "admin_epoch": "0"})
    configuration = ET.SubElement(cib, "configuration")
    crm_config = ET.SubElement(ET.SubElement(configuration, "crm_config"), "cluster_property_set",
                               {"id": "cib-bootstrap-options"})
    delay = config.settings.fence_delay_ms if fences else 0
    ET.SubElement(crm_config, "nvpair", {"id": "cib-bootstrap-options-stonith-enabled", "name": "stonith-enabled",
                                         "value": "true" if fences else "false"})
    if delay:
        ET.SubElement(crm_config, "nvpair", {"id": "cib-bootstrap-options-priority-fencing-delay",
                                             "name": "priority-fencing-delay", "value": format_duration(delay)})
    nodes = ET.SubElement(configuration, "nodes")
    for number, node in enumerate(hacf.nodes, 1):
        ET.SubElement(nodes, "node", {"id": str(number), "uname": node})
    resources = ET.SubElement(configuration, "resources")
    constraints = ET.SubElement(configuration, "constraints")
    interval = monitor_interval_s(config)
    for group, ident, primitives in groups:
        parent = ET.SubElement(resources, "group", {"id": ident}) if ident else resources
        if ident:       # a group's stickiness is the sum of its members': each gets a share
            share = str(group_stickiness(config, primitives))
            nvpairs(parent, "meta_attributes", ident, [("resource-stickiness", share)])
        for prim in primitives:
            kind, _, rest = prim.agent.partition(":")
            attrs = {"id": prim.ident, "class": kind}
            if kind == "ocf":
                provider, _, agent = rest.partition(":")
                attrs.update(provider=provider, type=agent)
            else:
                attrs["type"] = rest
            element = ET.SubElement(parent, "primitive", attrs)
            if prim.params:
                nvpairs(element, "instance_attributes", prim.ident, prim.params)
            if prim.meta():
                nvpairs(element, "meta_attributes", prim.ident, prim.meta())
            every, timeout = prim.monitor_op(interval)
            ops = ET.SubElement(element, "operations")
            op = ET.SubElement(ops, "op", {"id": f"{prim.ident}-monitor-interval-{every}", "name": "monitor",
                                           "interval": every, "timeout": timeout})
            if prim.monitor_depth():
                nvpairs(op, "instance_attributes", op.get("id"), prim.monitor_depth())
        target = ident or primitives[0].ident
        ET.SubElement(constraints, "rsc_location", {"id": f"loc_{target}_{pacemaker_id(group.home)}",
                                                    "rsc": target, "node": group.home, "score": str(HOME_SCORE)})
        for ping in export_pings(config):
            location = ET.SubElement(constraints, "rsc_location", {"id": f"loc_{target}_{ping.attribute}",
                                                                   "rsc": target})
            rule_id = f"loc_{target}_{ping.attribute}-rule"
            if ping.group:
                rule = ET.SubElement(location, "rule", {"id": rule_id, "score": str(PING_SCORE)})
                ET.SubElement(rule, "expression", {"id": f"{rule_id}-expr", "attribute": ping.attribute,
                                                   "operation": "gt", "value": "0", "type": "number"})
            else:
                rule = ET.SubElement(location, "rule", {"id": rule_id, "score-attribute": ping.attribute})
                ET.SubElement(rule, "expression", {"id": f"{rule_id}-expr", "attribute": ping.attribute,
                                                   "operation": "defined"})
    for fence in fences:
        element = ET.SubElement(resources, "primitive", {"id": fence.ident, "class": "stonith",
                                                         "type": fence.agent.partition(":")[2]})
        if fence.params:
            nvpairs(element, "instance_attributes", fence.ident, fence.params)
        ET.SubElement(ET.SubElement(element, "operations"), "op", {
            "id": f"{fence.ident}-monitor-interval-{FENCE_MONITOR[0]}", "name": "monitor",
            "interval": FENCE_MONITOR[0], "timeout": FENCE_MONITOR[1]})
        for node in fence.banned:
            ET.SubElement(constraints, "rsc_location", {"id": f"loc_{fence.ident}_{pacemaker_id(node)}",
                                                        "rsc": fence.ident, "node": node, "score": "-INFINITY"})
    for ping in export_pings(config):
        clone = ET.SubElement(resources, "clone", {"id": f"{ping.ident}-clone"})
        element = ET.SubElement(clone, "primitive", {"id": ping.ident, "class": "ocf", "provider": "pacemaker",
                                                     "type": "ping"})
        nvpairs(element, "instance_attributes", ping.ident, ping_params(config, ping))
        interval_s = ping_monitor_interval_s(config)
        ET.SubElement(ET.SubElement(element, "operations"), "op", {
            "id": f"{ping.ident}-monitor-interval-{interval_s}s", "name": "monitor", "interval": f"{interval_s}s",
            "timeout": "60s"})
    defaults = ET.SubElement(ET.SubElement(configuration, "rsc_defaults"), "meta_attributes", {"id": "rsc-options"})
    ET.SubElement(defaults, "nvpair", {"id": "rsc-options-resource-stickiness", "name": "resource-stickiness",
                                       "value": str(STICKINESS[hacf.auto_failback])})
    if delay:
        ET.SubElement(defaults, "nvpair", {"id": "rsc-options-priority", "name": "priority", "value": "1"})
    ET.SubElement(cib, "status")
    ET.indent(cib)
    comment = ("<!-- made by heartbeat.py export-pacemaker from " + config.config_dir + (
        ". Fencing: ha.cf's STONITH devices (stonith-enabled=true); this file holds their passwords: keep it "
        "private. -->\n" if fences else ". Fencing is OFF (stonith-enabled=false), as under Heartbeat without "
        "STONITH: production needs fencing. -->\n"))
    return comment + ET.tostring(cib, encoding="unicode") + "\n"


def export_pacemaker(config: Config, fmt: str, unit_dirs=SYSTEMD_UNIT_DIRS):
    """(text, warnings, wrappers) for fmt in pcs, crm, xml."""
    groups, wrappers, warnings, fences = export_model(config, unit_dirs)
    writer = {"pcs": export_pcs, "crm": export_crm, "xml": export_xml}[fmt]
    warnings.sort(key=lambda w: (w.path, w.lineno))
    return writer(config, groups, wrappers, fences), warnings, wrappers


# ==================================================================================================
# 11. CLI: subcommands, the argument parser, main()
# ==================================================================================================


# #### CLI: subcommands and main() #################################################################

def cmd_check(args) -> int:
    """Validate ha.cf, authkeys, haresources and heartbeat.py.cf together and print what they describe."""
    config = load_config(args.config_dir, args.node)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    for where, iface in missing_interfaces(config):
        path, lineno = ((config.hacf.path, where.lineno) if isinstance(where, Medium)
                        else (os.path.join(config.config_dir, "haresources"), where.lineno))
        print(f"{path}:{lineno}: warning: this machine has no interface {iface}; "
              "the daemon will not start here as configured", file=sys.stderr)
    problem = watchdog_problem(config.hacf.watchdog) if config.hacf.watchdog else None
    if problem:
        print(f"{config.hacf.path}:{config.hacf.lines['watchdog']}: warning: {problem}", file=sys.stderr)
    for warning in validate_agents(config):
        print(warning, file=sys.stderr)
    print(describe_config(config))
    return EXIT_OK


def cmd_keygen(args) -> int:
    """Write DIR/authkeys with a fresh random key."""
    path = os.path.join(args.config_dir, "authkeys")
    write_authkeys(path, args.method, args.force)
    print(f"wrote {path} (mode 0600, method {args.method}, signing index 1); "
          "copy it to every node, e.g. with 'heartbeat.py setup PEER'")
    return EXIT_OK


def cmd_daemon(args) -> int:
    """Run the daemon: detached (default) or in the foreground (systemd, tests)."""
    config = load_config(args.config_dir, args.node)
    restart_from_bytecode(args.state_dir)
    log = Log()

    def serve(notify_fd: int) -> int:
        log.configure(config.hacf, to_stderr=args.foreground)
        for warning in config.warnings:
            log.warn(str(warning))
        daemon = Daemon(args, config, log)
        try:
            daemon.open()
        except HAError as err:
            log.error(str(err))
            if notify_fd < 0:
                raise
            os.write(notify_fd, f"exit {EXIT_GENERIC}\nheartbeat.py: {err}\n".encode())
            os._exit(EXIT_GENERIC)
        if notify_fd >= 0:
            os.write(notify_fd, b"ok\n")
            os.close(notify_fd)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
        try:
            return daemon.run()
        except Exception:
            log.crit("Emergency shutdown: " + traceback.format_exc().replace("\n", " | "))
            return EXIT_GENERIC

    if args.foreground:
        return serve(-1)
    return daemonize(serve)


def cmd_status(args) -> int:
    """Ask the running daemon; exit 0 when it runs, 3 (LSB) when it does not."""
    fmt = "json" if args.json else args.format
    try:
        report = control_request(args.run_dir, {"cmd": "status"})
    except ControlDenied as err:                   # it may well run: neither "stopped" nor heartbeat_up 0
        print(f"heartbeat.py: {err}", file=sys.stderr)
        return EXIT_STATUS_UNKNOWN
    except HAError as err:
        if fmt == "json":
            print(json.dumps({"running": False, "error": str(err)}))
        elif fmt == "prometheus":                   # a scrape of a stopped daemon: heartbeat_up 0
            sys.stdout.write(up_metric(False).text())
        else:
            print(f"heartbeat.py is stopped on this machine. ({err})")
        return EXIT_NOT_RUNNING
    report["running"] = True
    if args.query:
        code, text = answer_query(report, args.query)
        print(text, file=sys.stdout if code in (EXIT_OK, EXIT_GENERIC) else sys.stderr)  # 1: an answer, "dead"
        return code
    if args.events:
        print(json.dumps(report["events"], indent=2) if fmt == "json" else format_events(report))
    elif fmt == "prometheus":
        sys.stdout.write(prometheus_text(report))
    else:
        print(json.dumps(report, indent=2, sort_keys=True) if fmt == "json" else format_status(report))
    return EXIT_OK


def cmd_standby_takeover(args) -> int:
    """Give all groups to the peer (standby) or take them all (takeover), like hb_standby/hb_takeover."""
    try:
        reply = control_request(args.run_dir, {"cmd": args.command})
    except HAError as err:
        print(f"heartbeat.py: {err}", file=sys.stderr)
        return EXIT_GENERIC if isinstance(err, ControlDenied) else EXIT_NOT_RUNNING
    if not reply.get("ok"):
        print(f"heartbeat.py: {args.command} refused: {reply.get('error')}", file=sys.stderr)
        return EXIT_GENERIC
    print("Going standby [all]." if args.command == "standby" else "Taking over [all].")
    return EXIT_OK


def cmd_meatclient(args) -> int:
    """The operator confirms a manual reset (meatware), as cluster-glue's `meatclient -c HOST`."""
    try:
        reply = control_request(args.run_dir, {"cmd": "meatclient", "host": args.confirm})
    except HAError as err:
        print(f"heartbeat.py: {err}", file=sys.stderr)
        return EXIT_GENERIC if isinstance(err, ControlDenied) else EXIT_NOT_RUNNING
    if not reply.get("ok"):
        print(f"heartbeat.py: meatclient: {reply.get('error')}", file=sys.stderr)
        return EXIT_GENERIC
    print(f"Meatware_client: reset confirmed for {args.confirm}.")
    return EXIT_OK


def cmd_hash_password(args) -> int:
    """Print an http_basic_auth line for heartbeat.py.cf: the password asked twice at a terminal (or
    read from the first line of stdin), only its PBKDF2 hash printed."""
    if sys.stdin.isatty():
        import getpass
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("heartbeat.py: hash-password: the two passwords differ", file=sys.stderr)
            return EXIT_GENERIC
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("heartbeat.py: hash-password: an empty password", file=sys.stderr)
        return EXIT_GENERIC
    print(f"http_basic_auth {args.user}:{password_hash(password, args.iterations)}")
    return EXIT_OK


def user_name(text: str) -> str:
    if not text or ":" in text or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError("a user name has no colon, space or control character")
    return text


def iteration_count(text: str) -> int:
    if not is_number(text) or not MIN_PBKDF2_ITERATIONS <= int(text) <= MAX_PBKDF2_ITERATIONS:
        raise argparse.ArgumentTypeError(f"from {MIN_PBKDF2_ITERATIONS} to {MAX_PBKDF2_ITERATIONS}")
    return int(text)


def directives_table() -> str:
    """The ha.cf directive table (Markdown), from DIRECTIVES: the README carries the same."""
    support = {"yes": "yes", "ignored": "accepted, no effect (warning)", "crm": "CRM only (warning; on = error)",
               "refused": "not implemented (error)"}
    rows = ["| directive | default | meaning | in heartbeat.py |", "|---|---|---|---|"]
    for d in DIRECTIVES:
        rows.append(f"| `{d.name}` | {d.default or '-'} | {d.meaning} | {support[d.support]} |")
    return "\n".join(rows)


def settings_table() -> str:
    """The heartbeat.py.cf table (Markdown), from SETTINGS: the README carries the same."""
    rows = ["| setting | option | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        operand = setting.operand.replace("|", "\\|")          # a bar would end the Markdown cell
        rows.append(f"| `{setting.name} {operand}` | | | {setting.meaning} |")
        rows.extend(f"| | `{o.name}=` | {o.default or '-'} | {o.meaning} |" for o in setting.options)
    return "\n".join(rows)


def cmd_directives(args) -> int:
    """Print every ha.cf directive with its default (Heartbeat's `heartbeat -D`), then heartbeat.py.cf's."""
    print(directives_table())
    print(f"\n{SETTINGS_FILE} (heartbeat.py's own settings; Heartbeat 3.0.6 never reads this file):\n")
    print(settings_table())
    return EXIT_OK


def cmd_setup(args) -> int:
    """Validate, then copy the configuration directory to PEER (and exchange ssh keys with --keys)."""
    config = load_config(args.config_dir, args.node)
    done = setup_peer(config, args.peer, args.host, args.user, args.ssh_option, args.keys, args.dry_run)
    print("dry run: nothing was run" if args.dry_run else "\n".join(done))
    return EXIT_OK


def cmd_export_pacemaker(args) -> int:
    """Translate the three files into a Pacemaker configuration (pcs, crm or CIB XML)."""
    node = args.node
    if not node:
        try:
            nodes = parse_hacf(os.path.join(args.config_dir, "ha.cf")).nodes
        except ConfigErrors:
            nodes = []
        me = local_node_name(args.config_dir)
        node = me if me in nodes or not nodes else nodes[0]    # export runs anywhere, not only on a node
    config = load_config(args.config_dir, node)
    text, warnings, wrappers = export_pacemaker(config, args.format)
    for warning in warnings:
        print(warning, file=sys.stderr)
    directory = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()

    def write(path, content, mode):
        try:
            write_file_atomic(path, content.encode(), mode)
        except OSError as err:
            raise HAError(f"cannot write {path}: {err.strerror or err}") from None

    for name, script in sorted(wrappers.items()):
        write(os.path.join(directory, name), script, 0o755)
        print(f"wrote {os.path.join(directory, name)}: install it as /etc/init.d/{name} on every node",
              file=sys.stderr)
    if args.output:                  # STONITH devices' passwords: for root's eyes only
        mode = 0o755 if args.format == "pcs" else 0o644
        write(args.output, text, mode & 0o700 if config.hacf.stonith_lines else mode)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config-dir", default=DEFAULT_CONFIG_DIR, metavar="DIR",
                        help=f"configuration directory (default {DEFAULT_CONFIG_DIR})")
    common.add_argument("--node", metavar="NAME", help="this node's name (default: uname -n)")
    common.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                        help=f"generation and uuid files (default {DEFAULT_STATE_DIR})")
    common.add_argument("--run-dir", default=DEFAULT_RUN_DIR, metavar="DIR",
                        help=f"pid file and control socket (default {DEFAULT_RUN_DIR})")
    parser = argparse.ArgumentParser(
        prog="heartbeat.py", description="Heartbeat-compatible two-node failover (haresources mode).")
    parser.add_argument("--version", action="version",
                        version=f"heartbeat.py {__version__} (Heartbeat {HEARTBEAT_VERSION} compatible)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser("check", parents=[common], help="validate ha.cf, authkeys, haresources and heartbeat.py.cf")
    check.set_defaults(func=cmd_check)
    keygen = sub.add_parser("keygen", parents=[common], help="write authkeys with a fresh random key")
    keygen.add_argument("--method", default="sha1", choices=sorted(AUTH_METHODS_NEEDING_KEY),
                        help="signing method (default sha1)")
    keygen.add_argument("--force", action="store_true", help="replace an existing authkeys")
    keygen.set_defaults(func=cmd_keygen)
    daemon = sub.add_parser("daemon", parents=[common], help="run the cluster daemon")
    daemon.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground and log to stderr too (systemd, tests)")
    daemon.set_defaults(func=cmd_daemon)
    status = sub.add_parser("status", parents=[common], help="ask the running daemon who is up")
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts (= --format json)")
    status.add_argument("--format", choices=("text", "json", "prometheus"), default="text",
                        help="prometheus: the metrics of /metrics, e.g. for node_exporter's textfile collector")
    status.add_argument("--events", action="store_true",
                        help="the event history (newest last): deaths, takeovers with their durations, failures")
    status.add_argument("query", nargs="*", metavar="QUERY",
                        help="a cl_status question: hbstatus, listnodes, rscstatus, nodestatus NODE, "
                             "nodetype NODE, listhblinks NODE, hblinkstatus NODE LINK")
    status.set_defaults(func=cmd_status)
    setup = sub.add_parser("setup", parents=[common], help="copy the configuration to PEER over scp")
    setup.add_argument("peer", metavar="PEER", help="the other node, as named in ha.cf")
    setup.add_argument("--keys", action="store_true", help="exchange ed25519 ssh keys with PEER first")
    setup.add_argument("--dry-run", action="store_true", help="print the ssh/scp commands instead")
    setup.add_argument("--host", help="address to reach PEER at (default: its name)")
    setup.add_argument("--user", default="root", help="remote user (default root)")
    setup.add_argument("-o", "--ssh-option", action="append", default=[], metavar="OPTION",
                       help="passed to ssh and scp as -o OPTION (e.g. Port=2222); repeatable")
    setup.set_defaults(func=cmd_setup)
    export = sub.add_parser("export-pacemaker", parents=[common],
                            help="write the configuration for Pacemaker/Corosync (pcs, crm or CIB XML)")
    export.add_argument("--format", choices=("pcs", "crm", "xml"), default="pcs", help="output format (pcs)")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    export.set_defaults(func=cmd_export_pacemaker)
    sub.add_parser("directives", parents=[common], help="list the ha.cf directives and heartbeat.py.cf settings"
                   ).set_defaults(func=cmd_directives)
    meat = sub.add_parser("meatclient", parents=[common],
                          help="confirm that a node was power-cycled by hand (the built-in meatware device)")
    meat.add_argument("confirm", metavar="HOST", help="the node that was power-cycled (meatclient -c HOST)")
    meat.set_defaults(func=cmd_meatclient)
    hashing = sub.add_parser("hash-password", parents=[common],
                             help="print an http_basic_auth line for heartbeat.py.cf (asks for the password)")
    hashing.add_argument("user", metavar="USER", type=user_name, help="the user Prometheus sends")
    hashing.add_argument("--iterations", type=iteration_count, default=PBKDF2_DEFAULT_ITERATIONS,
                         help=f"PBKDF2 iterations (default {PBKDF2_DEFAULT_ITERATIONS})")
    hashing.set_defaults(func=cmd_hash_password)
    for name, text in (("standby", "give all resource groups to the peer (hb_standby)"),
                       ("takeover", "take all resource groups from the peer (hb_takeover)")):
        sub.add_parser(name, parents=[common], help=text).set_defaults(func=cmd_standby_takeover)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigErrors as err:
        for error in err.errors:
            print(error, file=sys.stderr)
        print("heartbeat.py: configuration error, nothing was changed", file=sys.stderr)
        return EXIT_NOT_CONFIGURED
    except HAError as err:
        print(f"heartbeat.py: {err}", file=sys.stderr)
        return EXIT_GENERIC


if __name__ == "__main__":
    sys.exit(main())

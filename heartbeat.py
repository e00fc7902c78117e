#!/usr/bin/env python3
"""heartbeat.py - a Heartbeat-compatible two-node failover daemon in one file.

A drop-in for Linux-HA Heartbeat 3.0.6 in its classic haresources ("v1") mode:
the same /etc/ha.d files (ha.cf, authkeys, haresources), the same log lines and
the same UDP packets on port 694, so a cluster can be upgraded one node at a time.
Standard library only; `cryptography` and `psutil` are used when installed and
never required.

Quick start (as root, on both nodes):
    ./heartbeat.py keygen            # write /etc/ha.d/authkeys with a fresh key
    ./heartbeat.py check             # validate ha.cf, authkeys and haresources
    ./heartbeat.py setup calc        # copy /etc/ha.d to the peer over scp
    ./heartbeat.py daemon            # run it (or: service heartbeat start)
    ./heartbeat.py status            # who is up, who holds what
"""

import argparse
import base64
import dataclasses
import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
import sys
from typing import Dict, List, Optional, Tuple

__version__ = "0.1.0"
HEARTBEAT_VERSION = "3.0.6"     # the version whose wire protocol we speak

# ###################################################################### #
# Constants and defaults                                                  #
# ###################################################################### #

DEFAULT_CONFIG_DIR = "/etc/ha.d"
DEFAULT_STATE_DIR = "/var/lib/heartbeat"
DEFAULT_RUN_DIR = "/var/run/heartbeat"
INITD_DIR = "/etc/init.d"
DEFAULT_UDPPORT = 694
MAX_AUTH_INDEX = 15             # authkeys indexes are 0..15
AUTH_METHODS_NEEDING_KEY = {"sha1": True, "md5": True, "crc": False}

# LSB exit codes (the init script and `status` use them too).
EXIT_OK = 0
EXIT_GENERIC = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NOT_CONFIGURED = 6

# ###################################################################### #
# Errors                                                                  #
# ###################################################################### #


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


# ###################################################################### #
# Config: ha.cf                                                           #
# ###################################################################### #

TRUE_WORDS = ("true", "on", "yes", "y", "1")
FALSE_WORDS = ("false", "off", "no", "n", "0")
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7", "none")
TIME_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(ms|msec|us|usec)?$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def parse_time_ms(text: str) -> int:
    """Heartbeat's time syntax: seconds (`2`, `0.5`), or `1500ms`, or `500000us`."""
    match = TIME_RE.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a time (write 2, 0.5, 1500ms or 500000us)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    scale = {"s": 1000.0, "ms": 1.0, "msec": 1.0, "us": 0.001, "usec": 0.001}[unit]
    return int(round(number * scale))


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
    high: int = 0


DIRECTIVES = [
    Directive("node", "nodes", None, "cluster member names (uname -n), several per line allowed"),
    Directive("bcast", "media", None, "UDP broadcast heartbeats on each named interface"),
    Directive("mcast", "media", None, "UDP multicast: mcast DEV GROUP PORT TTL LOOP"),
    Directive("ucast", "media", None, "UDP unicast: ucast DEV PEER [PEER...]"),
    Directive("keepalive", "time", "1000ms", "interval between heartbeats"),
    Directive("deadtime", "time", "30000ms", "silence after which a node is declared dead"),
    Directive("warntime", "time", None, "lateness that logs a 'Late heartbeat' warning (deadtime/2)"),
    Directive("initdead", "time", None, "deadtime used at start-up, while the network settles"),
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
              low=1, high=60000),
    Directive("env", "line", None, "NAME=VALUE exported to resource scripts"),
    Directive("deadping", "time", None, "deadtime for ping nodes", support="ignored"),
    Directive("realtime", "bool", "true", "SCHED_FIFO scheduling", support="ignored"),
    Directive("rtprio", "int", None, "SCHED_FIFO priority", support="ignored", low=1, high=99),
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
    Directive("watchdog", "text", None, "watchdog device", support="ignored"),
    Directive("ping", "line", None, "ping pseudo-nodes for ipfail", support="ignored"),
    Directive("ping_group", "line", None, "ping group pseudo-node for ipfail", support="ignored"),
    Directive("respawn", "line", None, "child processes to keep running", support="ignored"),
    Directive("apiauth", "line", None, "API client permissions", support="ignored"),
    Directive("failfast", "line", None, "failfast children", support="ignored"),
    Directive("stonith", "line", None, "STONITH device", support="ignored"),
    Directive("stonith_host", "line", None, "STONITH device per host", support="ignored"),
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
    Directive("mcast6", "line", None, "IPv6 multicast heartbeats", support="refused"),
    Directive("ucast6", "line", None, "IPv6 unicast heartbeats", support="refused"),
    Directive("hbaping", "line", None, "fibre-channel ping", support="refused"),
    Directive("openais", "line", None, "openais messaging", support="refused"),
]
DIRECTIVE_BY_NAME = {d.name: d for d in DIRECTIVES}


@dataclasses.dataclass
class Medium:
    """One heartbeat path: a socket pair on one interface."""
    kind: str                        # bcast, mcast or ucast
    iface: str
    lineno: int
    group: str = ""                  # mcast group
    port: int = 0                    # mcast port (bcast and ucast use udpport)
    ttl: int = 1
    loop: bool = False
    peers: Tuple[str, ...] = ()      # ucast destinations

    def describe(self, udpport: int) -> str:
        if self.kind == "mcast":
            return f"mcast {self.iface} {self.group}:{self.port} ttl {self.ttl} loop {int(self.loop)}"
        if self.kind == "ucast":
            return f"ucast {self.iface} to {', '.join(self.peers)} port {udpport}"
        return f"bcast {self.iface} port {udpport}"


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
    max_rexmit_delay: int = 250
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    values: Dict[str, str] = dataclasses.field(default_factory=dict)   # raw, for HA_* variables
    lines: Dict[str, int] = dataclasses.field(default_factory=dict)    # where each was set
    warnings: List[ConfigError] = dataclasses.field(default_factory=list)


def config_lines(path: str, comment_anywhere: bool = True):
    """Yield (lineno, text) of a config file, comments and blank lines removed.

    The file is read as bytes and decoded leniently so that any garbage gives a
    config error at a line, never a UnicodeDecodeError.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise ConfigErrors([ConfigError(path, 0, f"cannot open: {err.strerror}")]) from None
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
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"mcast port '{port}' must be a number from 1 to 65535")
        if not ttl.isdigit() or not 0 < int(ttl) < 256:
            problems.append(f"mcast ttl '{ttl}' must be a number from 1 to 255")
        if loop not in ("0", "1"):
            problems.append(f"mcast loop '{loop}' must be 0 or 1")
        if not problems:
            cfg.media.append(Medium("mcast", dev, lineno, group=group, port=int(port),
                                    ttl=int(ttl), loop=loop == "1"))
    return problems


def _apply_value(cfg: HaCf, directive: Directive, value: str, lineno: int):
    """Set one scalar directive from one value; raise ValueError with the reason."""
    name, kind = directive.name, directive.kind
    if kind == "time":
        parsed = parse_time_ms(value)
        if parsed <= 0:
            raise ValueError(f"{name} must be more than 0")
        if hasattr(cfg, name + "_ms"):
            setattr(cfg, name + "_ms", parsed)
    elif kind == "bool":
        parsed = parse_bool(value)
        if name == "nice_failback":
            cfg.auto_failback = "legacy"
            _warn(cfg, lineno, "nice_failback is obsolete; Heartbeat reads it as "
                               "'auto_failback legacy'. Use 'auto_failback on' instead")
        elif hasattr(cfg, name):
            setattr(cfg, name, parsed)
    elif kind == "int":
        if not re.fullmatch(r"\d+", value) or not directive.low <= int(value) <= directive.high:
            raise ValueError(f"{name} must be a whole number from {directive.low} to {directive.high}")
        if hasattr(cfg, name):
            setattr(cfg, name, int(value))
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
        cfg.lines[name] = lineno
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


# ###################################################################### #
# Config: authkeys                                                        #
# ###################################################################### #

@dataclasses.dataclass
class AuthKeys:
    """authkeys: the index we sign with, and every configured index."""
    path: str
    active: int
    methods: Dict[int, Tuple[str, str]]     # index -> (method, key)
    warnings: List[ConfigError] = dataclasses.field(default_factory=list)

    @property
    def method(self) -> str:
        return self.methods[self.active][0]


def parse_authkeys(path: str, check_mode: bool = True) -> AuthKeys:
    """Read authkeys as Heartbeat does: `auth N`, then `N method [key]` lines."""
    errors = []
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise ConfigErrors([ConfigError(path, 0, f"Cannot open keyfile: {err.strerror}. "
                                        "Create one with 'heartbeat.py keygen'")]) from None
    if check_mode and mode & (stat.S_IRWXG | stat.S_IRWXO):
        errors.append(ConfigError(path, 0, f"Bad permissions on keyfile (mode {stat.S_IMODE(mode):03o}): "
                                  f"group or others can read the key; fix with: chmod 600 {path}"))
    active, active_line = None, 0
    methods: Dict[int, Tuple[str, str]] = {}
    method_lines: Dict[int, int] = {}
    for lineno, text in config_lines(path, comment_anywhere=False):
        words = text.split()
        if text.startswith("a"):
            if len(words) < 2 or words[0] != "auth" or not words[1].isdigit():
                errors.append(ConfigError(path, lineno, f"Invalid auth line [{text}]: write 'auth N'"))
            else:
                active, active_line = int(words[1]), lineno
            continue
        if len(words) < 2 or not re.fullmatch(r"-?\d+", words[0]):
            errors.append(ConfigError(path, lineno, f"Auth line [{text}] is invalid: "
                                      "write 'N method [key]', e.g. '1 sha1 SECRET'"))
            continue
        index, method = int(words[0]), words[1]
        key = words[2] if len(words) > 2 else ""
        if not 0 <= index <= MAX_AUTH_INDEX:
            errors.append(ConfigError(path, lineno, f"Invalid authnum [{index}]: use 0 to {MAX_AUTH_INDEX}"))
        elif method not in AUTH_METHODS_NEEDING_KEY:
            errors.append(ConfigError(path, lineno, f"Invalid authtype [{method}]: "
                                      "Heartbeat knows sha1, md5 and crc"))
        elif AUTH_METHODS_NEEDING_KEY[method] and not key:
            errors.append(ConfigError(path, lineno, f"Auth method [{method}] requires a key"))
        elif key and not AUTH_METHODS_NEEDING_KEY[method]:
            errors.append(ConfigError(path, lineno, f"Auth method [{method}] doesn't use a key: "
                                      f"write '{index} {method}'"))
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
    keys = AuthKeys(path, active, methods)
    if method_lines[active] < active_line:
        keys.warnings.append(ConfigError(path, active_line, "warning: Heartbeat 3.0.6 only honours "
                                         f"'auth {active}' when it comes before the line of key {active}"))
    return keys


# ###################################################################### #
# Config: haresources                                                     #
# ###################################################################### #

IP_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(/|$)")


@dataclasses.dataclass
class IPResource:
    """A virtual IP address, handled by heartbeat.py itself (IPaddr/IPaddr2)."""
    spec: str                  # as written in haresources
    ip: str
    prefix: Optional[int] = None
    iface: Optional[str] = None
    broadcast: Optional[str] = None
    agent: str = "IPaddr"

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
        if not parts[1].isdigit() or not 1 <= int(parts[1]) <= 32:
            raise ValueError(f"netmask bits '{parts[1]}' in '{spec}' must be a number from 1 to 32")
        res.prefix = int(parts[1])
    rest = parts[2:]
    if rest and rest[0] and rest[0][0].isdigit() and len(rest) == 1:
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


def find_script(name: str, script_dirs: List[str]) -> Optional[str]:
    """Heartbeat's lookup: DIR/resource.d/NAME, then /etc/init.d/NAME, executable."""
    for directory in script_dirs:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def resolve_host(name: str) -> Optional[str]:
    """The IPv4 address of a host name (e.g. the tutorial's `sigma`), or None."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", name):
        return None
    try:
        return socket.gethostbyname(name)
    except (OSError, UnicodeError):
        return None


def parse_resource(token: str, script_dirs: List[str]):
    """One haresources word to an IPResource or a ScriptResource; ValueError if neither."""
    name, _, argtext = token.partition("::")
    args = argtext.split("::") if argtext else []
    if IP_RE.match(token):
        return parse_ip_spec(token)
    if name in ("IPaddr", "IPaddr2"):
        if len(args) != 1:
            raise ValueError(f"{name} takes one argument: {name}::a.b.c.d[/nn[/iface[/broadcast]]]")
        return parse_ip_spec(args[0], agent=name)
    if not re.fullmatch(r"[A-Za-z0-9_.+@-]+", name) or name.startswith("."):
        raise ValueError(f"'{name}' is not a resource script name")
    path = find_script(name, script_dirs)
    if path:
        return ScriptResource(token, name, args, path, lsb=os.path.dirname(path) != script_dirs[0])
    address = None if args else resolve_host(name)
    if address:
        res = parse_ip_spec(address)
        res.spec = token
        return res
    raise ValueError(f"Cannot locate resource script {name} (looked in {' and '.join(script_dirs)}; "
                     "it is not an IP address or a host name that resolves either)")


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
                resource = parse_resource(token, script_dirs)
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


# ###################################################################### #
# Config: the three files together                                        #
# ###################################################################### #

@dataclasses.dataclass
class Config:
    """The whole /etc/ha.d as one validated object."""
    config_dir: str
    node: str
    hacf: HaCf
    authkeys: AuthKeys
    groups: List[ResourceGroup]
    warnings: List[ConfigError]

    def script_dirs(self) -> List[str]:
        return default_script_dirs(self.config_dir)


def default_script_dirs(config_dir: str) -> List[str]:
    return [os.path.join(config_dir, "resource.d"), INITD_DIR]


def load_config(config_dir: str, node: Optional[str] = None,
                script_dirs: Optional[List[str]] = None) -> Config:
    """Parse ha.cf, authkeys and haresources; raise ConfigErrors with every problem in all three."""
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
    except ConfigErrors as err:
        errors.extend(err.errors)
    nodes = hacf.nodes if hacf else []
    try:
        groups = parse_haresources(os.path.join(config_dir, "haresources"), nodes,
                                   script_dirs or default_script_dirs(config_dir))
    except ConfigErrors as err:
        errors.extend(err.errors)
    me = local_node_name(config_dir, node)
    if hacf and hacf.nodes and me not in hacf.nodes:
        errors.append(ConfigError(hacf_path, 0, f"Current node [{me}] not in configuration! Cluster nodes "
                                  "are named by `uname -n` and must be declared with a 'node' directive "
                                  "(or give --node NAME)"))
    if errors:
        raise ConfigErrors(errors)
    return Config(config_dir, me, hacf, authkeys, groups, hacf.warnings + authkeys.warnings)


# ###################################################################### #
# Auth: the digests of authkeys' methods                                  #
# ###################################################################### #

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


def auth_digest(method: str, key: str, data: bytes) -> str:
    """The digest Heartbeat writes after the authkeys index."""
    if method == "crc":
        return crc_digest(data)
    return hmac.new(key.encode(), data, method).hexdigest()


def sign(keys: AuthKeys, data: bytes) -> str:
    """The `IDX DIGEST` token for data, with the key `auth N` names."""
    method, key = keys.methods[keys.active]
    return f"{keys.active} {auth_digest(method, key, data)}"


def verify(keys: AuthKeys, token: str, data: bytes) -> bool:
    """True when token is a valid `IDX DIGEST` for data under a configured index."""
    index, _, digest = token.partition(" ")
    if not index.isdigit() or int(index) not in keys.methods:
        return False
    method, key = keys.methods[int(index)]
    return hmac.compare_digest(auth_digest(method, key, data).encode(), digest.encode())


# ###################################################################### #
# Wire: Heartbeat's message format                                        #
# ###################################################################### #

FIELD_STRING, FIELD_BINARY = 0, 1
NETSTRING_START, NETSTRING_END = b"###\n", b"%%%\n"
CLASSIC_START, CLASSIC_END = b">>>\n", b"<<<\n"
MAX_DATAGRAM = 256 * 1024


class BadPacket(HAError):
    """A datagram we drop: it does not parse, or its authentication is wrong."""


class Message:
    """An ordered list of (name, type, value) fields, as Heartbeat keeps them."""

    def __init__(self, *pairs: Tuple[str, str]):
        self.fields: List[Tuple[str, int, bytes]] = []
        for name, value in pairs:
            self.add(name, value)

    def add(self, name: str, value, ftype: int = FIELD_STRING) -> "Message":
        raw = value if isinstance(value, bytes) else str(value).encode()
        self.fields.append((name, ftype, raw))
        return self

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        for fname, ftype, value in self.fields:
            if fname == name and ftype == FIELD_STRING:
                return value.decode("utf-8", "replace")
        return default

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
    out = []
    for name, ftype, value in fields:
        if ftype == FIELD_BINARY:
            out.append(b"(1)" + name.encode() + b"=" + base64.b64encode(value) + b"\n")
        else:
            out.append(name.encode() + b"=" + value + b"\n")
    return b"".join(out)


def encode_message(msg: Message, keys: AuthKeys, msgfmt: str = "classic") -> bytes:
    """A datagram as 3.0.6 sends it: netstring fields, inner auth (classic), auth trailer."""
    fields = msg.without("auth")
    if msgfmt == "classic":
        fields.append(("auth", FIELD_STRING, sign(keys, classic_text(fields)).encode()))
    body = [NETSTRING_START]
    for name, ftype, value in fields:
        item = b"(%d)" % ftype + name.encode() + b"=" + value
        body.append(b"%d:" % len(item) + item + b",")
    body.append(NETSTRING_END)
    data = b"".join(body)
    token = sign(keys, data).encode()
    return data + b"%d:" % len(token) + token + b","


def _peel_netstring(data: bytes, pos: int) -> Tuple[bytes, int]:
    """One `LEN:payload,` at pos; return (payload, next position)."""
    colon = data.find(b":", pos, pos + 11)
    if colon <= pos or not data[pos:colon].isdigit():
        raise BadPacket(f"bad netstring length at byte {pos}")
    end = colon + 1 + int(data[pos:colon])
    if end >= len(data) or data[end:end + 1] != b",":
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
    raise BadPacket("not a Heartbeat message (no ### or >>> header)")


def _decode_netstring(data: bytes, keys: AuthKeys) -> Message:
    msg, pos = Message(), len(NETSTRING_START)
    while not data.startswith(NETSTRING_END, pos):
        item, pos = _peel_netstring(data, pos)
        match = re.match(rb"\(([0-9])\)([^=]*)=", item)
        if not match or int(match.group(1)) not in (FIELD_STRING, FIELD_BINARY):
            raise BadPacket("bad field in message")
        msg.fields.append((match.group(2).decode("ascii", "replace"), int(match.group(1)),
                           item[match.end():]))
    signed_end = pos + len(NETSTRING_END)
    token, end = _peel_netstring(data, signed_end)
    if end != len(data):
        raise BadPacket("trailing bytes after the auth trailer")
    if not verify(keys, token.decode("ascii", "replace"), data[:signed_end]):
        raise BadPacket("authentication failed")
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
                msg.fields.append((name[3:].decode("ascii", "replace"), FIELD_BINARY,
                                   base64.b64decode(value, validate=True)))
            except ValueError:
                raise BadPacket("bad base64 in binary field") from None
        else:
            msg.fields.append((name.decode("ascii", "replace"), FIELD_STRING, value))
    token = msg.get("auth")
    if token is None or not verify(keys, token, classic_text(msg.without("auth"))):
        raise BadPacket("authentication failed")
    return msg


# ###################################################################### #
# keygen and check                                                        #
# ###################################################################### #

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
        raise HAError(f"unknown method {method}: use sha1, md5 or crc")
    if os.path.lexists(path) and not force:
        raise HAError(f"{path} already exists; use --force to replace it (every node needs the new key)")
    key = " " + secrets.token_hex(32) if AUTH_METHODS_NEEDING_KEY[method] else ""
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".authkeys.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, AUTHKEYS_TEMPLATE.format(method=method, key=key).encode())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if force:
            os.replace(temp, path)
        else:
            os.link(temp, path)      # fails if someone created path meanwhile
            os.unlink(temp)
    except OSError as err:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(temp):
            os.unlink(temp)
        raise HAError(f"cannot write {path}: {err.strerror}") from None


def describe_config(config: Config) -> str:
    """The short human summary `check` prints."""
    cf = config.hacf
    method = config.authkeys.method
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
        + ("" if method != "crc" else " (integrity only: anyone on the segment can forge packets)"),
        "  logging:   " + (", ".join(x for x in logs if x) or "none"),
        f"  groups:    {len(config.groups)}",
    ]
    for group in config.groups:
        lines.append(f"    {group.home} (line {group.lineno}):")
        lines.extend(f"      {r.spec}: {r.describe()}" for r in group.resources)
    return "\n".join(lines)


def missing_interfaces(config: Config) -> List[Tuple[Medium, str]]:
    """Media and addresses naming an interface this machine does not have."""
    present = {name for _, name in socket.if_nameindex()}
    found = [(m, m.iface) for m in config.hacf.media if m.iface not in present]
    for group in config.groups:
        found.extend((group, r.iface) for r in group.resources
                     if isinstance(r, IPResource) and r.iface and r.iface not in present)
    return found


# ###################################################################### #
# CLI and main()                                                          #
# ###################################################################### #

def cmd_check(args) -> int:
    """Validate the three files together and print what they describe."""
    config = load_config(args.config_dir, args.node)
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    for where, iface in missing_interfaces(config):
        path, lineno = ((config.hacf.path, where.lineno) if isinstance(where, Medium)
                        else (os.path.join(config.config_dir, "haresources"), where.lineno))
        print(f"{path}:{lineno}: warning: this machine has no interface {iface}; "
              "the daemon will not start here as configured", file=sys.stderr)
    print(describe_config(config))
    return EXIT_OK


def cmd_keygen(args) -> int:
    """Write DIR/authkeys with a fresh random key."""
    path = os.path.join(args.config_dir, "authkeys")
    write_authkeys(path, args.method, args.force)
    print(f"wrote {path} (mode 0600, method {args.method}, signing index 1); "
          "copy it to every node, e.g. with 'heartbeat.py setup PEER'")
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
    check = sub.add_parser("check", parents=[common], help="validate ha.cf, authkeys and haresources")
    check.set_defaults(func=cmd_check)
    keygen = sub.add_parser("keygen", parents=[common], help="write authkeys with a fresh random key")
    keygen.add_argument("--method", default="sha1", choices=sorted(AUTH_METHODS_NEEDING_KEY),
                        help="signing method (default sha1)")
    keygen.add_argument("--force", action="store_true", help="replace an existing authkeys")
    keygen.set_defaults(func=cmd_keygen)
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

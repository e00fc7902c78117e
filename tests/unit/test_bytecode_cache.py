"""The daemon's bytecode in the state dir (usable_bytecode, restart_from_bytecode): root runs it,
so it is used only when it holds the current source and only we could have written it."""
import importlib.util
import marshal
import os
import pathlib
import subprocess
import sys

import pytest

import heartbeat as hb
from paths import HEARTBEAT
from fakes import restart

ONE, TWO = "print('one')\n", "print('two')\n"     # same size: `cp -p` keeps size and mtime alike
HASH_CHECKED = (0b11).to_bytes(4, "little")


def header(source: str) -> bytes:
    return importlib.util.MAGIC_NUMBER + HASH_CHECKED + importlib.util.source_hash(source.encode())


def pyc(source: str, body: str) -> bytes:
    """Bytecode whose header vouches for source but whose code is body."""
    return header(source) + marshal.dumps(compile(body, "x.py", "exec"))


def runs(path) -> str:
    """What `python -I path` prints, as the restarted daemon would be run."""
    return subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, timeout=30,
                          check=True).stdout


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "sbin" / "heartbeat.py"
    path.parent.mkdir()
    path.write_text(ONE)
    return path


@pytest.fixture()
def state(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o755)
    return path


def test_bytecode_is_hash_checked_and_kept_while_the_source_is_the_same(source, state):
    cached = hb.usable_bytecode(str(source), str(state))
    assert cached == str(state / hb.BYTECODE_NAME)
    assert pathlib.Path(cached).read_bytes()[:16] == header(ONE)
    info = os.stat(cached)
    assert info.st_uid == os.geteuid() and not info.st_mode & 0o022
    assert runs(cached) == "one\n"
    assert hb.usable_bytecode(str(source), str(state)) == cached
    assert os.stat(cached).st_ino == info.st_ino                   # not written again
    assert sorted(os.listdir(state)) == [hb.BYTECODE_NAME]          # no temporary file left


def test_another_source_with_the_same_size_and_mtime_is_compiled_again(source, state, tmp_path):
    cached = hb.usable_bytecode(str(source), str(state))
    times = (os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns)
    other = tmp_path / "other.py"
    other.write_text(TWO)
    os.replace(other, source)
    os.utime(source, ns=times)
    assert hb.usable_bytecode(str(source), str(state)) == cached
    assert runs(cached) == "two\n"


@pytest.mark.parametrize("body", [b"", b"\xe3garbage", b"N", None], ids=["empty", "garbage", "not-code", "cut"])
def test_a_corrupt_body_is_compiled_again(source, state, body):
    cached = state / hb.BYTECODE_NAME
    good = pyc(ONE, ONE)
    cached.write_bytes(header(ONE) + body if body is not None else good[:len(good) // 2])
    assert hb.usable_bytecode(str(source), str(state)) == str(cached)
    assert runs(cached) == "one\n"


@pytest.mark.parametrize("spoil", ["group-writable", "other-writable", "other-owner", "symlink"])
def test_a_cache_someone_else_could_write_is_not_run(source, state, tmp_path, spoil):
    cached = state / hb.BYTECODE_NAME
    planted = pyc(ONE, "print('planted')")                        # a header that passes the hash check
    if spoil == "symlink":
        target = tmp_path / "elsewhere.pyc"
        target.write_bytes(planted)
        cached.symlink_to(target)
    else:
        cached.write_bytes(planted)
        if spoil == "other-owner":
            if os.geteuid() != 0:
                pytest.skip("chown needs root")
            os.chown(cached, 65534, 65534)
        else:
            os.chmod(cached, 0o664 if spoil == "group-writable" else 0o646)
    assert hb.usable_bytecode(str(source), str(state)) == str(cached)
    assert runs(cached) == "one\n"
    info = os.lstat(cached)
    assert info.st_uid == os.geteuid() and not info.st_mode & 0o022 and not cached.is_symlink()
    if spoil == "symlink":
        assert target.read_bytes() == planted                       # written through no link


@pytest.mark.parametrize("spoil", ["mode-777", "other-owner"])
def test_a_state_dir_someone_else_could_write_gets_no_bytecode(source, state, spoil):
    cached = state / hb.BYTECODE_NAME
    cached.write_bytes(pyc(ONE, ONE))
    if spoil == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("chown needs root")
        os.chown(state, 65534, 65534)
    else:
        os.chmod(state, 0o777)
    assert hb.usable_bytecode(str(source), str(state)) is None
    assert cached.read_bytes() == pyc(ONE, ONE)


def test_restart_execs_the_bytecode_or_returns(source, state, monkeypatch):
    calls = []
    monkeypatch.setattr(hb.os, "execv", lambda path, argv: calls.append(argv))
    monkeypatch.setattr(hb.sys, "argv", [str(source), "daemon", "--foreground"])
    hb.restart_from_bytecode(str(state))
    assert calls == [[sys.executable, "-I", str(state / hb.BYTECODE_NAME), "daemon", "--foreground"]]
    os.chmod(state, 0o777)
    hb.restart_from_bytecode(str(state))
    assert len(calls) == 1                                          # returned: runs from source


def restarted_version(copy_dir, state) -> str:
    """The version heartbeat.py prints after restart_from_bytecode(), in a process of its own."""
    result = restart(copy_dir, state)
    assert result.returncode == 0 and "still running from source" not in result.stdout, result
    return result.stdout.split()[1]


def test_heartbeat_py_restarts_past_a_corrupt_cache_and_a_cp_p_upgrade(tmp_path, state):
    copy_dir = tmp_path / "sbin"
    copy_dir.mkdir()
    installed = copy_dir / "heartbeat.py"
    text = pathlib.Path(HEARTBEAT).read_text()
    installed.write_text(text)
    assert restarted_version(copy_dir, state) == hb.__version__
    cached = state / hb.BYTECODE_NAME
    cached.write_bytes(cached.read_bytes()[:4096])                  # a disk that filled up, say
    assert restarted_version(copy_dir, state) == hb.__version__
    upgrade = tmp_path / "upgrade.py"
    new_version = "9" * len(hb.__version__)
    upgrade.write_text(text.replace(f'__version__ = "{hb.__version__}"', f'__version__ = "{new_version}"'))
    info = os.stat(installed)
    os.utime(upgrade, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(upgrade, installed)                                  # as `cp -p` leaves it
    assert os.stat(installed).st_size == info.st_size
    assert restarted_version(copy_dir, state) == new_version

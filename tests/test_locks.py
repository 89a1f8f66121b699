"""Tests of sasrec.locks (two processes contending, killed holders) and of the safe-write helpers of
sasrec.paths (command-line paths, up-front checks, atomic folders, leftovers of killed runs)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sasrec import locks, paths
from sasrec.errors import ConfigError, LockBusyError, SasrecError, StorageError

ROOT = Path(__file__).resolve().parents[1]

HOLDER_SCRIPT = """
import pathlib, sys, time
from sasrec import locks
target, ready, release = map(pathlib.Path, sys.argv[1:4])
with locks.locked(target, what="test target"):
    ready.write_text("held")
    while not release.exists():
        time.sleep(0.02)
"""

COUNTER_SCRIPT = """
import pathlib, sys, time
from sasrec import locks
counter, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
for _ in range(rounds):
    with locks.locked(counter, what="counter"):
        value = int(counter.read_text()) if counter.exists() else 0
        time.sleep(0.002)  # widen the read-modify-write window
        counter.write_text(str(value + 1))
"""


def _python(script: str, *args: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, cwd=ROOT)


def _wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"child exited early with {process.returncode}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def held(tmp_path: Path):
    """A child process holding the lock of tmp_path/target until ``release`` is created."""
    target, ready, release = tmp_path / "target", tmp_path / "ready", tmp_path / "release"
    child = _python(HOLDER_SCRIPT, target, ready, release)
    _wait_for(ready, child)
    yield target, child, release
    release.touch()
    if child.poll() is None:
        child.wait(timeout=30)


# ------------------------------------------------------------------------------------------ locking
def test_lock_records_its_holder_while_held(tmp_path: Path) -> None:
    target = tmp_path / "data" / "prepared"
    assert locks.lock_path(target) == tmp_path / "data" / ".prepared.lock"
    assert locks.current_holder(target) is None and not locks.is_locked(target)
    with locks.locked(target, what="prepared dataset") as holder:
        assert holder.pid == os.getpid() and holder.target == str(target)
        assert locks.holder_path(target).is_file()
        assert locks.current_holder(target) == holder and locks.is_locked(target)
        with locks.locked(target) as inner:  # reentrant in one thread: no self-deadlock
            assert inner == holder
        assert locks.is_locked(target)
        assert [lock.target for lock in locks.held_locks(tmp_path)] == [target]
    assert not locks.holder_path(target).exists()
    assert locks.current_holder(target) is None and locks.held_locks(tmp_path) == []


def test_second_process_fails_at_once_without_wait(held: tuple) -> None:
    target, child, _release = held
    with pytest.raises(LockBusyError) as caught:
        with locks.locked(target, what="test target", wait=False, hint="run again without --no-wait"):
            pass
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, SasrecError)
    assert message.startswith(f"test target {target} is being written by pid {child.pid} since ")
    assert "python -c" in message and message.endswith("; run again without --no-wait")
    found = locks.held_locks(target.parent)
    assert len(found) == 1 and found[0].holder is not None and found[0].holder.pid == child.pid
    assert f"pid {child.pid}" in found[0].describe()


def test_second_process_waits_with_one_line_naming_the_holder(
    held: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    target, child, release = held
    threading.Timer(0.5, release.touch).start()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="sasrec.locks"), locks.locked(target, what="test target"):
        waited = time.monotonic() - started
        assert child.wait(timeout=30) == 0
    assert waited >= 0.4
    lines = [r.getMessage() for r in caplog.records if r.name == "sasrec.locks"]
    assert len(lines) == 1
    assert lines[0].startswith(f"waiting for test target {target} (held by pid {child.pid} since ")


def test_wait_with_timeout_gives_up(held: tuple) -> None:
    target, child, _release = held
    started = time.monotonic()
    with pytest.raises(LockBusyError, match=rf"gave up after 0.3 s: .*pid {child.pid}"):
        with locks.locked(target, timeout=0.3):
            pass
    assert time.monotonic() - started >= 0.25


def test_lock_of_a_killed_process_does_not_block(held: tuple) -> None:
    target, child, _release = held
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    # its lock file and holder record are left behind ...
    assert locks.lock_path(target).exists() and locks.holder_path(target).exists()
    # ... but the operating system released the lock, and the dead holder is never named
    assert not locks.is_locked(target) and locks.current_holder(target) is None
    assert locks.held_locks(target.parent) == []
    with locks.locked(target, wait=False) as holder:
        assert holder.pid == os.getpid()
        assert locks.current_holder(target) == holder


def test_two_processes_never_write_at_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    children = [_python(COUNTER_SCRIPT, counter, 40) for _ in range(2)]
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    assert counter.read_text() == "80"  # no lost update


def test_unwritable_lock_folder_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match=r"cannot lock prepared dataset .*/file/x"):
        with locks.locked(blocker / "x", what="prepared dataset"):
            pass


# -------------------------------------------------------------------------------------------- paths
def test_user_path_resolves_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path / "project"))
    assert paths.user_path("data/x") == tmp_path / "data" / "x"
    assert paths.user_path("../y") == tmp_path.parent / "y"
    assert paths.user_path("~/z") == tmp_path / "home" / "z"
    assert paths.user_path("/abs/p") == Path("/abs/p")
    assert paths.resolve("data/x") == tmp_path / "project" / "data" / "x"  # notebooks: project root
    assert paths.resolve(paths.user_path("data/x")) == tmp_path / "data" / "x"


def test_check_writable_refuses_up_front_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    assert paths.check_writable(tmp_path / "new" / "deeper" / "out", "output", folder=True)
    assert paths.check_writable(tmp_path / "folder" / "f.json", "metrics file")
    cases = [
        (tmp_path / "folder", False, "is a folder, not a file"),
        (tmp_path / "file", True, "is a file, not a folder"),
        (tmp_path / "file" / "sub" / "out", True, "is a file; choose another path"),
    ]
    for path, folder, message in cases:
        with pytest.raises(ConfigError, match=message) as caught:
            paths.check_writable(path, "output", folder=folder)
        assert "\n" not in str(caught.value) and str(caught.value).startswith("output: ")


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders (tests/test_faults.py covers it)"
)
def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    locked_dir.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"folder .*/ro is not writable .* choose another path"):
            paths.check_writable(locked_dir / "a" / "b", "output", folder=True)
    finally:
        locked_dir.chmod(0o755)


def test_atomic_dir_replaces_a_folder_or_leaves_it_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_umask = os.umask(0o022)
    try:
        target = tmp_path / "out"
        for exchange in (True, False):  # atomic exchange, and the rename fallback of other systems
            if not exchange:
                monkeypatch.setattr(paths, "exchange_paths", lambda a, b: False)
            with paths.atomic_dir(target) as tmp:
                assert tmp.name.startswith(".out.") and (tmp.stat().st_mode & 0o777) == 0o755
                (tmp / "a.txt").write_text(f"v{exchange}")
            assert (target / "a.txt").read_text() == f"v{exchange}"
            assert (target.stat().st_mode & 0o777) == 0o755  # not mkdtemp's 0700
            with pytest.raises(RuntimeError), paths.atomic_dir(target) as tmp:
                (tmp / "a.txt").write_text("half")
                raise RuntimeError("killed halfway")
            assert (target / "a.txt").read_text() == f"v{exchange}"
            assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    finally:
        os.umask(old_umask)


def test_stale_temporaries_are_removed_and_an_interrupted_swap_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "small_matrix"
    left = [tmp_path / ".small_matrix.a1b2c3d4.tmp", tmp_path / ".small_matrix.zz99__xx.tmp"]
    left[0].mkdir()
    (left[0] / "events.parquet").write_text("half")
    left[1].write_text("half")
    trash = tmp_path / ".small_matrix.q1w2e3r4.old"
    (trash / "small_matrix").mkdir(parents=True)
    (trash / "small_matrix" / "meta.json").write_text("old complete state")
    others = [tmp_path / ".small_matrix_no_remapping.a1b2c3d4.tmp", tmp_path / ".small_matrix.lock"]
    for other in others:
        other.write_text("keep")
    assert paths.temporaries_beside(target) == sorted([*left, trash])
    assert paths.find_temporaries(tmp_path) == sorted([*left, trash, others[0]])
    assert paths.target_of_temporary(left[0]) == target
    with caplog.at_level(logging.INFO, logger="sasrec.paths"):
        removed = paths.remove_stale_temporaries(target)
    assert sorted(removed) == sorted([*left, trash])
    assert (target / "meta.json").read_text() == "old complete state"  # the old complete state is back
    assert all(other.exists() for other in others)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"restored {target}") for m in messages)
    assert any(m.startswith("removed 3 stale temporary file(s) left beside") for m in messages)


def test_full_disk_becomes_a_one_line_storage_error(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    with pytest.raises(StorageError) as caught, paths.atomic_path(target, "metrics file") as tmp:
        tmp.write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert message.startswith(
        f"could not write metrics file ({target}): the disk is full (ENOSPC); free space"
    )
    assert "\n" not in message and not target.exists() and list(tmp_path.iterdir()) == []
    other = OSError(errno.ENOENT, "gone")
    assert paths.as_storage_error(other, target) is None  # not the storage's fault: left as it is

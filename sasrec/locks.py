"""Locks that keep two processes from writing the same file or folder at once.

``with locked(target, what="prepared dataset small_matrix"):`` holds an operating-system lock
(:class:`filelock.FileLock`, ``flock`` on Unix) on ``.<name>.lock`` beside ``target`` for the duration
of the block, and records who holds it (pid, host, command line, start time) in ``.<name>.lock.json``.
A second process waits, after logging one line naming the holder, or with ``wait=False`` fails at once
with :class:`LockBusyError` naming the holder and how to wait instead.

The operating system releases the lock when its holder dies, even by SIGKILL, so a lock file left by a
killed process never blocks anyone. The holder record may then be stale; it is only shown while its
lock is actually held and its pid (on this host) is alive, and the next holder overwrites it.

Locks are reentrant within a thread: nested ``locked()`` calls on the same target in the same thread
do not deadlock. Other threads and processes wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock

from sasrec.errors import LockBusyError, StorageError
from sasrec.paths import atomic_write_text

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
HOLDER_SUFFIX = ".lock.json"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: process id, host, command line and start time (ISO 8601, local time)."""

    pid: int
    host: str
    command: str
    started: str
    target: str

    def describe(self) -> str:
        """``pid 123 on host since 2025-01-02T10:11:12+0100 (python -m sasrec prepare small_matrix)``."""
        host = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{host} since {self.started} ({self.command})"

    def is_alive(self) -> bool | None:
        """Whether the holder process runs (None when it runs on another host and cannot be checked)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return None
        return True


@dataclass(frozen=True)
class HeldLock:
    """A lock found held by :func:`held_locks`: the protected target, its lock file and its holder."""

    target: Path
    lock_file: Path
    holder: LockHolder | None

    def describe(self) -> str:
        """One line: the target and who holds it."""
        who = self.holder.describe() if self.holder else "a process that left no record"
        return f"{self.target} is locked by {who}"


# ------------------------------------------------------------------------------------------- naming
def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` in the same folder."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def holder_path(target: str | os.PathLike[str]) -> Path:
    """The holder record of ``target``'s lock: ``.<name>.lock.json`` in the same folder."""
    target = Path(target)
    return target.parent / f".{target.name}{HOLDER_SUFFIX}"


def _target_of_lock(lock_file: Path) -> Path | None:
    name = lock_file.name
    if not (name.startswith(".") and name.endswith(LOCK_SUFFIX)) or len(name) <= len(LOCK_SUFFIX) + 1:
        return None
    return lock_file.parent / name[1 : -len(LOCK_SUFFIX)]


# ------------------------------------------------------------------------------------- holder record
def _command_line() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if argv[0] == "__main__.py":
        argv[0] = "python -m sasrec"
    elif argv[0] in ("-c", ""):
        argv[0] = "python -c"
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def _write_holder(target: Path) -> LockHolder:
    holder = LockHolder(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=_command_line(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        target=str(target),
    )
    record = holder_path(target)
    try:
        atomic_write_text(record, json.dumps(asdict(holder)))
    except (OSError, StorageError) as exc:  # the record only improves messages: never fail a write for it
        logger.debug("could not record the holder of %s: %s", target, exc)
    return holder


def _read_holder(target: Path) -> LockHolder | None:
    """The recorded holder, or None when there is no usable record or its process is dead."""
    try:
        raw = json.loads(holder_path(target).read_text(encoding="utf-8"))
        holder = LockHolder(**{key: raw[key] for key in ("pid", "host", "command", "started", "target")})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return None if holder.is_alive() is False else holder


# --------------------------------------------------------------------------------------- reentrancy
@dataclass
class _Held:
    thread: int
    depth: int
    lock: filelock.BaseFileLock
    holder: LockHolder


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _key(target: Path) -> str:
    return os.path.realpath(lock_path(target))


def _held_here(target: Path) -> _Held | None:
    with _HELD_GUARD:
        entry = _HELD.get(_key(target))
    return entry if entry is not None and entry.thread == threading.get_ident() else None


# ------------------------------------------------------------------------------------------ locking
def _busy_message(target: Path, what: str, hint: str | None) -> str:
    holder = _read_holder(target)
    who = holder.describe() if holder else "another process"
    remedy = hint or "wait for it to finish, or run again without wait=False to wait for it"
    return f"{what} {target} is being written by {who}; {remedy}"


@contextlib.contextmanager
def locked(
    target: str | os.PathLike[str],
    *,
    what: str | None = None,
    wait: bool = True,
    timeout: float | None = None,
    hint: str | None = None,
) -> Iterator[LockHolder]:
    """Hold ``target``'s lock for the block; yield this process's :class:`LockHolder` record.

    Args:
        target: the file or folder to protect (it need not exist; its parent folder is created).
        what: what it is, for messages (default ``"file"``).
        wait: when another process holds the lock, log one line ``waiting for ...`` and wait; when False,
            raise :class:`LockBusyError` at once.
        timeout: with ``wait``, seconds to wait before raising :class:`LockBusyError` (None: no limit).
        hint: how to wait instead, appended to the :class:`LockBusyError` message (for a command line:
            ``"run again without --no-wait to wait for it"``).

    Raises:
        LockBusyError: the lock is held elsewhere and ``wait`` is False or ``timeout`` expired; one line
            naming the target, the holder and ``hint``.
        StorageError: the lock file cannot be created (read-only or missing folder).
    """
    target = Path(target)
    what = what or "file"
    nested = _held_here(target)
    if nested is not None:
        nested.depth += 1
        try:
            yield nested.holder
        finally:
            nested.depth -= 1
        return
    path = lock_path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(path)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            if not wait:
                raise LockBusyError(_busy_message(target, what, hint)) from None
            holder = _read_holder(target)
            logger.warning(
                "waiting for %s %s (held by %s)",
                what,
                target,
                holder.describe() if holder else "another process",
            )
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except filelock.Timeout:
                raise LockBusyError(
                    f"gave up after {timeout:g} s: " + _busy_message(target, what, hint)
                ) from None
    except OSError as exc:
        if isinstance(exc, filelock.Timeout | StorageError):
            raise
        raise StorageError(
            f"cannot lock {what} {target}: {exc.strerror or exc} creating {path}; make {path.parent} "
            "writable or choose another path"
        ) from exc
    try:
        holder = _write_holder(target)
        entry = _Held(thread=threading.get_ident(), depth=1, lock=lock, holder=holder)
        with _HELD_GUARD:
            _HELD[_key(target)] = entry
        try:
            yield holder
        finally:
            with _HELD_GUARD:
                _HELD.pop(_key(target), None)
            with contextlib.suppress(OSError):
                holder_path(target).unlink()
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------- queries
def current_holder(target: str | os.PathLike[str]) -> LockHolder | None:
    """Who holds ``target``'s lock now, or None when nobody does.

    Probes the lock with one non-blocking attempt (released at once). When the lock is held but its
    holder left no usable record, returns a record with pid 0 and command ``"unknown"``.
    """
    target = Path(target)
    with _HELD_GUARD:
        mine = _HELD.get(_key(target))
    if mine is not None:
        return mine.holder
    if not is_locked(target):
        return None
    return _read_holder(target) or LockHolder(
        pid=0, host=socket.gethostname(), command="unknown", started="?", target=str(target)
    )


def is_locked(target: str | os.PathLike[str]) -> bool:
    """Whether some process (this one included) holds ``target``'s lock now."""
    target = Path(target)
    with _HELD_GUARD:
        if _key(target) in _HELD:
            return True
    path = lock_path(target)
    if not path.exists():
        return False
    probe = filelock.FileLock(path)
    try:
        probe.acquire(blocking=False)
    except filelock.Timeout:
        return True
    except OSError:
        return False
    probe.release()
    return False


def held_locks(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[HeldLock]:
    """The locks held now under ``folder`` (lock files ``.<name>.lock``), with their holders."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f"**/.*{LOCK_SUFFIX}" if recursive else f".*{LOCK_SUFFIX}"
    found = []
    for lock_file in sorted(folder.glob(pattern)):
        target = _target_of_lock(lock_file)
        if target is None or not lock_file.is_file():
            continue
        holder = current_holder(target)
        if holder is not None:
            found.append(HeldLock(target=target, lock_file=lock_file, holder=holder if holder.pid else None))
    return found

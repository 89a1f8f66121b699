"""Paths: the project root, command-line paths, up-front write checks, atomic writes and their leftovers.

Every path named in notebooks and parameter files is resolved from the project root (:func:`resolve`),
because JupyterLab, papermill and nbval start kernels in different working directories; a path typed on
the command line resolves from the current directory (:func:`user_path`). ``SASREC_ROOT`` overrides the
root (used by tests).

Writers never leave anything half-written under a final name: a file is written to a hidden temporary
``.<name>.XXXXXXXX.tmp`` beside it and renamed (:func:`atomic_path`); a folder is built in such a
temporary folder and swapped into place (:func:`atomic_dir`). A process killed meanwhile leaves only the
hidden temporary; :func:`remove_stale_temporaries`, called by the next writer while it holds the target's
lock (:mod:`sasrec.locks`), removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sasrec.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

#: Name of a temporary made by :func:`atomic_path` / :func:`atomic_dir`: ``.<target name>.<8 chars>.tmp``
#: (or ``.old`` for the previous folder during a swap); the 8 characters are tempfile's random part.
TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<random>[a-z0-9_]{8})\.(?P<kind>tmp|old)$")
#: errno values that mean "the storage refused": reported as :class:`StorageError` with a remedy.
_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file is too large for the file system",
}


# ------------------------------------------------------------------------------------------ locations
def project_root() -> Path:
    """Return the project root: ``$SASREC_ROOT`` or the folder holding pyproject.toml above this package."""
    env = os.environ.get("SASREC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "sasrec").is_dir():
            return candidate
    return Path.cwd().resolve()


def data_dir() -> Path:
    """Ignored folder holding raw, simulated and processed data."""
    return project_root() / "data"


def raw_dir() -> Path:
    """Where ``make data`` puts the official KuaiRec archive's files."""
    return data_dir() / "raw"


def simulated_dir() -> Path:
    """Where ``make simulate`` writes the KuaiRec-shaped simulated files (the embedded default)."""
    return data_dir() / "simulated"


def processed_dir() -> Path:
    """Parsed-table cache and prepared datasets."""
    return data_dir() / "processed"


def models_dir() -> Path:
    """Checkpoints and training logs (ignored)."""
    return project_root() / "models"


def reports_dir() -> Path:
    """Regenerated report: figures, metrics, executed notebooks, HTML and README."""
    return project_root() / "reports"


def shared_sample_dir() -> Path:
    """The real KuaiRec sample files shipped beside the checkout (``../shared``), possibly absent."""
    return project_root().parent / "shared" / "data" / "kuairec_sample"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve a relative path against the project root (absolute paths are returned unchanged).

    For paths named in notebooks and parameter files; a path typed on the command line goes through
    :func:`user_path` instead.
    """
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def user_path(path: str | os.PathLike[str]) -> Path:
    """A path typed on the command line: ``~`` expanded, a relative path taken from the current directory.

    Returns an absolute path (``..`` collapsed, symbolic links kept), so that later calls of
    :func:`resolve` leave it unchanged.
    """
    return Path(os.path.abspath(Path(path).expanduser()))


# --------------------------------------------------------------------------------- up-front checks
def check_writable(path: str | os.PathLike[str], what: str, *, folder: bool = False) -> Path:
    """Check, before any long work, that ``path`` can be written; return it.

    A file target must not be a folder, a folder target not a file; the nearest existing ancestor of its
    parent must be a writable folder (missing folders are created later); an existing target folder must
    be writable too (its old content is removed when replaced). Since permission bits do not tell
    everything (root, ``/proc``, read-only mounts), a hidden temporary is then created and removed where
    the writer will create its first file or folder.

    Args:
        path: the file or folder about to be written.
        what: what it is, for the message (``"prepared dataset small_matrix"``).
        folder: whether ``path`` is a folder.

    Raises:
        ConfigError: one line naming ``what``, the path, the problem and the remedy.
    """
    target = Path(path)
    if target.exists():
        if folder and not target.is_dir():
            raise ConfigError(f"{what}: {target} is a file, not a folder; remove it or choose another path")
        if not folder and target.is_dir():
            raise ConfigError(f"{what}: {target} is a folder, not a file; remove it or choose another path")
        if folder and not os.access(target, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{what}: folder {target} is not writable; make it writable (chmod u+w) or choose another path"
            )
    probe = target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"{what}: cannot create folder {target.parent}: {probe} is a file; choose another path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        created = "" if probe == target.parent else f" (needed to create {target.parent})"
        raise ConfigError(
            f"{what}: cannot write {target}: folder {probe} is not writable{created}; make it writable "
            "(chmod u+w) or choose another path"
        )
    # Permission bits do not tell everything (root, /proc, read-only mounts): try what the writer will do.
    _try_creating(probe, target, what)
    if folder and target.is_dir():
        _try_creating(target, target / "write-check", what)
    return target


def _try_creating(folder: Path, target: Path, what: str) -> None:
    """Create and remove what writing ``target`` starts with in ``folder`` (its nearest existing ancestor).

    The probe is named as a temporary of ``target`` (or of the first folder to create), so that a process
    killed in between leaves a leftover that :func:`remove_stale_temporaries` recognises.

    Raises:
        ConfigError: ``folder`` refuses new entries (one line naming ``what``, the path and the reason).
    """
    try:
        if folder == target.parent:
            fd, made = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
            os.close(fd)
        else:
            made = tempfile.mkdtemp(
                prefix=f".{target.relative_to(folder).parts[0]}.", suffix=".tmp", dir=folder
            )
    except OSError as exc:
        raise ConfigError(f"{what}: {_creation_problem(folder, target, exc)}; choose another path") from None
    with contextlib.suppress(OSError):  # already gone: another writer's cleanup removed it
        if os.path.isdir(made):
            os.rmdir(made)
        else:
            os.unlink(made)


def _creation_problem(folder: Path, target: Path, exc: OSError) -> str:
    """Why ``target`` cannot be created under its nearest existing ancestor ``folder``, in words."""
    reason = _STORAGE_ERRNOS.get(exc.errno or 0) or exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0)
    reason = f"{reason} ({code})" if code else reason
    if folder == target.parent:
        return f"cannot write {target}: folder {folder} does not accept new files: {reason}"
    return f"cannot create folder {target.parent}: {folder} does not accept new folders: {reason}"


def _parent_problem(target: Path, exc: OSError) -> str:
    """Why the parent folder of ``target`` cannot be created (a file in the way, or a folder refusing)."""
    for ancestor in (target.parent, *target.parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"cannot create folder {target.parent}: {ancestor} is a file"
            return _creation_problem(ancestor, target, exc)
    return f"cannot create folder {target.parent}: {exc.strerror or exc}"


def free_disk_gib(path: str | os.PathLike[str]) -> tuple[Path, float]:
    """Free space (GiB) on the disk that holds ``path``: its nearest existing folder, and the space there."""
    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor or "/"))
    return folder, shutil.disk_usage(folder).free / 2**30


def as_storage_error(
    exc: OSError, target: str | os.PathLike[str], what: str | None = None
) -> StorageError | None:
    """A one-line :class:`StorageError` for an OSError caused by the storage (full, read-only, denied).

    Returns None for other errors (they are not the storage's fault and keep their own type).
    """
    if isinstance(exc, StorageError):
        return exc
    reason = _STORAGE_ERRNOS.get(exc.errno or 0)
    if reason is None:
        return None
    target = Path(target)
    label = f"{what} ({target})" if what else str(target)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        folder, free = free_disk_gib(target.parent)
        remedy = f"free space on the disk holding {folder} ({free:.1f} GiB free now) and run again"
    else:
        remedy = f"make {target.parent} writable or choose another path"
    error = StorageError(
        f"could not write {label}: {reason} ({errno.errorcode.get(exc.errno, exc.errno)}); {remedy}"
    )
    error.errno = exc.errno
    return error


# ------------------------------------------------------------------------------------ atomic writes
@contextlib.contextmanager
def _creating(target: Path, what: str | None) -> Iterator[None]:
    """Turn a parent folder that cannot be created (a file in the way, ``/proc``) into a StorageError.

    Only the creation of the parent and of the temporary is wrapped: an error of the caller's own block
    keeps its type.
    """
    try:
        yield
    except (FileNotFoundError, NotADirectoryError, FileExistsError) as exc:
        label = f"{what} ({target})" if what else str(target)
        error = StorageError(f"could not write {label}: {_parent_problem(target, exc)}; choose another path")
        error.errno = exc.errno
        raise error from exc


def _umask() -> int:
    """The process umask (read from /proc where possible, which does not change it even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0)
    os.umask(current)
    return current


def make_temp_dir(target: str | os.PathLike[str], suffix: str = ".tmp") -> Path:
    """Create an empty hidden folder ``.<name>.XXXXXXXX<suffix>`` beside ``target`` and return it.

    Unlike :func:`tempfile.mkdtemp` (mode 0700), the folder gets the mode a plain ``mkdir`` would give.
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Nothing half-written is ever left under the final name. The file gets the mode a plain ``open()``
    would give. A full disk, a read-only folder or a denied permission raise :class:`StorageError` (an
    OSError) in one line naming ``what`` and the remedy.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        with _creating(target, what):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the mode a plain open() would
        os.replace(tmp, target)
    except StorageError:
        raise
    except OSError as exc:
        storage = as_storage_error(exc, target, what)
        if storage is None:
            raise
        raise storage from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def atomic_write_text(target: str | os.PathLike[str], text: str, what: str | None = None) -> Path:
    """Write ``text`` to ``target`` atomically and return the target path."""
    with atomic_path(target, what) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> object | None:
    """glibc's ``renameat2`` (Linux), or None where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def exchange_paths(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Atomically swap two existing paths of one folder (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, changing nothing, where the platform or file system cannot exchange.
    """
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(second))


def replace_dir(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move folder ``source`` onto ``target`` (same parent), replacing any previous ``target``.

    ``target`` always names a complete folder: the swap is atomic where the file system can exchange two
    names; elsewhere the old folder is first renamed to a hidden ``.<name>.XXXXXXXX.old`` folder, which
    :func:`remove_stale_temporaries` puts back if the process dies before the new folder is in place.
    """
    source, target = Path(source), Path(target)
    if not target.exists():
        os.replace(source, target)
        return
    if exchange_paths(source, target):
        shutil.rmtree(source, ignore_errors=True)  # now the previous content
        return
    trash = make_temp_dir(target, ".old")
    os.replace(target, trash / target.name)
    try:
        os.replace(source, target)
    except OSError:
        os.replace(trash / target.name, target)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], what: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; it replaces ``target`` only if the block succeeds.

    The temporary folder is hidden (``.<name>.XXXXXXXX.tmp``) and has a plain ``mkdir`` mode; on failure
    it is removed and a previous ``target`` is untouched. Storage failures raise :class:`StorageError`.
    Hold the target's lock (:func:`sasrec.locks.locked`) so that two writers do not race.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        with _creating(target, what):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = make_temp_dir(target)
        yield tmp
        replace_dir(tmp, target)
    except StorageError:
        raise
    except OSError as exc:
        storage = as_storage_error(exc, target, what)
        if storage is None:
            raise
        raise storage from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ leftovers
def temporaries_beside(target: str | os.PathLike[str]) -> list[Path]:
    """Hidden temporaries of ``target`` left by :func:`atomic_path` / :func:`atomic_dir` (``.tmp``/``.old``)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = []
    for entry in target.parent.iterdir():
        match = TEMPORARY_NAME.match(entry.name)
        if match and match.group("target") == target.name:
            found.append(entry)
    return sorted(found)


def find_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Every temporary (``.<name>.XXXXXXXX.tmp`` / ``.old``) under ``folder``, not descending into them."""
    folder = Path(folder)
    found: list[Path] = []
    if not folder.is_dir():
        return found
    for current, subfolders, files in os.walk(folder):
        for name in [*subfolders, *files]:
            if TEMPORARY_NAME.match(name):
                found.append(Path(current) / name)
        subfolders[:] = [name for name in subfolders if not TEMPORARY_NAME.match(name)]
    return sorted(found)


def target_of_temporary(path: str | os.PathLike[str]) -> Path | None:
    """The target a temporary was written for (``a/.x.parquet.k2j3h4g5.tmp`` -> ``a/x.parquet``)."""
    path = Path(path)
    match = TEMPORARY_NAME.match(path.name)
    return path.parent / match.group("target") if match else None


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries beside ``target`` and return them; call it while holding ``target``'s lock.

    Under the lock no other writer is working on ``target``, so every temporary is the leftover of a
    process that died. If ``target`` is missing but a ``.old`` folder holds it (a process died in the
    middle of a non-atomic swap), the old folder is put back first, so a complete state always remains.
    """
    target = Path(target)
    leftovers = temporaries_beside(target)
    for entry in leftovers:
        kept = entry / target.name
        if entry.name.endswith(".old") and not target.exists() and kept.is_dir():
            os.replace(kept, target)
            logger.warning("restored %s from an interrupted replacement (%s)", target, entry.name)
    for entry in leftovers:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if leftovers:
        logger.info(
            "removed %d stale temporary file(s) left beside %s by an interrupted run: %s",
            len(leftovers),
            target,
            ", ".join(entry.name for entry in leftovers),
        )
    return leftovers

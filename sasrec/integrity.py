"""Checksums of files, folders and JSON documents, to tell a complete artifact from a damaged one.

Three tools:

* files and folders: :func:`sha256_file` (streamed), :func:`file_record` (size and sha256),
  :func:`manifest` / :func:`check_manifest` / :func:`verify_manifest` for a set of files in a folder,
  and :func:`sha256_tree` for one digest of a whole folder;
* sealed JSON: :func:`seal` adds an ``"integrity"`` entry holding the sha256 of the canonical JSON of
  the rest of the document and a description of what made it (``made_by``: source fingerprint,
  parameters, versions) with its :func:`fingerprint`; :func:`verify_sealed` checks it;
  :func:`dumps_sealed` / :func:`read_sealed_json` write and read such documents;
* :class:`sasrec.errors.IntegrityError` for every mismatch, in one line naming the file and what differs.

Typical use: write artifacts, record ``manifest(folder, names)`` in a sealed meta.json (written last,
atomically); on reading, :func:`read_sealed_json` then :func:`verify_manifest` (or hash the bytes as they
are read with :func:`sha256_bytes`) and rebuild on :class:`IntegrityError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sasrec.errors import IntegrityError, UnsealedError

ALGORITHM = "sha256"
INTEGRITY_KEY = "integrity"
_CHUNK = 1 << 20


# ------------------------------------------------------------------------------------ files, folders
def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of a byte string (to check a file's bytes already read into memory)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file."""
    return {"bytes": os.path.getsize(path), ALGORITHM: sha256_file(path)}


def _files_under(folder: Path) -> list[str]:
    names = []
    for current, subfolders, files in os.walk(folder):
        subfolders.sort()
        for name in sorted(files):
            names.append((Path(current) / name).relative_to(folder).as_posix())
    return names


def manifest(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Size and sha256 of files of ``folder``: ``{relative name: file_record}``.

    Args:
        folder: the folder.
        names: relative names (``/``-separated) to record; default every file below ``folder``.
    """
    folder = Path(folder)
    selected = _files_under(folder) if names is None else list(names)
    return {name: file_record(folder / name) for name in selected}


def sha256_tree(folder: str | os.PathLike[str]) -> str:
    """One sha256 over every file below ``folder`` (relative names, sizes and contents, in name order)."""
    digest = hashlib.sha256()
    for name, record in manifest(folder).items():
        digest.update(f"{name}\0{record['bytes']}\0{record[ALGORITHM]}\n".encode())
    return digest.hexdigest()


def check_record(
    path: str | os.PathLike[str], record: Mapping[str, Any], *, hash_contents: bool = True
) -> str | None:
    """What is wrong with ``path`` against its ``record`` (None when it matches).

    Size first (cheap; catches truncation), then the sha256 unless ``hash_contents`` is False.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != record.get("bytes"):
        return f"{path.name} has {size:,} bytes instead of {record.get('bytes'):,} (truncated or replaced)"
    if hash_contents and sha256_file(path) != record.get(ALGORITHM):
        return f"{path.name} does not match its sha256 (damaged)"
    return None


def check_manifest(
    folder: str | os.PathLike[str], recorded: Mapping[str, Mapping[str, Any]], *, hash_contents: bool = True
) -> list[str]:
    """Every problem of ``folder`` against a :func:`manifest` (missing, wrong size, wrong sha256)."""
    folder = Path(folder)
    problems = [
        check_record(folder / name, record, hash_contents=hash_contents) for name, record in recorded.items()
    ]
    return [problem for problem in problems if problem is not None]


def verify_manifest(
    folder: str | os.PathLike[str], recorded: Mapping[str, Mapping[str, Any]], what: str | None = None
) -> None:
    """Raise :class:`IntegrityError` naming every file of ``folder`` that differs from ``recorded``."""
    problems = check_manifest(folder, recorded)
    if problems:
        raise IntegrityError(f"{what or folder}: {'; '.join(problems)}")


# ---------------------------------------------------------------------------------------- sealed JSON
def _plain(value: Any, default: Callable[[Any], Any] | None) -> Any:
    """``value`` as JSON would give it back (tuples to lists, numpy scalars through ``default``)."""
    return json.loads(json.dumps(value, default=default))


def canonical_json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Canonical JSON text: sorted keys, no spaces, UTF-8 kept; the text a checksum is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)


def fingerprint(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Short (16 hex digits) sha256 of the canonical JSON of ``value``: equal values, equal fingerprints."""
    return hashlib.sha256(canonical_json(_plain(value, default)).encode()).hexdigest()[:16]


def _content_digest(content: Mapping[str, Any], made_by: Any) -> str:
    text = canonical_json({"content": content, "made_by": made_by})
    return hashlib.sha256(text.encode()).hexdigest()


def seal(
    payload: Mapping[str, Any],
    made_by: Mapping[str, Any] | None = None,
    *,
    default: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``payload`` with an ``"integrity"`` entry that :func:`verify_sealed` checks.

    The entry holds ``algorithm``, ``made_by`` (what produced the payload: source fingerprints,
    parameters, versions), ``fingerprint`` (:func:`fingerprint` of ``made_by``) and ``sha256``, computed
    over the canonical JSON of the rest of the payload together with ``made_by``. Values are first
    normalised as JSON would give them back (``default`` converts what json cannot, e.g. numpy scalars).
    """
    content = _plain({k: v for k, v in payload.items() if k != INTEGRITY_KEY}, default)
    origin = _plain(dict(made_by or {}), default)
    return {
        **content,
        INTEGRITY_KEY: {
            "algorithm": ALGORITHM,
            "made_by": origin,
            "fingerprint": fingerprint(origin),
            ALGORITHM: _content_digest(content, origin),
        },
    }


def is_sealed(payload: Any) -> bool:
    """Whether ``payload`` is a mapping with an ``"integrity"`` entry."""
    return isinstance(payload, Mapping) and isinstance(payload.get(INTEGRITY_KEY), Mapping)


def verify_sealed(payload: Any, what: str = "document") -> dict[str, Any]:
    """Check a document sealed by :func:`seal` and return it (integrity entry included).

    Raises:
        IntegrityError: not a sealed mapping, or its content or ``made_by`` differ from the checksum.
    """
    if not is_sealed(payload):
        raise UnsealedError(f"{what} carries no integrity entry (written by an older version or by hand)")
    entry = payload[INTEGRITY_KEY]
    if entry.get("algorithm") != ALGORITHM:
        raise IntegrityError(f"{what}: unknown integrity algorithm {entry.get('algorithm')!r}")
    content = {k: v for k, v in payload.items() if k != INTEGRITY_KEY}
    if _content_digest(content, entry.get("made_by")) != entry.get(ALGORITHM):
        raise IntegrityError(f"{what} does not match its checksum (edited or damaged)")
    return dict(payload)


def made_by(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The ``made_by`` description of a sealed document ({} when unsealed)."""
    entry = payload.get(INTEGRITY_KEY) if isinstance(payload, Mapping) else None
    return dict(entry.get("made_by") or {}) if isinstance(entry, Mapping) else {}


def dumps_sealed(
    payload: Mapping[str, Any],
    made_by: Mapping[str, Any] | None = None,
    *,
    default: Callable[[Any], Any] | None = None,
    indent: int | None = 2,
) -> str:
    """JSON text of the sealed ``payload`` (ends with a newline); write it with an atomic write."""
    return json.dumps(seal(payload, made_by, default=default), indent=indent, ensure_ascii=False) + "\n"


def loads_sealed(text: str | bytes, what: str = "document") -> dict[str, Any]:
    """Parse and verify a sealed JSON document (:class:`IntegrityError` when unparsable or damaged)."""
    try:
        payload = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{what} is not valid JSON ({exc}); it is damaged or was cut short") from None
    return verify_sealed(payload, what)


def read_sealed_json(path: str | os.PathLike[str], what: str | None = None) -> dict[str, Any]:
    """Read and verify a sealed JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        IntegrityError: unreadable JSON, no integrity entry, or a checksum mismatch (names the file).
    """
    path = Path(path)
    return loads_sealed(path.read_bytes(), what or str(path))

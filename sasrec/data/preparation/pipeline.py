"""Prepare a dataset from its source, or reuse its artifacts when they are still valid and intact.

The prepared folder is held by a lock (:mod:`sasrec.locks`) while it is checked, read or written: a
second writer waits, after one logged line naming the holder. Temporaries left by a killed run are
removed under that lock. Reused artifacts are verified against the checksums in meta.json; a damaged
or missing artifact is rebuilt from the source (cheap and deterministic) with one logged warning, and
when the source is gone too, the error names the commands that rebuild it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sasrec import locks, paths
from sasrec.data.contracts import (
    PreparedData,
)
from sasrec.data.preparation.artifacts import _read_artifacts, _write_artifacts, read_meta
from sasrec.data.preparation.core import prepare_frame
from sasrec.data.preparation.params import DATASETS, NO_REMAPPING_SUFFIX, PREPARE_VERSION, _normalise_params
from sasrec.data.preparation.sources import _default_out_dir, _fingerprint, _source
from sasrec.data.preparation.splits import check_split_usable
from sasrec.data.preparation.text import read_sasrec_text
from sasrec.errors import IntegrityError, MissingDataError, UnsealedError

logger = logging.getLogger(__name__)

_LOCK_HINT = "wait for it to finish and run again, or let the command wait for it (leave out --no-wait)"


def _what(name: str) -> str:
    return f"prepared dataset {name}"


@contextlib.contextmanager
def _guard(target: Path, name: str, wait: bool) -> Iterator[None]:
    """Hold the folder's lock and tidy leftovers of killed runs; no lock where the parent is read-only
    (nobody can write there, so readers need none)."""
    parent = next((p for p in (target.parent, *target.parents) if p.exists()), target.parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        yield
        return
    with locks.locked(target, what=_what(name), wait=wait, hint=_LOCK_HINT):
        paths.remove_stale_temporaries(target)
        yield


def _target(source: dict[str, Any], out_dir: Path | None) -> Path:
    if out_dir is not None:
        return paths.resolve(out_dir)
    return _default_out_dir(source["name"], source["data_source"])


def prepare(
    dataset: str,
    *,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    write_text: bool = True,
    progress: bool | None = None,
    wait: bool = True,
    split: str | None = None,
    **params: Any,
) -> PreparedData:
    """Prepare ``dataset`` from its source file, write the artifacts and return the result.

    Args:
        dataset: ``small_matrix``, ``big_matrix``, either with ``_no_remapping`` (original ids), or the
            path of a SASRec text file.
        data_dir: folder of the KuaiRec matrices (default: :func:`default_data_dir`).
        out_dir: artifact folder (default ``data/processed/<name>``).
        write_text: also write the original project's ``<name>.txt`` and ``<name>_no_remapping.txt``.
        progress: show a progress bar (default: ``SASREC_PROGRESS``).
        wait: when another process is writing the folder, wait for it (one logged line); when False,
            raise :class:`sasrec.errors.LockBusyError` at once.
        split: when given, refuse (before writing) unless this split gives validation and test events.
        **params: :func:`prepare_frame` parameters.

    Raises:
        ConfigError: the output folder cannot be written, or ``split`` would be empty (nothing written).
        StorageError: the disk filled up or the folder became read-only while writing (the previous
            complete folder, if any, is kept).
    """
    source = _source(dataset, data_dir, params.pop("remap", None))
    params = _normalise_params(params)
    target = _target(source, out_dir)
    paths.check_writable(target, _what(source["name"]), folder=True)
    with locks.locked(target, what=_what(source["name"]), wait=wait, hint=_LOCK_HINT):
        paths.remove_stale_temporaries(target)
        return _prepare_locked(source, params, target, write_text=write_text, progress=progress, split=split)


def _prepare_locked(
    source: dict[str, Any],
    params: dict[str, Any],
    target: Path,
    *,
    write_text: bool,
    progress: bool | None,
    split: str | None,
) -> PreparedData:
    """Read, build sequences and splits, write; the caller holds the folder's lock."""
    from tqdm import tqdm

    from sasrec.progress import progress_enabled

    started = time.perf_counter()
    bar = tqdm(total=4, desc=f"prepare {source['name']}", disable=not progress_enabled(progress), leave=False)
    try:
        bar.set_postfix_str("read")
        fingerprint = _fingerprint(source["path"])  # before reading: a later change makes it stale
        if source["data_source"] == "text":
            frame = read_sasrec_text(source["path"])
            cleaning: dict[str, Any] | None = {"rows": len(frame), "format": "sasrec text"}
        else:
            from sasrec.data import kuairec

            frame, report = kuairec.load_interactions(source["path"])
            cleaning = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        read_seconds = time.perf_counter() - started
        bar.update()
        bar.set_postfix_str("sequences and splits")
        data = prepare_frame(frame, source["name"], remap=source["remap"], **params)
        del frame
        if split is not None:
            check_split_usable(data, split)
        bar.update()
        data.meta.update(
            {
                "source_path": str(source["path"]),
                "source_fingerprint": fingerprint,
                "data_source": source["data_source"],
                "cleaning": cleaning,
                "timings": {
                    "read_s": round(read_seconds, 3),
                    "prepare_frame_s": data.meta["prepare_frame_seconds"],
                },
            }
        )
        bar.set_postfix_str("write")
        data.meta["prepare_seconds"] = round(time.perf_counter() - started, 3)
        _write_artifacts(data, target, write_text=write_text, base=source["base"])
        bar.update(2)
    finally:
        bar.close()
    data.meta["out_dir"] = str(target)
    return data


def _stale_reason(meta: dict[str, Any], wanted: dict[str, Any], source: dict[str, Any]) -> str | None:
    """Why intact artifacts do not fit the request (None when they do)."""
    if meta.get("prepare_version") != PREPARE_VERSION:
        return f"prepare version {meta.get('prepare_version')} differs from {PREPARE_VERSION}"
    if meta.get("params") != wanted:
        changed = sorted(
            k
            for k in set(wanted) | set(meta.get("params") or {})
            if (meta.get("params") or {}).get(k) != wanted.get(k)
        )
        return f"parameters changed ({', '.join(changed)})"
    if meta.get("source_fingerprint") != _fingerprint(source["path"]):
        return f"source {source['path']} changed"
    return None


def _verified(
    target: Path, stale: Callable[[dict[str, Any]], str | None] | None = None
) -> tuple[PreparedData | None, dict[str, Any] | None, str | None, bool]:
    """(data, meta, problem, damaged) of a prepared folder: data when every artifact verifies.

    ``stale(meta)``, when given, is asked first: a folder it calls out of date (a reason) is not read at all.
    """
    if not target.exists():
        return None, None, "not prepared yet", False
    try:
        meta = read_meta(target)
    except MissingDataError:
        return None, None, "meta.json is missing", True
    except IntegrityError as exc:
        older = isinstance(exc, UnsealedError)
        return (
            None,
            None,
            str(exc) if not older else "it was prepared by an older version",
            not older,
        )
    reason = stale(meta) if stale is not None else None
    if reason is not None:
        return None, meta, reason, False
    try:
        return _read_artifacts(target, meta), meta, None, False
    except IntegrityError as exc:
        return None, meta, str(exc), True


def load_prepared(
    dataset: str,
    *,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    progress: bool | None = None,
    wait: bool = True,
    split: str | None = None,
    **params: Any,
) -> PreparedData:
    """Return the prepared ``dataset``, reusing its verified artifacts when still valid, else :func:`prepare`.

    Artifacts are reused when meta.json records the same parameters, prepare version and source
    fingerprint and every artifact matches its recorded size and sha256. A damaged artifact (truncated,
    bit-flipped, missing) is rebuilt with one logged warning. When the source is gone, intact artifacts
    are used as they are (with a warning) and damaged ones are refused in one line naming the commands
    that rebuild them.

    Args:
        dataset, data_dir, out_dir, **params: as :func:`prepare`.
        progress: progress bar of a preparation (default: ``SASREC_PROGRESS``).
        wait: wait for another process writing the folder (else :class:`LockBusyError`).
        split: when given, refuse unless this split gives validation and test events.
    """
    try:
        source = _source(dataset, data_dir, params.get("remap"))
    except MissingDataError as gone:
        return _load_without_source(dataset, data_dir, out_dir, wait, split, params, gone)
    wanted = {
        **_normalise_params({k: v for k, v in params.items() if k != "remap"}),
        "remap": source["remap"],
    }
    target = _target(source, out_dir)
    name = source["name"]
    with _guard(target, name, wait):
        data, _meta, problem, damaged = _verified(target, lambda meta: _stale_reason(meta, wanted, source))
        if data is not None:
            data.meta["out_dir"] = str(target)
            data.meta["reused"] = True
            if split is not None:
                check_split_usable(data, split)
            return data
        if damaged:
            logger.warning(
                "%s in %s is damaged (%s); rebuilding it from %s",
                _what(name),
                target,
                problem,
                source["path"],
            )
        else:
            logger.info("preparing %s into %s: %s", name, target, problem)
        paths.check_writable(target, _what(name), folder=True)
        return _prepare_locked(
            source,
            {k: v for k, v in wanted.items() if k != "remap"},
            target,
            write_text=True,
            progress=progress,
            split=split,
        )


def _rebuild_command(dataset: str, meta: dict[str, Any] | None) -> str:
    kind = (meta or {}).get("data_source")
    fetch = {"simulated": "make simulate", "kuairec": "make data"}.get(kind, "make data (or make simulate)")
    return f"{fetch}, then python -m sasrec prepare {dataset}"


def _load_without_source(
    dataset: str,
    data_dir: Path | None,
    out_dir: Path | None,
    wait: bool,
    split: str | None,
    params: dict[str, Any],
    gone: MissingDataError,
) -> PreparedData:
    """Serve intact artifacts whose source is gone, else refuse naming the rebuild commands."""
    base = dataset[: -len(NO_REMAPPING_SUFFIX)] if dataset.endswith(NO_REMAPPING_SUFFIX) else dataset
    if out_dir is None and base not in DATASETS:
        raise gone
    target = paths.resolve(out_dir) if out_dir is not None else _default_out_dir(dataset)
    if not target.exists():
        raise gone
    with _guard(target, dataset, wait):
        data, meta, problem, _damaged = _verified(target)
        source_path = (meta or {}).get("source_path", "its source")
        if data is None or meta is None:
            raise MissingDataError(
                f"{_what(dataset)} in {target} cannot be used ({problem}) and {source_path} is gone; "
                f"rebuild it: {_rebuild_command(dataset, meta)}"
            ) from None
        wanted = _normalise_params({k: v for k, v in params.items() if k != "remap"})
        recorded = {k: v for k, v in (meta.get("params") or {}).items() if k != "remap"}
        outside = data_dir is not None and not Path(source_path).is_relative_to(paths.resolve(data_dir))
        if recorded != wanted or outside:
            why = "other parameters" if recorded != wanted else f"{source_path}, not from {data_dir}"
            raise MissingDataError(
                f"{_what(dataset)} in {target} was prepared from {why} and the source is gone ({gone}); "
                f"rebuild it: {_rebuild_command(dataset, meta)}"
            ) from None
        logger.warning("source %s of %s is gone; using %s as it is", source_path, dataset, target)
        if split is not None:
            check_split_usable(data, split)
        data.meta["out_dir"] = str(target)
        data.meta["reused"] = True
        return data

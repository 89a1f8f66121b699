"""Download, unpack and verify the official KuaiRec 2.0 archive: ``python -m sasrec download``.

The archive (about 432 MB, no published checksum) unpacks to ``KuaiRec 2.0/data/*.csv``; a download is
verified by the schema (header) and the official row count of every file (Gao et al., CIKM 2022).
Downloads resume from ``KuaiRec.zip.part`` with an HTTP Range request.
"""

from __future__ import annotations

import http.client
import logging
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import unescape
from pathlib import Path

from tqdm import tqdm

from sasrec import locks, paths
from sasrec.data import kuairec
from sasrec.errors import DataValidationError, MissingDataError, SasrecError
from sasrec.progress import progress_enabled

AUTHORS_URL = "https://nas.chongminggao.top:4430/datasets/KuaiRec.zip"
GDRIVE_FILE_ID = "1qe5hOSBxzIuxBb1G_Ih5X-O65QElollE"
GDRIVE_URL = f"https://drive.google.com/uc?export=download&id={GDRIVE_FILE_ID}"
GDRIVE_PAGE = f"https://drive.google.com/file/d/{GDRIVE_FILE_ID}/view"
#: Mirrors tried in order: the dataset authors' server, then the Google Drive copy.
DEFAULT_URLS: tuple[str, ...] = (AUTHORS_URL, GDRIVE_URL)
ARCHIVE_NAME = "KuaiRec.zip"
ARCHIVE_SIZE_HINT = "about 432 MB"
_CHUNK = 1 << 20
_USER_AGENT = "sasrec-kuairec/0.1 (python urllib)"
_MAX_ATTEMPTS_PER_URL = 3

logger = logging.getLogger(__name__)


class _HtmlPage(Exception):
    """The server answered with an HTML page (Google Drive's virus-scan confirmation, an error page)."""

    def __init__(self, html: str, url: str) -> None:
        super().__init__(f"got an HTML page instead of the archive from {url}")
        self.html = html
        self.url = url


class _Incomplete(Exception):
    """The connection ended before the announced length arrived (the .part file is kept for resuming)."""


@dataclass
class FileVerification:
    """Header and row-count check of one unpacked file."""

    name: str
    path: Path | None
    rows: int | None
    expected_rows: int | None
    ok: bool
    note: str = ""


# -------------------------------------------------------------------------------------------- fetching
def _drive_confirm_url(html: str, url: str) -> str | None:
    """Best effort: the URL behind Google Drive's "can't scan this file for viruses" page, or None."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"', html)
    if form:
        fields = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html)
        query = urllib.parse.urlencode([(name, unescape(value)) for name, value in fields])
        return f"{unescape(form.group(1))}?{query}" if query else unescape(form.group(1))
    token = re.search(r"confirm=([0-9A-Za-z_-]+)", html)
    if token and "confirm=" not in url:
        return f"{url}&confirm={token.group(1)}"
    if "drive.google.com" in url and "confirm=" not in url:
        return f"{url}&confirm=t"
    return None


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _fetch(url: str, part: Path, *, timeout: float, progress: bool | None) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    existing = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if existing:
        headers["Range"] = f"bytes={existing}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and existing:  # nothing left to send: complete, or a stale part of another file
            if _content_range_total(exc.headers.get("Content-Range")) == existing:
                return
            part.unlink()
            return _fetch(url, part, timeout=timeout, progress=progress)
        raise
    with response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type:
            raise _HtmlPage(response.read(2 * _CHUNK).decode("utf-8", errors="replace"), response.geturl())
        length = response.headers.get("Content-Length")
        if response.status == 206:
            mode = "ab"
        else:  # the server ignored the Range header: start again
            mode, existing = "wb", 0
        total = existing + int(length) if length and length.isdigit() else None
        with (
            part.open(mode) as out,
            tqdm(
                total=total,
                initial=existing,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=ARCHIVE_NAME,
                disable=not progress_enabled(progress),
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Incomplete(f"connection ended after {size:,} of {total:,} bytes")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _download_from(url: str, part: Path, *, timeout: float, progress: bool | None) -> None:
    """Try one mirror, following Drive's confirmation page and retrying while bytes keep arriving."""
    current = url
    for _attempt in range(_MAX_ATTEMPTS_PER_URL):
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch(current, part, timeout=timeout, progress=progress)
            return
        except _HtmlPage as page:
            confirm = _drive_confirm_url(page.html, current)
            if confirm is None or confirm == current:
                raise
            current = confirm
        except (_Incomplete, TimeoutError, ConnectionError, http.client.IncompleteRead) as exc:
            after = part.stat().st_size if part.exists() else 0
            if after <= before:
                raise _Incomplete(f"{_describe(exc)}; no progress") from None
    raise _Incomplete(f"gave up after {_MAX_ATTEMPTS_PER_URL} attempts")


def _offline_error(failures: list[str], dest: Path) -> SasrecError:
    return SasrecError(
        "could not download the KuaiRec archive: every mirror failed ("
        + "; ".join(failures)
        + "). This machine may be offline, behind a proxy, or the mirrors may have moved. "
        f"To proceed by hand: download {ARCHIVE_NAME} ({ARCHIVE_SIZE_HINT}) on another machine from "
        f"{AUTHORS_URL} or {GDRIVE_PAGE}, copy it here and run "
        "`python -m sasrec download --archive PATH` or `make data ARCHIVE=PATH` "
        f"(files are unpacked under {dest})."
    )


def fetch_archive(
    urls: Sequence[str], dest: Path, *, timeout: float = 30, progress: bool | None = None
) -> Path:
    """Download the archive to ``dest/KuaiRec.zip`` from the first mirror that works.

    Raises:
        SasrecError: every mirror failed; the message lists why and how to proceed by hand.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / ARCHIVE_NAME
    part = dest / f"{ARCHIVE_NAME}.part"
    failures: list[str] = []
    for url in urls:
        try:
            _download_from(url, part, timeout=timeout, progress=progress)
        except (
            _HtmlPage,
            _Incomplete,
            urllib.error.URLError,
            http.client.HTTPException,
            OSError,
            ValueError,
        ) as exc:
            failures.append(f"{url}: {_describe(exc)}")
            continue
        if not zipfile.is_zipfile(part):
            failures.append(f"{url}: the downloaded file is not a zip archive")
            part.unlink()
            continue
        part.replace(target)
        return target
    raise _offline_error(failures, dest)


# ----------------------------------------------------------------------------------------- unpacking
def extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` under ``dest`` and return the folder holding the official CSV files.

    Members already unpacked with the right size are skipped; each file is written atomically.

    Raises:
        MissingDataError: the archive does not exist.
        DataValidationError: not a zip archive, an unsafe member path, or no interaction matrix inside.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise MissingDataError(f"archive {archive} does not exist")
    if not zipfile.is_zipfile(archive):
        raise DataValidationError(f"{archive} is not a zip archive; expected the KuaiRec.zip release")
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                if member.is_dir() or member.filename.startswith("__MACOSX/"):
                    continue
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(root):
                    raise DataValidationError(
                        f"{archive}: member {member.filename!r} would be written outside {dest}"
                    )
                if target.is_file() and target.stat().st_size == member.file_size:
                    continue
                with bundle.open(member) as source, paths.atomic_path(target) as tmp:
                    with tmp.open("wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataValidationError(f"{archive} is a corrupt zip archive ({exc}); download it again") from None
    data_dir = locate_data_dir(dest)
    if data_dir is None:
        raise DataValidationError(
            f"{archive} holds no {kuairec.INTERACTION_FILES[0]}; expected the files under 'KuaiRec 2.0/data/'"
        )
    return data_dir


def locate_data_dir(dest: Path) -> Path | None:
    """The folder under ``dest`` that holds ``big_matrix.csv`` (see :func:`sasrec.kuairec.find_file`)."""
    found = kuairec.find_file(Path(dest), kuairec.INTERACTION_FILES[0])
    return found.parent if found is not None else None


# -------------------------------------------------------------------------------------------- checking
def verify_files(data_dir: Path, *, check_rows: bool = True) -> list[FileVerification]:
    """Check every official file's header and row count (a fast count, not a full parse).

    Raises:
        DataValidationError: a file is absent, has the wrong columns, or (``check_rows``) a row count that
            differs from the official one; approximate official counts only produce a note.
    """
    data_dir = Path(data_dir)
    results: list[FileVerification] = []
    problems: list[str] = []
    for name, schema in kuairec.OFFICIAL_FILES.items():
        path = kuairec.find_file(data_dir, name)
        if path is None:
            problems.append(f"{name} is absent")
            results.append(FileVerification(name, None, None, schema.expected_rows, ok=False, note="absent"))
            continue
        kuairec.check_header(path, schema)
        rows = kuairec.count_csv_rows(path, schema)
        ok, note = True, ""
        if schema.expected_rows is not None and rows != schema.expected_rows:
            note = f"{rows:,} rows, official {schema.expected_rows:,}"
            if schema.rows_exact and check_rows:
                ok = False
                problems.append(f"{name} has {rows:,} rows, expected {schema.expected_rows:,}")
        results.append(FileVerification(name, path, rows, schema.expected_rows, ok=ok, note=note))
    if problems:
        raise DataValidationError(
            f"KuaiRec files in {data_dir} do not match the official release: {'; '.join(problems)}. "
            "An interrupted or corrupt download? Delete the unpacked files and run the download again "
            "(or pass --skip-row-check for a deliberately smaller copy)"
        )
    return results


def _all_present(dest: Path) -> bool:
    return all(kuairec.find_file(dest, name) is not None for name in kuairec.OFFICIAL_FILES)


# ----------------------------------------------------------------------------------------- entry point
def download_kuairec(
    dest: Path,
    urls: Sequence[str] | None = None,
    *,
    archive: Path | None = None,
    check_rows: bool = True,
    timeout: float = 30,
    progress: bool | None = None,
) -> Path:
    """Make the official KuaiRec 2.0 files available under ``dest`` and verify them.

    Holds a lock on ``dest/KuaiRec.zip`` throughout, so a second download into ``dest`` waits. Steps:
    reuse already unpacked and verified files; else use ``archive`` (an already downloaded zip),
    else ``dest/KuaiRec.zip`` if complete, else download it from the first working mirror of ``urls``
    (resuming ``KuaiRec.zip.part``); unpack; check headers and official row counts.

    Args:
        dest: destination folder (``data/raw`` by default on the command line).
        urls: mirrors to try in order; default :data:`DEFAULT_URLS`.
        archive: use this zip instead of downloading.
        check_rows: fail when a row count differs from the official one.
        timeout: seconds before a stalled connection fails.
        progress: show a tqdm bar (None: see :func:`sasrec.cliutil.progress_enabled`).

    Returns:
        The folder holding the CSV files (``dest/KuaiRec 2.0/data``).

    Raises:
        SasrecError: every mirror failed (offline); MissingDataError / DataValidationError for a bad archive
            or files that do not match the release.
    """
    dest = Path(dest)
    paths.check_writable(dest, "KuaiRec download folder", folder=True)
    dest.mkdir(parents=True, exist_ok=True)
    with locks.locked(dest / ARCHIVE_NAME, what="KuaiRec archive"):  # one download into dest at a time
        if archive is None and _all_present(dest):
            data_dir = locate_data_dir(dest) or dest
            try:
                verify_files(data_dir, check_rows=check_rows)
                return data_dir
            except DataValidationError as exc:
                logger.warning("existing files are not usable (%s); fetching the archive again", exc)
        if archive is None:
            local = dest / ARCHIVE_NAME
            if local.is_file() and zipfile.is_zipfile(local):
                archive = local
            else:
                archive = fetch_archive(urls or DEFAULT_URLS, dest, timeout=timeout, progress=progress)
        data_dir = extract_archive(Path(archive), dest)
        verify_files(data_dir, check_rows=check_rows)
        return data_dir

"""``python -m sasrec download``: what ``make data`` runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sasrec import paths
from sasrec.data.kuairec.download import DEFAULT_URLS, download_kuairec, verify_files
from sasrec.errors import ConfigError, MissingDataError


def _check_arguments(args: argparse.Namespace) -> None:
    """The archive, the destination and the timeout, checked before any download (one line each)."""
    if args.archive:
        archive = paths.user_path(args.archive)
        if not archive.is_file():
            state = "is a folder" if archive.is_dir() else "does not exist"
            raise MissingDataError(
                f"--archive={args.archive}: {archive} {state}; expected the KuaiRec.zip release downloaded "
                "elsewhere"
            )
    if not args.timeout > 0:  # also NaN
        raise ConfigError(f"--timeout must be a positive number of seconds; got {args.timeout}")
    dest = paths.user_path(args.dest) if args.dest else paths.raw_dir()
    what = (
        "KuaiRec download folder (--dest)"
        if args.dest
        else "KuaiRec download folder (the default; see --dest)"
    )
    paths.check_writable(dest, what, folder=True)


def _run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    dest = Path(args.dest) if args.dest else paths.raw_dir()
    data_dir = download_kuairec(
        dest,
        args.url or DEFAULT_URLS,
        archive=Path(args.archive) if args.archive else None,
        check_rows=not args.skip_row_check,
        timeout=args.timeout,
        progress=False if args.no_progress else None,
    )
    for result in verify_files(data_dir, check_rows=False):
        note = f" ({result.note})" if result.note else ""
        rows = f"{result.rows:,}" if result.rows is not None else "-"
        print(f"  {result.name:<30} {rows:>12} rows{note}")
    print(
        f"KuaiRec 2.0 files ready in {data_dir}; run `python -m sasrec validate {data_dir}` for a full check"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``python -m sasrec download``."""
    parser = subparsers.add_parser(
        "download",
        help="download, unpack and verify the official KuaiRec 2.0 archive",
        description=(
            "Download KuaiRec.zip (resuming an interrupted download), unpack it and check every file's "
            "header and official row count. Offline? Download the zip elsewhere and pass --archive."
        ),
    )
    parser.add_argument("--dest", default=None, help=f"destination folder (default {paths.raw_dir()})")
    parser.add_argument(
        "--url",
        action="append",
        default=None,
        help="mirror URL, repeatable, tried in order (default: the authors' server, then Google Drive)",
    )
    parser.add_argument("--archive", default=None, help="use an already downloaded KuaiRec.zip")
    parser.add_argument(
        "--skip-row-check", action="store_true", help="do not require the official row counts"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before a stalled connection fails (default 30)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run)

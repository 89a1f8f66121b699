"""``python -m sasrec validate DIR``: schema check of every official file."""

from __future__ import annotations

import argparse
from typing import Any

from sasrec import paths
from sasrec.data.kuairec.validation import validate_directory
from sasrec.errors import ConfigError, DataValidationError


def _run_validate(args: argparse.Namespace) -> int:
    data_dir = paths.user_path(args.dir) if args.dir else paths.raw_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            f"DIR {args.dir!r}: {data_dir} is a file, not a folder; expected the folder of the KuaiRec CSVs "
            "(or one holding data/ or 'KuaiRec 2.0/data/')"
        )
    summary = validate_directory(data_dir, cache=not args.no_cache, raise_errors=False)
    print(summary)
    message = summary.error_message()
    if message:
        raise DataValidationError(message)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``python -m sasrec validate [DIR]``."""
    parser = subparsers.add_parser(
        "validate",
        help="check the official KuaiRec files in a directory (schema, row counts, cleaning report)",
        description=(
            "Validate every official KuaiRec 2.0 file found in DIR, DIR/data or DIR/'KuaiRec 2.0'/data: "
            "header, value checks and row counts (a count that differs from the official one is a warning). "
            "Every file is checked; each invalid one is listed. A file with a header and no data row is "
            "invalid. Exit status 0 when every present file is valid, 2 otherwise."
        ),
    )
    parser.add_argument("dir", nargs="?", default=None, help=f"data directory (default {paths.raw_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the parquet cache")
    parser.set_defaults(func=_run_validate)

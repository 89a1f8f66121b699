"""``python -m sasrec report data|summary``: the report's steps for ``make``."""

from __future__ import annotations

import argparse

from sasrec.study.report import ensure_profile_data, write_summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report data`` and ``report summary``."""
    parser = subparsers.add_parser(
        "report", help="report steps: ensure a profile's data, write reports/README.md"
    )
    sub = parser.add_subparsers(dest="report_command", metavar="STEP", required=True)
    data = sub.add_parser("data", help="make sure the profile's data exist (simulate when no real data)")
    data.add_argument("--profile", default="full", help="params/<profile>/ to read (default full)")
    data.add_argument("--stamp", default=None, help="file rewritten only when the data changed (for make)")
    data.set_defaults(func=lambda args: print(f"Data: {ensure_profile_data(args.profile, args.stamp)}"))
    summary = sub.add_parser(
        "summary", help="write <reports-dir>/README.md from <reports-dir>/metrics/*.json"
    )
    summary.add_argument("--reports-dir", default="reports")
    summary.add_argument("--profile", default="full")
    summary.set_defaults(func=lambda args: print(f"wrote {write_summary(args.reports_dir, args.profile)}"))

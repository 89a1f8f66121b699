"""``python -m sasrec doctor``: one line per finding about the environment and the data, with its fix."""

from __future__ import annotations

import argparse
from typing import Any

from sasrec.study.doctor import DoctorContext, exit_status, run_checks


def _run_doctor(args: argparse.Namespace) -> int:
    findings = run_checks(DoctorContext(quick=args.quick))
    for finding in findings:
        print(finding.line())
    failing = sum(finding.needs_fixing for finding in findings)
    warnings = sum(finding.status == "warn" for finding in findings)
    print(f"{failing} problem(s) to fix, {warnings} warning(s)" if failing or warnings else "all well")
    return exit_status(findings)


def add_parser(subparsers: Any) -> None:
    """Register ``python -m sasrec doctor [--quick]``."""
    parser = subparsers.add_parser(
        "doctor",
        help="check the environment, data, prepared datasets, caches, leftovers and locks",
        description=(
            "One line per finding with its fix: Python and package versions, device, free disk, the real "
            "archive in data/raw (schema, row counts), simulated data, prepared datasets (checksums), the "
            "parquet cache, temporary files left by interrupted runs and locks held now. Exit status 0 "
            "when all is well, 1 when something needs fixing."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip content checks (checksums, row counts): sizes and headers only",
    )
    parser.set_defaults(func=_run_doctor)

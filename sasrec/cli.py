"""Command line: ``python -m sasrec COMMAND``; also runs every command of the original project.

Each sub-command lives beside the logic it drives and registers itself through ``add_parser``.
Errors caused by input (:class:`sasrec.errors.SasrecError`) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sasrec.errors import SasrecError

# (module, function adding the sub-parser); order is the order shown by --help.
COMMAND_MODULES: tuple[tuple[str, str], ...] = (
    ("sasrec.kuairec", "add_validate_parser"),
    ("sasrec.download", "add_parser"),
    ("sasrec.simulate", "add_parser"),
    ("sasrec.prepare", "add_parser"),
    ("sasrec.train_cli", "add_parser"),
    ("sasrec.baseline_cli", "add_parser"),
    ("sasrec.report", "add_parser"),
)


def build_parser() -> argparse.ArgumentParser:
    """Parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="python -m sasrec",
        description="SASRec and baselines on KuaiRec 2.0 (real archive or the KuaiRec-shaped simulator).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name, function_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        getattr(module, function_name)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except SasrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)

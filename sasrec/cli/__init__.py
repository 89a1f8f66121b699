"""Command line: ``python -m sasrec COMMAND``; also runs every command of the original project.

Each sub-command is one module of this package that registers itself through ``add_parser``; the
commands call the package's stages and hold no logic of their own.
Errors caused by input (:class:`sasrec.errors.SasrecError`) print one line and exit with status 2.
The package's log lines (what a command did: waited for a lock, rebuilt a damaged file) go to stderr;
``--quiet`` keeps only warnings.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sasrec.cli.common import OneLineParser
from sasrec.errors import SasrecError

# (module, function adding the sub-parser); order is the order shown by --help.
COMMAND_MODULES: tuple[tuple[str, str], ...] = (
    ("sasrec.cli.validate", "add_parser"),
    ("sasrec.cli.download", "add_parser"),
    ("sasrec.cli.simulate", "add_parser"),
    ("sasrec.cli.prepare", "add_parser"),
    ("sasrec.cli.train", "add_parser"),
    ("sasrec.cli.baseline", "add_parser"),
    ("sasrec.cli.twostage", "add_parser"),
    ("sasrec.cli.tune", "add_parser"),
    ("sasrec.cli.report", "add_parser"),
    ("sasrec.cli.doctor", "add_parser"),
)


def build_parser() -> argparse.ArgumentParser:
    """Parser with every sub-command registered (a wrong flag is refused in one line, exit status 2)."""
    parser = OneLineParser(
        prog="python -m sasrec",
        description="SASRec and baselines on KuaiRec 2.0 (real archive or the KuaiRec-shaped simulator).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name, function_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        getattr(module, function_name)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", stream=sys.stderr)  # the package's log lines, one per line
    logging.getLogger("sasrec").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        result = args.func(args)
    except SasrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)

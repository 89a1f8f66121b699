"""``python -m sasrec report data|summary``: the report's steps for ``make``."""

from __future__ import annotations

import argparse

from sasrec.errors import ConfigError


def _data(args: argparse.Namespace) -> int:
    from sasrec.study.report import ensure_profile_data

    print(f"Data: {ensure_profile_data(args.profile, args.stamp)}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from sasrec.study.report import write_summary

    print(f"wrote {write_summary(args.reports_dir, args.profile)}")
    return 0


def _notebook(args: argparse.Namespace) -> int:
    from sasrec.study.notebooks import run_notebook

    print(
        f"executed notebook written to {run_notebook(args.name, profile=args.profile, assignments=args.assignments, scratch=args.scratch)}"
    )
    return 0


def _params(args: argparse.Namespace) -> int:
    """Sync (or with --check, verify) every notebook's parameters cell against params/full."""
    from sasrec.study import notebooks

    if args.check:
        problems = notebooks.check()
        if problems:
            raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        print("every notebook's parameters cell equals params/full")
        return 0
    from sasrec import paths

    changed = [
        nb.name
        for nb in sorted((paths.project_root() / "notebooks").glob("*.ipynb"))
        if notebooks.sync_parameters(nb)
    ]
    print(f"parameters cells synced from params/full: {', '.join(changed) if changed else 'none changed'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report data`` and ``report summary``."""
    parser = subparsers.add_parser(
        "report", help="report steps: ensure a profile's data, write reports/README.md"
    )
    sub = parser.add_subparsers(dest="report_command", metavar="STEP", required=True)
    data = sub.add_parser("data", help="make sure the profile's data exist (simulate when no real data)")
    data.add_argument("--profile", default="full", help="params/<profile>/ to read (default full)")
    data.add_argument("--stamp", default=None, help="file rewritten only when the data changed (for make)")
    data.set_defaults(func=_data)
    summary = sub.add_parser(
        "summary", help="write <reports-dir>/README.md from <reports-dir>/metrics/*.json"
    )
    summary.add_argument("--reports-dir", default="reports")
    summary.add_argument("--profile", default="full")
    summary.set_defaults(func=_summary)
    params = sub.add_parser(
        "params", help="sync every notebook's parameters cell from params/full (--check: verify)"
    )
    params.add_argument(
        "--check", action="store_true", help="only verify; exit 2 naming the first difference"
    )
    params.set_defaults(func=_params)
    notebook = sub.add_parser(
        "notebook",
        help="run one notebook with one value changed into reports/scratch (the committed report is untouched)",
    )
    notebook.add_argument("name", help="notebook name, e.g. 03_train")
    notebook.add_argument("--profile", default="full", help="params/<profile>/ to start from (default full)")
    notebook.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted key of the params file and its new value, e.g. training.num_epochs=10 (repeatable)",
    )
    notebook.add_argument(
        "--scratch", default="scratch", help="folder name under reports/ and models/ (default scratch)"
    )
    notebook.set_defaults(func=_notebook)

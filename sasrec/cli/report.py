"""``python -m sasrec report run|verify|data|summary|params|notebook``: the report's steps for ``make``.

``make report`` runs ``report run --profile P``, which holds the profile's lock (:mod:`sasrec.locks`) for the
whole run, so that two ``make report`` of one profile never interleave (the second waits, saying for whom,
or with ``--no-wait`` / ``make report WAIT=false`` refuses in one line naming the holder). Under the lock it
runs ``report verify`` (executed notebooks whose metrics JSON is missing or damaged are removed, so that
make reruns exactly those) and then ``make report-inner``, which reruns changed notebooks by timestamps and
writes the summary; its exit status is the command's.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shlex
import subprocess

from sasrec import paths
from sasrec.errors import ConfigError
from sasrec.paths import user_path
from sasrec.study.profiles import check_profile, profile_dirs, profile_lock, shown, verify_profile

logger = logging.getLogger(__name__)
#: The inner make target that ``report run`` runs under the profile's lock.
INNER_TARGET = "report-inner"


def _jobserver_fds() -> tuple[int, ...]:
    """The pipe of the calling make's jobserver (``make -j``), passed on so the inner make shares it."""
    found = re.search(r"--jobserver-(?:auth|fds)=(\d+),(\d+)", os.environ.get("MAKEFLAGS", ""))
    fds = []
    for fd in map(int, found.groups() if found else ()):
        with contextlib.suppress(OSError):
            os.fstat(fd)
            fds.append(fd)
    return tuple(fds)


def _make_dry_run() -> bool:
    """Whether the calling make runs with -n (its single-letter flags are MAKEFLAGS' first word)."""
    first = os.environ.get("MAKEFLAGS", "").split(" ", 1)[0]
    return not first.startswith("-") and "n" in first


def _exit_status(returncode: int) -> int:
    return 128 + -returncode if returncode < 0 else returncode


# ------------------------------------------------------------------------------------------ commands
def _verify(args: argparse.Namespace) -> int:
    check_profile(args.profile)
    with profile_lock(args.profile, wait=not args.no_wait):
        lines = verify_profile(args.profile)
    for line in lines:
        print(line)
    _out, executed, _html = profile_dirs(args.profile)
    print(
        f"{shown(executed)}: {len(lines)} executed notebook(s) removed"
        if lines
        else f"{shown(executed)}: the outputs of every executed notebook verify"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    """Hold the profile's lock, verify the executed notebooks, then run ``make report-inner``."""
    check_profile(args.profile)
    make_args = list(args.make_args)
    if make_args and make_args[0] == "--":
        make_args = make_args[1:]
    command = [*shlex.split(args.make), INNER_TARGET, f"PROFILE={args.profile}", *make_args]
    with profile_lock(args.profile, wait=not args.no_wait):
        for line in verify_profile(args.profile, dry_run=_make_dry_run()):
            print(line, flush=True)
        if args.resource_check:  # before any notebook runs: refuse a machine too small, with the numbers
            from sasrec.study.resources import check_resources

            for line in check_resources(args.profile):
                print(f"resources: {line}", flush=True)
        try:
            completed = subprocess.run(
                command, cwd=paths.project_root(), pass_fds=_jobserver_fds(), check=False
            )
        except OSError as exc:
            raise ConfigError(
                f"--make {args.make!r}: cannot run {command[0]} ({exc.strerror or exc}); install GNU make or pass --make"
            ) from None
    status = _exit_status(completed.returncode)
    if status:
        name = f"signal {-completed.returncode}" if completed.returncode < 0 else f"status {status}"
        logger.warning("%s ended with %s (report profile %s)", shlex.join(command), name, args.profile)
    return status


def _measure(args: argparse.Namespace) -> int:
    """Run the command after ``--`` and record its wall time and peak memory (for make's notebook runs)."""
    from sasrec.study.resources import run_measured

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("report measure: no command given after --")
    return run_measured(command, paths.resolve(args.out))


def _resources(args: argparse.Namespace) -> int:
    """Print the profile's estimated peak memory per notebook; exit 2 when this machine is too small."""
    from sasrec.study.resources import check_resources

    check_profile(args.profile)
    for line in check_resources(args.profile):
        print(line)
    return 0


def _train_config(args: argparse.Namespace) -> int:
    """Write the ``train --config`` file of one model of a profile's notebook (for torchrun)."""
    import yaml

    from sasrec.study.profiles import profile_train_config

    config = profile_train_config(args.profile, args.notebook, args.model)
    out = paths.atomic_write_text(
        user_path(args.out), yaml.safe_dump(config, sort_keys=False), what="train config file"
    )
    print(
        f"wrote {out}: train --config {out} trains {args.model} of params/{args.profile}/{args.notebook}.yaml"
    )
    return 0


def _add_resource_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``report measure``, ``report resources`` and ``report train-config``."""
    train_config = sub.add_parser(
        "train-config", help="write the train --config file of one model of a profile (e.g. for torchrun)"
    )
    train_config.add_argument("--profile", default="full", help="params/<profile>/ (default full)")
    train_config.add_argument(
        "--notebook", default="05_cross_dataset", help="03_train or 05_cross_dataset (default 05)"
    )
    train_config.add_argument(
        "--model", default="sasrec_bce", help="a model of the notebook's models mapping"
    )
    train_config.add_argument("--out", required=True, help="YAML file to write")
    train_config.set_defaults(func=_train_config)
    measure = sub.add_parser(
        "measure", help="run a command (after --) and write its wall time and peak memory to --out"
    )
    measure.add_argument("--out", required=True, help="JSON file to write (only when the command succeeds)")
    measure.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command to run")
    measure.set_defaults(func=_measure)
    resources = sub.add_parser(
        "resources",
        help="estimated peak memory of each notebook of a profile; exit 2 if this machine is too small",
    )
    resources.add_argument("--profile", default="full", help="params/<profile>/ to estimate (default full)")
    resources.set_defaults(func=_resources)


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
    """Register ``report run``, ``verify``, ``data``, ``summary``, ``params`` and ``notebook``."""
    parser = subparsers.add_parser(
        "report", help="report steps: run make report under the profile's lock, verify, data, summary"
    )
    sub = parser.add_subparsers(dest="report_command", metavar="STEP", required=True)
    run = sub.add_parser(
        "run",
        help="hold the profile's lock, remove executed notebooks with damaged outputs, run make report-inner",
    )
    run.add_argument("--profile", default="full", help="params/<profile>/ to run (default full)")
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="exit 2 at once when another run holds the profile (make WAIT=false)",
    )
    run.add_argument("--make", default="make", help="the make program to run (make passes $(MAKE))")
    run.add_argument(
        "--no-resource-check",
        dest="resource_check",
        action="store_false",
        help="skip the up-front memory and disk check (make CHECK_RESOURCES=false)",
    )
    run.add_argument("make_args", nargs=argparse.REMAINDER, help="after --: more arguments for make")
    run.set_defaults(func=_run)
    verify = sub.add_parser(
        "verify",
        help="remove every executed notebook (and HTML) whose metrics JSON is missing or damaged, so make reruns it",
    )
    verify.add_argument("--profile", default="full", help="params/<profile>/ to check (default full)")
    verify.add_argument(
        "--no-wait", action="store_true", help="exit 2 at once when a report run holds the profile"
    )
    verify.set_defaults(func=_verify)
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
    _add_resource_parsers(sub)

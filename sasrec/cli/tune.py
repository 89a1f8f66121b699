"""``python -m sasrec tune``: one Optuna study per model on validation only (resumable), then the summary.

``--profile P`` reads ``params/P/08_tuning.yaml`` and holds the report profile's lock, so a second search
(or a ``make report``) of the same profile is refused in one line naming the holder (``--wait`` waits
instead); ``--config FILE`` reads a file of the same keys (locked by its SQLite storage only). A search
killed mid-way resumes from its finished trials when started again (:mod:`sasrec.study.tuning`).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from sasrec.errors import ConfigError

#: Keys of a tuning params file (``params/*/08_tuning.yaml``).
KEYS = ("paths", "simulator", "preparation", "progress", "dataset", "training", "models", "evaluation",
        "baselines", "tuning")  # fmt: skip


def load_params(path: Path) -> dict[str, Any]:
    """The params file's mappings; unknown or missing keys are refused naming the file."""
    from sasrec.config import load_yaml_mapping

    params = load_yaml_mapping(path)
    unknown = sorted(set(params) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(KEYS)}")
    missing = [key for key in ("dataset", "training", "models", "baselines", "tuning") if key not in params]
    if missing:
        raise ConfigError(f"{path}: missing key {missing[0]!r} (see params/full/08_tuning.yaml)")
    return params


def _run(args: argparse.Namespace) -> int:
    from sasrec import paths
    from sasrec.study import tuning
    from sasrec.study.context import Study
    from sasrec.study.profiles import check_profile, profile_lock

    if args.profile:
        check_profile(args.profile)
        path = paths.project_root() / "params" / args.profile / "08_tuning.yaml"
        guard: Any = profile_lock(args.profile, wait=args.wait)
    else:
        path, guard = paths.user_path(args.config), contextlib.nullcontext()
    params = load_params(path)
    with guard:
        study = Study.from_params(params.get("paths"), params.get("simulator"), params.get("preparation"),
                                  bool(params.get("progress", False)))  # fmt: skip
        data = study.load(str(params["dataset"]))
        payload = tuning.tune_models(study, data, params["training"], params["models"], params["baselines"],
                                     params["tuning"], wait=args.wait)  # fmt: skip
    print(tuning.tuning_table(payload).to_string())
    print(f"studies: {payload['storage']}; summary: {study.metrics_path('tuning')}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tune``."""
    parser = subparsers.add_parser(
        "tune",
        help="tune every model with the same Optuna budget (validation only, resumable)",
        description=__doc__.splitlines()[0],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--profile", help="report profile: reads params/PROFILE/08_tuning.yaml, holds its lock"
    )
    source.add_argument("--config", help="a YAML file with the keys of params/full/08_tuning.yaml")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for a run holding the profile or storage instead of refusing",
    )
    parser.set_defaults(func=_run)

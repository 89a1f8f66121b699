"""``python -m sasrec simulate``: write the KuaiRec-shaped simulator's files."""

from __future__ import annotations

import argparse

from sasrec import paths
from sasrec.cli.common import str2bool
from sasrec.data.simulator.api import simulate
from sasrec.data.simulator.calibration import DEFAULT_SCALE


# ------------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``python -m sasrec simulate --scale S --seed N --out DIR``."""
    parser = subparsers.add_parser(
        "simulate",
        help="write KuaiRec-shaped simulated data (the embedded default)",
        description=(
            "Generate KuaiRec 2.0-shaped files (big_matrix.csv, small_matrix.csv, item_categories.csv, "
            "user_features.csv, kuairec_caption_category.csv, item_daily_features.csv) plus "
            "ground_truth.parquet, side_ground_truth.json and simulation.json."
        ),
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help=f"size relative to KuaiRec (default {DEFAULT_SCALE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out", type=str, default=None, help="output folder (default data/simulated under the project root)"
    )
    parser.add_argument("--progress", type=str2bool, default=None, help="show a progress bar (true/false)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    out = paths.user_path(args.out) if args.out else None
    what = (
        "simulated data folder (--out)"
        if out
        else "simulated data folder (the default; choose one with --out)"
    )
    paths.check_writable(out or paths.simulated_dir(), what, folder=True)  # before any work
    summary = simulate(scale=args.scale, seed=args.seed, out_dir=out, progress=args.progress)
    counts = summary["counts"]
    print(
        f"simulated KuaiRec-shaped data (scale {summary['scale']}, seed {summary['seed']}) in "
        f"{summary['out_dir']}: {counts['users']:,} users, {counts['videos']:,} videos, "
        f"big_matrix {counts['big_rows']:,} rows, small_matrix {counts['small_rows']:,} rows "
        f"({counts['small_users']:,} x {counts['small_videos']:,}), {summary['seconds']:.1f} s"
    )
    return 0

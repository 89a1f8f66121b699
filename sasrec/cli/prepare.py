"""``python -m sasrec prepare NAME``: the original project's ``prepare_data.py``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sasrec import paths
from sasrec.cli.common import check_data_dir, dataset_argument
from sasrec.data.contracts import (
    SPLITS,
    PreparedData,
)
from sasrec.data.preparation.artifacts import _json_default
from sasrec.data.preparation.params import DEFAULT_PARAMS
from sasrec.data.preparation.pipeline import prepare


# ---------------------------------------------------------------------------------------------- CLI
def _format_cleaning(cleaning: dict[str, Any] | None) -> list[str]:
    """Lines of the loader's cleaning report (rows in / out, dropped and flagged counts)."""
    if not cleaning:
        return ["cleaning: none"]
    if "rows_in" not in cleaning:
        return [f"cleaning: {json.dumps(cleaning, default=_json_default)}"]
    rows_in = max(int(cleaning["rows_in"]), 1)
    lines = [f"cleaning report: rows in {cleaning['rows_in']:,}, rows out {cleaning.get('rows_out', 0):,}"]
    for kind in ("dropped", "flagged"):
        for what, rows in cleaning.get(kind, {}).items():
            lines.append(f"  {kind:<8} {what:<32} {rows:>12,} ({100.0 * rows / rows_in:.2f}%)")
    return lines


def _format_summary(data: PreparedData) -> str:
    meta = data.meta
    counts = meta["counts"]
    lines = [
        f"dataset {data.name} ({meta.get('data_source', '?')}, remap={meta['remap']}) from {meta.get('source_path', '?')}",
        *_format_cleaning(meta.get("cleaning")),
        f"rows in {counts['rows_in']:,}; events {counts['events']:,}; labels (untimed) {counts['labels']:,}; "
        f"users {counts['users']:,}; items {counts['items']:,}",
        (
            f"liked (watch_ratio > {meta['like_threshold']}) {counts['liked_events']:,}; relevant "
            f"(watch_ratio > {meta['relevance_threshold']}) {counts['relevant_events']:,}"
            if meta.get("has_watch_ratio", True)
            else f"liked (third column) {counts['liked_events']:,}; relevant = liked (no watch_ratio)"
        ),
    ]
    for split in SPLITS:
        c = counts["splits"][split]
        extra = f"; users kept all-train {c['users_all_train']:,}" if "users_all_train" in c else ""
        lines.append(
            f"  {split:<14} train {c['train']:,}  valid {c['valid']:,} ({c['users_valid']:,} users)  "
            f"test {c['test']:,} ({c['users_test']:,} users){extra}"
        )
    for split in SPLITS:
        check = meta["leakage"][split]
        lines.append(f"  leakage check {split}: {'ok' if check['ok'] else 'FAILED'} ({check['rule']})")
    lines.append(f"written to {meta.get('out_dir')} in {meta.get('prepare_seconds', 0):.1f} s")
    return "\n".join(lines)


def _run_cli(args: argparse.Namespace) -> int:
    dataset = dataset_argument(args.dataset, "NAME")  # the output folder is checked by prepare, up front
    data = prepare(
        dataset,
        data_dir=check_data_dir(args.data_dir, (dataset,)),
        out_dir=paths.user_path(args.out) if args.out else None,
        write_text=not args.no_text,
        progress=False if args.no_progress else None,
        wait=not args.no_wait,
        split=args.split,
        like_threshold=args.like_threshold,
        relevance_threshold=args.relevance_threshold,
        n_valid=args.n_valid,
        n_test=args.n_test,
        temporal_valid_frac=args.temporal_valid_frac,
        temporal_test_frac=args.temporal_test_frac,
    )
    print(_format_summary(data))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``prepare NAME [--data-dir DIR] [--out DIR] ...`` (the original ``prepare_data.py``)."""
    parser = subparsers.add_parser(
        "prepare",
        help="build sequences and train/valid/test splits of a KuaiRec matrix or SASRec text file",
        description=(
            "Prepare small_matrix, big_matrix (add _no_remapping for original ids) or a SASRec text file: "
            "time-ordered sequences, temporal / leave-last-n / leave-one-out splits, leakage checks, "
            "parquet artifacts and the original project's text files."
        ),
    )
    parser.add_argument(
        "dataset", metavar="NAME", help="small_matrix, big_matrix, *_no_remapping, or a .txt path"
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder of the KuaiRec CSVs (default: data/raw, else data/simulated)"
    )
    parser.add_argument("--out", default=None, help="artifact folder (default: data/processed/NAME)")
    parser.add_argument("--like-threshold", type=float, default=DEFAULT_PARAMS["like_threshold"])
    parser.add_argument("--relevance-threshold", type=float, default=DEFAULT_PARAMS["relevance_threshold"])
    parser.add_argument("--n-valid", type=int, default=DEFAULT_PARAMS["n_valid"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_PARAMS["n_test"])
    parser.add_argument("--temporal-valid-frac", type=float, default=DEFAULT_PARAMS["temporal_valid_frac"])
    parser.add_argument("--temporal-test-frac", type=float, default=DEFAULT_PARAMS["temporal_test_frac"])
    parser.add_argument("--no-text", action="store_true", help="skip the original project's text files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="refuse (exit 2, nothing written) unless this split gives validation and test events",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once (exit 2) when another process is writing the same folder, instead of waiting",
    )
    parser.set_defaults(func=_run_cli)

"""Benchmark of ``sasrec.data.features``: the side-feature table of a real-size catalogue (10,728 videos, 7,176 users).

Target: ``build_feature_table`` of a scale-1 big_matrix (every group: tags, categories, topics, caption
vectors, item_daily attributes and aggregates, user features) in at most 30 s on 2 cores.

The input is the simulator's scale-1 output (``data/bench/simulated_scale1``, generated once if absent, as
``bench_prepare.py`` does; ``--data-dir`` names another folder, e.g. one written by ``python -m sasrec
simulate --scale 1.0 --out /tmp/sim1``). A scratch folder in the system's temporary directory links the
input's side files; a side file the input lacks is replaced by the real kuairec_caption_category.csv of
``../shared/data/kuairec_sample`` (captions), or by a synthetic file of KuaiRec's shape (captions without
the sample; item_daily_features.csv with 343,341 rows and every official column). The big matrix is
prepared once (not timed; artifacts kept under ``data/bench/features``).

The build runs in a child process pinned to 2 cores; peak memory is that process's maximum resident set
size, which includes the prepared big matrix it loads first (reported separately as ``rss_before_gb``).

Usage: ``.venv/bin/python benchmarks/bench_features.py [--data-dir DIR] [--cores 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from sasrec import paths

TARGET_SECONDS = 30.0
DAILY_ROWS = 343_341
N_VIDEOS = 10_728
CAPTIONS = "kuairec_caption_category.csv"
DAILY = "item_daily_features.csv"


def bench_folder() -> Path:
    """Prepared artifacts kept between runs (ignored ``data/`` folder of the project)."""
    return paths.data_dir() / "bench" / "features"


def write_item_daily(path: Path, n_videos: int, n_rows: int = DAILY_ROWS, seed: int = 0) -> None:
    """A KuaiRec-schema item_daily_features.csv: each video has a run of consecutive days up to 2020-09-05."""
    from sasrec.data.kuairec.schema import OFFICIAL_FILES

    rng = np.random.default_rng(seed)
    mean_days = n_rows / n_videos
    days = np.maximum(1, np.minimum(63, rng.poisson(mean_days, n_videos)))  # (n_videos,)
    days = np.maximum(1, np.round(days * n_rows / days.sum())).astype(np.int64)
    video = np.repeat(np.arange(n_videos), days)[:n_rows]  # (n_rows,)
    start = np.cumsum(days) - days
    offset = np.arange(len(video)) - start[video]  # 0..days-1 within each video
    last = pd.Timestamp("2020-09-05")
    dates = last - pd.to_timedelta(days[video] - 1 - offset, unit="D")
    n = len(video)
    upload = last - pd.to_timedelta(days[video] - 1 + rng.integers(0, 30, n_videos)[video], unit="D")
    columns: dict[str, Any] = {}
    for name in OFFICIAL_FILES[DAILY].column_names:
        columns[name] = rng.poisson(20, n).astype(np.float64)
    columns.update(
        {
            "video_id": video,
            "date": dates.strftime("%Y%m%d").astype(int).to_numpy(),
            "author_id": (video * 2_654_435_761 % 7_000).astype(np.int64),
            "video_type": np.where(rng.random(n) < 0.97, "NORMAL", "AD"),
            "upload_dt": upload.strftime("%Y-%m-%d").to_numpy(dtype=object),
            "upload_type": rng.choice(["ShortImport", "LongImport", "Web", "ShareFromOtherApp"], n),
            "visible_status": np.where(rng.random(n) < 0.99, "public", "private"),
            "video_duration": (rng.lognormal(np.log(9_600), 0.7, n_videos)[video]).round(),
            "video_tag_name": rng.choice(["舞蹈", "美食", "颜值", "搞笑"], n),
            "show_cnt": rng.poisson(20_000, n).astype(np.float64),
            "play_cnt": rng.poisson(8_000, n).astype(np.float64),
            "play_progress": rng.random(n),
        }
    )
    table = pa.table({name: columns[name] for name in OFFICIAL_FILES[DAILY].column_names})
    with paths.atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(quoting_style="needed"))


def write_captions(path: Path, n_videos: int, seed: int = 0) -> None:
    """A synthetic captions file (Chinese-like text, 13% empty, KuaiRec's category sentinel -124)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(27), 0.8, n_videos).astype(np.int64), 1, 400)
    chars = (0x4E00 + np.minimum(rng.zipf(1.3, lengths.sum()), 3_000)).astype(np.uint32)
    text = pd.Series(chars.view("U1")).groupby(np.repeat(np.arange(n_videos), lengths)).agg("".join)
    text = text.where(rng.random(n_videos) > 0.13, "")
    table = pa.table(
        {
            "video_id": np.arange(n_videos),
            "manual_cover_text": ["UNKNOWN"] * n_videos,
            "caption": text.to_numpy(dtype=object),
            "topic_tag": np.where(rng.random(n_videos) < 0.5, "[]", "[作品推广,感谢快手我要上热门]"),
            "first_level_category_id": rng.integers(1, 39, n_videos),
            "first_level_category_name": ["类"] * n_videos,
            "second_level_category_id": np.where(
                rng.random(n_videos) < 0.3, -124, rng.integers(100, 240, n_videos)
            ),
            "second_level_category_name": ["类"] * n_videos,
            "third_level_category_id": np.where(
                rng.random(n_videos) < 0.6, -124, rng.integers(1000, 1220, n_videos)
            ),
            "third_level_category_name": ["类"] * n_videos,
        }
    )
    with paths.atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(quoting_style="needed"))


def side_folder(data_dir: Path, scratch: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding every side file: links to the input's own, else the real captions, else synthetic."""
    side = scratch / "side"
    side.mkdir(parents=True)
    origin = {}
    for name in ("item_categories.csv", "user_features.csv", CAPTIONS, DAILY):
        if (data_dir / name).is_file():
            (side / name).symlink_to(data_dir / name)
            origin[name] = "input"
        elif name == CAPTIONS and (paths.shared_sample_dir() / CAPTIONS).is_file():
            (side / name).symlink_to(paths.shared_sample_dir() / CAPTIONS)
            origin[name] = "real sample"
        elif name in (CAPTIONS, DAILY):
            started = time.perf_counter()
            if name == CAPTIONS:
                write_captions(side / name, N_VIDEOS)
            else:
                write_item_daily(side / name, N_VIDEOS)
            origin[name] = "synthetic"
            print(f"  synthetic {name} written in {time.perf_counter() - started:.1f} s", flush=True)
    return side, origin


def pin_cores(cores: int) -> list[int]:
    """Restrict this process (and its threads) to ``cores`` CPUs when the machine has more."""
    chosen = sorted(os.sched_getaffinity(0))[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def peak_rss_gb() -> float:
    """This process's maximum resident set size so far (GB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3)


def worker(args: argparse.Namespace) -> None:
    """Load the prepared big matrix, time the build (then each source alone), print JSON."""
    cpus = pin_cores(args.cores)
    os.environ["SASREC_PROGRESS"] = "0"
    from sasrec.data.features import build_feature_table, feature_cut, load_feature_table, save_feature_table
    from sasrec.data.preparation.pipeline import load_prepared

    data = load_prepared("big_matrix", data_dir=args.data_dir, out_dir=args.prepared)
    rss_before = peak_rss_gb()
    cut = feature_cut(data)
    started = time.perf_counter()
    table = build_feature_table(data, args.side, cut_timestamp=cut)
    build_s = time.perf_counter() - started
    rss_after = peak_rss_gb()
    started = time.perf_counter()
    folder = save_feature_table(table, args.scratch / "table")
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = load_feature_table(folder)
    load_s = time.perf_counter() - started
    assert loaded.digest() == table.digest()
    per_source = {}
    for label, groups in {
        "item_categories": ["tags"],
        "captions (categories, topics, caption)": ["categories", "topics", "caption"],
        "item_daily (item_static, item_stats)": ["item_static", "item_stats"],
        "user_features": ["user"],
    }.items():
        started = time.perf_counter()
        build_feature_table(data, args.side, cut_timestamp=cut, groups=groups)
        per_source[label] = round(time.perf_counter() - started, 2)
    schema = table.schema()
    print(
        json.dumps(
            {
                "cpus": cpus,
                "build_s": round(build_s, 2),
                "per_source_s": per_source,
                "save_s": round(save_s, 2),
                "load_s": round(load_s, 2),
                "rss_before_gb": rss_before,
                "peak_rss_gb": rss_after,
                "events": len(data.events),
                "items": data.num_items,
                "users": data.num_users,
                "cut_timestamp": cut,
                "groups": {name: entry["width"] for name, entry in schema["groups"].items()},
                "unavailable": schema["unavailable"],
                "table_mb": round(sum(p.stat().st_size for p in folder.iterdir()) / 1e6, 2),
            }
        )
    )


def prepare_once(data_dir: Path, prepared: Path, root: Path) -> None:
    """Prepare big_matrix into ``prepared`` (reused when intact), in a child so its memory is not counted."""
    code = (
        "import os, sys; os.environ['SASREC_PROGRESS'] = '0';"
        "from sasrec.data.preparation.pipeline import load_prepared;"
        f"load_prepared('big_matrix', data_dir={str(data_dir)!r}, out_dir={str(prepared)!r})"
    )
    env = {**os.environ, "SASREC_ROOT": str(root)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    print(f"  prepared big_matrix ready in {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of the scale-1 simulated files")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_prepare import bench_data_dir, ensure_input

    data_dir = (args.data_dir or bench_data_dir()).resolve()
    csv_path, how = ensure_input(data_dir)
    print(f"input: {csv_path} ({csv_path.stat().st_size / 1e9:.2f} GB, {how})", flush=True)
    folder = bench_folder()
    prepared = folder / "prepared" / "big_matrix"
    prepare_once(data_dir, prepared, folder / "root")
    scratch = Path(tempfile.mkdtemp(prefix="bench_features_"))
    try:
        side, origin = side_folder(data_dir, scratch)
        from sasrec.data.kuairec.readers import count_csv_rows

        daily_rows = count_csv_rows(side / DAILY)
        command = [sys.executable, __file__, "--worker", "--data-dir", str(data_dir), "--cores", str(args.cores),
                   "--side", str(side), "--prepared", str(prepared), "--scratch", str(scratch)]  # fmt: skip
        env = {**os.environ, "SASREC_ROOT": str(folder / "root")}
        completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if completed.returncode != 0:
        raise SystemExit(f"worker failed:\n{completed.stderr[-4000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    within = figures["build_s"] <= TARGET_SECONDS
    print(
        f"build_feature_table: {figures['build_s']:.1f} s on CPUs {figures['cpus']} ({figures['items']:,} items, "
        f"{figures['users']:,} users, {figures['events']:,} events); peak RSS {figures['peak_rss_gb']:.2f} GB "
        f"({figures['rss_before_gb']:.2f} GB with the prepared data loaded); {'within' if within else 'OVER'} "
        f"target ({TARGET_SECONDS:.0f} s)",
        flush=True,
    )
    for label, seconds in figures["per_source_s"].items():
        print(f"  {label}: {seconds:.2f} s")
    print(
        f"  save {figures['save_s']:.2f} s, load {figures['load_s']:.2f} s, {figures['table_mb']} MB on disk"
    )
    summary = {
        "benchmark": "features_big_matrix_scale1",
        "input": how,
        "side_files": origin,
        "daily_rows": daily_rows,
        **figures,
        "target_s": TARGET_SECONDS,
        "within_target": within,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

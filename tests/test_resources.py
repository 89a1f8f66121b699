"""The cost of a report profile: measured time and memory, and the up-front refusal on too small a machine."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sasrec import paths
from sasrec.cli import main
from sasrec.study import resources
from sasrec.study.report import resources_table
from sasrec.study.resources import ResourceError, check_resources, data_sizes, profile_requirements

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def profiles(root: Path) -> Path:
    """The repository's params/ copied into an isolated project root (no data/raw there: the simulator)."""
    shutil.copytree(REPO / "params", root / "params")
    return root


def test_sizes_scale_users_and_items_linearly_and_rows_quadratically() -> None:
    real = data_sizes(None)
    assert real["big_matrix"] == {"users": 7176, "items": 10_728, "rows": 12_530_806}
    fifth = data_sizes(0.2)
    assert fifth["small_matrix"]["users"] == 282  # the full profile's 282 users
    assert fifth["big_matrix"]["rows"] == round(12_530_806 * 0.04)


def test_the_real_size_profile_needs_more_than_the_full_one(profiles: Path) -> None:
    real = {r.notebook: r.memory_gb for r in profile_requirements("real")["notebooks"]}
    full = {r.notebook: r.memory_gb for r in profile_requirements("full")["notebooks"]}
    assert set(real) == set(full) == {f.stem for f in (REPO / "params" / "full").glob("*.yaml")}
    assert all(real[name] >= full[name] for name in real)
    # EASE's three (10,728 x 10,728) float64 matrices alone are 2.76 GB on the real catalogue
    assert real["05_cross_dataset"] > 0.8 + 3 * 8 * 10_728**2 / 1024**3


def test_too_little_memory_is_refused_before_starting_with_the_numbers(profiles: Path) -> None:
    with pytest.raises(ResourceError) as caught:
        check_resources("real", available_gb=3.0, free_disk_gb=100.0)
    message = str(caught.value)
    assert "05_cross_dataset" in message and "3.0 GB of memory is available" in message
    assert "EASE" in message and "CHECK_RESOURCES=false" in message
    assert len(check_resources("real", available_gb=64.0, free_disk_gb=100.0)) == 9  # one line per notebook


def test_too_little_disk_is_refused(profiles: Path) -> None:
    with pytest.raises(ResourceError, match=r"need about 2\.\d GB of disk but 0\.5 GB is free"):
        check_resources("real", available_gb=64.0, free_disk_gb=0.5)


def test_report_resources_command_exits_2_in_one_line(
    profiles: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 2 * resources.GB)
    assert main(["report", "resources", "--profile", "real"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: profile real") and "Traceback" not in err[0]
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 64 * resources.GB)
    assert main(["report", "resources", "--profile", "real"]) == 0
    assert "05_cross_dataset: about" in capsys.readouterr().out


def test_measure_reads_the_peak_of_its_own_block() -> None:
    with resources.measure() as before:
        pass
    with resources.measure() as cost:
        block = bytearray(300 * 1024**2)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    assert cost.seconds >= 0
    if cost.peak_of_block:  # Linux: the high-water mark was reset at the start of the block
        assert cost.peak_rss_gb - before.peak_rss_gb > 0.25
    with resources.measure() as after:
        pass
    if after.peak_of_block:  # the next block does not inherit the 300 MB peak
        assert after.peak_rss_gb < cost.peak_rss_gb - 0.2


def test_run_measured_records_the_child_peak_and_nothing_when_it_fails(tmp_path: Path) -> None:
    out = tmp_path / "resources" / "01_eda.json"
    child = "b = bytearray(200 * 1024**2); b[::4096] = b'x' * len(b[::4096])"
    assert resources.run_measured([sys.executable, "-c", child], out) == 0
    record = json.loads(out.read_text())
    assert record["name"] == "01_eda" and record["peak_rss_gb"] >= 0.19 and record["seconds"] >= 0
    failed = tmp_path / "resources" / "02_prepare_data.json"
    assert resources.run_measured([sys.executable, "-c", "raise SystemExit(3)"], failed) == 3
    assert not failed.exists()
    assert [r["name"] for r in resources.read_measured(out.parent)] == ["01_eda"]


def test_summary_table_puts_measured_beside_estimated(profiles: Path) -> None:
    folder = paths.resolve("reports/real/resources")
    folder.mkdir(parents=True)
    for name, seconds, peak in (("01_eda", 90.0, 3.1), ("05_cross_dataset", 1200.0, 6.4)):
        (folder / f"{name}.json").write_text(
            json.dumps({"name": name, "seconds": seconds, "peak_rss_gb": peak})
        )
    table = resources_table("reports/real", "real")
    lines = table.splitlines()
    assert lines[0].startswith("| notebook | minutes | peak RSS GB | estimated peak GB")
    estimated = {r.notebook: r.memory_gb for r in profile_requirements("real")["notebooks"]}
    assert f"| 05_cross_dataset | 20 | 6.4 | {estimated['05_cross_dataset']:.4g}" in table
    assert lines[-1].startswith("| all | 21.5 | 6.4")
    assert resources_table("reports/none", "real") is None


def test_make_report_is_refused_before_any_notebook_runs(
    profiles: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    marker = tmp_path / "make-ran"
    fake_make = f"{sys.executable} -c \"open('{marker}', 'w').write('ran')\""
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 2 * resources.GB)
    assert main(["report", "run", "--profile", "real", "--make", fake_make]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "2.0 GB of memory is available" in err and not marker.exists()
    assert main(["report", "run", "--profile", "real", "--no-resource-check", "--make", fake_make]) == 0
    assert marker.read_text() == "ran"


def test_the_full_profile_on_the_real_archive_is_announced_as_a_day_of_training(profiles: Path) -> None:
    raw = profiles / "data" / "raw"
    raw.mkdir(parents=True)
    for name in ("big_matrix.csv", "small_matrix.csv"):
        (raw / name).write_text("user_id,video_id\n")
    need = profile_requirements("full")
    assert need["source"] == "the real KuaiRec 2.0 archive" and need["sizes"] == data_sizes(None)
    lines = check_resources("full", available_gb=64.0, free_disk_gb=100.0)
    assert lines[-1].startswith(
        "WARNING: training in profile full on the real KuaiRec 2.0 archive may take up to"
    )
    assert "PROFILE=real caps it" in lines[-1]
    real_minutes = sum(r.training_minutes or 0 for r in profile_requirements("real")["notebooks"])
    full_minutes = sum(r.training_minutes or 0 for r in need["notebooks"])
    assert real_minutes < 3 * 60 < 10 * 60 < full_minutes  # upper bounds: every epoch of every arm and trial
    assert not any(
        line.startswith("WARNING") for line in check_resources("real", available_gb=64.0, free_disk_gb=100.0)
    )


def test_training_time_bound_grows_with_the_catalogue_only_for_full_softmax() -> None:
    bce = {"m": {"model": "sasrec", "loss": "bce", "num_epochs": 10, "maxlen": 200}}
    ce = {"m": {"model": "sasrec", "loss": "ce", "num_epochs": 10, "maxlen": 200}}
    bce_small, bce_large = (resources.training_minutes(bce, {}, 1000, n) for n in (1000, 10_000))
    ce_small, ce_large = (resources.training_minutes(ce, {}, 1000, n) for n in (1000, 10_000))
    # 10 epochs x 200,000 positions x 12 us = 24 s of BCE steps, plus validation over the catalogue
    assert abs(bce_small - (24.0 + 10 * 1000 * 1000 * 0.063e-6) / 60) < 1e-9
    assert ce_large / ce_small > 5 and bce_large / bce_small < 1.5

"""What a report profile costs: measured wall time and peak memory, and the up-front check of the machine.

Two halves:

- **Measured.** :func:`measure` times a block and reads its peak resident memory (Linux resets the
  high-water mark through ``/proc/self/clear_refs``, so each model trained in one notebook gets its own
  peak); :func:`run_measured` runs a command (``make report`` wraps every papermill run with it) and
  writes its wall time and the peak memory of the largest process it waited for (the notebook kernel)
  to a JSON file that the report's summary turns into a table.
- **Estimated before starting.** :func:`profile_requirements` estimates each notebook's peak memory and the
  disk the profile's data need, from the sizes of the data it will use (the real archive's, or the
  simulator's at the profile's scale) and the largest tensors its models build; :func:`check_resources`
  refuses, in one line with the numbers, a profile that cannot finish on this machine, instead of letting
  the kernel be killed an hour in. The coefficients come from measured runs (README, "The study at
  KuaiRec's real size", lists the estimates beside the measured peaks).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sasrec import paths
from sasrec.errors import SasrecError
from sasrec.training.config import TrainConfig

GB = 1024**3

#: Sizes of KuaiRec 2.0 at scale 1 (KUAIREC.md): users, videos and rows of each matrix.
REAL_SIZES = {
    "small_matrix": {"users": 1411, "items": 3327, "rows": 4_676_570},
    "big_matrix": {"users": 7176, "items": 10_728, "rows": 12_530_806},
}
#: Python, torch, pandas and pyarrow loaded, before any data (measured: 0.79 GB for an already prepared
#: dataset's load at scale 1, of which the data are a small part).
BASE_GB = 0.8
#: Bytes per interaction row of each step's peak (measured at scale 1 on this study's 2-core machines:
#: simulate 2.54 GB for 17.4M rows, prepare 3.3 GB for 12.7M rows; bench.md "Data at scale 1").
BYTES_PER_ROW = {"simulate": 150, "eda": 170, "prepare": 260, "prepared": 60}
#: Bytes on disk per interaction row: simulated CSVs (with their side files), the parquet cache and prepared
#: datasets together (measured: 2.8 GB for the 17.2M rows of the real-size profile).
DISK_BYTES_PER_ROW = 180


class ResourceError(SasrecError):
    """The machine cannot run a step: too little memory or disk (the message gives the numbers)."""


# ------------------------------------------------------------------------------------------ measured
def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (its high-water mark), in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


def reset_peak_rss() -> bool:
    """Reset this process's high-water mark to its current memory (Linux); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Measurement:
    """Wall time and peak resident memory of a block (filled when the block ends)."""

    seconds: float = 0.0
    peak_rss_gb: float = 0.0
    #: False where the high-water mark could not be reset: the peak is then the process's since it started.
    peak_of_block: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "peak_rss_gb": round(self.peak_rss_gb, 2),
                "peak_of_block": self.peak_of_block, **self.extra}  # fmt: skip


@contextlib.contextmanager
def measure() -> Iterator[Measurement]:
    """Time the block and read its own peak resident memory."""
    result = Measurement(peak_of_block=reset_peak_rss())
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        result.peak_rss_gb = peak_rss_bytes() / GB


def run_measured(command: Sequence[str], out: str | Path, *, name: str | None = None) -> int:
    """Run ``command``; write its wall time, exit status and the largest waited-for process's peak memory.

    The peak is ``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the largest resident set of any descendant that
    was waited for, which for papermill is the notebook's kernel. Returns the command's exit status; the
    JSON is written (atomically) only when the command succeeded, so a failed run leaves no record that
    looks complete.
    """
    started = time.perf_counter()
    completed = subprocess.run(list(command), check=False)
    seconds = time.perf_counter() - started
    if completed.returncode == 0:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak_bytes = peak if sys.platform == "darwin" else peak * 1024
        record = {
            "name": name or Path(out).stem,
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak_bytes / GB, 2),
            "cpus": os.cpu_count(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        paths.atomic_write_text(out, json.dumps(record, indent=1) + "\n", what="resource record")
    return completed.returncode if completed.returncode >= 0 else 128 - completed.returncode


def read_measured(folder: str | Path) -> list[dict[str, Any]]:
    """The records :func:`run_measured` wrote into ``folder``, sorted by name (empty when none)."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text(encoding="utf-8")))
    return records


# ----------------------------------------------------------------------------------------- estimated
def available_memory_bytes() -> int:
    """Memory available to new work (``MemAvailable``; the cgroup limit where it is lower)."""
    available = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(limit_file).read_text().strip()
            if text != "max" and int(text) < available:
                available = int(text)
    return available


def data_sizes(scale: float | None) -> dict[str, dict[str, int]]:
    """Users, videos and rows of each matrix: the real sizes, or the simulator's at ``scale``.

    The simulator scales users and videos by ``scale``; rows by its square (each user sees ``scale`` times
    as many videos).
    """
    if scale is None:
        return {name: dict(sizes) for name, sizes in REAL_SIZES.items()}
    return {
        name: {"users": max(1, round(s["users"] * scale)), "items": max(1, round(s["items"] * scale)),
               "rows": max(1, round(s["rows"] * scale * scale))}
        for name, s in REAL_SIZES.items()
    }  # fmt: skip


def _configs(models: dict[str, dict[str, Any]], training: dict[str, Any]) -> list[TrainConfig]:
    """Each model's :class:`TrainConfig`: the shared ``training`` mapping, its own on top, its presets below
    (as :func:`~sasrec.study.steps.model_configs` builds them for the notebooks)."""
    configs = []
    for spec in models.values():
        values = {**training, **(spec or {})}
        configs.append(TrainConfig.for_model(values.pop("model", "sasrec"), **values))
    return configs


def _model_peak_bytes(models: dict[str, dict[str, Any]], training: dict[str, Any], items: int) -> float:
    """The largest training tensor of ``models`` on a catalogue of ``items``: the full-softmax logits.

    Full softmax (``ce``) holds (batch, maxlen, items) logits, their softmax and their gradient; gBCE holds
    (batch, maxlen, negatives + 1) per chunk; BCE two scores per position.
    """
    peak = 0.0
    for config in _configs(models, training):
        positions = config.batch_size * config.maxlen
        width = items if config.loss == "ce" else (config.num_negatives or 1) + 1
        peak = max(peak, positions * width * 4 * 3 + positions * config.hidden_units * 4 * 40)
    return peak


#: Microseconds per training position (batch 128) on this study's 2-core CPU, from ``bench_models``
#: (maxlen 200, 10,728 videos): a base cost of the transformer step, plus a cost per scored item for full
#: softmax (SASRec-CE 4.9k, GRU4Rec 4.2k, BERT4Rec 15.4k positions/s; BERT4Rec scores only its masked 20%)
#: or per sampled negative (gSASRec 8.4k positions/s with 256).
US_PER_POSITION = {"base": 12.0, "ce_item": 0.018, "bert_item": 0.0049, "negative": 0.42}
#: Microseconds per (user, video) pair of full-ranking validation (``bench_eval``: 7,176 x 10,728 in 4.9 s).
US_PER_RANKED_PAIR = 0.063


def training_minutes(
    models: dict[str, dict[str, Any]], training: dict[str, Any], users: int, items: int
) -> float:
    """At most how many minutes ``models`` train on ``users`` sequences over ``items`` videos (every epoch run).

    An upper bound: early stopping ends most runs sooner; sequences shorter than maxlen cost less.
    """
    total_us = 0.0
    for config in _configs(models, training):
        per_position = US_PER_POSITION["base"]
        if config.model == "bert4rec":
            per_position += US_PER_POSITION["bert_item"] * items
        elif config.loss == "ce":
            per_position += US_PER_POSITION["ce_item"] * items
        elif config.loss in ("gbce", "sampled_softmax"):
            per_position += US_PER_POSITION["negative"] * min(config.num_negatives, items)
        positions = users * config.maxlen
        validations = config.num_epochs // max(config.eval_every, 1)
        total_us += (
            config.num_epochs * positions * per_position + validations * users * items * US_PER_RANKED_PAIR
        )
    return total_us / 60e6


def _ease_bytes(items: int) -> float:
    """EASE (Steck, WWW 2019) inverts an (items, items) float64 Gram matrix: three such matrices at once."""
    return 3 * 8 * items * items


@dataclass(frozen=True)
class Requirement:
    """The estimated peak memory of one notebook, what dominates it, and at most how long its training takes."""

    notebook: str
    memory_gb: float
    reason: str
    training_minutes: float | None = None


def _notebook_requirements(params: dict[str, dict[str, Any]], sizes: dict[str, dict[str, int]],
                           simulate: bool) -> list[Requirement]:  # fmt: skip
    small, big = sizes["small_matrix"], sizes["big_matrix"]
    rows = small["rows"] + big["rows"]
    needs: list[Requirement] = []

    def add(notebook: str, parts: dict[str, float], minutes: float | None = None) -> None:
        name, _size = max(parts.items(), key=lambda kv: kv[1])
        memory = round((BASE_GB * GB + sum(parts.values())) / GB, 2)
        needs.append(Requirement(notebook, memory, name, None if minutes is None else round(minutes, 1)))

    if simulate and BYTES_PER_ROW["simulate"] > BYTES_PER_ROW["eda"]:
        add("01_eda", {"simulating both matrices": BYTES_PER_ROW["simulate"] * rows})
    else:
        add("01_eda", {"reading both matrices": BYTES_PER_ROW["eda"] * rows})
    add("02_prepare_data", {"preparing big_matrix": BYTES_PER_ROW["prepare"] * big["rows"]})
    for notebook, data, models_key in (("03_train", small, "models"), ("06_experiments", small, "variants")):
        nb = params.get(notebook, {})
        models, training = nb.get(models_key) or {}, nb.get("training") or {}
        if notebook == "06_experiments":  # every grid point, trained to the largest epoch count validated
            grid = nb.get("grid") or {}
            points = 1
            for key, values in grid.items():
                points *= len(values) if key != "num_epochs" else 1
            training = {**training, "num_epochs": max(grid.get("num_epochs") or [1]),
                        "maxlen": max(grid.get("maxlen") or [training.get("maxlen", 200)])}  # fmt: skip
            models = {f"{name}_{i}": spec for name, spec in models.items() for i in range(points)}
        add(notebook, {"prepared small_matrix": BYTES_PER_ROW["prepared"] * data["rows"],
                       "training logits": _model_peak_bytes(models, training, data["items"])},
            training_minutes(models, training, data["users"], data["items"]))  # fmt: skip
    for notebook, models, training in (_features_arms(params.get("07_features", {})),
                                       _tuning_arms(params.get("08_tuning", {}))):  # fmt: skip
        if models:
            add(notebook, {"prepared small_matrix": BYTES_PER_ROW["prepared"] * small["rows"],
                           "training logits": _model_peak_bytes(models, training, small["items"])},
                training_minutes(models, training, small["users"], small["items"]))  # fmt: skip
    add("04_evaluate", {"prepared small_matrix": BYTES_PER_ROW["prepared"] * small["rows"],
                        "EASE Gram matrices": _ease_bytes(small["items"])})  # fmt: skip
    nb = params.get("05_cross_dataset", {})
    add("05_cross_dataset", {
        "prepared matrices": BYTES_PER_ROW["prepared"] * rows,
        "EASE Gram matrices": _ease_bytes(big["items"]) if "ease" in (nb.get("baselines") or {}) else 0.0,
        "training logits": _model_peak_bytes(nb.get("models") or {}, nb.get("training") or {}, big["items"]),
    }, training_minutes(nb.get("models") or {}, nb.get("training") or {}, big["users"], big["items"]))  # fmt: skip
    # notebook 09: float64 pair rows, every big-matrix user x its candidates x about 70 columns (the benchmark's)
    if "09_two_stage" in params:
        candidates = int((params["09_two_stage"].get("two_stage") or {}).get("num_candidates", 200))
        add("09_two_stage", {"prepared matrices": BYTES_PER_ROW["prepared"] * rows,
                             "ranker rows": 8.0 * 70 * big["users"] * min(candidates, big["items"]),
                             "EASE Gram matrices": _ease_bytes(big["items"])})  # fmt: skip
    return needs


def _features_arms(nb: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Notebook 07's trained arms: every model under every target, each twin model under each protocol once
    without features and once per feature candidate, and
    the ablation (every, none, without and with each group) under two protocols of its largest twin model."""
    models, training = nb.get("models") or {}, nb.get("training") or {}
    twins = [name for name in nb.get("twin_models") or [] if name in models]
    groups = len(nb.get("ablation_groups") or [])
    arms = {f"{name}|{target}": spec for name, spec in models.items() for target in nb.get("targets") or []}
    candidates = nb.get("features", "all")
    variants = 1 + (
        1 if isinstance(candidates, str) else len(candidates)
    )  # the id-only twin and each candidate
    arms.update(
        {f"{name}|{p}|{v}": models[name] for name in twins for p in range(3) for v in range(variants)}
    )
    if twins:
        arms.update({f"ablation|{i}": models[twins[0]] for i in range(2 * (2 + 2 * groups))})
    return "07_features", arms, training


def _tuning_arms(nb: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Notebook 08's trials: ``trials`` runs of every trained model, each at most ``epoch_cap`` epochs at the
    longest input length its search space allows, and one final training per model with the comparison's
    schedule (``training.num_epochs``)."""
    tuning, training = nb.get("tuning") or {}, dict(nb.get("training") or {})
    models, spaces = nb.get("models") or {}, tuning.get("spaces") or {}
    schedule = int(training.get("num_epochs", 1))
    arms = {}
    for name, spec in models.items():
        lengths = (spaces.get(name) or {}).get("maxlen")
        longest = max(lengths) if isinstance(lengths, list) and lengths else training.get("maxlen", 200)
        arms.update(
            {f"{name}|{i}": {**(spec or {}), "maxlen": longest} for i in range(int(tuning.get("trials", 0)))}
        )
        arms[f"{name}|final"] = {**(spec or {}), "maxlen": longest, "num_epochs": max(schedule, 1)}
    training["num_epochs"] = int(tuning.get("epoch_cap", training.get("num_epochs", 1)))
    return "08_tuning", arms, training


def profile_requirements(profile: str) -> dict[str, Any]:
    """Estimated peak memory per notebook and the disk the data need, for ``params/<profile>``.

    The data are the real archive's when the profile reads data/raw (or names a folder holding the official
    matrices), else the simulator's at the profile's scale.
    """
    from sasrec.config import load_yaml_mapping
    from sasrec.data import kuairec

    folder = paths.project_root() / "params" / profile
    params = {p.stem: load_yaml_mapping(p) for p in sorted(folder.glob("*.yaml"))}
    first = params.get("01_eda") or next(iter(params.values()), {})
    profile_paths, simulator = first.get("paths") or {}, first.get("simulator") or {}
    data_dir = profile_paths.get("data_dir") or ""
    candidates = [paths.resolve(data_dir)] if data_dir else [paths.raw_dir()]
    real = any(kuairec.has_official_matrices(c) and not (c / "simulation.json").exists() for c in candidates)
    if real:
        sizes, source = data_sizes(None), "the real KuaiRec 2.0 archive"
        simulate = False
    else:
        scale = float(simulator.get("scale", 0.2))
        sizes, source = data_sizes(scale), f"the simulator at scale {scale:g}"
        target = (
            paths.resolve(data_dir) if data_dir
            else paths.resolve(profile_paths.get("simulated_dir") or paths.simulated_dir())
        )  # fmt: skip
        simulate = not kuairec.has_official_matrices(target)
    rows = sum(s["rows"] for s in sizes.values())
    return {
        "profile": profile,
        "source": source,
        "sizes": sizes,
        "notebooks": _notebook_requirements(params, sizes, simulate),
        "disk_gb": round(DISK_BYTES_PER_ROW * rows / GB, 2),
    }


def check_resources(
    profile: str, *, available_gb: float | None = None, free_disk_gb: float | None = None
) -> list[str]:
    """Refuse a profile that cannot finish here; return one line per notebook with its estimate otherwise.

    Raises:
        ResourceError: a notebook's estimated peak exceeds 90% of the available memory, or the data need
            more disk than is free; the message names the notebook, what dominates it and both numbers.
    """
    need = profile_requirements(profile)
    if available_gb is None:
        available_gb = available_memory_bytes() / GB
    if free_disk_gb is None:
        free_disk_gb = paths.free_disk_gib(paths.project_root() / "data")[1]
    budget = 0.9 * available_gb
    too_big = [r for r in need["notebooks"] if r.memory_gb > budget]
    if too_big:
        worst = max(too_big, key=lambda r: r.memory_gb)
        raise ResourceError(
            f"profile {profile} on {need['source']}: {worst.notebook} needs about {worst.memory_gb:.1f} GB "
            f"(mostly {worst.reason}) but {available_gb:.1f} GB of memory is available (90%: {budget:.1f} GB)"
            f"; {len(too_big)} notebook(s) too big. Use a machine with more memory, or lower the sizes in "
            f"params/{profile}/ (batch_size, maxlen, the models' hidden sizes; the simulator's scale); "
            "CHECK_RESOURCES=false skips this check"
        )
    if need["disk_gb"] > free_disk_gb:
        raise ResourceError(
            f"profile {profile} on {need['source']}: its data need about {need['disk_gb']:.1f} GB of disk but "
            f"{free_disk_gb:.1f} GB is free under data/; free some space (make clean removes caches)"
        )
    lines = [
        f"{r.notebook}: about {r.memory_gb:.1f} GB (mostly {r.reason}) of {available_gb:.1f} GB available"
        + (
            f"; training at most {r.training_minutes:.3g} min on 2 cores"
            if r.training_minutes is not None
            else ""
        )
        for r in need["notebooks"]
    ]
    hours = sum(r.training_minutes or 0.0 for r in need["notebooks"]) / 60
    if hours > 3:
        lines.append(
            f"WARNING: training in profile {profile} on {need['source']} may take up to {hours:.0f} hours on "
            "2 cores (every epoch run; early stopping ends most runs sooner); PROFILE=real caps it for this size"
        )
    return lines

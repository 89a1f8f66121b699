"""Where a dataset comes from: the official or simulated KuaiRec files, or a SASRec text file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sasrec import paths
from sasrec.data.preparation.params import DATASETS, NO_REMAPPING_SUFFIX
from sasrec.errors import ConfigError, MissingDataError


# --------------------------------------------------------------------------------------------- sources
def default_data_dir() -> Path:
    """Folder holding the interaction matrices: the official files if present, else the simulated ones.

    Raises:
        MissingDataError: neither ``data/raw`` holds the official matrices nor ``data/simulated`` the
            simulator's files.
    """
    from sasrec.data import kuairec, simulator

    raw = paths.raw_dir()
    if kuairec.has_official_matrices(raw):
        return raw
    simulated = paths.simulated_dir()
    if simulated.is_dir() and simulator.is_simulated(simulated):
        return simulated
    raise MissingDataError(
        f"no interaction data: {raw} does not hold the official KuaiRec matrices and {simulated} holds no "
        "simulated files; run `make data` (real KuaiRec 2.0) or `make simulate` (KuaiRec-shaped simulator)"
    )


def _resolve_dataset(dataset: str, remap: bool | None) -> tuple[str, str, bool, Path | None]:
    """Return (name, base name, remap, text path or None) of a dataset argument."""
    base = dataset[: -len(NO_REMAPPING_SUFFIX)] if dataset.endswith(NO_REMAPPING_SUFFIX) else dataset
    if base in DATASETS:
        named_remap = not dataset.endswith(NO_REMAPPING_SUFFIX)
        if remap is not None and bool(remap) != named_remap:
            raise ConfigError(
                f"remap={remap} contradicts dataset name {dataset!r}: use {base!r} for remapped ids or "
                f"{base + NO_REMAPPING_SUFFIX!r} for original ids"
            )
        return dataset, base, named_remap, None
    text_path = paths.resolve(dataset)
    if text_path.is_file():
        stem = text_path.stem
        text_remap = True if remap is None else bool(remap)
        return stem, stem, text_remap, text_path
    looks_like_path = os.sep in dataset or "/" in dataset or Path(dataset).suffix != ""
    if looks_like_path:
        raise MissingDataError(f"SASRec text file {text_path} does not exist")
    names = [*DATASETS, *(d + NO_REMAPPING_SUFFIX for d in DATASETS)]
    raise ConfigError(
        f"unknown dataset {dataset!r}: expected one of {', '.join(names)} or the path of a SASRec text "
        "file ('user item' or 'user item liked' per line)"
    )


def _fingerprint(path: Path) -> str:
    """Fingerprint of a source file (``sasrec.kuairec.source_fingerprint``)."""
    from sasrec.data import kuairec

    return str(kuairec.source_fingerprint(path))


def _default_out_dir(name: str, data_source: str = "kuairec") -> Path:
    """``data/processed/<name>``; text datasets under ``data/processed/text/<stem>`` (a file named
    ``small_matrix.txt`` must not replace the prepared KuaiRec ``small_matrix``)."""
    if data_source == "text":
        return paths.processed_dir() / "text" / name
    return paths.processed_dir() / name


# ------------------------------------------------------------------------------------------- pipeline
def _source(dataset: str, data_dir: Path | None, remap: bool | None) -> dict[str, Any]:
    """Where a dataset comes from: name, base name, remap flag, source file and its kind."""
    name, base, remap_flag, text_path = _resolve_dataset(dataset, remap)
    if text_path is not None:
        return {"name": name, "base": base, "remap": remap_flag, "path": text_path, "data_source": "text"}
    from sasrec.data import kuairec, simulator

    directory = paths.resolve(data_dir) if data_dir is not None else default_data_dir()
    if not directory.is_dir():
        raise MissingDataError(
            f"data folder {directory} does not exist; run `make data` (real KuaiRec 2.0) or `make simulate`"
        )
    found = kuairec.find_file(directory, f"{base}.csv")
    if found is None:
        raise MissingDataError(
            f"{base}.csv not found in {directory}; run `make data` (real KuaiRec 2.0 into {paths.raw_dir()}) "
            f"or `make simulate` (simulated files into {paths.simulated_dir()})"
        )
    found = Path(found)
    kind = (
        "simulated"
        if simulator.is_simulated(found.parent) or simulator.is_simulated(directory)
        else "kuairec"
    )
    return {"name": name, "base": base, "remap": remap_flag, "path": found, "data_source": kind}

"""The context every notebook opens first: where things are, which data, how it is prepared.

``study = Study.from_params(paths, simulator, preparation, progress)`` turns the ``paths:``,
``simulator:`` and ``preparation:`` mappings of a params file into their configuration objects, finds the
data (real KuaiRec 2.0 in data/raw, else the simulator's files, written on first use) and gives every
notebook the same loader, figure folder and metrics JSON store. Paths resolve from the project root, so
JupyterLab, papermill and nbval behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sasrec import paths as project_paths
from sasrec.data.config import PrepareConfig, SimulatorSettings, from_mapping
from sasrec.data.contracts import PreparedData
from sasrec.errors import MissingDataError
from sasrec.evaluation.results import json_ready


@dataclass(frozen=True)
class StudyPaths:
    """Folders of a report profile (relative paths resolve from the project root).

    Attributes:
        data_dir: folder of the KuaiRec CSVs; empty: data/raw when the real archive is there, else the
            simulator's folder (``simulated_dir``).
        simulated_dir: where the simulator writes when ``data_dir`` is empty and data/raw holds no real
            archive; empty: data/simulated (a profile at another scale names its own folder).
        processed_dir: prepared datasets.
        models_dir: checkpoints and logs.
        reports_dir: figures/ and metrics/ of the report.
    """

    data_dir: str = ""
    simulated_dir: str = ""
    processed_dir: str = "data/processed"
    models_dir: str = "models"
    reports_dir: str = "reports"


@dataclass
class Study:
    """One notebook's view of a report profile."""

    paths: StudyPaths = field(default_factory=StudyPaths)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    preparation: PrepareConfig = field(default_factory=PrepareConfig)
    progress: bool = False

    @classmethod
    def from_params(
        cls,
        paths: dict[str, Any] | None = None,
        simulator: dict[str, Any] | None = None,
        preparation: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> Study:
        """Build from the params file's mappings (unknown keys are refused, naming the section)."""
        return cls(
            paths=from_mapping(StudyPaths, paths, "paths"),
            simulator=from_mapping(SimulatorSettings, simulator, "simulator"),
            preparation=from_mapping(PrepareConfig, preparation, "preparation"),
            progress=bool(progress),
        )

    # ------------------------------------------------------------------------------------------ data
    @cached_property
    def data_path(self) -> Path:
        """The raw data folder (the simulator writes its files there first when needed)."""
        from sasrec.study.steps import resolve_data_dir

        return resolve_data_dir(
            self.paths.data_dir,
            simulate_scale=self.simulator.scale,
            seed=self.simulator.seed,
            simulated_dir=self.paths.simulated_dir,
        )

    @cached_property
    def data_source(self) -> str:
        """One sentence saying which data this run uses (real KuaiRec 2.0 or the simulator)."""
        from sasrec.study.steps import describe_data_source

        return describe_data_source(self.data_path)

    def load(self, dataset: str) -> PreparedData:
        """Prepared ``dataset`` (reused when up to date), prepared with :attr:`preparation`."""
        from sasrec.data.preparation.pipeline import load_prepared

        out = project_paths.resolve(self.paths.processed_dir) / Path(dataset).stem
        return load_prepared(
            dataset,
            data_dir=self.data_path,
            out_dir=out,
            progress=self.progress,
            **self.preparation.to_params(),
        )

    # --------------------------------------------------------------------------------------- outputs
    @property
    def models_dir(self) -> Path:
        """Checkpoint folder of the profile."""
        return project_paths.resolve(self.paths.models_dir)

    @property
    def reports_dir(self) -> Path:
        """Report folder of the profile."""
        return project_paths.resolve(self.paths.reports_dir)

    def figure(self, name: str) -> Path:
        """``<reports_dir>/figures/<name>`` (folder created)."""
        folder = self.reports_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def metrics_path(self, name: str) -> Path:
        """``<reports_dir>/metrics/<name>.json``."""
        return self.reports_dir / "metrics" / f"{name}.json"

    def save_json(self, payload: dict[str, Any], name: str) -> Path:
        """Write ``payload`` (with the data source) sealed and atomically to ``metrics/<name>.json``.

        The seal records the data source, dataset, checkpoints (with their SHA-256) and the notebook
        that rewrites the file (:data:`METRICS_NOTEBOOKS`); see :func:`~sasrec.evaluation.results.write_metrics_json`.
        """
        from sasrec.evaluation.results import write_metrics_json

        return write_metrics_json(
            {"data_source": self.data_source, **payload},
            self.metrics_path(name),
            rewritten_by=metrics_writer(name),
        )

    def load_json(self, name: str) -> dict[str, Any]:
        """Read and verify ``metrics/<name>.json`` (without its seal).

        Raises:
            MissingDataError: the file is missing (one line naming the notebook that writes it).
            IntegrityError: the file is cut short, edited by hand or unsealed (one line naming the notebook).
        """
        from sasrec.evaluation.results import read_metrics_json

        path = self.metrics_path(name)
        if not path.is_file():
            raise MissingDataError(f"{path} is missing: run {metrics_writer(name)} first")
        return read_metrics_json(path, hint=f"run {metrics_writer(name)} to rewrite it")


#: The notebook that writes each ``metrics/<name>.json`` of a report profile.
METRICS_NOTEBOOKS = {
    "eda": "01_eda",
    "prepare": "02_prepare_data",
    "training": "03_train",
    "evaluation": "04_evaluate",
    "training_big": "05_cross_dataset",
    "cross_dataset": "05_cross_dataset",
    "experiments": "06_experiments",
    "features": "07_features",
    "tuning": "08_tuning",
    "two_stage": "09_two_stage",
}


def metrics_writer(name: str) -> str:
    """What writes ``metrics/<name>.json``, in words: ``notebook 03_train (make report)``."""
    notebook = METRICS_NOTEBOOKS.get(name)
    return f"notebook {notebook} (make report)" if notebook else "the notebook that writes it (make report)"


__all__ = ["Study", "StudyPaths", "json_ready"]

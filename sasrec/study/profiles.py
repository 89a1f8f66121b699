"""Report profiles: their folders, their lock, and which executed notebooks must run again.

``make report`` resumes by timestamps; :func:`verify_profile` adds the content check: an executed notebook
whose notebook JSON, HTML or metrics JSON is missing or damaged is removed so that make reruns it. A profile
is written under :func:`profile_lock` (two ``make report`` of one profile never interleave).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sasrec import paths
from sasrec.errors import ConfigError, IntegrityError, MissingDataError

NO_WAIT_HINT = (
    "wait for it to finish, or run again without --no-wait (make report without WAIT=false) to wait for it"
)


# ------------------------------------------------------------------------------------------ profile
def profile_dirs(profile: str) -> tuple[Path, Path, Path]:
    """The report folder of a profile (``reports/`` for full, ``reports/<profile>/``), its executed/ and html/."""
    out = paths.project_root() / "reports"
    if profile != "full":
        out = out / profile
    return out, out / "executed", out / "html"


def check_profile(profile: str) -> None:
    folder = paths.project_root() / "params" / profile
    if not folder.is_dir():
        known = sorted(p.name for p in folder.parent.glob("*") if p.is_dir())
        raise ConfigError(
            f"--profile {profile}: {folder} does not exist; choose one of {', '.join(known) or 'full, smoke'}"
        )


@contextlib.contextmanager
def profile_lock(profile: str, *, wait: bool = True) -> Iterator[None]:
    """Hold the lock of a report profile (on its executed/ folder) for the block."""
    from sasrec.locks import locked

    _out, executed, _html = profile_dirs(profile)
    with locked(executed, what=f"report profile {profile}", wait=wait, hint=NO_WAIT_HINT):
        yield


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(paths.project_root()))
    except ValueError:
        return str(path)


def _metrics_dir(profile: str, notebook: str, default: Path) -> Path:
    """``paths.reports_dir`` of the notebook's params file (where it writes its metrics), else ``default``."""
    from sasrec.config import load_yaml_mapping

    params_file = paths.project_root() / "params" / profile / f"{notebook}.yaml"
    if params_file.is_file():
        reports_dir = (load_yaml_mapping(params_file).get("paths") or {}).get("reports_dir")
        if reports_dir:
            return paths.resolve(reports_dir) / "metrics"
    return default / "metrics"


def _complete_html(page: Path) -> bool:
    """Whether ``page`` exists and ends with ``</html>`` (nbconvert ran to the end)."""
    try:
        with page.open("rb") as handle:
            handle.seek(max(page.stat().st_size - 256, 0))
            return b"</html>" in handle.read()
    except OSError:
        return False


def notebook_problem(profile: str, executed: Path) -> str | None:
    """Why an executed notebook must run again, or None.

    Its outputs are checked: the executed notebook parses as JSON, its HTML is complete, and every metrics
    JSON it writes (:data:`~sasrec.study.context.METRICS_NOTEBOOKS`, in the folder its params file names)
    exists and verifies (:func:`~sasrec.evaluation.results.read_metrics_json`).
    """
    from sasrec.evaluation.results import read_metrics_json
    from sasrec.study.context import METRICS_NOTEBOOKS

    try:
        json.loads(executed.read_bytes())
    except (OSError, ValueError):
        return "the executed notebook is not valid JSON (damaged)"
    out, _executed, html = profile_dirs(profile)
    page = html / f"{executed.stem}.html"
    if not _complete_html(page):
        state = "is cut short" if page.is_file() else "is missing"
        return f"its HTML {shown(page)} {state} (killed during nbconvert); make report reruns {executed.stem}"
    folder = _metrics_dir(profile, executed.stem, out)
    for name in sorted(m for m, notebook in METRICS_NOTEBOOKS.items() if notebook == executed.stem):
        path = folder / f"{name}.json"
        try:
            read_metrics_json(path, hint=f"make report reruns {executed.stem}")
        except MissingDataError:
            return f"its metrics file {shown(path)} is missing; make report reruns {executed.stem}"
        except IntegrityError as exc:
            return str(exc)
    return None


def verify_profile(profile: str, *, dry_run: bool = False) -> list[str]:
    """Remove every executed notebook (and its HTML) of ``profile`` whose outputs are missing or damaged.

    ``make`` decides what to rerun by timestamps; a removed executed notebook reruns (and the notebooks
    that depend on it after it).

    Call it under :func:`profile_lock`. Returns one line per removal, naming the files and the reason
    (with ``dry_run``, what would be removed; nothing is).
    """
    _out, executed, html = profile_dirs(profile)
    lines = []
    for notebook in sorted(executed.glob("*.ipynb")):
        if notebook.name.endswith(".partial.ipynb"):  # an interrupted run's output; papermill rewrites it
            continue
        problem = notebook_problem(profile, notebook)
        if problem is None:
            continue
        page = html / f"{notebook.stem}.html"
        removed = shown(notebook) + (f" and {shown(page)}" if page.exists() else "")
        if not dry_run:
            notebook.unlink(missing_ok=True)
            page.unlink(missing_ok=True)
        lines.append(f"{'would remove' if dry_run else 'removed'} {removed}: {problem}")
    return lines


# -------------------------------------------------------------------------------- one model of a profile
#: The notebooks that train models, and the params key naming the dataset each trains on.
TRAINING_NOTEBOOKS = {"03_train": "dataset", "05_cross_dataset": "train_dataset"}


def profile_train_config(
    profile: str, notebook: str, model: str, *, with_data_dir: bool = True
) -> dict[str, Any]:
    """The ``train --config`` mapping that trains ``model`` of ``params/<profile>/<notebook>.yaml`` alone.

    The notebook's shared ``training`` mapping, then the model's own mapping on top (as the notebook's
    :func:`~sasrec.study.steps.model_configs` does), the dataset it trains on, and the profile's data folder
    (the simulator writes it first when it is missing; ``with_data_dir=False`` leaves it out), so that ``torchrun ... -m sasrec train --config FILE``
    runs the report's model with the report's settings on one or several processes.

    Raises:
        ConfigError: an unknown profile, notebook or model (the known ones named).
    """
    from sasrec.config import load_yaml_mapping
    from sasrec.study.context import Study

    check_profile(profile)
    if notebook not in TRAINING_NOTEBOOKS:
        raise ConfigError(f"--notebook {notebook}: expected one of {', '.join(TRAINING_NOTEBOOKS)}")
    params = load_yaml_mapping(paths.project_root() / "params" / profile / f"{notebook}.yaml")
    models = params.get("models") or {}
    if model not in models:
        raise ConfigError(
            f"--model {model}: params/{profile}/{notebook}.yaml has no such model; expected one of "
            f"{', '.join(models)}"
        )
    config = {
        **(params.get("training") or {}),
        **(models[model] or {}),
        "dataset": params[TRAINING_NOTEBOOKS[notebook]],
    }
    if with_data_dir:
        study = Study.from_params(params.get("paths"), params.get("simulator"), params.get("preparation"))
        config["data_dir"] = str(study.data_path)
    return config

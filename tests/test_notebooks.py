"""Notebook hygiene, and nbval runs of every notebook on the smoke parameters.

The notebooks are parameterised with ``params/smoke/*.yaml`` by papermill (without executing), then executed
cell by cell by nbval (``--nbval-lax``: every cell must run without error) in a temporary project root
(``SASREC_ROOT``), so nothing is written into the repository. Each notebook test can run alone: a notebook
whose inputs another notebook writes (04 reads 03's training summary) has that notebook executed first.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sasrec.errors import ConfigError
from sasrec.study import notebooks as nb_tools

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [nb.stem for nb in NOTEBOOKS]
EXPECTED = [
    "01_eda",
    "02_prepare_data",
    "03_train",
    "04_evaluate",
    "05_cross_dataset",
    "06_experiments",
    "07_features",
    "08_tuning",
    "09_two_stage",
]
SHARED = ("paths", "simulator", "preparation", "progress")
#: metrics a notebook needs from an earlier one (the earlier notebook runs first when they are missing)
NEEDS = {
    "04_evaluate": ("03_train", "training"),
    "08_tuning": ("03_train", "training"),
    "09_two_stage": ("03_train", "training"),
}


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def _params(profile: str, name: str) -> dict:
    return yaml.safe_load((ROOT / "params" / profile / f"{name}.yaml").read_text(encoding="utf-8"))


def test_all_notebooks_present() -> None:
    assert NAMES == EXPECTED


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_parameters_cell_equals_the_full_profile(notebook: Path) -> None:
    defaults = nb_tools.parameters_cell(notebook)
    assert defaults == _params("full", notebook.stem), "run `make format` to sync the parameters cell"
    smoke = _params("smoke", notebook.stem)
    assert set(smoke) == set(defaults), (
        f"smoke and full profiles set different parameters: {set(smoke) ^ set(defaults)}"
    )


@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_every_notebook_of_a_profile_shares_paths_simulator_and_preparation(profile: str) -> None:
    first = _params(profile, EXPECTED[0])
    for name in EXPECTED[1:]:
        params = _params(profile, name)
        for key in SHARED:
            assert params[key] == first[key], f"{profile}/{name}.yaml: {key} differs from {EXPECTED[0]}.yaml"


def test_parameters_sync_detects_and_repairs_a_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "params" / "full").mkdir(parents=True)
    source = ROOT / "notebooks" / "03_train.ipynb"
    (root / "notebooks" / source.name).write_text(source.read_text(encoding="utf-8"))
    params = _params("full", "03_train")
    params["training"]["num_epochs"] = 7  # a changed value in the YAML only
    (root / "params" / "full" / "03_train.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("SASREC_ROOT", str(root))
    problems = nb_tools.check(root / "notebooks")
    assert len(problems) == 1 and "training" in problems[0] and "make format" in problems[0]
    assert nb_tools.sync_parameters(root / "notebooks" / "03_train.ipynb")
    assert nb_tools.check(root / "notebooks") == []
    assert nb_tools.parameters_cell(root / "notebooks" / "03_train.ipynb")["training"]["num_epochs"] == 7


def test_overrides_of_one_value_and_their_errors() -> None:
    params = _params("full", "03_train")
    changed = nb_tools.apply_overrides(params, ["training.num_epochs=10", "models.gru4rec.dropout_rate=0.5"])
    assert changed["training"]["num_epochs"] == 10 and changed["models"]["gru4rec"]["dropout_rate"] == 0.5
    assert params["training"]["num_epochs"] != 10  # the input is not modified
    with pytest.raises(ConfigError, match="num_epoch"):
        nb_tools.apply_overrides(params, ["training.num_epoch=10"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        nb_tools.apply_overrides(params, ["training.num_epochs"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_notebooks_are_thin_and_stored_without_outputs(notebook: Path) -> None:
    for cell in _cells(notebook):
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, f"{notebook.name} has outputs"
        tree = ast.parse("".join(cell["source"]))
        defined = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Lambda)]
        assert not defined, f"{notebook.name}: notebooks call sasrec, they define no functions or classes"


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary project root holding the notebooks parameterised with the smoke profile."""
    papermill = pytest.importorskip("papermill")
    root = tmp_path_factory.mktemp("smoke_project")
    (root / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        papermill.execute_notebook(
            str(notebook),
            str(root / "notebooks" / notebook.name),
            parameters=_params("smoke", notebook.stem),
            prepare_only=True,
            kernel_name="python3",
        )
    return root


def _environment(project: Path) -> dict[str, str]:
    return {**os.environ, "SASREC_ROOT": str(project), "SASREC_PROGRESS": "0", "MPLBACKEND": "Agg"}


def _ensure_inputs(project: Path, name: str) -> None:
    """Run the notebook whose outputs ``name`` reads when they are missing (a test that runs alone)."""
    if name not in NEEDS:
        return
    earlier, produced = NEEDS[name]
    if (project / "reports" / "smoke" / "metrics" / f"{produced}.json").is_file():
        return
    import papermill

    os.environ.update({k: v for k, v in _environment(project).items() if k.startswith(("SASREC", "MPL"))})
    papermill.execute_notebook(
        str(project / "notebooks" / f"{earlier}.ipynb"),
        str(project / f"{earlier}.executed.ipynb"),
        kernel_name="python3",
        cwd=str(project / "notebooks"),
        progress_bar=False,
    )


@pytest.mark.notebooks
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_under_nbval_on_smoke_parameters(smoke_project: Path, name: str) -> None:
    _ensure_inputs(smoke_project, name)
    command = [
        sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900",
        "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(smoke_project),
        str(smoke_project / "notebooks" / f"{name}.ipynb"),
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        cwd=smoke_project,
        env=_environment(smoke_project),
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    metrics = smoke_project / "reports" / "smoke" / "metrics"
    produced = {"01_eda": "eda", "02_prepare_data": "prepare", "03_train": "training", "04_evaluate": "evaluation",
                "05_cross_dataset": "cross_dataset", "06_experiments": "experiments", "07_features": "features",
                "08_tuning": "tuning", "09_two_stage": "two_stage"}[name]  # fmt: skip
    assert (metrics / f"{produced}.json").is_file(), f"{produced}.json was not written"
    payload = json.loads((metrics / f"{produced}.json").read_text())
    assert "simulator" in payload["data_source"]  # every report says which data it ran on
    if name == "04_evaluate":
        models = set(pd.DataFrame(payload["table"])["model"])
        assert {"random", "pop", "sasrec_bce", "gsasrec", "bert4rec", "gru4rec"} <= models
        assert payload["fit_on"] == "train" and len({row["sha256"] for row in payload["fit_events"]}) == 1

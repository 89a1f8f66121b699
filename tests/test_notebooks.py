"""Notebook hygiene, and nbval runs of every notebook on the smoke parameters.

The notebooks are parameterised with ``params/smoke/*.yaml`` by papermill (without executing), then
executed cell by cell by nbval (``--nbval-lax``: every cell must run without error) in a temporary project
root (``SASREC_ROOT``), so nothing is written into the repository.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
NAMES = [nb.stem for nb in NOTEBOOKS]
EXPECTED = ["01_eda", "02_prepare_data", "03_train", "04_evaluate", "05_cross_dataset", "06_experiments"]


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text(encoding="utf-8"))["cells"]


def _parameters(notebook: Path) -> dict:
    tagged = [c for c in _cells(notebook) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: exactly one cell must be tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    values = {}
    for node in tree.body:
        assert (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ), f"{notebook.name}: the parameters cell may only hold `name = literal` lines"
        values[node.targets[0].id] = ast.literal_eval(node.value)  # raises on anything but a literal
    return values


def test_all_notebooks_present() -> None:
    assert NAMES == EXPECTED


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_parameters_cell_defaults_equal_the_full_profile(notebook: Path) -> None:
    defaults = _parameters(notebook)
    full = yaml.safe_load((ROOT / "params" / "full" / f"{notebook.stem}.yaml").read_text(encoding="utf-8"))
    smoke = yaml.safe_load((ROOT / "params" / "smoke" / f"{notebook.stem}.yaml").read_text(encoding="utf-8"))
    assert defaults == full
    assert set(smoke) <= set(defaults), f"smoke profile sets unknown parameters: {set(smoke) - set(defaults)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=NAMES)
def test_notebooks_are_thin_and_stored_without_outputs(notebook: Path) -> None:
    for cell in _cells(notebook):
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs") and cell.get("execution_count") is None, f"{notebook.name} has outputs"
        tree = ast.parse("".join(cell["source"]))
        defined = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Lambda)]
        assert not defined, f"{notebook.name}: notebooks call sasrec, they define no functions or classes"


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary project root holding the notebooks parameterised with the smoke profile."""
    papermill = pytest.importorskip("papermill")
    root = tmp_path_factory.mktemp("smoke_project")
    (root / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        params = yaml.safe_load(
            (ROOT / "params" / "smoke" / f"{notebook.stem}.yaml").read_text(encoding="utf-8")
        )
        papermill.execute_notebook(
            str(notebook),
            str(root / "notebooks" / notebook.name),
            parameters=params,
            prepare_only=True,
            kernel_name="python3",
        )
    return root


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_under_nbval_on_smoke_parameters(smoke_project: Path, name: str) -> None:
    env = {**os.environ, "SASREC_ROOT": str(smoke_project), "SASREC_PROGRESS": "0", "MPLBACKEND": "Agg"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "--nbval-lax",
        "--nbval-current-env",
        "--nbval-cell-timeout=900",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(smoke_project),
        str(smoke_project / "notebooks" / f"{name}.ipynb"),
    ]
    completed = subprocess.run(
        command, cwd=smoke_project, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    if name == "06_experiments":
        metrics = smoke_project / "reports" / "smoke" / "metrics"
        for produced in ("eda", "prepare", "training", "evaluation", "cross_dataset", "experiments"):
            assert (metrics / f"{produced}.json").is_file(), f"{produced}.json was not written"

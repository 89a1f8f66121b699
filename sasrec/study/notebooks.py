"""Notebook parameters cells kept equal to the full-profile params files.

Each notebook has one cell tagged ``parameters`` holding literals only (papermill replaces it); its values
must equal ``params/full/<notebook>.yaml``. :func:`sync_parameters` rewrites the cell from the YAML (``make
format`` runs it), so a new hyperparameter is a change to its dataclass and to the YAML; :func:`check`
lists notebooks whose cell differs (``make lint`` and the tests run it).
"""

from __future__ import annotations

import ast
import json
import pprint
from pathlib import Path
from typing import Any

from sasrec import paths
from sasrec.config import load_yaml_mapping
from sasrec.errors import ConfigError

HEADER = "# Parameters (papermill replaces this cell; defaults = params/full/{name}.yaml, kept in sync by make format)"


def _cells(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    return notebook["cells"]


def parameters_cell(notebook_path: Path) -> dict[str, Any]:
    """The literal values of a notebook's ``parameters`` cell (exactly one such cell, literals only)."""
    notebook = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    tagged = [c for c in _cells(notebook) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ConfigError(
            f"{notebook_path}: exactly one cell must be tagged 'parameters'; found {len(tagged)}"
        )
    values: dict[str, Any] = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        if not (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            raise ConfigError(f"{notebook_path}: the parameters cell may only hold `name = literal` lines")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ConfigError(f"{notebook_path}: parameter {node.targets[0].id} is not a literal") from None
    return values


def render_parameters(name: str, params: dict[str, Any]) -> str:
    """The parameters cell's source for ``params`` (one ``key = literal`` statement per top-level key)."""
    lines = [HEADER.format(name=name)]
    for key, value in params.items():
        text = pprint.pformat(value, width=108, sort_dicts=False, compact=True)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def full_params(name: str, profile: str = "full") -> dict[str, Any]:
    """``params/<profile>/<name>.yaml`` of the project."""
    return load_yaml_mapping(paths.project_root() / "params" / profile / f"{name}.yaml")


def sync_parameters(notebook_path: Path) -> bool:
    """Rewrite ``notebook_path``'s parameters cell from its full-profile YAML; return whether it changed."""
    notebook_path = Path(notebook_path)
    params = full_params(notebook_path.stem)
    if parameters_cell(notebook_path) == params:
        return False
    notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    for cell in _cells(notebook):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = render_parameters(notebook_path.stem, params).splitlines(keepends=True)
    paths.atomic_write_text(notebook_path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return True


def check(notebooks_dir: Path | None = None) -> list[str]:
    """One line per notebook whose parameters cell differs from ``params/full``, naming the keys."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.project_root() / "notebooks"
    problems = []
    for notebook in sorted(folder.glob("*.ipynb")):
        cell, params = parameters_cell(notebook), full_params(notebook.stem)
        keys = sorted(k for k in set(cell) | set(params) if cell.get(k) != params.get(k))
        if keys:
            problems.append(
                f"{notebook.name}: parameters cell differs from params/full/{notebook.stem}.yaml in {', '.join(keys)}; "
                "run `make format` to sync it"
            )
    return problems


def apply_overrides(params: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``params`` with ``key.sub=value`` assignments applied (values parsed as YAML: ``10``, ``true``, ``[1, 2]``).

    Raises:
        ConfigError: an assignment without ``=``, or a key path that does not exist in ``params``.
    """
    import copy

    import yaml

    merged = copy.deepcopy(params)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--set expects KEY=VALUE with a dotted key (training.num_epochs=10); got {assignment!r}"
            )
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"--set {assignment!r}: {part!r} is not a mapping of the params file; known: {', '.join(node)}"
                )
            node = node[part]
        if leaf not in node:
            raise ConfigError(
                f"--set {assignment!r}: no parameter {key!r} in the params file; known here: {', '.join(node)}"
            )
        node[leaf] = yaml.safe_load(raw)
    return merged


def run_notebook(name: str, *, profile: str = "full", assignments: list[str] | None = None,
                 scratch: str = "scratch") -> Path:  # fmt: skip
    """Execute one notebook with its profile's params and ``assignments`` into a scratch report folder.

    Outputs (figures, metrics, checkpoints, the executed notebook) go to ``reports/<scratch>/`` and
    ``models/<scratch>/`` (both ignored by git), so the committed report only changes through ``make report``.
    Run the notebooks a scratch notebook depends on in the same scratch folder first (04 reads 03's training).
    """
    import papermill

    notebook = paths.project_root() / "notebooks" / f"{name}.ipynb"
    if not notebook.is_file():
        raise ConfigError(
            f"no notebook {name!r}; expected one of {', '.join(p.stem for p in notebook.parent.glob('*.ipynb'))}"
        )
    params = apply_overrides(full_params(name, profile), assignments or [])
    params["paths"] = {
        **params["paths"],
        "reports_dir": f"reports/{scratch}",
        "models_dir": f"models/{scratch}",
    }
    out = paths.project_root() / "reports" / scratch / "executed" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial.ipynb")
    papermill.execute_notebook(str(notebook), str(partial), parameters=params, kernel_name="python3",
                               cwd=str(notebook.parent), progress_bar=False)  # fmt: skip
    partial.replace(out)
    return out

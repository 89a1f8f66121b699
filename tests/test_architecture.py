"""The package's import rules (docs/ARCHITECTURE.md), checked by reading every module's imports.

Layers, bottom to top: base modules, data, models, training and evaluation, inference, study, cli. A module
may import its own layer or below; models import only ``sasrec.data.contracts`` from the data layer (never
file loading); evaluation never imports training; the metrics module imports no model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sasrec"
LAYERS = {"data": 1, "models": 2, "training": 3, "evaluation": 3, "inference": 4, "study": 5, "cli": 6}


def _module(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _layer(module: str, *, importer: bool = False) -> int:
    """Layer of a module; the top package ``sasrec`` is the entry point when importing (its ``__getattr__``
    loads the public API lazily) and base when imported (eagerly it holds only the version and errors)."""
    parts = module.split(".")
    if module in ("sasrec", "sasrec.__main__"):
        return 7 if importer else 0
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _imports(path: Path, package: Path) -> list[str]:
    """Every sasrec module ``path`` imports, including imports inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("sasrec")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sasrec"):
            base = node.module
            for alias in node.names:
                sub = package.joinpath(*base.split(".")[1:], alias.name)
                found.append(
                    f"{base}.{alias.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() else base
                )
    return found


def violations(package: Path = PACKAGE) -> list[str]:
    """One line per import that breaks a rule."""
    out = []
    for path in sorted(package.rglob("*.py")):
        module = _module(path, package.parent)
        for target in _imports(path, package):
            if _layer(target) > _layer(module, importer=True):
                out.append(f"{module} imports {target}: an upper layer")
            if (
                module.startswith("sasrec.models")
                and target.startswith("sasrec.data")
                and target != "sasrec.data.contracts"
            ):
                out.append(f"{module} imports {target}: models may only use sasrec.data.contracts")
            if module.startswith("sasrec.evaluation") and target.startswith("sasrec.training"):
                out.append(f"{module} imports {target}: evaluation never imports training")
            if module == "sasrec.evaluation.metrics" and target.startswith("sasrec.models"):
                out.append(f"{module} imports {target}: metrics import no model")
    return out


def test_the_package_follows_the_import_rules() -> None:
    assert violations() == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    fake = tmp_path / "sasrec"
    (fake / "models").mkdir(parents=True)
    (fake / "data").mkdir()
    (fake / "evaluation").mkdir()
    (fake / "models" / "bad.py").write_text(
        "from sasrec.data.kuairec import readers\nfrom sasrec.study import steps\n"
    )
    (fake / "evaluation" / "metrics.py").write_text("def f():\n    from sasrec.training import loop\n")
    found = violations(fake)
    assert any("models may only use sasrec.data.contracts" in line for line in found)
    assert any("an upper layer" in line and "sasrec.study" in line for line in found)
    assert any("evaluation never imports training" in line for line in found)


@pytest.mark.parametrize("name", ["data", "models", "training", "evaluation", "inference", "study", "cli"])
def test_every_stage_is_a_package_with_a_docstring(name: str) -> None:
    init = PACKAGE / name / "__init__.py"
    assert init.is_file()
    assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), (
        f"sasrec/{name}/__init__.py needs a docstring"
    )

"""The layers of streamproc/ and models/ import one way: a module may import only the layers listed for its
folder; the pure core imports no Kafka client, Faust, RocksDB or torch, the features no model runtime, and
models/ never imports streamproc/ (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "streamproc"
MODELS = ROOT / "models"

# folder -> the streamproc layers its modules may import ("config" is the settings, shared by all but core)
ALLOWED = {
    "core": {"core"},
    "kafka": {"config", "kafka"},
    "observability": {"config", "observability"},
    "compat": {"config", "compat", "kafka"},
    "feed": {"config", "core", "feed", "kafka"},
    "stages": {"config", "core", "kafka", "observability", "compat", "stages"},
    "scoring": {"config", "core", "kafka", "observability", "scoring"},
    "demo": {"config", "core", "demo", "feed", "kafka", "observability"},
}
# models/ folder -> the models layers its modules may import ("metrics", the pure measures, is shared by
# training's validation and the evaluation; train.py and evaluate.py, the command lines, may import any)
MODELS_ALLOWED = {
    "features": {"features"},
    "model": {"features", "model"},
    "data": {"features", "data"},
    "serving": {"features", "model", "serving"},
    "training": {"features", "model", "data", "serving", "training", "metrics"},
    "evaluation": {"features", "model", "data", "serving", "training", "evaluation", "metrics"},
}
MODELS_TOP = {"__init__.py": set(), "metrics.py": set(), "train.py": None, "evaluate.py": None}  # None: any
MODEL_RUNTIME = {"torch", "transformers", "lightgbm", "sklearn", "safetensors"}
PURE_FORBIDDEN = {
    "faust",
    "mode",
    "aiokafka",
    "confluent_kafka",
    "rocksdict",
    "torch",
    "transformers",
    "prometheus_client",
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from models import x`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules_in(folder: str, package: Path = PACKAGE) -> list[Path]:
    return sorted((package / folder).glob("*.py"))


def layers_imported(path: Path, package: str) -> set[str]:
    return {m.split(".")[1] for m in imported_modules(path) if m.startswith(f"{package}.")}


def imports_above(folder: str, package: Path, allowed: dict[str, set[str]]) -> dict[str, list[str]]:
    """Module name -> the layers of its own package it imports that its folder's rule does not allow."""
    wrong = {}
    for path in modules_in(folder, package):
        layers = layers_imported(path, package.name)
        if layers - allowed[folder]:
            wrong[path.name] = sorted(layers - allowed[folder])
    return wrong


def test_every_folder_of_the_package_has_its_layer_rule() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ALLOWED)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(folder: str) -> None:
    assert imports_above(folder, PACKAGE, ALLOWED) == {}


def test_the_core_imports_no_client_framework_or_model_runtime() -> None:
    wrong = {}
    for path in modules_in("core"):
        tops = {m.split(".")[0] for m in imported_modules(path)}
        # the one tie to models/: the feature contract the pipeline and training share
        models = {
            m
            for m in imported_modules(path)
            if m.startswith("models.")
            and m != "models.features"
            and not m.startswith("models.features.aggregates")
        }
        if tops & PURE_FORBIDDEN or models:
            wrong[path.name] = sorted(tops & PURE_FORBIDDEN | models)
    assert wrong == {}


def test_every_folder_and_top_module_of_models_has_its_layer_rule() -> None:
    folders = {p.name for p in MODELS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(MODELS_ALLOWED)
    assert {p.name for p in MODELS.glob("*.py")} == set(MODELS_TOP)


@pytest.mark.parametrize("folder", sorted(MODELS_ALLOWED))
def test_a_models_layer_imports_only_the_layers_below_it(folder: str) -> None:
    assert imports_above(folder, MODELS, MODELS_ALLOWED) == {}


def test_the_models_top_modules_import_as_their_rule_says() -> None:
    wrong = {}
    for name, allowed in MODELS_TOP.items():
        layers = layers_imported(MODELS / name, "models")
        if allowed is not None and layers - allowed:
            wrong[name] = sorted(layers - allowed)
    assert wrong == {}


def test_models_never_imports_streamproc_and_the_features_no_model_runtime() -> None:
    wrong = {}
    for path in sorted(MODELS.rglob("*.py")):
        tops = {m.split(".")[0] for m in imported_modules(path)}
        bad = tops & ({"streamproc"} | (MODEL_RUNTIME if path.parent.name == "features" else set()))
        if bad:
            wrong[str(path.relative_to(MODELS))] = sorted(bad)
    assert wrong == {}

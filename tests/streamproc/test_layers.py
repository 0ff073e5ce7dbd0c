"""The package's layers import one way: a module may import only the layers listed for its folder, and the
pure core imports no Kafka client, Faust, RocksDB or torch (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streamproc"

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


def modules_in(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


def test_every_folder_of_the_package_has_its_layer_rule() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ALLOWED)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(folder: str) -> None:
    wrong = {}
    for path in modules_in(folder):
        layers = {m.split(".")[1] for m in imported_modules(path) if m.startswith("streamproc.")}
        if layers - ALLOWED[folder]:
            wrong[path.name] = sorted(layers - ALLOWED[folder])
    assert wrong == {}


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

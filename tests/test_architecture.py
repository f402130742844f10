"""The layers hold: imports run one way, the core needs no framework, and the built wheel works installed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "grit_components"
FRAMEWORKS = ("haystack", "llama_index")
TERMINAL = ("typer", "rich")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_imports_no_framework_and_only_the_cli_imports_typer_or_rich():
    offenders = []
    for path in CORE.rglob("*.py"):
        for name in imported_modules(path):
            in_cli = path.parent == CORE / "cli"
            if top(name) in FRAMEWORKS or (top(name) in TERMINAL and not in_cli):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_cli_commands_never_import_the_app():
    for path in (CORE / "cli").glob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        imports = imported_modules(path)
        assert "grit_components.cli" not in imports, f"{path.name} imports the app package"
        assert all(not n.startswith("grit_components.cli.") or n == "grit_components.cli._common" for n in imports), path


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not a core dependency)")
sys.meta_path.insert(0, Block())
"""


def test_the_core_and_the_cli_work_without_any_extra():
    blocked = {"haystack", "haystack_integrations", "llama_index", "qdrant_client", "hayhooks",
               "sentence_transformers", "ranx", "bm25s", "datasets", "ray"}
    script = BLOCKER.format(blocked=blocked) + """
import grit_components
from grit_components import GritEmbedder, GritGenerator, GritReranker, load_model
from grit_components.cli import app
from typer.testing import CliRunner
result = CliRunner().invoke(app, ["--help"])
assert result.exit_code == 0, result.output
print(result.output)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    for command in ("embed", "chat", "models", "index", "ask", "run", "demo", "train", "eval"):
        assert command in out.stdout, f"grit --help does not list {command}"


@pytest.mark.slow
def test_the_built_wheel_works_installed_without_the_source_tree(tmp_path):
    """Build the wheel, install it (no deps) into a folder, and use it from there: bundled YAML pipelines,
    the shipped adapter files and the CLI come from the installed files, not from this checkout."""
    pytest.importorskip("hatchling")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("grit_components-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "haystack_integrations/common/grit/yaml/rag.yaml" in names
    assert "grit_components/adapters/grit-smollm2-135m/adapter_model.safetensors" in names
    assert not any(n.startswith(("benchmarks/", "tests/")) for n in names)
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    script = f"""
import grit_components, sys
from pathlib import Path
target = Path({str(target)!r})
assert Path(grit_components.__file__).is_relative_to(target), grit_components.__file__
from haystack_integrations.common.grit import pipelines
assert pipelines.pipelines_dir().is_relative_to(target), pipelines.pipelines_dir()
from haystack import Pipeline
Pipeline.loads(pipelines.pipeline_path("rag").read_text())
from grit_components.models import adapter_dir
assert adapter_dir("grit-smollm2-135m").is_relative_to(target)
from typer.testing import CliRunner
from grit_components.cli import app
assert CliRunner().invoke(app, ["index", "--help"]).exit_code == 0
"""
    env = {**os.environ, "PYTHONPATH": str(target), "HAYSTACK_TELEMETRY_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr

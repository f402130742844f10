"""The layers hold: imports run one way (no circles, each core module imports only the layers below it), the
core needs no framework, and the built wheel works installed."""

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


# --- the module graph: every import of every module, wherever it stands ---
#
# Counted: imports at module level, inside functions and classes, under `if TYPE_CHECKING:` (an annotation that
# needs an upward import means the type lives in the wrong layer), and relative imports (resolved). An edge goes to
# the module named: `from pkg import sub` is an edge to `pkg.sub` when that is a module, else to `pkg` (its
# `__init__`). Python also runs `pkg/__init__.py` before any `pkg.sub`; that implied step is not an edge, or every
# module would sit in a circle with a package `__init__` that re-exports it. A real circle through a package
# still shows: a submodule naming its own package (`from pkg import name`) while `pkg/__init__` imports it back.

SOURCE_ROOTS = {  # import root folder -> the packages under it
    ROOT: ("grit_components",),
    ROOT / "integrations" / "haystack": ("haystack_integrations",),
    ROOT / "integrations" / "llama_index": ("llama_index",),
}
NAMESPACES = ("haystack_integrations", "llama_index")  # the frameworks' namespaces: only their `grit*` folders are ours


def package_modules(roots: dict[Path, tuple[str, ...]] = SOURCE_ROOTS) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package `__init__`)} of the core and of each integration's GRIT modules."""
    modules = {}
    for base, packages in roots.items():
        for package in packages:
            for path in sorted((base / package).rglob("*.py")):
                parts = list(path.relative_to(base).with_suffix("").parts)
                if package in NAMESPACES and not any(part.startswith("grit") for part in parts):
                    continue
                is_package = parts[-1] == "__init__"
                modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, int]]:
    """{module: {imported module of ours: line of the first such import}}."""
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        edges: dict[str, int] = {}
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                           for alias in node.names]
            for target in targets:
                if target in modules:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph[module]:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def describe(graph: dict[str, dict[str, int]], modules: dict[str, tuple[Path, bool]], circle: list[str]) -> str:
    lines = [f"import circle among {', '.join(circle)}:"]
    for module in circle:
        path = modules[module][0].relative_to(ROOT)
        lines += [f"  {path}:{line} imports {target}" for target, line in sorted(graph[module].items())
                  if target in circle]
    return "\n".join(lines)


def test_no_import_circles_in_the_package_or_the_integrations():
    modules = package_modules()
    graph = import_graph(modules)
    assert any(name.startswith("haystack_integrations.") for name in graph)
    assert any(name.startswith("llama_index.") for name in graph)
    found = circles(graph)
    assert not found, "\n".join(describe(graph, modules, circle) for circle in found)


def test_the_graph_counts_every_kind_of_import(tmp_path):
    """A circle closed by an import inside a function, by a TYPE_CHECKING import, by a relative import, or through a
    package `__init__` that re-exports a submodule importing the package back, is found."""
    files = {
        "pkg/__init__.py": "from pkg.api import thing\nNAME = 'pkg'\n",
        "pkg/api.py": "from pkg import NAME\nthing = 1\n",  # names the package, whose __init__ imports api
        "pkg/base.py": "def f():\n    from pkg.top import g\n",
        "pkg/top.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import base\n",
        "pkg/helper.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "from . import b\n",
        "pkg/sub/b.py": "from ..sub.a import x\n",
        "pkg/fine.py": "from pkg import helper\nimport pkg.sub.a\n",  # `pkg` runs first, but fine is not imported back
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(package_modules({tmp_path: ("pkg",)}))
    assert graph["pkg.fine"] == {"pkg.helper": 1, "pkg.sub.a": 2}
    assert circles(graph) == [["pkg", "pkg.api"], ["pkg.base", "pkg.top"], ["pkg.sub.a", "pkg.sub.b"]]


# --- the layers: each line imports only the lines before it (and its own subpackage) ---
# docs/architecture.md draws the same lines; a new module has to be placed in one.

LAYERS = {
    "grit_components": [
        ("_checks", "_compat", "templates", "metadata", "attention"),  # no import of the package
        ("options",),  # the option objects (LoadingOptions, GenerationOptions, the KV store dtypes)
        ("models",),  # the model: spec resolution, weights, tokenizer (LoadedModel)
        ("kv_cache", "export"),  # export: a loaded model -> GGUF file for llama.cpp
        ("llama_engine",),  # decode_backend="llama_cpp": the llama.cpp context and its saved document states
        ("embedding", "generation"),
        ("grit_model",),  # GritModel: LoadedModel + embed + generate
        ("rag", "registry"),
        ("components",),
        ("rerank", "indexing"),  # GritReranker is a ModelComponent; IndexManifest.for_embedder reads a GritEmbedder
        ("answerability",),  # GritAnswerabilityGate: query-likelihood gains and cosines from rerank
        ("__init__",),  # the public names: `from grit_components import ...`
        ("evaluation",),
        ("training", "distributed"),
        ("cli",),
    ],
    "haystack_integrations": [
        ("common.grit.__init__", "common.grit.component"),  # GritModelComponent, the base of every component
        ("components",),  # the embedders, the ranker, the chat generator
        ("common.grit.build",),  # YAML file -> built pipeline
        ("common.grit.stores", "common.grit.questions"),
        ("common.grit.indexing",),
        ("common.grit.pipelines",),  # load, run, ask, timings; re-exports the modules below
    ],
    "llama_index": [
        ("utils.grit",),  # GritModelFields: the loading fields every class shares
        ("embeddings.grit", "postprocessor.grit_rerank", "postprocessor.grit_answerability", "llms.grit"),
    ],
}


def layer_of(module: str, is_package: bool) -> tuple[str, int, str] | None:
    """(root package, line number, entry) of a module: the longest entry naming it or a package holding it."""
    root, _, rest = module.partition(".")
    rest = ".".join(filter(None, [rest, "__init__" if is_package else ""]))
    matches = [(len(entry), number, entry) for number, line in enumerate(LAYERS[root]) for entry in line
               if rest == entry or rest.startswith(entry + ".")]
    return (root, *max(matches)[1:]) if matches else None


def test_every_module_imports_only_the_layers_below_it():
    modules = package_modules()
    graph = import_graph(modules)
    unplaced = [name for name, (_, is_package) in modules.items() if layer_of(name, is_package) is None]
    assert not unplaced, f"modules in no layer of LAYERS (place them, and in docs/architecture.md): {unplaced}"
    offenders = []
    for module, edges in graph.items():
        root, number, entry = layer_of(module, modules[module][1])
        for target, line in edges.items():
            target_root, target_number, target_entry = layer_of(target, modules[target][1])
            if target_root == root and target_number >= number and target_entry != entry:
                offenders.append(f"{modules[module][0].relative_to(ROOT)}:{line}: {module} ({entry}) imports "
                                 f"{target} ({target_entry}), which is not below it")
    assert not offenders, "\n".join(offenders)


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

# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""From a GRIT YAML pipeline file to a built Haystack `Pipeline`, with the deployment knobs applied.

The YAML files stay plain Haystack: `Pipeline.loads` reads them without this module. What this module
adds is the deployment knobs a YAML file cannot express, applied while Haystack builds the pipeline
(`deployment_callbacks`, Haystack's `DeserializationCallbacks`):

- the data directory: every embedded Qdrant store (`path: .grit/qdrant`) and KV cache folder
  (`kv_cache_directory: .grit/kv`) moves under `data_dir` (`--data-dir`, or `GRIT_DATA_DIR`);
- a Qdrant server: `qdrant_url` (`--qdrant-url`, or `GRIT_QDRANT_URL`) replaces `path`/`location` of
  every `QdrantDocumentStore` by `url` (the API key, if any, comes from `QDRANT_API_KEY` as usual);
- the model (`--model`) and query instruction (`--instruction`) of every GRIT component.

Nothing is loaded or connected here (models load at `warm_up`, Qdrant clients on first use): `stores.prepare`
does that, and `pipelines.load_pipeline` builds and prepares. A file or definition Haystack cannot build is a
`PipelineSetupError` naming the file.

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from haystack import Pipeline
from haystack.core.serialization import DeserializationCallbacks

from haystack_integrations.common.grit.component import GritModelComponent

BUILTIN_PIPELINES = ("indexing", "indexing_doc_cache", "rag", "rag_rerank", "rag_doc_cache", "rag_answerability")
DECLARED_IO_ATTRIBUTE = "grit_declared_io"  # set by load_pipeline: the YAML's hayhooks inputs/outputs
ENV_DATA_DIR = "GRIT_DATA_DIR"
ENV_QDRANT_URL = "GRIT_QDRANT_URL"


class PipelineSetupError(ValueError):
    """A pipeline cannot run as configured (missing file, bad input, incompatible store)."""


def pipelines_dir() -> Path:
    """The folder of the bundled YAML pipelines: `yaml/` beside this module in an installed wheel, or
    `pipelines/` at the root of a source checkout (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "yaml", here.parents[4] / "pipelines"):
        if candidate.is_dir():
            return candidate
    raise PipelineSetupError("the bundled pipelines folder was not found; pass a YAML file path")


def pipeline_path(name_or_path: str | os.PathLike) -> Path:
    """A YAML path as given, or a bundled pipeline by name (`rag`, `rag_rerank`, ...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise PipelineSetupError(f"pipeline file {path} does not exist")
        return path
    if str(name_or_path) not in BUILTIN_PIPELINES:
        raise PipelineSetupError(f"unknown pipeline {str(name_or_path)!r}: give a .yaml file or one of "
                                 f"{', '.join(BUILTIN_PIPELINES)}")
    return pipelines_dir() / f"{name_or_path}.yaml"


def _moved_store(store: Any, *, data_dir: str | os.PathLike | None, qdrant_url: str | None) -> Any:
    """`store` again, on the Qdrant server `qdrant_url`, or with its embedded folder under `data_dir`."""
    data = store.to_dict()
    params = data["init_parameters"]
    if qdrant_url:
        for key in ("path", "location", "host"):
            params.pop(key, None)
        params["url"] = qdrant_url
    elif data_dir is not None and params.get("path"):
        params["path"] = str(Path(data_dir) / "qdrant")
    else:
        return store
    return type(store).from_dict(data)  # its client opens on first use: nothing was opened yet


def deployment_callbacks(*, data_dir: str | os.PathLike | None = None, qdrant_url: str | None = None,
                         model: str | None = None, instruction: str | None = None) -> DeserializationCallbacks:
    """Haystack deserialization callbacks applying the deployment knobs (see the module docstring) to every
    component as `Pipeline.from_dict`/`loads` builds it: `Pipeline.loads(text, callbacks=...)`."""
    from haystack_integrations.components.embedders.grit import GritTextEmbedder
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    def component_pre_init(name: str, component_class: type, init_params: dict[str, Any]) -> None:
        for key, value in init_params.items():
            if isinstance(value, QdrantDocumentStore):
                init_params[key] = _moved_store(value, data_dir=data_dir, qdrant_url=qdrant_url)
        if not issubclass(component_class, GritModelComponent):
            return
        if model is not None:
            init_params["model"] = model
        if data_dir is not None and init_params.get("kv_cache_directory"):
            init_params["kv_cache_directory"] = str(Path(data_dir) / "kv")
        if instruction is not None and issubclass(component_class, GritTextEmbedder):
            init_params["instruction"] = instruction

    return DeserializationCallbacks(component_pre_init=component_pre_init)


def build_pipeline(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                   qdrant_url: str | None = None, model: str | None = None,
                   instruction: str | None = None) -> Pipeline:
    """A pipeline file built with the deployment knobs applied (`deployment_callbacks`); nothing is loaded
    or opened yet (models load at `warm_up`, Qdrant clients on first use).

    `data_dir` and `qdrant_url` default to `GRIT_DATA_DIR` and `GRIT_QDRANT_URL`; the data directory is
    created.
    """
    path = pipeline_path(name_or_path)
    data_dir = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or None
    qdrant_url = qdrant_url if qdrant_url is not None else os.environ.get(ENV_QDRANT_URL) or None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PipelineSetupError(f"{path} is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise PipelineSetupError(f"{path} is not UTF-8 text: {error}") from error
    check_definition(data, path)
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    pipeline = _build(data, path, deployment_callbacks(data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                                                       instruction=instruction))
    setattr(pipeline, DECLARED_IO_ATTRIBUTE, declared_io(data))
    return pipeline


def pipeline_data(name_or_path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  qdrant_url: str | None = None, model: str | None = None,
                  instruction: str | None = None) -> dict[str, Any]:
    """A pipeline file as a dict (`Pipeline.to_dict`) with the deployment knobs applied (`build_pipeline`):
    nothing is loaded. What the Ray job ships to its workers, which build their own parts of it."""
    return build_pipeline(name_or_path, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                          instruction=instruction).to_dict()


def check_definition(data: Any, path: str | os.PathLike = "the pipeline") -> None:
    """Reject what `Pipeline.from_dict` would fail on obscurely (an empty or list-shaped file, components that
    are not mappings) and what would only fail in the middle of a run (a `top_k` below 1)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise PipelineSetupError(f"{path} is not a pipeline definition: expected a mapping with `components` and "
                                 f"`connections`, got {got}")
    components = data.get("components", {})
    if not isinstance(components, dict):
        raise PipelineSetupError(f"{path}: `components` must be a mapping of name to component, "
                                 f"not a {type(components).__name__}")
    for name, definition in components.items():
        if not isinstance(definition, dict):
            raise PipelineSetupError(f"{path}: component {name!r} must be a mapping with `type` and "
                                     f"`init_parameters`, not a {type(definition).__name__}")
        params = definition.get("init_parameters") or {}
        if not isinstance(params, dict):
            raise PipelineSetupError(f"{path}: `init_parameters` of component {name!r} must be a mapping")
        top_k = params.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise PipelineSetupError(f"{path}: component {name!r}: top_k must be an int >= 1, got {top_k!r}")
    if not isinstance(data.get("connections", []), list):
        raise PipelineSetupError(f"{path}: `connections` must be a list of sender/receiver pairs")


def _build(data: dict, path: Path, callbacks: DeserializationCallbacks | None = None) -> Pipeline:
    """`Pipeline.from_dict`, with a definition error or a component's rejected setting as a `PipelineSetupError`
    naming the file (a component's own bug keeps its traceback)."""
    from haystack.core.errors import DeserializationError, PipelineError

    try:
        return Pipeline.from_dict(data, callbacks=callbacks)
    except PipelineError as error:
        raise PipelineSetupError(f"{path}: {error}") from error
    except DeserializationError as error:
        cause = error.__cause__
        if cause is None:  # e.g. a component type outside Haystack's deserialization allowlist
            raise PipelineSetupError(f"{path}: {error}") from error
        if isinstance(cause, (ValueError, TypeError, OSError, ImportError)):
            name = re.match(r"Couldn't deserialize component '([^']*)'", str(error))
            where = f"component {name.group(1)!r}: " if name else ""
            raise PipelineSetupError(f"{path}: {where}{cause}") from error
        raise


def declared_io(data: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """The hayhooks `inputs`/`outputs` a YAML pipeline declares, as {"inputs"|"outputs": {name: ["component.socket", ...]}}.

    The same declarations `hayhooks pipeline deploy-yaml` reads: one input name (`question`) may fan out to
    several sockets. Missing sections are empty.
    """
    declared: dict[str, dict[str, list[str]]] = {"inputs": {}, "outputs": {}}
    for section in declared:
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise PipelineSetupError(f"the pipeline's `{section}` must map names to component.socket paths")
        for name, targets in entries.items():
            targets = [targets] if isinstance(targets, str) else list(targets or [])
            if not targets or not all(isinstance(t, str) and "." in t for t in targets):
                raise PipelineSetupError(f"`{section}.{name}` must be a component.socket path or a list of them")
            declared[section][name] = targets
    return declared

"""The YAML pipelines are hayhooks-native: declared inputs/outputs, `deploy-yaml` and `hayhooks run` serve them."""

from __future__ import annotations

import sys

import pytest
from haystack import Pipeline

from haystack_integrations.common.grit import pipelines as hp
from tests._models import index_folders

QUERY_PIPELINES = ("rag", "rag_rerank", "rag_doc_cache", "rag_answerability")


@pytest.mark.parametrize("name", hp.BUILTIN_PIPELINES)
def test_every_yaml_declares_inputs_and_outputs_hayhooks_resolves(name):
    from hayhooks.server.utils.yaml_utils import get_inputs_outputs_from_yaml

    text = (hp.pipelines_dir() / f"{name}.yaml").read_text()
    pipeline = Pipeline.loads(text)  # still plain Haystack
    resolved = get_inputs_outputs_from_yaml(text)
    open_inputs = pipeline.inputs()
    for resolution in resolved["inputs"].values():
        for target in resolution.targets:
            component, socket = target.split(".", 1)
            assert socket in open_inputs[component], target  # every target is an open input
    if name in QUERY_PIPELINES:
        assert set(resolved["inputs"]) == {"question"} and set(resolved["outputs"]) == {"replies", "documents"}
        # every open question-like input gets the question: nothing is left for the caller to route, except
        # a generator's `query` where the prompt builder feeds its `messages` (it is not used then)
        question_like = {f"{c}.{s}" for c, sockets in open_inputs.items() for s in sockets if s in hp.QUESTION_INPUTS}
        targets = set(resolved["inputs"]["question"].targets)
        assert targets <= question_like
        assert question_like - targets <= ({"llm.query"} if "prompt_builder" in open_inputs else set())
    else:
        assert set(resolved["inputs"]) == {"sources"} and set(resolved["outputs"]) == {"documents_written"}


def test_declarations_drive_question_inputs_and_grit_run(tiny, tmp_path):
    built = hp.load_pipeline("rag_rerank", data_dir=tmp_path, model=tiny)
    try:
        data = hp.question_inputs(built, "Who?", retrieval_text="Diogenes")
        # the search (embedder and ranker) gets what is searched for; the prompt gets the question
        assert data == {"query_embedder": {"text": "Diogenes"}, "ranker": {"query": "Diogenes"},
                        "prompt_builder": {"query": "Who?"}}
        assert hp.expand_declared_inputs(built, {"question": "Who?", "retriever": {"top_k": 2}}) == {
            "query_embedder": {"text": "Who?"}, "ranker": {"query": "Who?"}, "prompt_builder": {"query": "Who?"},
            "retriever": {"top_k": 2}}
        assert hp.documents_component(built) == "ranker"
    finally:
        hp.close_pipeline(built)


def test_history_goes_into_the_prompt_and_retrieval_uses_the_question(tiny, tmp_path):
    built = hp.load_pipeline("rag", data_dir=tmp_path, model=tiny)
    try:
        history = [{"role": "system", "content": "Be brief {{ not a template }}."},
                   {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
        data = hp.question_inputs(built, "And of Germany?", history=history)
        assert data["query_embedder"] == {"text": "And of Germany?"}
        builder = built.get_component("prompt_builder")
        prompt = builder.run(documents=[], **data["prompt_builder"])["prompt"]
        assert [m.role.value for m in prompt] == ["system", "user", "assistant", "user"]
        assert prompt[0].text == "Be brief {{ not a template }}." and prompt[2].text == "Paris."
        assert "And of Germany?" in prompt[3].text
        with pytest.raises(ValueError, match=r"history\[0\] has role 'tool'"):
            hp.question_inputs(built, "q", history=[{"role": "tool", "content": "x"}])
        with pytest.raises(ValueError, match=r"history\[1\]\['content'\] contains an unpaired surrogate"):
            hp.question_inputs(built, "q", history=[{"role": "user", "content": "ok"},
                                                    {"role": "assistant", "content": "caf\udce9"}])
    finally:
        hp.close_pipeline(built)


@pytest.fixture
def yaml_app(monkeypatch, tmp_path, tiny, corpus_dir):
    """hayhooks' own app over a folder holding the bundled YAMLs (what `hayhooks run` at the repository root
    serves), pointed at a tiny-model index."""
    from hayhooks.server.pipelines.loader import REGISTRY_ROOT
    from hayhooks.server.utils.module_loader import unload_pipeline_modules
    from hayhooks.settings import settings

    data_dir = tmp_path / "data"
    index_folders(data_dir, [corpus_dir], model=tiny)
    folder = tmp_path / "pipelines"
    folder.mkdir()
    for name in hp.BUILTIN_PIPELINES:
        text = (hp.pipelines_dir() / f"{name}.yaml").read_text()
        text = (text.replace("model: grit-smollm2-135m", f"model: {tiny}")
                .replace("embedding_dim: 576", "embedding_dim: 64")
                .replace("path: .grit/qdrant", f"path: {data_dir / 'qdrant'}")
                .replace("kv_cache_directory: .grit/kv", f"kv_cache_directory: {data_dir / 'kv'}"))
        (folder / f"{name}.yaml").write_text(text)
    saved = dict(settings.__dict__)
    dont_write_bytecode = sys.dont_write_bytecode
    settings.pipelines_dir = str(folder)
    settings.durable_mode = False
    from hayhooks.server.app import create_app

    app = create_app()
    try:
        yield app
    finally:
        registry = app.state.pipeline_registry
        for name in registry.get_names():
            hp.close_pipeline(registry.get(name).pipeline)
        unload_pipeline_modules(REGISTRY_ROOT)
        settings.__dict__.update(saved)
        sys.dont_write_bytecode = dont_write_bytecode


def test_hayhooks_serves_the_yaml_pipelines(yaml_app):
    from fastapi.testclient import TestClient

    with TestClient(yaml_app) as client:
        assert set(client.get("/status").json()["pipelines"]) == set(hp.BUILTIN_PIPELINES)  # none skipped
        response = client.post("/rag/run", json={"question": "Who was Diogenes?"})
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        documents = result.get("documents") or result.get("retriever", {}).get("documents")
        replies = result.get("replies") or result.get("llm", {}).get("replies")
        assert len(documents) == 3 and len(replies) == 1
        assert client.post("/rag/run", json={"text": "no question"}).status_code == 422  # the input is `question`

"""The YAML pipelines: round trip, end-to-end runs on a tiny model, persistence, duplicates, dimension checks, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from haystack import Pipeline, tracing
from haystack.tracing.tracer import NullTracer
from typer.testing import CliRunner

from haystack_integrations.common.grit import pipelines as hp
from tests._models import index_folders
from grit_components.cli import app

PIPELINES = sorted(hp.pipelines_dir().glob("*.yaml"))


def test_every_bundled_pipeline_is_listed():
    assert {p.stem for p in PIPELINES} == set(hp.BUILTIN_PIPELINES)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_yaml_loads_dumps_loads_equal(path):
    text = path.read_text(encoding="utf-8")
    pipeline = Pipeline.loads(text)  # no allowlist changes: haystack_integrations.* is trusted
    again = Pipeline.loads(pipeline.dumps())
    assert again == pipeline
    assert Pipeline.loads(again.dumps()) == again
    for component in yaml.safe_load(text)["components"].values():
        if ".grit." in component["type"]:
            module, _, name = component["type"].rpartition(".")
            assert sys.modules[module].__dict__[name].__module__ == module  # the defining module


def test_deployment_callbacks_rewrite_stores_models_and_paths(tmp_path):
    text = (hp.pipelines_dir() / "rag_doc_cache.yaml").read_text()
    callbacks = hp.deployment_callbacks(qdrant_url="http://qdrant:6333", model="GritLM/GritLM-7B", instruction="Find")
    served = Pipeline.loads(text, callbacks=callbacks)
    (store,) = hp.document_stores(served)
    assert store.url == "http://qdrant:6333" and store.path is None
    assert served.get_component("llm").model == "GritLM/GritLM-7B"
    assert served.get_component("query_embedder").instruction == "Find"
    assert Pipeline.loads(text).get_component("llm").model == "grit-smollm2-135m"  # the YAML is untouched
    moved = Pipeline.loads(text, callbacks=hp.deployment_callbacks(data_dir=tmp_path))
    (store,) = hp.document_stores(moved)
    assert store.path == str(tmp_path / "qdrant")
    assert moved.get_component("llm").kv_cache_directory == str(tmp_path / "kv")


def test_yaml_with_any_generation_key_and_model_kwargs_loads_and_runs(tiny):
    text = f"""
components:
  llm:
    type: haystack_integrations.components.generators.grit.chat_generator.GritChatGenerator
    init_parameters:
      model: {tiny}
      generation_kwargs: {{max_new_tokens: 6, repetition_penalty: 1.2, no_repeat_ngram_size: 2}}
      model_kwargs: {{torch_dtype: float32, attn_implementation: eager}}
      tokenizer_kwargs: {{model_max_length: 2048}}
connections: []
"""
    pipeline = Pipeline.loads(text)
    llm = pipeline.get_component("llm")
    reply = pipeline.run({"llm": {"messages": "Who was Diogenes?"}})["llm"]["replies"][0]
    assert reply.meta["usage"]["completion_tokens"] <= 6
    assert llm.generator.model.model.config._attn_implementation == "eager"
    assert llm.generator.model.tokenizer.model_max_length == 2048
    assert Pipeline.loads(pipeline.dumps()) == pipeline
    with pytest.raises(Exception, match="repetition_penalty"):
        Pipeline.loads(text.replace("repetition_penalty: 1.2", "repetition_penalty: -1"))


def test_qdrant_url_from_environment(monkeypatch):
    monkeypatch.setenv(hp.ENV_QDRANT_URL, "http://qdrant.example:6333")
    monkeypatch.setattr(hp, "prepare", lambda pipeline, **options: None)  # do not connect
    pipeline = hp.load_pipeline("rag")
    (store,) = hp.document_stores(pipeline)
    assert store.url == "http://qdrant.example:6333" and store.path is None


def test_unknown_pipeline_and_missing_files(tmp_path):
    with pytest.raises(hp.PipelineSetupError, match="unknown pipeline"):
        hp.pipeline_path("nope")
    with pytest.raises(hp.PipelineSetupError, match="does not exist"):
        hp.collect_files([tmp_path / "missing"])


def _ask(data_dir, model, question, pipeline="rag"):
    built = hp.load_pipeline(pipeline, data_dir=data_dir, model=model)
    try:
        return hp.ask(built, question)
    finally:
        hp.close_pipeline(built)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny, corpus_dir):
    """A data directory with the small corpus indexed by the tiny model."""
    data_dir = tmp_path_factory.mktemp("data")
    result = index_folders(data_dir, [corpus_dir], model=tiny)
    return data_dir, result


def test_indexing_writes_every_file(indexed, corpus_dir):
    _, result = indexed
    assert len(result.files) == result.count("added") == 10  # 8 .txt + 1 .md + 1 .pdf; the .csv is not collected
    assert result.documents_written == result.documents_in_store >= 10


def test_indexed_pdf_and_markdown_content(indexed, tiny):
    data_dir, _ = indexed
    built = hp.load_pipeline("rag", data_dir=data_dir, model=tiny)
    try:
        (store,) = hp.document_stores(built)
        for name, text in (("louvre.pdf", "The Louvre is a museum in Paris."), ("notes.md", "Eiffel Tower")):
            docs = store.filter_documents({"field": "meta.file_path", "operator": "==", "value": name})
            assert len(docs) == 1 and text in docs[0].content and "**" not in docs[0].content
    finally:
        hp.close_pipeline(built)


def test_reindexing_does_not_duplicate(indexed, tiny, corpus_dir):
    data_dir, first = indexed
    again = index_folders(data_dir, [corpus_dir], model=tiny)
    assert again.documents_in_store == first.documents_in_store
    assert again.count("unchanged") == 10 and again.chunks_embedded == 0  # nothing is embedded twice


@pytest.mark.parametrize("pipeline", ["rag", "rag_rerank"])
def test_rag_pipelines_answer_with_sources(indexed, tiny, pipeline):
    data_dir, _ = indexed
    answer = _ask(data_dir, tiny, "Who was Diogenes?", pipeline)
    assert isinstance(answer.text, str)
    assert answer.sources and all(doc.score is not None for doc in answer.sources)
    assert len(answer.sources) == 3
    assert {"query_embedder", "retriever", "llm", "total"} <= set(answer.timings)
    assert answer.meta["usage"]["completion_tokens"] >= 1
    if pipeline == "rag_rerank":
        assert "ranker" in answer.timings


def test_reopened_in_a_new_process_returns_the_same_documents(indexed, tiny):
    data_dir, _ = indexed
    here = [doc.id for doc in _ask(data_dir, tiny, "Who was Diogenes?").sources]
    script = ("import json, sys; from haystack_integrations.common.grit import pipelines as hp; "
              "p = hp.load_pipeline('rag', data_dir=sys.argv[1], model=sys.argv[2]); "
              "print(json.dumps([d.id for d in hp.ask(p, 'Who was Diogenes?').sources])); hp.close_pipeline(p)")
    out = subprocess.run([sys.executable, "-c", script, str(data_dir), tiny], capture_output=True, text=True,
                         timeout=240, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_doc_cache_pipelines_reuse_indexing_caches(tmp_path, tiny, corpus_dir):
    import shutil

    from grit_components import load_model

    # a model of its own: the KV store's folder is set once per shared model, and other tests share `tiny`
    tiny = str(shutil.copytree(tiny, tmp_path / "model"))
    model = load_model(tiny)
    previous = model.kv_store.directory
    try:
        index_folders(tmp_path, [corpus_dir], model=tiny, pipeline="indexing_doc_cache")
        assert any((tmp_path / "kv").iterdir())
        model.kv_store.clear()  # as in a new process: only the directory tier is left
        answer = _ask(tmp_path, tiny, "Who was Diogenes?", "rag_doc_cache")
        assert answer.meta["cache_mode"] == "multi_doc"
        assert answer.meta["cache"]["cache_hits"] == len(answer.sources) == 2
        assert answer.meta["cache"]["cache_misses"] == 0
    finally:
        model.kv_store.directory = previous
        from grit_components import default_registry

        default_registry.release(model)


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, tiny) -> str:
    """A tiny llama with 32-dim embeddings (the shared tiny models have 64)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("dim32")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_dimension_mismatch_is_a_clear_error_before_writing(indexed, tiny, wide_model_dir):
    data_dir, first = indexed
    with pytest.raises(hp.EmbeddingDimensionError, match="32 dimensions"):
        hp.load_pipeline("indexing", data_dir=data_dir, model=wide_model_dir)
    built = hp.load_pipeline("rag", data_dir=data_dir, model=tiny)  # the failed load closed the folder
    try:
        assert hp.document_stores(built)[0].count_documents() == first.documents_in_store
    finally:
        hp.close_pipeline(built)


runner = CliRunner()


def test_cli_index_ask_run(tmp_path, tiny, corpus_dir):
    data = ["--data-dir", str(tmp_path), "--model", tiny]
    result = runner.invoke(app, ["index", str(corpus_dir), *data])
    assert result.exit_code == 0, result.output
    assert "indexed 10 of 10 files: 10 added" in result.output
    result = runner.invoke(app, ["ask", "Who was Diogenes?", "--json", *data])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(answer) >= {"answer", "sources", "timings"} and len(answer["sources"]) == 3
    result = runner.invoke(app, ["ask", "Who was Diogenes?", *data])
    assert result.exit_code == 0 and "sources:" in result.stdout and "timings:" in result.stdout
    result = runner.invoke(app, ["run", "rag", "--input", "text=Who was Diogenes?", "--input", "query=Who?", *data])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout[result.stdout.index("{"):])
    assert outputs["llm"]["replies"][0]["role"] == "assistant" and "_timings" in outputs


def test_cli_errors(tmp_path, tiny):
    result = runner.invoke(app, ["index", str(tmp_path / "missing"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["ask", "q", "--pipeline", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown pipeline" in result.output
    result = runner.invoke(app, ["run", "rag", "--input", "novalue", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["ask", "q", "--data-dir", str(tmp_path / "empty"), "--model", tiny])
    assert result.exit_code == 2 and "nothing is indexed" in result.output


def test_cli_demo_main_job(tmp_path, tiny, corpus_dir):
    """`grit demo` indexes the bundled corpus and answers questions; then a user's own folder."""
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path), "--model", tiny, "--questions", "3"])
    assert result.exit_code == 0, result.output
    assert "indexed 300 of 300 files: 300 added" in result.output and result.stdout.count("\nQ: ") == 3
    # three forms: a description (asked for the name), a who question and a yes/no question, in that order
    asked = [line for line in result.stdout.splitlines() if line.startswith("Q: ")]
    assert "Answer with the name only" in asked[0] and "Who took Helen" in asked[1] and "Is the rock dove" in asked[2]
    assert "expected:" in result.stdout and "retrieval:" in result.output
    assert (tmp_path / "demo-corpus" / "NOTICE.md").exists()  # the CC BY-SA notice travels with the copy
    again = runner.invoke(app, ["demo", "--data-dir", str(tmp_path), "--model", tiny, "--questions", "1"])
    assert again.exit_code == 0 and "300 unchanged" in again.output and "0 embedded" in again.output
    own = runner.invoke(app, ["demo", str(corpus_dir), "--data-dir", str(tmp_path / "own"), "--model", tiny,
                              "--ask", "Who was Diogenes?"])
    assert own.exit_code == 0, own.output
    assert "indexed 10 of 10 files" in own.output and own.stdout.count("\nQ: ") == 1


def test_demo_items_put_questions_of_different_forms_first():
    from grit_components.cli.pipelines import demo_items, demo_question

    items = demo_items(8)
    assert len({item["form"] for item in items[:3]}) == 3 and len(items) == 8
    assert len({item["gold"] for item in items}) == 8  # the WikiDesc questions that follow ask about other passages
    assert all("form" not in item and "description" in item for item in items[5:])
    assert demo_question(items[1]) == items[1]["question"]  # asked as written
    assert demo_question(items[0]).endswith("Answer with the name only.")
    corpus = {json.loads(line)["_id"]: json.loads(line)["text"] for line in
              (Path(__file__).parents[2] / "grit_components" / "data" / "wikidesc-demo.jsonl").read_text().splitlines()}
    for item in items[1:5]:  # every answer other than yes/no is stated by its passage
        assert item["answer"] == "Yes" or item["answer"] in corpus[item["gold"]]


def test_component_timings_are_per_request_under_concurrency():
    import threading
    import time

    from haystack import component

    @component
    class Sleeper:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        @component.output_types(value=int)
        def run(self, value: int) -> dict:
            time.sleep(self.seconds)
            return {"value": value + 1}

    def pipeline(prefix: str, seconds: float) -> Pipeline:
        p = Pipeline()
        p.add_component(f"{prefix}_a", Sleeper(seconds))
        p.add_component(f"{prefix}_b", Sleeper(seconds))
        p.connect(f"{prefix}_a.value", f"{prefix}_b.value")
        return p

    results: dict = {}
    barrier = threading.Barrier(2)

    def request(prefix: str, seconds: float) -> None:
        barrier.wait()  # both runs overlap in time
        with hp.component_timings() as timings:
            pipeline(prefix, seconds).run({f"{prefix}_a": {"value": 0}})
        results[prefix] = dict(timings)

    threads = [threading.Thread(target=request, args=args) for args in (("fast", 0.05), ("slow", 0.3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results["fast"]) == {"fast_a", "fast_b"} and set(results["slow"]) == {"slow_a", "slow_b"}
    assert all(0.05 <= v < 0.3 for v in results["fast"].values()) and all(v >= 0.3 for v in results["slow"].values())

    # a tracer the user installed before (e.g. OpenTelemetry) keeps receiving every span
    previous = tracing.tracer.actual_tracer
    recorder = Recorder()
    tracing.enable_tracing(recorder)
    try:
        with hp.component_timings() as timings:
            pipeline("user", 0.0).run({"user_a": {"value": 0}})
        assert set(timings) == {"user_a", "user_b"}
        assert recorder.operations.count("haystack.component.run") == 2
        assert tracing.tracer.actual_tracer.inner is recorder
    finally:
        tracing.enable_tracing(previous)


class Recorder(tracing.Tracer):
    """A user's own tracer (as Langfuse or OpenTelemetry would be): records the operations it sees."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    def trace(self, operation_name, tags=None, parent_span=None):
        self.operations.append(operation_name)
        return NullTracer().trace(operation_name, tags, parent_span)

    def current_span(self):
        return None


def _two_step_pipeline() -> Pipeline:
    from haystack import component

    @component
    class AddOne:
        @component.output_types(value=int)
        def run(self, value: int) -> dict:
            return {"value": value + 1}

    p = Pipeline()
    p.add_component("first", AddOne())
    p.add_component("second", AddOne())
    p.connect("first.value", "second.value")
    return p


def test_timings_survive_a_tracer_enabled_later_and_it_sees_every_span():
    previous = tracing.tracer.actual_tracer
    try:
        with hp.component_timings() as before:
            _two_step_pipeline().run({"first": {"value": 0}})
        assert set(before) == {"first", "second"}
        langfuse_like = Recorder()
        tracing.enable_tracing(langfuse_like)  # replaces the global tracer, the timing wrapper included
        with hp.component_timings() as after:
            _two_step_pipeline().run({"first": {"value": 0}})
        assert set(after) == {"first", "second"}
        assert langfuse_like.operations == ["haystack.pipeline.run", "haystack.component.run",
                                            "haystack.component.run"]
        # runs outside a block are traced as usual and time nothing
        _two_step_pipeline().run({"first": {"value": 0}})
        assert langfuse_like.operations.count("haystack.pipeline.run") == 2
    finally:
        tracing.enable_tracing(previous)


def test_timings_work_with_hayhooks_traces_without_stacking_wrappers():
    from hayhooks.server.tracing import _enable_live_buffer_span_capture
    from hayhooks.server.utils.live_trace_buffer import clear_live_traces, get_recent_traces

    previous = tracing.tracer.actual_tracer
    tracing.disable_tracing()
    clear_live_traces()
    try:
        for _ in range(3):  # hayhooks and the timings both (re)install their tracer on every request
            _enable_live_buffer_span_capture()
            with hp.component_timings() as timings:
                _two_step_pipeline().run({"first": {"value": 0}})
            assert set(timings) == {"first", "second"}
        chain = list(hp._wrapped_tracers(tracing.tracer.actual_tracer))
        assert sum(isinstance(t, hp.ComponentTimingTracer) for t in chain) == 1 and len(chain) == 2
        assert not tracing.is_tracing_enabled()  # no real tracer was enabled, and Haystack still says so
        traces = get_recent_traces(limit=10)
        assert len(traces) == 3  # hayhooks recorded each pipeline run once
    finally:
        clear_live_traces()
        tracing.enable_tracing(previous)


def test_timings_with_haystacks_own_logging_tracer_and_content_tracing(caplog):
    import logging

    from haystack.tracing.logging_tracer import RESET_COLOR, LoggingTracer

    previous, content = tracing.tracer.actual_tracer, tracing.tracer.is_content_tracing_enabled
    tracing.enable_tracing(LoggingTracer())  # the user's tracer, enabled first, with component inputs/outputs
    tracing.tracer.is_content_tracing_enabled = True
    caplog.set_level(logging.DEBUG, logger="haystack.tracing.logging_tracer")
    try:
        with hp.component_timings() as timings:
            _two_step_pipeline().run({"first": {"value": 0}})
        assert set(timings) == {"first", "second"} and all(seconds > 0 for seconds in timings.values())
        assert tracing.is_tracing_enabled()  # still the user's tracing, wrapped
        logged = [record.getMessage() for record in caplog.records]
        assert logged.count("Operation: haystack.component.run") == 2
        assert logged.count("Operation: haystack.pipeline.run") == 1
        # the tags the pipeline sets on each span (content included) reach the user's tracer
        tags = [message.removesuffix(RESET_COLOR) for message in logged]
        assert "haystack.component.name=second" in tags and 'haystack.component.output={"value": 2}' in tags
    finally:
        tracing.tracer.is_content_tracing_enabled = content
        tracing.enable_tracing(previous)


@pytest.mark.parametrize("name", ["rag", "rag_rerank"])
def test_rag_prompt_is_the_doc_first_layout_the_model_was_trained_with(name):
    """The YAML's ChatPromptBuilder renders exactly `templates.rag_user_content("none", ..., order="doc_first")`."""
    from haystack import Document
    from haystack.components.builders import ChatPromptBuilder

    from grit_components import templates

    data = yaml.safe_load((hp.pipelines_dir() / f"{name}.yaml").read_text())
    params = data["components"]["prompt_builder"]["init_parameters"]
    docs = [Document(content="An alum is a salt.", meta={"title": "Alum"}), Document(content="Silicates are anions.")]
    text = ChatPromptBuilder(**params).run(query="What is X?", documents=docs)["prompt"][0].text
    joined = templates.RAG_DOCUMENT_SEPARATOR.join(["Alum\nAn alum is a salt.", "Silicates are anions."])
    assert text == templates.rag_user_content("none", "What is X?", joined, order="doc_first")

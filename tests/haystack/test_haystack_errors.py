"""Bad input to the Haystack components and YAML pipelines: a clear error naming the problem, raised before any
compute where possible, and `error: ...` with exit status 2 from the CLI (issue 12's probes)."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from haystack import Document
from typer.testing import CliRunner

from grit_components.cli import app
from haystack_integrations.common.grit import pipelines as hp
from tests._models import index_folders
from haystack_integrations.components.embedders.grit import GritDocumentEmbedder, GritTextEmbedder
from haystack_integrations.components.generators.grit import GritChatGenerator
from haystack_integrations.components.rankers.grit import GritRanker

runner = CliRunner()


@pytest.mark.parametrize("component", [GritTextEmbedder, GritDocumentEmbedder, GritRanker, GritChatGenerator])
def test_plain_string_token_is_a_type_error(component):
    with pytest.raises(TypeError, match="token must be a haystack Secret"):
        component(token="hf_plain_string")


def test_non_callable_streaming_callback_fails_before_generating(tiny, monkeypatch):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 4})
    generator.warm_up()

    def must_not_run(*args, **kwargs):
        raise AssertionError("generation ran with a non-callable streaming_callback")

    monkeypatch.setattr(generator.generator, "generate", must_not_run)
    with pytest.raises(TypeError, match="streaming_callback must be callable, not str"):
        generator.run("Hi?", streaming_callback="print")
    with pytest.raises(TypeError, match="streaming_callback must be callable, not int"):
        asyncio.run(generator.run_async("Hi?", streaming_callback=3))


def test_bad_seed_and_surrogate_name_the_parameter(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 4, "temperature": 1.0})
    with pytest.raises(TypeError, match=r"generation_kwargs\['seed'\] must be an int"):
        generator.run("Hi?", generation_kwargs={"seed": "a"})
    with pytest.raises(ValueError, match="unpaired surrogate"):
        generator.run("caf\udce9?")
    embedder = GritDocumentEmbedder(tiny)
    with pytest.raises(ValueError, match=r"documents\[1\] contains an unpaired surrogate"):
        # An explicit id: Haystack cannot hash such a content into a default id (its own UnicodeEncodeError).
        embedder.run([Document(id="a", content="fine"), Document(id="b", content="caf\udce9")])


def _yaml(tmp_path, text: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "match"), [
    ("", "not a pipeline definition.*an empty file"),
    ("- a\n- b\n", "not a pipeline definition.*a list"),
    ("components: [a, b]\n", "`components` must be a mapping"),
    ("components:\n  llm: text\n", "component 'llm' must be a mapping"),
    ("components:\n  x:\n    type: nowhere.Thing\n", "nowhere"),
])
def test_malformed_yaml_is_a_setup_error(tmp_path, text, match):
    with pytest.raises(hp.PipelineSetupError, match=match):
        hp.load_pipeline(_yaml(tmp_path, text), data_dir=tmp_path)


def _rag_with(tmp_path, component: str, **params):
    data = yaml.safe_load((hp.pipelines_dir() / "rag_rerank.yaml").read_text(encoding="utf-8"))
    data["components"][component]["init_parameters"].update(params)
    return _yaml(tmp_path, yaml.safe_dump(data))


@pytest.mark.parametrize("component", ["retriever", "ranker"])
def test_negative_top_k_is_found_before_anything_runs(tmp_path, component):
    with pytest.raises(hp.PipelineSetupError, match=rf"component '{component}': top_k must be an int >= 1, got -2"):
        hp.load_pipeline(_rag_with(tmp_path, component, top_k=-2), data_dir=tmp_path)


def test_a_components_rejected_setting_names_file_and_component(tmp_path, tiny):
    path = _rag_with(tmp_path, "llm", cache_mode="everything")
    with pytest.raises(hp.PipelineSetupError, match=r"pipeline.yaml: component 'llm': cache_mode must be one of"):
        hp.load_pipeline(path, data_dir=tmp_path, model=tiny)


@pytest.fixture(scope="module")
def indexed_two(tmp_path_factory, tiny):
    """A data directory with two short files indexed by the tiny model."""
    folder = tmp_path_factory.mktemp("two-docs")
    (folder / "a.txt").write_text("Paris is the capital of France.", encoding="utf-8")
    (folder / "b.txt").write_text("Rome is the capital of Italy.", encoding="utf-8")
    data_dir = tmp_path_factory.mktemp("data")
    index_folders(data_dir, [folder], model=tiny)
    return data_dir


def test_question_over_the_context_is_a_component_input_error(indexed_two, tiny):
    built = hp.load_pipeline("rag", data_dir=indexed_two, model=tiny)
    try:
        with pytest.raises(hp.ComponentInputError, match=r"component '\w+': .*context length") as raised:
            hp.ask(built, "word " * 5000)
        assert "\n" not in str(raised.value)  # one line, not Haystack's multi-line report
    finally:
        hp.close_pipeline(built)


def _cli_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and "error:" in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def test_cli_ask_over_the_context(indexed_two, tiny):
    _cli_error(runner.invoke(app, ["ask", "word " * 5000, "--data-dir", str(indexed_two), "--model", tiny]),
               "context length", "component '")


def test_cli_run_over_the_context(indexed_two, tiny):
    _cli_error(runner.invoke(app, ["run", "rag", "--input", "text=q", "--input", f"query={'word ' * 5000}",
                                   "--data-dir", str(indexed_two), "--model", tiny]),
               "context length", "component '")


def test_cli_ask_with_negative_top_k(indexed_two, tiny, tmp_path):
    _cli_error(runner.invoke(app, ["ask", "q", "--pipeline", str(_rag_with(tmp_path, "retriever", top_k=-2)),
                                   "--data-dir", str(indexed_two), "--model", tiny]),
               "component 'retriever': top_k must be an int >= 1, got -2")


@pytest.mark.parametrize(("text", "what"), [("", "an empty file"), ("- a\n", "a list")])
def test_cli_ask_and_run_with_an_empty_or_list_yaml(tmp_path, text, what):
    path = _yaml(tmp_path, text)
    _cli_error(runner.invoke(app, ["ask", "q", "--pipeline", str(path), "--data-dir", str(tmp_path)]), what)
    _cli_error(runner.invoke(app, ["run", str(path), "--input", "text=q", "--data-dir", str(tmp_path)]), what)

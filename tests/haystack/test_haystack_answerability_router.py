"""GritAnswerabilityRouter: serialisation, routing either way, the verdict, bad input; the bundled
rag_answerability.yaml pipeline end to end with the shipped model."""

from __future__ import annotations

import asyncio
import json
import shutil
from importlib.resources import files

import pytest
from haystack import Document, Pipeline
from haystack.dataclasses import ChatMessage

from grit_components import DEFAULT_MODEL, templates
from grit_components.metadata import METADATA_FILE
from haystack_integrations.common.grit import pipelines as hp
from haystack_integrations.components.routers.grit import GritAnswerabilityRouter
from tests._models import index_folders

TYPE = "haystack_integrations.components.routers.grit.answerability_router.GritAnswerabilityRouter"
TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}
WEIGHTS = {"query_likelihood_gain": 1.0, "cosine": 1.0, "bias": 0.0, "max_passage_tokens": 64}
DOCS = [Document(content="Paris is the capital of France.", meta={"title": "Paris"}),
        Document(content="Bananas are yellow.")]


def test_to_dict_defaults_and_round_trip(tiny):
    assert GritAnswerabilityRouter().to_dict() == {
        "type": TYPE,
        "init_parameters": {"model": DEFAULT_MODEL, "threshold": 0.0, "weights": None, "query_instruction": None,
                            "meta_fields_to_embed": [], "embedding_separator": "\n",
                            "no_answer": templates.NO_ANSWER, "batch_size": 8, "device": None, "token": TOKEN_DICT,
                            "model_kwargs": None, "tokenizer_kwargs": None}}
    router = GritAnswerabilityRouter(tiny, threshold=0.5, weights=WEIGHTS, meta_fields_to_embed=["title"],
                                     no_answer="Not in the sources.", batch_size=2)
    again = GritAnswerabilityRouter.from_dict(router.to_dict())
    assert again.to_dict() == router.to_dict() and again._core is None  # nothing loaded


def test_bad_init_values_fail_at_init_naming_them(tiny):
    with pytest.raises(TypeError, match="threshold"):
        GritAnswerabilityRouter(tiny, threshold="low")
    with pytest.raises(ValueError, match="bias must be a finite number"):
        GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": None})
    with pytest.raises(ValueError, match="no_answer"):
        GritAnswerabilityRouter(tiny, no_answer="")
    with pytest.raises(ValueError, match="declares no answerability gate"):
        GritAnswerabilityRouter(tiny).warm_up()  # the tiny model has no gate and none was given


def test_routes_to_the_prompt_or_to_the_no_answer_reply(tiny):
    answer = GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": 100.0}, meta_fields_to_embed=["title"])
    result = answer.run(query="capital of France", documents=DOCS)
    assert result["documents"] == DOCS and "no_answer" not in result
    verdict = result["answerability"]
    assert verdict["answerable"] is True and verdict["score"] > 90 and verdict["threshold"] == 0.0

    decline = GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": -100.0})
    result = decline.run(query="capital of France", documents=DOCS)
    assert "documents" not in result
    (reply,) = result["no_answer"]
    assert isinstance(reply, ChatMessage) and reply.text == templates.NO_ANSWER and reply.role.value == "assistant"
    assert reply.meta["answerability"] == result["answerability"] and result["answerability"]["answerable"] is False
    # the per-run threshold moves the decision; the score stays
    score = result["answerability"]["score"]
    assert "documents" in decline.run(query="capital of France", documents=DOCS, threshold=score - 1)
    assert asyncio.run(decline.run_async(query="capital of France", documents=DOCS))["no_answer"][0].text == (
        templates.NO_ANSWER)
    assert "no_answer" in decline.run(query="capital of France", documents=[])  # nothing to answer from


def test_a_declining_router_streams_its_reply(tiny):
    chunks = []
    decline = GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": -100.0})
    decline.run(query="capital of France", documents=DOCS, streaming_callback=chunks.append)
    (chunk,) = chunks
    assert chunk.content == templates.NO_ANSWER and chunk.finish_reason == "stop"
    assert chunk.component_info.type.endswith("GritAnswerabilityRouter")
    answer = GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": 100.0})
    answer.run(query="capital of France", documents=DOCS, streaming_callback=chunks.append)
    assert len(chunks) == 1  # passing documents on streams nothing: the generator will

    async def collect(chunk):
        chunks.append(chunk)

    asyncio.run(decline.run_async(query="capital of France", documents=DOCS, streaming_callback=collect))
    assert len(chunks) == 2 and chunks[1].content == templates.NO_ANSWER


def test_the_generator_after_a_declining_router_sends_nothing_but_alone_still_needs_messages(tiny):
    """In a pipeline, a generator whose prompt did not come (the router declined) sends no reply even when the
    request gave it options; on its own, a run without messages is still an error."""
    from haystack.components.builders import ChatPromptBuilder
    from haystack.components.joiners import BranchJoiner

    from haystack_integrations.components.generators.grit import GritChatGenerator

    with pytest.raises(ValueError, match="needs `messages`"):
        GritChatGenerator(tiny).run(generation_kwargs={"max_new_tokens": 2})
    pipeline = Pipeline()
    pipeline.add_component("router", GritAnswerabilityRouter(tiny, weights={**WEIGHTS, "bias": -100.0}))
    pipeline.add_component("prompt_builder", ChatPromptBuilder(
        template=[ChatMessage.from_user("{{ documents[0].content }} {{ query }}")], required_variables="*"))
    pipeline.add_component("llm", GritChatGenerator(tiny))
    pipeline.add_component("replies", BranchJoiner(list[ChatMessage]))
    pipeline.connect("router.documents", "prompt_builder.documents")
    pipeline.connect("prompt_builder.prompt", "llm.messages")
    pipeline.connect("router.no_answer", "replies.value")
    pipeline.connect("llm.replies", "replies.value")
    result = pipeline.run({"router": {"query": "q", "documents": DOCS}, "prompt_builder": {"query": "q"},
                           "llm": {"generation_kwargs": {"max_new_tokens": 2}}}, include_outputs_from={"llm"})
    assert [m.text for m in result["replies"]["value"]] == [templates.NO_ANSWER]
    assert "replies" not in result.get("llm", {})


def test_bad_run_input(tiny):
    router = GritAnswerabilityRouter(tiny, weights=WEIGHTS)
    with pytest.raises(TypeError, match="query must be a str"):
        router.run(query=3, documents=DOCS)
    with pytest.raises(TypeError, match="list of Documents"):
        router.run(query="q", documents=["text"])


def test_the_bundled_pipeline_round_trips_and_wires_both_branches():
    text = (hp.pipelines_dir() / "rag_answerability.yaml").read_text()
    pipeline = Pipeline.loads(text)
    assert Pipeline.loads(pipeline.dumps()) == pipeline
    edges = {(s, r, d["from_socket"].name) for s, r, d in pipeline.graph.edges(data=True)}
    assert ("router", "prompt_builder", "documents") in edges
    assert ("router", "replies", "no_answer") in edges and ("llm", "replies", "replies") in edges


@pytest.mark.integration
def test_the_pipeline_declines_what_its_passages_cannot_answer(tmp_path, grit_smol):
    """Indexed WikiDesc passages, the shipped model: a question about one of them is answered by the
    generator; a question none of them touches gets the router's reply and the generator does not run."""
    data = files("grit_components") / "data"
    passages = [json.loads(line) for line in (data / "wikidesc-demo.jsonl").read_text(encoding="utf-8").splitlines()]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for passage in passages[:12]:
        (corpus / f"{passage['_id']}.txt").write_text(passage["text"], encoding="utf-8")
    index_folders(tmp_path, [corpus], pipeline="indexing", model="grit-smollm2-135m")
    assert passages[0]["title"] == "Diogenes"
    built = hp.load_pipeline("rag_answerability", data_dir=tmp_path)
    try:
        known = hp.ask(built, "Which school of philosophy did Diogenes of Sinope found?")
        unknown = hp.ask(built, "What is the boiling point of liquid nitrogen on Jupiter's moon Europa?")
    finally:
        hp.close_pipeline(built)
    assert known.sources[0].content.startswith("Diogenes")
    assert "llm" in known.timings and known.text != templates.NO_ANSWER
    assert unknown.text == templates.NO_ANSWER and "llm" not in unknown.timings
    assert unknown.meta["answerability"]["answerable"] is False and len(unknown.sources) == 3


def test_no_gate_in_the_yaml_model_is_a_setup_error(tiny, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny, target)
    assert not (target / METADATA_FILE).exists()
    with pytest.raises(ValueError, match="declares no answerability gate"):
        hp.load_pipeline("rag_answerability", data_dir=tmp_path, model=str(target))

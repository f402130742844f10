"""GritChatGenerator: init, serialization, the chat contract, streaming, and cache-mode answers."""

from __future__ import annotations

import asyncio
import copy

import pytest
from haystack import Document
from haystack.dataclasses import ChatMessage, StreamingChunk
from haystack.components.generators.utils import print_streaming_chunk
from haystack.utils import ComponentDevice, Secret

from haystack_integrations.components.generators.grit import GritChatGenerator

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.generators.grit.chat_generator.GritChatGenerator"
SHORT = {"max_new_tokens": 4}


def test_init_defaults():
    generator = GritChatGenerator()
    assert generator.model == "grit-smollm2-135m"
    assert generator.generation_kwargs == {} and generator.streaming_callback is None
    assert generator.cache_mode == "none" and generator.cache_source == "embedding"
    assert generator.kv_cache_directory is None and generator._generator is None


def test_to_dict_defaults():
    assert GritChatGenerator().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": "grit-smollm2-135m",
            "generation_kwargs": {},
            "streaming_callback": None,
            "cache_mode": "none",
            "cache_source": "embedding",
            "kv_cache_directory": None,
            "device": None,
            "dtype": None,
            "revision": None,
            "token": TOKEN_DICT,
            "trust_remote_code": False,
        },
    }


def test_from_dict_round_trip(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 8, "temperature": 0.5, "seed": 1},
                                  streaming_callback=print_streaming_chunk, cache_mode="multi_doc", cache_source="causal",
                                  kv_cache_directory="/tmp/kv", device=ComponentDevice.from_str("cpu"),
                                  dtype="float32", revision="v1", token=Secret.from_env_var("MY_TOKEN", strict=False))
    data = generator.to_dict()
    assert data["init_parameters"]["streaming_callback"] == "haystack.components.generators.utils.print_streaming_chunk"
    restored = GritChatGenerator.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.streaming_callback is print_streaming_chunk
    assert restored.generation_kwargs == {"max_new_tokens": 8, "temperature": 0.5, "seed": 1}


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"generation_kwargs": {"max_tokens": 3}}, ValueError), ({"generation_kwargs": [1]}, TypeError),
    ({"cache_mode": "everything"}, ValueError), ({"cache_mode": 1}, TypeError), ({"cache_source": "disk"}, ValueError),
    ({"streaming_callback": "print"}, TypeError), ({"device": "cpu"}, TypeError),
])
def test_init_rejects_bad_values(kwargs, error):
    with pytest.raises(error):
        GritChatGenerator(**kwargs)


def test_run_messages_and_str(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT)
    generator.warm_up()
    generator.warm_up()
    reply = generator.run([ChatMessage.from_system("Be brief."), ChatMessage.from_user("Hi?")])["replies"][0]
    assert reply.role.value == "assistant" and isinstance(reply.text, str)
    assert reply.meta["finish_reason"] in ("stop", "length") and reply.meta["model"] == tiny
    assert reply.meta["usage"]["completion_tokens"] <= 4 and "total" in reply.meta["timings"]
    assert generator.run("Hi?")["replies"][0].text == generator.run([ChatMessage.from_user("Hi?")])["replies"][0].text


def test_generation_kwargs_override(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 8})
    reply = generator.run("Hi?", generation_kwargs={"max_new_tokens": 2})["replies"][0]
    assert reply.meta["usage"]["completion_tokens"] <= 2
    with pytest.raises(ValueError, match="unknown generation_kwargs"):
        generator.run("Hi?", generation_kwargs={"max_tokens": 2})


def test_streaming(tiny):
    chunks: list[StreamingChunk] = []
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT)
    reply = generator.run("Hi?", streaming_callback=chunks.append)["replies"][0]
    assert chunks and chunks[-1].finish_reason == reply.meta["finish_reason"]
    assert "".join(c.content for c in chunks) == reply.text
    assert chunks[0].component_info is not None


def test_run_async_with_async_callback(tiny):
    chunks: list[StreamingChunk] = []

    async def collect(chunk: StreamingChunk) -> None:
        chunks.append(chunk)

    generator = GritChatGenerator(tiny, generation_kwargs=SHORT)
    reply = asyncio.run(generator.run_async("Hi?", streaming_callback=collect))["replies"][0]
    assert "".join(c.content for c in chunks) == reply.text


def test_wrong_and_empty_inputs(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT)
    with pytest.raises(TypeError):
        generator.run([{"role": "user", "content": "Hi"}])
    with pytest.raises(ValueError):
        generator.run([])
    with pytest.raises(ValueError):
        generator.run()
    with pytest.raises(TypeError):
        generator.run(query="q", documents=["not a Document"])


DOCS = [Document(content="Paris is the capital of France."), Document(content="Berlin is the capital of Germany.")]


@pytest.mark.parametrize("mode", ["doc", "query", "query_doc", "doc_query", "multi_doc"])
def test_cache_modes_answer_from_documents(tiny, mode):
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT, cache_mode=mode)
    reply = generator.run(query="What is the capital of France?", documents=DOCS)["replies"][0]
    assert reply.meta["cache_mode"] == mode
    assert reply.meta["cache"]["mode"] == mode
    again = generator.run(query="What is the capital of France?", documents=DOCS)["replies"][0]
    assert again.meta["cache"]["cache_hits"] >= 1 and again.text == reply.text


def test_cache_mode_needs_query(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT, cache_mode="doc")
    with pytest.raises(ValueError, match="query"):
        generator.run([ChatMessage.from_user("Hi?")])


def test_no_cache_mode_with_query_and_documents_only(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT)
    reply = generator.run(query="What is the capital of France?", documents=DOCS)["replies"][0]
    assert reply.meta["cache_mode"] == "none"

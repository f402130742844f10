"""GritChatGenerator: init, serialization, the chat contract, streaming, and cache-mode answers."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from haystack import Document
from haystack.dataclasses import ChatMessage, StreamingChunk
from haystack.components.generators.utils import print_streaming_chunk
from haystack.utils import ComponentDevice, Secret

from grit_components import DEFAULT_MODEL
from haystack_integrations.components.generators.grit import GritChatGenerator

TOKEN_DICT = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}

TYPE = "haystack_integrations.components.generators.grit.chat_generator.GritChatGenerator"
SHORT = {"max_new_tokens": 4}


def test_init_defaults():
    generator = GritChatGenerator()
    assert generator.model == DEFAULT_MODEL
    assert generator.generation_kwargs == {} and generator.streaming_callback is None
    assert generator.cache_mode == "none" and generator.cache_source == "embedding"
    assert generator.kv_cache_directory is None and generator._core is None


def test_to_dict_defaults():
    assert GritChatGenerator().to_dict() == {
        "type": TYPE,
        "init_parameters": {
            "model": DEFAULT_MODEL,
            "generation_kwargs": {},
            "streaming_callback": None,
            "cache_mode": "none",
            "cache_source": "embedding",
            "kv_cache_directory": None,
            "kv_cache_max_bytes": None,
            "kv_cache_dtype": None,
            "device": None,
            "token": TOKEN_DICT,
            "model_kwargs": None,
            "tokenizer_kwargs": None,
            "tools": None,
            "tool_parsing_function": None,
        },
    }


def test_from_dict_round_trip(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 8, "temperature": 0.5, "seed": 1,
                                                           "repetition_penalty": 1.2, "stop_words": ["\n"]},
                                  streaming_callback=print_streaming_chunk, cache_mode="multi_doc", cache_source="causal",
                                  kv_cache_directory="/tmp/kv", kv_cache_max_bytes=2**20, kv_cache_dtype="int8",
                                  device=ComponentDevice.from_str("cpu"),
                                  token=Secret.from_env_var("MY_TOKEN", strict=False),
                                  model_kwargs={"torch_dtype": torch.float32, "attn_implementation": "eager"})
    data = generator.to_dict()
    assert data["init_parameters"]["streaming_callback"] == "haystack.components.generators.utils.print_streaming_chunk"
    restored = GritChatGenerator.from_dict(copy.deepcopy(data))
    assert restored.to_dict() == data
    assert restored.streaming_callback is print_streaming_chunk
    assert restored.generation_kwargs == {"max_new_tokens": 8, "temperature": 0.5, "seed": 1,
                                          "repetition_penalty": 1.2, "stop_words": ["\n"]}
    assert restored.model_kwargs == {"torch_dtype": torch.float32, "attn_implementation": "eager"}
    assert restored._get_telemetry_data() == {"model": tiny}
    assert restored.loading_options().kv_cache_dtype == "int8"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"generation_kwargs": {"max_tokens": 3}}, ValueError), ({"generation_kwargs": [1]}, TypeError),
    ({"generation_kwargs": {"repetition_penalty": -1}}, ValueError),
    ({"generation_kwargs": {"num_return_sequences": 2}}, ValueError), ({"kv_cache_max_bytes": -1}, ValueError),
    ({"kv_cache_dtype": "int4"}, ValueError), ({"kv_cache_dtype": 8}, TypeError),
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
    with pytest.raises(ValueError, match="unknown generation_kwargs.*valid keys.*repetition_penalty"):
        generator.run("Hi?", generation_kwargs={"max_tokens": 2})


def test_any_generation_config_key_passes_through(tiny):
    generator = GritChatGenerator(tiny, generation_kwargs={"max_new_tokens": 12})
    plain = generator.run("Hi?")["replies"][0]
    shaped = generator.run("Hi?", generation_kwargs={"no_repeat_ngram_size": 1, "repetition_penalty": 1.3})["replies"][0]
    assert shaped.text != plain.text
    assert shaped.meta["usage"]["completion_tokens"] <= 12


def test_device_map_from_component_device(tiny):
    from haystack.utils.device import Device, DeviceMap

    device = ComponentDevice.from_multiple(DeviceMap({"model": Device.cpu(), "lm_head": Device.cpu()}))
    generator = GritChatGenerator(tiny, generation_kwargs=SHORT, device=device)
    assert generator.loading_options().device_map == {"model": "cpu", "lm_head": "cpu"}
    restored = GritChatGenerator.from_dict(generator.to_dict())
    assert restored.device == device
    assert restored.run("Hi?")["replies"][0].meta["usage"]["completion_tokens"] <= 4  # it loads and runs


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

"""GritLLM: LlamaIndex base-class checks, chat formatting, streaming and async parity with the core."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.llms import LLM, ChatMessage
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.llms.grit import GritLLM

from grit_components import GritGenerator, ModelRegistry
from grit_components import generation as core_generation

SYSTEM = ChatMessage(role="system", content="Answer in one word.")
USER = ChatMessage(role="user", content="Name a prime number.")


def test_class():
    names = [cls.__name__ for cls in GritLLM.__mro__]
    assert FunctionCallingLLM.__name__ in names and LLM.__name__ in names
    assert GritLLM.class_name() == "GritLLM"


def test_serialises_without_loading(tiny_grit_dir):
    registry = ModelRegistry()
    generate_kwargs = {"temperature": 0.5, "top_p": 0.9, "stop_words": ["\n\n"], "seed": 3, "repetition_penalty": 1.1}
    llm = GritLLM(tiny_grit_dir, max_new_tokens=7, generate_kwargs=generate_kwargs, chat_format="grit",
                  context_window=1024, dtype="float32", model_kwargs={"attn_implementation": "eager"},
                  tokenizer_kwargs={"model_max_length": 512}, kv_cache_max_bytes=2**20, kv_cache_dtype="bfloat16",
                  registry=registry)
    data = llm.to_dict()
    assert registry.loads == 0
    assert {k: data[k] for k in ("class_name", "model_name", "max_new_tokens", "generate_kwargs", "chat_format",
                                 "context_window", "dtype", "model_kwargs", "tokenizer_kwargs",
                                 "kv_cache_max_bytes", "kv_cache_dtype")} == {
        "class_name": "GritLLM", "model_name": tiny_grit_dir, "max_new_tokens": 7, "generate_kwargs": generate_kwargs,
        "chat_format": "grit", "context_window": 1024, "dtype": "float32", "model_kwargs": {"attn_implementation": "eager"},
        "tokenizer_kwargs": {"model_max_length": 512}, "kv_cache_max_bytes": 2**20,
        "kv_cache_dtype": "bfloat16"}
    assert GritLLM.from_dict(data).to_dict() == data
    assert llm.generator.loading.model_kwargs == {"attn_implementation": "eager"}
    assert llm.generator.loading.chat_format == "grit" and llm.generator.loading.dtype == "float32"
    assert llm.generator.loading.kv_cache_dtype == "bfloat16"


def test_bad_settings(tiny_grit_dir):
    with pytest.raises(ValueError):
        GritLLM(tiny_grit_dir, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"unknown generate_kwargs \['beams'\]; valid keys .*num_beams"):
        GritLLM(tiny_grit_dir, generate_kwargs={"beams": 2})
    with pytest.raises(ValueError, match="repetition_penalty"):
        GritLLM(tiny_grit_dir, generate_kwargs={"repetition_penalty": 0})
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        GritLLM(tiny_grit_dir, kv_cache_dtype="int4")
    with pytest.raises(ValueError, match="its own field"):
        GritLLM(tiny_grit_dir, generate_kwargs={"max_new_tokens": 3})
    llm = GritLLM(tiny_grit_dir, max_new_tokens=4)
    with pytest.raises(ValueError):
        llm.complete("")
    with pytest.raises(ValueError, match="role"):
        llm.chat([ChatMessage(role="chatbot", content="42")])  # tool messages are accepted now


def test_metadata_from_model_config(tiny_grit_dir):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=9)
    metadata = llm.metadata
    assert metadata.context_window == llm.generator.model.model.config.max_position_embeddings == 4096
    assert metadata.num_output == 9 and metadata.is_chat_model and metadata.model_name == tiny_grit_dir
    assert GritLLM(tiny_grit_dir, context_window=1000).metadata.context_window == 1000


def test_complete_and_chat_equal_the_core(tiny_template_dir):
    llm = GritLLM(tiny_template_dir, max_new_tokens=12)
    core = GritGenerator(tiny_template_dir, generation_kwargs={"max_new_tokens": 12})
    completion = llm.complete("Name a prime number.")
    expected = core.generate("Name a prime number.")
    assert completion.text == expected.text and completion.text.strip()
    assert completion.raw["usage"] == completion.additional_kwargs["usage"] == expected.usage
    chat = llm.chat([SYSTEM, USER])
    assert chat.message.role == "assistant"
    assert chat.message.content == core.generate([{"role": "system", "content": SYSTEM.content},
                                                  {"role": "user", "content": USER.content}]).text
    # per-call kwargs reach the core
    assert llm.complete("Name a prime number.", max_new_tokens=3).additional_kwargs["usage"]["completion_tokens"] <= 3


def test_grit_format_folds_system_messages(tiny_grit_dir, monkeypatch):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=6)
    model = llm.generator.model
    assert model.uses_grit_chat_format  # "auto" on a GritLM-named checkpoint
    prompts = []
    real = core_generation.generate_ids

    def spy(model, prompt_ids, *args, **kwargs):
        prompts.append(list(prompt_ids))
        return real(model, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(core_generation, "generate_ids", spy)
    with_system = llm.chat([SYSTEM, USER]).message.content
    folded = llm.chat([ChatMessage(role="user", content=f"{SYSTEM.content}\n\n{USER.content}")]).message.content
    assert prompts[0] == prompts[1] and with_system == folded
    text = model.tokenizer.decode(prompts[0], skip_special_tokens=True)
    assert text == f"<|user|>\n{SYSTEM.content}\n\n{USER.content}\n<|assistant|>\n"


def test_chat_format_option_reaches_the_model(tiny_template_dir):
    assert not GritLLM(tiny_template_dir, registry=ModelRegistry()).generator.model.uses_grit_chat_format
    assert GritLLM(tiny_template_dir, chat_format="grit", registry=ModelRegistry()).generator.model.uses_grit_chat_format


def test_streaming_equals_non_streaming(tiny_grit_dir):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=16)
    full = llm.complete("Tell me about the Parthenon.").text
    chunks = list(llm.stream_complete("Tell me about the Parthenon."))
    assert len([c for c in chunks if c.delta]) > 1
    assert "".join(c.delta for c in chunks) == chunks[-1].text == full
    assert chunks[-1].additional_kwargs["usage"]["completion_tokens"] == 16
    chat_full = llm.chat([SYSTEM, USER]).message.content
    chat_chunks = list(llm.stream_chat([SYSTEM, USER]))
    assert "".join(c.delta for c in chat_chunks) == chat_chunks[-1].message.content == chat_full


def test_async_parity(tiny_grit_dir):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=8)

    async def run():
        completion = await llm.acomplete("Tell me about the Parthenon.")
        chat = await llm.achat([SYSTEM, USER])
        streamed = "".join([c.delta async for c in await llm.astream_complete("Tell me about the Parthenon.")])
        streamed_chat = "".join([c.delta async for c in await llm.astream_chat([SYSTEM, USER])])
        return completion.text, chat.message.content, streamed, streamed_chat

    completion, chat, streamed, streamed_chat = asyncio.run(run())
    assert completion == streamed == llm.complete("Tell me about the Parthenon.").text
    assert chat == streamed_chat == llm.chat([SYSTEM, USER]).message.content


def test_stream_errors_reach_the_consumer(tiny_grit_dir):
    llm = GritLLM(tiny_grit_dir, max_new_tokens=4)
    with pytest.raises(ValueError, match="context length"):
        list(llm.stream_complete("word " * 5000))


def test_closing_a_stream_stops_generation(tiny_grit_dir):
    from llama_index.llms.grit.base import stream_in_thread

    import time

    produced = []

    def run(callback):  # a slow producer, like a model generating tokens (10,000 x 1 ms uncancelled)
        for i in range(10_000):
            produced.append(i)
            callback(f"{i} ")
            time.sleep(0.001)
        return "finished"

    events = stream_in_thread(run)
    assert [next(events), next(events)] == [("delta", "0 "), ("delta", "1 ")]
    events.close()  # what `break` in a for loop does
    assert len(produced) < 1_000  # stopped at the next callback, not after 10,000 (close() joins the thread)

    # with the model: closing early frees the model for the next call, which is unaffected
    llm = GritLLM(tiny_grit_dir, max_new_tokens=64)
    stream = llm.stream_complete("Tell me about the Parthenon.")
    first = next(stream)
    stream.close()
    assert first.delta
    full = llm.complete("Tell me about the Parthenon.", max_new_tokens=8).text
    assert "".join(c.delta for c in llm.stream_complete("Tell me about the Parthenon.", max_new_tokens=8)) == full


def test_complete_honours_system_prompt(tiny_template_dir):
    plain = GritLLM(tiny_template_dir, max_new_tokens=12)
    with_system = GritLLM(tiny_template_dir, max_new_tokens=12, system_prompt=SYSTEM.content)
    expected = plain.chat([SYSTEM, USER]).message.content
    assert with_system.complete(USER.content).text == expected
    assert with_system.complete(USER.content).text != plain.complete(USER.content).text
    assert "".join(c.delta for c in with_system.stream_complete(USER.content)) == expected
    # an already formatted prompt is sent as it is
    assert with_system.complete(USER.content, formatted=True).text == plain.complete(USER.content).text


def test_token_counting_reads_the_model_usage(tiny_template_dir):
    from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

    counter = TokenCountingHandler(tokenizer=lambda text: text.split())
    llm = GritLLM(tiny_template_dir, max_new_tokens=5, callback_manager=CallbackManager([counter]))
    response = llm.complete("Name a prime number.")
    assert counter.prompt_llm_token_count == response.raw["usage"]["prompt_tokens"]
    assert counter.completion_llm_token_count == response.raw["usage"]["completion_tokens"]
    asyncio.run(llm.acomplete("Name a prime number."))
    assert len(counter.llm_token_counts) == 2  # the async call is counted once, not twice

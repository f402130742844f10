"""GritChatGenerator with tools: rendering, parsing, streaming, serialization, and Haystack's Agent."""

from __future__ import annotations

import json

import pytest
from haystack.components.agents import Agent
from haystack.dataclasses import ChatMessage, StreamingChunk, ToolCall
from haystack.tools import Tool

from haystack_integrations.components.generators.grit import GritChatGenerator, default_tool_parser
from tests._planted import plant

CALLS: list[dict] = []


def get_weather(city: str) -> str:
    CALLS.append({"city": city})
    return f"sunny, 21 C in {city}"


WEATHER = Tool(name="get_weather", description="Current weather in a city.",
               parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
               function=get_weather)
CALL_PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def my_parser(text: str) -> list[ToolCall] | None:
    return [ToolCall(tool_name="get_weather", arguments={"city": text.strip()})] if text.startswith("W:") else None


@pytest.fixture
def generator(tiny):
    generator = GritChatGenerator(model=tiny, tools=[WEATHER])
    generator.warm_up()
    return generator


def test_tools_are_rendered_and_the_call_parsed(generator, monkeypatch):
    planted = plant(monkeypatch, generator.generator.model, [CALL_PARIS])
    (reply,) = generator.run([ChatMessage.from_user("Weather in Paris?")])["replies"]
    assert reply.tool_calls == [ToolCall(tool_name="get_weather", arguments={"city": "Paris"})]
    assert reply.text is None and reply.meta["finish_reason"] == "tool_calls"
    assert "<tools>" in planted.prompts[0] and '"name": "get_weather"' in planted.prompts[0]


def test_tool_calls_and_results_in_the_history_are_rendered(generator, monkeypatch):
    planted = plant(monkeypatch, generator.generator.model, ["It is sunny."])
    call = ToolCall(tool_name="get_weather", arguments={"city": "Paris"}, id="c1")
    history = [ChatMessage.from_user("Weather in Paris?"), ChatMessage.from_assistant(tool_calls=[call]),
               ChatMessage.from_tool("sunny, 21 C", origin=call)]
    (reply,) = generator.run(history)["replies"]
    assert reply.text == "It is sunny." and not reply.tool_calls
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in planted.prompts[0]
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in planted.prompts[0]


def test_malformed_call_is_reported_in_meta_not_raised(generator, monkeypatch):
    plant(monkeypatch, generator.generator.model, ['<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'])
    (reply,) = generator.run([ChatMessage.from_user("Weather?")])["replies"]
    assert not reply.tool_calls and "<tool_call>" in reply.text  # the raw text is kept for the caller
    assert "unparseable tool call" in reply.meta["tool_call_errors"][0]


def test_several_calls_and_a_user_parser(tiny, monkeypatch):
    generator = GritChatGenerator(model=tiny, tools=[WEATHER])
    generator.warm_up()
    plant(monkeypatch, generator.generator.model, [CALL_PARIS + "\n" + CALL_PARIS.replace("Paris", "Rome")])
    (reply,) = generator.run([ChatMessage.from_user("Paris and Rome?")])["replies"]
    assert [c.arguments["city"] for c in reply.tool_calls] == ["Paris", "Rome"]
    custom = GritChatGenerator(model=tiny, tools=[WEATHER], tool_parsing_function=my_parser)
    custom.warm_up()
    plant(monkeypatch, custom.generator.model, ["W:Oslo"])
    assert custom.run([ChatMessage.from_user("?")])["replies"][0].tool_calls[0].arguments == {"city": "W:Oslo"}


def test_streaming_with_tools_ends_with_the_calls_and_usage(generator, monkeypatch):
    plant(monkeypatch, generator.generator.model, [CALL_PARIS])
    chunks: list[StreamingChunk] = []
    generator.run([ChatMessage.from_user("Weather in Paris?")], streaming_callback=chunks.append)
    last = chunks[-1]
    assert last.finish_reason == "tool_calls" and last.tool_calls[0].tool_name == "get_weather"
    assert json.loads(last.tool_calls[0].arguments) == {"city": "Paris"}
    assert last.meta["usage"]["completion_tokens"] > 0
    assert "".join(c.content for c in chunks[:-1]).strip() == CALL_PARIS


def test_to_dict_from_dict_keep_tools_and_parser(tiny):
    from haystack.core.serialization_security import allow_deserialization_module

    for pattern in (__name__, f"{__name__}.*"):  # this test module's functions are the tool and the parser
        allow_deserialization_module(pattern)
    generator = GritChatGenerator(model=tiny, tools=[WEATHER], tool_parsing_function=my_parser)
    data = generator.to_dict()
    assert data["init_parameters"]["tools"][0]["data"]["name"] == "get_weather"
    assert data["init_parameters"]["tool_parsing_function"].endswith("my_parser")
    restored = GritChatGenerator.from_dict(data)
    assert restored.tools[0].name == "get_weather" and restored.tool_parsing_function is my_parser
    assert default_tool_parser(CALL_PARIS) == [ToolCall(tool_name="get_weather", arguments={"city": "Paris"})]
    assert default_tool_parser("no call") is None


def test_bad_tools_are_rejected_at_init(tiny):
    with pytest.raises(TypeError, match="tool_parsing_function"):
        GritChatGenerator(model=tiny, tool_parsing_function="not callable")
    with pytest.raises(ValueError, match="duplicate"):
        GritChatGenerator(model=tiny, tools=[WEATHER, WEATHER])


def test_agent_calls_the_tool_and_answers(tiny, monkeypatch):
    CALLS.clear()
    generator = GritChatGenerator(model=tiny)
    agent = Agent(chat_generator=generator, tools=[WEATHER])
    agent.warm_up()
    planted = plant(monkeypatch, generator.generator.model, [CALL_PARIS, "It is sunny in Paris."])
    result = agent.run([ChatMessage.from_user("What is the weather in Paris?")])
    assert CALLS == [{"city": "Paris"}]
    assert result["last_message"].text == "It is sunny in Paris."
    assert "sunny, 21 C in Paris" in planted.prompts[1]  # the tool's result reached the model


def test_agent_recovers_from_an_unknown_tool_name(tiny, monkeypatch):
    CALLS.clear()
    generator = GritChatGenerator(model=tiny)
    agent = Agent(chat_generator=generator, tools=[WEATHER])
    agent.warm_up()
    planted = plant(monkeypatch, generator.generator.model,
                    [CALL_PARIS.replace("get_weather", "get_wether"), CALL_PARIS, "Sunny."])
    result = agent.run([ChatMessage.from_user("What is the weather in Paris?")])
    assert CALLS == [{"city": "Paris"}] and result["last_message"].text == "Sunny."
    assert "get_wether" in planted.prompts[1]  # the error about the unknown tool went back to the model


@pytest.mark.integration
def test_agent_with_the_packaged_model(monkeypatch):
    """The shipped 135M model with a real tool: the agent run completes whatever the model does. Whether it
    calls the tool is recorded, not asserted: at 135M it does not do so reliably (see the docs)."""
    CALLS.clear()
    agent = Agent(chat_generator=GritChatGenerator(generation_kwargs={"max_new_tokens": 48}), tools=[WEATHER],
                  max_agent_steps=3)
    agent.warm_up()
    result = agent.run([ChatMessage.from_user("What is the weather in Paris? Use the get_weather tool.")])
    assert result["messages"][-1].is_from("assistant") or result["messages"][-1].is_from("tool")
    print("tool called:", CALLS)

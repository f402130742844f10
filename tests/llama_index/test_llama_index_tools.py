"""GritLLM as a LlamaIndex FunctionCallingLLM: tool selection, tool turns in the history, FunctionAgent."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool

from llama_index.llms.grit import GritLLM
from tests._planted import plant

CALLS: list[str] = []
CALL_PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def get_weather(city: str) -> str:
    """Current weather in a city."""
    CALLS.append(city)
    return f"sunny, 21 C in {city}"


TOOL = FunctionTool.from_defaults(fn=get_weather)


@pytest.fixture
def llm(tiny_grit_dir):
    return GritLLM(str(tiny_grit_dir), max_new_tokens=16)


def test_metadata_says_function_calling(llm):
    assert llm.metadata.is_function_calling_model is True


def test_chat_with_tools_selects_a_tool(llm, monkeypatch):
    planted = plant(monkeypatch, llm.generator.model, [CALL_PARIS])
    response = llm.chat_with_tools([TOOL], user_msg="Weather in Paris?")
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert "<tools>" in planted.prompts[0] and "get_weather" in planted.prompts[0]


def test_malformed_call_is_reported(llm, monkeypatch):
    plant(monkeypatch, llm.generator.model, ['<tool_call>{"name": </tool_call>'])
    response = llm.chat_with_tools([TOOL], user_msg="Weather?")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    assert "unparseable" in response.raw["tool_call_errors"][0]
    with pytest.raises(ValueError, match="unparseable"):
        llm.get_tool_calls_from_response(response)


def test_streamed_chat_with_tools_ends_with_the_calls(llm, monkeypatch):
    plant(monkeypatch, llm.generator.model, [CALL_PARIS])
    *_, last = llm.stream_chat_with_tools([TOOL], user_msg="Weather in Paris?")
    assert llm.get_tool_calls_from_response(last)[0].tool_kwargs == {"city": "Paris"}


def test_function_agent_calls_the_tool(llm, monkeypatch):
    CALLS.clear()
    planted = plant(monkeypatch, llm.generator.model, [CALL_PARIS, "It is sunny in Paris."])
    agent = FunctionAgent(tools=[TOOL], llm=llm)

    async def run():  # the workflow starts its tasks on the running loop
        return await agent.run(user_msg="What is the weather in Paris?")

    response = asyncio.run(run())
    assert CALLS == ["Paris"] and "sunny in Paris" in str(response)
    assert "<tool_response>" in planted.prompts[1] and "sunny, 21 C in Paris" in planted.prompts[1]


def test_history_with_tool_turns_is_accepted(llm, monkeypatch):
    planted = plant(monkeypatch, llm.generator.model, ["Sunny."])
    history = [ChatMessage(role="user", content="Weather in Paris?"),
               ChatMessage(role="assistant", content="", additional_kwargs={
                   "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}}]}),
               ChatMessage(role="tool", content="sunny", additional_kwargs={"tool_call_id": "c1"})]
    assert llm.chat(history).message.content == "Sunny."
    assert "<tool_response>\nsunny\n</tool_response>" in planted.prompts[0]

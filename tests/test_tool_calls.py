"""Tool calling in the core: parsing recorded model outputs, and rendering tools, calls and results."""

from __future__ import annotations

import pytest

from grit_components import templates
from grit_components.generation import chat_prompt_ids, normalize_messages, normalize_tools, parse_tool_calls

WEATHER = {"name": "get_weather", "description": "Current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


# Outputs recorded from models asked with the JSON-in-text tool prompt (SmolLM2-135M, Qwen2.5-0.5B).
def test_one_valid_call():
    parsed = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert parsed.calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert parsed.text == "" and parsed.errors == []


def test_several_calls_and_text_around_them():
    text = ('Let me check both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>')
    parsed = parse_tool_calls(text)
    assert [c["arguments"]["city"] for c in parsed.calls] == ["Paris", "Rome"]  # string arguments are read too
    assert parsed.text == "Let me check both." and parsed.errors == []


def test_unclosed_last_block_is_read():
    parsed = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n')
    assert parsed.calls == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]


def test_malformed_json_is_reported_not_raised():
    parsed = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>')
    assert parsed.calls == []
    assert len(parsed.errors) == 1 and "unparseable tool call" in parsed.errors[0]


def test_call_without_name_or_with_non_object_arguments_is_an_error():
    parsed = parse_tool_calls('<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "f", "arguments": 3}</tool_call>'
                              '<tool_call>{"name": "g", "arguments": {"x": 1}}</tool_call>')
    assert parsed.calls == [{"name": "g", "arguments": {"x": 1}}]
    assert "without a str 'name'" in parsed.errors[0] and "must be a JSON object" in parsed.errors[1]


def test_bare_json_reply_counts_as_a_call_and_plain_text_does_not():
    assert parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}').calls[0]["name"] == "get_weather"
    assert len(parse_tool_calls('[{"name": "a", "arguments": {}}, {"name": "b"}]').calls) == 2
    plain = parse_tool_calls("The weather in Paris is sunny.")
    assert plain.calls == [] and plain.errors == [] and plain.text == "The weather in Paris is sunny."
    assert parse_tool_calls('{"answer": 42}').calls == []  # JSON without a name is an answer, not a call


def test_normalize_tools_wraps_flat_specs_and_rejects_bad_ones():
    (spec,) = normalize_tools([WEATHER])
    assert spec == {"type": "function", "function": WEATHER}
    assert normalize_tools([spec]) == [spec]
    with pytest.raises(TypeError, match=r"tools\[0\]"):
        normalize_tools([{"description": "no name"}])
    with pytest.raises(ValueError, match="duplicate"):
        normalize_tools([WEATHER, WEATHER])
    with pytest.raises(TypeError, match="tools must be a list"):
        normalize_tools(WEATHER)


def test_normalize_messages_accepts_tool_turns_and_checks_them():
    messages = normalize_messages([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "content": "sunny", "name": "get_weather"},
    ])
    assert messages[1] == {"role": "assistant", "content": "",
                           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert messages[2]["name"] == "get_weather"
    with pytest.raises(TypeError, match=r"messages\[0\]\['tool_calls'\]\[0\]\['arguments'\]"):
        normalize_messages([{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": "x"}]},
                            {"role": "user", "content": "?"}])
    with pytest.raises(ValueError, match="role 'robot'"):
        normalize_messages([{"role": "robot", "content": "hi"}])


def conversation():
    return [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
            {"role": "tool", "content": "sunny, 21 C", "name": "get_weather"}]


def test_template_without_tool_support_gets_the_json_in_text_format(tiny_model):
    # SmolLM2's template (the tiny test models use its tokenizer) cannot render tools.
    text = tiny_model.tokenizer.decode(chat_prompt_ids(tiny_model, conversation(), [WEATHER]))
    assert text.index("Be brief.") < text.index("<tools>") < text.index('"name": "get_weather"')
    assert templates.tool_call_text("get_weather", {"city": "Paris"}) in text
    assert templates.tool_response_text("sunny, 21 C") in text
    assert text.rstrip().endswith("assistant")  # ready for the answer after the tool result


def test_grit_chat_format_gets_the_json_in_text_format(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model, "uses_grit_chat_format", True)
    text = tiny_model.tokenizer.decode(chat_prompt_ids(tiny_model, conversation(), [WEATHER]))
    assert text.count(templates.USER) == 2  # the question (with system and tools folded in), the tool result
    assert "<tools>" in text and templates.tool_response_text("sunny, 21 C") in text
    assert text.endswith(templates.ASSISTANT)


def test_template_with_tool_support_renders_tools_itself(tiny_model, monkeypatch):
    template = ("{% for tool in tools %}TOOL {{ tool.function.name }}\n{% endfor %}"
                "{% for m in messages %}{{ m.role }}: {{ m.content }}"
                "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }}{% endfor %}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    monkeypatch.setattr(tiny_model.tokenizer, "chat_template", template)
    text = tiny_model.tokenizer.decode(chat_prompt_ids(tiny_model, conversation(), [WEATHER]))
    assert text.startswith("TOOL get_weather") and "CALL get_weather" in text and "tool: sunny, 21 C" in text
    assert "<tools>" not in text

"""Tool-use training records: validation, the encoded sequence equals the inference prompt at every assistant
turn (tools in the prompt, `<tool_call>` markup and final answers as targets), and the generated
recipes/data/tool-calls.jsonl."""

from __future__ import annotations

import collections
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from grit_components.generation import chat_prompt_ids, parse_tool_calls
from grit_components.grit_model import GritModel
from grit_components.models import load_weights
from grit_components.training import ChatRecord, GritCollator, RecordError, encode_chat, load_chat_records
from grit_components.training.data import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "recipes" / "data" / "tool-calls.jsonl"
RENAMED = ROOT / "recipes" / "data" / "tool-calls-3.jsonl"  # make_tool_calls.py --count 800 --seed 29 --rename 0.7
INVENTED = ROOT / "recipes" / "data" / "tool-calls-4.jsonl"  # ... --count 800 --seed 30 --rename 0.7 --invented 0.5
PLAIN = ROOT / "recipes" / "data" / "tool-calls-5.jsonl"  # ... --count 900 --seed 31 --rename 0.8 --invented 0.5 --plain 0.6
RECIPE_MAX_LENGTH = 640  # generative_max_length of the recipes in recipes/*.yaml

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"name": "get_local_time", "description": "Local time in a city.",  # flat spec: wrapped like at inference
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Time and weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_local_time", "arguments": {"city": "Oslo"}}]},
    {"role": "tool", "name": "get_local_time", "content": "{\"local_time\": \"14:05\"}"},
    {"role": "assistant", "content": "Checking the weather too.",
     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
    {"role": "tool", "name": "get_weather", "content": "4 C, cloudy"},
    {"role": "assistant", "content": "It is 14:05 in Oslo, 4 C and cloudy."},
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one torch thread


@pytest.fixture(scope="module")
def views(tiny_llama_dir):
    """The tiny random llama (SmolLM2 tokenizer: its ChatML template has no tools -> JSON in text) and the same
    weights in the GRIT chat format."""
    model, tokenizer, resolved = load_weights(str(tiny_llama_dir), device="cpu", dtype=torch.float32)
    return [GritModel(model, tokenizer, name=str(tiny_llama_dir), key=resolved.key),
            GritModel(model, tokenizer, name="grit-view", chat_format="grit")]


def record_from(obj) -> ChatRecord:
    return load_chat_records([obj])[0]


def test_tool_record_loads_and_round_trips(tmp_path):
    record = record_from({"tools": [WEATHER, TIME], "messages": CONVERSATION})
    assert [t["function"]["name"] for t in record.tools] == ["get_weather", "get_local_time"]
    assert record.tools[1]["type"] == "function"  # a flat spec is wrapped as normalize_tools does
    assert record.messages[2] == {"role": "assistant", "content": "",
                                  "tool_calls": [{"name": "get_local_time", "arguments": {"city": "Oslo"}}]}
    assert record.messages[3]["name"] == "get_local_time"
    path = tmp_path / "tools.jsonl"
    write_jsonl([record], path)
    assert load_chat_records(path)[0] == record
    # a call turn may omit content (None), as OpenAI-style messages do
    calls_only = dict(CONVERSATION[2], content=None)
    assert record_from({"tools": [TIME], "messages": [CONVERSATION[1], calls_only]}).messages[1]["content"] == ""


def test_prompt_prefix_equals_inference_prompt_at_every_assistant_turn(views):
    record = record_from({"tools": [WEATHER, TIME], "messages": CONVERSATION})
    for view in views:
        tok = view.tokenizer
        ids, labels = encode_chat(view, record.messages, max_length=4096, tools=record.tools)
        assert len(ids) == len(labels)
        turns = [i for i, m in enumerate(record.messages) if m["role"] == "assistant"]
        expected_targets = []
        for turn in turns:
            prompt = chat_prompt_ids(view, record.messages[:turn], record.tools)  # what inference builds
            assert ids[: len(prompt)] == prompt
            assert tok.decode(prompt).count("get_weather") >= 1  # the tool list is in every prompt
            assert all(label == -100 for label in labels[len(prompt) - 1: len(prompt)] if labels)  # prompt end: no target
            span = [t for t in labels[len(prompt):] if t != -100]
            expected_targets.append(span)
        decoded = tok.decode([t for t in labels if t != -100])
        eos = tok.eos_token
        first_call = '<tool_call>\n{"name": "get_local_time", "arguments": {"city": "Oslo"}}\n</tool_call>'
        second_call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        assert decoded == (f"{first_call}{eos}Checking the weather too.\n{second_call}{eos}"
                           f"It is 14:05 in Oslo, 4 C and cloudy.{eos}")
        # tool results, system and user text are never targets
        for text in ("14:05\"}", "4 C, cloudy", "Time and weather"):
            assert text not in tok.decode([t for t in labels if t != -100]).replace("It is 14:05 in Oslo, 4 C and cloudy.", "")
        # the call targets are what the parser reads back
        call_ids = [t for t in labels[: len(chat_prompt_ids(view, record.messages[:4], record.tools))] if t != -100]
        assert parse_tool_calls(tok.decode(call_ids[:-1])).calls == [{"name": "get_local_time", "arguments": {"city": "Oslo"}}]


def test_collator_passes_the_record_tools(views, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tools": [WEATHER], "messages": [CONVERSATION[1], CONVERSATION[4], CONVERSATION[5],
                                                                 CONVERSATION[6]]}) + "\n")
    record = load_chat_records(path)[0]
    collator = GritCollator(views[0], generative_max_length=4096)
    sequence = collator.encode_generative(record)
    prompt = chat_prompt_ids(views[0], record.messages[:1], record.tools)
    assert sequence.ids[: len(prompt)] == prompt
    without_tools = collator.encode_generative(ChatRecord(record.messages, record.dataset))
    assert len(without_tools.ids) < len(sequence.ids)  # no tool list in the system text
    batch = collator.generative_batch([record])
    assert batch["gen_input_ids"][0].tolist() == sequence.ids


@pytest.mark.parametrize("change, message", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": {"name": "get_weather"}}]},
     r"message 1 'tool_calls' must be a list"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "tool_calls": [{"name": "get_weather", "arguments": "Oslo"}]}]},
     r"message 1 'tool_calls'\[0\] 'arguments' must be an object \(dict\), not str"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"arguments": {}}]}]},
     r"message 1 'tool_calls'\[0\] 'name' must be a non-empty str"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]},
     r"message 1 has role 'robot'; use system, user, assistant or tool"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "4 C"},
                   {"role": "assistant", "content": "ok"}]},
     r"message 1 is a tool result that follows no assistant message with 'tool_calls'"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": []}, {"role": "assistant", "content": "ok"}]},
     r"message 0 has 'tool_calls' but role 'user'"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "tool_calls": [{"name": "get_time", "arguments": {}}]}]},
     r"message 1 'tool_calls'\[0\] calls 'get_time', which is not in the record's 'tools' \['get_weather'\]"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
     r"message 1 has empty content and no 'tool_calls'"),
    ({"tools": {"name": "get_weather"}}, r"'tools' must be a list of tool specs"),
    ({"tools": [{"description": "no name"}]}, r"'tools': tools\[0\] must be a dict with a non-empty str 'name'"),
    ({"tools": [WEATHER, WEATHER]}, r"'tools': tools: duplicate tool names"),
])
def test_bad_tool_records_are_rejected_naming_the_field(change, message):
    obj = {"tools": [WEATHER], "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    obj.update(change)
    with pytest.raises(RecordError, match=r"row 0: " + message):
        load_chat_records([obj])


# --- recipes/data/tool-calls.jsonl ------------------------------------------------------------------------------

def load_generator():
    spec = importlib.util.spec_from_file_location("make_tool_calls", ROOT / "recipes" / "make_tool_calls.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generated_tool_data_is_current_and_varied(tmp_path):
    generator = load_generator()
    fresh = tmp_path / "tool-calls.jsonl"
    generator.main(["--output", str(fresh)])
    assert fresh.read_text() == DATA.read_text()  # deterministic, and the committed file is its output
    records = load_chat_records(DATA)
    assert 350 <= len(records) <= 450
    assert all(r.dataset == "tool-calls" for r in records)
    offered = collections.Counter(len(r.tools) for r in records)
    assert set(offered) == {1, 2, 3}
    tool_names = {t["function"]["name"] for r in records for t in r.tools}
    called = collections.Counter(c["name"] for r in records for m in r.messages for c in m.get("tool_calls", ()))
    assert len(tool_names) >= 12 and len(called) >= 12
    without = [r for r in records if not any(m.get("tool_calls") for m in r.messages)]
    assert 0.10 <= len(without) / len(records) <= 0.20  # no offered tool fits: a direct answer
    assert all(len(r.messages) - (r.messages[0]["role"] == "system") == 2 for r in without)
    two_calls = [r for r in records if sum(len(m.get("tool_calls", ())) for m in r.messages) == 2]
    parallel = [r for r in two_calls if any(len(m.get("tool_calls", ())) == 2 for m in r.messages)]
    same_tool = [r for r in two_calls if len({c["name"] for m in r.messages for c in m.get("tool_calls", ())}) == 1]
    assert len(two_calls) >= 40 and parallel and len(parallel) < len(two_calls) and same_tool
    # optional parameters are sometimes given, sometimes left out
    weather = [c["arguments"] for r in records for m in r.messages for c in m.get("tool_calls", ()) if c["name"] == "get_weather"]
    assert any("unit" in a for a in weather) and any("unit" not in a for a in weather)
    # tools come in random order and in the three framework spec shapes
    first = collections.Counter(r.tools[0]["function"]["name"] for r in records if len(r.tools) == 3)
    assert len(first) >= 10
    descriptions = [t["function"]["description"] for r in records for t in r.tools]
    assert any("-> str\n" in d for d in descriptions) and any("-> str" not in d for d in descriptions)
    # natural wordings: many distinct user messages; every final answer after a result is short
    users = {m["content"] for r in records for m in r.messages if m["role"] == "user"}
    assert len(users) >= 300
    for r in records:
        assert r.messages[-1]["role"] == "assistant" and "tool_calls" not in r.messages[-1]
        assert len(r.messages[-1]["content"]) < 200


def test_renamed_tool_data_is_current_and_calls_what_the_specs_say(tmp_path):
    """--rename: tools and parameters go by other names in most conversations, and every call uses the names of
    the spec offered in that conversation (a model learns to read the spec, not our tool names)."""
    generator = load_generator()
    fresh = tmp_path / "tool-calls-3.jsonl"
    generator.main(["--output", str(fresh), "--count", "800", "--seed", "29", "--rename", "0.7"])
    assert fresh.read_text() == RENAMED.read_text()
    records = load_chat_records(RENAMED)
    canonical = {t.name: {p.name for p in t.params} for t in generator.TOOLS}
    renamed_tools = renamed_params = 0
    for record in records:
        specs = {t["function"]["name"]: t["function"]["parameters"] for t in record.tools}
        renamed_tools += any(name not in canonical for name in specs)
        renamed_params += any(set(p["properties"]) - canonical.get(name, set()) for name, p in specs.items())
        for message in record.messages:
            for call in message.get("tool_calls", ()):
                assert call["name"] in specs, (call, list(specs))
                properties = specs[call["name"]]
                assert set(call["arguments"]) <= set(properties["properties"]), (call, properties)
                assert set(properties["required"]) <= set(call["arguments"]), (call, properties)
            if message["role"] == "tool":
                assert message["name"] in specs
    assert 0.25 <= renamed_tools / len(records) <= 0.55 and 0.4 <= renamed_params / len(records) <= 0.8
    # the benchmark's own parameter names stay out of the renamed data (it measures reading unseen specs)
    benchmark_only = {"location", "ticker", "source", "target", "a", "b", "origin", "destination", "dish",
                      "tracking_id", "to", "subject", "mountain"}
    offered = {key for r in records for t in r.tools for key in t["function"]["parameters"]["properties"]}
    assert not offered & benchmark_only
    with pytest.raises(SystemExit):
        generator.main(["--output", str(fresh), "--rename", "1.5"])


def test_invented_places_are_copied_from_the_request(tmp_path):
    """--invented: about half the places asked about are made-up names, each called with exactly the place the
    user wrote (a model learns to copy it, not to reach for a city it knows); the benchmark's cities stay out."""
    generator = load_generator()
    fresh = tmp_path / "tool-calls-4.jsonl"
    generator.main(["--output", str(fresh), "--count", "800", "--seed", "30", "--rename", "0.7", "--invented", "0.5"])
    assert fresh.read_text() == INVENTED.read_text()
    places = []
    for record in load_chat_records(INVENTED):
        user = " ".join(m["content"] for m in record.messages if m["role"] == "user")
        for message in record.messages:
            for call in message.get("tool_calls", ()):
                for key, value in call["arguments"].items():
                    if key in ("city", "city_name", "place", "town"):
                        assert value in user, (value, user)
                        places.append(value)
    invented = [p for p in places if p not in generator.CITIES]
    assert len(places) >= 150 and 0.35 <= len(invented) / len(places) <= 0.65
    assert len(set(invented)) >= 0.8 * len(invented)  # new names (a place asked twice is called twice), not a fixed list
    from benchmarks.tool_calls import TASKS  # the measured tasks' own values stay out of training

    asked = {leaf for task in TASKS for expected in task.arguments for leaf in leaves(dict(expected))}
    assert "Nairobi" in asked and not set(places) & asked
    # the older files do not change: --invented 0 draws nothing
    assert generator.make_records(50, 29, 0.7) == generator.make_records(50, 29, 0.7, 0.0)
    with pytest.raises(SystemExit):
        generator.main(["--output", str(fresh), "--invented", "-0.1"])


def test_plain_results_are_current_and_keep_every_value(tmp_path):
    """--plain: most tool results are plain text, as a Python tool returning a string gives them (the bare value,
    the values, or "field: value" pairs), holding every value the JSON result held; the rest stay JSON."""
    generator = load_generator()
    fresh = tmp_path / "tool-calls-5.jsonl"
    generator.main(["--output", str(fresh), "--count", "900", "--seed", "31", "--rename", "0.8", "--invented", "0.5",
                    "--plain", "0.6"])
    assert fresh.read_text() == PLAIN.read_text()
    kinds = collections.Counter()
    for record in load_chat_records(PLAIN):
        for message in record.messages:
            if message["role"] == "tool":
                try:
                    json.loads(message["content"])
                    kinds["json"] += 1
                except ValueError:
                    kinds["pairs" if ": " in message["content"] else "values"] += 1
    assert 0.45 <= (kinds["pairs"] + kinds["values"]) / sum(kinds.values()) <= 0.75 and min(kinds.values()) >= 100
    rng = generator.random.Random(0)
    result = json.dumps({"city": "Plum", "temperature": 7, "unit": "°C", "condition": "windy"})
    texts = {generator.plain_result(result, rng) for _ in range(20)}
    assert texts == {"Plum, 7, °C, windy", "city: Plum, temperature: 7, unit: °C, condition: windy"}
    assert generator.plain_result(json.dumps({"result": 2146}), rng) == "2146"
    nested = json.dumps({"results": [{"title": "Kilimanjaro", "snippet": "It is 5,895 m high."}]})
    assert all(s.endswith("Kilimanjaro, It is 5,895 m high.") or "snippet: It is 5,895 m high." in s
               for s in (generator.plain_result(nested, rng) for _ in range(10)))
    # the older files do not change: --plain 0 draws nothing
    assert generator.make_records(50, 30, 0.7, 0.5) == generator.make_records(50, 30, 0.7, 0.5, 0.0)
    with pytest.raises(SystemExit):
        generator.main(["--output", str(fresh), "--plain", "1.5"])


def result_values(content: str) -> list[str]:
    """The values a tool result holds: the leaves of a JSON result, the comma-separated pieces of a plain one."""
    try:
        return [str(v) for v in leaves(json.loads(content))]
    except ValueError:
        return [piece.split(": ", 1)[-1] for piece in content.split(", ")]


def leaves(value):
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


@pytest.mark.parametrize("path", [DATA, RENAMED, INVENTED, PLAIN],
                         ids=["tool-calls", "tool-calls-3", "tool-calls-4", "tool-calls-5"])
def test_final_answers_use_the_tool_results(path):
    for record in load_chat_records(path):
        results = [m["content"] for m in record.messages if m["role"] == "tool"]
        if not results:
            continue
        facts = [v for out in results for v in result_values(out) if v not in ("created", "set", "sent", "USD")]
        answer = record.messages[-1]["content"].replace(",", "")
        assert any(fact.replace(",", "") in answer for fact in facts), (answer, results)


def test_generated_tool_data_fits_the_recipe_length(views):
    """Every record encodes (SmolLM2 chat template, JSON-in-text tools) within the recipes' generative_max_length,
    so no final answer is cut off."""
    records = [r for path in sorted(DATA.parent.glob("tool-calls*.jsonl")) for r in load_chat_records(path)]
    lengths = [len(encode_chat(views[0], r.messages, max_length=10_000, tools=r.tools)[0]) for r in records]
    assert max(lengths) <= RECIPE_MAX_LENGTH, max(lengths)

"""benchmarks/tool_calls.py: the scoring (planted replies: right call, wrong arguments, no call), the task run
through both frameworks' agents on a tiny random model, and that its tasks are kept apart from the training data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests._planted import plant

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import tool_calls as bench  # noqa: E402

LISBON = bench.TASKS[0]  # get_weather(city="Lisbon"), fact "19"
REYKJAVIK = next(t for t in bench.TASKS if t.id == "temperature_reykjavik_f")
VANCOUVER = next(t for t in bench.TASKS if t.id == "temperature_vancouver")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run on one torch thread


def call(name: str, **arguments) -> str:
    return bench.generation.templates.tool_call_text(name, arguments)


def test_value_and_argument_comparison():
    assert bench.same_value("48", 48) and bench.same_value(48.0, 48) and bench.same_value("1,200", 1200)
    assert not bench.same_value("forty-eight", 48) and not bench.same_value(True, 1)
    assert bench.same_value("  lisbon ", "Lisbon") and bench.same_value("New  York", "new york")
    assert not bench.same_value("Lisboa", "Lisbon")
    assert bench.same_value("F", ("fahrenheit", "f"))
    assert bench.arguments_match({"location": "Reykjavik", "unit": "Fahrenheit"}, REYKJAVIK.arguments, REYKJAVIK.tool)
    assert not bench.arguments_match({"location": "Reykjavik"}, REYKJAVIK.arguments, REYKJAVIK.tool)  # default is celsius
    assert bench.arguments_match({"location": "Vancouver"}, VANCOUVER.arguments, VANCOUVER.tool)
    assert bench.arguments_match({"location": "Vancouver", "unit": "celsius"}, VANCOUVER.arguments, VANCOUVER.tool)
    assert not bench.arguments_match({"location": "Vancouver", "unit": "fahrenheit"}, VANCOUVER.arguments, VANCOUVER.tool)
    assert not bench.arguments_match({"city": "Lisbon", "country": "Portugal"}, LISBON.arguments, LISBON.tool)  # extra
    multiply = next(t for t in bench.TASKS if t.id == "multiply_integers")
    assert bench.arguments_match({"a": "58", "b": 37}, multiply.arguments, "multiply")  # either order
    assert not bench.arguments_match("a=37", multiply.arguments, "multiply")


def test_score_and_fact_on_planted_calls():
    assert bench.score_calls(LISBON, [{"name": "get_weather", "arguments": {"city": "LISBON"}}]) == \
        {"call_made": True, "right_tool": True, "right_arguments": True}
    assert bench.score_calls(LISBON, [{"name": "get_weather", "arguments": {"city": "Porto"}}]) == \
        {"call_made": True, "right_tool": True, "right_arguments": False}
    assert bench.score_calls(LISBON, [{"name": "get_capital", "arguments": {"city": "Lisbon"}},
                                      {"name": "get_weather", "arguments": {"city": "Lisbon"}}])["right_tool"] is False
    assert bench.score_calls(LISBON, []) == {"call_made": False, "right_tool": False, "right_arguments": False}
    result = [bench.get_weather("Lisbon")]
    assert bench.answer_has_fact(LISBON, "It is 19 °C and sunny.", result)
    assert not bench.answer_has_fact(LISBON, "Sunny.", result)
    assert not bench.answer_has_fact(LISBON, "It is 19 °C.", [])  # a guess: no tool result held the fact
    assert not bench.answer_has_fact(LISBON, "As in 2019, it is warm.", result)  # whole tokens only
    distance = next(t for t in bench.TASKS if t.id == "distance")
    result = [bench.get_distance_km("krakow", " Vancouver")]
    assert bench.answer_has_fact(distance, "About 8,418 km.", result) and bench.answer_has_fact(distance, "8418 km", result)
    assert not bench.answer_has_fact(distance, None, result)


@pytest.mark.parametrize("framework", ["haystack", "llama-index"])
def test_task_run_scores_planted_replies(tiny_llama_dir, monkeypatch, framework):
    """The real agents with planted model text: a right call, a call with wrong arguments, and no call."""
    if framework == "haystack":
        from haystack_integrations.components.generators.grit import GritChatGenerator

        engine, runner = GritChatGenerator(model=str(tiny_llama_dir), generation_kwargs={"max_new_tokens": 8}), \
            bench.run_haystack_task
        engine.warm_up()
    else:
        from llama_index.llms.grit import GritLLM

        engine, runner = GritLLM(str(tiny_llama_dir), max_new_tokens=8), bench.run_llama_index_task
    model = engine.generator.model
    right = call("get_weather", city="Lisbon")
    plant(monkeypatch, model, [right, "It is 19 °C and sunny in Lisbon."])
    record = bench.run_task(runner, engine, LISBON, max_steps=3)
    assert (record["call_made"], record["right_tool"], record["right_arguments"], record["answer_has_fact"]) == \
        (True, True, True, True)
    assert record["calls"] == [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]
    assert record["tool_results"] == ["Lisbon: 19 °C, sunny"]  # the real function ran
    assert record["raw_replies"] == [right, "It is 19 °C and sunny in Lisbon."] and record["error"] is None

    plant(monkeypatch, model, [call("get_weather", city="Porto"), "It is 15 °C in Porto."])
    record = bench.run_task(runner, engine, LISBON, max_steps=3)
    assert (record["call_made"], record["right_tool"], record["right_arguments"], record["answer_has_fact"]) == \
        (True, True, False, False)

    plant(monkeypatch, model, ["I think it is warm."])
    record = bench.run_task(runner, engine, LISBON, max_steps=3)
    assert (record["call_made"], record["right_tool"], record["answer"]) == (False, False, "I think it is warm.")
    assert bench.summarise([record]) == {"tasks": 1, "call_made": 0, "right_tool": 0, "right_tool_and_arguments": 0,
                                         "answer_has_fact": 0, "errors": 0}
    engine.generator.close()


def test_main_runs_both_frameworks_and_saves_json(tiny_llama_dir, tmp_path, capsys):
    output = tmp_path / "tool_calls.json"
    bench.main(["--model", str(tiny_llama_dir), "--framework", "both", "--limit", "2", "--new-tokens", "4",
                "--threads", "1", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["setup"]["tasks"] == 2 and report["setup"]["host"]["cpu"] and report["setup"]["host"]["date"]
    for framework in ("haystack", "llama-index"):
        result = report["models"][str(tiny_llama_dir)][framework]
        assert result["summary"]["tasks"] == 2 and len(result["records"]) == 2
        assert all(len(r["raw_replies"]) >= 1 for r in result["records"])  # the model really generated
    assert "| right tool + arguments |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--limit", "0"])


def test_benchmark_is_apart_from_the_training_data():
    from grit_components.training import load_chat_records

    records = load_chat_records(ROOT / "recipes" / "data" / "tool-calls.jsonl")
    trained_tools = {t["function"]["name"] for r in records for t in r.tools}
    trained_values = {bench._key(v) for r in records for m in r.messages for c in m.get("tool_calls", ())
                      for v in c["arguments"].values() if isinstance(v, str)}
    trained_text = " ".join(m["content"].lower() for r in records for m in r.messages)
    assert len(bench.TASKS) == 20 and all(1 <= len(t.tools) <= 3 and t.tool in t.tools for t in bench.TASKS)
    assert len({t.tool for t in bench.TASKS} - trained_tools) >= 10  # most benchmark tools are not in training
    for task in bench.TASKS:
        assert task.prompt.lower() not in trained_text
        for arguments in task.arguments:
            for value in arguments.values():
                for option in value if isinstance(value, tuple) else (value,):
                    if isinstance(option, str) and option not in ("fahrenheit", "f"):  # a unit: closed vocabulary
                        assert bench._key(option) not in trained_values, (task.id, option)
    for city in ("Lisbon", "Nairobi", "Reykjavik", "Vancouver", "Osaka", "Krakow", "Hanoi"):
        assert city.lower() not in trained_text


def test_every_task_is_answerable_by_its_expected_call():
    for task in bench.TASKS:
        for arguments in task.arguments:
            for pick in (0, -1):  # each end of the accepted alternatives
                given = {k: v[pick] if isinstance(v, tuple) else v for k, v in arguments.items()}
                assert bench.contains_fact(task.fact, bench.TOOLS[task.tool](**given)), (task.id, given)
                assert bench.score_calls(task, [{"name": task.tool, "arguments": given}])["right_arguments"], task.id

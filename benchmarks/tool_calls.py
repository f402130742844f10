"""Tool calling through the frameworks' agents: 20 tasks, 1-3 tools each, does the model call the right tool?

Each task offers 1-3 tools (real Python functions with deterministic results) and asks one question that
one of them answers. The task runs through Haystack's `Agent` with `GritChatGenerator` and/or LlamaIndex's
`FunctionAgent` with `GritLLM` (greedy, `--new-tokens` per reply, at most `--max-steps` model replies).
Per task: whether a call was made, whether the first call names the right tool with the right arguments
(strings compared case- and whitespace-insensitively, numbers as numbers; an optional parameter given at its
default is fine, any other extra or missing argument is wrong), whether the final answer contains the fact
from the tool's result, and the raw replies (the model's text, call markup included).

The tools, cities, numbers and wordings are not those of the tool-use training data
(recipes/make_tool_calls.py): only `get_weather` is a tool of the same name there; the others are kinds
seen under other names and signatures (currency, time, stocks, e-mail) or kinds not in it at all (book
authors, capitals, distances, calories, film years, parcels, word counts, elevations).

    python benchmarks/tool_calls.py --model smollm2-135m-instruct --model grit-smollm2-135m --threads 1
    python benchmarks/tool_calls.py --framework both --limit 5

Writes benchmarks/results/tool_calls_<model>.json per model (or everything into `--output`).
"""

# No `from __future__ import annotations` here: LlamaIndex writes each tool's signature into its description,
# and with it the types would read 'str' (quoted) instead of str, unlike most user code.
import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.host import host_info  # noqa: E402
from grit_components import generation  # noqa: E402

FRAMEWORKS = ("haystack", "llama-index")


# --- the tools: plain functions with deterministic results ------------------------------------------------

def _key(value: Any) -> str:
    return " ".join(str(value).lower().split())


def get_weather(city: str) -> str:
    """Current weather in a city."""
    data = {"lisbon": "19 °C, sunny", "nairobi": "24 °C, partly cloudy", "hanoi": "31 °C, humid and hazy"}
    return f"{city}: {data.get(_key(city), '15 °C, overcast')}"


def get_current_temperature(location: str, unit: str = "celsius") -> str:
    """Current temperature at a location, in celsius or fahrenheit."""
    celsius = {"reykjavik": 3.0, "vancouver": 11.0}.get(_key(location), 15.0)
    if _key(unit).startswith("f"):
        return f"{location}: {round(celsius * 9 / 5 + 32)} °F"
    return f"{location}: {round(celsius)} °C"


def multiply(a: float, b: float) -> str:
    """Multiply two numbers."""
    product = float(a) * float(b)
    return str(int(product)) if product.is_integer() else f"{product:g}"


def exchange_money(amount: float, source: str, target: str) -> str:
    """Convert an amount from the source currency to the target currency (ISO codes such as EUR)."""
    per_usd = {"NOK": 10.8, "BRL": 5.0, "MXN": 17.0, "KRW": 1350.0, "USD": 1.0, "EUR": 0.92}
    names = {"norwegian krone": "NOK", "norwegian kroner": "NOK", "brazilian real": "BRL", "brazilian reais": "BRL"}
    codes = [names.get(_key(c), _key(c).upper()) for c in (source, target)]
    unknown = [c for c, code in zip((source, target), codes) if code not in per_usd]
    if unknown:
        return f"unknown currency code: {unknown[0]}"
    value = float(amount) / per_usd[codes[0]] * per_usd[codes[1]]
    return f"{amount} {codes[0]} = {value:.2f} {codes[1]}"


def get_time_in(city: str) -> str:
    """The current local time in a city."""
    return f"{city}: { {'osaka': '06:40'}.get(_key(city), '12:00')}"


def get_stock_quote(ticker: str) -> str:
    """Latest share price for a stock ticker symbol."""
    prices = {"adbe": "412.75 USD (+1.3%)", "uber": "71.45 USD (-0.6%)"}
    return f"{ticker.upper()}: {prices.get(_key(ticker), 'no quote')}"


def get_book_author(title: str) -> str:
    """Who wrote a book."""
    authors = {"the left hand of darkness": "Ursula K. Le Guin", "the remains of the day": "Kazuo Ishiguro"}
    return authors.get(_key(title).strip("'\""), "unknown title")


def get_capital(country: str) -> str:
    """The capital city of a country."""
    return {"uruguay": "Montevideo", "kenya": "Nairobi"}.get(_key(country), "unknown country")


def get_distance_km(origin: str, destination: str) -> str:
    """Great-circle distance between two cities in kilometres."""
    pair = frozenset((_key(origin), _key(destination)))
    return {frozenset(("krakow", "vancouver")): "8,418 km"}.get(pair, "no route data")


def lookup_calories(dish: str) -> str:
    """Calories in one portion of a dish."""
    return {"pad thai": "about 640 kcal per portion"}.get(_key(dish), "no data")


def get_movie_year(title: str) -> str:
    """The year a film was released."""
    return {"spirited away": "2001"}.get(_key(title).strip("'\""), "unknown film")


def track_package(tracking_id: str) -> str:
    """Where a parcel is, by tracking number."""
    if _key(tracking_id) == "zx-4471-q":
        return "ZX-4471-Q: at the Rotterdam depot, delivery expected tomorrow"
    return f"{tracking_id}: unknown tracking number"


def count_words(text: str) -> str:
    """Count the words in a text."""
    return str(len(text.split()))


def send_email(to: str, subject: str) -> str:
    """Send an e-mail with a subject line to an address."""
    return f"e-mail to {to} queued (id 7731)"


def get_elevation(mountain: str) -> str:
    """Height of a mountain in metres."""
    return {"aconcagua": "6,961 m"}.get(_key(mountain), "unknown mountain")


TOOLS: dict[str, Callable[..., str]] = {fn.__name__: fn for fn in (
    get_weather, get_current_temperature, multiply, exchange_money, get_time_in, get_stock_quote, get_book_author,
    get_capital, get_distance_km, lookup_calories, get_movie_year, track_package, count_words, send_email,
    get_elevation)}


@dataclass(frozen=True)
class Task:
    """One question, the tools offered (in this order), the call that answers it and the fact the answer needs.

    `arguments` lists the acceptable argument sets (e.g. both orders of a product); a value that is a tuple
    accepts any of its items (e.g. an ISO code or the currency's name).
    """

    id: str
    prompt: str
    tools: tuple[str, ...]
    tool: str
    arguments: tuple[Mapping[str, Any], ...]
    fact: str


TASKS: tuple[Task, ...] = (
    Task("weather_lisbon", "Is it warm in Lisbon at the moment?", ("get_weather",), "get_weather",
         ({"city": "Lisbon"},), "19"),
    Task("weather_nairobi", "What's the weather doing in Nairobi today?", ("get_capital", "get_weather"), "get_weather",
         ({"city": "Nairobi"},), "24"),
    Task("temperature_reykjavik_f", "How cold is it in Reykjavik right now? Tell me in Fahrenheit.",
         ("get_current_temperature", "get_book_author"), "get_current_temperature",
         ({"location": "Reykjavik", "unit": ("fahrenheit", "f")},), "37"),
    Task("temperature_vancouver", "Current temperature in Vancouver, please.",
         ("get_time_in", "get_current_temperature"), "get_current_temperature", ({"location": "Vancouver"},), "11"),
    Task("multiply_integers", "What is 37 multiplied by 58?", ("multiply",), "multiply",
         ({"a": 37, "b": 58}, {"a": 58, "b": 37}), "2146"),
    Task("multiply_decimal", "Multiply 1.25 by 48.", ("exchange_money", "multiply", "count_words"), "multiply",
         ({"a": 1.25, "b": 48}, {"a": 48, "b": 1.25}), "60"),
    Task("exchange_names", "How many Brazilian reais do I get for 250 Norwegian kroner?", ("exchange_money",),
         "exchange_money", ({"amount": 250, "source": ("NOK", "norwegian krone", "norwegian kroner"),
                             "target": ("BRL", "brazilian real", "brazilian reais")},), "115.74"),
    Task("exchange_codes", "Convert 1200 MXN into KRW.", ("get_stock_quote", "exchange_money"), "exchange_money",
         ({"amount": 1200, "source": "MXN", "target": "KRW"},), "95294.12"),
    Task("time_osaka", "What time is it in Osaka?", ("get_time_in", "get_weather"), "get_time_in",
         ({"city": "Osaka"},), "06:40"),
    Task("stock_adbe", "What's the current price of ADBE stock?", ("get_stock_quote",), "get_stock_quote",
         ({"ticker": "ADBE"},), "412.75"),
    Task("stock_uber", "How is Uber's stock (ticker UBER) doing today?", ("exchange_money", "get_time_in",
                                                                         "get_stock_quote"),
         "get_stock_quote", ({"ticker": "UBER"},), "71.45"),
    Task("book_author", "Who wrote the novel The Left Hand of Darkness?", ("get_book_author",), "get_book_author",
         ({"title": "The Left Hand of Darkness"},), "Le Guin"),
    Task("capital_uruguay", "What is the capital city of Uruguay?", ("get_elevation", "get_capital"), "get_capital",
         ({"country": "Uruguay"},), "Montevideo"),
    Task("distance", "How far is it from Krakow to Vancouver in kilometres?", ("get_distance_km", "get_time_in"),
         "get_distance_km", ({"origin": "Krakow", "destination": "Vancouver"},
                             {"origin": "Vancouver", "destination": "Krakow"}), "8418"),
    Task("calories", "How many calories are in a portion of pad thai?", ("lookup_calories",), "lookup_calories",
         ({"dish": "pad thai"},), "640"),
    Task("movie_year", "In which year was the film Spirited Away released?", ("get_book_author", "get_movie_year"),
         "get_movie_year", ({"title": "Spirited Away"},), "2001"),
    Task("parcel", "Where is my parcel ZX-4471-Q?", ("track_package", "send_email"), "track_package",
         ({"tracking_id": "ZX-4471-Q"},), "Rotterdam"),
    Task("word_count", 'How many words are in the sentence "the quick brown fox jumps over the lazy dog"?',
         ("count_words",), "count_words", ({"text": "the quick brown fox jumps over the lazy dog"},), "9"),
    Task("email", "Email maria.santos@example.org with the subject 'Quarterly figures'.",
         ("get_weather", "send_email", "get_time_in"), "send_email",
         ({"to": "maria.santos@example.org", "subject": "Quarterly figures"},), "maria.santos@example.org"),
    Task("elevation", "How high is Aconcagua?", ("get_elevation", "get_distance_km"), "get_elevation",
         ({"mountain": "Aconcagua"},), "6961"),
)


# --- scoring -------------------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def same_value(given: Any, expected: Any) -> bool:
    """Numbers as numbers ("48" == 48.0), strings case- and whitespace-insensitively; a tuple `expected`
    accepts any of its items."""
    if isinstance(expected, tuple):
        return any(same_value(given, option) for option in expected)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        number = _number(given)
        return number is not None and math.isclose(number, float(expected), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, str):
        return isinstance(given, str) and _key(given) == _key(expected)
    return given == expected


def _defaults(tool: str) -> dict[str, Any]:
    import inspect

    return {name: p.default for name, p in inspect.signature(TOOLS[tool]).parameters.items()
            if p.default is not inspect.Parameter.empty}


def arguments_match(given: Mapping[str, Any], accepted: Sequence[Mapping[str, Any]], tool: str) -> bool:
    """Whether `given` equals one accepted argument set. An optional parameter of the tool may be left out when
    its default is the expected value, and may be given beyond the expected ones at its default."""
    if not isinstance(given, Mapping):
        return False
    defaults = _defaults(tool)
    for expected in accepted:
        if all(same_value(given[key], value) if key in given else key in defaults and same_value(defaults[key], value)
               for key, value in expected.items()) and \
                all(key in defaults and same_value(value, defaults[key]) for key, value in given.items() if key not in expected):
            return True
    return False


def score_calls(task: Task, calls: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """`calls`: the calls the model made, in order ({"name", "arguments"}). Judged on the first call."""
    first = calls[0] if calls else None
    right_tool = first is not None and first.get("name") == task.tool
    right_arguments = right_tool and arguments_match(first.get("arguments") or {}, task.arguments, task.tool)
    return {"call_made": bool(calls), "right_tool": right_tool, "right_arguments": right_arguments}


def _norm(text: str) -> str:
    return re.sub(r"(?<=\d)[, ](?=\d{3}\b)", "", text.lower())  # 8,418 and 8 418 -> 8418


def contains_fact(fact: str, text: str | None) -> bool:
    """`fact` occurs in `text` as a whole token (case-insensitive, thousands separators ignored): "19" is found
    in "19 °C" but not in "2019"."""
    if not text:
        return False
    return re.search(rf"(?<![0-9a-z]){re.escape(_norm(fact))}(?![0-9a-z])", _norm(text)) is not None


def answer_has_fact(task: Task, answer: str | None, tool_results: Sequence[str]) -> bool:
    """The final answer states the task's fact and the fact came from a tool result of the run (so a guess that
    happens to contain it does not count)."""
    return contains_fact(task.fact, answer) and any(contains_fact(task.fact, result) for result in tool_results)


# --- running the agents ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def recording_raw_replies() -> Iterator[list[str]]:
    """Records the text of every generation (call markup included) while the block runs."""
    replies: list[str] = []
    original = generation.generate_ids

    def recorded(*args, **kwargs):
        result = original(*args, **kwargs)
        replies.append(result.text)
        return result

    generation.generate_ids = recorded
    try:
        yield replies
    finally:
        generation.generate_ids = original


def run_haystack_task(generator, task: Task, *, max_steps: int) -> dict[str, Any]:
    """One task through Haystack's `Agent`: the calls made, the tool results and the final answer."""
    from haystack.components.agents import Agent
    from haystack.dataclasses import ChatMessage
    from haystack.tools import create_tool_from_function

    tools = [create_tool_from_function(TOOLS[name]) for name in task.tools]
    agent = Agent(chat_generator=generator, tools=tools, max_agent_steps=max_steps)
    agent.warm_up()
    result = agent.run([ChatMessage.from_user(task.prompt)])
    calls, results, errors = [], [], []
    for message in result["messages"]:
        calls += [{"name": c.tool_name, "arguments": c.arguments} for c in message.tool_calls]
        results += [r.result for r in message.tool_call_results]
        errors += message.meta.get("tool_call_errors", []) if message.meta else []
    last = result["messages"][-1]
    answer = last.text if last.is_from("assistant") and not last.tool_calls else None
    return {"calls": calls, "tool_results": results, "answer": answer, "parse_errors": errors}


def run_llama_index_task(llm, task: Task, *, max_steps: int) -> dict[str, Any]:
    """One task through LlamaIndex's `FunctionAgent`."""
    from llama_index.core.agent.workflow import AgentOutput, FunctionAgent, ToolCallResult
    from llama_index.core.tools import FunctionTool

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=TOOLS[name]) for name in task.tools], llm=llm,
                          streaming=False, timeout=None)
    calls, results, errors = [], [], []

    async def run():
        handler = agent.run(user_msg=task.prompt, max_iterations=max_steps)
        async for event in handler.stream_events():
            if isinstance(event, AgentOutput):
                calls.extend({"name": c.tool_name, "arguments": c.tool_kwargs} for c in event.tool_calls)
                errors.extend((event.raw or {}).get("tool_call_errors", []) if isinstance(event.raw, dict) else [])
            elif isinstance(event, ToolCallResult):
                results.append(str(event.tool_output.content))
        return await handler

    try:
        output = asyncio.run(run())
        answer = output.response.content  # (its tool_calls are the calls made during the run)
    except Exception as error:  # noqa: BLE001 - e.g. max_iterations reached: recorded, the run goes on
        answer, errors = None, [*errors, f"{type(error).__name__}: {error}"]
    return {"calls": calls, "tool_results": results, "answer": answer, "parse_errors": errors}


def run_task(runner: Callable[..., dict[str, Any]], engine, task: Task, *, max_steps: int) -> dict[str, Any]:
    """Run one task and score it; an exception is recorded as the task's error (scored as failed)."""
    start = time.perf_counter()
    with recording_raw_replies() as raw:
        try:
            outcome = runner(engine, task, max_steps=max_steps)
            error = None
        except Exception as exc:  # noqa: BLE001 - one broken task must not end the benchmark
            outcome, error = {"calls": [], "tool_results": [], "answer": None, "parse_errors": []}, f"{type(exc).__name__}: {exc}"
    scores = score_calls(task, outcome["calls"])
    return {"id": task.id, "prompt": task.prompt, "tools": list(task.tools), "expected_tool": task.tool,
            "expected_arguments": [{k: list(v) if isinstance(v, tuple) else v for k, v in a.items()} for a in task.arguments],
            "fact": task.fact, **scores, "answer_has_fact": answer_has_fact(task, outcome["answer"], outcome["tool_results"]),
            **outcome, "raw_replies": list(raw), "error": error, "seconds": round(time.perf_counter() - start, 2)}


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {"tasks": len(records), "call_made": sum(r["call_made"] for r in records),
            "right_tool": sum(r["right_tool"] for r in records),
            "right_tool_and_arguments": sum(r["right_arguments"] for r in records),
            "answer_has_fact": sum(r["answer_has_fact"] for r in records),
            "errors": sum(r["error"] is not None for r in records)}


def run_framework(spec: str, framework: str, tasks: Sequence[Task], *, new_tokens: int, max_steps: int,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    if framework == "haystack":
        from haystack_integrations.components.generators.grit import GritChatGenerator

        engine, runner = GritChatGenerator(model=spec, generation_kwargs={"max_new_tokens": new_tokens}), run_haystack_task
        engine.warm_up()
    else:
        from llama_index.llms.grit import GritLLM

        engine, runner = GritLLM(spec, max_new_tokens=new_tokens), run_llama_index_task
    records = []
    for task in tasks:
        record = run_task(runner, engine, task, max_steps=max_steps)
        records.append(record)
        first = record["calls"][0] if record["calls"] else None
        log(f"  {framework:<11} {task.id:<24} call={'y' if record['call_made'] else 'n'} "
            f"tool={'y' if record['right_tool'] else 'n'} args={'y' if record['right_arguments'] else 'n'} "
            f"fact={'y' if record['answer_has_fact'] else 'n'}  {json.dumps(first, ensure_ascii=False)[:80] if first else ''}"
            f"{'  ERROR ' + record['error'][:80] if record['error'] else ''}")
    engine.generator.close()  # the core GritGenerator of either adapter: releases the model
    return {"summary": summarise(records), "records": records}


def table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rows = ["| model | framework | tasks | call made | right tool | right tool + arguments | answer has the fact |",
            "|---|---|---|---|---|---|---|"]
    for spec, frameworks in results.items():
        for framework, result in frameworks.items():
            s = result["summary"]
            rows.append(f"| {spec} | {framework} | {s['tasks']} | {s['call_made']} | {s['right_tool']} | "
                        f"{s['right_tool_and_arguments']} | {s['answer_has_fact']} |")
    return "\n".join(rows)


def output_path(spec: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec).name if os.sep in spec else spec).strip("_")
    return ROOT / "benchmarks" / "results" / f"tool_calls_{safe}.json"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable; default grit-smollm2-135m)")
    parser.add_argument("--framework", choices=(*FRAMEWORKS, "both"), default="haystack")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--limit", type=int, default=None, help="first N tasks only")
    parser.add_argument("--new-tokens", type=int, default=96, help="most new tokens per model reply")
    parser.add_argument("--max-steps", type=int, default=4, help="most model replies per task")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file for all models (default: benchmarks/results/tool_calls_<model>.json each)")
    args = parser.parse_args(argv)
    for name in ("threads", "limit", "new_tokens", "max_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = TASKS[: args.limit] if args.limit else TASKS
    frameworks = FRAMEWORKS if args.framework == "both" else (args.framework,)
    setup = {"tasks": len(tasks), "frameworks": list(frameworks), "new_tokens": args.new_tokens,
             "max_steps": args.max_steps, "decoding": "greedy", "host": host_info()}
    results: dict[str, dict[str, Any]] = {}
    for spec in args.model or ["grit-smollm2-135m"]:
        print(f"{spec}:", flush=True)
        results[spec] = {}
        for framework in frameworks:
            start = time.perf_counter()
            results[spec][framework] = run_framework(spec, framework, tasks, new_tokens=args.new_tokens,
                                                     max_steps=args.max_steps, log=lambda line: print(line, flush=True))
            results[spec][framework]["seconds"] = round(time.perf_counter() - start, 1)
        if args.output is None:
            path = output_path(spec)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"model": spec, "setup": setup, "frameworks": results[spec]}, indent=1,
                                       ensure_ascii=False))
            print(f"wrote {path}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"setup": setup, "models": results}, indent=1, ensure_ascii=False))
        print(f"wrote {args.output}")
    print(table(results))
    return results


if __name__ == "__main__":
    main()

"""Write recipes/data/tool-calls.jsonl: tool-use conversations for generative training (deterministic).

    python recipes/make_tool_calls.py [--output recipes/data/tool-calls.jsonl] [--count 400] [--seed 27] [--rename 0.6]
                                      [--invented 0.5] [--plain 0.5]

Each record offers 1-3 tools (OpenAI function specs, in random order) and holds the user's request, the
assistant's call(s) (`tool_calls`), the `tool` result(s) and a short final answer that uses the result; about
15 % of the records offer no tool that fits, and the assistant answers directly without a call. Some
conversations make two calls (two tools, or the same tool twice: in one turn or one after the other).
The record format is docs/training.md, "Data formats"; the collator renders it exactly as inference does
(for SmolLM2, the JSON-in-text format of `grit_components.templates.TOOLS_SYSTEM`).

The tool specs come in the three shapes the frameworks produce: hand-written (Haystack `Tool` with
parameter descriptions), `haystack.tools.create_tool_from_function`, and LlamaIndex
`FunctionTool.from_defaults` (titles, and the signature in the description). Argument values and wordings
are kept apart from benchmarks/tool_calls.py (its cities, numbers and some of its tools appear nowhere
here), so that benchmark measures generalisation. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / "tool-calls.jsonl"

CITIES = ["Paris", "Berlin", "Tokyo", "Madrid", "Rome", "Oslo", "Cairo", "Sydney", "Toronto", "Chicago", "Mumbai",
          "Seoul", "Lima", "Dublin", "Vienna", "Prague", "Athens", "Bangkok", "Mexico City", "Cape Town", "Stockholm",
          "Helsinki", "Warsaw", "Istanbul", "Buenos Aires", "Jakarta", "Manila", "Denver", "Boston", "Zurich",
          "Amsterdam", "Brussels", "Singapore", "Delhi", "Santiago", "Bogota", "Dubai", "Edinburgh", "Seattle", "Munich"]
COUNTRIES = {"France": 68.2, "Germany": 84.5, "Japan": 124.5, "Brazil": 203.1, "Canada": 40.1, "Egypt": 112.7,
             "Spain": 48.3, "Italy": 58.9, "Mexico": 128.5, "Nigeria": 223.8, "Sweden": 10.6, "Poland": 36.7,
             "Thailand": 71.8, "Argentina": 46.7, "Chile": 19.6, "Greece": 10.4, "Ireland": 5.3, "Peru": 34.4}
NAMES = ["Alice", "Bob", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kenji", "Lena",
         "Marco", "Nadia", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara"]
STOCKS = {"AAPL": "Apple", "MSFT": "Microsoft", "GOOGL": "Alphabet", "AMZN": "Amazon", "TSLA": "Tesla",
          "NVDA": "Nvidia", "META": "Meta", "NFLX": "Netflix", "INTC": "Intel", "IBM": "IBM", "ORCL": "Oracle",
          "SAP": "SAP"}
CURRENCIES = {"USD": "dollars", "EUR": "euros", "GBP": "pounds", "JPY": "yen", "CHF": "Swiss francs",
              "CAD": "Canadian dollars", "AUD": "Australian dollars", "SEK": "Swedish kronor", "INR": "rupees"}
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52, "SEK": 10.4,
         "INR": 83.2}
CONDITIONS = ["sunny", "cloudy", "light rain", "overcast", "clear", "windy", "snowing", "foggy", "thunderstorms"]
LANGUAGES = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "Swedish", "Japanese"]
PHRASES = {"good morning": {"French": "bonjour", "Spanish": "buenos días", "German": "guten Morgen",
                            "Italian": "buongiorno", "Portuguese": "bom dia", "Dutch": "goedemorgen",
                            "Swedish": "god morgon", "Japanese": "ohayō gozaimasu"},
           "thank you very much": {"French": "merci beaucoup", "Spanish": "muchas gracias", "German": "vielen Dank",
                                   "Italian": "grazie mille", "Portuguese": "muito obrigado", "Dutch": "hartelijk dank",
                                   "Swedish": "tack så mycket", "Japanese": "dōmo arigatō"},
           "where is the station": {"French": "où est la gare", "Spanish": "dónde está la estación",
                                    "German": "wo ist der Bahnhof", "Italian": "dov'è la stazione",
                                    "Portuguese": "onde fica a estação", "Dutch": "waar is het station",
                                    "Swedish": "var ligger stationen", "Japanese": "eki wa doko desu ka"},
           "see you tomorrow": {"French": "à demain", "Spanish": "hasta mañana", "German": "bis morgen",
                                "Italian": "a domani", "Portuguese": "até amanhã", "Dutch": "tot morgen",
                                "Swedish": "vi ses i morgon", "Japanese": "mata ashita"}}
AIRLINES = ["BA", "AF", "LH", "KL", "DL", "UA", "AA", "IB", "SK", "AY", "EK", "QF"]
# Invented place names (--invented): syllables drawn at random, so a model must copy the place from the request
# instead of reaching for a city it knows (v6 called get_weather(city="Kindlezi") for Nairobi).
_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st",
           "tr", "sh", "ch", "th", "w", "y", "j", "sk", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "k", "x", "rg", "nd", "th"]
_PLACE_WORDS = ["Port", "San", "New", "Lake", "Fort", "Upper", "East", "Saint"]
INVENTED = {"share": 0.0}  # set by make_records


def invented_place(rng: random.Random) -> str:
    """A pronounceable place name that is no real city (2-4 syllables, now and then two words)."""
    word = "".join(pick(rng, _ONSETS) + pick(rng, _VOWELS) for _ in range(rng.randint(1, 3))) + pick(rng, _CODAS)
    word = word.capitalize()
    return f"{pick(rng, _PLACE_WORDS)} {word}" if rng.random() < 0.15 else word


def place(rng: random.Random) -> str:
    """A city of CITIES, or (a share INVENTED["share"] of the time) an invented one."""
    if INVENTED["share"] and rng.random() < INVENTED["share"]:  # no draw at 0: older data files stay reproducible
        return invented_place(rng)
    return pick(rng, CITIES)


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
# About 600 SmolLM2 tokens once rendered (tool list in the system text): records stay within the recipes'
# generative_max_length of 640, so no final answer is cut off (tests/test_tool_training.py checks it).
MAX_RECORD_CHARS = 1700
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a helpful assistant. Use the tools when they help.",
                  "You are a concise assistant.", "Answer the user's questions. Call a tool when you need data."]


@dataclass
class Param:
    name: str
    type: str  # JSON schema type: string, number, integer
    description: str
    required: bool = True
    default: Any = None
    enum: list[str] | None = None


@dataclass
class ToolDef:
    name: str
    description: str
    params: list[Param]
    # rng -> (user text, arguments, key facts for the answer); several wordings per tool
    requests: list[Callable[[random.Random], tuple[str, dict[str, Any]]]] = field(default_factory=list)
    result: Callable[[random.Random, dict[str, Any]], tuple[str, str]] | None = None  # -> (tool output, answer)

    def spec(self, style: str) -> dict[str, Any]:
        """The OpenAI function spec in one of three framework shapes."""
        properties: dict[str, Any] = {}
        for p in self.params:
            if style == "handwritten":
                prop: dict[str, Any] = {"type": p.type, "description": p.description}
                if p.enum:
                    prop["enum"] = p.enum
            elif style == "haystack":
                prop = {"type": p.type} if p.required else {"default": p.default, "type": p.type}
            else:  # llama_index
                title = p.name.replace("_", " ").title()
                prop = ({"title": title, "type": p.type} if p.required
                        else {"default": p.default, "title": title, "type": p.type})
            properties[p.name] = prop
        required = [p.name for p in self.params if p.required]
        if style == "handwritten":
            parameters = {"type": "object", "properties": properties, "required": required}
            description = self.description
        else:
            parameters = {"properties": properties, "required": required, "type": "object"}
            description = self.description
            if style == "llama_index":
                pytype = {"string": "str", "number": "float", "integer": "int"}
                signature = ", ".join(f"{p.name}: {pytype[p.type]}" + ("" if p.required else f" = {p.default!r}")
                                      for p in self.params)
                description = f"{self.name}({signature}) -> str\n{self.description}"
        return {"type": "function", "function": {"name": self.name, "description": description,
                                                 "parameters": parameters}}


def pick(rng: random.Random, items):
    return rng.choice(list(items))


def money(value: float) -> str:
    return f"{value:,.2f}"


# --- the tools ---------------------------------------------------------------------------------------------------

def weather_tool() -> ToolDef:
    def req(rng):
        city = place(rng)
        unit = rng.random() < 0.25
        templates = ["What's the weather like in {city} right now?", "Is it raining in {city}?",
                     "How warm is it in {city} today?", "weather {city}", "Can you check the weather in {city}?",
                     "I'm heading out in {city}. What's it like outside?"]
        text = pick(rng, templates).format(city=city)
        args: dict[str, Any] = {"city": city}
        if unit:
            text = text.rstrip("?") + " Give me the temperature in Fahrenheit."
            args["unit"] = "fahrenheit"
        return text, args

    def result(rng, args):
        celsius = rng.randint(-8, 34)
        condition = pick(rng, ["snowing", "clear", "overcast", "foggy"] if celsius <= 1
                         else [c for c in CONDITIONS if c != "snowing"])
        if args.get("unit") == "fahrenheit":
            temp, sign = round(celsius * 9 / 5 + 32), "°F"
        else:
            temp, sign = celsius, "°C"
        out = json.dumps({"city": args["city"], "temperature": temp, "unit": sign, "condition": condition})
        answers = [f"It's {temp}{sign} and {condition} in {args['city']}.",
                   f"{args['city']}: {condition}, {temp}{sign}.",
                   f"Right now {args['city']} has {condition} weather at {temp}{sign}."]
        return out, pick(rng, answers)

    return ToolDef("get_weather", "Get the current weather for a city.",
                   [Param("city", "string", "City name, e.g. London"),
                    Param("unit", "string", "celsius or fahrenheit", required=False, default="celsius",
                          enum=["celsius", "fahrenheit"])], [req], result)


UNITS = [("km", "miles", 0.621371), ("miles", "km", 1.609344), ("kg", "pounds", 2.204623), ("pounds", "kg", 0.453592),
         ("liters", "gallons", 0.264172), ("feet", "meters", 0.3048), ("meters", "feet", 3.28084),
         ("inches", "cm", 2.54), ("cm", "inches", 0.393701)]


def units_tool() -> ToolDef:
    def req(rng):
        src, dst, _ = pick(rng, UNITS)
        value = rng.choice([rng.randint(2, 500), round(rng.uniform(1, 100), 1)])
        templates = ["Convert {v} {a} to {b}.", "How many {b} is {v} {a}?", "{v} {a} in {b} please",
                     "What is {v} {a} in {b}?", "I need {v} {a} expressed in {b}."]
        return pick(rng, templates).format(v=value, a=src, b=dst), {"value": value, "from_unit": src, "to_unit": dst}

    def result(rng, args):
        factor = next(f for a, b, f in UNITS if a == args["from_unit"] and b == args["to_unit"])
        converted = round(args["value"] * factor, 2)
        out = json.dumps({"value": converted, "unit": args["to_unit"]})
        answers = [f"{args['value']} {args['from_unit']} is {converted} {args['to_unit']}.",
                   f"That's {converted} {args['to_unit']}."]
        return out, pick(rng, answers)

    return ToolDef("convert_units", "Convert a quantity from one unit to another.",
                   [Param("value", "number", "The quantity to convert"),
                    Param("from_unit", "string", "Unit of the value, e.g. km"),
                    Param("to_unit", "string", "Target unit, e.g. miles")], [req], result)


def calculator_tool() -> ToolDef:
    def req(rng):
        a, b = rng.randint(12, 999), rng.randint(3, 97)
        op, word = pick(rng, [("*", "times"), ("+", "plus"), ("-", "minus"), ("/", "divided by")])
        templates = [("What is {a} {w} {b}?", "{a} {o} {b}"), ("Calculate {a} {o} {b}", "{a} {o} {b}"),
                     ("Can you work out {a}{o}{b} for me?", "{a}{o}{b}"), ("compute {a} {w} {b}", "{a} {o} {b}")]
        text, expression = pick(rng, templates)
        return text.format(a=a, b=b, w=word, o=op), {"expression": expression.format(a=a, b=b, o=op)}

    def result(rng, args):
        value = eval(args["expression"], {"__builtins__": {}})  # noqa: S307 - our own digits and one operator
        value = round(value, 4) if isinstance(value, float) else value
        out = json.dumps({"result": value})
        answers = [f"{args['expression']} = {value}.", f"The result is {value}.", f"It comes to {value}."]
        return out, pick(rng, answers)

    return ToolDef("calculate", "Evaluate an arithmetic expression.",
                   [Param("expression", "string", "An arithmetic expression such as 12 * (3 + 4)")], [req], result)


def currency_tool() -> ToolDef:
    def req(rng):
        src, dst = rng.sample(sorted(CURRENCIES), 2)
        amount = rng.choice([rng.randint(5, 5000), rng.randint(1, 99) * 10])
        templates = ["How much is {n} {a} in {B}?", "Convert {n} {A} to {B}.", "What are {n} {a} worth in {b}?",
                     "I have {n} {A}. How many {b} is that?", "{n} {A} to {B}?"]
        text = pick(rng, templates).format(n=amount, A=src, B=dst, a=CURRENCIES[src], b=CURRENCIES[dst])
        return text, {"amount": amount, "from_currency": src, "to_currency": dst}

    def result(rng, args):
        value = round(args["amount"] / RATES[args["from_currency"]] * RATES[args["to_currency"]], 2)
        out = json.dumps({"amount": value, "currency": args["to_currency"]})
        answers = [f"{args['amount']} {args['from_currency']} is about {money(value)} {args['to_currency']}.",
                   f"That's {money(value)} {args['to_currency']}."]
        return out, pick(rng, answers)

    return ToolDef("convert_currency", "Convert an amount of money between currencies at today's rate.",
                   [Param("amount", "number", "Amount of money"),
                    Param("from_currency", "string", "ISO code of the source currency, e.g. USD"),
                    Param("to_currency", "string", "ISO code of the target currency, e.g. EUR")], [req], result)


def time_tool() -> ToolDef:
    def req(rng):
        city = place(rng)
        templates = ["What time is it in {c}?", "Current time in {c}?", "Is it still morning in {c}?",
                     "What's the local time in {c} right now?", "time in {c}"]
        return pick(rng, templates).format(c=city), {"city": city}

    def result(rng, args):
        hour, minute = rng.randint(0, 23), rng.choice([0, 5, 12, 20, 30, 41, 45, 58])
        out = json.dumps({"city": args["city"], "local_time": f"{hour:02d}:{minute:02d}"})
        answers = [f"It's {hour:02d}:{minute:02d} in {args['city']}.", f"The local time in {args['city']} is {hour:02d}:{minute:02d}."]
        return out, pick(rng, answers)

    return ToolDef("get_local_time", "Get the current local time in a city.",
                   [Param("city", "string", "City name")], [req], result)


def stock_tool() -> ToolDef:
    def req(rng):
        symbol = pick(rng, sorted(STOCKS))
        name = STOCKS[symbol]
        templates = ["What's {n} trading at?", "Stock price of {s}?", "How much is one {n} share right now?",
                     "Give me the latest {s} quote.", "What is {n}'s share price today?"]
        return pick(rng, templates).format(n=name, s=symbol), {"symbol": symbol}

    def result(rng, args):
        price = round(rng.uniform(20, 900), 2)
        change = round(rng.uniform(-4, 4), 2)
        out = json.dumps({"symbol": args["symbol"], "price": price, "currency": "USD", "change_percent": change})
        answers = [f"{args['symbol']} is at {price} USD ({change:+.2f}% today).", f"One share costs {price} USD."]
        return out, pick(rng, answers)

    return ToolDef("get_stock_price", "Get the latest stock price for a ticker symbol.",
                   [Param("symbol", "string", "Ticker symbol, e.g. AAPL")], [req], result)


TOPICS = [("the James Webb telescope launch date", "The James Webb Space Telescope launched on 25 December 2021."),
          ("who won the 2018 World Cup", "France won the 2018 FIFA World Cup."),
          ("the height of Mount Kilimanjaro", "Mount Kilimanjaro is 5,895 m high."),
          ("when the Eiffel Tower was built", "The Eiffel Tower was built from 1887 to 1889."),
          ("the boiling point of ethanol", "Ethanol boils at 78.4 °C."),
          ("the author of One Hundred Years of Solitude", "Gabriel García Márquez wrote One Hundred Years of Solitude."),
          ("the length of the Danube", "The Danube is about 2,850 km long."),
          ("the first programmable computer", "The Z3 (1941) is often called the first programmable computer."),
          ("how many moons Mars has", "Mars has two moons, Phobos and Deimos."),
          ("the speed of sound in water", "Sound travels at about 1,480 m/s in water."),
          ("the founding year of the Red Cross", "The Red Cross was founded in 1863.")]


def search_tool() -> ToolDef:
    def req(rng):
        topic, _ = pick(rng, TOPICS)
        templates = ["Search the web for {t}.", "Look up {t}.", "Can you find {t} online?", "I need to know {t}."]
        args: dict[str, Any] = {"query": topic}
        text = pick(rng, templates).format(t=topic)
        if rng.random() < 0.3:
            n = rng.choice([1, 3, 5])
            text += f" Just the top {n} result{'s' if n > 1 else ''}."
            args["max_results"] = n
        return text, args

    def result(rng, args):
        snippet = next(s for t, s in TOPICS if t == args["query"])
        out = json.dumps({"results": [{"title": args["query"].capitalize(), "snippet": snippet}]})
        return out, snippet

    return ToolDef("search_web", "Search the web and return result snippets.",
                   [Param("query", "string", "Search query"),
                    Param("max_results", "integer", "How many results to return", required=False, default=3)],
                   [req], result)


DOCS = [("vacation policy", "Employees get 25 days of paid vacation per year."),
        ("expense limit for meals", "Meals are reimbursed up to 40 EUR per day."),
        ("VPN setup", "Install the company VPN client and sign in with your staff ID."),
        ("parental leave", "Parental leave is 16 weeks at full pay."),
        ("office opening hours", "The office is open from 7:30 to 19:00 on weekdays."),
        ("password rules", "Passwords need 12 characters and are changed every 180 days."),
        ("remote work", "Staff may work remotely up to three days a week.")]


def docs_tool() -> ToolDef:
    def req(rng):
        topic, _ = pick(rng, DOCS)
        templates = ["What does our handbook say about {t}?", "Check the internal docs on {t}.",
                     "What's the company rule on {t}?", "Find our policy about {t}."]
        return pick(rng, templates).format(t=topic), {"query": topic}

    def result(rng, args):
        text = next(s for t, s in DOCS if t == args["query"])
        return json.dumps({"documents": [text]}), f"According to the handbook: {text}"

    return ToolDef("search_documents", "Search the company's internal documents.",
                   [Param("query", "string", "What to search for")], [req], result)


EVENTS = ["Dentist appointment", "Team sync", "Lunch with {p}", "Call {p}", "Yoga class", "Project review",
          "Birthday party for {p}", "Budget meeting"]


def calendar_tool() -> ToolDef:
    def req(rng):
        title = pick(rng, EVENTS).format(p=pick(rng, NAMES))
        day, month = rng.randint(1, 28), pick(rng, MONTHS)
        date = f"2025-{MONTHS.index(month) + 1:02d}-{day:02d}"
        args: dict[str, Any] = {"title": title, "date": date}
        templates = ["Add '{t}' to my calendar on {m} {d}.", "Schedule {t} for {m} {d}.",
                     "Put {t} in my calendar, {m} {d}.", "Create an event called {t} on {m} {d}."]
        text = pick(rng, templates).format(t=title, m=month, d=day)
        if rng.random() < 0.5:
            hour = rng.randint(8, 18)
            text = text.rstrip(".") + f" at {hour}:00."
            args["time"] = f"{hour:02d}:00"
        if rng.random() < 0.25:
            minutes = rng.choice([15, 30, 45, 60, 90])
            text = text.rstrip(".") + f", {minutes} minutes."
            args["duration_minutes"] = minutes
        return text, args

    def result(rng, args):
        event_id = f"evt-{rng.randint(1000, 9999)}"
        out = json.dumps({"status": "created", "id": event_id, "title": args["title"], "date": args["date"]})
        when = args["date"] + (f" at {args['time']}" if "time" in args else "")
        return out, pick(rng, [f"Done: '{args['title']}' is on your calendar for {when}.",
                               f"I've added {args['title']} on {when}."])

    return ToolDef("create_calendar_event", "Create an event in the user's calendar.",
                   [Param("title", "string", "Event title"), Param("date", "string", "Date as YYYY-MM-DD"),
                    Param("time", "string", "Start time as HH:MM", required=False, default=None),
                    Param("duration_minutes", "integer", "Length in minutes", required=False, default=60)],
                   [req], result)


MESSAGES = ["I'm running ten minutes late", "the meeting moved to Thursday", "can you bring the charger?",
            "happy birthday!", "dinner is at eight", "I sent you the report", "call me when you land"]


def message_tool() -> ToolDef:
    def req(rng):
        name, text = pick(rng, NAMES), pick(rng, MESSAGES)
        templates = ["Text {n}: {m}", "Send {n} a message saying \"{m}\".", "Message {n}: \"{m}\""]
        if text[-1] not in "?!":
            templates.append("Tell {n} that {m}.")
        return pick(rng, templates).format(n=name, m=text), {"recipient": name, "text": text}

    def result(rng, args):
        out = json.dumps({"status": "sent", "to": args["recipient"]})
        return out, pick(rng, [f"Message sent to {args['recipient']}.", f"Done, {args['recipient']} has your message."])

    return ToolDef("send_message", "Send a text message to a contact.",
                   [Param("recipient", "string", "Contact name"), Param("text", "string", "Message text")], [req], result)


def translate_tool() -> ToolDef:
    def req(rng):
        phrase, language = pick(rng, sorted(PHRASES)), pick(rng, LANGUAGES)
        templates = ["How do you say \"{p}\" in {l}?", "Translate \"{p}\" into {l}.", "What's \"{p}\" in {l}?",
                     "{l} for \"{p}\"?"]
        args: dict[str, Any] = {"text": phrase, "target_language": language}
        text = pick(rng, templates).format(p=phrase, l=language)
        if rng.random() < 0.2:
            text += " It's English."
            args["source_language"] = "English"
        return text, args

    def result(rng, args):
        translated = PHRASES[args["text"]][args["target_language"]]
        out = json.dumps({"translation": translated, "language": args["target_language"]})
        return out, pick(rng, [f"In {args['target_language']}: \"{translated}\".",
                               f"\"{args['text']}\" is \"{translated}\" in {args['target_language']}."])

    return ToolDef("translate_text", "Translate text into another language.",
                   [Param("text", "string", "Text to translate"),
                    Param("target_language", "string", "Language to translate into"),
                    Param("source_language", "string", "Language of the text", required=False, default="auto")],
                   [req], result)


def population_tool() -> ToolDef:
    def req(rng):
        country = pick(rng, sorted(COUNTRIES))
        templates = ["What's the population of {c}?", "How many people live in {c}?", "Population of {c}?",
                     "How big is {c}'s population these days?"]
        return pick(rng, templates).format(c=country), {"country": country}

    def result(rng, args):
        millions = COUNTRIES[args["country"]]
        out = json.dumps({"country": args["country"], "population_millions": millions, "year": 2023})
        return out, pick(rng, [f"{args['country']} has about {millions} million people.",
                               f"About {millions} million (2023)."])

    return ToolDef("get_population", "Look up the population of a country.",
                   [Param("country", "string", "Country name")], [req], result)


def flight_tool() -> ToolDef:
    def req(rng):
        number = f"{pick(rng, AIRLINES)}{rng.randint(10, 999)}"
        templates = ["Is flight {f} on time?", "What's the status of {f}?", "Has {f} landed yet?",
                     "Check flight {f} for me."]
        args: dict[str, Any] = {"flight_number": number}
        text = pick(rng, templates).format(f=number)
        if rng.random() < 0.3:
            day = rng.randint(1, 28)
            month = pick(rng, MONTHS)
            text = text.rstrip("?.") + f" on {month} {day}?"
            args["date"] = f"2025-{MONTHS.index(month) + 1:02d}-{day:02d}"
        return text, args

    def result(rng, args):
        status = pick(rng, ["on time", "delayed by 25 minutes", "landed", "boarding", "delayed by 1 hour", "cancelled"])
        gate = f"{pick(rng, 'ABCDE')}{rng.randint(1, 40)}"
        out = json.dumps({"flight": args["flight_number"], "status": status, "gate": gate})
        return out, pick(rng, [f"{args['flight_number']} is {status} (gate {gate}).", f"Flight {args['flight_number']}: {status}."])

    return ToolDef("get_flight_status", "Get the status of a flight by its number.",
                   [Param("flight_number", "string", "Flight number, e.g. BA117"),
                    Param("date", "string", "Date as YYYY-MM-DD (default today)", required=False, default=None)],
                   [req], result)


def timer_tool() -> ToolDef:
    def req(rng):
        minutes = rng.choice([3, 5, 8, 10, 12, 20, 25, 40])
        label = pick(rng, ["pasta", "tea", "laundry", "break", "oven", "parking"])
        templates = ["Set a {m}-minute timer for the {l}.", "Timer: {m} minutes, {l}.", "Remind me about the {l} in {m} minutes."]
        return pick(rng, templates).format(m=minutes, l=label), {"minutes": minutes, "label": label}

    def result(rng, args):
        return json.dumps({"status": "set", "minutes": args["minutes"]}), f"Timer set for {args['minutes']} minutes ({args['label']})."

    return ToolDef("set_timer", "Start a countdown timer.",
                   [Param("minutes", "integer", "Duration in minutes"), Param("label", "string", "What the timer is for")],
                   [req], result)


DEFINITIONS = {"ephemeral": "lasting a very short time", "laconic": "using very few words",
               "ubiquitous": "present everywhere", "gregarious": "fond of company", "meticulous": "very careful and precise"}


def dictionary_tool() -> ToolDef:
    def req(rng):
        word = pick(rng, sorted(DEFINITIONS))
        templates = ["What does \"{w}\" mean?", "Define {w}.", "Meaning of the word {w}?"]
        return pick(rng, templates).format(w=word), {"word": word}

    def result(rng, args):
        meaning = DEFINITIONS[args["word"]]
        return json.dumps({"word": args["word"], "definition": meaning}), f"\"{args['word'].capitalize()}\" means {meaning}."

    return ToolDef("define_word", "Look up the definition of an English word.",
                   [Param("word", "string", "The word")], [req], result)


TOOLS = [weather_tool(), units_tool(), calculator_tool(), currency_tool(), time_tool(), stock_tool(), search_tool(),
         docs_tool(), calendar_tool(), message_tool(), translate_tool(), population_tool(), flight_tool(),
         timer_tool(), dictionary_tool()]
BY_NAME = {tool.name: tool for tool in TOOLS}

# Requests no tool here can serve, with direct answers (general knowledge, writing, small talk).
DIRECT = [("Write a haiku about autumn.", "Red leaves drift and fall,\ncool wind hums through empty trees,\nthe year exhales slow."),
          ("What is the capital of Australia?", "Canberra."),
          ("Tell me a short joke.", "Why did the scarecrow win an award? He was outstanding in his field."),
          ("Who wrote Hamlet?", "William Shakespeare."),
          ("Give me a synonym for happy.", "Cheerful."),
          ("How many days are in a leap year?", "366."),
          ("What's the chemical symbol for gold?", "Au."),
          ("Thanks, that's all for now!", "You're welcome! Have a great day."),
          ("Hi! How are you?", "I'm doing well, thanks! How can I help?"),
          ("Suggest a name for a grey cat.", "How about Smokey?"),
          ("What is photosynthesis, in one sentence?", "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
          ("Which planet is closest to the sun?", "Mercury."),
          ("How many legs does a spider have?", "Eight."),
          ("Can you recommend a classic novel?", "Try Pride and Prejudice by Jane Austen."),
          ("What's the opposite of ancient?", "Modern."),
          ("Explain what a noun is.", "A noun names a person, place, thing or idea, like \"dog\" or \"city\"."),
          ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
          ("What's a good way to start a cover letter?", "Open with the role you want and one strong reason you fit it.")]

# Requests that need a tool which is not offered: the assistant says what it cannot do.
MISSING = {"get_weather": ("What's the weather in {c} today?", "I can't check the weather with the tools I have."),
           "get_stock_price": ("What's Tesla's share price?", "I don't have a tool for stock prices, so I can't look that up."),
           "get_flight_status": ("Is flight LH400 delayed?", "I can't check flight status with the tools available."),
           "get_local_time": ("What time is it in {c}?", "I don't have a clock tool for other cities, sorry."),
           "send_message": ("Send Lena a message that I'm on my way.", "I can't send messages with the tools I have.")}


def call_turn(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}


def tool_turn(name: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "name": name, "content": content}


def offer(rng: random.Random, needed: list[str], total: int, exclude: set[str] = frozenset()) -> list[str]:
    others = [t.name for t in TOOLS if t.name not in needed and t.name not in exclude]
    names = list(dict.fromkeys(needed)) + rng.sample(others, max(0, total - len(set(needed))))
    rng.shuffle(names)
    return names


def single(rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    tool = pick(rng, TOOLS)
    text, args = pick(rng, tool.requests)(rng)
    out, answer = tool.result(rng, args)
    names = offer(rng, [tool.name], rng.choice([1, 2, 2, 3, 3]))
    return names, [{"role": "user", "content": text}, call_turn([(tool.name, args)]), tool_turn(tool.name, out),
                   {"role": "assistant", "content": answer}]


def named_result(rng: random.Random, tool: ToolDef, args: dict[str, Any]) -> tuple[str, str]:
    """A result whose answer names what it is about (a city, a symbol ...): answers of two calls are joined."""
    key = next(str(v) for v in args.values() if isinstance(v, str))
    for _ in range(20):
        out, answer = tool.result(rng, args)
        if key.lower() in answer.lower():
            break
    return out, answer


def parallel(rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    """The same tool twice in one turn (two cities, two stocks) or two tools in one turn."""
    if rng.random() < 0.5:
        tool = pick(rng, [BY_NAME["get_weather"], BY_NAME["get_local_time"], BY_NAME["get_stock_price"],
                          BY_NAME["get_population"]])
        key = {"get_weather": "city", "get_local_time": "city", "get_stock_price": "symbol", "get_population": "country"}[tool.name]
        pool = {"city": CITIES, "symbol": sorted(STOCKS), "country": sorted(COUNTRIES)}[key]
        a, b = rng.sample(pool, 2)
        if key == "city" and INVENTED["share"]:
            a, b = place(rng), place(rng)
            b = b if b != a else pick(rng, [c for c in CITIES if c != a])
        shown = {"symbol": lambda s: STOCKS[s]}.get(key, lambda s: s)
        phrasing = {"get_weather": ["Compare the weather in {a} and {b}.", "Weather in {a} and in {b}?"],
                    "get_local_time": ["What time is it in {a} and in {b}?", "Local times in {a} and {b}, please."],
                    "get_stock_price": ["How are {a} and {b} shares doing?", "Prices for {a} and {b} stock?"],
                    "get_population": ["Which has more people, {a} or {b}?", "Populations of {a} and {b}?"]}[tool.name]
        text = pick(rng, phrasing).format(a=shown(a), b=shown(b))
        calls = [(tool.name, {key: a}), (tool.name, {key: b})]
    else:
        first, second = rng.sample([BY_NAME[n] for n in ("get_weather", "get_local_time", "get_population",
                                                         "get_stock_price", "define_word")], 2)
        t1, a1 = first.requests[0](rng)
        t2, a2 = second.requests[0](rng)
        text = f"{t1 if t1[-1] in '.?!' else t1 + '.'} Also, {t2[0].lower()}{t2[1:]}"
        calls = [(first.name, a1), (second.name, a2)]
    results = [named_result(rng, BY_NAME[n], args) for n, args in calls]
    names = offer(rng, [n for n, _ in calls], rng.choice([1, 2, 3]))
    messages = [{"role": "user", "content": text}, call_turn(calls)]
    messages += [tool_turn(n, out) for (n, _), (out, _) in zip(calls, results)]
    messages.append({"role": "assistant", "content": " ".join(answer for _, answer in results)})
    return names, messages


def chained(rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    """Two calls one after the other, the second using the first result."""
    kind = rng.choice(["stock_fx", "weather_then_time", "search_then_message"])
    if kind == "stock_fx":
        symbol = pick(rng, sorted(STOCKS))
        target = pick(rng, [c for c in sorted(CURRENCIES) if c != "USD"])
        text = pick(rng, ["What's one {n} share worth in {c}?", "{n} stock price in {c}, please."]).format(
            n=STOCKS[symbol], c=CURRENCIES[target])
        price = round(rng.uniform(20, 900), 2)
        first = ("get_stock_price", {"symbol": symbol})
        first_out = json.dumps({"symbol": symbol, "price": price, "currency": "USD", "change_percent": 0.4})
        second = ("convert_currency", {"amount": price, "from_currency": "USD", "to_currency": target})
        second_out, _ = BY_NAME["convert_currency"].result(rng, second[1])
        value = json.loads(second_out)["amount"]
        answer = f"One {STOCKS[symbol]} share is {price} USD, about {money(value)} {target}."
    elif kind == "weather_then_time":
        city = place(rng)
        text = pick(rng, ["I'm calling a friend in {c}. What time is it there, and how's the weather?",
                          "Time and weather in {c}?"]).format(c=city)
        first = ("get_local_time", {"city": city})
        first_out, first_answer = BY_NAME["get_local_time"].result(rng, first[1])
        second = ("get_weather", {"city": city})
        second_out, second_answer = BY_NAME["get_weather"].result(rng, second[1])
        answer = f"{first_answer} {second_answer}"
    else:
        topic, snippet = pick(rng, TOPICS)
        name = pick(rng, NAMES)
        text = f"Look up {topic} and text the answer to {name}."
        first = ("search_web", {"query": topic})
        first_out = json.dumps({"results": [{"title": topic.capitalize(), "snippet": snippet}]})
        second = ("send_message", {"recipient": name, "text": snippet})
        second_out, _ = BY_NAME["send_message"].result(rng, second[1])
        answer = f"{snippet} I've sent that to {name}."
    names = offer(rng, [first[0], second[0]], rng.choice([2, 3]))
    messages = [{"role": "user", "content": text}, call_turn([first]), tool_turn(first[0], first_out),
                call_turn([second]), tool_turn(second[0], second_out), {"role": "assistant", "content": answer}]
    return names, messages


def no_fit(rng: random.Random) -> tuple[list[str], list[dict[str, Any]]]:
    """No offered tool fits: answer directly (a general request) or say what is missing."""
    if rng.random() < 0.65:
        text, answer = pick(rng, DIRECT)
        names = offer(rng, [], rng.choice([1, 2, 3]))
    else:
        wanted = pick(rng, sorted(MISSING))
        text, answer = MISSING[wanted]
        text = text.format(c=place(rng))
        exclude = {wanted} | ({"search_web"} if wanted in ("get_weather", "get_stock_price", "get_flight_status") else set())
        names = offer(rng, [], rng.choice([1, 2]), exclude=exclude)
    return names, [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


# Other names a tool or parameter goes by (--rename): a model that calls `city` whatever the spec says has learnt
# our tools, not to read the spec. Kept apart from benchmarks/tool_calls.py's own names (location, ticker, source,
# target, a, b ... appear in no list here), so that benchmark still measures generalisation.
TOOL_ALIASES = {"get_weather": ["current_weather", "fetch_weather", "weather_report"],
                "convert_units": ["unit_converter", "convert_measure"], "calculate": ["calculator", "eval_math"],
                "convert_currency": ["fx_convert", "currency_converter"], "get_local_time": ["local_time", "clock"],
                "get_stock_price": ["stock_price", "share_price"], "search_web": ["web_search", "internet_search"],
                "search_documents": ["search_docs", "handbook_search"],
                "create_calendar_event": ["add_event", "schedule_event"], "send_message": ["text_contact", "send_sms"],
                "translate_text": ["translate", "translator"], "get_population": ["population", "country_population"],
                "get_flight_status": ["flight_status", "check_flight"], "set_timer": ["start_timer", "timer"],
                "define_word": ["dictionary", "lookup_word"]}
PARAM_ALIASES = {"city": ["city_name", "place", "town"], "unit": ["units", "scale"],
                 "value": ["quantity", "number", "x"], "from_unit": ["unit_from", "input_unit"],
                 "to_unit": ["unit_to", "output_unit"], "expression": ["expr", "formula"],
                 "amount": ["sum", "money", "value"], "from_currency": ["base", "currency_from", "have"],
                 "to_currency": ["quote", "currency_to", "want"], "symbol": ["stock_symbol", "code"],
                 "query": ["q", "search_query", "keywords"], "max_results": ["limit", "top_k"],
                 "title": ["name", "summary"], "date": ["day", "on_date"], "time": ["start_time", "at"],
                 "duration_minutes": ["length_minutes"], "recipient": ["contact", "person"],
                 "text": ["message", "content", "body"], "target_language": ["into", "language"],
                 "source_language": ["from_language"], "country": ["country_name", "nation"],
                 "flight_number": ["flight", "flight_id"], "minutes": ["duration", "mins"],
                 "label": ["tag", "reason"], "word": ["term", "entry"]}


def renamed(rng: random.Random, tool: ToolDef) -> tuple[ToolDef, dict[str, str]]:
    """`tool` under another name (half the time) with some parameters renamed, and the old -> new parameter map."""
    name = pick(rng, TOOL_ALIASES[tool.name]) if rng.random() < 0.5 else tool.name
    taken = {p.name for p in tool.params}
    mapping: dict[str, str] = {}
    for param in tool.params:
        choices = [a for a in PARAM_ALIASES.get(param.name, ()) if a not in taken]
        if choices and rng.random() < 0.6:
            mapping[param.name] = pick(rng, choices)
            taken.add(mapping[param.name])
    params = [replace(p, name=mapping.get(p.name, p.name)) for p in tool.params]
    return replace(tool, name=name, params=params), mapping


def rename_tools(rng: random.Random, names: list[str], messages: list[dict[str, Any]],
                 style: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The offered tools' specs and the conversation with every offered tool renamed consistently."""
    changed = {n: renamed(rng, BY_NAME[n]) for n in names}
    out = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [{"name": changed[c["name"]][0].name,
                                      "arguments": {changed[c["name"]][1].get(k, k): v for k, v in c["arguments"].items()}}
                                     for c in message["tool_calls"]]
        if message["role"] == "tool":
            message["name"] = changed[message["name"]][0].name
        out.append(message)
    return [changed[n][0].spec(style) for n in names], out


def plain_result(content: str, rng: random.Random) -> str:
    """A JSON tool result as the plain text many real tools return (a Python function returning a string, as in
    benchmarks/tool_calls.py): the bare value of a one-field result ("2146"), the values alone
    ("Paris, 21, °C, sunny") or "field: value" pairs ("city: Paris, temperature: 21 ...")."""
    value = json.loads(content)

    def scalars(item: Any) -> list[tuple[str, str]]:
        if isinstance(item, dict):
            return [pair for key, inner in item.items()
                    for pair in ([(key, str(inner))] if not isinstance(inner, (dict, list)) else scalars(inner))]
        if isinstance(item, list):
            return [pair for inner in item for pair in scalars(inner)]
        return [("", str(item))]

    pairs = scalars(value)
    if len(pairs) == 1 or rng.random() < 0.5:
        return ", ".join(text for _, text in pairs)
    return ", ".join(f"{key}: {text}" if key else text for key, text in pairs)


def make_records(count: int = 400, seed: int = 27, rename: float = 0.0, invented: float = 0.0,
                 plain: float = 0.0) -> list[dict[str, Any]]:
    """`count` conversations; a share `rename` with renamed tools and parameters, a share `invented` of the places
    asked about invented (`invented_place`), a share `plain` whose tool results are plain text (`plain_result`)
    rather than JSON."""
    INVENTED["share"] = invented
    try:
        return _make_records(count, seed, rename, plain)
    finally:
        INVENTED["share"] = 0.0


def _make_records(count: int, seed: int, rename: float, plain: float = 0.0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kinds = [(single, 0.65), (parallel, 0.10), (chained, 0.10), (no_fit, 0.15)]
    plan = [kind for kind, share in kinds for _ in range(round(count * share))]
    plan = (plan + [single] * count)[:count]
    rng.shuffle(plan)
    records = []
    for kind in plan:
        names, messages = kind(rng)
        style = rng.choice(["handwritten", "handwritten", "haystack", "llama_index"])
        if rng.random() < 0.25:
            messages = [{"role": "system", "content": pick(rng, SYSTEM_PROMPTS)}, *messages]
        if plain and rng.random() < plain:
            messages = [{**m, "content": plain_result(m["content"], rng)} if m["role"] == "tool" else m
                        for m in messages]
        if rename and rng.random() < rename:
            tools, messages = rename_tools(rng, names, messages, style)
        else:
            tools = [BY_NAME[n].spec(style) for n in names]
        record = {"tools": tools, "messages": messages, "dataset": "tool-calls"}
        called = {c["name"] for m in messages for c in m.get("tool_calls", ())}
        while len(json.dumps(record, ensure_ascii=False)) > MAX_RECORD_CHARS and len(record["tools"]) > max(1, len(called)):
            spare = [i for i, t in enumerate(record["tools"]) if t["function"]["name"] not in called]
            record["tools"].pop(spare[-1])  # an unused tool: keeps the sequence within the recipes' 640 tokens
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--rename", type=float, default=0.0,
                        help="share of conversations whose tools and parameters go by other names (0-1)")
    parser.add_argument("--invented", type=float, default=0.0,
                        help="share of the places asked about that are invented names, not real cities (0-1)")
    parser.add_argument("--plain", type=float, default=0.0,
                        help="share of conversations whose tool results are plain text instead of JSON (0-1)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if not 0.0 <= args.rename <= 1.0:
        parser.error("--rename must be between 0 and 1")
    if not 0.0 <= args.invented <= 1.0:
        parser.error("--invented must be between 0 and 1")
    if not 0.0 <= args.plain <= 1.0:
        parser.error("--plain must be between 0 and 1")
    records = make_records(args.count, args.seed, args.rename, args.invented, args.plain)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    calls = sum(any(m.get("tool_calls") for m in r["messages"]) for r in records)
    print(f"wrote {len(records)} conversations ({calls} with tool calls, {len(records) - calls} without) to {args.output}")


if __name__ == "__main__":
    main()

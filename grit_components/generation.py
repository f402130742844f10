"""Chat generation with the model's causal attention, optionally continuing from a reused KV cache.

GritLM models get the GRIT chat format (`BOS <|user|>\\n...\\n<|assistant|>\\n`, system messages folded
into the user turn); other models get their tokenizer's chat template. `generate_ids` is the low-level
entry point the RAG engine uses: prompt token ids, optionally as the suffix after a cached prefix.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from grit_components import templates
from grit_components._checks import check_unicode
from grit_components._compat import cache_argument
from grit_components.kv_cache import static_cache
from grit_components.options import GenerationOptions, as_generation_options

if TYPE_CHECKING:
    from transformers import Cache

    from grit_components.models import LoadedModel

StreamingCallback = Callable[[str], None]
Messages = str | Sequence[Mapping[str, str]]


@dataclass
class GenerationResult:
    """What one generation produced.

    `finish_reason` is "stop" (end-of-sequence token or a stop word) or "length" (`max_new_tokens` reached).
    `prompt_tokens` counts every prompt token, cached prefix included; `timings` holds seconds:
    `time_to_first_token` and `total`.
    """

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def _check_tool_calls(i: int, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        raise TypeError(f"messages[{i}]['tool_calls'] must be a list of {{'name', 'arguments'}} dicts")
    checked = []
    for j, call in enumerate(calls):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or not call["name"]:
            raise TypeError(f"messages[{i}]['tool_calls'][{j}] must be a dict with a non-empty str 'name'")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise TypeError(f"messages[{i}]['tool_calls'][{j}]['arguments'] must be a dict")
        checked.append({"name": call["name"], "arguments": dict(arguments),
                        **({"id": call["id"]} if call.get("id") is not None else {})})
    return checked


def normalize_messages(messages: Messages) -> list[dict[str, Any]]:
    """A str becomes one user message; a list of {"role", "content"} dicts is checked.

    Roles: system, user, assistant and tool. An assistant message may carry `tool_calls` (a list of
    {"name", "arguments": dict, "id"?}); a tool message's `content` is the tool's result (optional `name`
    and `tool_call_id` say which call it answers).
    """
    if isinstance(messages, str):
        if not messages:
            raise ValueError("messages must not be an empty string")
        return [{"role": "user", "content": check_unicode("messages", messages)}]
    if not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a str or a list of {{'role', 'content'}} dicts, not {type(messages).__name__}")
    if not messages:
        raise ValueError("messages must not be empty")
    checked: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TypeError(f"messages[{i}] must be a dict with str 'role' and 'content'")
        role = message["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"messages[{i}] has role {role!r}; use system, user, assistant or tool")
        content = message.get("content")
        calls = message.get("tool_calls") if role == "assistant" else None
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise TypeError(f"messages[{i}] must be a dict with str 'role' and 'content'")
        check_unicode(f"messages[{i}]['content']", content)
        entry: dict[str, Any] = {"role": role, "content": content}
        if calls:
            entry["tool_calls"] = _check_tool_calls(i, calls)
        if role == "tool":
            entry.update({key: message[key] for key in ("name", "tool_call_id") if message.get(key) is not None})
        checked.append(entry)
    if checked[-1]["role"] == "assistant":
        raise ValueError("messages must end with a user, system or tool message to answer")
    return checked


def normalize_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Tool specs as OpenAI function specs `{"type": "function", "function": {"name", "description", "parameters"}}`;
    a flat `{"name", "description", "parameters"}` dict is wrapped."""
    if tools is None:
        return []
    if isinstance(tools, (str, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError("tools must be a list of tool specs ({'name', 'description', 'parameters'} dicts)")
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise TypeError(f"tools[{i}] must be a dict with a non-empty str 'name' (or an OpenAI function spec)")
        spec = {"name": function["name"], "description": function.get("description") or "",
                "parameters": dict(function.get("parameters") or {"type": "object", "properties": {}})}
        specs.append({"type": "function", "function": spec})
    names = [spec["function"]["name"] for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"tools: duplicate tool names in {names}")
    return specs


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a `tools` list (Qwen2.5, Llama 3.1, SmolLM3, ...)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template


def assistant_text(message: Mapping[str, Any]) -> str:
    """An assistant message as the model writes it in the JSON-in-text tool format: its content, then one
    `templates.tool_call_text` block per call in `tool_calls` (one per line). Without calls: the content."""
    content = message["content"]
    if not message.get("tool_calls"):
        return content
    calls = [templates.tool_call_text(call["name"], call["arguments"]) for call in message["tool_calls"]]
    return "\n".join([content, *calls] if content else calls)


def _text_tool_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping]) -> list[dict[str, str]]:
    """The JSON-in-text tool format (`templates.TOOLS_SYSTEM`): the tool list joins the system text, calls
    become `<tool_call>` blocks in the assistant turn and consecutive tool results one user turn."""
    converted: list[dict[str, str]] = []
    if tools:
        tool_text = templates.tools_system_text(tools)
        if messages and messages[0]["role"] == "system":
            converted.append({"role": "system", "content": f"{messages[0]['content']}\n\n{tool_text}"})
            messages = messages[1:]
        else:
            converted.append({"role": "system", "content": tool_text})
    results: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            results.append(templates.tool_response_text(message["content"]))
            continue
        if results:
            converted.append({"role": "user", "content": "\n".join(results)})
            results = []
        converted.append({"role": message["role"], "content": assistant_text(message)})
    if results:
        converted.append({"role": "user", "content": "\n".join(results)})
    return converted


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as Hugging Face chat templates with tool support take them."""
    converted = []
    for message in messages:
        entry: dict[str, Any] = {"role": message["role"], "content": message["content"]}
        if message.get("tool_calls"):
            entry["tool_calls"] = [{"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]},
                                    **({"id": c["id"]} if "id" in c else {})} for c in message["tool_calls"]]
        for key in ("name", "tool_call_id"):
            if key in message:
                entry[key] = message[key]
        converted.append(entry)
    return converted


def chat_prompt_ids(model: LoadedModel, messages: Messages, tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
    """Token ids of the full chat prompt, ending where the assistant's answer starts.

    `tools` (OpenAI function specs) are rendered by the tokenizer's chat template when it supports them;
    otherwise, and always with the GRIT chat format, in the JSON-in-text format of `templates.TOOLS_SYSTEM`.
    """
    messages = normalize_messages(messages)
    specs = normalize_tools(tools)
    has_tool_turns = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if model.uses_grit_chat_format:
        text_messages = _text_tool_messages(messages, specs) if specs or has_tool_turns else messages
        text = templates.grit_chat_prompt(text_messages, eos_token=model.tokenizer.eos_token or "</s>")
        return model.bos_ids + model.tokenize(text)
    if (specs or has_tool_turns) and template_supports_tools(model.tokenizer):
        encoded = model.tokenizer.apply_chat_template(_template_messages(messages), tools=specs or None,
                                                      add_generation_prompt=True, tokenize=True)
    else:
        text_messages = _text_tool_messages(messages, specs) if specs or has_tool_turns else messages
        encoded = model.tokenizer.apply_chat_template(text_messages, add_generation_prompt=True, tokenize=True)
    ids = encoded["input_ids"] if isinstance(encoded, Mapping) or hasattr(encoded, "keys") else encoded
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


@dataclass
class ParsedToolCalls:
    """What `parse_tool_calls` found in a reply: the text around the calls, the calls
    ({"name", "arguments": dict}) and, for each call that could not be read, a message saying why."""

    text: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_TOOL_CALL_BLOCK = re.compile(re.escape(templates.TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(templates.TOOL_CALL_CLOSE)
                              + r"|$)", re.DOTALL)


def _read_call(payload: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as error:
        return None, f"unparseable tool call {payload.strip()[:200]!r}: {error}"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None, f"tool call without a str 'name': {payload.strip()[:200]!r}"
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as OpenAI's API does
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            return None, f"tool call {data['name']!r}: unparseable arguments {arguments[:200]!r}: {error}"
    if not isinstance(arguments, dict):
        return None, f"tool call {data['name']!r}: arguments must be a JSON object, got {arguments!r}"
    return {"name": data["name"], "arguments": arguments}, None


def parse_tool_calls(text: str) -> ParsedToolCalls:
    """Tool calls in a reply written in the JSON-in-text format (`<tool_call>{"name", "arguments"}</tool_call>`,
    an unclosed last block included). A reply that is nothing but such a JSON object (or a list of them)
    counts too: small models often drop the tags. Calls that cannot be read are reported in `errors`,
    never raised, so a server or agent can tell the model what went wrong."""
    blocks = list(_TOOL_CALL_BLOCK.finditer(text))
    if not blocks:
        stripped = text.strip()
        if stripped.startswith(("{", "[")) and '"name"' in stripped:
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                return ParsedToolCalls(text=text)
            items = data if isinstance(data, list) else [data]
            if items and all(isinstance(item, dict) and "name" in item for item in items):
                parsed = [_read_call(json.dumps(item)) for item in items]
                return ParsedToolCalls(text="", calls=[c for c, _ in parsed if c], errors=[e for _, e in parsed if e])
        return ParsedToolCalls(text=text)
    calls, errors = [], []
    for block in blocks:
        call, error = _read_call(block.group(1))
        if call is not None:
            calls.append(call)
        else:
            errors.append(error)
    remaining = _TOOL_CALL_BLOCK.sub("", text).strip()
    return ParsedToolCalls(text=remaining, calls=calls, errors=errors)


class _CallbackStreamer(BaseStreamer):
    """Decodes new tokens incrementally and hands text deltas to a callback.

    Holds back text that could still become a stop word, and never emits half a UTF-8 character.
    """

    def __init__(self, tokenizer, callback: StreamingCallback | None, stop_words: Sequence[str], skip_prompt: bool):
        self.tokenizer = tokenizer
        self.callback = callback
        self.stop_words = list(stop_words)
        self.holdback = max((len(w) for w in self.stop_words), default=1) - 1
        self.skip_prompt = skip_prompt
        self.tokens: list[int] = []
        self.emitted = 0
        self.first_token_time: float | None = None
        self.stopped = False  # a stop word has appeared in the text

    def put(self, value: torch.Tensor) -> None:
        if self.skip_prompt:  # generate() first passes the prompt itself
            self.skip_prompt = False
            return
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.tokens.extend(value.reshape(-1).tolist())
        text = self.text()
        cut, self.stopped = cut_at_stop_words(text, self.stop_words)  # a stop word inside the new token: up to it
        if self.stopped:
            self._emit(cut)
        elif not text.endswith("\ufffd"):  # never half a UTF-8 character
            self._emit(text[: max(self.emitted, len(text) - self.holdback)])

    def end(self) -> None:
        self._emit(cut_at_stop_words(self.text(), self.stop_words)[0])

    def text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def _emit(self, text: str) -> None:
        text, _ = cut_at_stop_words(text, self.stop_words)
        if len(text) > self.emitted:
            if self.callback is not None:
                self.callback(text[self.emitted :])
            self.emitted = len(text)


def cut_at_stop_words(text: str, stop_words: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop word, and whether one was found."""
    cut = min((p for p in (text.find(w) for w in stop_words) if p >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_streaming_callback(streaming_callback: Any) -> StreamingCallback | None:
    """`streaming_callback` if it is None or callable: checked before generating, since otherwise the first
    generated token is where it fails, after the whole prefill."""
    if streaming_callback is not None and not callable(streaming_callback):
        raise TypeError(f"streaming_callback must be callable, not {type(streaming_callback).__name__}")
    return streaming_callback


def _sampling_warpers(kwargs: Mapping[str, Any], device: torch.device | str) -> LogitsProcessorList:
    """The warpers transformers builds for sampling with one beam (`GenerationMixin._get_logits_processor`),
    from the sampling keys of `generate` keyword arguments."""
    warpers = LogitsProcessorList()
    temperature, top_k, top_p = kwargs.get("temperature"), kwargs.get("top_k"), kwargs.get("top_p")
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if kwargs.get("top_h") is not None:
        warpers.append(TopHLogitsWarper(top_h=kwargs["top_h"]))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    if kwargs.get("min_p") is not None:
        warpers.append(MinPLogitsWarper(min_p=kwargs["min_p"]))
    if kwargs.get("typical_p") is not None and kwargs["typical_p"] < 1.0:
        warpers.append(TypicalLogitsWarper(mass=kwargs["typical_p"]))
    if kwargs.get("epsilon_cutoff") is not None and 0.0 < kwargs["epsilon_cutoff"] < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon=kwargs["epsilon_cutoff"]))
    if kwargs.get("eta_cutoff") is not None and 0.0 < kwargs["eta_cutoff"] < 1.0:
        warpers.append(EtaLogitsWarper(epsilon=kwargs["eta_cutoff"], device=device))
    return warpers


SAMPLING_KEYS = ("temperature", "top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


class _SeededSampler(LogitsProcessor):
    """Samples the next token with the call's own `torch.Generator` and leaves only it for greedy decoding.

    transformers' sampling draws from the process-wide generator, so a seed set with `torch.manual_seed`
    is shared by every thread: concurrent calls interleave their draws and get different text, and
    other code's random state moves. Here generation runs greedily (transformers still applies the
    non-sampling processors such as `repetition_penalty` first), this processor applies the sampling
    warpers itself and turns the scores into a one-hot choice drawn from a generator owned by the call.
    """

    def __init__(self, warpers: LogitsProcessorList, generator: torch.Generator) -> None:
        self.warpers = warpers
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = self.warpers(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)  # (batch, vocab)
        chosen = torch.multinomial(probs, num_samples=1, generator=self.generator)  # (batch, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, chosen, 0.0)


def _static_capacity(cache: Cache | None) -> int | None:
    """Positions a pre-allocated cache can hold, or None for a growing (dynamic) one."""
    if cache is None or not getattr(cache, "is_compileable", False):
        return None
    sizes = [layer.max_cache_len for layer in cache.layers if hasattr(layer, "max_cache_len")]
    return min(sizes) if sizes else None


def decode_compile_config():
    """How `decode_backend="compile"` compiles the decode step: transformers' own compiled forward in `generate`
    (its prompt forward stays eager; each new token runs the compiled one over the pre-allocated cache, with the
    4D mask built outside the graph, so one graph serves every step). Inductor, default mode (no CUDA graphs on
    CPU), shapes static at first and dynamic after the first change of cache size (torch's automatic dynamic
    shapes), so requests of other lengths do not each compile anew. `_compile_all_devices` lets it run on CPU."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=False, dynamic=None, backend="inductor", mode="default")
    config._compile_all_devices = True
    return config


def _token_budget(model: LoadedModel, prefix_length: int, prompt_ids: Sequence[int],
                  options: GenerationOptions) -> tuple[int, int]:
    """(prompt tokens with the cached prefix, new tokens allowed): the checks every backend makes first."""
    if not prompt_ids:
        raise ValueError("prompt_ids must not be empty (the uncached suffix needs at least one token)")
    total = prefix_length + len(prompt_ids)
    if total >= model.context_length:
        raise ValueError(f"the prompt has {total} tokens; the model's context length is {model.context_length}")
    return total, min(options.max_new_tokens, model.context_length - total)


def _eos_ids(eos: int | list[int] | None) -> set[int]:
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _finish_reason(new_tokens: Sequence[int], eos_ids: set[int], stopped_by_word: bool, max_new_tokens: int) -> str:
    hit_eos = bool(new_tokens) and new_tokens[-1] in eos_ids
    return "stop" if hit_eos or stopped_by_word or len(new_tokens) < max_new_tokens else "length"


def generate_ids(
    model: LoadedModel,
    prompt_ids: Sequence[int],
    options: GenerationOptions | Mapping[str, Any] | None = None,
    *,
    past_key_values: Cache | None = None,
    streaming_callback: StreamingCallback | None = None,
    **generation_kwargs: Any,
) -> GenerationResult:
    """Generate after `prompt_ids`; with `past_key_values`, `prompt_ids` is the uncached suffix after it.

    `options` and `generation_kwargs` are `GenerationOptions` (any Hugging Face `GenerationConfig` key,
    plus `stop_words`, `seed` and `decode_backend`); the keywords win. The cache is grown in place by
    generation: pass a copy of anything you want to keep. `decode_backend="compile"` compiles the decode step
    over a pre-allocated cache (`past_key_values` from `kv_cache.compose(..., reserve=n)`, or a fresh one when
    there is no cached prefix); with a growing cache (sliding-window models) or beam search it runs the exact
    path.
    """
    check_streaming_callback(streaming_callback)
    options = as_generation_options(options).merged(generation_kwargs)
    if options.decode_backend == "llama_cpp":
        if past_key_values is not None:
            raise ValueError("decode_backend 'llama_cpp' keeps its own document states and cannot take a torch "
                             "past_key_values; answer through rag.answer, or use decode_backend 'torch'")
        return generate_llama_cpp(model, prompt_ids, options, streaming_callback=streaming_callback)[0]
    stop_words = list(options.stop_words)
    prefix_length = int(past_key_values.get_seq_length()) if past_key_values is not None else 0
    total, max_new_tokens = _token_budget(model, prefix_length, prompt_ids, options)
    beam_search = options.num_beams > 1
    if beam_search and streaming_callback is not None:
        raise ValueError("streaming needs num_beams=1: beam search only knows its answer at the end")
    capacity = _static_capacity(past_key_values)
    if capacity is not None:  # a pre-allocated cache (kv_cache.compose with reserve) bounds the output
        if capacity < total + 1:
            raise ValueError(f"past_key_values has room for {capacity} tokens; the prompt alone needs {total + 1}")
        max_new_tokens = min(max_new_tokens, capacity - total + 1)  # the last new token is never written back

    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model.device)
    attention_mask = torch.ones((1, total), dtype=torch.long, device=model.device)
    streamer = None if beam_search else _CallbackStreamer(model.tokenizer, streaming_callback, stop_words,
                                                          skip_prompt=True)
    kwargs: dict[str, Any] = {"pad_token_id": model.pad_token_id, **options.generate_kwargs(),
                              "max_new_tokens": max_new_tokens, "streamer": streamer}
    if options.sampling and options.seed is not None:
        if beam_search:  # beam sampling keeps transformers' draws from the process-wide generator
            torch.manual_seed(options.seed)
        else:
            generator = torch.Generator(device=model.device).manual_seed(options.seed)
            sampler = _SeededSampler(_sampling_warpers(kwargs, model.device), generator)
            kwargs.update({key: None for key in SAMPLING_KEYS})
            kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    if stop_words:
        kwargs.update(stop_strings=stop_words, tokenizer=model.tokenizer)
    compiled = options.decode_backend == "compile" and not beam_search
    if compiled and past_key_values is None:  # no cached prefix: a pre-allocated cache for the whole answer
        past_key_values = static_cache(model, total + max_new_tokens)
        capacity = _static_capacity(past_key_values)
    if past_key_values is not None:
        kwargs[cache_argument(model.model)] = past_key_values
        if compiled and capacity is not None:
            kwargs.update(disable_compile=False, compile_config=decode_compile_config())
        elif capacity is not None:
            kwargs["disable_compile"] = True  # the exact path: eager forwards at every step

    start = time.perf_counter()
    with torch.inference_mode():
        output = model.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    end = time.perf_counter()
    new_tokens = output[0, input_ids.shape[1] :].tolist()
    text, stopped_by_word = cut_at_stop_words(model.tokenizer.decode(new_tokens, skip_special_tokens=True), stop_words)
    eos_ids = _eos_ids(kwargs.get("eos_token_id", model.model.generation_config.eos_token_id))
    finish = _finish_reason(new_tokens, eos_ids, stopped_by_word, max_new_tokens)
    first = (streamer.first_token_time if streamer is not None else None) or end
    return GenerationResult(text=text, finish_reason=finish,
                            prompt_tokens=total, completion_tokens=len(new_tokens),
                            timings={"time_to_first_token": first - start, "total": end - start})


# What decode_backend="llama_cpp" reads of the options: the rest (beam search, other processors) is the torch path's.
LLAMA_CPP_KEYS = frozenset({"max_new_tokens", "do_sample", "repetition_penalty", "stop_words", "seed", "decode_backend",
                            *SAMPLING_KEYS})


def generate_llama_cpp(
    model: LoadedModel,
    suffix_ids: Sequence[int],
    options: GenerationOptions,
    *,
    prefix_ids: Sequence[int] | None = None,
    source: str = "causal",
    prefix_states: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    streaming_callback: StreamingCallback | None = None,
) -> tuple[GenerationResult, bool]:
    """Generate with llama.cpp (`decode_backend="llama_cpp"`, `llama_engine`): after `prefix_ids` (a cached text,
    restored from the engine's store of saved states or computed from `source` and stored; or, with
    `prefix_states`, those states written into llama.cpp's cells: per layer (keys, values) in transformers'
    layout, e.g. several cached texts composed by `kv_cache.compose_states`) and `suffix_ids`.
    Greedy, or sampled with the torch path's own warpers and seeded generator over llama.cpp's logits.
    Returns the result and whether the prefix came from the engine's store."""
    from grit_components.llama_engine import engine_for

    unsupported = sorted(set(options) - LLAMA_CPP_KEYS)
    if unsupported:
        raise ValueError(f"decode_backend 'llama_cpp' does not apply {unsupported}; it applies {sorted(LLAMA_CPP_KEYS)}"
                         " (use decode_backend 'torch' for the others)")
    prefix = list(prefix_ids or [])
    total, max_new_tokens = _token_budget(model, len(prefix), suffix_ids, options)
    kwargs = options.generate_kwargs()
    processors = LogitsProcessorList()
    if kwargs.get("repetition_penalty") not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(kwargs["repetition_penalty"]))
    if options.sampling:
        generator = torch.Generator()
        if options.seed is not None:
            generator.manual_seed(options.seed)
        else:
            generator.seed()
        processors.append(_SeededSampler(_sampling_warpers(kwargs, "cpu"), generator))
    eos_ids = _eos_ids(model.model.generation_config.eos_token_id)
    stop_words = list(options.stop_words)
    streamer = _CallbackStreamer(model.tokenizer, streaming_callback, stop_words, skip_prompt=False)
    engine = engine_for(model)
    start = time.perf_counter()
    new_tokens: list[int] = []
    with engine.lock:
        if prefix_states is not None:
            logits, hit = engine.start_from_states(prefix, prefix_states, suffix_ids), False
        else:
            logits, hit = engine.start(prefix, source, suffix_ids)
        seen = [*prefix, *suffix_ids]
        while True:
            scores = torch.from_numpy(logits)[None]
            if processors:
                scores = processors(torch.tensor([seen]), scores)
            token = int(scores.argmax())
            new_tokens.append(token)
            seen.append(token)
            streamer.put(torch.tensor([token]))
            if token in eos_ids or len(new_tokens) >= max_new_tokens or streamer.stopped:
                break
            logits = engine.step(token)
    end = time.perf_counter()
    streamer.end()
    text, _ = cut_at_stop_words(model.tokenizer.decode(new_tokens, skip_special_tokens=True), stop_words)
    finish = _finish_reason(new_tokens, eos_ids, streamer.stopped, max_new_tokens)
    first = streamer.first_token_time or end
    return GenerationResult(text=text, finish_reason=finish, prompt_tokens=total, completion_tokens=len(new_tokens),
                            timings={"time_to_first_token": first - start, "total": end - start}), hit


def generate(
    model: LoadedModel,
    messages: Messages,
    options: GenerationOptions | Mapping[str, Any] | None = None,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    streaming_callback: StreamingCallback | None = None,
    **generation_kwargs: Any,
) -> GenerationResult:
    """Answer a chat.

    :param messages: a user message as str, or a list of {"role": "system"|"user"|"assistant"|"tool", "content"}
        (see `normalize_messages` for tool calls and results).
    :param options: generation parameters, a `GenerationOptions` or a dict: any Hugging Face
        `GenerationConfig` key (`max_new_tokens`, `temperature`, `top_p`, `repetition_penalty`, ...) plus
        `stop_words` (the text stops before the first one) and `seed` (reproducible sampling). Greedy by
        default (`temperature` 0); `max_new_tokens` defaults to 256 and is capped by the context length.
    :param tools: tool specs the model may call (see `chat_prompt_ids`); read the calls from the reply
        with `parse_tool_calls`.
    :param streaming_callback: called with each new piece of text as it is generated.
    :param generation_kwargs: the same parameters as keywords; they win over `options`. A `seed` (an int in
        [0, 2**64)) drives a random generator of this call only: the same seed gives the same text under
        concurrent calls, and the process-wide torch generator is neither used nor changed (except for beam
        sampling, `num_beams` > 1, which transformers draws from the process-wide generator).
    :returns: a `GenerationResult` with text, finish reason, token usage and timings.
    """
    return generate_ids(model, chat_prompt_ids(model, messages, tools), options, streaming_callback=streaming_callback,
                        **generation_kwargs)

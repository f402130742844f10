# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""A question as the inputs of a RAG pipeline run, and which components give its answer.

The question goes to the sockets of the YAML's declared `question` input (hayhooks' `inputs`), else to
every open `text`, `query` or `question` input. A separate retrieval text goes to the search instead (the
embedders, a ranker's `query`); the conversation so far (`history`) goes to the prompt builder or the
generator, never to the search; generation overrides go to the `GritChatGenerator` (`run_inputs`). The
answer's sources are the documents of `documents_component`.

Imports Haystack: import this module only where Haystack is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from haystack import Pipeline
from haystack.dataclasses import ChatMessage

from grit_components._checks import check_unicode
from haystack_integrations.common.grit.build import DECLARED_IO_ATTRIBUTE, PipelineSetupError

QUESTION_INPUTS = ("text", "query", "question")


def _open_inputs(pipeline: Pipeline) -> dict[str, dict[str, dict]]:
    return pipeline.inputs()


def expand_declared_inputs(pipeline: Pipeline, data: dict[str, Any]) -> dict[str, Any]:
    """`data` with every top-level key that names a declared input (`question`, `sources`) given to the sockets
    it fans out to, as hayhooks does: {"question": q} -> {"query_embedder": {"text": q}, ...}. Other entries
    stay as they are (Haystack gives a top-level name to every component with that open input)."""
    declared = (getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}).get("inputs", {})
    expanded: dict[str, Any] = {}
    for key, value in data.items():
        if key in declared and not isinstance(value, dict):
            for target in declared[key]:
                component_name, socket = target.split(".", 1)
                expanded.setdefault(component_name, {})[socket] = value
        elif isinstance(value, dict) and isinstance(expanded.get(key), dict):
            expanded[key].update(value)
        else:
            expanded[key] = value
    return expanded


def _question_targets(pipeline: Pipeline) -> list[tuple[str, str]]:
    """(component, socket) pairs that take the question: the declared `question` input, else every open
    `text`, `query` or `question` input (a pipeline built without `load_pipeline` or declarations)."""
    declared = getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}
    targets = declared.get("inputs", {}).get("question")
    if targets:
        return [tuple(target.split(".", 1)) for target in targets]  # type: ignore[misc]
    return [(name, socket) for name, sockets in _open_inputs(pipeline).items()
            for socket in QUESTION_INPUTS if socket in sockets]


ROLES = ("system", "user", "assistant")
HISTORY_VARIABLE = "grit_history"
HISTORY_LEAD = "Earlier in this conversation:"


def check_history(history: Sequence[dict[str, Any]] | None) -> list[dict[str, str]]:
    """`history` as {"role", "content"} dicts with roles system, user or assistant (a ValueError/TypeError
    naming the bad entry otherwise)."""
    if history is None:
        return []
    if isinstance(history, (str, dict)) or not isinstance(history, Sequence):
        raise TypeError("history must be a list of {'role', 'content'} messages")
    checked = []
    for i, message in enumerate(history):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TypeError(f"history[{i}] must be a dict with str 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise ValueError(f"history[{i}] has role {message.get('role')!r}; use system, user or assistant")
        check_unicode(f"history[{i}]['content']", message["content"])  # the tokenizer's own error names neither
        checked.append({"role": message["role"], "content": message["content"]})
    return checked


def _history_template(template: Any, history: list[dict[str, str]]) -> Any:
    """A ChatPromptBuilder template with the conversation's earlier turns before it. The turns' texts are
    template variables, never template text, so a message containing `{{` is shown as written."""
    turns = [(m["role"], f"{{{{ {HISTORY_VARIABLE}[{i}] }}}}") for i, m in enumerate(history)]
    if isinstance(template, str):
        return "".join(f'{{% message role="{role}" %}}{text}{{% endmessage %}}\n' for role, text in turns) + template
    prefix = [ChatMessage.from_assistant(history[i]["content"]) if role == "assistant"
              else ChatMessage.from_system(text) if role == "system" else ChatMessage.from_user(text)
              for i, (role, text) in enumerate(turns)]
    return [*prefix, *template]


def _history_text(history: list[dict[str, str]], question: str) -> str:
    lines = [f"{message['role'].capitalize()}: {message['content']}" for message in history]
    return "\n".join([HISTORY_LEAD, *lines, "", question])


def _searches(pipeline: Pipeline, name: str, socket: str) -> bool:
    """Whether `name.socket` is part of the search: a `text` input (embedders) or the `query` of a ranker
    (a component with a `documents` input and output)."""
    if socket == "text":
        return True
    node = pipeline.graph.nodes[name]
    return socket == "query" and "documents" in node["input_sockets"] and "documents" in node["output_sockets"]


def question_inputs(pipeline: Pipeline, question: str, retrieval_text: str | None = None,
                    history: Sequence[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Pipeline input data giving `question` to the sockets of the declared `question` input (the YAML's
    hayhooks `inputs`), or to every open `text`, `query` or `question` input when none is declared.

    With `retrieval_text`, the search gets it instead of the question: the embedders' `text` input and a
    ranker's `query` (a component taking `query` and `documents` and returning `documents`). What is
    searched for may differ from what is asked, e.g. a description to look up and a question about it;
    the prompt and the generator still get the question.

    With `history` (the conversation before `question`: system, user and assistant messages), retrieval and
    reranking still use the question alone, and the answer sees the whole conversation: a `ChatPromptBuilder`
    gets the turns before its template; a generator answering `query` directly (the cache modes) gets them
    as text before the question.
    """
    from haystack.components.builders import ChatPromptBuilder

    from haystack_integrations.components.generators.grit import GritChatGenerator

    history = check_history(history)
    data: dict[str, dict[str, Any]] = {}
    for name, socket in _question_targets(pipeline):
        value = retrieval_text if retrieval_text is not None and _searches(pipeline, name, socket) else question
        instance = pipeline.get_component(name)
        if history and isinstance(instance, ChatPromptBuilder):
            data.setdefault(name, {})["template"] = _history_template(instance.template, history)
            data[name]["template_variables"] = {HISTORY_VARIABLE: [m["content"] for m in history]}
        elif history and isinstance(instance, GritChatGenerator) and socket == "query":
            value = _history_text(history, question)
        data.setdefault(name, {})[socket] = value
    if not data:
        raise PipelineSetupError("the pipeline has no open `text`, `query` or `question` input for the question")
    return data


def final_documents_component(pipeline: Pipeline) -> str | None:
    """The component whose `documents` output feeds the prompt or generator (the last ranking stage)."""
    producers = {name for name, node in pipeline.graph.nodes(data=True) if "documents" in node["output_sockets"]}
    for sender, receiver, data in pipeline.graph.edges(data=True):
        if sender in producers and receiver not in producers and data["from_socket"].name == "documents":
            return sender
    return next(iter(producers), None)


def documents_component(pipeline: Pipeline) -> str | None:
    """The component whose documents are the answer's sources: the declared `documents` output, else
    `final_documents_component`."""
    declared = (getattr(pipeline, DECLARED_IO_ATTRIBUTE, None) or {}).get("outputs", {}).get("documents")
    return declared[0].split(".", 1)[0] if declared else final_documents_component(pipeline)


def generator_component(pipeline: Pipeline) -> str | None:
    """The name of the pipeline's `GritChatGenerator` (the one whose replies are the answer)."""
    from haystack_integrations.components.generators.grit import GritChatGenerator

    return next((name for name, instance in pipeline.walk() if isinstance(instance, GritChatGenerator)), None)


def run_inputs(pipeline: Pipeline, question: str, *, retrieval_text: str | None = None,
               history: Sequence[dict[str, Any]] | None = None,
               generation_kwargs: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """What `ask` gives `pipeline.run`: `question_inputs`, plus `generation_kwargs` for the generator."""
    if not isinstance(question, str) or not question.strip():
        raise PipelineSetupError("the question must be a non-empty string")
    data = question_inputs(pipeline, question, retrieval_text, history)
    if generation_kwargs:
        generator = generator_component(pipeline)
        if generator is None:
            raise PipelineSetupError("generation_kwargs given, but the pipeline has no GritChatGenerator")
        data.setdefault(generator, {})["generation_kwargs"] = dict(generation_kwargs)
    return data

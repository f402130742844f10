"""Training data in GRIT format: embedding records, generative (chat) records, and where they come from.

Embedding record (one JSON object per line):
    {"query": "text" | ["instruction", "text"], "pos": [text, ...], "neg": [text, ...], "dataset": "name"}
where every text is a str or an [instruction, text] pair; a bare str gets the default instruction of its
side (queries: the query instruction, passages: none). `neg` and `dataset` are optional.

Generative record:
    {"messages": [{"role": "user" | "assistant" | "system", "content": "..."}, ...]}   or
    {"turns": ["user text", "assistant text", "user text", "assistant text", ...]}
ending with an assistant message. The loss covers assistant tokens only (see `collator`).
A record with tool use adds `"tools": [OpenAI function specs]`; its assistant messages may carry
`"tool_calls": [{"name": ..., "arguments": {...}}]` and `tool` messages hold the results, as
`generation.normalize_messages` and `chat_prompt_ids(model, messages, tools)` take them at inference.

Every record is validated when loaded; bad ones are reported with their line (or row) number and either
stop the load (`on_error="raise"`) or are skipped with one warning listing them (`on_error="skip"`).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grit_components import templates
from grit_components._checks import check_choice, check_int, check_unicode

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel

# (instruction, text); instruction None = the default instruction of that side (query or passage).
Text = tuple[str | None, str]
DEFAULT_RAG_QUESTION = "What is described as '{query}'?"


class RecordError(ValueError):
    """A training record is malformed; the message starts with where it is (`file:line` or `row N`)."""


class BadRecordsWarning(UserWarning):
    """Some records were skipped (`on_error="skip"`); the message lists where they are."""


@dataclass(frozen=True)
class EmbeddingRecord:
    """One query with its positive passages and (optional) hard negatives, from one named dataset."""

    query: Text
    pos: tuple[Text, ...]
    neg: tuple[Text, ...] = ()
    dataset: str = "default"


@dataclass(frozen=True)
class ChatRecord:
    """A conversation ending with an assistant turn; every assistant turn is a training target.

    `tools` holds the tool specs offered in the conversation (OpenAI function specs, as
    `generation.normalize_tools` returns them); assistant messages may then carry `tool_calls`
    ([{"name", "arguments": dict}]) and `tool` messages the results.
    """

    messages: tuple[dict[str, Any], ...]
    dataset: str = "default"
    tools: tuple[dict[str, Any], ...] = ()


@dataclass
class LoadReport:
    """What a loader kept and skipped: `errors` holds one message per skipped record."""

    kept: int = 0
    errors: list[str] = field(default_factory=list)


def _text(value: Any, what: str) -> Text:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{what} is an empty string")
        return (None, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        if not value[1].strip():
            raise ValueError(f"{what} has an empty text")
        return (value[0], value[1])
    raise ValueError(f"{what} must be a str or an [instruction, text] pair of str, not {type(value).__name__} {value!r:.60}")


def _texts(value: Any, what: str, *, required: bool) -> tuple[Text, ...]:
    if value is None and not required:
        return ()
    if isinstance(value, str):  # one passage given without a list
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"'{what}' must be a list of texts, not {type(value).__name__}")
    if required and not value:
        raise ValueError(f"'{what}' must hold at least one text")
    return tuple(_text(v, f"'{what}'[{i}]") for i, v in enumerate(value))


def parse_embedding_record(obj: Any, *, dataset: str = "default") -> EmbeddingRecord:
    """Validate one embedding record (a dict); raises ValueError saying what is wrong."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"record must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - {"query", "pos", "neg", "dataset"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; an embedding record has query, pos, neg, dataset")
    if "query" not in obj:
        raise ValueError("missing 'query'")
    if "pos" not in obj:
        raise ValueError("missing 'pos'")
    name = obj.get("dataset", dataset)
    if not isinstance(name, str) or not name:
        raise ValueError("'dataset' must be a non-empty str")
    return EmbeddingRecord(_text(obj["query"], "'query'"), _texts(obj["pos"], "pos", required=True),
                           _texts(obj.get("neg"), "neg", required=False), name)


def _chat_tools(value: Any) -> tuple[dict[str, Any], ...]:
    from grit_components.generation import normalize_tools

    if not isinstance(value, list):
        raise ValueError(f"'tools' must be a list of tool specs (OpenAI function specs), not {type(value).__name__}")
    for i, tool in enumerate(value):
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        parameters = function.get("parameters") if isinstance(function, Mapping) else None
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ValueError(f"'tools'[{i}] 'parameters' must be a JSON schema object, not {type(parameters).__name__}")
    try:
        return tuple(normalize_tools(value))
    except (TypeError, ValueError) as error:
        raise ValueError(f"'tools': {error}") from None


def _chat_tool_calls(i: int, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise ValueError(f"message {i} 'tool_calls' must be a list of {{name, arguments}} objects, "
                         f"not {type(calls).__name__}")
    checked = []
    for j, call in enumerate(calls):
        if not isinstance(call, Mapping):
            raise ValueError(f"message {i} 'tool_calls'[{j}] must be an object with 'name' and 'arguments', "
                             f"not {type(call).__name__}")
        unknown = sorted(set(call) - {"name", "arguments", "id"})
        if unknown:
            raise ValueError(f"message {i} 'tool_calls'[{j}] has unknown key(s) {unknown}; a call has name, arguments, id")
        if not isinstance(call.get("name"), str) or not call["name"].strip():
            raise ValueError(f"message {i} 'tool_calls'[{j}] 'name' must be a non-empty str")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise ValueError(f"message {i} 'tool_calls'[{j}] 'arguments' must be an object (dict), "
                             f"not {type(arguments).__name__}")
        if call.get("id") is not None and not isinstance(call["id"], str):
            raise ValueError(f"message {i} 'tool_calls'[{j}] 'id' must be a str")
        checked.append({"name": call["name"], "arguments": dict(arguments),
                        **({"id": call["id"]} if call.get("id") is not None else {})})
    return checked


def _chat_message(i: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise ValueError(f"message {i} must be an object with 'role' and 'content', not {type(message).__name__}")
    role = message.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise ValueError(f"message {i} has role {role!r}; use system, user, assistant or tool")
    content = message.get("content")
    calls = message.get("tool_calls")
    if calls is not None and role != "assistant":
        raise ValueError(f"message {i} has 'tool_calls' but role {role!r}; only assistant messages call tools")
    calls = _chat_tool_calls(i, calls) if calls is not None else []
    if content is None and calls:
        content = ""
    if not isinstance(content, str):
        raise ValueError(f"message {i} must have a str 'content', not {type(content).__name__}")
    check_unicode(f"message {i} 'content'", content)
    if not content.strip() and not calls:
        raise ValueError(f"message {i} has empty content" + (" and no 'tool_calls'" if role == "assistant" else ""))
    entry: dict[str, Any] = {"role": role, "content": content}
    if calls:
        entry["tool_calls"] = calls
    if role == "tool":
        for key in ("name", "tool_call_id"):
            if message.get(key) is not None:
                if not isinstance(message[key], str) or not message[key]:
                    raise ValueError(f"message {i} '{key}' must be a non-empty str")
                entry[key] = message[key]
    return entry


def parse_chat_record(obj: Any, *, dataset: str = "default") -> ChatRecord:
    """Validate one generative record (`messages` or alternating `turns`, optional `tools`); raises ValueError."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"record must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - {"messages", "turns", "tools", "dataset"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; a generative record has messages (or turns), tools, dataset")
    if ("messages" in obj) == ("turns" in obj):
        raise ValueError("give exactly one of 'messages' or 'turns'")
    if "turns" in obj:
        turns = obj["turns"]
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            raise ValueError("'turns' must be a non-empty list of alternating user/assistant texts (even length)")
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    else:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    tools = _chat_tools(obj["tools"]) if obj.get("tools") is not None else ()
    checked = [_chat_message(i, message) for i, message in enumerate(messages)]
    offered = {tool["function"]["name"] for tool in tools}
    for i, message in enumerate(checked):
        if message["role"] == "tool" and (i == 0 or not (checked[i - 1].get("tool_calls") or checked[i - 1]["role"] == "tool")):
            raise ValueError(f"message {i} is a tool result that follows no assistant message with 'tool_calls'")
        for j, call in enumerate(message.get("tool_calls", ())):
            if tools and call["name"] not in offered:
                raise ValueError(f"message {i} 'tool_calls'[{j}] calls {call['name']!r}, which is not in the "
                                 f"record's 'tools' {sorted(offered)}")
    if checked[-1]["role"] != "assistant":
        raise ValueError("the last message must be an assistant turn (the training target)")
    if not any(m["role"] == "user" for m in checked):
        raise ValueError("there is no user turn")
    name = obj.get("dataset", dataset)
    if not isinstance(name, str) or not name:
        raise ValueError("'dataset' must be a non-empty str")
    return ChatRecord(tuple(checked), name, tools)


def _rows(source: Any) -> tuple[Iterable[tuple[str, Any]], str]:
    """(location, object) pairs of a JSONL path, a `datasets.Dataset` or a list of dicts; and a default name."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")

        def lines():
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except json.JSONDecodeError as error:
                        yield f"{path}:{number}", RecordError(f"not valid JSON ({error.msg})")

        return lines(), path.stem
    if isinstance(source, Sequence) or type(source).__name__ in ("Dataset", "IterableDataset"):
        # datasets.Dataset rows are dicts; None-valued columns come from heterogeneous rows: drop them.
        return ((f"row {i}", {k: v for k, v in row.items() if v is not None} if isinstance(row, Mapping) else row)
                for i, row in enumerate(source)), "default"
    raise TypeError(f"source must be a JSONL path, a datasets.Dataset or a list of dicts, not {type(source).__name__}")


def _load(source, parse, on_error: str, dataset: str | None, max_records: int | None):
    check_choice("on_error", on_error, ("raise", "skip"))
    if max_records is not None:
        check_int("max_records", max_records, minimum=1)
    rows, default_name = _rows(source)
    records, report = [], LoadReport()
    for where, obj in rows:
        try:
            if isinstance(obj, RecordError):
                raise obj
            records.append(parse(obj, dataset=dataset or default_name))
        except ValueError as error:
            message = f"{where}: {error}"
            if on_error == "raise":
                raise RecordError(message) from None
            report.errors.append(message)
            continue
        if max_records is not None and len(records) >= max_records:
            break
    report.kept = len(records)
    if report.errors:
        shown = "\n  ".join(report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        warnings.warn(f"skipped {len(report.errors)} bad record(s):\n  {shown}{more}", BadRecordsWarning, stacklevel=3)
    return records, report


def load_embedding_records(source, *, on_error: str = "raise", dataset: str | None = None,
                           max_records: int | None = None) -> list[EmbeddingRecord]:
    """Load and validate embedding records.

    :param source: a JSONL file path, a `datasets.Dataset`, or a list of dicts.
    :param on_error: "raise" (stop at the first bad record, `RecordError` naming its line) or "skip"
        (drop bad records; one `BadRecordsWarning` lists them all by line).
    :param dataset: dataset name for records without a "dataset" key (default: the file name stem).
    :param max_records: keep at most this many (valid) records.
    """
    return _load(source, parse_embedding_record, on_error, dataset, max_records)[0]


def load_chat_records(source, *, on_error: str = "raise", dataset: str | None = None,
                      max_records: int | None = None) -> list[ChatRecord]:
    """Load and validate generative records; parameters as in `load_embedding_records`."""
    return _load(source, parse_chat_record, on_error, dataset, max_records)[0]


def beir_embedding_records(data_dir, *, split: str = "train", corpus_file: str | None = None,
                           dataset: str | None = None, max_records: int | None = None,
                           query_instruction: str | None = None) -> tuple[list[EmbeddingRecord], list[str]]:
    """Queries + qrels + corpus of a BEIR-layout folder -> embedding records (no negatives yet).

    Passages are the corpus entries as retrieval indexes them ("title text"). Returns the records and the
    corpus texts (for hard-negative mining).
    """
    from grit_components.evaluation.data import load_beir

    beir = load_beir(data_dir, split=split, corpus_file=corpus_file)
    name = dataset or beir.name or "beir"
    records = []
    for query_id, text in beir.queries.items():
        positives = tuple((None, beir.document_text(d)) for d, score in beir.qrels[query_id].items() if score > 0)
        if positives and text.strip():
            records.append(EmbeddingRecord((query_instruction, text), positives, (), name))
        if max_records is not None and len(records) >= max_records:
            break
    return records, [beir.document_text(d) for d in beir.corpus]


def beir_rag_records(data_dir, *, split: str = "train", corpus_file: str | None = None, dataset: str | None = None,
                     max_records: int | None = None, question: str = DEFAULT_RAG_QUESTION,
                     max_passage_words: int | None = 150, skip: int = 0) -> list[ChatRecord]:
    """RAG answers built from a BEIR split: user turn = gold passage + question (the uncached doc-first RAG
    prompt of `templates.rag_user_content`), assistant turn = the passage title.

    :param question: question template with a `{query}` field.
    :param max_passage_words: cut passages to this many words (keeps sequences short on CPU); None keeps all.
    :param skip: skip the first `skip` queries (e.g. to take generative data from queries not used otherwise).
    """
    from grit_components.evaluation.data import load_beir

    if "{query}" not in question:
        raise ValueError("question must contain a '{query}' field")
    beir = load_beir(data_dir, split=split, corpus_file=corpus_file)
    name = dataset or f"{beir.name or 'beir'}-rag"
    records = []
    for query_id, text in list(beir.queries.items())[skip:]:
        doc_id = max(beir.qrels[query_id], key=beir.qrels[query_id].get)
        doc = beir.corpus[doc_id]
        if not doc.get("title"):
            continue
        passage = beir.document_text(doc_id)
        if max_passage_words is not None:
            passage = " ".join(passage.split()[:max_passage_words])
        user = templates.rag_user_content("none", question.format(query=text), passage)
        records.append(ChatRecord(({"role": "user", "content": user}, {"role": "assistant", "content": doc["title"]}), name))
        if max_records is not None and len(records) >= max_records:
            break
    return records


def _bm25_top(corpus: Sequence[str], queries: Sequence[str], k: int) -> list[list[int]]:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False), show_progress=False)
    ids, _ = retriever.retrieve(bm25s.tokenize(list(queries), stopwords="en", show_progress=False),
                                k=min(k, len(corpus)), show_progress=False)
    return [list(map(int, row)) for row in ids]


def _grit_top(model: GritModel, corpus: Sequence[str], queries: Sequence[Text], k: int, query_instruction: str,
              max_length: int, batch_size: int) -> list[list[int]]:
    import numpy as np

    docs = model.embed(list(corpus), batch_size=batch_size, max_length=max_length, progress_bar=True)
    groups: dict[str, list[int]] = {}
    for i, (instruction, _) in enumerate(queries):
        groups.setdefault(query_instruction if instruction is None else instruction, []).append(i)
    q = np.zeros((len(queries), docs.shape[1]), dtype=np.float32)
    for instruction, rows in groups.items():
        q[rows] = model.embed([queries[i][1] for i in rows], instruction=instruction, batch_size=batch_size,
                              max_length=max_length)
    scores = q @ docs.T
    k = min(k, len(corpus))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return [list(row[np.argsort(-scores[i, row])]) for i, row in enumerate(top)]


def mine_hard_negatives(records: Sequence[EmbeddingRecord], corpus: Sequence[str], *, method: str = "bm25",
                        num_negatives: int = 7, skip_top: int = 0, model: GritModel | None = None,
                        query_instruction: str = "", max_length: int = 256, batch_size: int = 32,
                        seed: int = 0) -> list[EmbeddingRecord]:
    """Add hard negatives: the corpus passages ranked highest for each query that are not its positives.

    :param method: "bm25" (bm25s over the corpus) or "grit" (a GRIT model's embeddings; pass `model`).
    :param num_negatives: negatives kept per query (existing ones are kept and counted).
    :param skip_top: ignore this many top non-positive hits (they are often unlabelled positives).
    :param query_instruction: instruction for queries without their own (method "grit").
    :returns: new records; each gets up to `num_negatives` negatives, sampled in rank order.
    """
    check_choice("method", method, ("bm25", "grit"))
    check_int("num_negatives", num_negatives, minimum=0)
    check_int("skip_top", skip_top, minimum=0)
    corpus = list(corpus)
    if not corpus:
        raise ValueError("corpus must not be empty")
    if method == "grit" and model is None:
        raise ValueError("method='grit' needs model (a GritModel)")
    if not records or num_negatives == 0:
        return list(records)
    depth = skip_top + num_negatives + max(len(r.pos) for r in records) + 1
    if method == "bm25":
        top = _bm25_top(corpus, [r.query[1] for r in records], depth)
    else:
        top = _grit_top(model, corpus, [r.query for r in records], depth, query_instruction, max_length, batch_size)
    rng = random.Random(seed)
    out = []
    for record, hits in zip(records, top):
        positives = {text for _, text in record.pos}
        candidates = [corpus[i] for i in hits if corpus[i] not in positives][skip_top:]
        have = list(record.neg)
        seen = {text for _, text in have}
        for text in candidates:
            if len(have) >= num_negatives:
                break
            if text not in seen:
                have.append((None, text))
                seen.add(text)
        rng.shuffle(have)
        out.append(EmbeddingRecord(record.query, record.pos, tuple(have), record.dataset))
    return out


def write_jsonl(records: Iterable[EmbeddingRecord | ChatRecord], path) -> int:
    """Write records in the JSONL format the loaders read; returns the count."""
    def text(item: Text):
        return item[1] if item[0] is None else [item[0], item[1]]

    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            if isinstance(record, EmbeddingRecord):
                obj = {"query": text(record.query), "pos": [text(t) for t in record.pos],
                       "neg": [text(t) for t in record.neg], "dataset": record.dataset}
            else:
                obj = {"messages": list(record.messages), "dataset": record.dataset,
                       **({"tools": list(record.tools)} if record.tools else {})}
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count

"""`grit index`, `grit ask`, `grit run` and `grit demo`: the Haystack YAML pipelines from the command line.

The pipelines module of the Haystack integration (`haystack_integrations.common.grit.pipelines`) is
imported inside the commands, so `grit embed/chat` keep working without the `haystack` extra.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from grit_components.cli._common import console, fail
from grit_components.models import DEFAULT_MODEL

WIKIDESC_INSTRUCTION = "Given a short description, retrieve the Wikipedia passage about the entity it describes"

PipelineOption = Annotated[str, typer.Option("--pipeline", "-p", help="A bundled pipeline name or a YAML file.")]
DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Where embedded Qdrant (qdrant/) and KV caches (kv/) live [env GRIT_DATA_DIR; default: "
    "the YAML's paths, .grit/ in the working directory].")]
QdrantUrlOption = Annotated[Optional[str], typer.Option(
    "--qdrant-url", help="Use this Qdrant server instead of embedded Qdrant [env GRIT_QDRANT_URL].")]
ModelOverride = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Replace the model of every GRIT component (default: the YAML's).")]
InstructionOption = Annotated[Optional[str], typer.Option(help="Query instruction of the query embedder.")]


def _haystack():
    """The pipelines module, or a clear error when the haystack extra is missing."""
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    try:
        from haystack_integrations.common.grit import pipelines
    except ModuleNotFoundError as error:
        fail(f"{error}; install the Haystack extra: pip install 'grit-components[haystack]'")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return pipelines


def _load(hp, pipeline: str, *, data_dir: Path | None, qdrant_url: str | None, model: str | None,
          instruction: str | None = None):
    from grit_components.models import ModelNotAvailableError

    try:
        with console.status(f"Loading pipeline {pipeline} ..."):
            return hp.load_pipeline(pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                                    instruction=instruction)
    except (hp.PipelineSetupError, ModelNotAvailableError, OSError) as error:
        fail(str(error))


def _require_documents(hp, built) -> None:
    for store in hp.document_stores(built):
        if store.count_documents() == 0:
            hp.close_pipeline(built)
            fail(f"nothing is indexed in Qdrant collection {store.index!r} at "
                 f"{store.url or store.path or store.location}: run `grit index <files>` first "
                 "(with the same --data-dir / --qdrant-url)")


def _source_line(rank: int, doc) -> str:
    name = doc.meta.get("title") or doc.meta.get("file_path") or doc.id[:12]
    snippet = " ".join((doc.content or "").split())
    snippet = snippet[:90] + ("..." if len(snippet) > 90 else "")
    score = f"{doc.score:.3f}" if doc.score is not None else "-"
    return f"  [{rank}] {score}  {name}: {snippet}"


def _timings_line(timings: dict[str, float]) -> str:
    parts = [f"{name} {seconds:.2f}s" for name, seconds in timings.items() if name != "total"]
    return f"  timings: {', '.join(parts)}; total {timings['total']:.2f}s"


def _print_answer(answer, expected: str | None = None) -> None:
    print(f"\nQ: {answer.question}")
    print(f"A: {answer.text}" + (f"   (expected: {expected})" if expected else ""))
    print("  sources:")
    for rank, doc in enumerate(answer.sources, 1):
        print(_source_line(rank, doc))
    print(_timings_line(answer.timings))


def _ask_many(hp, pipeline, questions: list[str], expected: list[str | None] | None = None,
              retrieval_texts: list[str] | None = None) -> list:
    answers = []
    for i, question in enumerate(questions):
        try:
            answer = hp.ask(pipeline, question, retrieval_text=retrieval_texts[i] if retrieval_texts else None)
        except hp.PipelineSetupError as error:
            fail(str(error))
        _print_answer(answer, expected[i] if expected else None)
        answers.append(answer)
    return answers


def _index(hp, pipeline, files: list[Path], meta=None):
    try:
        result = hp.index_files(pipeline, files, meta=meta)
    except hp.PipelineSetupError as error:
        fail(str(error))
    console.print(f"indexed {result.files} files: {result.documents_written} chunks written in "
                  f"{result.seconds:.1f}s; the collection holds {result.documents_in_store} documents")
    return result


def index(
    paths: Annotated[list[Path], typer.Argument(help="Files (.txt, .md, .pdf) or folders to index.")],
    pipeline: PipelineOption = "indexing",
    data_dir: DataDirOption = None,
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
) -> None:
    """Index files or folders into Qdrant through an indexing pipeline (re-indexing a file replaces it)."""
    hp = _haystack()
    try:
        files = hp.collect_files(paths)
    except hp.PipelineSetupError as error:
        fail(str(error))
    if not files:
        fail(f"no {', '.join(hp.FILE_SUFFIXES)} files found in {', '.join(map(str, paths))}")
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model)
    try:
        _index(hp, built, files)
    finally:
        hp.close_pipeline(built)


def ask(
    question: Annotated[list[str], typer.Argument(help="One or more questions.")],
    pipeline: PipelineOption = "rag",
    data_dir: DataDirOption = None,
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
    instruction: InstructionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per answer.")] = False,
) -> None:
    """Answer questions with a RAG pipeline: answer, sources with scores, timings."""
    hp = _haystack()
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model, instruction=instruction)
    _require_documents(hp, built)
    try:
        if not as_json:
            _ask_many(hp, built, question)
            return
        for text in question:
            try:
                answer = hp.ask(built, text)
            except hp.PipelineSetupError as error:
                fail(str(error))
            print(json.dumps({"question": answer.question, "answer": answer.text,
                              "sources": [{"id": d.id, "score": d.score, "meta": d.meta, "content": d.content}
                                          for d in answer.sources],
                              "timings": answer.timings, "meta": answer.meta}, default=str, ensure_ascii=False))
    finally:
        hp.close_pipeline(built)


def _parse_inputs(items: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--input {item!r}: expected name=value or component.name=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if "." in key:
            component_name, socket = key.split(".", 1)
            data.setdefault(component_name, {})[socket] = value
        else:
            data[key] = value
    return data


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def run(
    pipeline: Annotated[str, typer.Argument(help="A YAML file or a bundled pipeline name.")],
    input: Annotated[Optional[list[str]], typer.Option(
        "--input", "-i", help="name=value (a declared input of the YAML, e.g. question=..., goes where the "
        "YAML's `inputs` say; another name to every component with that open input) or component.name=value; "
        "values are JSON when they parse, else strings. Repeatable.")] = None,
    data_dir: DataDirOption = None,
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
) -> None:
    """Run any pipeline with the given inputs and print its outputs as JSON."""
    hp = _haystack()
    data = _parse_inputs(input or [])
    if not data:
        fail("give the pipeline's inputs with --input name=value")
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model)
    data = hp.expand_declared_inputs(built, data)
    try:
        start = time.perf_counter()
        with hp.component_timings() as timings:
            result = hp.run(built, data)  # a component's rejected input is an error message, a bug a traceback
        result["_timings"] = {**timings, "total": time.perf_counter() - start}
        print(json.dumps(result, default=_jsonable, ensure_ascii=False, indent=2))
    finally:
        hp.close_pipeline(built)


def _write_demo_corpus(folder: Path) -> tuple[list[Path], list[dict]]:
    """The bundled WikiDesc passages as one text file each; returns the files and their meta."""
    from importlib.resources import files as package_files

    data = package_files("grit_components") / "data"
    passages = [json.loads(line) for line in (data / "wikidesc-demo.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "NOTICE.md").write_text((data / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    paths, meta = [], []
    for passage in passages:
        path = folder / f"{passage['_id']}.txt"
        if not path.exists() or path.read_text(encoding="utf-8") != passage["text"]:
            path.write_text(passage["text"], encoding="utf-8")
        paths.append(path)
        meta.append({"title": passage["title"], "passage_id": passage["_id"]})
    return paths, meta


def _demo_questions(count: int) -> list[dict]:
    from importlib.resources import files as package_files

    lines = (package_files("grit_components") / "data" / "wikidesc-demo-questions.jsonl").read_text(
        encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()][:count]


def demo(
    folder: Annotated[Optional[Path], typer.Argument(
        help="Your own folder of .txt/.md/.pdf files to index (default: the bundled WikiDesc demo corpus).")] = None,
    questions: Annotated[int, typer.Option(min=0, help="How many bundled demo questions to answer.")] = 3,
    ask_: Annotated[Optional[list[str]], typer.Option("--ask", help="Your own question (repeatable).")] = None,
    data_dir: Annotated[Path, typer.Option(help="Data directory (embedded Qdrant, demo files) [env GRIT_DATA_DIR].",
                                           envvar="GRIT_DATA_DIR")] = Path(".grit"),
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
    pipeline: Annotated[str, typer.Option(help="RAG pipeline for the questions.")] = "rag",
    reindex: Annotated[bool, typer.Option(help="Index the demo corpus again even if it is already indexed.")] = False,
) -> None:
    """The main job: index a corpus into embedded Qdrant with indexing.yaml, then answer questions with rag.yaml."""
    hp = _haystack()
    start = time.perf_counter()
    own = folder is not None
    if own:
        try:
            files, meta = hp.collect_files([folder]), None
        except hp.PipelineSetupError as error:
            fail(str(error))
        if not files:
            fail(f"no {', '.join(hp.FILE_SUFFIXES)} files in {folder}")
    else:
        files, meta = _write_demo_corpus(data_dir / "demo-corpus")
    console.print(f"[bold]1. Index[/] {len(files)} files into embedded Qdrant at {data_dir / 'qdrant'}"
                  if not qdrant_url else f"[bold]1. Index[/] {len(files)} files into Qdrant at {qdrant_url}")
    marker = data_dir / "demo-corpus" / ".indexed"
    stamp = json.dumps({"model": model or DEFAULT_MODEL, "files": len(files), "qdrant": qdrant_url})
    if not own and not reindex and marker.exists() and marker.read_text() == stamp:
        console.print("   already indexed (same model and files): skipping; --reindex to index again")
    else:
        built = _load(hp, "indexing", data_dir=data_dir, qdrant_url=qdrant_url, model=model)
        try:
            _index(hp, built, files, meta=meta)
        finally:
            hp.close_pipeline(built)
        if not own:
            marker.write_text(stamp)
    asked = list(ask_ or [])
    items = [] if own else _demo_questions(questions)
    if not asked and not items:
        console.print(f"Ask questions with: grit ask --data-dir {data_dir} \"your question\"")
        return
    console.print(f"[bold]2. Answer[/] {len(asked) + len(items)} questions with pipelines/{pipeline}.yaml")
    instruction = None if own else WIKIDESC_INSTRUCTION
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model, instruction=instruction)
    try:
        # WikiDesc: search with the description (and its task instruction), ask for the name.
        answers = _ask_many(hp, built, [f"{item['question']} Answer with the name only." for item in items],
                            [item["answer"] for item in items], [item["description"] for item in items])
        answers += _ask_many(hp, built, asked)
    finally:
        hp.close_pipeline(built)
    if items:
        found = sum(any(d.meta.get("passage_id") == item["gold"] for d in a.sources) for a, item in zip(answers, items))
        correct = sum(bool(re.search(rf"\b{re.escape(item['answer'])}\b", a.text, re.IGNORECASE))
                      for a, item in zip(answers, items))
        console.print(f"\nretrieval: the relevant passage was among the sources for {found}/{len(items)} questions; "
                      f"the answer named the expected title {correct}/{len(items)} times")
    console.print(f"done in {time.perf_counter() - start:.1f}s (data in {data_dir}; "
                  f"ask more with: grit ask --data-dir {data_dir} --instruction '...' \"question\")")


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
from grit_components.indexing import SOURCE_FIELD

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
AllowMismatchOption = Annotated[bool, typer.Option(
    "--allow-model-mismatch", help="Query a collection indexed with another model or settings anyway (only "
    "for weights you know to be the same, e.g. loaded from another path or in another dtype).")]


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
          instruction: str | None = None, allow_model_mismatch: bool = False, recreate: bool = False):
    from grit_components.indexing import IndexModelMismatchError
    from grit_components.models import ModelNotAvailableError

    try:
        with console.status(f"Loading pipeline {pipeline} ..."):
            return hp.load_pipeline(pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                                    instruction=instruction, allow_model_mismatch=allow_model_mismatch,
                                    recreate=recreate)
    except (hp.PipelineSetupError, IndexModelMismatchError, ModelNotAvailableError, OSError) as error:
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


def _index(hp, pipeline, selection, *, meta=None, batch_size: int = 64, encoding: str = "auto",
           prune: bool = False):
    """Index with a progress bar over the chunks to embed; prints the report and returns it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stages = {"files": "converting files", "chunks": "embedding and writing chunks"}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(stages["files"], total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stages[stage], completed=done, total=total)

        try:
            report = hp.index_files(pipeline, selection, meta=meta, batch_size=batch_size, encoding=encoding,
                                    prune=prune, on_progress=progress)
        except (hp.PipelineSetupError, hp.IndexingError) as error:
            fail(str(error))
    for line in report.summary():
        console.print(line, markup=False, highlight=False)
    return report


def _index_failures(report, selection) -> list[str]:
    """Why an index run counts as failed: a named file failed, or every file of a folder did."""
    failed = {outcome.path for outcome in report.failed}
    problems = [f"{path} could not be indexed" for path in selection.named if path in failed]
    problems += [f"none of the {len(found)} files in {folder} could be indexed"
                 for folder, found in selection.folders.items() if found and all(f in failed for f in found)]
    return problems


def _index_on_ray(hp, paths: list[Path], *, pipeline: str, data_dir, qdrant_url, model, encoding: str,
                  recreate: bool, skip_errors: bool, address: str, actors: int, cpus_per_actor: float,
                  gpus_per_actor: float, batch_size: int, kv_cache_dir, text_field: str, id_field) -> None:
    """`grit index --ray`: the corpus through `grit_components.distributed` with the YAML's chunker."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from grit_components.indexing import IndexModelMismatchError

    try:
        from grit_components import distributed
    except ModuleNotFoundError as error:
        fail(f"{error}; install the Ray extra: pip install 'grit-components[ray]'")
    try:
        corpus = distributed.Corpus.detect(paths)
        if corpus is not None:
            corpus = distributed.Corpus(corpus.kind, corpus.paths, text_field=text_field, id_field=id_field)
            selection = None
        else:
            selection = hp.select_files(paths)
            if not selection.files:
                fail(f"no {', '.join(hp.FILE_SUFFIXES)} files (nor a .jsonl/.parquet corpus or BEIR folder) in "
                     f"{', '.join(map(str, paths))}")
            corpus = distributed.Corpus("files", tuple(str(f) for f in selection.files))
        data = hp.pipeline_data(pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model)
        chunker = hp.RayChunker(data, encoding=encoding)
        settings = chunker.embedder_settings(model)
        target = hp.qdrant_target(pipeline, data_dir=data_dir, qdrant_url=qdrant_url)
        options = distributed.RayOptions(address=None if address == "local" else address, actors=actors,
                                         num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, batch_size=batch_size,
                                         write_batch_size=batch_size)
    except (hp.PipelineSetupError, hp.IndexingError, ValueError, TypeError) as error:
        fail(str(error))
    console.print(f"indexing {len(corpus.paths)} {corpus.kind} input(s) on Ray ({address}) with {actors} actor(s) "
                  f"into Qdrant collection {target.collection!r} at {target.location}", markup=False)
    with Progress(SpinnerColumn(), TextColumn("{task.fields[documents]} documents, {task.completed} chunks written"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("ray", total=None, documents=0)

        def progress(report) -> None:
            bar.update(task, completed=report.written, documents=report.documents)

        try:
            report = distributed.run_index_job(corpus, chunker, settings, target, options,
                                               kv_cache_directory=kv_cache_dir, recreate=recreate,
                                               on_progress=progress)
        except (distributed.QdrantUnavailableError, distributed.RayUnavailableError, IndexModelMismatchError,
                ValueError, RuntimeError) as error:
            fail(str(error))
    for line in report.summary():
        console.print(line, markup=False, highlight=False)
    if report.documents and report.statuses["failed"] == report.documents:
        fail(f"none of the {report.documents} documents could be indexed")
    failed = {source for source, _ in report.failed}
    problems = []
    if selection is not None:
        problems = [f"{path} could not be indexed" for path in selection.named if hp.source_of(path) in failed]
        problems += [f"none of the {len(found)} files in {folder} could be indexed"
                     for folder, found in selection.folders.items()
                     if found and all(hp.source_of(f) in failed for f in found)]
    if problems and not skip_errors:
        fail("; ".join(problems) + " (see above; --skip-errors accepts a partial index)")


def index(
    paths: Annotated[list[Path], typer.Argument(help="Files (.txt, .md, .pdf) or folders to index; with --ray "
                                                "also a .jsonl or .parquet corpus or a BEIR folder.")],
    pipeline: PipelineOption = "indexing",
    data_dir: DataDirOption = None,
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
    prune: Annotated[bool, typer.Option(help="Also remove the chunks of files that are gone from the given "
                                        "folders.")] = False,
    skip_errors: Annotated[bool, typer.Option(help="Exit 0 even if some files could not be indexed (each is "
                                              "listed with its reason).")] = False,
    encoding: Annotated[str, typer.Option(help="Encoding of .txt/.md files: auto (UTF-8, else detected and "
                                          "reported) or a name such as latin-1 or cp1252.")] = "auto",
    recreate: Annotated[bool, typer.Option(help="Empty the collection first and index with this model (after a "
                                           "model change).")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Chunks embedded and written together; a killed run "
                                            "loses at most this many, and a re-run embeds only what is "
                                            "missing.")] = 64,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="ADDRESS", help="Run as a Ray job: 'local' (start a local Ray instance), 'auto' (the "
        "cluster this machine belongs to) or a cluster address (ray://head:10001).", rich_help_panel="Ray")] = None,
    actors: Annotated[int, typer.Option(min=1, help="Ray: embedding actors (each loads the model once).",
                                        rich_help_panel="Ray")] = 1,
    cpus_per_actor: Annotated[float, typer.Option(min=0.01, help="Ray: CPUs per actor (also its torch threads).",
                                                  rich_help_panel="Ray")] = 1.0,
    gpus_per_actor: Annotated[float, typer.Option(min=0.0, help="Ray: GPUs per actor (fractions share a GPU).",
                                                  rich_help_panel="Ray")] = 0.0,
    kv_cache_dir: Annotated[Optional[Path], typer.Option(
        help="Ray: also store each chunk's KV cache (for doc caching) in this folder, which every actor and "
        "serving replica must see.", rich_help_panel="Ray")] = None,
    text_field: Annotated[str, typer.Option(help="Ray: the text field of JSONL, BEIR or Parquet records.",
                                            rich_help_panel="Ray")] = "text",
    id_field: Annotated[Optional[str], typer.Option(help="Ray: the id field of records (default: _id, else id).",
                                                    rich_help_panel="Ray")] = None,
) -> None:
    """Index files or folders into Qdrant through an indexing pipeline.

    Incremental: re-indexing a file replaces its chunks (the stale ones are removed, only new ones are
    embedded), a killed run resumes where it stopped, and the collection remembers its model (another
    model is an error; --recreate starts over). Exits with status 2 if a named file, or every file of a
    folder, could not be indexed (--skip-errors accepts that).
    """
    import codecs

    hp = _haystack()
    if encoding != "auto":
        try:
            codecs.lookup(encoding)
        except LookupError:
            fail(f"--encoding {encoding!r} is not an encoding Python knows (e.g. utf-8, latin-1, cp1252)")
    if ray is not None:
        if prune:
            fail("--prune is not supported with --ray: run `grit index --prune FOLDER` without --ray")
        _index_on_ray(hp, paths, pipeline=pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                      encoding=encoding, recreate=recreate, skip_errors=skip_errors, address=ray, actors=actors,
                      cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, batch_size=batch_size,
                      kv_cache_dir=kv_cache_dir, text_field=text_field, id_field=id_field)
        return
    if kv_cache_dir is not None:
        fail("--kv-cache-dir is for --ray; without Ray use --pipeline indexing_doc_cache (caches in --data-dir/kv)")
    try:
        selection = hp.select_files(paths)
    except hp.IndexingError as error:
        fail(str(error))
    for folder, ignored in selection.ignored.items():
        if ignored:
            kinds = ", ".join(sorted({p.suffix.lower() or "(none)" for p in ignored}))
            console.print(f"ignoring {len(ignored)} files of other types in {folder} ({kinds})", markup=False)
    if not selection.files and not prune:
        fail(f"no {', '.join(hp.FILE_SUFFIXES)} files found in {', '.join(map(str, paths))}")
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model, recreate=recreate)
    try:
        report = _index(hp, built, selection, batch_size=batch_size, encoding=encoding, prune=prune)
    finally:
        hp.close_pipeline(built)
    if selection.files and report.indexed == 0:
        fail(f"none of the {len(selection.files)} files could be indexed")
    problems = _index_failures(report, selection)
    if problems and not skip_errors:
        fail("; ".join(problems) + " (see above; --skip-errors accepts a partial index)")


def ask(
    question: Annotated[list[str], typer.Argument(help="One or more questions.")],
    pipeline: PipelineOption = "rag",
    data_dir: DataDirOption = None,
    qdrant_url: QdrantUrlOption = None,
    model: ModelOverride = None,
    instruction: InstructionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per answer.")] = False,
    allow_model_mismatch: AllowMismatchOption = False,
) -> None:
    """Answer questions with a RAG pipeline: answer, sources with scores, timings."""
    hp = _haystack()
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model, instruction=instruction,
                  allow_model_mismatch=allow_model_mismatch)
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
    allow_model_mismatch: AllowMismatchOption = False,
) -> None:
    """Run any pipeline with the given inputs and print its outputs as JSON."""
    hp = _haystack()
    data = _parse_inputs(input or [])
    if not data:
        fail("give the pipeline's inputs with --input name=value")
    built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                  allow_model_mismatch=allow_model_mismatch)
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


THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,500" -> "1500" (also benchmarks/question_forms.py)


def names_answer(text: str, expected: str) -> bool:
    """Whether `text` names `expected` as a whole phrase (case-insensitive): not inside a longer word, and
    right for titles that start or end with a non-word character ("Dalton (unit)"). Numbers match with or
    without thousands separators ("1500" names "1,500")."""
    text, expected = THOUSANDS_SEPARATOR.sub("", text), THOUSANDS_SEPARATOR.sub("", expected)
    return re.search(rf"(?<!\w){re.escape(expected)}(?!\w)", text, re.IGNORECASE) is not None


def demo_question(item: dict) -> str:
    """What `grit demo` asks for a bundled question: a WikiDesc description question (searched by its
    description) asks for the name only; a question of another form is asked as written."""
    if "description" not in item:
        return item["question"]
    return f"{item['question']} Answer with the name only."


def _bundled(name: str) -> list[dict]:
    from importlib.resources import files as package_files

    lines = (package_files("grit_components") / "data" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _demo_questions(count: int) -> list[dict]:
    """The first `count` of the 120 WikiDesc description questions over the demo corpus."""
    return _bundled("wikidesc-demo-questions.jsonl")[:count]


def demo_items(count: int) -> list[dict]:
    """What `grit demo` asks: questions of different forms first (a description, who, yes/no, where, a
    number: `data/demo-questions.jsonl`), then more WikiDesc description questions."""
    mixed = _bundled("demo-questions.jsonl")
    asked = {item["gold"] for item in mixed}
    more = [item for item in _demo_questions(count) if item["gold"] not in asked]
    return (mixed + more)[:count]


def _load_demo_index(hp, *, data_dir: Path, qdrant_url: str | None, model: str | None, corpus: Path,
                     files: list[Path]):
    """The indexing pipeline for `grit demo`; when the collection was indexed with another model, start it
    over, but only if it holds nothing except this corpus (a user's own index is never deleted)."""
    from grit_components.indexing import IndexModelMismatchError

    try:
        with console.status("Loading pipeline indexing ..."):
            return hp.load_pipeline("indexing", data_dir=data_dir, qdrant_url=qdrant_url, model=model)
    except (IndexModelMismatchError, hp.EmbeddingDimensionError) as error:
        mismatch = error
    except Exception:  # noqa: BLE001 - the usual error contract
        return _load(hp, "indexing", data_dir=data_dir, qdrant_url=qdrant_url, model=model)
    prefix = hp.source_of(corpus).rstrip("/") + "/"
    names = {f.name for f in files}
    points = hp.indexed_points("indexing", data_dir=data_dir, qdrant_url=qdrant_url)
    if not all((p.get(SOURCE_FIELD) or "").startswith(prefix) or (SOURCE_FIELD not in p and p.get("file_path") in names)
               for p in points):
        fail(f"{mismatch}\nThe collection also holds other files, so grit demo does not start it over: use "
             "another --data-dir (or --qdrant-url).")
    console.print(f"   the index of {corpus} was made with another model or settings: indexing it again")
    return _load(hp, "indexing", data_dir=data_dir, qdrant_url=qdrant_url, model=model, recreate=True)


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
    reindex: Annotated[bool, typer.Option(help="Embed the corpus again even where it is already indexed.")] = False,
) -> None:
    """The main job: index a corpus into embedded Qdrant with indexing.yaml, then answer questions with rag.yaml.

    Indexing is incremental: a second run embeds nothing new. If the model changed since the corpus was
    indexed (another --model, or new weights of the default one), the corpus is indexed again.
    """
    hp = _haystack()
    start = time.perf_counter()
    own = folder is not None
    if own:
        try:
            selection, meta = hp.select_files([folder]), None
        except hp.IndexingError as error:
            fail(str(error))
        if not selection.files:
            fail(f"no {', '.join(hp.FILE_SUFFIXES)} files in {folder}")
        corpus = folder
    else:
        corpus = data_dir / "demo-corpus"
        files, meta = _write_demo_corpus(corpus)
        selection = hp.FileSelection(files=files, folders={corpus: files})  # NOTICE.md is not a passage
    console.print(f"[bold]1. Index[/] {len(selection.files)} files into embedded Qdrant at {data_dir / 'qdrant'}"
                  if not qdrant_url else f"[bold]1. Index[/] {len(selection.files)} files into Qdrant at {qdrant_url}")
    built = _load_demo_index(hp, data_dir=data_dir, qdrant_url=qdrant_url, model=model, corpus=corpus,
                             files=selection.files)
    try:
        if reindex:
            for store in hp.document_stores(built):
                store.delete_by_filter({"field": f"meta.{SOURCE_FIELD}", "operator": "in",
                                        "value": [hp.source_of(f) for f in selection.files]})
        report = _index(hp, built, selection, meta=meta, prune=True)
    finally:
        hp.close_pipeline(built)
    if report.failed and not report.indexed:
        fail(f"none of the {len(selection.files)} files of {corpus} could be indexed")
    asked = list(ask_ or [])
    items = [] if own else demo_items(questions)
    if not asked and not items:
        console.print(f"Ask questions with: grit ask --data-dir {data_dir} \"your question\"")
        return
    console.print(f"[bold]2. Answer[/] {len(asked) + len(items)} questions with pipelines/{pipeline}.yaml")
    answers: list = [None] * len(items)
    # WikiDesc description questions: search with the description under WikiDesc's task instruction, ask for
    # the name; every other question (the bundled ones of other forms, --ask) is searched as written with
    # the model's own instruction. One pipeline at a time: an embedded Qdrant folder admits one client.
    for described in (True, False):
        rows = [i for i, item in enumerate(items) if ("description" in item) == described]
        if not rows and (described or not asked):
            continue
        built = _load(hp, pipeline, data_dir=data_dir, qdrant_url=qdrant_url, model=model,
                      instruction=WIKIDESC_INSTRUCTION if described else None)
        try:
            got = _ask_many(hp, built, [demo_question(items[i]) for i in rows], [items[i]["answer"] for i in rows],
                            [items[i]["description"] for i in rows] if described else None)
            for i, answer in zip(rows, got):
                answers[i] = answer
            if not described:
                answers += _ask_many(hp, built, asked)
        finally:
            hp.close_pipeline(built)
    if items:
        found = sum(any(d.meta.get("passage_id") == item["gold"] for d in a.sources) for a, item in zip(answers, items))
        correct = sum(names_answer(a.text, item["answer"]) for a, item in zip(answers, items))
        console.print(f"\nretrieval: the relevant passage was among the sources for {found}/{len(items)} questions; "
                      f"the answer named the expected title {correct}/{len(items)} times")
    console.print(f"done in {time.perf_counter() - start:.1f}s (data in {data_dir}; "
                  f"ask more with: grit ask --data-dir {data_dir} --instruction '...' \"question\")")


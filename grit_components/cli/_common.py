"""What every `grit` command shares: the console, the error contract and model loading.

Commands import this module, never the app: `grit_components.cli` (the package) assembles the app from
the command modules, so imports run one way (app -> commands -> _common -> library).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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

"""What every `grit` command shares: the console, the error contract and model loading.

The error contract: a user error (bad input, option, file or model, a prompt over the context, an
unavailable device) prints `error: <what is wrong>` and exits with status 2, also when a component
raises it while a pipeline runs; any other exception is a bug and keeps its traceback. Commands call
`fail(message)` for errors they detect themselves; `GritGroup` (the app's command group) applies the
contract to every exception a command raises, so no command needs its own catch-all.

Commands import this module, never the app: `grit_components.cli` (the package) assembles the app from
the command modules, so imports run one way (app -> commands -> _common -> library).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

console = Console(stderr=True, soft_wrap=True)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, GGUF file or alias.")]
DeviceOption = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1, mps (default: best available).")]
DtypeOption = Annotated[Optional[str], typer.Option(help="float32, bfloat16 or float16 (default: float32 on CPU).")]


# What the library raises for the caller's mistakes: TypeError/ValueError for arguments (naming the
# parameter), OSError for files, models and servers, ImportError for a missing extra.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)
DEBUG_ENV = "GRIT_DEBUG"  # set to 1 to get the traceback of user errors too


def print_error(message: str) -> None:
    """Print `error: message` to stderr (the message is plain text, never rich markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}")


def fail(message: str) -> None:
    """Print an error without a traceback and exit with status 2."""
    print_error(message)
    raise typer.Exit(code=2)


def user_error_message(error: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug.

    A pipeline wraps what a component raised (Haystack's `PipelineRuntimeError`, raised `from` it, with
    `component_name`): the component's own error decides, and the message names the component.
    """
    where = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, USER_ERRORS):
            message = str(current).strip() or type(current).__name__
            return f"{', '.join(where)}: {message}" if where else message
        if not hasattr(current, "component_name"):
            return None
        if current.component_name:
            where.append(f"component {current.component_name!r}")
        current = current.__cause__
    return None


class GritGroup(TyperGroup):
    """The `grit` command group: applies the error contract to every command (see the module docstring)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, usage errors: the parser reports them
            raise
        except Exception as error:
            message = user_error_message(error)
            if message is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            fail(message)


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
    if not input_file.is_file():
        fail(f"--input {input_file} is not a file")
    try:
        text = input_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = input_file.read_bytes()[: error.start].count(b"\n") + 1
        fail(f"--input {input_file}:{line}: not UTF-8 text ({error.reason} at byte {error.start}); "
             "convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)")
    lines = [line for line in text.splitlines() if line.strip()]
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

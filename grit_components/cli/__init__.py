"""The `grit` command line: this module assembles the app; the commands live in the sibling modules.

- `core`: `grit embed`, `grit chat`, `grit models`, `grit export-gguf` (the library alone);
- `pipelines`: `grit index`, `grit ask`, `grit run`, `grit demo` (the Haystack YAML pipelines; `[haystack]` extra);
- `eval`: `grit eval retrieval` (`[eval]` extra); `train`: `grit train` (`[train]` extra).

Command modules import `cli._common` (console, error contract, model loading), never this module. The
error contract (user errors print `error: ...` and exit 2; bugs keep their traceback) is applied once,
by the app's command group (`_common.GritGroup`).
"""

from __future__ import annotations

import typer

from grit_components.cli import core, pipelines
from grit_components.cli._common import GritGroup
from grit_components.cli.eval import eval_app
from grit_components.cli.train import train

# GritGroup applies the error contract (cli/_common.py) to every command, sub-apps included.
app = typer.Typer(name="grit", help="GRIT models (one LLM that embeds and generates) for RAG.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, cls=GritGroup)
app.command()(core.embed)
app.command()(core.chat)
app.command()(core.models)
app.command("export-gguf")(core.export_gguf)
app.command()(pipelines.index)
app.command()(pipelines.ask)
app.command()(pipelines.run)
app.command()(pipelines.demo)
app.command()(train)
app.add_typer(eval_app, name="eval")


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]

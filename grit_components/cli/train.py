"""`grit train <config.yaml>`: run a GRIT training from a YAML config (see docs/training.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from grit_components.cli._common import console, fail


def train(
    config: Annotated[Path, typer.Argument(help="YAML training config (see recipes/wikidesc-smollm2.yaml).")],
    max_steps: Annotated[Optional[int], typer.Option(help="Override training.max_steps (e.g. a smoke run).")] = None,
    output_dir: Annotated[Optional[str], typer.Option(help="Override output_dir.")] = None,
    max_records: Annotated[Optional[int], typer.Option(help="Cap every data source at this many records.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue from a checkpoint-N folder of an earlier run.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any key: --set eval.max_queries=20 (value read as YAML).")] = None,
) -> None:
    """Train a GRIT model: L = L_rep + lambda_gen * L_gen (contrastive + next-token), on the HF Trainer."""
    from grit_components.training.config import load_config, parse_overrides

    try:
        overrides = parse_overrides(set_ or [])
    except ValueError as error:
        fail(str(error))
    if max_steps is not None:
        overrides["training.max_steps"] = max_steps
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    try:
        cfg = load_config(config, overrides=overrides)
    except (ValueError, TypeError, FileNotFoundError) as error:
        fail(f"{config}: {error}")
    if max_records is not None:
        for source in [*cfg.data.embedding, *cfg.data.generative]:
            source.max_records = min(source.max_records or max_records, max_records)
    from grit_components.training.run import train as run_training

    try:
        output = run_training(cfg, resume_from_checkpoint=resume)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as error:
        fail(str(error))
    console.print(f"saved the trained model to {output}; use it with model={str(output)!r}")

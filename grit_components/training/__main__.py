"""`python -m grit_components.training config.yaml` (for `accelerate launch -m grit_components.training ...`)."""

import typer

from grit_components.cli.train import train

if __name__ == "__main__":
    typer.run(train)

"""`python -m grit_components.cli ...`: the `grit` command."""

from grit_components.cli import app

if __name__ == "__main__":
    app(prog_name="grit")

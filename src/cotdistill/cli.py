"""The `cotdistill` command line: one command per stage, each a thin wrapper over a module.

Errors a user can cause are `UserError`s: printed as one line, exit code 2, no traceback.
"""

from __future__ import annotations

import sys

import typer

from cotdistill.errors import UserError

app = typer.Typer(
    help="Teach small language models to reason: annotate with a teacher, filter, fine-tune a student, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

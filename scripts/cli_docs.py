"""Writes docs/cli.md, the CLI reference, from the Typer app itself, so it cannot drift from the options.

Run after changing a command or an option: python scripts/cli_docs.py
tests/test_docs.py renders it again and fails when the committed file differs.
"""

import sys
from pathlib import Path

import typer
from typer.cli import get_docs_for_click
from typer.core import MARKUP_MODE_KEY

from attn_deploy.cli import app

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
REGENERATE = "python scripts/cli_docs.py"
HEADER = f"""<!-- Generated from attn_deploy/cli.py by `{REGENERATE}`: do not edit by hand. -->

> Generated from the Typer app (`attn_deploy/cli.py`). After adding or changing a command or an
> option, regenerate it with `{REGENERATE}`; `tests/test_docs.py` fails while it differs.
> Exit codes: `0` ok, `1` parity or lint failed, `2` bad usage or input. Progress and messages go
> to stderr; `--json` prints the machine-readable result on stdout.

"""


def render() -> str:
    """The Markdown reference of every command and option, as Typer writes it."""
    command = typer.main.get_command(app)
    context = typer.Context(command, info_name="attn-deploy", obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    body = get_docs_for_click(obj=command, ctx=context, name="attn-deploy", title="attn-deploy CLI reference")
    return HEADER + body.strip() + "\n"


def main() -> None:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

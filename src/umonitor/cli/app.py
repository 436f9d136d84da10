"""The ``umonitor`` group: its options shared by every command, and the one place where an
error becomes one line on stderr and an exit code (a ``UmonitorError``'s), never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from umonitor import __version__
from umonitor.errors import UmonitorError
from umonitor.store import layout

if TYPE_CHECKING:
    pass


data_option = click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="UMONITOR_DATA",
    help="Data directory (default: $UMONITOR_DATA, else ~/.local/share/umonitor).",
)


def data_dir(data: Path | None) -> Path:
    return data if data is not None else layout.default_data_dir()


# The module that defines each command, imported only when that command runs: a quick
# `umonitor logs -n 20` does not pay for importing what `umonitor up` needs.
COMMANDS = {
    **dict.fromkeys(("serve", "send", "reindex"), "collect"),
    **dict.fromkeys(("ls", "logs"), "query"),
    **dict.fromkeys(("up", "down", "run", "ps", "stop", "restart", "rm", "net", "image"), "fleet"),
    **dict.fromkeys(("level", "ping", "cont", "debug"), "control"),
    "instrument": "instrument",
    "trace": "trace",
    "web": "web",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"umonitor.cli.{module}")  # registers it on ``main``
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except UmonitorError as exc:
            click.echo(f"umonitor: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("umonitor: aborted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "umonitor"
            click.echo(f"umonitor: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="umonitor")
def main() -> None:
    """Monitor unikernels from the host: collect, keep and show their logs."""

"""The ``bot`` command line (typer + rich).

Errors a user can cause end in one line on stderr and exit code 2, never a traceback
(set ``BOT_DEBUG=1`` to see one anyway). Ctrl-C exits 130, SIGTERM (which takes Ctrl-C's path,
bot/signals.py) 143.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from bot import signals
from bot.errors import BotError

app = typer.Typer(
    name="bot",
    help="Event-driven ML trading bot for Bybit: backtest, paper, live, and a journal that says why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)

DISTRIBUTION = "bybit-ml-bot"


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bot {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the version (bybit-ml-bot, from its package metadata) and exit."),
) -> None:
    """Event-driven ML trading bot for Bybit: backtest, paper, live, and a journal that says why."""


def _register() -> None:
    from bot.cli import db, journal, run

    run.register(app)
    app.add_typer(journal.app, name="journal")
    app.add_typer(db.app, name="db")
    # Optional command groups contributed by later parts (models, exchange tooling).
    for mod in ("bot.cli.models", "bot.cli.walkforward", "bot.cli.optimize", "bot.cli.sweep", "bot.cli.exchange",
                "bot.cli.serve"):
        try:
            module = __import__(mod, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    """Console entry point. Usage errors are typer's (exit 2); BotError is one line, exit 2."""
    signals.install()  # before anything a signal could interrupt half-way
    debug = bool(os.environ.get("BOT_DEBUG"))
    try:
        app(prog_name="bot")  # standalone mode: typer handles usage errors and exits
    except BotError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exc.code == 130:  # typer's answer to a KeyboardInterrupt (Ctrl-C, or SIGTERM taking its path)
            _interrupted()
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set BOT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        sys.exit(1)


def _interrupted() -> None:
    term = signals.terminated()
    print("terminated (SIGTERM)" if term else "interrupted", file=sys.stderr)
    sys.exit(143 if term else 130)
